/**
 * Benchmark: what calico-ts adds to `docker run`, measured against Docker's own bridge driver on the same
 * daemon in the same run, plus the plugin's handler latency and the node's idle memory.
 *
 *   node dist/bench/docker-run.js [--runs 30] [--warmup 3] [--iterations 200] [--out BENCHMARKS.md]
 *
 * Everything runs inside namespaces this process creates (test/helpers): one dockerd in its own netns,
 * etcd on that netns's loopback, and a real `calico-ts node run`. All of it is removed at the end, on
 * failure, and on SIGINT/SIGTERM.
 *
 * 1. `docker run --rm --net X local/busybox true` wall time for X = net1 (calico-ts network + IPAM),
 *    bnet (user-defined network of the built-in bridge driver) and none. Runs are interleaved, one of
 *    each per round, and the order inside a round rotates (so no variant always follows another: a
 *    calico teardown leaves asynchronous work in the node that would otherwise always land on the same
 *    neighbour).
 * 2. Plugin handler latency, POSTing straight to the plugin socket with synthetic endpoint IDs on net1:
 *    setup = RequestAddress + CreateEndpoint + Join, teardown = DeleteEndpoint + ReleaseAddress (Leave,
 *    which Docker sends before them, is timed on its own). Then RequestAddress alone, sequentially.
 * 3. VmRSS of the node process once the runs have settled.
 *
 * The results replace the section between the markers in the output file (created if missing).
 */
import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync, statSync } from 'node:fs';
import { readFile, writeFile } from 'node:fs/promises';
import { Agent, request } from 'node:http';
import { release } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { ensureBusyboxImage } from '../test/helpers/busybox-image.js';
import { startCalicoNode, type CalicoNodeHandle } from '../test/helpers/calico-node.js';
import { startDockerd, type DockerdHandle } from '../test/helpers/dockerd.js';
import { startEtcd } from '../test/helpers/etcd.js';
import { Cleanup, run, sleep, waitFor } from '../test/helpers/proc.js';
import { buildCommit, cpuModel, intOption, loadavg, pct, tryRun, writeSection } from './report.js';

const BEGIN = '<!-- bench/docker-run.ts: begin (generated, do not edit by hand) -->';
const END = '<!-- bench/docker-run.ts: end -->';
const HEADER = `# calico-ts benchmarks

Reproduce with \`make bench\` (builds, then runs \`node dist/bench/docker-run.js\`; options:
\`--runs N\` (default 30), \`--warmup N\` (3), \`--iterations N\` (200), \`--out FILE\` (BENCHMARKS.md)).
Needs root, dockerd, etcd and /bin/busybox (\`make deps\`). Everything runs in namespaces the bench creates
(its own dockerd, etcd and \`calico-ts node run\`) and is removed afterwards. Every ratio compares against
a baseline taken on the same daemon in the same run. Targets are those of the design (DESIGN.md, "Targets").
`;

const TARGET_RATIO = 1.15;
const AIM_RATIO = 1.0;
const TARGET_RSS_MB = 120;
const TARGET_ADDR_PER_S = 200;

const POOL = '192.168.0.0/16';
const IMAGE = 'local/busybox';

// ---- small statistics -------------------------------------------------------------------------

/** Nearest-rank percentile (p in 0..100) of an unsorted sample. */
const sum = (xs: readonly number[]): number => xs.reduce((a, b) => a + b, 0);
const mean = (xs: readonly number[]): number => (xs.length ? sum(xs) / xs.length : NaN);
const f1 = (n: number): string => (Number.isFinite(n) ? n.toFixed(1) : 'n/a');
const f2 = (n: number): string => (Number.isFinite(n) ? n.toFixed(2) : 'n/a');

// ---- plugin socket client ------------------------------------------------------------------------

/** POSTs a JSON body to the plugin socket as Docker does (one kept-alive connection); throws on {"Err"}. */
function makePluginClient(socketPath: string): { call: (path: string, body: unknown) => Promise<Record<string, unknown>>; close: () => void } {
  const agent = new Agent({ keepAlive: true, maxSockets: 1 });
  const call = (path: string, body: unknown): Promise<Record<string, unknown>> =>
    new Promise((resolve, reject) => {
      const req = request(
        { socketPath, agent, path, method: 'POST', headers: { 'Content-Type': 'application/vnd.docker.plugins.v1.2+json' } },
        (res) => {
          let text = '';
          res.setEncoding('utf8');
          res.on('data', (c: string) => (text += c));
          res.on('end', () => {
            let json: Record<string, unknown>;
            try {
              json = JSON.parse(text) as Record<string, unknown>;
            } catch {
              reject(new Error(`${path}: HTTP ${res.statusCode ?? '?'}: not JSON: ${text.slice(0, 200)}`));
              return;
            }
            if (res.statusCode !== 200 || json.Err) reject(new Error(`${path}: HTTP ${res.statusCode ?? '?'}: ${String(json.Err ?? text)}`));
            else resolve(json);
          });
          res.on('error', reject);
        },
      );
      req.setTimeout(30_000, () => req.destroy(new Error(`${path}: no answer in 30 s`)));
      req.on('error', reject);
      req.end(JSON.stringify(body));
    });
  return { call, close: () => agent.destroy() };
}

