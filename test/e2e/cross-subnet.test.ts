/**
 * Hosts on two subnets: host1 and host2 on 10.K.0.0/24, host3 on 10.K.1.0/24, joined by a router
 * (the fabric netns) that has no route to any pool. One testbed for every case; the pool's vxlanMode
 * is changed live with `calico-ts apply` (nothing is restarted between modes):
 *   Never        same-subnet traffic works over BGP; host3's containers are unreachable, and
 *                `calico-ts node status` says why and what to do;
 *   Always       everything works, all of it VXLAN-encapsulated (tcpdump on host1's fabric port);
 *   CrossSubnet  host1↔host2 plain, host1↔host3 VXLAN;
 *   Never again  vxlan.calico and every route it made are gone.
 * Also: a restarted node keeps its tunnel address and VTEP MAC.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { after, before, describe, it } from 'node:test';
import { netnsPath } from '../helpers/netns.js';
import { Cleanup, run, waitFor, type RunError } from '../helpers/proc.js';
import { startTestbed, type Testbed, type TestbedHost } from '../helpers/testbed.js';

const POOL = 'default-ipv4-ippool';
const poolYaml = (vxlanMode: string) => `apiVersion: projectcalico.org/v3
kind: IPPool
metadata:
  name: ${POOL}
spec:
  cidr: 192.168.0.0/16
  blockSize: 26
  vxlanMode: ${vxlanMode}
  ipipMode: Never
  natOutgoing: false
`;

describe('two subnets: vxlanMode Never, Always, CrossSubnet, switched live', { timeout: 600_000 }, () => {
  const cleanup = new Cleanup();
  let t: Testbed;
  let h: TestbedHost[];
  const ips: string[] = [];
  const cli = (host: TestbedHost, args: string[], input?: string) => host.cli(args, input);
  const setMode = (mode: string) => cli(h[0]!, ['apply', '-f', '-'], poolYaml(mode));
  /** Ping from container c<from> to container c<to>'s address; true when it answers. */
  const ping = async (from: number, to: number, extra: string[] = []) =>
    h[from]!.docker('exec', `c${from}`, 'ping', '-c1', '-W2', ...extra, ips[to]!).then(
      () => true,
      () => false,
    );
  const reaches = (from: number, to: number, timeoutMs = 20_000) => waitFor(() => ping(from, to), timeoutMs, `c${from} → c${to}`, 200);
  const nodeRecord = async (name: string) =>
    JSON.parse(await cli(h[0]!, ['get', 'node', name, '-o', 'json'])) as { spec?: Record<string, unknown>; status?: Record<string, unknown> };

  /**
   * Packets matching `filter` on host1's port of the fabric while `action` runs (tcpdump in the fabric
   * netns; started and stopped by PID).
   */
  async function capture(filter: string, action: () => Promise<unknown>): Promise<number> {
    const child = spawn('nsenter', [`--net=${netnsPath(t.fabricNetns)}`, 'tcpdump', '-n', '-l', '-i', 'p1', filter], { stdio: ['ignore', 'pipe', 'pipe'] });
    let err = '';
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
    try {
      await waitFor(() => err.includes('listening on'), 10_000, `tcpdump listening (${err})`, 50);
      await action();
      await new Promise((r) => setTimeout(r, 300));
    } finally {
      child.kill('SIGINT');
      await exited;
    }
    const m = /(\d+) packets? captured/.exec(err);
    assert.ok(m, `tcpdump said: ${err}`);
    return Number(m[1]);
  }
  const vxlanPackets = (action: () => Promise<unknown>) => capture('udp port 4789', action);
  const plainIcmp = (to: number, action: () => Promise<unknown>) => capture(`icmp and host ${ips[to]}`, action);

  before(async () => {
    t = await startTestbed({ hosts: 3, subnets: [0, 0, 1], name: 'xs' });
    cleanup.add('testbed', () => t.stop());
    h = t.hosts;
    await h[0]!.docker('network', 'create', '--driver', 'calico-ts', '--ipam-driver', 'calico-ts', 'net1');
    for (const [i, host] of h.entries()) {
      await waitFor(async () => (await host.docker('network', 'ls', '--format', '{{.Name}}')).split('\n').includes('net1'), 20_000, `net1 on ${host.name}`);
      await host.docker('run', '-d', '--net', 'net1', '--name', `c${i}`, 'local/busybox', 'sleep', '900');
      ips[i] = await host.docker('inspect', '-f', '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}', `c${i}`);
    }
  });
  after(async () => {
    if (process.exitCode) for (const host of h ?? []) process.stderr.write(`--- ${host.name}\n${host.node?.log().slice(-4000) ?? ''}\n`);
    await cleanup.run();
  });

  it('Never: the same subnet works over BGP; the other subnet fails and node status says why', async () => {
    assert.equal(t.subnets.length, 2);
    await reaches(0, 1);
    assert.equal(await ping(0, 2), false, 'host3 is behind a router that knows no pool routes');
    await waitFor(async () => /cross-subnet: node\(s\) host3/.test(await cli(h[0]!, ['node', 'status'])), 20_000, 'cross-subnet problem in node status');
    const status = await cli(h[0]!, ['node', 'status']);
    assert.match(status, /not on this node's subnet/);
    assert.match(status, /vxlanMode: CrossSubnet \(or Always\)/);
    assert.doesNotMatch(status.split('\n').find((l) => l.includes(h[2]!.ip)) ?? '', /Established/, 'the BGP session to host3 is not up');
    assert.doesNotMatch((await h[0]!.exec(['ip', 'link', 'show'])).stdout, /vxlan\.calico/);
  });

  let pids: number[] = [];
  it('Always (applied live): every pair works, and host1↔host2 is encapsulated too', async () => {
    pids = h.map((host) => host.node!.pid()!);
    await setMode('Always');
    for (const [a, b] of [[0, 1], [0, 2], [2, 0], [1, 2]] as const) await reaches(a, b, 30_000);
    assert.ok((await vxlanPackets(() => ping(0, 1))) >= 2, 'c0 → c1 (same subnet) in VXLAN');
    assert.equal(await plainIcmp(1, () => ping(0, 1)), 0, 'no plain ICMP to c1 on the fabric');
    assert.ok((await vxlanPackets(() => ping(0, 2))) >= 2, 'c0 → c2 (other subnet) in VXLAN');
    for (const host of h) {
      const out = (await host.exec(['ip', '-d', 'link', 'show', 'vxlan.calico'])).stdout;
      assert.match(out, /vxlan id 4096 local 10\.\d+\.\d\.\d+ dev eth0 srcport 0 0 dstport 4789 nolearning/);
      assert.match(out, /mtu 1450/);
    }
    const routes = (await h[0]!.exec(['ip', 'route', 'show', 'proto', '80'])).stdout;
    assert.match(routes, /via 192\.168\.\d+\.\d+ dev vxlan\.calico onlink/);
    assert.doesNotMatch((await h[0]!.exec(['ip', 'route', 'show', 'proto', 'bird'])).stdout, /192\.168\./, 'BIRD leaves VXLAN pools to us');
    assert.deepEqual(h.map((host) => host.node!.pid()), pids, 'nothing restarted');
  });

  it('a restarted node keeps its tunnel address and VTEP MAC, and traffic resumes', async () => {
    const before = (await nodeRecord('host1')).spec ?? {};
    assert.ok(before.ipv4VXLANTunnelAddr, JSON.stringify(before));
    await h[0]!.startNode();
    await reaches(0, 2, 30_000);
    const after = (await nodeRecord('host1')).spec ?? {};
    assert.equal(after.ipv4VXLANTunnelAddr, before.ipv4VXLANTunnelAddr);
    assert.equal(after.vxlanTunnelMACAddr, before.vxlanTunnelMACAddr);
    pids = h.map((host) => host.node!.pid()!);
  });

  it('MTU: new containers get underlay − 50; the largest DF ping fits, one byte more is an error, not a black hole', async () => {
    for (const [host, name] of [[h[0]!, 'm0'], [h[2]!, 'm2']] as const) {
      await host.docker('run', '-d', '--net', 'net1', '--name', name, 'local/busybox', 'sleep', '900');
    }
    const pidOf = async (host: TestbedHost, name: string) => host.docker('inspect', '-f', '{{.State.Pid}}', name);
    const m0 = await pidOf(h[0]!, 'm0');
    const c0 = await pidOf(h[0]!, 'c0');
    const m2ip = await h[2]!.docker('inspect', '-f', '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}', 'm2');
    assert.match(await h[0]!.docker('exec', 'm0', 'cat', '/sys/class/net/eth0/mtu'), /^1450$/);
    // iputils ping inside the container's namespace (busybox ping cannot set DF).
    const dfPing = (pid: string, size: number) =>
      run(['nsenter', '-t', pid, '-n', 'ping', '-M', 'do', '-c', '1', '-W', '2', '-s', String(size), m2ip], { timeoutMs: 10_000 }).then(
        (r) => ({ ok: true, out: r.stdout + r.stderr }),
        (err: RunError) => ({ ok: false, out: `${err.message}\n${err.stdout}` }),
      );
    await waitFor(async () => (await dfPing(m0, 1422)).ok, 20_000, '1422-byte DF ping (1450 on the wire) m0 → m2');
    const tooBig = await dfPing(m0, 1423);
    assert.equal(tooBig.ok, false);
    assert.match(tooBig.out, /message too long|mtu ?= ?1450/i, 'the sender is told, at once');
    // A container made before the switch still has 1500: the host answers "fragmentation needed".
    assert.match(await h[0]!.docker('exec', 'c0', 'cat', '/sys/class/net/eth0/mtu'), /^1500$/);
    let old = await dfPing(c0, 1472);
    if (old.ok === false && !/mtu/i.test(old.out)) old = await dfPing(c0, 1472); // the first may only learn the PMTU
    assert.equal(old.ok, false);
    assert.match(old.out, /Frag needed|mtu ?= ?1450|message too long/i, `an ICMP error, not silence: ${old.out}`);
    // A network's own MTU wins.
    await h[0]!.docker('network', 'create', '--driver', 'calico-ts', '--ipam-driver', 'calico-ts', '-o', 'com.docker.network.driver.mtu=1400', 'net-mtu');
    assert.match(await h[0]!.docker('run', '--rm', '--net', 'net-mtu', 'local/busybox', 'cat', '/sys/class/net/eth0/mtu'), /^1400$/);
  });

  it('CrossSubnet (applied live): host1↔host2 plain, host1↔host3 VXLAN', async () => {
    await setMode('CrossSubnet');
    await waitFor(async () => (await h[0]!.exec(['ip', 'route', 'show', 'proto', '80'])).stdout.includes(`via ${h[1]!.ip} dev eth0`), 20_000, 'plain route to host2');
    for (const [a, b] of [[0, 1], [0, 2], [2, 0], [1, 2]] as const) await reaches(a, b, 30_000);
    assert.equal(await vxlanPackets(() => ping(0, 1)), 0, 'c0 → c1 not encapsulated');
    assert.ok((await plainIcmp(1, () => ping(0, 1))) >= 2, 'c0 → c1 plain on the fabric');
    assert.ok((await vxlanPackets(() => ping(0, 2))) >= 2, 'c0 → c2 in VXLAN');
    assert.doesNotMatch(await cli(h[0]!, ['node', 'status']), /cross-subnet:/, 'no complaint any more');
    assert.deepEqual(h.map((host) => host.node!.pid()), pids, 'nothing restarted');
  });

  it('Never again (applied live): vxlan.calico and its routes are gone; BGP carries the same subnet', async () => {
    await setMode('Never');
    for (const host of h) {
      await waitFor(async () => !(await host.exec(['ip', 'link', 'show'])).stdout.includes('vxlan.calico'), 20_000, `no vxlan.calico on ${host.name}`);
    }
    await reaches(0, 1, 30_000);
    assert.equal(await ping(0, 2), false);
    const ours = (await h[0]!.exec(['ip', 'route', 'show', 'proto', '80'])).stdout;
    assert.doesNotMatch(ours, / via /, `no overlay routes left:\n${ours}`);
    const rec = (await nodeRecord('host1')).spec ?? {};
    assert.ok(!rec.ipv4VXLANTunnelAddr, 'tunnel address released');
    assert.deepEqual(h.map((host) => host.node!.pid()), pids, 'nothing restarted');
  });
});
