#!/usr/bin/env node
// testbed-cli: bring a multi-host testbed (see testbed.ts) up for demos and benchmarks, leave it
// running, and take it down again.
//
//   node dist/test/helpers/testbed-cli.js up [--hosts 3 | --names a,b,c] [--iptables] [--no-nodes]
//                                            [--env K=V]... [--timeout 180]
//   node dist/test/helpers/testbed-cli.js status [--json]
//   node dist/test/helpers/testbed-cli.js down [--timeout 120]
//   (all take --state-dir DIR; default $CALICO_TS_TESTBED_STATE_DIR or /run/calico-ts-testbed)
//
// Design: a keeper process owns the testbed. The testbed's daemons are children of whoever called
// startTestbed() (dockerd even dies with its parent, by design), so `up` does not build it itself:
// it spawns `testbed-cli.js keeper ...` detached (its own session, stdio to <state-dir>/keeper.log),
// waits until the keeper has written <state-dir>/state.json (or has exited: then it prints the
// keeper's log and fails), prints how to use the hosts, and exits. The keeper runs startTestbed()
// and then sleeps until SIGTERM/SIGINT/SIGHUP, on which it runs testbed.stop() and removes
// state.json and keeper.json before exiting. `down` sends SIGTERM to the keeper (identified by pid
// and start time in keeper.json, so a reused pid is never signalled) and waits until it has exited
// and the namespaces are gone; if the keeper is dead or does not exit in time, `down` kills it and
// removes what is left with sweepStaleTestbeds() (which acts on testbeds whose owner is dead).
// One CLI testbed per state dir; tests use their own state dir.
//
// Files in the state dir: keeper.json {pid, start} (written first), state.json (the testbed: hosts,
// netns, docker sockets, etcd endpoint, pids), keeper.log.

import { spawn } from 'node:child_process';
import { closeSync, openSync } from 'node:fs';
import { mkdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { CLI } from './calico-node.js';
import { execInNetns, netnsExists } from './netns.js';
import { isAlive, procStat, run, signal, sleep } from './proc.js';
import { startTestbed, sweepStaleTestbeds, TESTBED_ROOT, type Testbed } from './testbed.js';

const SELF = fileURLToPath(import.meta.url);

export interface TestbedStateHost {
  name: string;
  netns: string;
  ip: string;
  /** Path of the host's dockerd API socket. */
  dockerSocket: string;
  /** `unix://<dockerSocket>`, for docker -H / DOCKER_HOST. */
  dockerHost: string;
  dockerdPid: number;
  dockerdLog: string;
  nodePid: number | null;
  nodeLog: string | null;
  pluginSocket: string | null;
}

export interface TestbedState {
  name: string;
  keeperPid: number;
  keeperStart: number;
  createdAt: string;
  startMs: number;
  subnet: string;
  fabricNetns: string;
  fabricIp: string;
  etcdEndpoint: string;
  etcdPid: number | null;
  hosts: TestbedStateHost[];
  /** Namespace names and directories that exist while the testbed is up. */
  footprint: { netns: string[]; dirs: string[] };
  keeperLog: string;
  stateDir: string;
}

interface KeeperFile {
  pid: number;
  start: number;
}

const stateDirOf = (v: string | undefined): string => v ?? process.env.CALICO_TS_TESTBED_STATE_DIR ?? TESTBED_ROOT;
const files = (dir: string) => ({
  state: join(dir, 'state.json'),
  keeper: join(dir, 'keeper.json'),
  log: join(dir, 'keeper.log'),
});

async function readJson<T>(path: string): Promise<T | null> {
  try {
    return JSON.parse(await readFile(path, 'utf8')) as T;
  } catch {
    return null;
  }
}

async function writeJsonAtomic(path: string, value: unknown): Promise<void> {
  const tmp = `${path}.${process.pid}.tmp`;
  await writeFile(tmp, `${JSON.stringify(value, null, 2)}\n`);
  await rename(tmp, path);
}

async function alive(k: KeeperFile | null): Promise<boolean> {
  if (!k) return false;
  const st = await procStat(k.pid);
  return st !== null && st.state !== 'Z' && st.starttime === k.start;
}

function fail(msg: string): never {
  process.stderr.write(`testbed-cli: ${msg}\n`);
  process.exit(1);
}

function parse(argv: string[]) {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      hosts: { type: 'string' },
      names: { type: 'string' },
      iptables: { type: 'boolean', default: false },
      'no-nodes': { type: 'boolean', default: false },
      env: { type: 'string', multiple: true },
      'state-dir': { type: 'string' },
      timeout: { type: 'string' },
      json: { type: 'boolean', default: false },
      help: { type: 'boolean', short: 'h', default: false },
    },
  });
  return { values, positionals };
}

