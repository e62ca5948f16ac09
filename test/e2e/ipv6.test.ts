/**
 * IPv6 dual stack on one host, end to end: a real dockerd in its own namespace, a real etcd and a real
 * `calico-ts node run` started with CALICO_TS_IPV6_POOL_CIDR. Containers get a /128 with a default
 * route via the host veth's link-local address, and reach each other and their host over IPv6.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, it } from 'node:test';
import { ensureBusyboxImage } from '../helpers/busybox-image.js';
import { CLI, startCalicoNode, type CalicoNodeHandle } from '../helpers/calico-node.js';
import { startDockerd, type DockerdHandle } from '../helpers/dockerd.js';
import { startEtcd, type EtcdHandle } from '../helpers/etcd.js';
import { Cleanup, run, waitFor } from '../helpers/proc.js';

const ETCD_DUMP = fileURLToPath(new URL('../helpers/etcd-dump.js', import.meta.url));
const V6_POOL = 'fd00:ca11:c0::/48';
const HOST_ADDRESS_V6 = 'fd00:99::1';
const GATEWAY_V6 = 'fe80::ecee:eeff:feee:eeee';

describe('IPv6 dual stack on one host', { timeout: 300_000 }, () => {
  const cleanup = new Cleanup();
  let dockerd: DockerdHandle;
  let etcd: EtcdHandle;
  let node: CalicoNodeHandle;
  const ns = (argv: string[]) => run(['nsenter', `--net=/run/netns/${dockerd.netns}`, ...argv]);
  const docker = async (...args: string[]) => (await dockerd.docker(args, { timeoutMs: 60_000 })).stdout.trim();
  const ip6Of = (name: string) => docker('inspect', '-f', '{{range .NetworkSettings.Networks}}{{.GlobalIPv6Address}}{{end}}', name);
  const ip4Of = (name: string) => docker('inspect', '-f', '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}', name);
  const calicoTs = (args: string[], input?: string) =>
    run(['nsenter', `--net=/run/netns/${dockerd.netns}`, process.execPath, CLI, ...args], { env: { PATH: process.env.PATH ?? '', ETCD_ENDPOINTS: etcd.endpoint }, timeoutMs: 30_000, ...(input ? { input } : {}) });
  const pings = async (from: string, to: string): Promise<boolean> =>
    docker('exec', from, 'ping', ...(to.includes(':') ? ['-6'] : []), '-c1', '-W1', to).then(
      () => true,
      () => false,
    );
  const dump = async (): Promise<Record<string, unknown>> => JSON.parse((await ns([process.execPath, ETCD_DUMP, etcd.endpoint])).stdout) as Record<string, unknown>;

  before(async () => {
    dockerd = await startDockerd({});
    cleanup.add('dockerd', () => dockerd.stop());
    etcd = await startEtcd({ netns: dockerd.netns });
    cleanup.add('etcd', () => etcd.stop());
    await ns(['ip', '-6', 'addr', 'add', `${HOST_ADDRESS_V6}/128`, 'dev', 'lo']);
    node = await startCalicoNode({
      netns: dockerd.netns,
      nodeName: 'e2e-ipv6',
      etcdEndpoint: etcd.endpoint,
      pluginDir: dockerd.pluginDir,
      dockerSocket: dockerd.socketPath,
      runDir: join(dockerd.runDir, 'calico-ts'),
      env: { CALICO_TS_IPV6_POOL_CIDR: V6_POOL, CALICO_TS_GC_INTERVAL_MS: '500', CALICO_TS_GC_GRACE_MS: '3000' },
    });
    cleanup.add('calico-ts node', () => node.stop());
    await ensureBusyboxImage(dockerd);
  });

  after(async () => {
    if (process.exitCode) process.stderr.write(node?.log().slice(-4000) ?? '');
    await cleanup.run();
  });

  it('CALICO_TS_IPV6_POOL_CIDR creates default-ipv6-ippool with /122 blocks beside the IPv4 default', async () => {
    const pools = Object.entries(await dump()).filter(([k]) => k.includes('/ippools/')).map(([, v]) => v as { name: string; cidr: string; blockSize: number });
    assert.deepEqual(pools.map((p) => [p.name, p.cidr, p.blockSize]).sort(), [
      ['default-ipv4-ippool', '192.168.0.0/16', 26],
      ['default-ipv6-ippool', V6_POOL, 122],
    ]);
  });

  it('a --ipv6 network gives containers a /32 and a /128, routed via 169.254.1.1 and the veth link-local', async () => {
    await docker('network', 'create', '--ipv6', '--driver', 'calico-ts', '--ipam-driver', 'calico-ts', 'dual');
    const ipam = JSON.parse(await docker('network', 'inspect', '-f', '{{json .IPAM.Config}}', 'dual')) as { Subnet: string }[];
    assert.deepEqual(ipam.map((c) => c.Subnet).sort(), ['0.0.0.0/0', '::/0']);
    await docker('run', '-d', '--net', 'dual', '--name', 'v6a', 'local/busybox', 'sleep', '600');
    await docker('run', '-d', '--net', 'dual', '--name', 'v6b', 'local/busybox', 'sleep', '600');
    const [a6, b6] = [await ip6Of('v6a'), await ip6Of('v6b')];
    assert.match(a6, /^fd00:ca11:c0:/);
    assert.notEqual(a6, b6);
    assert.match(await ip4Of('v6a'), /^192\.168\./);
    assert.match(await docker('exec', 'v6a', 'ip', '-6', 'addr', 'show', 'eth0'), new RegExp(`inet6 ${a6}/128`));
    assert.match(await docker('exec', 'v6a', 'ip', '-6', 'route'), new RegExp(`default via ${GATEWAY_V6} dev eth0`));
    // Host side: a /128 on the veth (Join plumbs it), and a blackhole for the local /122 block (the
    // reconciler adds it about a second after the block was claimed, so it is waited for).
    assert.match((await ns(['ip', '-6', 'route', 'show', `${a6}/128`])).stdout, /dev cali[0-9a-f]{11} proto 80/);
    await waitFor(
      async () => /^blackhole fd00:ca11:c0:[0-9a-f:]*\/122 .*proto 80/m.test((await ns(['ip', '-6', 'route', 'show', 'type', 'blackhole'])).stdout),
      10_000,
      'the blackhole route of the local IPv6 block',
    );
    assert.equal((await ns(['sysctl', '-n', 'net.ipv6.conf.all.forwarding'])).stdout.trim(), '1');
    // Both families, both ways, and to the host.
    await docker('exec', 'v6a', 'ping', '-6', '-c1', '-W2', b6);
    await docker('exec', 'v6b', 'ping', '-6', '-c1', '-W2', a6);
    await docker('exec', 'v6a', 'ping', '-c1', '-W2', await ip4Of('v6b'));
    await docker('exec', 'v6a', 'ping', '-6', '-c1', '-W2', HOST_ADDRESS_V6);
    await ns(['ping', '-6', '-c1', '-W2', a6]);
    // A fresh container reaches `a` on its first ping (no DAD wait on either side).
    await docker('run', '--rm', '--net', 'dual', 'local/busybox', 'ping', '-6', '-c1', '-W2', a6);
  });

  it('policy holds for IPv6 as for IPv4: another network is isolated; a policy with an IPv6 net denies one source', async () => {
    const [a4, a6, b4, b6] = [await ip4Of('v6a'), await ip6Of('v6a'), await ip4Of('v6b'), await ip6Of('v6b')];
    assert.equal((await ns(['ip6tables', '-S', 'FORWARD'])).stdout.includes('cali-FORWARD'), true, 'ip6tables hooked');
    await docker('network', 'create', '--ipv6', '--driver', 'calico-ts', '--ipam-driver', 'calico-ts', 'other6');
    await docker('run', '-d', '--net', 'other6', '--name', 'v6o', 'local/busybox', 'sleep', '600');
    await waitFor(async () => !(await pings('v6o', a6)), 10_000, 'other network isolated over IPv6');
    assert.equal(await pings('v6o', a4), false, 'and over IPv4');
    assert.ok(await pings('v6b', a6));
    await calicoTs(['apply', '-f', '-'], [
      'apiVersion: projectcalico.org/v3',
      'kind: GlobalNetworkPolicy',
      'metadata: {name: deny-b6}',
      'spec:',
      '  order: 1',
      "  selector: calico-ts/network == 'dual'",
      '  types: [Ingress]',
      '  ingress:',
      `  - {action: Deny, source: {nets: ["${b6}/128"]}}`,
      '  - {action: Pass}',
      '',
    ].join('\n'));
    await waitFor(async () => !(await pings('v6b', a6)), 10_000, 'v6b -> v6a over IPv6 denied by the IPv6 net');
    assert.ok(await pings('v6b', a4), 'IPv4 from the same container still allowed (the rule is IPv6-only)');
    assert.ok(await pings('v6a', b6), 'the other direction still allowed');
    await calicoTs(['delete', 'globalnetworkpolicy', 'deny-b6']);
    await waitFor(() => pings('v6b', a6), 10_000, 'allowed again once the policy is gone');
    assert.ok(b4 !== '');
    await docker('rm', '-f', 'v6o');
    await docker('network', 'rm', 'other6');
  });

  it('a network whose only --subnet is an IPv6 subnet of a pool allocates there, and --ip6 works', async () => {
    await docker('network', 'create', '--ipv6', '--driver', 'calico-ts', '--ipam-driver', 'calico-ts', '--subnet', 'fd00:ca11:c0:7::/64', 'v6net');
    await docker('run', '-d', '--net', 'v6net', '--name', 'v6c', 'local/busybox', 'sleep', '600');
    await docker('run', '-d', '--net', 'v6net', '--ip6', 'fd00:ca11:c0:7::10', '--name', 'v6d', 'local/busybox', 'sleep', '600');
    assert.match(await ip6Of('v6c'), /^fd00:ca11:c0:7:/);
    assert.equal(await ip6Of('v6d'), 'fd00:ca11:c0:7::10');
    await docker('exec', 'v6c', 'ping', '-6', '-c1', '-W2', 'fd00:ca11:c0:7::10');
    await assert.rejects(docker('run', '--rm', '--net', 'v6net', '--ip6', 'fd00:ca11:c0:7::10', 'local/busybox', 'true'), /already in use/);
    await assert.rejects(
      docker('network', 'create', '--ipv6', '--driver', 'calico-ts', '--ipam-driver', 'calico-ts', '--subnet', 'fd00:dead::/64', 'bad6'),
      /no calico-ts IP pool contains fd00:dead::\/64/,
    );
  });

  it('a killed node restarts into the right state: the /128 route comes back', async () => {
    const a6 = await ip6Of('v6a');
    await node.kill();
    await ns(['ip', '-6', 'route', 'del', `${a6}/128`]);
    await node.restart();
    await waitFor(async () => (await ns(['ip', '-6', 'route', 'show', `${a6}/128`])).stdout.includes('cali'), 10_000, 'IPv6 route restored');
    await docker('run', '--rm', '--net', 'dual', 'local/busybox', 'ping', '-6', '-c1', '-W2', a6);
  });

  it('removing containers and networks frees the IPv6 addresses, routes and blocks', async () => {
    await docker('rm', '-f', 'v6a', 'v6b', 'v6c', 'v6d');
    await docker('network', 'rm', 'dual', 'v6net');
    await waitFor(async () => !Object.keys(await dump()).some((k) => k.includes('/ipam/blocks/fd00')), 15_000, 'IPv6 blocks released');
    await waitFor(async () => (await ns(['ip', '-6', 'route', 'show', 'proto', '80'])).stdout.trim() === '', 10_000, 'no IPv6 routes of ours left');
  });
});
