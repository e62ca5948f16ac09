// A multi-host testbed on one machine: several "hosts" (network namespaces, each with its own
// dockerd and `calico-ts node run`) on one layer-2 fabric, sharing one etcd.
//
// Layout of a testbed named T (T = `<name>-<pid>-<n>`, default name "tb"), subnet 10.K.0.0/24:
//
//   netns T-fabric       bridge br0 10.K.0.1/24 (ip_forward off: it only switches), etcd listening
//                        on 10.K.0.1:2379 and 127.0.0.1:2379 (data and log in /run/calico-ts-testbed/T)
//   netns T-<host>       eth0 10.K.0.<10+i>/24 (i = 1, 2, ...; the peer `p<i>` is a port of br0),
//                        default via 10.K.0.1 (like a real host: containers' gateway 169.254.1.1 is
//                        covered by it, so proxy ARP answers); a dockerd named `dkr-<pid>-<n>`
//                        (startDockerd: /run/dkr-<pid>-<n>/docker.sock, plugins dir, ...) running in it;
//                        `calico-ts node run` (NODENAME=<host>, IP=10.K.0.<10+i>,
//                        ETCD_ENDPOINTS=http://10.K.0.1:2379) serving the dockerd's plugin dir, its run
//                        dir under the dockerd's; the image local/busybox imported.
//
// Two subnets (option `subnets`, e.g. [0, 0, 1]: host i on subnet subnets[i]): the fabric netns is then
// a router between bridges br0 10.K.0.1/24 and br1 10.K.1.1/24 (ip_forward on, no route to any pool),
// host i gets eth0 10.K.<s>.<10+i>/24, default via 10.K.<s>.1 — the seeds' hosts on two subnets.
//
// K is leased: /run/calico-ts-testbed/leases/<K>.json is created exclusively and names its owner
// (pid + start time), so testbeds of parallel test processes never share a subnet. Addresses exist
// only inside the testbed's namespaces; nothing is added to the host's own network namespace.
//
// Crash safety: etcd gets SIGKILL when its parent dies (setpriv --pdeathsig), dockerd gets SIGTERM
// (docker-init -p). Everything else a dead process left behind (the node, namespaces, directories,
// and the dockerds' cgroups/mounts via sweepStaleDaemons) is removed by sweepStaleTestbeds(), which
// startTestbed() runs first: it acts only on leases whose owner process is gone.

