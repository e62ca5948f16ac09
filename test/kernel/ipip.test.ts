/**
 * IPIP on this machine's real kernel, with a real `calico-ts node run`, etcd and the CLI, all inside one
 * throwaway network namespace (ct-ipip-<pid>). These machines' kernel has no ipip module, so this proves
 * the "kernel cannot" path for real: the pool is accepted, no tunnel address is held, tunl0 does not
 * appear, and `calico-ts node status` names the problem; turning IPIP off clears it. On a kernel that
 * has ipip the same test checks the other path (tunl0 up with the tunnel address, MTU underlay − 20).
 * The IPIP data path itself is proven in the qemu lane (test/kernel-vm).
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { after, before, describe, it } from 'node:test';
import { keys, type NodeRecord } from '../../plugin/datastore/model.js';
import { ipipTunnelHandle } from '../../plugin/calc/ipip.js';
import { renderBirdConfig } from '../../plugin/bgp/render.js';
import { ipipInputs } from '../helpers/ipip-fixtures.js';
import { writeFileSync } from 'node:fs';
import { CLI, startCalicoNode, type CalicoNodeHandle } from '../helpers/calico-node.js';
import { startEtcd, type EtcdHandle } from '../helpers/etcd.js';
import { createNetns, type Netns } from '../helpers/netns.js';
import { waitFor } from '../helpers/proc.js';

const execFileP = promisify(execFile);
const isRoot = typeof process.getuid === 'function' && process.getuid() === 0;

describe('IPIP on the real kernel (node run + etcd + CLI in a namespace)', { skip: isRoot ? false : 'needs root' }, () => {
  let ns: Netns;
  let etcd: EtcdHandle;
  let node: CalicoNodeHandle | undefined;
  const runDir = mkdtempSync(join(tmpdir(), 'calico-ts-ipip-'));
  const nodeName = `ipip-${process.pid}`;
  const HOST_IP = '10.254.7.1';

  const cli = (...args: string[]) =>
    execFileP('nsenter', [`--net=${ns.path}`, process.execPath, CLI, ...args], {
      env: { PATH: process.env.PATH ?? '', ETCD_ENDPOINTS: etcd.endpoint, CALICO_TS_RUN_DIR: runDir },
    });
  const applyPool = (mode: string) =>
    new Promise<void>((resolve, reject) => {
      const env = { PATH: process.env.PATH ?? '', ETCD_ENDPOINTS: etcd.endpoint };
      const child = execFile('nsenter', [`--net=${ns.path}`, process.execPath, CLI, 'apply', '-f', '-'], { env }, (err, _out, stderr) =>
        err ? reject(new Error(`apply failed: ${stderr}`)) : resolve(),
      );
      child.stdin?.end(`apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: ipip-pool}\nspec: {cidr: 10.77.0.0/16, ipipMode: ${mode}}\n`);
    });
  /** etcd listens on the namespace's loopback: read a key from inside it. */
  const getValue = async <T>(key: { path: string }): Promise<T | undefined> => {
    const etcdModule = new URL('../../plugin/datastore/etcd.js', import.meta.url).href;
    const script =
      `const { EtcdDatastore } = await import(${JSON.stringify(etcdModule)});` +
      `const s = new EtcdDatastore({ endpoints: [${JSON.stringify(etcd.endpoint)}] });` +
      `const kv = await s.get({ path: ${JSON.stringify(key.path)} }); await s.close();` +
      `process.stdout.write(JSON.stringify(kv ? kv.value : null));`;
    const { stdout } = await ns.exec([process.execPath, '--input-type=module', '-e', script]);
    return (JSON.parse(stdout) as T | null) ?? undefined;
  };
  const nodeRecord = () => getValue<NodeRecord>(keys.node(nodeName));
  const tunl0 = async (): Promise<{ mtu: number; flags: string[]; addr_info: { local: string; prefixlen: number }[] } | undefined> => {
    try {
      const { stdout } = await ns.exec(['ip', '-json', '-4', 'addr', 'show', 'dev', 'tunl0']);
      return (JSON.parse(stdout) as { mtu: number; flags: string[]; addr_info: { local: string; prefixlen: number }[] }[])[0];
    } catch {
      return undefined;
    }
  };

  before(async () => {
    ns = await createNetns({ prefix: 'ct-ipip' });
    // An underlay with MTU 9000, so "underlay − 20" is visible.
    await ns.exec(['ip', 'link', 'add', 'eth0', 'mtu', '9000', 'type', 'veth', 'peer', 'name', 'eth0-peer', 'mtu', '9000']);
    await ns.exec(['ip', 'addr', 'add', `${HOST_IP}/24`, 'dev', 'eth0']);
    await ns.exec(['ip', 'link', 'set', 'eth0', 'up']);
    etcd = await startEtcd({ netns: ns.name });
    node = await startCalicoNode({
      netns: ns.name,
      nodeName,
      etcdEndpoint: etcd.endpoint,
      pluginDir: runDir,
      dockerSocket: join(runDir, 'no-docker.sock'),
      runDir,
      env: { IP: HOST_IP, CALICO_NETWORKING_BACKEND: 'none' },
    });
  });

  after(async () => {
    await node?.stop();
    await etcd?.stop();
    await ns?.delete();
    rmSync(runDir, { recursive: true, force: true });
  });

  // Node status runs inside the namespace: etcd listens on its loopback.
  it('an IPIP pool is accepted; node status shows the result for this kernel', async () => {
    const hadTunl0 = (await tunl0()) !== undefined;
    await applyPool('Always');
    const rec = await waitFor(async () => {
      const r = await nodeRecord();
      return r && (r.ipv4IPIPTunnelAddr || (r.problems ?? []).length > 0) ? r : undefined;
    }, 20_000, 'the node to record its IPIP result');
    const status = (await cli('node', 'status')).stdout;
    assert.ok(await getValue(keys.pool('ipip-pool')), 'the pool stays');
    if (rec.problems?.length) {
      // This machine: no ipip module.
      assert.equal(rec.ipv4IPIPTunnelAddr, undefined);
      assert.match(rec.problems[0] ?? '', /^ipip: pools ipip-pool want IPIP, but this kernel has no ipip module/);
      assert.match(status, /Problems\n {2}- ipip: pools ipip-pool want IPIP, but this kernel has no ipip module/);
      assert.equal(await tunl0(), undefined, 'no tunl0 appeared');
      assert.equal(await getValue(keys.handle(ipipTunnelHandle(nodeName))), undefined, 'no tunnel address held');
      assert.match(node?.log() ?? '', /"level":"error".*"msg":"IPIP cannot be programmed on this node"/);
    } else {
      // A kernel with ipip: tunl0 carries the tunnel address, MTU 9000 − 20.
      const t = await tunl0();
      assert.ok(t && t.flags.includes('UP'), `tunl0 up (had it before: ${hadTunl0})`);
      assert.equal(t.mtu, 8980);
      assert.deepEqual(t.addr_info.map((a) => `${a.local}/${a.prefixlen}`), [`${rec.ipv4IPIPTunnelAddr}/32`]);
      assert.match(status, new RegExp(`IPIP tunnel: tunl0 ${rec.ipv4IPIPTunnelAddr?.replace(/\./g, '\\.')}`));
    }
  });

  it('turning IPIP off clears the problem (and the tunnel) without a restart', async () => {
    await applyPool('Never');
    await waitFor(async () => {
      const r = await nodeRecord();
      return r && !r.ipv4IPIPTunnelAddr && !(r.problems ?? []).length;
    }, 20_000, 'the IPIP problem to clear');
    const status = (await cli('node', 'status')).stdout;
    assert.doesNotMatch(status, /Problems|IPIP tunnel/);
    assert.equal(await getValue(keys.handle(ipipTunnelHandle(nodeName))), undefined);
    const t = await tunl0();
    assert.ok(!t || t.addr_info.length === 0, 'no address left on tunl0');
  });
});

describe('IPIP BIRD configuration passes `bird -p`', () => {
  it('Always + CrossSubnet, CrossSubnet without a subnet, and no tunl0', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'calico-ts-ipip-bird-'));
    try {
      const session = { protocolName: 'Mesh_10_0_1_2', peerIP: '10.0.1.2', asNumber: 64512, type: 'node-to-node mesh' as const, routeReflectorClient: false, passive: false };
      const { localSubnet: _dropped, ...noSubnet } = ipipInputs;
      const variants = { ipip: ipipInputs, noSubnet, noTunnel: { ...ipipInputs, ipipTunnel: false } };
      for (const [name, inputs] of Object.entries(variants)) {
        const file = join(dir, `${name}.conf`);
        writeFileSync(file, renderBirdConfig(inputs, [session]));
        await execFileP('bird', ['-p', '-c', file]).catch((err: { stderr?: string }) => assert.fail(`bird -p rejected variant ${name}: ${err.stderr ?? String(err)}`));
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
