/**
 * LinuxDataplane against the real kernel, inside throwaway network namespaces:
 *   ct-dp-<pid>-h   the "host" the dataplane programs (through `nsenter --net=`),
 *   ct-dp-<pid>-c1, -c2   two "containers" that receive the veth peers, as Docker would move them,
 *   ct-dp-<pid>-d   a second host that has a default route (no 169.254.1.1 route must be added there).
 * Traffic only flows between these namespaces. after() deletes them whatever happened.
 * Needs root, iproute2, iptables and ping.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { ExecFileRunner, type CommandRunner } from '../../plugin/lib/exec.js';
import { ValidationError } from '../../plugin/lib/errors.js';
import { LinuxDataplane } from '../../plugin/dataplane/linux.js';
import type { DesiredEndpoint, DesiredHostState } from '../../plugin/dataplane/types.js';

const isRoot = typeof process.getuid === 'function' && process.getuid() === 0;
const skip = isRoot ? false : 'needs root (network namespaces)';

const base = `ct-dp-${process.pid}`;
const HOST = `${base}-h`;
const C1 = `${base}-c1`;
const C2 = `${base}-c2`;
const HOST_D = `${base}-d`;
const ALL_NS = [HOST, C1, C2, HOST_D];

const plain = new ExecFileRunner();
const inNs = (ns: string): ExecFileRunner => new ExecFileRunner(['nsenter', `--net=/run/netns/${ns}`]);
const host = inNs(HOST);
const c1 = inNs(C1);
const c2 = inNs(C2);

const HOST_ADDR = '10.255.255.1';
const BLOCK = '10.65.0.0/26';
const ep1: DesiredEndpoint = { interfaceName: 'cali00000000001', peerName: 'tmp00000000001', ipNetworks: ['10.65.0.2/32'], mtu: 1400 };
const ep2: DesiredEndpoint = { interfaceName: 'cali00000000002', peerName: 'tmp00000000002', ipNetworks: ['10.65.0.3/32'], mtu: 0 };
const desired: DesiredHostState = { endpoints: [ep1, ep2], blackholes: [BLOCK] };

async function sh(r: CommandRunner, ...argv: string[]): Promise<string> {
  return (await r.run(argv, { timeoutMs: 10_000 })).stdout;
}
async function json<T = Record<string, unknown>>(r: CommandRunner, ...argv: string[]): Promise<T[]> {
  const out = (await sh(r, ...argv)).trim();
  return out === '' ? [] : (JSON.parse(out) as T[]);
}
async function linkNames(r: CommandRunner): Promise<string[]> {
  return (await json<{ ifname: string }>(r, 'ip', '-json', 'link', 'show')).map((l) => l.ifname);
}
async function sysctl(r: CommandRunner, key: string): Promise<string> {
  return (await sh(r, 'sysctl', '-n', key)).trim();
}
async function pings(r: CommandRunner, addr: string): Promise<boolean> {
  try {
    await r.run(['ping', '-c1', '-W1', '-q', addr], { timeoutMs: 5_000 });
    return true;
  } catch {
    return false;
  }
}
/** What Docker does on Join: move the peer into the container, call it eth0, address /32, gateway 169.254.1.1. */
async function plugIn(ep: DesiredEndpoint, ns: string, ctr: CommandRunner): Promise<void> {
  await sh(host, 'ip', 'link', 'set', ep.peerName, 'netns', ns);
  await sh(ctr, 'ip', 'link', 'set', ep.peerName, 'name', 'eth0');
  await sh(ctr, 'ip', 'addr', 'add', ep.ipNetworks[0] ?? '', 'dev', 'eth0');
  await sh(ctr, 'ip', 'link', 'set', 'eth0', 'up');
  await sh(ctr, 'ip', 'route', 'add', '169.254.1.1', 'dev', 'eth0', 'scope', 'link');
  await sh(ctr, 'ip', 'route', 'add', 'default', 'via', '169.254.1.1');
}
const ip1 = '10.65.0.2';
const ip2 = '10.65.0.3';