// ---- machine ----------------------------------------------------------------------------------

interface Machine {
  date: string;
  nproc: string;
  cpu: string;
  kernel: string;
  dockerd: string;
  node: string;
  etcd: string;
  commit: string;
  /** 1-minute load average when the measurements started and when they ended. */
  loadStart: string;
  loadEnd: string;
}



async function machineInfo(dockerd: DockerdHandle): Promise<Machine> {
  const dockerdVersion = await dockerd
    .docker(['version', '-f', '{{.Server.Version}}'], { timeoutMs: 10_000 })
    .then((r) => r.stdout.trim())
    .catch(() => '?');
  const etcdVersion = (await tryRun(['etcd', '--version'])).split('\n')[0]?.replace(/^etcd Version:\s*/, '') ?? '?';
  return {
    date: new Date().toISOString().replace(/\.\d+Z$/, 'Z'),
    nproc: await tryRun(['nproc']),
    cpu: cpuModel(),
    kernel: release(),
    dockerd: dockerdVersion,
    node: process.version,
    etcd: etcdVersion,
    commit: await buildCommit(),
    loadStart: loadavg(),
    loadEnd: '?',
  };
}

// ---- node log: server-side time per Docker call -------------------------------------------------

interface CallStats {
  path: string;
  count: number;
  p50: number;
  p95: number;
  max: number;
  total: number;
}

/** The `docker call` debug lines logged by the node between two byte offsets of its log. */
function callsInLog(logPath: string, from: number, to: number): CallStats[] {
  const text = readFileSync(logPath).subarray(from, to).toString('utf8');
  const byPath = new Map<string, number[]>();
  for (const line of text.split('\n')) {
    if (!line.includes('"docker call"')) continue;
    try {
      const rec = JSON.parse(line) as { msg?: string; path?: string; ms?: number };
      if (rec.msg !== 'docker call' || typeof rec.path !== 'string' || typeof rec.ms !== 'number') continue;
      const list = byPath.get(rec.path) ?? [];
      list.push(rec.ms);
      byPath.set(rec.path, list);
    } catch {
      /* not JSON */
    }
  }
  return [...byPath.entries()]
    .map(([path, ms]) => ({ path, count: ms.length, p50: pct(ms, 50), p95: pct(ms, 95), max: Math.max(...ms), total: sum(ms) }))
    .sort((a, b) => b.total - a.total);
}

/** Counts of a few interesting node log messages between two offsets (reconciles compete with Join for the lock). */
function logMessages(logPath: string, from: number, to: number): Map<string, number> {
  const text = readFileSync(logPath).subarray(from, to).toString('utf8');
  const counts = new Map<string, number>();
  for (const line of text.split('\n')) {
    const m = /"msg":"([^"]+)"/.exec(line);
    if (!m?.[1]) continue;
    counts.set(m[1], (counts.get(m[1]) ?? 0) + 1);
  }
  return counts;
}

const logSize = (path: string): number => (existsSync(path) ? statSync(path).size : 0);

// ---- building blocks: what one etcd round trip and one exec cost, measured from a node process in the netns ----

interface BuildingBlocks {
  etcdGet: number[];
  etcdPut: number[];
  etcdTxn: number[];
  execIp: number[];
  execSysctl: number[];
  vethAdd: number[];
  vethDel: number[];
}

/** CommonJS, run with `node -e` in the repo root (so `etcd3` resolves); argv[1] = etcd endpoint, argv[2] = count. */
const BUILDING_BLOCKS_SCRIPT = `
const { Etcd3 } = require('etcd3');
const { execFile } = require('node:child_process');
const ex = (f, a) => new Promise((res, rej) => execFile(f, a, (e, o) => (e ? rej(e) : res(o))));
(async () => {
  const c = new Etcd3({ hosts: process.argv[1] });
  const n = Number(process.argv[2]);
  const r = { etcdGet: [], etcdPut: [], etcdTxn: [], execIp: [], execSysctl: [], vethAdd: [], vethDel: [] };
  const time = async (list, fn) => { const t = performance.now(); await fn(); list.push(performance.now() - t); };
  for (let i = 0; i < 5; i++) await c.put('/calico-ts-bench/warm').value('x');
  for (let i = 0; i < n; i++) await time(r.etcdPut, () => c.put('/calico-ts-bench/k' + i).value('v'.repeat(300)));
  for (let i = 0; i < n; i++) await time(r.etcdGet, () => c.get('/calico-ts-bench/k' + i).string());
  for (let i = 0; i < n; i++) {
    const k = '/calico-ts-bench/k' + i;
    const cur = await c.get(k).exec();
    const rev = cur.kvs[0].mod_revision;
    await time(r.etcdTxn, () => c.if(k, 'Mod', '==', rev).then(c.put(k).value('w'.repeat(300))).else(c.get(k)).commit());
  }
  await c.delete().prefix('/calico-ts-bench/');
  c.close();
  for (let i = 0; i < n; i++) await time(r.execIp, () => ex('ip', ['-json', 'link', 'show', 'dev', 'lo']));
  for (let i = 0; i < n; i++) await time(r.execSysctl, () => ex('sysctl', ['-n', 'net.ipv4.ip_forward']));
  for (let i = 0; i < n; i++) {
    await time(r.vethAdd, () => ex('ip', ['link', 'add', 'bnchh' + i, 'type', 'veth', 'peer', 'name', 'bnchp' + i]));
    await time(r.vethDel, () => ex('ip', ['link', 'del', 'bnchh' + i]));
  }
  process.stdout.write(JSON.stringify(r));
})().catch((e) => { console.error(e); process.exit(1); });
`;