type Values = ReturnType<typeof parse>['values'];

function testbedOptions(v: Values) {
  let hosts: number | string[] = 2;
  if (v.names) hosts = v.names.split(',').map((s) => s.trim()).filter(Boolean);
  else if (v.hosts) {
    hosts = Number(v.hosts);
    if (!Number.isInteger(hosts) || hosts < 1 || hosts > 200) fail(`--hosts ${v.hosts}: give a number from 1 to 200`);
  }
  const nodeEnv: Record<string, string> = {};
  for (const kv of v.env ?? []) {
    const i = kv.indexOf('=');
    if (i < 1) fail(`--env ${kv}: use KEY=VALUE`);
    nodeEnv[kv.slice(0, i)] = kv.slice(i + 1);
  }
  return { hosts, iptables: v.iptables ?? false, nodeEnv, startNodes: !v['no-nodes'], name: 'tbcli' };
}

function stateOf(tb: Testbed, keeper: KeeperFile, logPath: string): TestbedState {
  return {
    name: tb.name,
    keeperPid: keeper.pid,
    keeperStart: keeper.start,
    createdAt: new Date().toISOString(),
    startMs: Math.round(tb.timings.totalMs),
    subnet: tb.subnet,
    fabricNetns: tb.fabricNetns,
    fabricIp: tb.fabricIp,
    etcdEndpoint: tb.etcdEndpoint,
    etcdPid: tb.etcdPid,
    hosts: tb.hosts.map((h) => ({
      name: h.name,
      netns: h.netns,
      ip: h.ip,
      dockerSocket: h.dockerd.socketPath,
      dockerHost: h.dockerd.host,
      dockerdPid: h.dockerd.pid,
      dockerdLog: h.dockerd.logPath,
      nodePid: h.node?.pid() ?? null,
      nodeLog: h.node?.logPath ?? null,
      pluginSocket: h.node?.socketPath ?? null,
    })),
    footprint: tb.footprint,
    keeperLog: logPath,
    stateDir: dirname(logPath),
  };
}

// ---- keeper (runs detached) ------------------------------------------------------------------

async function keeper(v: Values): Promise<void> {
  const dir = stateDirOf(v['state-dir']);
  const f = files(dir);
  const me: KeeperFile = { pid: process.pid, start: (await procStat(process.pid))?.starttime ?? 0 };
  await writeJsonAtomic(f.keeper, me);
  const log = (m: string) => process.stderr.write(`${new Date().toISOString()} ${m}\n`);

  let stopRequested = false;
  let wake: () => void = () => {};
  const stopSignal = new Promise<void>((resolve) => (wake = resolve));
  for (const sig of ['SIGTERM', 'SIGINT', 'SIGHUP'] as const) {
    process.on(sig, () => {
      log(`keeper: ${sig}`);
      stopRequested = true;
      wake();
    });
  }
  const keepAlive = setInterval(() => {}, 1 << 30);

  let tb: Testbed;
  try {
    tb = await startTestbed({ ...testbedOptions(v), log });
  } catch (err) {
    log(`keeper: start failed: ${(err as Error).stack ?? String(err)}`);
    await rm(f.keeper, { force: true });
    process.exit(1);
  }
  let code = 0;
  if (!stopRequested) {
    await writeJsonAtomic(f.state, stateOf(tb, me, f.log));
    log(`keeper: testbed ${tb.name} up (${tb.hosts.length} hosts, ${tb.timings.totalMs.toFixed(0)} ms); state in ${f.state}`);
    await stopSignal;
  }
  const t0 = performance.now();
  try {
    await tb.stop();
  } catch (err) {
    code = 1;
    log(`keeper: teardown errors: ${(err as Error).message}`);
  }
  log(`keeper: testbed ${tb.name} down in ${(performance.now() - t0).toFixed(0)} ms`);
  await rm(f.state, { force: true });
  await rm(f.keeper, { force: true });
  clearInterval(keepAlive);
  process.exit(code);
}

// ---- up / down / status ----------------------------------------------------------------------