describe('LinuxDataplane on a real kernel', { skip }, () => {
  const dp = new LinuxDataplane(host);

  before(async () => {
    for (const ns of ALL_NS) await plain.run(['ip', 'netns', 'add', ns]);
    for (const r of [host, c1, c2, inNs(HOST_D)]) await sh(r, 'ip', 'link', 'set', 'lo', 'up');
    await sh(host, 'ip', 'addr', 'add', `${HOST_ADDR}/32`, 'dev', 'lo');
  });

  after(async () => {
    for (const ns of ALL_NS) await plain.run(['ip', 'netns', 'del', ns]).catch(() => undefined);
  });

  test('ensureBase: forwarding, cali-FORWARD chain with one jump at the top, gateway route; idempotent', async () => {
    await sh(host, 'iptables', '-A', 'FORWARD', '-s', '192.0.2.1', '-j', 'ACCEPT'); // someone else's rule
    await dp.ensureBase();
    await dp.ensureBase();
    await Promise.all([dp.ensureBase(), dp.ensureBase()]);
    assert.equal(await sysctl(host, 'net.ipv4.ip_forward'), '1');
    const fwd = (await sh(host, 'iptables', '-S', 'FORWARD')).trim().split('\n');
    assert.match(fwd[1] ?? '', /--comment "?cali:forward-jump"? -j cali-FORWARD/);
    assert.equal(fwd.filter((l) => l.includes('cali-FORWARD')).length, 1, fwd.join('\n'));
    assert.ok(fwd.includes('-A FORWARD -s 192.0.2.1/32 -j ACCEPT'), 'other rules kept');
    const chain = (await sh(host, 'iptables', '-S', 'cali-FORWARD')).trim().split('\n');
    assert.deepEqual(chain, ['-N cali-FORWARD', '-A cali-FORWARD -i cali+ -j ACCEPT', '-A cali-FORWARD -o cali+ -j ACCEPT']);
    const gw = await json(host, 'ip', '-json', 'route', 'show', '169.254.1.1/32', 'proto', '80');
    assert.equal(gw.length, 1);
    assert.equal(gw[0]?.dev, 'lo');

    // Docker (re)starting inserts its own jump above ours: ours goes back to the top, still once.
    await sh(host, 'iptables', '-I', 'FORWARD', '1', '-s', '192.0.2.2', '-j', 'ACCEPT');
    await sh(host, 'iptables', '-A', 'cali-FORWARD', '-j', 'DROP'); // drifted chain content
    await dp.ensureBase();
    const fwd2 = (await sh(host, 'iptables', '-S', 'FORWARD')).trim().split('\n');
    assert.match(fwd2[1] ?? '', /cali:forward-jump/);
    assert.equal(fwd2.filter((l) => l.includes('cali-FORWARD')).length, 1);
    assert.equal((await sh(host, 'iptables', '-S', 'cali-FORWARD')).trim().split('\n').length, 3);
  });

  test('ensureBase on a host with a default route adds no gateway route', async () => {
    const d = inNs(HOST_D);
    await sh(d, 'ip', 'link', 'add', 'uplink0', 'type', 'veth', 'peer', 'name', 'uplink1');
    await sh(d, 'ip', 'link', 'set', 'uplink0', 'up');
    await sh(d, 'ip', 'addr', 'add', '192.0.2.10/24', 'dev', 'uplink0');
    await sh(d, 'ip', 'route', 'add', 'default', 'via', '192.0.2.254');
    await new LinuxDataplane(d).ensureBase();
    assert.deepEqual(await json(d, 'ip', '-json', 'route', 'show', 'proto', '80'), []);
  });

  test('ensureEndpoint: veth, MAC, MTU, sysctls, /32 route while the peer is still in the host namespace; idempotent', async () => {
    await dp.ensureEndpoint(ep1);
    await dp.ensureEndpoint(ep2);
    const links = await json<{ ifname: string; address: string; mtu: number; flags: string[]; ifindex: number }>(host, 'ip', '-json', 'link', 'show');
    const h1 = links.find((l) => l.ifname === ep1.interfaceName);
    const p1 = links.find((l) => l.ifname === ep1.peerName);
    assert.ok(h1 && p1, 'both ends in the host namespace');
    assert.equal(h1.address, 'ee:ee:ee:ee:ee:ee');
    assert.equal(h1.mtu, 1400);
    assert.equal(p1.mtu, 1400);
    assert.ok(h1.flags.includes('UP'));
    assert.equal(links.find((l) => l.ifname === ep2.interfaceName)?.mtu, 1500, 'mtu 0 = kernel default');
    for (const [k, v] of [
      [`net.ipv4.conf.${ep1.interfaceName}.proxy_arp`, '1'],
      [`net.ipv4.neigh.${ep1.interfaceName}.proxy_delay`, '0'],
      [`net.ipv4.conf.${ep1.interfaceName}.forwarding`, '1'],
    ] as const) {
      assert.equal(await sysctl(host, k), v, k);
    }
    const routes = await json(host, 'ip', '-json', 'route', 'show', 'proto', '80', 'dev', ep1.interfaceName);
    assert.deepEqual(
      routes.map((r) => [r.dst, r.scope]),
      [[ip1, 'link']],
    );
    await dp.ensureEndpoint(ep1); // again: no error, same link
    const again = await json<{ ifname: string; ifindex: number }>(host, 'ip', '-json', 'link', 'show', 'dev', ep1.interfaceName);
    assert.equal(again[0]?.ifindex, h1.ifindex);
  });

  test('containers reach the host, the host reaches them, they reach each other (proxy ARP + forwarding)', async () => {
    await plugIn(ep1, C1, c1);
    await plugIn(ep2, C2, c2);
    assert.ok(await pings(c1, HOST_ADDR), 'c1 -> host');
    assert.ok(await pings(host, ip1), 'host -> c1');
    assert.ok(await pings(c1, ip2), 'c1 -> c2');
    assert.ok(await pings(c2, ip1), 'c2 -> c1');
    const neigh = await sh(c1, 'ip', 'neigh', 'show', '169.254.1.1');
    assert.match(neigh, /lladdr ee:ee:ee:ee:ee:ee/);
  });

  test('ensureEndpoint after the peer moved into the container: completes, does not recreate', async () => {
    const before = await json<{ ifindex: number }>(host, 'ip', '-json', 'link', 'show', 'dev', ep1.interfaceName);
    await sh(host, 'ip', 'route', 'del', `${ip1}/32`, 'dev', ep1.interfaceName);
    await dp.ensureEndpoint(ep1);
    const now = await json<{ ifindex: number }>(host, 'ip', '-json', 'link', 'show', 'dev', ep1.interfaceName);
    assert.equal(now[0]?.ifindex, before[0]?.ifindex);
    assert.ok(await pings(c1, ip2), 'route restored');
  });

  test('FORWARD policy DROP: container to container still passes thanks to cali-FORWARD', async () => {
    await sh(host, 'iptables', '-P', 'FORWARD', 'DROP');
    assert.ok(await pings(c1, ip2), 'c1 -> c2 with policy DROP');
    // Control: without our jump the same ping is dropped ...
    await sh(host, 'iptables', '-D', 'FORWARD', '-m', 'comment', '--comment', 'cali:forward-jump', '-j', 'cali-FORWARD');
    assert.equal(await pings(c1, ip2), false, 'dropped without the jump');
    // ... and ensureBase puts it back.
    await dp.ensureBase();
    assert.ok(await pings(c1, ip2), 'passes again');
  });

  test('proxy ARP for 169.254.1.1 needs a host route covering it (control without, restored by ensureBase)', async () => {
    await sh(host, 'ip', 'route', 'del', '169.254.1.1/32', 'dev', 'lo');
    await sh(c1, 'ip', 'neigh', 'flush', 'dev', 'eth0');
    assert.equal(await pings(c1, HOST_ADDR), false, 'no ARP answer without a route');
    assert.match(await sh(c1, 'ip', 'neigh', 'show', '169.254.1.1'), /INCOMPLETE|FAILED/);
    await dp.ensureBase();
    await sh(c1, 'ip', 'neigh', 'flush', 'dev', 'eth0');
    assert.ok(await pings(c1, HOST_ADDR));
  });

  test('reconcile restores what drifted, removes only our strays, then is a no-op', async () => {
    const first = await dp.reconcile(desired);
    assert.deepEqual(first.changes, [`route add blackhole ${BLOCK}`]);

    // Drift and strays.
    await sh(host, 'ip', 'route', 'del', `${ip2}/32`, 'dev', ep2.interfaceName);
    await sh(host, 'sysctl', '-w', `net.ipv4.conf.${ep1.interfaceName}.proxy_arp=0`);
    await sh(host, 'ip', 'link', 'add', 'califfffffffff1', 'type', 'veth', 'peer', 'name', 'tmpfffffffffff1');
    await sh(host, 'ip', 'route', 'replace', 'blackhole', '10.66.0.0/26', 'proto', '80');
    await sh(host, 'ip', 'route', 'replace', '10.65.0.40/32', 'dev', ep1.interfaceName, 'scope', 'link', 'proto', '80');
    // Not ours: a non-cali veth with a route, a route on a cali veth without proto 80, a blackhole of another proto.
    await sh(host, 'ip', 'link', 'add', 'keepme0', 'type', 'veth', 'peer', 'name', 'keepme1');
    await sh(host, 'ip', 'link', 'set', 'keepme0', 'up');
    await sh(host, 'ip', 'route', 'add', '10.77.0.0/24', 'dev', 'keepme0', 'proto', '80');
    await sh(host, 'ip', 'route', 'add', '10.65.0.41/32', 'dev', ep1.interfaceName, 'scope', 'link');
    await sh(host, 'ip', 'route', 'add', 'blackhole', '10.78.0.0/24');

    const second = await dp.reconcile(desired);
    assert.deepEqual([...second.changes].sort(), [
      'link del califfffffffff1',
      'route add 10.65.0.3/32 dev cali00000000002',
      'route del 10.65.0.40/32 dev cali00000000001',
      'route del blackhole 10.66.0.0/26',
      `sysctl net.ipv4.conf.${ep1.interfaceName}.proxy_arp=1`,
    ]);
    const names = await linkNames(host);
    assert.ok(!names.includes('califfffffffff1'));
    assert.ok(names.includes('keepme0'));
    const all = (await sh(host, 'ip', 'route', 'show')).split('\n');
    assert.ok(all.some((l) => l.startsWith('10.77.0.0/24 dev keepme0')), 'non-cali proto 80 route kept');
    assert.ok(all.some((l) => l.startsWith('10.65.0.41 dev cali00000000001')), 'non-proto-80 route kept');
    assert.ok(all.some((l) => l.startsWith('blackhole 10.78.0.0/24')), 'foreign blackhole kept');
    assert.ok(all.some((l) => l.startsWith('169.254.1.1 dev lo')), 'gateway route kept');
    assert.ok(all.some((l) => l.startsWith(`blackhole ${BLOCK} proto 80`)));
    assert.ok(!all.some((l) => l.includes('10.66.0.0/26')));
    assert.equal(await sysctl(host, `net.ipv4.conf.${ep1.interfaceName}.proxy_arp`), '1');
    assert.ok(await pings(c1, ip2), 'c1 -> c2 after reconcile');

    const third = await dp.reconcile(desired);
    assert.deepEqual(third.changes, []);
  });

  test('reconcile brings a downed host end back up before re-adding its routes', async () => {
    await sh(host, 'ip', 'link', 'set', ep2.interfaceName, 'down'); // the kernel drops its routes
    const r = await dp.reconcile(desired);
    assert.deepEqual(r.changes, [`link set ${ep2.interfaceName} address ee:ee:ee:ee:ee:ee up (was down)`, `route add ${ip2}/32 dev ${ep2.interfaceName}`]);
    assert.ok(await pings(c1, ip2));
    assert.deepEqual((await dp.reconcile(desired)).changes, []);
  });

  test('reconcile creates a missing endpoint, and deletes it once it is no longer desired', async () => {
    const ep3: DesiredEndpoint = { interfaceName: 'cali00000000003', peerName: 'tmp00000000003', ipNetworks: ['10.65.0.4/32', 'fd00:65::4/128'], mtu: 1450 };
    const withEp3: DesiredHostState = { endpoints: [ep1, ep2, ep3], blackholes: [BLOCK, 'fd00:65::/122'] };
    const r = await dp.reconcile(withEp3);
    assert.deepEqual(r.changes, [
      'link add cali00000000003 type veth peer tmp00000000003 mtu 1450',
      'sysctl net.ipv4.conf.cali00000000003.proxy_arp=1',
      'sysctl net.ipv4.neigh.cali00000000003.proxy_delay=0',
      'sysctl net.ipv4.conf.cali00000000003.forwarding=1',
      // An IPv6 endpoint: the EUI-64 link-local gateway without DAD, forwarding, and (first time) host-wide.
      'sysctl net.ipv6.conf.cali00000000003.addr_gen_mode=0',
      'sysctl net.ipv6.conf.cali00000000003.accept_dad=0',
      'sysctl net.ipv6.conf.cali00000000003.forwarding=1',
      'sysctl net.ipv6.conf.all.forwarding=1',
      'route add 10.65.0.4/32 dev cali00000000003',
      'route add fd00:65::4/128 dev cali00000000003',
      'route add blackhole fd00:65::/122',
    ]);
    const v6 = await json(host, 'ip', '-json', '-6', 'route', 'show', 'proto', '80');
    assert.deepEqual(v6.map((x) => [x.type ?? 'unicast', x.dst, x.dev]).sort(), [
      ['blackhole', 'fd00:65::/122', 'lo'],
      ['unicast', 'fd00:65::4', 'cali00000000003'],
    ]);
    assert.deepEqual((await dp.reconcile(withEp3)).changes, []);

    const r2 = await dp.reconcile(desired);
    assert.deepEqual(r2.changes, ['link del cali00000000003', 'route del blackhole fd00:65::/122']);
    assert.ok(!(await linkNames(host)).includes('cali00000000003'));
    assert.deepEqual(await json(host, 'ip', '-json', '-6', 'route', 'show', 'proto', '80'), []);
  });

  test('sysctlRoot: sysctls written and read as files through the runner', async () => {
    const files = new LinuxDataplane(host, { sysctlRoot: '/proc/sys' });
    const ep4: DesiredEndpoint = { interfaceName: 'cali00000000004', peerName: 'tmp00000000004', ipNetworks: ['10.65.0.5/32'], mtu: 0 };
    await files.ensureEndpoint(ep4);
    assert.equal(await sysctl(host, `net.ipv4.conf.${ep4.interfaceName}.proxy_arp`), '1');
    assert.equal(await sysctl(host, `net.ipv4.neigh.${ep4.interfaceName}.proxy_delay`), '0');
    assert.equal(await sysctl(host, `net.ipv4.conf.${ep4.interfaceName}.forwarding`), '1');
    const withEp4: DesiredHostState = { endpoints: [...desired.endpoints, ep4], blackholes: desired.blackholes };
    assert.deepEqual((await files.reconcile(withEp4)).changes, []);
    await sh(host, 'sysctl', '-w', `net.ipv4.neigh.${ep4.interfaceName}.proxy_delay=80`);
    assert.deepEqual((await files.reconcile(withEp4)).changes, [`sysctl net.ipv4.neigh.${ep4.interfaceName}.proxy_delay=0`]);
    await files.removeEndpoint(ep4.interfaceName);
  });

  test('removeEndpoint: deletes, is quiet when gone, refuses non-cali names', async () => {
    await dp.ensureEndpoint({ interfaceName: 'cali00000000005', peerName: 'tmp00000000005', ipNetworks: ['10.65.0.6/32'], mtu: 0 });
    await dp.removeEndpoint('cali00000000005');
    assert.ok(!(await linkNames(host)).includes('cali00000000005'));
    await dp.removeEndpoint('cali00000000005');
    await assert.rejects(dp.removeEndpoint('keepme0'), ValidationError);
    await assert.rejects(dp.removeEndpoint('eth0'), ValidationError);
    assert.ok((await linkNames(host)).includes('keepme0'));
    assert.deepEqual((await dp.reconcile(desired)).changes, []);
  });
});