const REPO_ROOT = fileURLToPath(new URL('../../', import.meta.url));

async function benchBuildingBlocks(netns: string, etcdEndpoint: string, n = 50): Promise<BuildingBlocks> {
  const { stdout } = await run(['nsenter', `--net=/run/netns/${netns}`, process.execPath, '-e', BUILDING_BLOCKS_SCRIPT, etcdEndpoint, String(n)], {
    cwd: REPO_ROOT,
    timeoutMs: 120_000,
  });
  return JSON.parse(stdout) as BuildingBlocks;
}

// ---- RSS ---------------------------------------------------------------------------------------

interface Rss {
  rssMb: number;
  hwmMb: number;
  /** Heap, stacks (RssAnon) vs. mapped files: the node binary and libraries (RssFile). */
  anonMb: number;
  fileMb: number;
}

/** VmRSS / VmHWM of the node process (nsenter execs node, so the spawned pid is node's). */
async function nodeRss(node: CalicoNodeHandle): Promise<Rss> {
  const pid = node.pid();
  if (!pid) throw new Error('calico-ts node is not running');
  const status = await readFile(`/proc/${pid}/status`, 'utf8');
  const name = /^Name:\s*(\S+)/m.exec(status)?.[1];
  if (name === 'nsenter') throw new Error(`pid ${pid} is still nsenter, not node`);
  const kb = (field: string): number => Number(new RegExp(`^${field}:\\s*(\\d+) kB`, 'm').exec(status)?.[1] ?? NaN);
  return { rssMb: kb('VmRSS') / 1024, hwmMb: kb('VmHWM') / 1024, anonMb: kb('RssAnon') / 1024, fileMb: kb('RssFile') / 1024 };
}

// ---- the benchmark ------------------------------------------------------------------------------

interface Options {
  runs: number;
  warmup: number;
  iterations: number;
  out: string;
}

function parseOptions(): Options {
  const { values } = parseArgs({
    options: {
      runs: { type: 'string', default: '30' },
      warmup: { type: 'string', default: '3' },
      iterations: { type: 'string', default: '200' },
      out: { type: 'string', default: 'BENCHMARKS.md' },
      help: { type: 'boolean', short: 'h', default: false },
    },
    strict: true,
  });
  if (values.help) {
    console.log('usage: node dist/bench/docker-run.js [--runs 30] [--warmup 3] [--iterations 200] [--out BENCHMARKS.md]');
    process.exit(0);
  }
  const int = intOption;
  return { runs: int('runs', values.runs, 1), warmup: int('warmup', values.warmup, 0), iterations: int('iterations', values.iterations, 1), out: values.out };
}

type Variant = 'calico' | 'bridge' | 'none';
const VARIANTS: readonly Variant[] = ['calico', 'bridge', 'none'];
const NET: Record<Variant, string> = { calico: 'net1', bridge: 'bnet', none: 'none' };

interface TimelineEvent {
  /** ms from the moment `docker run` was started (wall clock); calls: start of the handler. */
  start: number;
  end: number;
  what: string;
}

interface DockerRunResult {
  ms: Record<Variant, number[]>;
  calls: CallStats[];
  messages: Map<string, number>;
  /** The node's log during the calico run closest to the calico p50. */
  timeline: { total: number; events: TimelineEvent[] };
}

interface PhaseResult {
  phase: string;
  ms: number[];
}

interface HandlerResult {
  phases: PhaseResult[];
  serverCalls: CallStats[];
  addrPerS: number;
  releasePerS: number;
  addrMs: number[];
}

interface Results {
  options: Options;
  machine: Machine;
  dockerRun: DockerRunResult;
  handlers: HandlerResult;
  rssAtStart: Rss;
  rssAfterRuns: Rss;
  rssAfterHandlers: Rss;
  blocks: BuildingBlocks;
  wallS: number;
}