import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, openSync } from 'node:fs';
import { mkdir, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { ensureBusyboxImage } from './busybox-image.js';
import { CLI, startCalicoNode, type CalicoNodeHandle } from './calico-node.js';
import { startDockerd, sweepStaleDaemons, type DockerdHandle } from './dockerd.js';
import { installManagedPlugin, PLUGIN_NAME } from './managed-plugin.js';
import { assertName, createNetns, deleteNetns, execInNetns, netnsExists, netnsInode, netnsPath, uniqueName } from './netns.js';
import {
  Cleanup,
  isAlive,
  listPids,
  nsOf,
  procStat,
  run,
  signal,
  sleep,
  waitGone,
  which,
  type RunOptions,
  type RunResult,
} from './proc.js';

export const TESTBED_ROOT = '/run/calico-ts-testbed';
const LEASE_DIR = `${TESTBED_ROOT}/leases`;
/** Host i's (0-based) IPv6 address on the fabric of lease K: fd00:<K hex>::<11+i>. */
function hostIPv6(k: number, i: number): string {
  return `fd00:${k.toString(16)}::${(11 + i).toString(16)}`;
}

/** Second octet of the fabric subnet 10.K.0.0/24 is leased from this range. */
const K_MIN = 128;
const K_MAX = 254;
const ETCD_PORT = 2379;
const ETCD_PEER_PORT = 2380;

export interface TestbedOptions {
  /** How many hosts (named host1, host2, ...), or their names ([a-z0-9-]). */
  hosts: number | string[];
  /** Each dockerd's --iptables. Default false. */
  iptables?: boolean;
  /** Give each host's eth0 an IPv6 address too, fd00:<K hex>::<10+i>/64 (no DAD), and its node IP6. Default false. */
  ipv6?: boolean;
  /** Extra environment for every calico-ts node. */
  nodeEnv?: Record<string, string>;
  /** Start a calico-ts node on every host. Default true (else: host.startNode() later). */
  startNodes?: boolean;
  /** Prefix of the testbed's name (made unique with pid and a counter). Default "tb". */
  name?: string;
  /** Called with progress lines (e.g. console.error). Default: silent. */
  log?: (msg: string) => void;
  /** Subnet index (0 or 1) of each host; default all 0 (one bridge). With a 1, the fabric routes between two. */
  subnets?: number[];
  /** Hosts (names) that run the node as the Docker managed plugin built in `buildDir`
   * (scripts/build-plugin.sh) instead of the legacy socket; their driver is `calico-ts:latest`. */
  managedPlugin?: { buildDir: string; hosts: string[] };
}

export interface TestbedHost {
  /** Host name = the node's NODENAME. */
  readonly name: string;
  /** 1-based index. */
  readonly index: number;
  /** The host's network namespace (/run/netns/<netns>). */
  readonly netns: string;
  /** eth0's address (no prefix length). */
  readonly ip: string;
  /** eth0's IPv6 address (no prefix length) when the testbed has `ipv6`, else undefined. */
  readonly ip6?: string;
  readonly dockerd: DockerdHandle;
  /** The calico-ts node, when started. */
  node?: CalicoNodeHandle;
  /** The driver name this host's Docker knows calico-ts by: `calico-ts`, or `calico-ts:latest` for a managed plugin. */
  readonly driver: string;
  /** Environment the node was (or will be) started with, beyond what startCalicoNode sets itself. */
  readonly nodeEnv: Record<string, string>;
  /** `docker -H <this host's daemon> ...args`; resolves with trimmed stdout. */
  docker(...args: string[]): Promise<string>;
  /** Run argv inside the host's netns. */
  exec(argv: readonly string[], opts?: RunOptions): Promise<RunResult>;
  /** `calico-ts <args>` in the host's netns, against the testbed's etcd and this node's run dir; stdout. */
  cli(args: readonly string[], input?: string): Promise<string>;
  /** Start (or restart after stop) the node, with the host's node env plus `env`. */
  startNode(env?: Record<string, string>): Promise<CalicoNodeHandle>;
}

export interface TestbedTimings {
  /** Fabric netns, bridge, host namespaces and veths. */
  fabricMs: number;
  etcdMs: number;
  /** Per host: dockerd API answering. */
  dockerdMs: Record<string, number>;
  /** Per host: image import. */
  imageMs: Record<string, number>;
  /** Per host: node serving its socket. */
  nodeMs: Record<string, number>;
  totalMs: number;
}

export interface Testbed {
  readonly name: string;
  /** "10.K.0.0/24". */
  readonly subnet: string;
  /** Every host subnet: ["10.K.0.0/24"] or, with two, ["10.K.0.0/24", "10.K.1.0/24"]. */
  readonly subnets: string[];
  /** br0's address in the fabric netns, 10.K.0.1. */
  readonly fabricIp: string;
  readonly fabricNetns: string;
  /** http://10.K.0.1:2379 (reachable from every host netns). */
  readonly etcdEndpoint: string;
  readonly etcdPid: number;
  readonly hosts: TestbedHost[];
  readonly timings: TestbedTimings;
  host(hostIndexOrName: number | string): TestbedHost;
  /** Run argv inside a host's netns; a number is an index into hosts (0-based). */
  exec(hostIndexOrName: number | string, argv: readonly string[], opts?: RunOptions): Promise<RunResult>;
  /** Run argv inside the fabric netns. */
  fabricExec(argv: readonly string[], opts?: RunOptions): Promise<RunResult>;
  /** Live processes of the testbed: everything in its namespaces, the dockerds' families, etcd, nodes. */
  processes(): Promise<number[]>;
  /** Everything the testbed made that should vanish on stop(): netns names, directories. */
  readonly footprint: { netns: string[]; dirs: string[] };
  /** Tear everything down. Idempotent; every step runs even if one fails; rejects with an AggregateError. */
  stop(): Promise<void>;
  readonly stopped: boolean;
}

/** What a lease file says; enough for sweepStaleTestbeds() to remove a dead owner's testbed. */
interface Lease {
  k: number;
  name: string;
  ownerPid: number;
  ownerStart: number;
  netns: string[];
  dirs: string[];
}

// ---- small helpers --------------------------------------------------------------------------

/** Processes (other than us) whose network namespace is one of `names`. */
export async function processesInNetns(names: readonly string[]): Promise<number[]> {
  const want = new Set<string>();
  for (const n of names) if (await netnsExists(n)) want.add(`net:[${await netnsInode(n)}]`);
  if (want.size === 0) return [];
  const out: number[] = [];
  for (const pid of await listPids()) {
    if (pid === process.pid) continue;
    const ns = await nsOf(pid, 'net');
    if (ns !== null && want.has(ns) && (await isAlive(pid))) out.push(pid);
  }
  return out;
}

async function killAll(pids: readonly number[], what: string): Promise<void> {
  let left = [...pids];
  for (let round = 0; round < 3 && left.length; round++) {
    for (const p of left) signal(p, 'SIGKILL');
    left = await waitGone(left, 5000);
  }
  if (left.length) throw new Error(`${what}: processes survive SIGKILL: ${left.join(' ')}`);
}

async function ownerAlive(pid: number, start: number): Promise<boolean> {
  const st = await procStat(pid);
  return st !== null && st.state !== 'Z' && st.starttime === start;
}

async function readLease(path: string): Promise<Lease | null> {
  try {
    return JSON.parse(await readFile(path, 'utf8')) as Lease;
  } catch {
    return null;
  }
}

/**
 * Remove testbeds whose owner process is gone (crashed test, killed keeper): kill every process in
 * their namespaces, delete the namespaces and directories, drop the lease, then let
 * sweepStaleDaemons() remove their dockerds' cgroups, mounts and directories. Returns the names swept.
 */
export async function sweepStaleTestbeds(): Promise<string[]> {
  const files = await readdir(LEASE_DIR).catch(() => [] as string[]);
  const swept: string[] = [];
  const errors: Error[] = [];
  for (const f of files) {
    if (!/^\d+\.json$/.test(f)) continue;
    const path = join(LEASE_DIR, f);
    const lease = await readLease(path);
    if (lease && (await ownerAlive(lease.ownerPid, lease.ownerStart))) continue;
    if (!lease) {
      // Being written right now, or garbage: only remove it when it is clearly old.
      const age = Date.now() - (await stat(path).then((s) => s.mtimeMs, () => Date.now()));
      if (age < 60_000) continue;
      await rm(path, { force: true });
      continue;
    }
    try {
      await killAll(await processesInNetns(lease.netns), lease.name);
      for (const n of lease.netns) await deleteNetns(n);
      for (const d of lease.dirs) await rm(d, { recursive: true, force: true, maxRetries: 5 });
      await rm(path, { force: true });
      swept.push(lease.name);
    } catch (err) {
      errors.push(new Error(`sweeping testbed ${lease.name}: ${(err as Error).message}`, { cause: err }));
    }
  }
  if (swept.length) await sweepStaleDaemons().catch((err: Error) => errors.push(err));
  if (errors.length) throw new AggregateError(errors, errors.map((e) => e.message).join('; '));
  return swept;
}

/** Lease a free K (exclusive create of leases/<K>.json). */
async function leaseSubnet(initial: Omit<Lease, 'k'>): Promise<{ k: number; path: string }> {
  await mkdir(LEASE_DIR, { recursive: true });
  const span = K_MAX - K_MIN + 1;
  const first = process.pid % span;
  for (let i = 0; i < span; i++) {
    const k = K_MIN + ((first + i) % span);
    const path = join(LEASE_DIR, `${k}.json`);
    const lease: Lease = { k, ...initial };
    try {
      await writeFile(path, JSON.stringify(lease), { flag: 'wx' });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'EEXIST') continue;
      throw err;
    }
    return { k, path };
  }
  throw new Error(`no free testbed subnet 10.${K_MIN}-${K_MAX}.0.0/24: ${LEASE_DIR} is full (stale leases of live processes?)`);
}

