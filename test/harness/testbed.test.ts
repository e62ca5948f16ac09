// Proves the multi-host testbed (testbed.ts) without BGP: hosts on one fabric reach each other and
// nothing else, each host's dockerd + calico-ts node work on their own against the shared etcd
// (one /26 block per host), a failed start and stop() leave nothing behind, and testbed-cli
// up/status/down works from separate processes.

import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, it, type TestContext } from 'node:test';
import { BUSYBOX_IMAGE } from '../helpers/busybox-image.js';
import { dockerdUnavailable } from '../helpers/dockerd.js';
import { createNetns, netnsExists, uniqueName } from '../helpers/netns.js';
import { Cleanup, isAlive, listPids, run, RunError, waitFor } from '../helpers/proc.js';
import { startTestbed, TESTBED_ROOT, type Testbed } from '../helpers/testbed.js';
import type { TestbedState } from '../helpers/testbed-cli.js';

const TESTBED_CLI = fileURLToPath(new URL('../helpers/testbed-cli.js', import.meta.url));
const ETCD_DUMP = fileURLToPath(new URL('../helpers/etcd-dump.js', import.meta.url));

const unavailable = (await dockerdUnavailable()) ?? (existsSync('/usr/bin/etcd') ? undefined : 'etcd not installed');

const ipToInt = (ip: string): number => ip.split('.').reduce((a, o) => a * 256 + Number(o), 0);
const block26 = (ip: string): number => Math.floor(ipToInt(ip) / 64);

async function netnsList(): Promise<string[]> {
  return (await run(['ip', 'netns', 'list'])).stdout
    .split('\n')
    .map((l) => l.split(' ')[0] ?? '')
    .filter(Boolean);
}

/** Live pids whose command line mentions `needle`. */
async function pidsMentioning(needle: string): Promise<number[]> {
  const out: number[] = [];
  for (const pid of await listPids()) {
    if (pid === process.pid) continue;
    const cmd = await readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '');
    if (cmd.includes(needle) && (await isAlive(pid))) out.push(pid);
  }
  return out;
}

async function leaseNames(): Promise<string[]> {
  const names: string[] = [];
  for (const f of await readdir(join(TESTBED_ROOT, 'leases')).catch(() => [] as string[])) {
    const l = await readFile(join(TESTBED_ROOT, 'leases', f), 'utf8').catch(() => '{}');
    names.push(String((JSON.parse(l) as { name?: string }).name));
  }
  return names;
}