function log(msg: string): void {
  process.stderr.write(`[bench ${new Date().toISOString().slice(11, 19)}] ${msg}\n`);
}

/** Node log records between two offsets as events relative to wall-clock time t0 (ms since epoch). */
function timelineOf(logPath: string, from: number, to: number, t0: number): TimelineEvent[] {
  const text = readFileSync(logPath).subarray(from, to).toString('utf8');
  const events: TimelineEvent[] = [];
  for (const line of text.split('\n')) {
    let rec: { time?: string; msg?: string; path?: string; ms?: number; interfaceName?: string; changes?: unknown };
    try {
      rec = JSON.parse(line) as typeof rec;
    } catch {
      continue;
    }
    if (!rec.time || !rec.msg) continue;
    const end = Date.parse(rec.time) - t0;
    if (rec.msg === 'docker call' && rec.path && typeof rec.ms === 'number') {
      events.push({ start: end - rec.ms, end, what: `${rec.path.replace(/^\/(NetworkDriver|IpamDriver)\./, '')} (${f2(rec.ms)} ms)` });
    } else {
      const detail = rec.interfaceName ? ` ${rec.interfaceName}` : Array.isArray(rec.changes) ? ` ${rec.changes.join('; ')}` : '';
      events.push({ start: end, end, what: `log: ${rec.msg}${detail}` });
    }
  }
  return events.sort((a, b) => a.start - b.start);
}

async function benchDockerRun(dockerd: DockerdHandle, node: CalicoNodeHandle, o: Options): Promise<DockerRunResult> {
  const windows: { ms: number; t0: number; from: number; to: number }[] = [];
  const once = async (v: Variant): Promise<number> => {
    const from = logSize(node.logPath);
    const wall0 = Date.now();
    const t0 = performance.now();
    await dockerd.docker(['run', '--rm', '--net', NET[v], IMAGE, 'true'], { timeoutMs: 60_000 });
    const ms = performance.now() - t0;
    if (v === 'calico') windows.push({ ms, t0: wall0, from, to: logSize(node.logPath) });
    return ms;
  };
  log(`docker run: ${o.warmup} warm-up round(s)`);
  for (let i = 0; i < o.warmup; i++) for (const v of VARIANTS) await once(v);
  windows.length = 0;
  const ms: Record<Variant, number[]> = { calico: [], bridge: [], none: [] };
  const from = logSize(node.logPath);
  log(`docker run: ${o.runs} measured round(s) of ${VARIANTS.join(', ')} (order rotates per round)`);
  for (let i = 0; i < o.runs; i++) {
    for (let j = 0; j < VARIANTS.length; j++) {
      const v = VARIANTS[(i + j) % VARIANTS.length] as Variant;
      ms[v].push(await once(v));
    }
  }
  // Let the asynchronous work of the last teardown land in the log window.
  await sleep(500);
  const to = logSize(node.logPath);
  const median = pct(ms.calico, 50);
  const w = [...windows].sort((a, b) => Math.abs(a.ms - median) - Math.abs(b.ms - median))[0];
  const timeline = w ? { total: w.ms, events: timelineOf(node.logPath, w.from, w.to, w.t0) } : { total: NaN, events: [] };
  return { ms, calls: callsInLog(node.logPath, from, to), messages: logMessages(node.logPath, from, to), timeline };
}

