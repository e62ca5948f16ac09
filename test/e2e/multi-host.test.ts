/**
 * Many hosts: three network-namespace hosts on one fabric bridge, each with its own dockerd and
 * calico-ts node, sharing one etcd; routes exchanged by the nodes' BIRD sidecars.
 */
import assert from 'node:assert/strict';
import { readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, it } from 'node:test';
import { Cleanup, run, waitFor } from '../helpers/proc.js';
import { startTestbed, type Testbed, type TestbedHost } from '../helpers/testbed.js';

const ETCD_DUMP = fileURLToPath(new URL('../helpers/etcd-dump.js', import.meta.url));

describe('three hosts, BGP full mesh', { timeout: 600_000 }, () => {
  const cleanup = new Cleanup();
  let t: Testbed;
  let h: TestbedHost[];
  const runDir = (host: TestbedHost) => join(host.dockerd.runDir, 'calico-ts');
  const cli = (host: TestbedHost, args: string[], input?: string) => host.cli(args, input);
  const apply = (yaml: string) => cli(h[0]!, ['apply', '-f', '-'], yaml);
  const ipOf = async (host: TestbedHost, name: string) => host.docker('inspect', '-f', '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}', name);
  const routes = async (host: TestbedHost) => (await host.exec(['ip', 'route', 'show', 'proto', 'bird'])).stdout;
  /** The /26 block holding an address (the default pool's block size). */
  const blockOf = (ip: string) => {
    const [a, b, c, d] = ip.split('.').map(Number);
    return `${a}.${b}.${c}.${(d ?? 0) & ~63}/26`;
  };
  const localBlocks = async (host: TestbedHost) => (await host.exec(['ip', 'route', 'show', 'type', 'blackhole', 'proto', '80'])).stdout.match(/\d+\.\d+\.\d+\.\d+\/\d+/g) ?? [];
  const appliedCount = (host: TestbedHost) => (host.node?.log().match(/BGP configuration applied/g) ?? []).length;
  const dump = async () => JSON.parse((await h[0]!.exec([process.execPath, ETCD_DUMP, t.etcdEndpoint])).stdout) as Record<string, unknown>;

  before(async () => {
    t = await startTestbed({ hosts: 3, nodeEnv: { CALICO_TS_GC_INTERVAL_MS: '1000', CALICO_TS_GC_GRACE_MS: '5000' } });
    cleanup.add('testbed', () => t.stop());
    h = t.hosts;
  });
  after(async () => {
    if (process.exitCode) for (const host of h ?? []) process.stderr.write(`--- ${host.name}\n${host.node?.log().slice(-3000) ?? ''}\n`);
    await cleanup.run();
  });

  it('a network created on one host appears on the others', async () => {
    await h[0]!.docker('network', 'create', '--driver', 'calico-ts', '--ipam-driver', 'calico-ts', 'net1');
    for (const host of h.slice(1)) {
      await waitFor(async () => (await host.docker('network', 'ls', '--format', '{{.Name}} {{.Driver}}')).includes('net1 calico-ts'), 15_000, `net1 on ${host.name}`);
    }
  });

  it("containers on every host reach containers on every other host, unencapsulated; a block reaches the others within 2 s", async () => {
    const ips: string[] = [];
    for (const [i, host] of h.entries()) {
      await host.docker('run', '-d', '--net', 'net1', '--name', `c${i}`, 'local/busybox', 'sleep', '900');
      const returned = Date.now();
      const ip = await ipOf(host, `c${i}`);
      ips.push(ip);
      const block = blockOf(ip);
      for (const other of h.filter((o) => o !== host)) {
        await waitFor(async () => (await routes(other)).includes(`${block} via ${host.ip} dev eth0`), 2_000, `${block} on ${other.name}`);
      }
      process.stdout.write(`# block ${block} of ${host.name} on every other host ${Date.now() - returned} ms after docker run returned\n`);
    }
    for (const [i, host] of h.entries()) {
      const others = ips.filter((_, j) => j !== i);
      const out = await host.docker('exec', `c${i}`, 'sh', '-c', `for ip in ${others.join(' ')}; do ping -c1 -W2 $ip >/dev/null || echo FAIL $ip; done`);
      assert.equal(out, '', `${host.name}: ${out}`);
    }
    // Plain routing: no tunnel devices anywhere.
    const links = (await h[0]!.exec(['ip', '-o', 'link', 'show'])).stdout;
    assert.doesNotMatch(links, /vxlan|tunl|ipip/);
  });

  it('node status shows every mesh peer Established', async () => {
    await waitFor(async () => (await cli(h[0]!, ['node', 'status'])).split('Established').length - 1 === 2, 10_000, 'two established peers');
    const out = await cli(h[0]!, ['node', 'status']);
    assert.match(out, /^Calico-ts process is running\.\n\nIPv4 BGP status\n\+-+\+-+\+-+\+-+\+-+\+\n\| PEER ADDRESS \|\s+PEER TYPE\s+\| STATE \|\s+SINCE\s+\|\s+INFO\s+\|/);
    for (const host of h.slice(1)) assert.match(out, new RegExp(`\\| ${host.ip.replace(/\./g, '\\.')}\\s+\\| node-to-node mesh \\| up\\s+\\| \\S+.*\\| Established\\s+\\|`));
  });

  it('an unrelated change does not reload BIRD', async () => {
    const conf = join(runDir(h[0]!), 'bird.conf');
    const before = { mtime: statSync(conf).mtimeMs, applied: appliedCount(h[0]!) };
    // A second container on host 1 fits in its block: datastore changes, BIRD's configuration does not.
    await h[0]!.docker('run', '-d', '--net', 'net1', '--name', 'extra', 'local/busybox', 'sleep', '900');
    await new Promise((r) => setTimeout(r, 1500));
    assert.equal(statSync(conf).mtimeMs, before.mtime);
    assert.equal(appliedCount(h[0]!), before.applied);
    await h[0]!.docker('rm', '-f', 'extra');
  });

  it('BIRD killed → restarted, routes back within 5 s', async () => {
    const pid = Number(readFileSync(join(runDir(h[1]!), 'bird.pid'), 'utf8').trim());
    const [block] = await localBlocks(h[1]!);
    process.kill(pid, 'SIGKILL');
    const killed = Date.now();
    await waitFor(async () => {
      const now = Number(readFileSync(join(runDir(h[1]!), 'bird.pid'), 'utf8').trim());
      return now !== pid && (await routes(h[0]!)).includes(`${block} via ${h[1]!.ip}`) && (await routes(h[1]!)).includes(`via ${h[0]!.ip}`);
    }, 5_000, 'BIRD restarted and routes exchanged');
    process.stdout.write(`# BIRD restart to routes back: ${Date.now() - killed} ms\n`);
    await h[0]!.docker('exec', 'c0', 'ping', '-c1', '-W2', await ipOf(h[1]!, 'c1'));
  });

  it('route reflector: with the mesh off, clients learn each other through the reflector', async () => {
    await apply(`apiVersion: projectcalico.org/v3
kind: Node
metadata: {name: ${h[0]!.name}, labels: {route-reflector: "true"}}
spec: {bgp: {routeReflectorClusterID: 224.0.0.1}}
---
apiVersion: projectcalico.org/v3
kind: BGPPeer
metadata: {name: peer-with-rr}
spec: {nodeSelector: all(), peerSelector: route-reflector == 'true'}
---
apiVersion: projectcalico.org/v3
kind: BGPConfiguration
metadata: {name: default}
spec: {nodeToNodeMeshEnabled: false}
`);
    const [block2] = await localBlocks(h[2]!);
    // host 2 (a client) peers only with host 1 (the reflector) now, yet still has host 3's block.
    await waitFor(async () => {
      const status = await cli(h[1]!, ['node', 'status']);
      return !status.includes(h[2]!.ip) && /node specific \| up/.test(status) && (await routes(h[1]!)).includes(`${block2} via ${h[2]!.ip}`);
    }, 15_000, 'host 2 learns host 3 via the reflector only');
    await h[1]!.docker('exec', 'c1', 'ping', '-c1', '-W2', await ipOf(h[2]!, 'c2'));
    await cli(h[0]!, ['delete', 'bgppeer', 'peer-with-rr']);
    await apply('apiVersion: projectcalico.org/v3\nkind: BGPConfiguration\nmetadata: {name: default}\nspec: {nodeToNodeMeshEnabled: true}\n');
    await waitFor(async () => (await cli(h[1]!, ['node', 'status'])).split('Established').length - 1 === 2, 15_000, 'mesh back');
  });

  it('an explicit BGPPeer to a plain BIRD router (top of rack) receives the blocks', async () => {
    const tor = `${t.name}-tor`.slice(0, 40);
    const torIp = t.fabricIp.replace(/\.1$/, '.250');
    const dir = join(t.hosts[0]!.dockerd.runDir, 'tor');
    await run(['ip', 'netns', 'add', tor]);
    cleanup.add('tor netns', () => run(['ip', 'netns', 'del', tor]));
    await run(['mkdir', '-p', dir]);
    await run(['ip', 'link', 'add', 'tor0', 'netns', tor, 'type', 'veth', 'peer', 'name', 'tor-br', 'netns', t.fabricNetns]);
    await t.fabricExec(['ip', 'link', 'set', 'tor-br', 'master', 'br0', 'up']);
    await run(['ip', '-n', tor, 'addr', 'add', `${torIp}/24`, 'dev', 'tor0']);
    await run(['ip', '-n', tor, 'link', 'set', 'tor0', 'up']);
    await run(['ip', '-n', tor, 'link', 'set', 'lo', 'up']);
    const neighbors = h.map((host, i) => `protocol bgp host${i} { local as 65001; neighbor ${host.ip} as 64512; ipv4 { import all; export none; }; }`).join('\n');
    writeFileSync(join(dir, 'bird.conf'), `router id ${torIp};\nprotocol device {}\n${neighbors}\n`);
    const bird = await run(['nsenter', `--net=/run/netns/${tor}`, 'bird', '-c', join(dir, 'bird.conf'), '-s', join(dir, 'bird.ctl'), '-P', join(dir, 'bird.pid')]);
    assert.equal(bird.stderr, '');
    cleanup.add('tor bird', async () => {
      try {
        process.kill(Number(readFileSync(join(dir, 'bird.pid'), 'utf8')), 'SIGTERM');
      } catch {
        /* already gone */
      }
    });
    await apply(`apiVersion: projectcalico.org/v3
kind: BGPPeer
metadata: {name: tor}
spec: {peerIP: ${torIp}, asNumber: 65001}
`);
    const blocks = (await Promise.all(h.map(localBlocks))).flat();
    await waitFor(async () => {
      const table = (await run(['birdc', '-s', join(dir, 'bird.ctl'), 'show', 'route'])).stdout;
      return blocks.every((b) => table.includes(b));
    }, 15_000, `ToR learns ${blocks.join(' ')}`);
    const status = await cli(h[0]!, ['node', 'status']);
    assert.match(status, new RegExp(`\\| ${torIp.replace(/\./g, '\\.')}\\s+\\| global\\s+\\| up`));
    await cli(h[0]!, ['delete', 'bgppeer', 'tor']);
  });

  it("a host leaving (node stopped, record removed) removes its routes elsewhere", async () => {
    const [block] = await localBlocks(h[2]!);
    await h[2]!.docker('rm', '-f', 'c2');
    await h[2]!.node!.stop();
    await h[0]!.exec([process.execPath, ETCD_DUMP, t.etcdEndpoint, '--delete', `/calico-ts/v1/nodes/${h[2]!.name}`]);
    await waitFor(async () => !(await routes(h[0]!)).includes(h[2]!.ip) && !(await routes(h[1]!)).includes(h[2]!.ip), 10_000, `routes via ${h[2]!.ip} gone`);
    assert.ok(block);
    // Its session is gone from the others' configuration too.
    await waitFor(() => !readFileSync(join(runDir(h[0]!), 'bird.conf'), 'utf8').includes(`${h[2]!.ip};`), 5_000, 'host 3 gone from bird.conf');
    assert.equal(Object.keys(await dump()).some((k) => k.endsWith(`/nodes/${h[2]!.name}`)), false);
  });

  it('network removed on one host is removed from the others once unused', async () => {
    await h[0]!.docker('rm', '-f', 'c0');
    await h[1]!.docker('rm', '-f', 'c1');
    await h[0]!.docker('network', 'rm', 'net1');
    await waitFor(async () => !(await h[1]!.docker('network', 'ls', '--format', '{{.Name}}')).includes('net1'), 20_000, 'net1 gone from host 2');
  });
});
