import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { MemoryDatastore } from '../../plugin/datastore/memory.js';
import { keys } from '../../plugin/datastore/model.js';
import { blocksOverlapping, formatCidr, parseAddress, parseCidr } from '../../plugin/lib/cidr.js';
import { DEFAULT_IPV4_POOL, Ipam, defaultIPv6Pool } from '../../plugin/ipam/ipam.js';
import { AddressInUseError, PoolExhaustedError, PoolNotFoundError, ValidationError } from '../../plugin/lib/errors.js';

async function setup(node = 'n1', pool = DEFAULT_IPV4_POOL) {
  const store = new MemoryDatastore();
  await store.put(keys.pool(pool.name), pool);
  return { store, ipam: new Ipam(store, { node }) };
}

describe('cidr math', () => {
  it('parses, normalises and rejects', () => {
    assert.equal(formatCidr(parseCidr('10.1.2.3/24')), '10.1.2.0/24');
    assert.equal(formatCidr(parseCidr('fd00::1/122')), 'fd00::/122');
    for (const bad of ['10.0.0.0', '10.0.0.0/33', '300.1.1.1/8', 'abc/8', '10.0.0.0/8; rm -rf /', '']) {
      assert.throws(() => parseCidr(bad), ValidationError, bad);
    }
    assert.throws(() => parseAddress('1.2.3'), ValidationError);
  });
  it('enumerates blocks overlapping a range, wrapping from a start index', () => {
    const pool = parseCidr('10.0.0.0/24');
    const all = [...blocksOverlapping(pool, 26, pool)].map(formatCidr);
    assert.deepEqual(all, ['10.0.0.0/26', '10.0.0.64/26', '10.0.0.128/26', '10.0.0.192/26']);
    assert.deepEqual([...blocksOverlapping(pool, 26, pool, 2)].map(formatCidr)[0], '10.0.0.128/26');
    assert.deepEqual([...blocksOverlapping(pool, 26, parseCidr('10.0.0.70/28'))].map(formatCidr), ['10.0.0.64/26']);
    assert.deepEqual([...blocksOverlapping(pool, 26, parseCidr('10.0.0.128/25'))].map(formatCidr), ['10.0.0.128/26', '10.0.0.192/26']);
  });
});

