#!/usr/bin/env node
/**
 * `make demo`: calico-ts on two hosts, in about half a minute, with nothing left behind.
 *
 * Builds a two-host testbed on this machine (test/helpers/testbed.ts: network namespaces on one
 * bridge, a dockerd + calico-ts node per host, one etcd), creates a network on host1, starts a
 * container on each host, pings across hosts, applies a policy that blocks it, shows the block,
 * removes the policy, and tears everything down: at the end, on failure, and on Ctrl-C.
 * Exit code 0 only when every step behaved as shown.
 */
import { fileURLToPath } from 'node:url';
import { CLI } from '../test/helpers/calico-node.js';
import { startTestbed, type Testbed, type TestbedHost } from '../test/helpers/testbed.js';

const color = process.stdout.isTTY && !process.env.NO_COLOR;
const paint = (code: string, s: string) => (color ? `\x1b[${code}m${s}\x1b[0m` : s);
const step = (n: number, title: string) => process.stdout.write(`\n${paint('1;36', `[${n}] ${title}`)}\n`);
const say = (s: string) => process.stdout.write(`    ${s}\n`);
const cmd = (host: string, s: string) => process.stdout.write(`    ${paint('2', `${host}$`)} ${s}\n`);
const out = (s: string) => s.trim() && process.stdout.write(s.trim().split('\n').map((l) => `      ${l}`).join('\n') + '\n');
const ok = (s: string) => process.stdout.write(`    ${paint('32', `✔ ${s}`)}\n`);
const fail = (s: string) => process.stdout.write(`    ${paint('31', `✘ ${s}`)}\n`);

const POLICY = `apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: demo-deny-client}
spec:
  order: 10
  selector: role == 'web'
  types: [Ingress]
  ingress:
  - action: Deny
    source: {selector: role == 'client'}
`;