async function etcdHealthy(fabricNetns: string, endpoint: string): Promise<boolean> {
  try {
    const { stdout } = await execInNetns(fabricNetns, ['curl', '-fsS', '--max-time', '1', `${endpoint}/health`], { timeoutMs: 3000 });
    return /"health":\s*"true"/.test(stdout);
  } catch {
    return false;
  }
}

interface EtcdProc {
  pid: number;
  stop(): Promise<void>;
}

/** etcd in the fabric netns on 10.K.0.1:2379 and 127.0.0.1:2379 (startEtcd only does 127.0.0.1). */
async function startFabricEtcd(fabricNetns: string, ip: string, dir: string): Promise<EtcdProc> {
  const dataDir = join(dir, 'etcd');
  const logPath = join(dir, 'etcd.log');
  await mkdir(dataDir, { recursive: true, mode: 0o700 });
  const peer = `http://127.0.0.1:${ETCD_PEER_PORT}`;
  const argv = [
    'etcd',
    '--name', 'fabric',
    '--data-dir', dataDir,
    '--listen-client-urls', `http://${ip}:${ETCD_PORT},http://127.0.0.1:${ETCD_PORT}`,
    '--advertise-client-urls', `http://${ip}:${ETCD_PORT}`,
    '--listen-peer-urls', peer,
    '--initial-advertise-peer-urls', peer,
    '--initial-cluster', `fabric=${peer}`,
    '--log-level', 'warn',
    '--logger', 'zap',
  ];
  // setpriv --pdeathsig: etcd dies with the process that started it, even on SIGKILL.
  const pdeath = (await which('setpriv')) ? ['setpriv', '--pdeathsig', 'SIGKILL', '--'] : [];
  const fd = openSync(logPath, 'a');
  let child: ChildProcess;
  try {
    child = spawn('nsenter', [`--net=${netnsPath(fabricNetns)}`, '--', ...pdeath, ...argv], { stdio: ['ignore', fd, fd] });
  } finally {
    closeSync(fd);
  }
  const c = child;
  const exited = new Promise<void>((resolve) => {
    if (c.exitCode !== null || c.signalCode !== null) resolve();
    else c.once('exit', () => resolve());
  });
  const spawnErr = new Promise<Error>((resolve) => c.once('error', resolve));
  let stopping: Promise<void> | undefined;
  const stop = (): Promise<void> =>
    (stopping ??= (async () => {
      if (c.exitCode === null && c.signalCode === null) {
        c.kill('SIGTERM');
        const timer = setTimeout(() => c.kill('SIGKILL'), 5000);
        await exited;
        clearTimeout(timer);
      }
      await rm(dataDir, { recursive: true, force: true, maxRetries: 5 });
    })());
  if (c.pid === undefined) throw await spawnErr;
  const endpoint = `http://${ip}:${ETCD_PORT}`;
  try {
    const deadline = Date.now() + 20_000;
    while (!(await etcdHealthy(fabricNetns, endpoint))) {
      if (c.exitCode !== null || c.signalCode !== null) {
        const log = await readFile(logPath, 'utf8').catch(() => '');
        throw new Error(`etcd exited (${c.exitCode ?? c.signalCode}): ${log.slice(-2000)}`);
      }
      if (Date.now() > deadline) throw new Error(`etcd not healthy on ${endpoint} within 20 s`);
      await sleep(50);
    }
  } catch (err) {
    await stop();
    throw err;
  }
  return { pid: c.pid, stop };
}

