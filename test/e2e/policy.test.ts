/**
 * Policy, end to end on two hosts: the default profile per network (same network talks, other networks
 * are isolated), a GlobalNetworkPolicy selecting containers by their Docker labels, Pass/Deny/order,
 * and how fast a policy change is enforced.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { CLI } from '../helpers/calico-node.js';
import { Cleanup, waitFor } from '../helpers/proc.js';
import { startTestbed, type Testbed, type TestbedHost } from '../helpers/testbed.js';

describe('policy across two hosts', { timeout: 600_000 }, () => {
  const cleanup = new Cleanup();
  let t: Testbed;
  let a: TestbedHost;
  let b: TestbedHost;
  const ips: Record<string, string> = {};
  const apply = async (yaml: string, verb = 'apply') =>
    (await a.exec([process.execPath, CLI, verb, '-f', '-'], { env: { PATH: process.env.PATH ?? '', ETCD_ENDPOINTS: t.etcdEndpoint }, input: yaml, timeoutMs: 30_000 })).stdout;
  const del = async (kind: string, name: string) =>
    a.exec([process.execPath, CLI, 'delete', kind, name], { env: { PATH: process.env.PATH ?? '', ETCD_ENDPOINTS: t.etcdEndpoint }, timeoutMs: 30_000 });
  /** true when `from` can open TCP `port` on `to` (a persistent busybox nc server answers "ok"). */
  const tcp = async (host: TestbedHost, from: string, to: string, port = 5432) => {
    try {
      return (await host.docker('exec', from, 'sh', '-c', `echo | nc -w 1 ${ips[to]} ${port}`)).includes('ok');
    } catch {
      return false;
    }
  };
  const ping = async (host: TestbedHost, from: string, to: string) => {
    try {
      await host.docker('exec', from, 'ping', '-c1', '-W1', ips[to]!);
      return true;
    } catch {
      return false;
    }
  };
  const run = async (host: TestbedHost, name: string, net: string, labels: Record<string, string> = {}) => {
    const labelArgs = Object.entries(labels).flatMap(([k, v]) => ['--label', `org.projectcalico.label.${k}=${v}`]);
    await host.docker('run', '-d', '--net', net, '--name', name, ...labelArgs, 'local/busybox', 'sh', '-c', 'nc -ll -p 5432 -e echo ok & sleep 900');
    ips[name] = await host.docker('inspect', '-f', '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}', name);
  };

  before(async () => {
    t = await startTestbed({ hosts: 2 });
    cleanup.add('testbed', () => t.stop());
    [a, b] = t.hosts as [TestbedHost, TestbedHost];
    await a.docker('network', 'create', '--driver', 'calico-ts', '--ipam-driver', 'calico-ts', 'net1');
    await a.docker('network', 'create', '--driver', 'calico-ts', '--ipam-driver', 'calico-ts', 'net2');
    await waitFor(async () => (await b.docker('network', 'ls', '--format', '{{.Name}}')).includes('net2'), 15_000, 'networks on host b');
    await run(a, 'db', 'net1', { role: 'db' });
    await run(b, 'web', 'net1', { role: 'web' });
    await run(b, 'other', 'net1');
    await run(b, 'stranger', 'net2');
    await run(a, 'neighbour', 'net1');
  });
  after(async () => {
    if (process.exitCode) for (const host of t?.hosts ?? []) process.stderr.write(`--- ${host.name}\n${host.node?.log().slice(-3000) ?? ''}\n`);
    await cleanup.run();
  });

  it('the network profile: same network talks across hosts, another network is isolated, egress to hosts allowed', async () => {
    await waitFor(() => tcp(b, 'web', 'db'), 10_000, 'web → db on net1');
    assert.equal(await tcp(b, 'other', 'db'), true);
    assert.equal(await ping(b, 'web', 'db'), true);
    assert.equal(await tcp(b, 'stranger', 'db'), false, 'net2 → net1 is dropped');
    assert.equal(await ping(b, 'stranger', 'db'), false);
    assert.equal(await tcp(a, 'db', 'stranger'), false, 'net1 → net2 is dropped');
    // A container reaches its own host and the other host (egress is allowed; host traffic is not policed).
    await b.docker('exec', 'stranger', 'ping', '-c1', '-W1', b.ip);
    await a.exec(['ping', '-c1', '-W1', ips.db!]);
  });

  it('a GlobalNetworkPolicy on Docker labels: only web reaches db, only on TCP 5432', async () => {
    const started = Date.now();
    await apply(`apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: db-from-web}
spec:
  order: 100
  selector: role == 'db'
  types: [Ingress]
  ingress:
  - action: Allow
    protocol: TCP
    source: {selector: role == 'web'}
    destination: {ports: [5432]}
`);
    await waitFor(async () => !(await tcp(b, 'other', 'db')), 5_000, 'other → db blocked');
    process.stdout.write(`# policy applied → enforced across hosts in ${Date.now() - started} ms (includes the CLI)\n`);
    assert.equal(await tcp(b, 'web', 'db'), true, 'web → db:5432 allowed');
    assert.equal(await tcp(a, 'neighbour', 'db'), false, 'denied on the same host too');
    assert.equal(await tcp(b, 'web', 'db', 5433), false, 'only port 5432');
    assert.equal(await ping(b, 'web', 'db'), false, 'ICMP is not in the policy');
    assert.equal(await tcp(a, 'db', 'web'), true, 'egress from db is not policed (Ingress only), and web accepts net1');
  });

  it('order, Deny and Pass: a lower-order Deny wins; Pass hands over to the profile', async () => {
    await apply(`apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: deny-web-first}
spec:
  order: 10
  selector: role == 'db'
  ingress: [{action: Deny, source: {selector: role == 'web'}}]
`);
    await waitFor(async () => !(await tcp(b, 'web', 'db')), 5_000, 'web → db denied');
    await apply(`apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: deny-web-first}
spec:
  order: 10
  selector: role == 'db'
  ingress: [{action: Pass, source: {selector: role == 'web'}}]
`);
    // Pass skips db-from-web and goes to the net1 profile, which allows web.
    await waitFor(async () => tcp(b, 'web', 'db'), 5_000, 'web → db passed to the profile');
    assert.equal(await ping(b, 'web', 'db'), true, 'the profile allows ICMP too');
    assert.equal(await tcp(b, 'other', 'db'), false, 'other is still caught by db-from-web');
    await del('globalnetworkpolicy', 'deny-web-first');
  });

  it('Log logs and carries on', async () => {
    await apply(`apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: log-web}
spec:
  order: 5
  selector: role == 'db'
  ingress: [{action: Log, protocol: TCP, source: {selector: role == 'web'}}]
`);
    const logPackets = async () => {
      const save = (await a.exec(['iptables-save', '-c', '-t', 'filter'])).stdout;
      return save.split('\n').filter((l) => l.includes('-j LOG')).reduce((n, l) => n + Number(/^\[(\d+):/.exec(l)?.[1] ?? 0), 0);
    };
    await waitFor(async () => (await a.exec(['iptables-save', '-t', 'filter'])).stdout.includes('-j LOG'), 5_000, 'LOG rule installed');
    const before = await logPackets();
    assert.equal(await tcp(b, 'web', 'db'), true, 'Log does not decide: db-from-web still allows');
    assert.ok((await logPackets()) > before, 'the LOG rule counted the packets');
    await del('globalnetworkpolicy', 'log-web');
  });

  it("a label added by the network's profile (labelsToApply) is matched by selectors", async () => {
    await apply(`apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: deny-backend}
spec:
  order: 1
  selector: role == 'db'
  ingress: [{action: Deny, source: {selector: tier == 'backend'}}]
`);
    assert.equal(await tcp(b, 'web', 'db'), true, 'nobody is tier=backend yet');
    const profile = (
      await a.exec([process.execPath, CLI, 'get', 'profile', 'net1', '-o', 'yaml'], { env: { PATH: process.env.PATH ?? '', ETCD_ENDPOINTS: t.etcdEndpoint } })
    ).stdout;
    await apply(profile.replace(/labelsToApply:\n/, 'labelsToApply:\n    tier: backend\n'));
    await waitFor(async () => !(await tcp(b, 'web', 'db')), 5_000, 'web (now tier=backend through net1) denied');
    await del('globalnetworkpolicy', 'deny-backend');
  });

  it('an invalid document changes nothing', async () => {
    const table = async () => (await a.exec(['iptables-save', '-t', 'filter'])).stdout.replace(/^#.*\n/gm, '');
    // Let the previous test's changes settle: two equal snapshots in a row.
    let before = await table();
    await waitFor(async () => {
      await new Promise((r) => setTimeout(r, 300));
      const now = await table();
      const stable = now === before;
      before = now;
      return stable;
    }, 10_000, 'filter table settled');
    await assert.rejects(
      apply(`apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: broken}
spec:
  selector: role == 'db'
  ingress: [{action: Allow, protocol: TCP, destination: {ports: [99999]}}]
`),
      /ports/,
    );
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(await table(), before);
  });

  it('labels and changes apply to new containers; deleting the policy restores the profile', async () => {
    await run(a, 'web2', 'net1', { role: 'web' });
    await waitFor(async () => tcp(a, 'web2', 'db'), 5_000, 'new web2 container is in the web selector');
    await del('globalnetworkpolicy', 'db-from-web');
    await waitFor(async () => tcp(b, 'other', 'db'), 5_000, 'other → db allowed again');
  });

  it('iptables rules stay O(endpoints + policies) and everything we own is named cali-', async () => {
    const save = (await a.exec(['iptables-save', '-t', 'filter'])).stdout;
    const chains = save.split('\n').filter((l) => l.startsWith(':cali-'));
    assert.ok(chains.length > 5);
    const jumps = save.split('\n').filter((l) => /^-A (FORWARD|INPUT|OUTPUT) .*-j cali-/.test(l));
    for (const j of jumps) assert.match(j, /--comment/, `our hook rules carry a comment: ${j}`);
    const sets = (await a.exec(['ipset', 'list', '-n'])).stdout.trim().split('\n').filter(Boolean);
    for (const s of sets) assert.match(s, /^cali[46]0/); // IPv4 and IPv6 (ip6tables) sets
  });
});