function usage(s: TestbedState): string {
  const lines = [
    `testbed ${s.name}: ${s.hosts.length} hosts on ${s.subnet} (fabric netns ${s.fabricNetns}, etcd ${s.etcdEndpoint}), up in ${s.startMs} ms`,
    '',
  ];
  const w = Math.max(...s.hosts.map((h) => h.name.length));
  for (const h of s.hosts) {
    lines.push(`  ${h.name.padEnd(w)}  ${h.ip.padEnd(12)}  docker -H ${h.dockerHost} ps`);
  }
  lines.push('');
  const h0 = s.hosts[0];
  if (h0) {
    lines.push('For example:');
    lines.push(`  docker -H ${h0.dockerHost} network create --driver calico-ts --ipam-driver calico-ts net1`);
    lines.push(`  docker -H ${h0.dockerHost} run -d --net net1 --name c1 local/busybox sleep 1d`);
    lines.push(`  nsenter --net=/run/netns/${h0.netns} ip route          # any command inside ${h0.name}'s netns`);
    lines.push(`  nsenter --net=/run/netns/${h0.netns} env ETCD_ENDPOINTS=${s.etcdEndpoint} ${process.execPath} ${CLI} ipam show`);
  }
  const dirArg = s.stateDir === TESTBED_ROOT ? '' : ` --state-dir ${s.stateDir}`;
  lines.push(`State: ${join(s.stateDir, 'state.json')}; status: node ${SELF} status${dirArg}; take it down: node ${SELF} down${dirArg}`);
  return lines.join('\n');
}

async function up(v: Values): Promise<void> {
  const dir = stateDirOf(v['state-dir']);
  const f = files(dir);
  const timeoutS = Number(v.timeout ?? 180);
  testbedOptions(v); // validate before spawning anything
  await mkdir(dir, { recursive: true });
  const existing = await readJson<KeeperFile>(f.keeper);
  if (await alive(existing)) {
    const s = await readJson<TestbedState>(f.state);
    fail(`a testbed is already up${s ? ` (${s.name})` : ''}, kept by pid ${existing?.pid}: run \`node ${SELF} down${v['state-dir'] ? ` --state-dir ${dir}` : ''}\` first`);
  }
  // Leftovers of a keeper that died: its testbed is swept (its owner is dead) by the next start.
  await rm(f.state, { force: true });
  await rm(f.keeper, { force: true });

  const t0 = performance.now();
  const fd = openSync(f.log, 'w');
  const args = [SELF, 'keeper', '--state-dir', dir];
  if (v.hosts) args.push('--hosts', v.hosts);
  if (v.names) args.push('--names', v.names);
  if (v.iptables) args.push('--iptables');
  if (v['no-nodes']) args.push('--no-nodes');
  for (const e of v.env ?? []) args.push('--env', e);
  const child = spawn(process.execPath, args, { detached: true, stdio: ['ignore', fd, fd], cwd: '/' });
  closeSync(fd);
  let exited: number | string | null = null;
  child.once('exit', (code, sig) => (exited = code ?? sig ?? 'unknown'));
  child.once('error', (err) => (exited = err.message));

  const deadline = Date.now() + timeoutS * 1000;
  let state: TestbedState | null = null;
  for (;;) {
    state = await readJson<TestbedState>(f.state);
    if (state && state.keeperPid === child.pid) break;
    if (exited !== null) {
      const log = await readFile(f.log, 'utf8').catch(() => '');
      fail(`the keeper exited (${exited}) before the testbed was up:\n${log.slice(-6000)}`);
    }
    if (Date.now() > deadline) {
      if (child.pid) signal(child.pid, 'SIGTERM');
      fail(`the testbed was not up within ${timeoutS} s (keeper pid ${child.pid} told to stop; see ${f.log})`);
    }
    await sleep(100);
  }
  child.unref();
  process.stdout.write(`${usage(state)}\n(up: ${((performance.now() - t0) / 1000).toFixed(1)} s, keeper pid ${state.keeperPid}, log ${f.log})\n`);
  process.exit(0);
}

async function down(v: Values): Promise<void> {
  const dir = stateDirOf(v['state-dir']);
  const f = files(dir);
  const timeoutS = Number(v.timeout ?? 120);
  const k = await readJson<KeeperFile>(f.keeper);
  const s = await readJson<TestbedState>(f.state);
  const t0 = performance.now();
  if (await alive(k)) {
    signal(k!.pid, 'SIGTERM');
    const deadline = Date.now() + timeoutS * 1000;
    while ((await alive(k)) && Date.now() < deadline) await sleep(100);
    if (await alive(k)) {
      process.stderr.write(`testbed-cli: keeper pid ${k!.pid} did not exit within ${timeoutS} s: killing it and sweeping\n`);
      signal(k!.pid, 'SIGKILL');
      while (await alive(k)) await sleep(50);
    }
  } else if (!k && !s) {
    process.stdout.write('no testbed is up\n');
    return;
  }
  // Whatever a dead or killed keeper left is swept (a no-op after a clean stop).
  const swept = await sweepStaleTestbeds();
  if (swept.length) process.stdout.write(`removed leftovers: ${swept.join(' ')}\n`);
  await rm(f.state, { force: true });
  await rm(f.keeper, { force: true });
  const left: string[] = [];
  for (const n of s?.footprint.netns ?? []) if (await netnsExists(n)) left.push(`netns ${n}`);
  for (const p of [s?.etcdPid, ...(s?.hosts ?? []).flatMap((h) => [h.dockerdPid, h.nodePid])]) {
    if (p && (await isAlive(p)) && (await procStat(p))?.comm.match(/^(etcd|dockerd|node|containerd)/)) left.push(`pid ${p}`);
  }
  if (left.length) fail(`still there after down: ${left.join(', ')}`);
  process.stdout.write(`testbed ${s?.name ?? '?'} down in ${((performance.now() - t0) / 1000).toFixed(1)} s\n`);
}

