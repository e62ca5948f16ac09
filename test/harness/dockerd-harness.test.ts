// Proves the dockerd-in-a-netns harness: daemons start, run containers on a user-defined bridge
// network, run side by side without sharing anything, and leave nothing behind when stopped —
// also after a crash or a failed start.

import assert from 'node:assert/strict';
import { readFile, stat } from 'node:fs/promises';
import { createServer } from 'node:http';
import { after, describe, test, type TestContext } from 'node:test';
import { ensureBusyboxImage, BUSYBOX_IMAGE } from '../helpers/busybox-image.js';
import {
  cgroupDirs,
  dockerdUnavailable,
  mountsUnder,
  startDockerd,
  sweepStaleDaemons,
  type DockerdHandle,
  type StartDockerdOptions,
} from '../helpers/dockerd.js';
import { createNetns, execInNetns, netnsExists, uniqueName } from '../helpers/netns.js';
import { Cleanup, isAlive, procStat, run, RunError, signal, waitFor } from '../helpers/proc.js';

const unavailable = await dockerdUnavailable();
const cleanup = new Cleanup();
after(async () => {
  await cleanup.run();
});

async function start(t: TestContext, opts: StartDockerdOptions = {}): Promise<DockerdHandle> {
  const d = await startDockerd(opts);
  cleanup.add(`dockerd ${d.name}`, () => d.stop());
  t.diagnostic(`${d.name}: dockerd up in ${d.startMs.toFixed(0)} ms (pid ${d.pid}, ${d.mountNs}, ${d.netNs})`);
  return d;
}

/** On failure, print the daemon log so the reason is visible. */
async function withLogs<T>(t: TestContext, ds: DockerdHandle[], fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    for (const d of ds) t.diagnostic(`--- ${d.name} log tail ---\n${(await d.logs(8000)).slice(-8000)}`);
    throw err;
  }
}

async function ipOf(d: DockerdHandle, container: string, network: string): Promise<string> {
  const { stdout } = await d.docker(['inspect', '--format', `{{(index .NetworkSettings.Networks "${network}").IPAddress}}`, container]);
  const ip = stdout.trim();
  assert.match(ip, /^\d+\.\d+\.\d+\.\d+$/, `IP of ${container} on ${network}`);
  return ip;
}

const p50 = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor((s.length - 1) / 2)] ?? NaN;
};

async function timeRuns(d: DockerdHandle, net: string, n: number): Promise<number[]> {
  const out: number[] = [];
  for (let i = 0; i < n; i++) {
    const t0 = performance.now();
    await d.docker(['run', '--rm', '--net', net, BUSYBOX_IMAGE, 'true']);
    out.push(performance.now() - t0);
  }
  return out;
}

const fmt = (xs: number[]): string => `p50 ${p50(xs).toFixed(0)} ms [${xs.map((x) => x.toFixed(0)).join(', ')}]`;

/** What must be gone after stop(). */
interface Snapshot {
  d: DockerdHandle;
  containerdPid: number | null;
  pids: number[];
}

async function snapshot(d: DockerdHandle): Promise<Snapshot> {
  return { d, containerdPid: await d.containerdPid(), pids: await d.processes() };
}

async function exists(p: string): Promise<boolean> {
  return stat(p).then(
    () => true,
    () => false,
  );
}

async function assertNothingLeft(s: Snapshot): Promise<void> {
  const { d } = s;
  assert.equal(await isAlive(d.pid), false, `dockerd pid ${d.pid} still alive`);
  if (s.containerdPid !== null) assert.equal(await isAlive(s.containerdPid), false, `containerd pid ${s.containerdPid} still alive`);
  const alive: string[] = [];
  for (const p of s.pids) if (await isAlive(p)) alive.push(`${p}(${(await procStat(p))?.comm})`);
  assert.deepEqual(alive, [], 'processes of the daemon still alive');
  assert.deepEqual(await d.processes(), [], 'processes in the daemon mount+net namespaces');
  assert.deepEqual(await mountsUnder([d.runDir, d.dataRoot]), [], 'mounts left under the roots');
  assert.equal(await exists(d.runDir), false, `${d.runDir} left`);
  assert.equal(await exists(d.dataRoot), false, `${d.dataRoot} left`);
  assert.deepEqual(await cgroupDirs(d.cgroupParent), [], 'cgroups left');
  if (d.ownsNetns) {
    assert.equal(await netnsExists(d.netns), false, `netns ${d.netns} left`);
    const { stdout } = await run(['ip', 'netns', 'list']);
    assert.ok(!stdout.split('\n').some((l) => l.split(' ')[0] === d.netns), 'netns listed by ip netns');
  }
}