async function benchHandlers(node: CalicoNodeHandle, networkId: string, iterations: number): Promise<HandlerResult> {
  const client = makePluginClient(node.socketPath);
  try {
    const names = ['RequestAddress', 'CreateEndpoint', 'Join', 'setup total', 'Leave', 'DeleteEndpoint', 'ReleaseAddress', 'teardown total'] as const;
    const phases = new Map<string, number[]>(names.map((n) => [n, []]));
    const timed = async (name: (typeof names)[number], path: string, body: unknown, record: boolean): Promise<Record<string, unknown>> => {
      const t0 = performance.now();
      const reply = await client.call(path, body);
      if (record) phases.get(name)?.push(performance.now() - t0);
      return reply;
    };
    const warm = 5;
    log(`handlers: ${warm} warm-up + ${iterations} measured endpoint lifecycles on network ${networkId.slice(0, 12)}`);
    let fromMeasured = logSize(node.logPath);
    for (let i = 0; i < warm + iterations; i++) {
      const record = i >= warm;
      if (i === warm) fromMeasured = logSize(node.logPath);
      const endpointId = randomBytes(32).toString('hex');
      const t0 = performance.now();
      const addr = await timed('RequestAddress', '/IpamDriver.RequestAddress', { PoolID: POOL, Address: '', Options: {} }, record);
      const cidr = String(addr.Address);
      await timed('CreateEndpoint', '/NetworkDriver.CreateEndpoint', {
        NetworkID: networkId,
        EndpointID: endpointId,
        Interface: { Address: cidr, AddressIPv6: '', MacAddress: '' },
        Options: {},
      }, record);
      await timed('Join', '/NetworkDriver.Join', { NetworkID: networkId, EndpointID: endpointId, SandboxKey: `/var/run/docker/netns/bench${i}`, Options: {} }, record);
      const t1 = performance.now();
      await timed('Leave', '/NetworkDriver.Leave', { NetworkID: networkId, EndpointID: endpointId }, record);
      const t2 = performance.now();
      await timed('DeleteEndpoint', '/NetworkDriver.DeleteEndpoint', { NetworkID: networkId, EndpointID: endpointId }, record);
      await timed('ReleaseAddress', '/IpamDriver.ReleaseAddress', { PoolID: POOL, Address: cidr.split('/')[0] }, record);
      const t3 = performance.now();
      if (record) {
        phases.get('setup total')?.push(t1 - t0);
        phases.get('teardown total')?.push(t3 - t2);
      }
    }
    const serverCalls = callsInLog(node.logPath, fromMeasured, logSize(node.logPath));

    log(`handlers: ${iterations} RequestAddress in a row, then release them`);
    const addrs: string[] = [];
    const addrMs: number[] = [];
    const a0 = performance.now();
    for (let i = 0; i < iterations; i++) {
      const t = performance.now();
      const reply = await client.call('/IpamDriver.RequestAddress', { PoolID: POOL, Address: '', Options: {} });
      addrMs.push(performance.now() - t);
      addrs.push(String(reply.Address).split('/')[0] ?? '');
    }
    const a1 = performance.now();
    if (new Set(addrs).size !== addrs.length) throw new Error('RequestAddress handed out a duplicate address');
    for (const a of addrs) await client.call('/IpamDriver.ReleaseAddress', { PoolID: POOL, Address: a });
    const a2 = performance.now();
    return {
      phases: names.map((n) => ({ phase: n, ms: phases.get(n) ?? [] })),
      serverCalls,
      addrPerS: iterations / ((a1 - a0) / 1000),
      releasePerS: iterations / ((a2 - a1) / 1000),
      addrMs,
    };
  } finally {
    client.close();
  }
}

// ---- report ------------------------------------------------------------------------------------