async function status(v: Values): Promise<void> {
  const dir = stateDirOf(v['state-dir']);
  const f = files(dir);
  const k = await readJson<KeeperFile>(f.keeper);
  const s = await readJson<TestbedState>(f.state);
  const keeperAlive = await alive(k);
  if (!s) {
    if (v.json) process.stdout.write(`${JSON.stringify({ up: false, starting: keeperAlive })}\n`);
    else process.stdout.write(keeperAlive ? `a testbed is starting (keeper pid ${k?.pid})\n` : 'no testbed is up\n');
    process.exitCode = keeperAlive ? 0 : 3;
    return;
  }
  const etcdOk = await execInNetns(s.fabricNetns, ['curl', '-fsS', '--max-time', '2', `${s.etcdEndpoint}/health`], { timeoutMs: 5000 }).then(
    (r) => /"health":\s*"true"/.test(r.stdout),
    () => false,
  );
  const hosts = await Promise.all(
    s.hosts.map(async (h) => {
      const docker = await run(['docker', '-H', h.dockerHost, 'info', '--format', '{{.ContainersRunning}}'], {
        timeoutMs: 5000,
        env: { ...process.env, DOCKER_HOST: '', DOCKER_CONTEXT: '' },
      }).then(
        (r) => ({ ok: true, running: Number(r.stdout.trim()) }),
        () => ({ ok: false, running: 0 }),
      );
      const nodeOk = h.nodePid !== null && (await isAlive(h.nodePid));
      return { ...h, dockerOk: docker.ok, containersRunning: docker.running, nodeOk };
    }),
  );
  const healthy = keeperAlive && etcdOk && hosts.every((h) => h.dockerOk && (h.nodePid === null || h.nodeOk));
  if (v.json) {
    process.stdout.write(`${JSON.stringify({ up: true, healthy, keeperAlive, etcdOk, ...s, hosts }, null, 2)}\n`);
  } else {
    const lines = [
      `testbed ${s.name} (${s.subnet}), since ${s.createdAt}: ${healthy ? 'healthy' : 'DEGRADED'}`,
      `  keeper pid ${s.keeperPid}: ${keeperAlive ? 'running' : 'GONE'}; etcd ${s.etcdEndpoint} in ${s.fabricNetns}: ${etcdOk ? 'healthy' : 'NOT HEALTHY'}`,
    ];
    const w = Math.max(...hosts.map((h) => h.name.length));
    for (const h of hosts) {
      lines.push(
        `  ${h.name.padEnd(w)}  ${h.ip.padEnd(12)}  dockerd ${h.dockerOk ? `ok (${h.containersRunning} running)` : 'DOWN'}` +
          `  node ${h.nodePid === null ? 'not started' : h.nodeOk ? `pid ${h.nodePid}` : 'DOWN'}  docker -H ${h.dockerHost}`,
      );
    }
    process.stdout.write(`${lines.join('\n')}\n`);
  }
  process.exitCode = healthy ? 0 : 2;
}

const HELP = `usage: testbed-cli.js up [--hosts N | --names a,b] [--iptables] [--no-nodes] [--env K=V]... [--timeout S]
       testbed-cli.js status [--json]
       testbed-cli.js down [--timeout S]
       (all: --state-dir DIR, default $CALICO_TS_TESTBED_STATE_DIR or ${TESTBED_ROOT})
`;

async function main(): Promise<void> {
  let parsed: ReturnType<typeof parse>;
  try {
    parsed = parse(process.argv.slice(2));
  } catch (err) {
    fail(`${(err as Error).message}\n${HELP}`);
  }
  const { values, positionals } = parsed;
  const cmd = positionals[0];
  if (values.help || !cmd) {
    process.stdout.write(HELP);
    return;
  }
  if (process.getuid?.() !== 0) fail('needs root (network namespaces, dockerd)');
  switch (cmd) {
    case 'up':
      return up(values);
    case 'down':
      return down(values);
    case 'status':
      return status(values);
    case 'keeper':
      return keeper(values);
    default:
      fail(`unknown command ${JSON.stringify(cmd)}\n${HELP}`);
  }
}

await main();
