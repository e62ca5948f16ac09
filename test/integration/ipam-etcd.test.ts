import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { after, before, describe, it } from 'node:test';
import { EtcdDatastore } from '../../plugin/datastore/etcd.js';
import { keys } from '../../plugin/datastore/model.js';
import { DEFAULT_IPV4_POOL, Ipam } from '../../plugin/ipam/ipam.js';
import { startEtcd, type EtcdHandle } from '../helpers/etcd.js';

const execFileP = promisify(execFile);
const worker = fileURLToPath(new URL('./ipam-worker.js', import.meta.url));

describe('IPAM against a real etcd', () => {
  let etcd: EtcdHandle;
  let store: EtcdDatastore;
  before(async () => {
    etcd = await startEtcd();
    store = new EtcdDatastore({ endpoints: [etcd.endpoint] });
    await new Ipam(store, { node: 'setup' }).ensureDefaultPool();
  });
  after(async () => {
    await store?.close();
    await etcd?.stop();
  });

  it('two node processes allocating at once never hand out the same address', async () => {
    const count = 250;
    // A /23 holds 8 blocks of /26: both hosts claim blocks, fill them, then contend for the rest.
    const range = '192.168.10.0/23';
    const run = (node: string) => execFileP(process.execPath, [worker, etcd.endpoint, node, String(count), range]);
    const [a, b] = await Promise.all([run('host-a'), run('host-b')]);
    const ra = JSON.parse(a.stdout) as { addresses: string[]; ms: number };
    const rb = JSON.parse(b.stdout) as { addresses: string[]; ms: number };
    const all = [...ra.addresses, ...rb.addresses];
    assert.equal(all.length, 2 * count);
    assert.equal(new Set(all).size, all.length, 'duplicate address handed out');
    // Every address is recorded exactly once in the blocks.
    const blocks = (await store.list(keys.blocks())).items;
    const used = blocks.reduce((n, b) => n + b.value.allocations.filter((x) => x !== null).length, 0);
    assert.equal(used, 2 * count);
    const rate = (r: { ms: number }) => Math.round((count / r.ms) * 1000);
    process.stdout.write(`# ipam rate host-a ${rate(ra)}/s host-b ${rate(rb)}/s\n`);
  });

  it('release after restart: a new Ipam instance frees by handle what an old one bound', async () => {
    const first = new Ipam(store, { node: 'host-r' });
    const ip = await first.autoAssign('192.168.20.0/24');
    await first.bind(ip, 'endpoint-r');
    const second = new Ipam(store, { node: 'host-r' });
    assert.deepEqual(await second.releaseHandle('endpoint-r'), [ip]);
    assert.equal((await second.releaseEmptyBlocks(0)).length, 1);
    assert.deepEqual(await second.localBlocks(), []);
  });

  it('the default pool is 192.168.0.0/16 with /26 blocks', async () => {
    const pool = await store.get(keys.pool(DEFAULT_IPV4_POOL.name));
    assert.equal(pool?.value.cidr, '192.168.0.0/16');
    assert.equal(pool?.value.blockSize, 26);
  });
});