function renderSection(r: Results): string {
  const { dockerRun: d, handlers: h, machine: m, options: o } = r;
  const p50 = (v: Variant): number => pct(d.ms[v], 50);
  const ratio = p50('calico') / p50('bridge');
  const ratio95 = pct(d.ms.calico, 95) / pct(d.ms.bridge, 95);
  const pass = (ok: boolean): string => (ok ? '**pass**' : '**FAIL**');
  const lines: string[] = [];
  lines.push(BEGIN);
  lines.push('## `docker run` with calico-ts vs. the bridge driver (`bench/docker-run.ts`)');
  lines.push('');
  lines.push(`Run ${m.date}; ${f1(r.wallS)} s wall; \`--runs ${o.runs} --warmup ${o.warmup} --iterations ${o.iterations}\`.`);
  lines.push('');
  lines.push('| machine | |');
  lines.push('|---|---|');
  lines.push(`| CPUs (nproc) | ${m.nproc} |`);
  lines.push(`| CPU model | ${m.cpu} |`);
  lines.push(`| kernel | ${m.kernel} |`);
  lines.push(`| dockerd | ${m.dockerd} (test daemon in its own netns, \`--iptables=false\`) |`);
  lines.push(`| etcd | ${m.etcd} (single member, same netns) |`);
  lines.push(`| Node.js | ${m.node} |`);
  lines.push(`| calico-ts commit | ${m.commit} |`);
  lines.push(`| load average (1/5/15 min) at start / end | ${m.loadStart} / ${m.loadEnd} |`);
  lines.push('');
  lines.push('### Targets');
  lines.push('');
  lines.push('| metric | baseline (same run) | result | target | |');
  lines.push('|---|---|---|---|---|');
  lines.push(
    `| \`docker run --rm --net net1 ${IMAGE} true\` p50 | bridge network p50 ${f1(p50('bridge'))} ms | ${f1(p50('calico'))} ms = **${f2(ratio)}×** | ≤ ${TARGET_RATIO}× (aim ≤ ${AIM_RATIO.toFixed(1)}×) | ${pass(ratio <= TARGET_RATIO)}${ratio <= AIM_RATIO ? ' (aim met)' : ''} |`,
  );
  lines.push(
    `| IPAM RequestAddress, sequential, one host | — | ${f1(h.addrPerS)} addresses/s | ≥ ${TARGET_ADDR_PER_S}/s per host | ${pass(h.addrPerS >= TARGET_ADDR_PER_S)} |`,
  );
  lines.push(
    `| node RSS idle (after the runs) | — | ${f1(r.rssAfterRuns.rssMb)} MB | < ${TARGET_RSS_MB} MB | ${pass(r.rssAfterRuns.rssMb < TARGET_RSS_MB)} |`,
  );
  lines.push('');
  lines.push(`### 1. \`docker run --rm --net X ${IMAGE} true\`, wall time (ms)`);
  lines.push('');
  lines.push(
    `${o.runs} rounds after ${o.warmup} warm-up rounds; each round runs the three variants once, the order rotating per round. ` +
      'net1 = `docker network create --driver calico-ts --ipam-driver calico-ts net1`; ' +
      'bnet = `docker network create -d bridge bnet`. With `--rm` the CLI returns after the container is removed, so ' +
      'network teardown is inside the time.',
  );
  lines.push('');
  lines.push('| network | p50 | p95 | mean | min | max | p50 vs bridge | p50 vs none |');
  lines.push('|---|---|---|---|---|---|---|---|');
  for (const v of VARIANTS) {
    const xs = d.ms[v];
    lines.push(
      `| ${v === 'calico' ? 'calico-ts (net1)' : v === 'bridge' ? 'bridge (bnet)' : 'none'} | ${f1(p50(v))} | ${f1(pct(xs, 95))} | ${f1(mean(xs))} | ${f1(Math.min(...xs))} | ${f1(Math.max(...xs))} | ${f2(p50(v) / p50('bridge'))}× | ${f2(p50(v) / p50('none'))}× |`,
    );
  }
  lines.push('');
  lines.push(
    `Ratio calico / bridge: p50 **${f2(ratio)}×**, p95 ${f2(ratio95)}×. Network cost above \`--net none\` (p50 difference): ` +
      `calico-ts ${f1(p50('calico') - p50('none'))} ms, bridge ${f1(p50('bridge') - p50('none'))} ms.`,
  );
  lines.push('');
  const runs = Math.max(1, d.ms.calico.length);
  const pluginTotal = sum(d.calls.map((c) => c.total)) / runs;
  lines.push(
    `Plugin calls Docker made during the measured calico runs (server-side time from the node's debug log, \`docker call\` lines; ` +
      `${f1(pluginTotal)} ms of handler time per container on average):`,
  );
  lines.push('');
  lines.push('| call | count | p50 ms | p95 ms | max ms | ms per container |');
  lines.push('|---|---|---|---|---|---|');
  for (const c of d.calls) lines.push(`| ${c.path} | ${c.count} | ${f2(c.p50)} | ${f2(c.p95)} | ${f2(c.max)} | ${f2(c.total / runs)} |`);
  const perRun = (path: string): number => (d.calls.find((c) => c.path === path)?.total ?? 0) / runs;
  const setup = ['/IpamDriver.RequestAddress', '/NetworkDriver.CreateEndpoint', '/NetworkDriver.Join'].map(perRun);
  const teardown = ['/NetworkDriver.DeleteEndpoint', '/IpamDriver.ReleaseAddress'].map(perRun);
  lines.push('');
  lines.push(
    `Per container, on Docker's critical path: setup (RequestAddress + CreateEndpoint + Join) ${f1(sum(setup))} ms, ` +
      `teardown (DeleteEndpoint + ReleaseAddress) ${f1(sum(teardown))} ms (means). calico-ts p50 − bridge p50 = ${f1(p50('calico') - p50('bridge'))} ms.`,
  );
  const reconciles = (d.messages.get('reconciled: no changes') ?? 0) + (d.messages.get('reconciled') ?? 0) + (d.messages.get('reconciled dataplane') ?? 0);
  if (reconciles) {
    lines.push('', `Reconciles run by the node in that window: ${reconciles} (${f1(reconciles / runs)} per container; each one lists links and routes and holds the dataplane lock that Join and DeleteEndpoint also take).`);
  }
  if (d.timeline.events.length) {
    lines.push('');
    lines.push(`One calico run (the one closest to the p50: ${f1(d.timeline.total)} ms), as the node logged it; ms from the start of \`docker run\`:`);
    lines.push('');
    lines.push('| start | end | event |');
    lines.push('|---|---|---|');
    for (const ev of d.timeline.events) lines.push(`| ${f1(ev.start)} | ${f1(ev.end)} | ${ev.what} |`);
    lines.push(`| ${f1(d.timeline.total)} | | \`docker run\` returns |`);
  }
  lines.push('');
  lines.push(`### 2. Plugin handler latency, straight to the socket (ms)`);
  lines.push('');
  lines.push(
    `${o.iterations} endpoint lifecycles (after 5 warm-up) with synthetic 64-hex endpoint IDs on net1's Docker network ID, PoolID \`${POOL}\`, ` +
      'one kept-alive connection, client-side round trip. Join creates a real veth pair and /32 route in the bench netns; ' +
      'DeleteEndpoint removes it.',
  );
  lines.push('');
  lines.push('| phase | p50 | p99 | mean | max | server-side p50 (log) |');
  lines.push('|---|---|---|---|---|---|');
  const server = new Map(h.serverCalls.map((c) => [c.path.replace(/^\/(NetworkDriver|IpamDriver)\./, ''), c]));
  for (const p of h.phases) {
    const s = server.get(p.phase);
    const label = p.phase.endsWith('total') ? `**${p.phase}**` : p.phase;
    lines.push(`| ${label} | ${f2(pct(p.ms, 50))} | ${f2(pct(p.ms, 99))} | ${f2(mean(p.ms))} | ${f2(Math.max(...p.ms))} | ${s ? f2(s.p50) : ''} |`);
  }
  lines.push('');
  lines.push('setup total = RequestAddress + CreateEndpoint + Join; teardown total = DeleteEndpoint + ReleaseAddress (Leave, a no-op, listed apart).');
  lines.push('');
  lines.push(
    `RequestAddress alone, ${o.iterations} in a row: **${f1(h.addrPerS)} addresses/s** (p50 ${f2(pct(h.addrMs, 50))} ms, p99 ${f2(pct(h.addrMs, 99))} ms); ` +
      `releasing them: ${f1(h.releasePerS)} addresses/s.`,
  );
  lines.push('');
  lines.push('### 3. Building blocks (ms)');
  lines.push('');
  lines.push(
    `What one datastore round trip and one command cost on this machine, from a separate Node.js process in the bench netns ` +
      `(etcd3 client, same etcd; \`execFile\`), ${r.blocks.etcdGet.length} each. The handlers above are sums of these.`,
  );
  lines.push('');
  lines.push('| operation | p50 | p95 |');
  lines.push('|---|---|---|');
  const bb: [string, number[]][] = [
    ['etcd get', r.blocks.etcdGet],
    ['etcd put (fsync)', r.blocks.etcdPut],
    ['etcd txn compare-and-put (fsync)', r.blocks.etcdTxn],
    ['exec `ip -json link show dev lo`', r.blocks.execIp],
    ['exec `sysctl -n net.ipv4.ip_forward`', r.blocks.execSysctl],
    ['exec `ip link add A type veth peer name B`', r.blocks.vethAdd],
    ['exec `ip link del A` (veth pair; kernel teardown included)', r.blocks.vethDel],
  ];
  for (const [what, xs] of bb) lines.push(`| ${what} | ${f2(pct(xs, 50))} | ${f2(pct(xs, 95))} |`);
  lines.push('');
  lines.push('### 4. Node memory');
  lines.push('');
  lines.push('`calico-ts node run`, from /proc/<pid>/status.');
  lines.push('');
  lines.push('| when | VmRSS | of which anonymous (heap) | of which file-backed (binary, libraries) | VmHWM (peak so far) |');
  lines.push('|---|---|---|---|---|');
  const rssRow = (when: string, x: Rss): string => `| ${when} | ${f1(x.rssMb)} MB | ${f1(x.anonMb)} MB | ${f1(x.fileMb)} MB | ${f1(x.hwmMb)} MB |`;
  lines.push(rssRow('idle, after start (net1 created, no container yet)', r.rssAtStart));
  lines.push(rssRow(`idle, 2 s after the docker runs (${(o.warmup + o.runs)} calico containers)`, r.rssAfterRuns));
  lines.push(rssRow(`idle, 2 s after the handler benchmark (${o.iterations * 2} addresses, ${o.iterations} veths)`, r.rssAfterHandlers));
  lines.push(END);
  return lines.join('\n');
}


