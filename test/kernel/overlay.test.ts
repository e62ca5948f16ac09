/**
 * OverlayDataplane against the real kernel: two "hosts" (network namespaces ct-ov-<pid>-a/-b) joined by
 * a veth underlay 10.77.0.0/24. Each programs vxlan.calico from a DesiredOverlay computed by
 * calc/overlay from node records, and they ping each other's tunnel address over VXLAN. Also: a second
 * run changes nothing, a fresh instance (a restarted node) finds everything in place, CrossSubnet
 * switches the same block to a plain route, and removing the pools removes everything we made and
 * nothing else. Traffic stays between these namespaces; after() deletes them.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { desiredOverlay, vtepMac, type DesiredOverlay } from '../../plugin/calc/overlay.js';
import type { Block, IPPool, NodeRecord } from '../../plugin/datastore/model.js';
import { OverlayDataplane } from '../../plugin/dataplane/overlay.js';
import { ExecFileRunner, type CommandRunner } from '../../plugin/lib/exec.js';

const isRoot = typeof process.getuid === 'function' && process.getuid() === 0;
const skip = isRoot ? false : 'needs root (network namespaces)';
const base = `ct-ov-${process.pid}`;
const NS = { a: `${base}-a`, b: `${base}-b` };
const plain = new ExecFileRunner();
const inNs = (ns: string): ExecFileRunner => new ExecFileRunner(['nsenter', `--net=/run/netns/${ns}`]);
const run = { a: inNs(NS.a), b: inNs(NS.b) };

const pool = (vxlanMode: IPPool['vxlanMode']): IPPool => ({
  name: 'p', cidr: '10.244.0.0/16', blockSize: 26, ipipMode: 'Never', vxlanMode, natOutgoing: false, disabled: false, nodeSelector: 'all()',
});
const node = (name: string, ip: string, tunnel: string): NodeRecord => ({
  name, ipv4Address: ip, asNumber: null, routeReflectorClusterId: null, labels: {}, startedAt: 0,
  ipv4VXLANTunnelAddr: tunnel, vxlanTunnelMACAddr: vtepMac(name),
});
const nodes = [node('a', '10.77.0.1/24', '10.244.0.1'), node('b', '10.77.0.2/24', '10.244.1.1')];
const blocks: Block[] = [
  { cidr: '10.244.0.0/26', affinity: 'host:a', allocations: [] },
  { cidr: '10.244.1.0/26', affinity: 'host:b', allocations: [] },
];
const want = (self: 'a' | 'b', mode: IPPool['vxlanMode'], vxlanMtu = 0): DesiredOverlay =>
  desiredOverlay({ node: self, nodes, pools: [pool(mode)], blocks, vxlanMtu });

async function sh(r: CommandRunner, ...argv: string[]): Promise<string> {
  return (await r.run(argv, { timeoutMs: 10_000 })).stdout;
}
async function json<T = Record<string, unknown>>(r: CommandRunner, ...argv: string[]): Promise<T[]> {
  const out = (await sh(r, ...argv)).trim();
  return out === '' ? [] : (JSON.parse(out) as T[]);
}
async function pings(r: CommandRunner, addr: string): Promise<boolean> {
  return r.run(['ping', '-c1', '-W2', '-q', addr], { timeoutMs: 5_000 }).then(() => true, () => false);
}
async function txPackets(r: CommandRunner, dev: string): Promise<number> {
  const [l] = await json<{ stats64?: { tx?: { packets?: number } } }>(r, 'ip', '-json', '-s', 'link', 'show', 'dev', dev);
  return l?.stats64?.tx?.packets ?? 0;
}

describe('OverlayDataplane on a real kernel', { skip }, () => {
  const dp = { a: new OverlayDataplane(run.a), b: new OverlayDataplane(run.b) };

  before(async () => {
    for (const ns of Object.values(NS)) await plain.run(['ip', 'netns', 'add', ns]);
    await sh(run.a, 'ip', 'link', 'add', 'eth0', 'type', 'veth', 'peer', 'name', 'eth0', 'netns', NS.b);
    for (const [r, ip] of [[run.a, '10.77.0.1/24'], [run.b, '10.77.0.2/24']] as const) {
      await sh(r, 'ip', 'link', 'set', 'lo', 'up');
      await sh(r, 'ip', 'addr', 'add', ip, 'dev', 'eth0');
      await sh(r, 'ip', 'link', 'set', 'eth0', 'up');
    }
  });

  after(async () => {
    for (const ns of Object.values(NS)) await plain.run(['ip', 'netns', 'del', ns]).catch(() => undefined);
  });

  test('Always: vxlan.calico, permanent neighbour + FDB, onlink route; the tunnel addresses ping over VXLAN', async () => {
    const ra = await dp.a.reconcile(want('a', 'Always'), '10.77.0.1');
    await dp.b.reconcile(want('b', 'Always'), '10.77.0.2');
    assert.deepEqual(ra.problems, []);
    assert.equal(ra.underlayMtu, 1500);
    const [link] = await json<{ mtu: number; address: string; flags: string[]; linkinfo: { info_kind: string; info_data: Record<string, unknown> } }>(
      run.a, 'ip', '-json', '-d', 'link', 'show', 'dev', 'vxlan.calico',
    );
    assert.ok(link);
    assert.equal(link.mtu, 1450, 'underlay 1500 − 50');
    assert.equal(link.address, vtepMac('a'));
    assert.ok(link.flags.includes('UP'));
    assert.equal(link.linkinfo.info_kind, 'vxlan');
    assert.equal(link.linkinfo.info_data.id, 4096);
    assert.equal(link.linkinfo.info_data.port, 4789);
    assert.equal(link.linkinfo.info_data.local, '10.77.0.1');
    assert.equal(link.linkinfo.info_data.link, 'eth0');
    assert.equal(link.linkinfo.info_data.learning, false);
    assert.deepEqual(await json(run.a, 'ip', '-json', 'neigh', 'show', 'dev', 'vxlan.calico'), [
      { dst: '10.244.1.1', lladdr: vtepMac('b'), state: ['PERMANENT'] },
    ]);
    const fdb = await json<{ mac: string; dst?: string; state?: string }>(run.a, 'bridge', '-json', 'fdb', 'show', 'dev', 'vxlan.calico');
    assert.ok(fdb.some((f) => f.mac === vtepMac('b') && f.dst === '10.77.0.2' && f.state === 'permanent'), JSON.stringify(fdb));
    const routes = await json<{ dst: string; gateway: string; dev: string; flags: string[] }>(run.a, 'ip', '-json', 'route', 'show', 'proto', '80');
    assert.deepEqual(routes, [{ dst: '10.244.1.0/26', gateway: '10.244.1.1', dev: 'vxlan.calico', flags: ['onlink'] }]);

    const before = await txPackets(run.a, 'vxlan.calico');
    assert.ok(await pings(run.a, '10.244.1.1'), 'a → b over VXLAN');
    assert.ok((await txPackets(run.a, 'vxlan.calico')) > before, 'the ping went through vxlan.calico');
  });

  test('idempotent and restart-safe: a second run and a fresh instance change nothing', async () => {
    assert.deepEqual((await dp.a.reconcile(want('a', 'Always'), '10.77.0.1')).changes, []);
    assert.deepEqual((await new OverlayDataplane(run.a).reconcile(want('a', 'Always'), '10.77.0.1')).changes, []);
  });

  test('drift is repaired: a deleted neighbour, a changed MTU, a foreign route on our device', async () => {
    await sh(run.a, 'ip', 'neigh', 'del', '10.244.1.1', 'dev', 'vxlan.calico');
    await sh(run.a, 'ip', 'link', 'set', 'dev', 'vxlan.calico', 'mtu', '1300');
    await sh(run.a, 'ip', 'route', 'add', '10.244.9.0/26', 'via', '10.244.9.1', 'dev', 'vxlan.calico', 'onlink', 'proto', '80');
    const r = await dp.a.reconcile(want('a', 'Always', 1400), '10.77.0.1');
    assert.equal(r.changes.length, 3, r.changes.join('\n'));
    const [link] = await json<{ mtu: number }>(run.a, 'ip', '-json', 'link', 'show', 'dev', 'vxlan.calico');
    assert.equal(link?.mtu, 1400, 'configured MTU wins');
    assert.ok(await pings(run.a, '10.244.1.1'));
  });

  test('CrossSubnet on one subnet: the block goes via the peer host, not through the tunnel', async () => {
    await dp.a.reconcile(want('a', 'CrossSubnet'), '10.77.0.1');
    const routes = await json<{ dst: string; gateway: string; dev: string }>(run.a, 'ip', '-json', 'route', 'show', 'proto', '80');
    assert.deepEqual(routes.map((r) => [r.dst, r.gateway, r.dev]), [['10.244.1.0/26', '10.77.0.2', 'eth0']]);
    assert.deepEqual(await json(run.a, 'ip', '-json', 'neigh', 'show', 'dev', 'vxlan.calico'), [], 'no neighbour left for a plain peer');
  });

  test('no VXLAN pool left: everything we made goes, nothing else', async () => {
    // Not ours: a gateway-less proto 80 route (dataplane/linux.ts owns those), a BIRD route, another link.
    await sh(run.a, 'ip', 'route', 'add', '10.66.0.0/26', 'dev', 'eth0', 'proto', '80');
    await sh(run.a, 'ip', 'route', 'add', '10.67.0.0/26', 'via', '10.77.0.2', 'proto', 'bird');
    await sh(run.a, 'ip', 'link', 'add', 'vxlan.other', 'type', 'vxlan', 'id', '7', 'local', '10.77.0.1', 'dev', 'eth0', 'dstport', '4790');
    const none = desiredOverlay({ node: 'a', nodes, pools: [], blocks, vxlanMtu: 0 });
    await dp.a.reconcile(none, '10.77.0.1');
    const links = (await json<{ ifname: string }>(run.a, 'ip', '-json', 'link', 'show')).map((l) => l.ifname);
    assert.ok(!links.includes('vxlan.calico'));
    assert.ok(links.includes('vxlan.other'));
    const routes = (await json<{ dst: string }>(run.a, 'ip', '-json', 'route', 'show')).map((r) => r.dst);
    assert.ok(!routes.includes('10.244.1.0/26'));
    assert.ok(routes.includes('10.66.0.0/26') && routes.includes('10.67.0.0/26'), routes.join(' '));
    assert.deepEqual((await dp.a.reconcile(none, '10.77.0.1')).changes, []);
  });
});