async function main(): Promise<void> {
  let testbed: Testbed | undefined;
  let stopping = false;
  let interrupted: string | undefined;
  const teardown = async (why: string) => {
    if (stopping || !testbed) return;
    stopping = true;
    step(9, `Cleaning up (${why})`);
    await testbed.stop();
    ok('testbed removed: namespaces, dockerds, nodes, etcd');
  };
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    process.once(sig, () => {
      process.stdout.write(`\n${sig}: stopping\n`);
      // While the testbed starts it cannot be stopped from here: clean up as soon as it is up.
      if (!testbed) return void (interrupted = sig);
      teardown(sig).then(
        () => process.exit(130),
        (err: unknown) => {
          process.stderr.write(`cleanup failed: ${String(err)}\n`);
          process.exit(1);
        },
      );
    });
  }

  try {
    step(1, 'Starting two hosts (network namespaces on one bridge), each with dockerd and a calico-ts node; one etcd');
    testbed = await startTestbed({ hosts: 2, name: 'demo' });
    if (interrupted) {
      await teardown(interrupted);
      process.exit(130);
    }
    const t = testbed;
    const [h1, h2] = [t.host('host1'), t.host('host2')];
    for (const h of t.hosts) say(`${h.name}: eth0 ${h.ip}, dockerd ${h.dockerd.name}, calico-ts node pid ${h.node?.pid()}`);
    say(`etcd: ${t.etcdEndpoint}   (up in ${(t.timings.totalMs / 1000).toFixed(1)} s)`);

    const docker = async (h: TestbedHost, ...args: string[]) => {
      cmd(h.name, `docker ${args.join(' ')}`);
      const r = await h.docker(...args);
      out(r);
      return r;
    };
    const cli = async (h: TestbedHost, args: string[], input?: string) => {
      cmd(h.name, `calico-ts ${args.join(' ')}`);
      const r = await h.exec([process.execPath, CLI, ...args], {
        env: { PATH: process.env.PATH ?? '', ETCD_ENDPOINTS: t.etcdEndpoint },
        ...(input !== undefined ? { input } : {}),
        timeoutMs: 30_000,
      });
      out(r.stdout);
      return r.stdout;
    };
    const ping = async (h: TestbedHost, from: string, ip: string): Promise<boolean> => {
      cmd(h.name, `docker exec ${from} ping -c2 -W1 ${ip}`);
      const r = await h.dockerd.docker(['exec', from, 'ping', '-c2', '-W1', ip], { timeoutMs: 20_000 }).then(
        (x) => ({ ok: true, text: x.stdout }),
        (err: { stdout?: string }) => ({ ok: false, text: err.stdout ?? String(err) }),
      );
      out(r.text.split('\n').filter((l) => /bytes from|packets transmitted/.test(l)).join('\n'));
      return r.ok;
    };
    const until = async (what: string, fn: () => Promise<boolean>, ms = 20_000) => {
      const deadline = Date.now() + ms;
      while (!(await fn())) {
        if (Date.now() > deadline) throw new Error(`${what}: not within ${ms / 1000} s`);
        await new Promise((r) => setTimeout(r, 250));
      }
    };

    step(2, 'Creating a network on host1; calico-ts makes it appear on host2 too');
    await docker(h1, 'network', 'create', '--driver', 'calico-ts', '--ipam-driver', 'calico-ts', 'demo-net');
    await until('demo-net on host2', async () => (await h2.docker('network', 'ls', '--format', '{{.Name}}')).split('\n').includes('demo-net'));
    await docker(h2, 'network', 'ls', '--filter', 'name=demo-net', '--format', '{{.Name}}  {{.Driver}}');

    step(3, 'Starting a "web" container on host1 and a "client" container on host2');
    await docker(h1, 'run', '-d', '--net', 'demo-net', '--name', 'web', '--label', 'org.projectcalico.label.role=web', 'local/busybox', 'sleep', '600');
    await docker(h2, 'run', '-d', '--net', 'demo-net', '--name', 'client', '--label', 'org.projectcalico.label.role=client', 'local/busybox', 'sleep', '600');
    const webIp = await h1.docker('inspect', '-f', '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}', 'web');
    say(`web has ${webIp}/32 on host1; host2 learns host1's block over BGP:`);
    await until('the route to web on host2', async () => (await h2.exec(['ip', 'route', 'show', 'proto', 'bird'])).stdout.includes(`via ${h1.ip}`));
    cmd(h2.name, 'ip route show proto bird');
    out((await h2.exec(['ip', 'route', 'show', 'proto', 'bird'])).stdout);

    step(4, 'Cross-host ping: client (host2) → web (host1)');
    await until('ping client → web', () => h2.dockerd.docker(['exec', 'client', 'ping', '-c1', '-W1', webIp], { timeoutMs: 10_000 }).then(() => true, () => false));
    if (!(await ping(h2, 'client', webIp))) throw new Error('the cross-host ping failed');
    ok('client reaches web across hosts (plain routing, no overlay)');

    step(5, "Applying a policy: web denies ingress from role == 'client'");
    await cli(h1, ['apply', '-f', '-'], POLICY);
    await cli(h1, ['get', 'globalnetworkpolicies', '-o', 'wide']);

    step(6, 'The same ping is now blocked');
    await until('the policy to take effect', async () => !(await h2.dockerd.docker(['exec', 'client', 'ping', '-c1', '-W1', webIp], { timeoutMs: 10_000 }).then(() => true, () => false)));
    if (await ping(h2, 'client', webIp)) throw new Error('the ping still works: the policy was not enforced');
    ok("blocked by demo-deny-client on web's host (iptables chain cali-pi-*, ipset of client addresses)");

    step(7, 'Deleting the policy: the network profile allows the ping again');
    await cli(h1, ['delete', 'globalnetworkpolicy', 'demo-deny-client']);
    await until('ping after the policy is gone', () => h2.dockerd.docker(['exec', 'client', 'ping', '-c1', '-W1', webIp], { timeoutMs: 10_000 }).then(() => true, () => false));
    if (!(await ping(h2, 'client', webIp))) throw new Error('the ping did not come back');
    ok('client reaches web again');

    step(8, 'IPAM: one /26 block per host, one address per container');
    await cli(h1, ['ipam', 'show']);
  } catch (err) {
    // After Ctrl-C the steps fail as the hosts go away: that is not news.
    if (stopping) return;
    fail(err instanceof Error ? err.message : String(err));
    process.exitCode = 1;
  } finally {
    await teardown(process.exitCode ? 'after a failure' : 'done');
  }
  if (!process.exitCode) process.stdout.write(`\n${paint('1;32', 'Demo finished: cross-host ping, blocked by policy, allowed again.')}\n`);
}

await main();