/** docker network create -d bridge, two containers that ping each other, --net none. */
async function exerciseBridge(t: TestContext, d: DockerdHandle): Promise<void> {
  const img = await ensureBusyboxImage(d);
  assert.equal(img.imported, true);
  t.diagnostic(`${d.name}: image import ${img.ms.toFixed(0)} ms`);
  assert.equal((await ensureBusyboxImage(d)).imported, false, 'second ensureBusyboxImage is a no-op');

  // --bridge none only disables the default docker0 network: user-defined bridges work.
  await d.docker(['network', 'create', '-d', 'bridge', 'hb-net']);
  await d.docker(['run', '-d', '--net', 'hb-net', '--name', 'hb-a', BUSYBOX_IMAGE, 'sleep', '60']);
  const ipA = await ipOf(d, 'hb-a', 'hb-net');
  const ping = await d.docker(['run', '--rm', '--net', 'hb-net', BUSYBOX_IMAGE, 'ping', '-c1', '-W2', ipA]);
  assert.match(ping.stdout, /1 packets received/);
  // and the other direction, from a second long-running container, by name (embedded DNS)
  await d.docker(['run', '-d', '--net', 'hb-net', '--name', 'hb-b', BUSYBOX_IMAGE, 'sleep', '60']);
  const ipB = await ipOf(d, 'hb-b', 'hb-net');
  const back = await d.docker(['exec', 'hb-a', 'ping', '-c1', '-W2', ipB]);
  assert.match(back.stdout, /1 packets received/);
  const byName = await d.docker(['exec', 'hb-b', 'ping', '-c1', '-W2', 'hb-a']);
  assert.match(byName.stdout, new RegExp(`PING hb-a \\(${ipA.replace(/\./g, '\\.')}\\)`));

  await d.docker(['run', '--rm', '--net', 'none', BUSYBOX_IMAGE, 'true']);
  const eth = await d.docker(['run', '--rm', '--net', 'none', BUSYBOX_IMAGE, 'ip', '-o', 'link']);
  assert.doesNotMatch(eth.stdout, /eth0/, '--net none has no eth0');

  const bridgeRuns = await timeRuns(d, 'hb-net', 5);
  const noneRuns = await timeRuns(d, 'none', 5);
  t.diagnostic(`${d.name}: docker run --rm --net hb-net true: ${fmt(bridgeRuns)}`);
  t.diagnostic(`${d.name}: docker run --rm --net none true:   ${fmt(noneRuns)}`);

  // Container processes are part of the daemon's family (stop() kills them if need be).
  const sleepPid = Number((await d.docker(['inspect', '--format', '{{.State.Pid}}', 'hb-a'])).stdout.trim());
  assert.ok((await d.processes()).includes(sleepPid), 'container process listed in processes()');
}