describe('multi-host testbed (2 hosts)', { skip: unavailable, timeout: 300_000 }, () => {
  let tb: Testbed;
  const ipOf = async (host: number, container: string) =>
    tb.hosts[host]!.docker('inspect', '-f', '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}', container);

  before(async () => {
    tb = await startTestbed({ hosts: 2, nodeEnv: { CALICO_TS_GC_INTERVAL_MS: '1000' } });
  });
  after(async () => {
    if (process.exitCode) for (const h of tb?.hosts ?? []) process.stderr.write(`--- ${h.name} node log ---\n${h.node?.log().slice(-3000) ?? ''}\n`);
    await tb?.stop();
  });

  it('starts in parallel and reports its timings', (t: TestContext) => {
    const ms = (x: number) => `${x.toFixed(0)} ms`;
    const per = (r: Record<string, number>) => Object.entries(r).map(([h, v]) => `${h} ${ms(v)}`).join(', ');
    t.diagnostic(
      `${tb.name} up in ${ms(tb.timings.totalMs)}: fabric ${ms(tb.timings.fabricMs)}, etcd ${ms(tb.timings.etcdMs)}, ` +
        `dockerd [${per(tb.timings.dockerdMs)}], image [${per(tb.timings.imageMs)}], node [${per(tb.timings.nodeMs)}]`,
    );
    assert.equal(tb.hosts.length, 2);
    assert.deepEqual(tb.hosts.map((h) => h.name), ['host1', 'host2']);
    assert.match(tb.subnet, /^10\.\d+\.0\.0\/24$/);
    assert.equal(tb.etcdEndpoint, `http://${tb.fabricIp}:2379`);
    for (const h of tb.hosts) {
      assert.ok(h.node, `${h.name} has a node`);
      assert.equal(h.nodeEnv.IP, h.ip);
      assert.ok(h.dockerd.pluginDir.startsWith(h.dockerd.runDir));
      assert.ok(existsSync(join(h.dockerd.pluginDir, 'calico-ts.sock')));
    }
  });

  it('each host has eth0 and a default route, and reaches the fabric and the other host', async () => {
    for (const [i, h] of tb.hosts.entries()) {
      const other = tb.hosts[1 - i]!;
      assert.match((await h.exec(['ip', '-4', '-o', 'addr', 'show', 'dev', 'eth0'])).stdout, new RegExp(`inet ${h.ip.replace(/\./g, '\\.')}/24`));
      assert.match((await h.exec(['ip', 'route', 'show', 'default'])).stdout, new RegExp(`default via ${tb.fabricIp.replace(/\./g, '\\.')} dev eth0`));
      await h.exec(['ping', '-c1', '-W2', tb.fabricIp]);
      await tb.exec(h.name, ['ping', '-c1', '-W2', other.ip]);
      await tb.exec(i, ['ping', '-c1', '-W2', other.ip]);
    }
  });

  it('the fabric only switches: no forwarding, nothing outside is reachable, only etcd runs there', async () => {
    assert.equal((await tb.fabricExec(['sysctl', '-n', 'net.ipv4.ip_forward'])).stdout.trim(), '0');
    // An address outside the testbed goes to the fabric by the default route, and no further.
    await assert.rejects(tb.exec(0, ['ping', '-c1', '-W1', '192.0.2.1']), RunError);
    assert.equal((await tb.fabricExec(['ip', 'route', 'show', 'default'])).stdout.trim(), '');
    // etcd: reachable from every host at the fabric address.
    for (const h of tb.hosts) {
      assert.match((await h.exec(['curl', '-fsS', '--max-time', '2', `${tb.etcdEndpoint}/health`])).stdout, /"health":\s*"true"/);
    }
    const procs = await tb.processes();
    assert.ok(procs.includes(tb.etcdPid));
    assert.ok(await isAlive(tb.etcdPid));
  });

  it('a network created on one host exists on each host (same name, separate daemons, own IDs)', async () => {
    // The other host's node makes its copy (cluster networks by name): creating it there too would race it.
    await tb.hosts[0]!.docker('network', 'create', '--driver', 'calico-ts', '--ipam-driver', 'calico-ts', 'net1');
    const ids: string[] = [];
    for (const h of tb.hosts) {
      await waitFor(async () => (await h.docker('network', 'ls', '--format', '{{.Name}}')).split('\n').includes('net1'), 20_000, `net1 on ${h.name}`);
      ids.push(await h.docker('network', 'inspect', '-f', '{{.Id}}', 'net1'));
      assert.equal(await h.docker('network', 'inspect', '-f', '{{.Driver}}', 'net1'), 'calico-ts');
    }
    assert.notEqual(ids[0], ids[1], 'each daemon made its own network ID');
  });

  it('a container on each host gets an address from its own /26 block, and reaches its host', async () => {
    const ips: string[] = [];
    for (const [i, h] of tb.hosts.entries()) {
      await h.docker('run', '-d', '--net', 'net1', '--name', `c${i + 1}`, BUSYBOX_IMAGE, 'sleep', '600');
      const ip = await ipOf(i, `c${i + 1}`);
      assert.match(ip, /^192\.168\.\d+\.\d+$/);
      ips.push(ip);
      assert.match(await h.docker('exec', `c${i + 1}`, 'ip', 'route'), /default via 169\.254\.1\.1 dev eth0/);
      await h.docker('exec', `c${i + 1}`, 'ping', '-c1', '-W2', h.ip);
      await h.exec(['ping', '-c1', '-W2', ip]);
    }
    assert.notEqual(block26(ips[0]!), block26(ips[1]!), `different /26 blocks: ${ips.join(' ')}`);
    // The shared etcd holds one block per host, each with that host's affinity.
    const dump = JSON.parse((await tb.exec(0, [process.execPath, ETCD_DUMP, tb.etcdEndpoint])).stdout) as Record<string, unknown>;
    const blocks = Object.entries(dump).filter(([k]) => k.includes('/ipam/blocks/')).map(([, v]) => v as { cidr: string; affinity: string | null });
    assert.deepEqual(blocks.map((b) => b.affinity).sort(), ['host:host1', 'host:host2']);
    assert.ok(Object.keys(dump).some((k) => k.endsWith('/nodes/host1')) && Object.keys(dump).some((k) => k.endsWith('/nodes/host2')), 'both nodes registered');
  });

  it('stop() removes every namespace, process and directory it made, and is idempotent', async (t: TestContext) => {
    const pids = await tb.processes();
    const { netns, dirs } = tb.footprint;
    const containerPids = (await Promise.all(tb.hosts.map((h) => h.docker('inspect', '-f', '{{.State.Pid}}', `c${h.index}`)))).map(Number);
    assert.ok(pids.length >= 1 + 3 * tb.hosts.length, `etcd + (dockerd, containerd, node) per host: ${pids.join(' ')}`);
    for (const n of netns) assert.ok(await netnsExists(n), n);
    for (const d of dirs) assert.ok(existsSync(d), d);
    const t0 = performance.now();
    await tb.stop();
    t.diagnostic(`stop() took ${(performance.now() - t0).toFixed(0)} ms`);
    await tb.stop(); // idempotent
    assert.ok(tb.stopped);
    const listed = await netnsList();
    for (const n of netns) assert.ok(!listed.includes(n), `netns ${n} still listed`);
    for (const p of [...pids, ...containerPids]) assert.ok(!(await isAlive(p)), `pid ${p} still alive`);
    for (const d of dirs) assert.ok(!existsSync(d), `${d} still exists`);
    assert.ok(!(await leaseNames()).includes(tb.name), 'lease released');
    assert.deepEqual(await pidsMentioning(tb.name), []);
  });
});

