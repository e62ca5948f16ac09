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
    await a.docker('run', '-d', '--net', 'net1', '--name', 'c1', 'local/busybox', 'sleep', '900');
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