function hostNames(hosts: number | string[]): string[] {
  const names = typeof hosts === 'number' ? Array.from({ length: hosts }, (_, i) => `host${i + 1}`) : [...hosts];
  if (names.length < 1 || names.length > 200) throw new Error(`a testbed has 1 to 200 hosts, not ${names.length}`);
  for (const n of names) assertName(n, 'host name');
  if (new Set(names).size !== names.length) throw new Error(`duplicate host names: ${names.join(' ')}`);
  return names;
}

/** Run fns in parallel; all settle; rethrow an AggregateError of the failures. */
async function allSettled(what: string, fns: (() => Promise<unknown>)[]): Promise<void> {
  const rs = await Promise.allSettled(fns.map((f) => f()));
  const errs = rs.flatMap((r) => (r.status === 'rejected' ? [r.reason instanceof Error ? r.reason : new Error(String(r.reason))] : []));
  if (errs.length === 1) throw errs[0];
  if (errs.length) throw new AggregateError(errs, `${what}: ${errs.map((e) => e.message).join('; ')}`);
}

// ---- the testbed ----------------------------------------------------------------------------

export async function startTestbed(opts: TestbedOptions): Promise<Testbed> {
  const t0 = performance.now();
  const log = opts.log ?? (() => {});
  const names = hostNames(opts.hosts);
  const subnetOf = names.map((_, i) => opts.subnets?.[i] ?? 0);
  if (subnetOf.some((s) => s !== 0 && s !== 1)) throw new Error(`subnets: each host is on subnet 0 or 1, not ${JSON.stringify(opts.subnets)}`);
  const subnetCount = subnetOf.includes(1) ? 2 : 1;
  const hostIp = (k: number, i: number): string => `10.${k}.${subnetOf[i] ?? 0}.${11 + i}`;
  await sweepStaleTestbeds().then(
    (s) => s.length && console.error(`testbed: removed leftovers of dead processes: ${s.join(' ')}`),
    (err: Error) => console.error(`testbed: sweeping leftovers failed: ${err.message}`),
  );

  const name = uniqueName(opts.name ?? 'tb');
  const fabricNetns = `${name}-fabric`;
  assertName(fabricNetns, 'fabric netns name');
  const hostNetns = names.map((h) => `${name}-${h}`);
  for (const n of hostNetns) assertName(n, `netns name (testbed name + host name)`);
  const dir = join(TESTBED_ROOT, name);
  const ownerStart = (await procStat(process.pid))?.starttime ?? 0;

  const cleanup = new Cleanup((m) => log(m));
  let stopPromise: Promise<void> | undefined;
  const stop = (): Promise<void> =>
    (stopPromise ??= (async () => {
      const t = performance.now();
      const errs = await cleanup.run();
      log(`testbed ${name}: stopped in ${(performance.now() - t).toFixed(0)} ms`);
      if (errs.length) throw new AggregateError(errs, `testbed ${name} teardown: ${errs.map((e) => e.message).join('; ')}`);
    })());

  const timings: TestbedTimings = { fabricMs: 0, etcdMs: 0, dockerdMs: {}, imageMs: {}, nodeMs: {}, totalMs: 0 };
  const hosts: TestbedHost[] = [];
  const dockerdNames: string[] = [];
  /** Set once etcd is starting: a failed start waits for it, so its cleanup is registered before teardown. */
  let etcdStarting: Promise<unknown> | undefined;

  try {
    // --- lease a subnet; the lease names our namespaces and directory, for sweepStaleTestbeds() ---
    const lease = await leaseSubnet({ name, ownerPid: process.pid, ownerStart, netns: [fabricNetns, ...hostNetns], dirs: [dir] });
    cleanup.add('lease', () => rm(lease.path, { force: true }));
    const k = lease.k;
    const subnet = `10.${k}.0.0/24`;
    const fabricIp = `10.${k}.0.1`;
    const etcdEndpoint = `http://${fabricIp}:${ETCD_PORT}`;
    log(`testbed ${name}: subnet ${subnet}, hosts ${names.join(' ')}`);

    await mkdir(dir, { recursive: true, mode: 0o755 });
    cleanup.add('testbed dir', () => rm(dir, { recursive: true, force: true, maxRetries: 5 }));

    // --- fabric: netns + bridge ---
    let t = performance.now();
    if (await netnsExists(fabricNetns)) throw new Error(`netns ${fabricNetns} already exists`);
    const fabric = await createNetns({ name: fabricNetns });
    cleanup.add(`netns ${fabricNetns}`, async () => {
      // Nothing may be left in it (etcd is stopped by then): kill stragglers, then delete.
      await killAll(await processesInNetns([fabricNetns]), fabricNetns);
      await fabric.delete();
    });
    const fx = (argv: string[]) => run(['ip', '-n', fabricNetns, ...argv]);
    for (let s = 0; s < subnetCount; s++) {
      await fx(['link', 'add', `br${s}`, 'type', 'bridge', 'forward_delay', '0', 'stp_state', '0']);
      await fx(['addr', 'add', `10.${k}.${s}.1/24`, 'dev', `br${s}`]);
      await fx(['link', 'set', `br${s}`, 'up']);
    }
    // One subnet: a switch, not a router. Two: a router between them, with no route to any pool.
    const forward = subnetCount > 1 ? '1' : '0';
    await fabric.exec(['sysctl', '-q', '-w', `net.ipv4.ip_forward=${forward}`, 'net.ipv6.conf.all.forwarding=0']);

    // --- etcd (in parallel with the host namespaces) ---
    const etcdP = (async () => {
      const te = performance.now();
      const etcd = await startFabricEtcd(fabricNetns, fabricIp, dir);
      cleanup.add('etcd', () => etcd.stop());
      timings.etcdMs = performance.now() - te;
      return etcd;
    })();
    etcdStarting = etcdP.catch(() => {}); // awaited below

    // --- host namespaces and their links to br0 ---
    const hostCleanups = names.map(() => new Cleanup((m) => log(m)));
    cleanup.add('hosts', async () => {
      // Hosts tear down in parallel; errors are collected by each host's Cleanup.
      const errs = (await Promise.all(hostCleanups.map((c) => c.run()))).flat();
      if (errs.length) throw new AggregateError(errs, errs.map((e) => e.message).join('; '));
    });
    await allSettled(
      'host namespaces',
      names.map((h, i) => async () => {
        const hc = hostCleanups[i]!;
        const ns = hostNetns[i]!;
        const ip = hostIp(k, i);
        const gateway = `10.${k}.${subnetOf[i] ?? 0}.1`;
        if (await netnsExists(ns)) throw new Error(`netns ${ns} already exists`);
        const hn = await createNetns({ name: ns });
        hc.add(`netns ${ns}`, async () => {
          await killAll(await processesInNetns([ns]), ns);
          await hn.delete();
        });
        const port = `p${i + 1}`;
        await fx(['link', 'add', port, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', ns]);
        await fx(['link', 'set', port, 'master', `br${subnetOf[i] ?? 0}`, 'up']);
        await run(['ip', '-n', ns, 'addr', 'add', `${ip}/24`, 'dev', 'eth0']);
        if (opts.ipv6) await run(['ip', '-n', ns, '-6', 'addr', 'add', `${hostIPv6(k, i)}/64`, 'dev', 'eth0', 'nodad']);
        await run(['ip', '-n', ns, 'link', 'set', 'eth0', 'up']);
        await run(['ip', '-n', ns, 'route', 'add', 'default', 'via', gateway, 'dev', 'eth0']);
      }),
    );
    timings.fabricMs = performance.now() - t;

    // --- per host: dockerd, then (image import || node) ---
    t = performance.now();
    // Default-style names (dkr-<pid>-<n>): if this process dies, sweepStaleDaemons() removes their
    // cgroups, mounts and directories (unmounting before removing, which a plain rm would not).
    for (let i = 0; i < names.length; i++) dockerdNames[i] = uniqueName('dkr');
    await allSettled(
      'hosts',
      names.map((h, i) => async () => {
        const hc = hostCleanups[i]!;
        const ns = hostNetns[i]!;
        const ip = hostIp(k, i);
        const dname = dockerdNames[i]!;
        const td = performance.now();
        const dockerd = await startDockerd({ name: dname, netns: ns, iptables: opts.iptables ?? false });
        hc.add(`dockerd ${dname}`, () => dockerd.stop());
        timings.dockerdMs[h] = performance.now() - td;
        log(`testbed ${name}: ${h} dockerd ${dname} up in ${timings.dockerdMs[h]!.toFixed(0)} ms`);

        const ip6 = opts.ipv6 ? hostIPv6(k, i) : undefined;
        const hostEnv = { IP: ip, ...(ip6 ? { IP6: ip6 } : {}), ...opts.nodeEnv };
        const managed = opts.managedPlugin?.hosts.includes(h) ? opts.managedPlugin.buildDir : undefined;
        let nodeRegistered = false;
        const host: TestbedHost = {
          name: h,
          index: i + 1,
          netns: ns,
          ip,
          ...(ip6 ? { ip6 } : {}),
          dockerd,
          driver: managed ? PLUGIN_NAME : 'calico-ts',
          nodeEnv: hostEnv,
          docker: async (...args) => (await dockerd.docker(args, { timeoutMs: 120_000 })).stdout.trim(),
          exec: (argv, o) => execInNetns(ns, argv, o),
          cli: async (args, input) =>
            (
              await execInNetns(ns, [process.execPath, CLI, ...args], {
                env: { PATH: process.env.PATH ?? '', ETCD_ENDPOINTS: etcdEndpoint, CALICO_TS_RUN_DIR: join(dockerd.runDir, 'calico-ts') },
                ...(input !== undefined ? { input } : {}),
                timeoutMs: 30_000,
              })
            ).stdout,
          startNode: async (env = {}) => {
            if (host.node) await host.node.stop();
            if (!nodeRegistered) {
              nodeRegistered = true;
              // Containers go first, while the plugin still answers Leave/DeleteEndpoint; then the node.
              hc.add(`node ${h}`, async () => {
                if (!host.node) return;
                try {
                  const ids = (await dockerd.docker(['ps', '-aq'], { timeoutMs: 10_000 })).stdout.split(/\s+/).filter(Boolean);
                  if (ids.length) await dockerd.docker(['rm', '-f', ...ids], { timeoutMs: 30_000 });
                } catch {
                  /* dockerd.stop() kills whatever is left */
                }
                await host.node.stop();
              });
            }
            const tn = performance.now();
            if (managed) {
              if (host.node) {
                await host.node.restart();
              } else {
                host.node = await installManagedPlugin(dockerd, { buildDir: managed, nodeName: h, etcdEndpoint, hostRun: dockerd.runDir, env: { ...hostEnv, ...env } });
              }
              timings.nodeMs[h] = performance.now() - tn;
              return host.node;
            }
            host.node = await startCalicoNode({
              netns: ns,
              nodeName: h,
              etcdEndpoint,
              pluginDir: dockerd.pluginDir,
              dockerSocket: dockerd.socketPath,
              runDir: join(dockerd.runDir, 'calico-ts'),
              env: { ...hostEnv, ...env },
            });
            timings.nodeMs[h] = performance.now() - tn;
            return host.node;
          },
        };
        hosts[i] = host;

        await allSettled(`host ${h}`, [
          async () => {
            timings.imageMs[h] = (await ensureBusyboxImage(dockerd)).ms;
          },
          async () => {
            if (opts.startNodes === false) return;
            await etcdP;
            await host.startNode();
            log(`testbed ${name}: ${h} node up in ${timings.nodeMs[h]!.toFixed(0)} ms`);
          },
        ]);
      }),
    );
    const etcd = await etcdP;
    timings.totalMs = performance.now() - t0;
    log(`testbed ${name}: ${names.length} hosts up in ${timings.totalMs.toFixed(0)} ms`);

    const byName = (x: number | string): TestbedHost => {
      const host = typeof x === 'number' ? hosts[x] : hosts.find((hh) => hh.name === x);
      if (!host) throw new Error(`testbed ${name}: no host ${JSON.stringify(x)} (hosts: ${names.join(' ')})`);
      return host;
    };
    const testbed: Testbed = {
      name,
      subnet,
      subnets: Array.from({ length: subnetCount }, (_, s) => `10.${k}.${s}.0/24`),
      fabricIp,
      fabricNetns,
      etcdEndpoint,
      etcdPid: etcd.pid,
      hosts,
      timings,
      host: byName,
      exec: (x, argv, o) => byName(x).exec(argv, o),
      fabricExec: (argv, o) => execInNetns(fabricNetns, argv, o),
      processes: async () => {
        const pids = new Set(await processesInNetns([fabricNetns, ...hostNetns]));
        for (const h of hosts) {
          for (const p of await h.dockerd.processes()) pids.add(p);
          const np = h.node?.pid();
          if (np !== undefined && (await isAlive(np))) pids.add(np);
        }
        return [...pids].sort((a, b) => a - b);
      },
      footprint: {
        netns: [fabricNetns, ...hostNetns],
        dirs: [dir, ...dockerdNames.flatMap((d) => [`/run/${d}`, `/var/lib/docker-${d}`])],
      },
      stop,
      get stopped() {
        return stopPromise !== undefined;
      },
    };
    return testbed;
  } catch (err) {
    await etcdStarting;
    // Logs live under the dockerds' run dirs: read them before the teardown removes them.
    const logs: string[] = [];
    for (const h of hosts) {
      if (!h) continue;
      const nl = h.node?.log() ?? '';
      if (nl) logs.push(`--- ${h.name} node log (tail) ---\n${nl.slice(-3000)}`);
    }
    const teardown = await stop().then(
      () => '',
      (e: Error) => `\n(teardown after the failed start also failed: ${e.message})`,
    );
    throw new Error(`startTestbed(${name}): ${(err as Error).message}${teardown}${logs.length ? `\n${logs.join('\n')}` : ''}`, { cause: err });
  }
}

