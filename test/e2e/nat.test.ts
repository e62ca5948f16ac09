/**
 * Outgoing NAT (and, below, floating IPs) end to end on a two-host testbed. An "outside" namespace is
 * joined to host a only, by a veth (a: 203.0.113.1, outside: 203.0.113.2/24, no other route): it has no
 * route back to the pool, so a container reaches it only when host a masquerades. The outside counts what
 * arrives by source (iptables counters in its own namespace) to tell which address it saw.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { CLI } from '../helpers/calico-node.js';
import { createNetns, type Netns } from '../helpers/netns.js';
import { Cleanup, waitFor } from '../helpers/proc.js';
import { startTestbed, type Testbed, type TestbedHost } from '../helpers/testbed.js';

const HOST_SIDE = '203.0.113.1';
const OUTSIDE = '203.0.113.2';
const POOL = '192.168.0.0/16';
/** Floating IPs: outside every pool, in no subnet of the testbed. */
const FIP_LABEL = '172.31.250.10';
const FIP_CLI = '172.31.250.11';
const SERVER = 'nc -ll -p 5432 -e echo ok & sleep 900';

describe('outgoing NAT and floating IPs', { timeout: 600_000 }, () => {
  const cleanup = new Cleanup();
  let t: Testbed;
  let a: TestbedHost;
  let b: TestbedHost;
  let outside: Netns;

  const cli = async (host: TestbedHost, args: string[], input?: string) =>
    (await host.exec([process.execPath, CLI, ...args], { env: { PATH: process.env.PATH ?? '', ETCD_ENDPOINTS: t.etcdEndpoint }, timeoutMs: 30_000, ...(input !== undefined ? { input } : {}) })).stdout;
  const setNatOutgoing = (on: boolean) =>
    cli(a, ['apply', '-f', '-'], `apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: default-ipv4-ippool}\nspec: {cidr: ${POOL}, natOutgoing: ${on}}\n`);
  const pingOutside = async (container: string) => {
    try {
      await a.docker('exec', container, 'ping', '-c1', '-W1', OUTSIDE);
      return true;
    } catch {
      return false;
    }
  };
  /** Packets the outside received from `source` since the last reset. */
  const seenFrom = async (source: string) => {
    const { stdout } = await outside.exec(['iptables', '-S', 'INPUT', '-v']); // "-A INPUT -s <src>/32 -p icmp -c <pkts> <bytes>"
    const m = new RegExp(`^-A INPUT -s ${source.includes('/') ? source : `${source}/32`} .*-c (\\d+) \\d+$`, 'm').exec(stdout);
    if (!m) throw new Error(`no counter for ${source} in:\n${stdout}`);
    return Number(m[1]);
  };
  /** true when `container` on `host` can open TCP 5432 at `ip` (a busybox nc server answers "ok"). */
  const tcp = async (host: TestbedHost, container: string, ip: string) => {
    try {
      return (await host.docker('exec', container, 'sh', '-c', `echo | nc -w 2 ${ip} 5432`)).includes('ok');
    } catch {
      return false;
    }
  };
  const routeOnB = async (ip: string) => (await b.exec(['ip', 'route', 'show', `${ip}/32`])).stdout.trim();
  const natChain = async (host: TestbedHost, chain: string) => (await host.exec(['iptables', '-t', 'nat', '-S', chain])).stdout;

  before(async () => {
    t = await startTestbed({ hosts: 2, name: 'nat' });
    cleanup.add('testbed', () => t.stop());
    [a, b] = t.hosts as [TestbedHost, TestbedHost];
    outside = await createNetns({ prefix: 'nat-out' });
    cleanup.add('outside netns', () => outside.delete());
    await a.exec(['ip', 'link', 'add', 'vout0', 'type', 'veth', 'peer', 'name', 'eth0', 'netns', outside.name]);
    await a.exec(['ip', 'addr', 'add', `${HOST_SIDE}/24`, 'dev', 'vout0']);
    await a.exec(['ip', 'link', 'set', 'vout0', 'up']);
    await outside.exec(['ip', 'addr', 'add', `${OUTSIDE}/24`, 'dev', 'eth0']);
    await outside.exec(['ip', 'link', 'set', 'eth0', 'up']);
    // Counting rules (no target): what the outside receives, by source.
    await outside.exec(['iptables', '-A', 'INPUT', '-s', HOST_SIDE, '-p', 'icmp']);
    await outside.exec(['iptables', '-A', 'INPUT', '-s', POOL, '-p', 'icmp']);
    await a.docker('network', 'create', '--driver', 'calico-ts', '--ipam-driver', 'calico-ts', 'net1');
    await waitFor(async () => (await b.docker('network', 'ls', '--format', '{{.Name}}')).includes('net1'), 15_000, 'net1 on host b');
    await a.docker('run', '-d', '--net', 'net1', '--name', 'c1', 'local/busybox', 'sh', '-c', SERVER);
    await b.docker('run', '-d', '--net', 'net1', '--name', 'cl', 'local/busybox', 'sleep', '900');
  });
  after(async () => {
    if (process.exitCode) for (const host of t?.hosts ?? []) process.stderr.write(`--- ${host.name}\n${host.node?.log().slice(-3000) ?? ''}\n`);
    await cleanup.run();
  });

  it('natOutgoing false: the outside sees the container address and cannot answer', async () => {
    assert.equal((await natChain(a, 'cali-nat-outgoing')).trim(), '-N cali-nat-outgoing', 'the chain exists, empty');
    assert.match((await a.exec(['iptables', '-t', 'nat', '-S', 'POSTROUTING'])).stdout, /^-A POSTROUTING -m comment --comment "?cali:hook"? -j cali-POSTROUTING$/m);
    await outside.exec(['iptables', '-Z', 'INPUT']);
    assert.equal(await pingOutside('c1'), false);
    assert.ok((await seenFrom(POOL)) > 0, 'the echo request arrived from the container address');
    assert.equal(await seenFrom(HOST_SIDE), 0);
  });

  it('natOutgoing true, live: the container reaches the outside as the host; false again: it does not', async () => {
    await setNatOutgoing(true);
    await waitFor(async () => (await natChain(a, 'cali-nat-outgoing')).includes('MASQUERADE'), 10_000, 'MASQUERADE rule');
    assert.match(await natChain(a, 'cali-nat-outgoing'), /--match-set cali40masq-ipam-pools src -m set ! --match-set cali40all-ipam-pools dst -j MASQUERADE/);
    assert.match((await a.exec(['ipset', 'list', 'cali40masq-ipam-pools'])).stdout, /^192\.168\.0\.0\/16$/m);
    await outside.exec(['iptables', '-Z', 'INPUT']);
    assert.equal(await pingOutside('c1'), true);
    assert.ok((await seenFrom(HOST_SIDE)) > 0, "the outside saw the host's address");
    assert.equal(await seenFrom(POOL), 0, 'and never the container address');

    await setNatOutgoing(false);
    await waitFor(async () => !(await natChain(a, 'cali-nat-outgoing')).includes('MASQUERADE'), 10_000, 'MASQUERADE rule gone');
    assert.equal((await a.exec(['ipset', 'list', 'cali40masq-ipam-pools'])).stdout.split('Members:')[1]?.trim(), '');
    assert.equal(await pingOutside('c1'), false);
  });

  it('floating IP from a Docker label: DNATed on its host, announced, reachable from another host; gone with the container', async () => {
    await a.docker('run', '-d', '--net', 'net1', '--name', 'srv', '--label', `org.projectcalico.floating-ip=${FIP_LABEL}`, 'local/busybox', 'sh', '-c', SERVER);
    const srvIp = await a.docker('inspect', '-f', '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}', 'srv');
    await waitFor(() => tcp(b, 'cl', FIP_LABEL), 30_000, 'cl (host b) → floating IP → srv (host a)');
    assert.match(await natChain(a, 'cali-fip-dnat'), new RegExp(`-d ${FIP_LABEL}/32 .*-j DNAT --to-destination ${srvIp}$`, 'm'));
    assert.match(await natChain(a, 'cali-fip-snat'), new RegExp(`-s ${srvIp}/32 -d ${srvIp}/32 .*-j SNAT --to-source ${FIP_LABEL}$`, 'm'));
    assert.match(await routeOnB(FIP_LABEL), new RegExp(`via ${a.ip} .*proto bird`), 'host b learned the /32 over BGP');

    await a.docker('rm', '-f', 'srv');
    await waitFor(async () => (await natChain(a, 'cali-fip-dnat')).trim() === '-N cali-fip-dnat', 15_000, 'cali-fip-dnat empty');
    assert.equal((await natChain(a, 'cali-fip-snat')).trim(), '-N cali-fip-snat');
    await waitFor(async () => (await routeOnB(FIP_LABEL)) === '', 15_000, 'route withdrawn on host b');
    assert.equal(await tcp(b, 'cl', FIP_LABEL), false);
  });

  it('floating IP with `calico-ts floating-ip add/remove`: reachable (also from itself), bad input refused, removed again', async () => {
    const c1Id = await a.docker('inspect', '-f', '{{.Id}}', 'c1');
    const clId = await b.docker('inspect', '-f', '{{.Id}}', 'cl');
    const c1Ip = await a.docker('inspect', '-f', '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}', 'c1');
    const refused = async (args: string[], re: RegExp) => {
      const before = await cli(a, ['floating-ip', 'list']);
      await assert.rejects(cli(a, ['floating-ip', ...args]), re);
      assert.equal(await cli(a, ['floating-ip', 'list']), before, 'nothing changed');
    };
    // The container ID is known to the endpoint once the node has asked Docker (asynchronously).
    await waitFor(() => cli(a, ['floating-ip', 'add', c1Id.slice(0, 12), FIP_CLI]), 15_000, 'floating-ip add');
    assert.match(await cli(a, ['floating-ip', 'list']), new RegExp(`^${FIP_CLI.replace(/\./g, '\\.')}\\s+${c1Ip}\\s+${a.name}`, 'm'));
    await waitFor(() => tcp(b, 'cl', FIP_CLI), 30_000, 'cl (host b) → floating IP → c1 (host a)');
    assert.equal(await tcp(a, 'c1', FIP_CLI), true, 'hairpin: c1 reaches its own floating IP');

    await refused(['add', c1Id, 'not-an-ip'], /not an IPv4 address/);
    await refused(['add', c1Id, '192.168.200.1'], /inside the enabled pool default-ipv4-ippool/);
    await refused(['add', c1Id, a.ip], /address of node/);
    await refused(['add', c1Id, '169.254.1.1'], /link-local/);
    await waitFor(async () => (await cli(a, ['get', 'workloadendpoints'])).includes(clId.slice(0, 12)), 15_000, 'cl endpoint linked to its container');
    await refused(['add', clId.slice(0, 12), FIP_CLI], /already a floating IP of endpoint/);
    await refused(['add', c1Id, FIP_CLI, '--internal-ip', '10.9.9.9'], /not an address of endpoint/);
    await refused(['add', 'ffffffffffff', FIP_CLI], /does not exist/);

    await cli(a, ['floating-ip', 'remove', c1Id.slice(0, 12)]);
    await waitFor(async () => (await natChain(a, 'cali-fip-dnat')).trim() === '-N cali-fip-dnat', 15_000, 'cali-fip-dnat empty');
    await waitFor(async () => (await routeOnB(FIP_CLI)) === '', 15_000, 'route withdrawn on host b');
    assert.equal(await tcp(b, 'cl', FIP_CLI), false);
  });

  it('works without policy enforcement, and a restarted node finds its nat chains (no duplicate hooks)', async () => {
    await setNatOutgoing(true);
    await a.startNode({ CALICO_TS_POLICY_ENFORCEMENT: 'false' });
    assert.match(await natChain(a, 'cali-nat-outgoing'), /MASQUERADE/);
    const postrouting = (await a.exec(['iptables', '-t', 'nat', '-S', 'POSTROUTING'])).stdout;
    assert.equal(postrouting.split('\n').filter((l) => l.includes('cali-POSTROUTING')).length, 1, postrouting);
    await a.docker('run', '-d', '--net', 'net1', '--name', 'c2', 'local/busybox', 'sleep', '900');
    await waitFor(() => pingOutside('c2'), 10_000, 'c2 → outside through NAT');
    await setNatOutgoing(false);
    await waitFor(async () => !(await pingOutside('c2')), 10_000, 'no NAT');
  });
});