describe('a failed start leaves nothing behind', { skip: unavailable, timeout: 120_000 }, () => {
  const cleanup = new Cleanup();
  after(async () => {
    await cleanup.run();
  });

  it('when a host namespace cannot be created (after the fabric and etcd are up)', async () => {
    // The next unique name this process hands out; make host2's netns name taken.
    const n = Number(uniqueName('probe').split('-').pop()) + 1;
    const name = `tbfail-${process.pid}-${n}`;
    const squatter = await createNetns({ name: `${name}-host2` });
    cleanup.add('squatter netns', () => squatter.delete());
    await assert.rejects(startTestbed({ hosts: 2, name: 'tbfail' }), new RegExp(`netns ${name}-host2 already exists`));
    const listed = await netnsList();
    assert.deepEqual(listed.filter((x) => x.startsWith(`${name}-`)), [`${name}-host2`], 'only the squatter is left');
    assert.ok(await netnsExists(squatter.name), 'a namespace the testbed did not make is not deleted');
    assert.deepEqual(await pidsMentioning(name), [], 'no etcd or other process left');
    assert.ok(!existsSync(join(TESTBED_ROOT, name)));
    assert.ok(!(await leaseNames()).includes(name));
  });

  it('rejects bad host names before creating anything', async () => {
    await assert.rejects(startTestbed({ hosts: ['Host_1'] }), /invalid host name/);
    await assert.rejects(startTestbed({ hosts: ['a', 'a'] }), /duplicate host names/);
    await assert.rejects(startTestbed({ hosts: 0 }), /1 to 200 hosts/);
  });
});