function printSummary(r: Results): void {
  const p = (v: Variant): number => pct(r.dockerRun.ms[v], 50);
  const out = [
    '',
    `docker run --rm true, p50/p95 ms: calico ${f1(p('calico'))}/${f1(pct(r.dockerRun.ms.calico, 95))}  bridge ${f1(p('bridge'))}/${f1(pct(r.dockerRun.ms.bridge, 95))}  none ${f1(p('none'))}/${f1(pct(r.dockerRun.ms.none, 95))}`,
    `ratio calico/bridge p50: ${f2(p('calico') / p('bridge'))}x (target <= ${TARGET_RATIO}x)`,
    ...r.handlers.phases.map((ph) => `  ${ph.phase.padEnd(15)} p50 ${f2(pct(ph.ms, 50)).padStart(7)} ms  p99 ${f2(pct(ph.ms, 99)).padStart(7)} ms`),
    `RequestAddress: ${f1(r.handlers.addrPerS)} addresses/s; release ${f1(r.handlers.releasePerS)}/s`,
    `building blocks p50: etcd get ${f2(pct(r.blocks.etcdGet, 50))} ms, put ${f2(pct(r.blocks.etcdPut, 50))} ms, txn ${f2(pct(r.blocks.etcdTxn, 50))} ms; exec ip ${f2(pct(r.blocks.execIp, 50))} ms, sysctl ${f2(pct(r.blocks.execSysctl, 50))} ms, veth add ${f2(pct(r.blocks.vethAdd, 50))} ms, veth del ${f2(pct(r.blocks.vethDel, 50))} ms`,
    `node RSS: ${f1(r.rssAtStart.rssMb)} MB at start, ${f1(r.rssAfterRuns.rssMb)} MB after runs, ${f1(r.rssAfterHandlers.rssMb)} MB after handlers (peak ${f1(r.rssAfterHandlers.hwmMb)} MB)`,
    '',
  ];
  process.stdout.write(out.join('\n'));
}