describe('dockerd harness', { skip: unavailable }, () => {
  test('iptables=false: user-defined bridge network, ping, --net none, clean stop', async (t) => {
    const d = await start(t, { iptables: false });
    await withLogs(t, [d], async () => {
      // The CLI reaches this daemon and only this one.
      const info = await d.docker(['info', '--format', '{{.DockerRootDir}} {{.Driver}} {{.CgroupDriver}}']);
      assert.equal(info.stdout.trim().split(' ')[0], d.dataRoot);
      t.diagnostic(`${d.name}: docker info: ${info.stdout.trim()}`);
      // dockerd created no docker0 and no iptables chains in its netns.
      const links = await execInNetns(d.netns, ['ip', '-o', 'link']);
      assert.doesNotMatch(links.stdout, /docker0/);
      // containerd is dockerd's own, under its exec root
      const cpid = await d.containerdPid();
      assert.ok(cpid !== null && (await isAlive(cpid)), 'containerd running');
      const cmdline = (await readFile(`/proc/${cpid}/cmdline`, 'utf8')).split('\0').join(' ');
      assert.ok(cmdline.includes(`${d.execRoot}/containerd/`), `containerd config under exec root: ${cmdline}`);
      assert.ok(await exists(`${d.execRoot}/containerd/containerd.sock`));
      t.diagnostic(`${d.name}: containerd pid ${cpid}: ${cmdline}`);

      await exerciseBridge(t, d);
      const rules = await execInNetns(d.netns, ['iptables', '-S']);
      assert.doesNotMatch(rules.stdout, /DOCKER/, 'no DOCKER chains with --iptables=false');

      // A legacy plugin socket in pluginDir is what dockerd sees in /run/docker/plugins.
      const calls: string[] = [];
      const server = createServer((req, res) => {
        calls.push(req.url ?? '');
        req.resume();
        req.on('end', () => {
          res.setHeader('Content-Type', 'application/vnd.docker.plugins.v1+json');
          if (req.url === '/Plugin.Activate') res.end(JSON.stringify({ Implements: ['NetworkDriver'] }));
          else if (req.url === '/NetworkDriver.GetCapabilities') res.end(JSON.stringify({ Scope: 'local', ConnectivityScope: 'global' }));
          else res.end('{}');
        });
      });
      const sock = `${d.pluginDir}/hb-fake.sock`;
      await new Promise<void>((resolve) => server.listen(sock, resolve));
      const closeServer = cleanup.add('fake plugin', () => new Promise<void>((r) => server.close(() => r())));
      await d.docker(['network', 'create', '-d', 'hb-fake', 'hb-plugnet']);
      assert.equal((await d.docker(['network', 'inspect', '--format', '{{.Driver}}', 'hb-plugnet'])).stdout.trim(), 'hb-fake');
      await d.docker(['network', 'rm', 'hb-plugnet']);
      assert.deepEqual(
        calls.filter((c) => c !== '/NetworkDriver.GetCapabilities'),
        ['/Plugin.Activate', '/NetworkDriver.CreateNetwork', '/NetworkDriver.DeleteNetwork'],
      );
      await closeServer();
    });

    const snap = await snapshot(d);
    assert.ok(snap.pids.length >= 4, `dockerd, containerd, shims, containers: ${snap.pids.join(' ')}`);
    const t0 = performance.now();
    await d.stop();
    t.diagnostic(`${d.name}: stop ${(performance.now() - t0).toFixed(0)} ms with 2 running containers`);
    await assertNothingLeft(snap);
    await d.stop(); // idempotent
    assert.equal(d.stopped, true);
    assert.match(await d.logs(), /Daemon shutdown complete/, 'log kept after stop');
  });

  test('iptables=true: dockerd manages iptables inside its netns only', async (t) => {
    const d = await start(t, { iptables: true });
    await withLogs(t, [d], async () => {
      await exerciseBridge(t, d);
      const rules = await execInNetns(d.netns, ['iptables', '-S']);
      assert.match(rules.stdout, /-N DOCKER-ISOLATION-STAGE-1/);
      assert.match(rules.stdout, /-N DOCKER-USER/);
      const policy = rules.stdout.split('\n').find((l) => l.startsWith('-P FORWARD'));
      t.diagnostic(`${d.name}: netns iptables: ${rules.stdout.split('\n').length} lines; ${policy}`);
      // --ip-masq=false is about the default bridge only: a user-defined bridge network masquerades
      // unless created with -o com.docker.network.bridge.enable_ip_masquerade=false.
      const nat = await execInNetns(d.netns, ['iptables', '-t', 'nat', '-S']);
      const masq = nat.stdout.split('\n').filter((l) => l.includes('MASQUERADE'));
      t.diagnostic(`${d.name}: nat MASQUERADE rules despite --ip-masq=false: ${masq.join(' | ') || 'none'}`);
      await d.docker(['network', 'create', '-d', 'bridge', '-o', 'com.docker.network.bridge.enable_ip_masquerade=false', 'hb-nomasq']);
      const id = (await d.docker(['network', 'inspect', '--format', '{{.Id}}', 'hb-nomasq'])).stdout.trim();
      const nat2 = await execInNetns(d.netns, ['iptables', '-t', 'nat', '-S']);
      assert.doesNotMatch(nat2.stdout, new RegExp(`MASQUERADE.*br-${id.slice(0, 12)}|br-${id.slice(0, 12)}.*MASQUERADE`));
    });
    const snap = await snapshot(d);
    await d.stop();
    await assertNothingLeft(snap);
  });

  test('two daemons side by side share no containerd, containers or networks', async (t) => {
    // B runs in a netns the test made (not deleted by stop()).
    const ns = await createNetns({ prefix: 'hbns' });
    cleanup.add(`netns ${ns.name}`, () => ns.delete());
    const t0 = performance.now();
    const [a, b] = await Promise.all([start(t, {}), start(t, { netns: ns.name })]);
    t.diagnostic(`two daemons started concurrently in ${(performance.now() - t0).toFixed(0)} ms`);
    assert.equal(b.netns, ns.name);
    assert.equal(b.ownsNetns, false);

    await withLogs(t, [a, b], async () => {
      assert.notEqual(a.netNs, b.netNs);
      assert.notEqual(a.mountNs, b.mountNs);
      const [ca, cb] = await Promise.all([a.containerdPid(), b.containerdPid()]);
      assert.ok(ca !== null && cb !== null && ca !== cb, `separate containerd: ${ca} vs ${cb}`);
      const ids = await Promise.all([a, b].map(async (d) => (await d.docker(['info', '--format', '{{.ID}}'])).stdout.trim()));
      t.diagnostic(`engine IDs: ${ids.join(' / ')}; containerd pids ${ca} / ${cb}`);
      assert.notEqual(ids[0], ids[1], 'each daemon has its own engine ID (/etc/docker/key.json)');

      await Promise.all([ensureBusyboxImage(a), ensureBusyboxImage(b)]);
      // Same network name and (default) subnet on both: no conflict across netns.
      await Promise.all([a, b].map((d) => d.docker(['network', 'create', '-d', 'bridge', 'hb-net'])));
      const [idA, idB] = await Promise.all(
        [a, b].map(async (d) =>
          (await d.docker(['run', '-d', '--net', 'hb-net', '--name', 'hb-x', BUSYBOX_IMAGE, 'sleep', '60'])).stdout.trim(),
        ),
      );
      const psA = (await a.docker(['ps', '-q', '--no-trunc'])).stdout.split('\n').filter(Boolean);
      const psB = (await b.docker(['ps', '-q', '--no-trunc'])).stdout.split('\n').filter(Boolean);
      assert.deepEqual(psA, [idA]);
      assert.deepEqual(psB, [idB]);
      const [ipA, ipB] = await Promise.all([ipOf(a, 'hb-x', 'hb-net'), ipOf(b, 'hb-x', 'hb-net')]);
      t.diagnostic(`same network name on both daemons: hb-x is ${ipA} on ${a.name}, ${ipB} on ${b.name}`);
      // The netns of one daemon does not see the other's bridge.
      const [linksA, linksB] = await Promise.all([a, b].map((d) => execInNetns(d.netns, ['ip', '-o', 'link'])));
      const bridges = (out: string | undefined): string[] => [...(out ?? '').matchAll(/^\d+: (br-[0-9a-f]+)[:@]/gm)].map((m) => m[1] ?? '');
      assert.equal(bridges(linksA?.stdout).length, 1, linksA?.stdout);
      assert.equal(bridges(linksB?.stdout).length, 1, linksB?.stdout);
      assert.notDeepEqual(bridges(linksA?.stdout), bridges(linksB?.stdout));

      // Stopping A leaves B working.
      const snapA = await snapshot(a);
      await a.stop();
      await assertNothingLeft(snapA);
      assert.ok(await isAlive(b.pid));
      assert.ok(cb !== null && (await isAlive(cb)), 'B containerd survives A stop');
      await b.docker(['run', '--rm', '--net', 'hb-net', BUSYBOX_IMAGE, 'ping', '-c1', '-W2', ipB]);
    });
    const snapB = await snapshot(b);
    await b.stop();
    await assertNothingLeft(snapB);
    assert.equal(await netnsExists(ns.name), true, 'a netns given by the caller survives stop()');
    await ns.delete();
    assert.equal(await netnsExists(ns.name), false);
  });

  test('stop() cleans up after dockerd was SIGKILLed with containers running', async (t) => {
    const d = await start(t, {});
    let containerPid = 0;
    await withLogs(t, [d], async () => {
      await ensureBusyboxImage(d);
      await d.docker(['run', '-d', '--net', 'none', '--name', 'hb-orphan', BUSYBOX_IMAGE, 'sleep', '600']);
      containerPid = Number((await d.docker(['inspect', '--format', '{{.State.Pid}}', 'hb-orphan'])).stdout.trim());
      assert.ok(containerPid > 0 && (await isAlive(containerPid)));
    });
    const snap = await snapshot(d);
    signal(d.pid, 'SIGKILL');
    await waitFor(async () => !(await isAlive(d.pid)), 5000, 'dockerd to die');
    const survivors: string[] = [];
    for (const p of await d.processes()) {
      const st = await procStat(p);
      if (st) survivors.push(`${p}(${st.comm})`);
    }
    t.diagnostic(`after SIGKILL of dockerd, still running: ${survivors.join(' ')}`);
    assert.ok(await isAlive(containerPid), 'the container outlives a killed dockerd (so stop() must kill it)');
    await d.stop();
    assert.equal(await isAlive(containerPid), false);
    await assertNothingLeft(snap);
  });

  test('test process killed without stop(): dockerd stops by itself, sweepStaleDaemons() removes the rest', async (t) => {
    const helpers = new URL('../helpers/', import.meta.url).href;
    const code = `
      import { startDockerd } from '${helpers}dockerd.js';
      import { ensureBusyboxImage } from '${helpers}busybox-image.js';
      const d = await startDockerd({});
      await ensureBusyboxImage(d);
      const id = (await d.docker(['run', '-d', '--stop-timeout', '1', '--net', 'none', 'local/busybox', 'sleep', '600'])).stdout.trim();
      const cpid = (await d.docker(['inspect', '--format', '{{.State.Pid}}', id])).stdout.trim();
      console.log(JSON.stringify({ name: d.name, pid: d.pid, containerd: await d.containerdPid(), container: Number(cpid),
        runDir: d.runDir, dataRoot: d.dataRoot, cgroupParent: d.cgroupParent }));
      process.kill(process.pid, 'SIGKILL');
    `;
    let out = '';
    await assert.rejects(run([process.execPath, '--input-type=module', '-e', code], { timeoutMs: 60_000 }), (err: Error) => {
      assert.ok(err instanceof RunError && err.signal === 'SIGKILL', err.message);
      out = err.stdout;
      return true;
    });
    const info = JSON.parse(out) as {
      name: string; pid: number; containerd: number; container: number; runDir: string; dataRoot: string; cgroupParent: string;
    };
    cleanup.add(`stale ${info.name}`, () => sweepStaleDaemons());
    const t0 = performance.now();
    await waitFor(async () => !(await isAlive(info.pid)), 20_000, `dockerd ${info.pid} to stop after its test process died`);
    t.diagnostic(`dockerd stopped ${(performance.now() - t0).toFixed(0)} ms after its test process was killed (docker-init -p SIGTERM)`);
    await waitFor(async () => !(await isAlive(info.containerd)), 5000, 'containerd to stop');
    assert.equal(await isAlive(info.container), false, 'the container was stopped by dockerd');
    assert.equal(await netnsExists(info.name), true, 'netns left behind before the sweep');
    const swept = await sweepStaleDaemons();
    // (another test process running this file concurrently may have swept it first)
    t.diagnostic(`sweepStaleDaemons() removed: ${swept.join(' ') || 'nothing'}`);
    assert.equal(await netnsExists(info.name), false);
    assert.equal(await exists(info.runDir), false);
    assert.equal(await exists(info.dataRoot), false);
    assert.deepEqual(await cgroupDirs(info.cgroupParent), []);
    assert.deepEqual(await mountsUnder([info.runDir, info.dataRoot]), []);
  });

  test('init: false runs dockerd as the direct child and still cleans up', async (t) => {
    const d = await start(t, { init: false });
    assert.equal((await procStat(d.pid))?.ppid, process.pid);
    await withLogs(t, [d], async () => {
      await ensureBusyboxImage(d);
      await d.docker(['run', '-d', '--net', 'none', '--name', 'hb-c', BUSYBOX_IMAGE, 'sleep', '60']);
    });
    const snap = await snapshot(d);
    await d.stop();
    await assertNothingLeft(snap);
  });

  test('a failed start leaves nothing behind and shows the log', async () => {
    const name = uniqueName('dkr');
    await assert.rejects(startDockerd({ name, extraArgs: ['--no-such-flag'] }), (err: Error) => {
      assert.match(err.message, /dockerd exited during start/);
      assert.match(err.message, /unknown flag: --no-such-flag/);
      return true;
    });
    assert.equal(await netnsExists(name), false);
    assert.equal(await exists(`/run/${name}`), false);
    assert.equal(await exists(`/var/lib/docker-${name}`), false);
  });
});