describe('testbed-cli up / status / down', { skip: unavailable, timeout: 300_000 }, () => {
  const cleanup = new Cleanup();
  after(async () => {
    await cleanup.run();
  });

  it('brings up 2 hosts that outlive the CLI, reports them, and takes them down leaving nothing', async (t: TestContext) => {
    const stateDir = await mkdtemp(join(tmpdir(), 'testbed-cli-'));
    cleanup.add('state dir', () => rm(stateDir, { recursive: true, force: true }));
    const cli = (...args: string[]) => run([process.execPath, TESTBED_CLI, ...args, '--state-dir', stateDir], { timeoutMs: 240_000 });
    // Whatever happens below, take it down.
    cleanup.add('testbed-cli down', () => cli('down'));

    let t0 = performance.now();
    const upOut = (await cli('up', '--hosts', '2')).stdout;
    t.diagnostic(`up: ${(performance.now() - t0).toFixed(0)} ms`);
    const state = JSON.parse(await readFile(join(stateDir, 'state.json'), 'utf8')) as TestbedState;
    assert.equal(state.hosts.length, 2);
    for (const h of state.hosts) {
      assert.ok(upOut.includes(`docker -H ${h.dockerHost}`), `up prints the docker -H command for ${h.name}`);
      // The CLI has exited: the daemons are still there.
      await run(['docker', '-H', h.dockerHost, 'image', 'inspect', BUSYBOX_IMAGE], { env: { ...process.env, DOCKER_HOST: '' } });
    }
    // A network made on one host: the other host's node creates its own copy (by name).
    const dockerOn = (h: { dockerHost: string }, ...args: string[]) => run(['docker', '-H', h.dockerHost, ...args], { env: { ...process.env, DOCKER_HOST: '' } });
    await dockerOn(state.hosts[0]!, 'network', 'create', '--driver', 'calico-ts', '--ipam-driver', 'calico-ts', 'net1');
    for (const h of state.hosts) {
      await waitFor(async () => (await dockerOn(h, 'network', 'ls', '--format', '{{.Name}}')).stdout.split('\n').includes('net1'), 20_000, `net1 on ${h.name}`);
    }
    const pids = [state.keeperPid, state.etcdPid, ...state.hosts.flatMap((h) => [h.dockerdPid, h.nodePid])].filter((p): p is number => p !== null);
    for (const p of pids) assert.ok(await isAlive(p), `pid ${p} alive`);

    // Another up is refused while this one runs.
    await assert.rejects(cli('up', '--hosts', '2'), /already up/);

    const status = (await cli('status')).stdout;
    assert.match(status, /healthy/);
    assert.match(status, /host1/);
    assert.match(status, /host2/);
    const js = JSON.parse((await cli('status', '--json')).stdout) as { healthy: boolean; hosts: { dockerOk: boolean; nodeOk: boolean }[] };
    assert.equal(js.healthy, true);
    assert.ok(js.hosts.every((h) => h.dockerOk && h.nodeOk));

    t0 = performance.now();
    const downOut = (await cli('down')).stdout;
    t.diagnostic(`down: ${(performance.now() - t0).toFixed(0)} ms (${downOut.trim()})`);
    for (const p of pids) assert.ok(!(await isAlive(p)), `pid ${p} gone`);
    const listed = await netnsList();
    for (const n of state.footprint.netns) assert.ok(!listed.includes(n), `netns ${n} gone`);
    for (const d of state.footprint.dirs) assert.ok(!existsSync(d), `${d} gone`);
    assert.ok(!existsSync(join(stateDir, 'state.json')));
    assert.ok(!existsSync(join(stateDir, 'keeper.json')));
    assert.ok(!(await leaseNames()).includes(state.name));
    assert.deepEqual(await pidsMentioning(state.name), []);
    assert.match((await cli('status').catch((e: RunError) => e)).stdout, /no testbed is up/);
    assert.match((await cli('down')).stdout, /no testbed is up/);
  });
});