async function main(): Promise<void> {
  const o = parseOptions();
  if (process.getuid?.() !== 0) throw new Error('the benchmark needs root (namespaces, dockerd)');
  const started = performance.now();
  const cleanup = new Cleanup((m) => log(m));
  let cleaning: Promise<Error[]> | undefined;
  const cleanupOnce = (): Promise<Error[]> => (cleaning ??= cleanup.run());
  let interrupted = false;
  const onSignal = (sig: NodeJS.Signals): void => {
    if (interrupted) return;
    interrupted = true;
    log(`${sig}: cleaning up`);
    void cleanupOnce().finally(() => process.exit(sig === 'SIGINT' ? 130 : 143));
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  process.on('SIGHUP', onSignal);

  let node: CalicoNodeHandle | undefined;
  try {
    log(`pid ${process.pid}: starting dockerd, etcd and calico-ts node in a fresh netns`);
    const dockerd = await startDockerd();
    cleanup.add('dockerd', () => dockerd.stop());
    const etcd = await startEtcd({ netns: dockerd.netns });
    cleanup.add('etcd', () => etcd.stop());
    node = await startCalicoNode({
      netns: dockerd.netns,
      nodeName: 'bench',
      etcdEndpoint: etcd.endpoint,
      pluginDir: dockerd.pluginDir,
      dockerSocket: dockerd.socketPath,
      runDir: join(dockerd.runDir, 'calico-ts'),
    });
    const n = node;
    cleanup.add('calico-ts node', () => n.stop());
    const docker = async (...args: string[]): Promise<string> => (await dockerd.docker(args, { timeoutMs: 60_000 })).stdout.trim();
    // Removed while the node still runs (cleanup runs in reverse order).
    cleanup.add('networks', () => dockerd.docker(['network', 'rm', 'net1', 'bnet'], { timeoutMs: 30_000 }).catch(() => undefined));
    await ensureBusyboxImage(dockerd);
    const machine = await machineInfo(dockerd);
    log(`machine: ${machine.nproc} CPU(s), ${machine.cpu}, kernel ${machine.kernel}, dockerd ${machine.dockerd}`);

    await docker('network', 'create', '--driver', 'calico-ts', '--ipam-driver', 'calico-ts', 'net1');
    await docker('network', 'create', '-d', 'bridge', 'bnet');
    const networkId = await docker('network', 'inspect', '-f', '{{.Id}}', 'net1');
    const subnet = await docker('network', 'inspect', '-f', '{{range .IPAM.Config}}{{.Subnet}}{{end}}', 'net1');
    // A default-pool network shows 0.0.0.0/0 to Docker (the real pool is its PoolID; see README).
    if (subnet !== '0.0.0.0/0') throw new Error(`net1 has subnet ${subnet}, expected 0.0.0.0/0 (the default pool, ${POOL})`);
    // The node learns the network's name asynchronously; let that settle before timing anything.
    await waitFor(() => n.log().includes('"network named"'), 15_000, 'net1 named by the node');

    await sleep(2_000);
    const rssAtStart = await nodeRss(n);
    const dockerRun = await benchDockerRun(dockerd, n, o);
    await sleep(2_000);
    const rssAfterRuns = await nodeRss(n);
    const handlers = await benchHandlers(n, networkId, o.iterations);
    await sleep(2_000);
    const rssAfterHandlers = await nodeRss(n);
    log('building blocks: etcd round trips and execs from a node process in the netns');
    const blocks = await benchBuildingBlocks(dockerd.netns, etcd.endpoint);

    machine.loadEnd = loadavg();
    const results: Results = { options: o, machine, dockerRun, handlers, rssAtStart, rssAfterRuns, rssAfterHandlers, blocks, wallS: (performance.now() - started) / 1000 };
    await writeSection(o.out, renderSection(results), { begin: BEGIN, end: END, header: HEADER });
    printSummary(results);
    log(`wrote ${o.out}`);
  } catch (err) {
    if (node && !interrupted) process.stderr.write(`--- calico-ts node log (tail) ---\n${node.log().slice(-4000)}\n`);
    throw err;
  } finally {
    log('cleaning up');
    const errors = await cleanupOnce();
    if (errors.length) process.exitCode = 1;
    log(`done in ${f1((performance.now() - started) / 1000)} s`);
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`bench failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exitCode = 1;
});