describe('Ipam', () => {
  it('creates the default pool only when none exists', async () => {
    const store = new MemoryDatastore();
    const ipam = new Ipam(store, { node: 'n1' });
    await ipam.ensureDefaultPool();
    await ipam.ensureDefaultPool();
    assert.deepEqual((await ipam.listPools()).map((p) => p.cidr), ['192.168.0.0/16']);
  });

  it('CALICO_TS_IPV6_POOL_CIDR: the IPv6 default pool (/122 blocks) is made once, only when no IPv6 pool exists', async () => {
    const store = new MemoryDatastore();
    const ipam = new Ipam(store, { node: 'n1' });
    await ipam.ensureDefaultPool('fd00:5::/48');
    await ipam.ensureDefaultPool('fd00:6::/48');
    assert.deepEqual((await ipam.listPools()).map((p) => [p.name, p.cidr, p.blockSize]).sort(), [
      ['default-ipv4-ippool', '192.168.0.0/16', 26],
      ['default-ipv6-ippool', 'fd00:5::/48', 122],
    ]);
    const a = await ipam.autoAssign('fd00:5::/48');
    assert.match(a, /^fd00:5:/);
    assert.equal(parseCidr((await ipam.localBlocks())[0]!).prefix, 122);
    for (const bad of ['10.0.0.0/8', 'fd00::/126', 'nonsense']) assert.throws(() => defaultIPv6Pool(bad), ValidationError, bad);
  });

  it('claims a block with affinity and hands out distinct addresses from it', async () => {
    const { store, ipam } = await setup();
    const a = await ipam.autoAssign('192.168.0.0/16');
    const b = await ipam.autoAssign('192.168.0.0/16');
    assert.notEqual(a, b);
    const blocks = await ipam.localBlocks();
    assert.equal(blocks.length, 1);
    assert.ok(parseCidr(blocks[0]!).prefix === 26);
    assert.equal((await store.list(keys.affinities('n1'))).items.length, 1);
  });

  it('allocates only inside a --subnet that is inside a pool, and rejects subnets outside every pool', async () => {
    const { ipam } = await setup();
    const ip = await ipam.autoAssign('192.168.77.0/24');
    assert.match(ip, /^192\.168\.77\./);
    await assert.rejects(ipam.autoAssign('10.9.0.0/24'), (e: unknown) => e instanceof PoolNotFoundError && /no calico-ts IP pool contains 10\.9\.0\.0\/24/.test(e.message));
  });

  it('concurrent allocations in one process never collide', async () => {
    const { ipam } = await setup();
    const ips = await Promise.all(Array.from({ length: 100 }, () => ipam.autoAssign('192.168.0.0/16')));
    assert.equal(new Set(ips).size, 100);
    assert.equal((await ipam.localBlocks()).length, 2);
  });

  it('release frees exactly one address; an emptied block returns to the pool after its grace', async () => {
    let now = 1_000_000;
    const store = new MemoryDatastore();
    await store.put(keys.pool(DEFAULT_IPV4_POOL.name), DEFAULT_IPV4_POOL);
    const ipam = new Ipam(store, { node: 'n1', now: () => now });
    const a = await ipam.autoAssign('192.168.0.0/16');
    const b = await ipam.autoAssign('192.168.0.0/16');
    assert.equal(await ipam.release(a), true);
    assert.equal(await ipam.release(a), false, 'second release is a no-op');
    assert.equal(await ipam.release(b), true);
    const [block] = await ipam.localBlocks();
    assert.ok(block, 'the empty block stays with its host for now');
    assert.deepEqual(await ipam.releaseEmptyBlocks(60_000), [], 'not before the grace');
    // Reused while it waits: no new claim.
    const c = await ipam.autoAssign('192.168.0.0/16');
    assert.deepEqual(await ipam.localBlocks(), [block]);
    await ipam.release(c);
    now += 60_001;
    assert.deepEqual(await ipam.releaseEmptyBlocks(60_000), [block]);
    assert.deepEqual(await ipam.localBlocks(), []);
    assert.equal((await store.list(keys.affinities('n1'))).items.length, 0);
    // The next allocation claims a block again.
    await ipam.autoAssign('192.168.0.0/16');
    assert.equal((await ipam.localBlocks()).length, 1);
  });

  it('binds an address to an endpoint handle and releases by handle', async () => {
    const { store, ipam } = await setup();
    const a = await ipam.autoAssign('192.168.0.0/16');
    await ipam.bind(a, 'ep1');
    await ipam.bind(a, 'ep1');
    assert.deepEqual((await store.get(keys.handle('ep1')))?.value.addresses, [a]);
    assert.deepEqual(await ipam.releaseHandle('ep1'), [a]);
    assert.equal(await store.get(keys.handle('ep1')), undefined);
    assert.equal(await ipam.release(a), false);
  });

  it('assigns a static address once; a second claim says who holds it', async () => {
    const { ipam } = await setup();
    assert.equal(await ipam.assign('192.168.9.9', '192.168.0.0/16'), '192.168.9.9');
    await assert.rejects(ipam.assign('192.168.9.9', '192.168.0.0/16'), AddressInUseError);
    await assert.rejects(ipam.assign('10.0.0.1', '192.168.0.0/16'), ValidationError);
    const next = await ipam.autoAssign('192.168.9.0/24');
    assert.notEqual(next, '192.168.9.9');
  });

  it('borrows from another node when no block is left to claim, then reports exhaustion', async () => {
    const small = { ...DEFAULT_IPV4_POOL, name: 'small', cidr: '10.0.0.0/30', blockSize: 31 };
    const { store, ipam } = await setup('n1', small);
    const other = new Ipam(store, { node: 'n2' });
    await ipam.autoAssign('10.0.0.0/30');
    await ipam.autoAssign('10.0.0.0/30');
    const got = [await other.autoAssign('10.0.0.0/30'), await other.autoAssign('10.0.0.0/30')];
    assert.equal(new Set(got).size, 2);
    await assert.rejects(other.autoAssign('10.0.0.0/30'), PoolExhaustedError);
  });
});
