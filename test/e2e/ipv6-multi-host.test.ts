/**
 * IPv6 across hosts: two network-namespace hosts whose eth0 also has an IPv6 address (testbed `ipv6`),
 * each with its dockerd and calico-ts node (IP6 set, CALICO_TS_IPV6_POOL_CIDR), one etcd. A `--ipv6`
 * network made on one host appears on the other with IPv6; BIRD carries the IPv6 blocks on the ipv6
 * channel of the IPv4 sessions, next hop = the node's IPv6 address; containers ping6 across hosts, and
 * policy isolates networks over IPv6 across hosts too.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { Cleanup, waitFor } from '../helpers/proc.js';
import { startTestbed, type Testbed, type TestbedHost } from '../helpers/testbed.js';

const POOL6 = 'fd00:ca11:e2::/48';

describe('IPv6 across two hosts, BGP', { timeout: 600_000 }, () => {
  const cleanup = new Cleanup();
  let t: Testbed;
  let a: TestbedHost;
  let b: TestbedHost;
  const ip6Of = (host: TestbedHost, name: string) => host.docker('inspect', '-f', '{{range .NetworkSettings.Networks}}{{.GlobalIPv6Address}}{{end}}', name);
  const ping6 = (host: TestbedHost, from: string, to: string): Promise<boolean> =>
    host.docker('exec', from, 'ping', '-6', '-c1', '-W1', to).then(
      () => true,
      () => false,
    );

  before(async () => {
    t = await startTestbed({ hosts: 2, name: 'tb6', ipv6: true, nodeEnv: { CALICO_TS_IPV6_POOL_CIDR: POOL6 } });
    cleanup.add('testbed', () => t.stop());
    [a, b] = t.hosts as [TestbedHost, TestbedHost];
  });
  after(async () => {
    if (process.exitCode) for (const host of t?.hosts ?? []) process.stderr.write(`--- ${host.name}\n${host.node?.log().slice(-3000) ?? ''}\n`);
    await cleanup.run();
  });

  it('a --ipv6 network made on one host appears on the other with IPv6; containers ping6 across hosts', async () => {
    await a.docker('network', 'create', '--ipv6', '--driver', 'calico-ts', '--ipam-driver', 'calico-ts', 'dual');
    await waitFor(async () => (await b.docker('network', 'ls', '--format', '{{.Name}}')).split('\n').includes('dual'), 15_000, 'dual on host2');
    assert.equal(await b.docker('network', 'inspect', '-f', '{{.EnableIPv6}}', 'dual'), 'true');
    await a.docker('run', '-d', '--net', 'dual', '--name', 'x1', 'local/busybox', 'sleep', '600');
    await b.docker('run', '-d', '--net', 'dual', '--name', 'x2', 'local/busybox', 'sleep', '600');
    const [x1, x2] = [await ip6Of(a, 'x1'), await ip6Of(b, 'x2')];
    assert.match(x1, /^fd00:ca11:e2:/);
    assert.match(x2, /^fd00:ca11:e2:/);
    await waitFor(() => ping6(b, 'x2', x1), 15_000, 'x2 (host2) -> x1 (host1) over IPv6');
    assert.ok(await ping6(a, 'x1', x2), 'x1 -> x2 over IPv6');
    // The route on host2: x1's /122 block via host1's IPv6 address, installed by BIRD.
    const routes = (await b.exec(['ip', '-6', 'route', 'show', 'proto', 'bird'])).stdout;
    assert.match(routes, new RegExp(`^fd00:ca11:e2:[0-9a-f:]+/122 via ${a.ip6!.replace(/\./g, '\\.')} dev eth0`, 'm'));
    const nodes = (await a.exec(['ip', '-6', 'route', 'show', 'proto', 'bird'])).stdout;
    assert.match(nodes, new RegExp(`via ${b.ip6!} dev eth0`));
  });

  it('policy isolates networks over IPv6 across hosts', async () => {
    const x1 = await ip6Of(a, 'x1');
    await b.docker('network', 'create', '--ipv6', '--driver', 'calico-ts', '--ipam-driver', 'calico-ts', 'other6');
    await b.docker('run', '-d', '--net', 'other6', '--name', 'y2', 'local/busybox', 'sleep', '600');
    const y2 = await ip6Of(b, 'y2');
    // Reachable at the routing level (x1 can be reached from x2), but the profile of "dual" refuses y2.
    await waitFor(async () => !(await ping6(b, 'y2', x1)), 15_000, 'y2 (other network) -> x1 denied');
    assert.ok(await ping6(b, 'x2', x1), 'x2 (same network) -> x1 still allowed');
    assert.equal(await ping6(a, 'x1', y2), false, 'x1 -> y2 denied too');
  });
});
