// Start a real Docker daemon inside a network namespace, isolated from the host and from other
// daemons started by this harness, and tear it down leaving nothing behind.
//
// Layout for a daemon named N (N matches /^[a-z0-9-]+$/):
//   /run/N/docker.sock       API socket (docker -H unix:///run/N/docker.sock)
//   /run/N/plugins           legacy plugin dir: dockerd sees it as /run/docker/plugins
//   /run/N/exec              --exec-root (containerd socket, sandbox netns files, runc state)
//   /run/N/dockerd.log       daemon (and containerd) output
//   /var/lib/docker-N        --data-root
//   netns N (or the one given)
//   cgroup parent /N in every cgroup hierarchy
//
// dockerd runs in its own mount namespace (unshare -m, everything rprivate) in which
//   /run/N/mnt/run-docker       is bind-mounted on /run/docker   (anything dockerd puts in /run/docker)
//   /run/N/plugins              is bind-mounted on /run/docker/plugins
//   /run/N/mnt/run-containerd   is bind-mounted on /run/containerd (hides any host containerd socket,
//                               so dockerd always supervises its own containerd, and keeps the
//                               containerd-shim sockets, /run/containerd/s/*, per daemon)
//   /run/N/mnt/etc-docker       is bind-mounted on /etc/docker (key.json, hence the engine ID, is
//                               per daemon; the host's daemon.json is not read: --config-file is
//                               /run/N/daemon.json = {})
// and enters the netns with `nsenter --net=` (not `ip netns exec`, which remounts /sys and hides
// the cgroup mounts). Unless disabled, dockerd runs under docker-init (tini) with `-s` (subreaper:
// orphaned shims are reaped) and `-p SIGTERM` (if the test process dies, dockerd is told to stop).

import { spawn, type ChildProcess } from 'node:child_process';
import { constants as fsc } from 'node:fs';
import { access, mkdir, open, readdir, readFile, rm, rmdir, writeFile } from 'node:fs/promises';
import { request } from 'node:http';
import { assertName, createNetns, deleteNetns, netnsExists, netnsInode, netnsPath, uniqueName } from './netns.js';
import {
  descendants,
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

export interface StartDockerdOptions {
  /** Daemon name (paths and, by default, the netns). Default: `dkr-<pid>-<n>`. */
  name?: string;
  /** Run in this existing netns (it is not deleted by stop()). Default: a new netns named like the daemon. */
  netns?: string;
  /** --iptables=true|false. Default false. (true also makes dockerd set FORWARD policy DROP in its netns.) */
  iptables?: boolean;
  /** More dockerd arguments (quoted, never interpreted by the shell). */
  extraArgs?: readonly string[];
  /** Wait this long for the API to answer. Default 30000. */
  startTimeoutMs?: number;
  /** After SIGTERM, wait this long before SIGKILL. Default 10000. */
  stopTimeoutMs?: number;
  /** Run dockerd under docker-init (tini -s -p SIGTERM). Default: true when docker-init is installed. */
  init?: boolean;
  /** Cgroup parent for containers. Default `/<name>` (removed by stop()). */
  cgroupParent?: string;
}

export interface DockerdHandle {
  readonly name: string;
  readonly netns: string;
  /** True when startDockerd created the netns (stop() deletes it). */
  readonly ownsNetns: boolean;
  readonly socketPath: string;
  /** `unix:///run/<name>/docker.sock` — for `docker -H` / DOCKER_HOST / dockerode. */
  readonly host: string;
  /** Host path of the daemon's /run/docker/plugins: a legacy plugin puts its socket here. */
  readonly pluginDir: string;
  readonly runDir: string;
  readonly execRoot: string;
  readonly dataRoot: string;
  readonly logPath: string;
  readonly cgroupParent: string;
  /** dockerd's pid. */
  readonly pid: number;
  /** e.g. "mnt:[4026532386]": dockerd's private mount namespace. */
  readonly mountNs: string;
  /** e.g. "net:[4026532317]". */
  readonly netNs: string;
  /** Milliseconds from spawn until the API answered. */
  readonly startMs: number;
  /** `docker -H unix://<socket> ...args`; rejects with stderr on failure. */
  docker(args: readonly string[], opts?: RunOptions): Promise<RunResult>;
  /** The daemon log (after stop(): the copy taken before its directory was removed). */
  logs(maxBytes?: number): Promise<string>;
  /** Pid of the containerd dockerd supervises (from its pidfile), or null. */
  containerdPid(): Promise<number | null>;
  /** Live processes belonging to this daemon: dockerd, containerd, shims, containers, init. */
  processes(): Promise<number[]>;
  /**
   * Stop everything and remove every trace: containers are killed, dockerd gets SIGTERM (SIGKILL
   * after stopTimeoutMs), leftover processes of the daemon are killed, mounts under the roots
   * unmounted, cgroups removed, directories removed, the netns deleted if owned. Idempotent; all
   * steps run even when one fails; rejects with an AggregateError listing the failed steps.
   */
  stop(): Promise<void>;
  readonly stopped: boolean;
}

const DOCKER_INIT = '/usr/bin/docker-init';

function shq(s: string): string {
  return `'${s.replace(/'/g, `'\\''`)}'`;
}

function dockerEnv(): NodeJS.ProcessEnv {
  const env = { ...process.env };
  delete env.DOCKER_HOST;
  delete env.DOCKER_CONTEXT;
  delete env.DOCKER_TLS_VERIFY;
  delete env.DOCKER_CERT_PATH;
  return env;
}

/** GET /_ping on a unix socket; true on "OK". */
function ping(socketPath: string, timeoutMs = 2000): Promise<boolean> {
  return new Promise((resolve) => {
    const req = request({ socketPath, path: '/_ping', method: 'GET', timeout: timeoutMs }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', () => resolve(res.statusCode === 200 && body.trim() === 'OK'));
      res.on('error', () => resolve(false));
    });
    req.on('timeout', () => req.destroy());
    req.on('error', () => resolve(false));
    req.end();
  });
}

async function exists(path: string): Promise<boolean> {
  try {
    await access(path, fsc.F_OK);
    return true;
  } catch {
    return false;
  }
}

async function readPid(path: string): Promise<number | null> {
  try {
    const n = Number((await readFile(path, 'utf8')).trim());
    return Number.isInteger(n) && n > 0 ? n : null;
  } catch {
    return null;
  }
}

/** Unescape a /proc/mounts field (\040 etc.). */
function unescapeMount(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));
}

/** Mount points in this (the host's) mount namespace at or under any of roots, deepest first. */
export async function mountsUnder(roots: readonly string[]): Promise<string[]> {
  const text = await readFile('/proc/self/mounts', 'utf8');
  const out: string[] = [];
  for (const line of text.split('\n')) {
    const mp = line.split(' ')[1];
    if (mp === undefined) continue;
    const p = unescapeMount(mp);
    if (roots.some((r) => p === r || p.startsWith(`${r}/`))) out.push(p);
  }
  return [...new Set(out)].sort((a, b) => b.length - a.length);
}

/** Mount points of all cgroup hierarchies (v1 and v2). */
async function cgroupMounts(): Promise<string[]> {
  const text = await readFile('/proc/self/mounts', 'utf8');
  const out: string[] = [];
  for (const line of text.split('\n')) {
    const f = line.split(' ');
    if ((f[2] === 'cgroup' || f[2] === 'cgroup2') && f[1]) out.push(unescapeMount(f[1]));
  }
  return out;
}

/** Existing cgroup directories for `parent` (an absolute cgroup path) in every hierarchy. */
export async function cgroupDirs(parent: string): Promise<string[]> {
  const out: string[] = [];
  for (const mp of await cgroupMounts()) {
    const dir = `${mp}${parent}`;
    if (await exists(dir)) out.push(dir);
  }
  return out;
}

/** All directories of a cgroup tree, deepest first. */
async function cgroupTree(dir: string): Promise<string[]> {
  const out: string[] = [];
  const walk = async (d: string): Promise<void> => {
    let entries;
    try {
      entries = await readdir(d, { withFileTypes: true });
    } catch {
      return;
    }
    for (const e of entries) if (e.isDirectory()) await walk(`${d}/${e.name}`);
    out.push(d);
  };
  await walk(dir);
  return out;
}

/** Kill every process in the cgroup trees and remove them (retrying while they drain). */
async function removeCgroups(parent: string, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const dirs = await cgroupDirs(parent);
    if (dirs.length === 0) return;
    let lastErr: unknown;
    for (const top of dirs) {
      for (const d of await cgroupTree(top)) {
        try {
          const procs = (await readFile(`${d}/cgroup.procs`, 'utf8')).split('\n').filter(Boolean).map(Number);
          for (const p of procs) signal(p, 'SIGKILL');
        } catch {
          /* gone */
        }
        try {
          await rmdir(d);
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code !== 'ENOENT') lastErr = err;
        }
      }
    }
    if (Date.now() >= deadline) {
      const left = await cgroupDirs(parent);
      if (left.length === 0) return;
      throw new Error(`cannot remove cgroups ${left.join(', ')}: ${(lastErr as Error | undefined)?.message ?? '?'}`);
    }
    await sleep(100);
  }
}

/** Processes in mount ns `mnt` and net ns `net` (the daemon's family), plus their descendants. */
async function familyOf(mnt: string, net: string, extraRoots: readonly number[]): Promise<number[]> {
  const roots: number[] = [];
  for (const pid of await listPids()) {
    if (pid === process.pid) continue;
    if ((await nsOf(pid, 'mnt')) !== mnt) continue;
    if ((await nsOf(pid, 'net')) !== net) continue;
    if (await isAlive(pid)) roots.push(pid);
  }
  for (const p of extraRoots) if (!roots.includes(p) && (await isAlive(p))) roots.push(p);
  return [...roots, ...(await descendants(roots))];
}

let hostDirsReady: Promise<void> | undefined;

/** Mount targets that must exist in the host mount namespace. */
function ensureHostDirs(): Promise<void> {
  hostDirsReady ??= (async () => {
    await mkdir('/run/docker/plugins', { recursive: true });
    await mkdir('/run/containerd', { recursive: true });
    await mkdir('/etc/docker', { recursive: true });
  })();
  return hostDirsReady;
}

/** Unmount everything the host sees under roots (lazily if busy). */
async function unmountUnder(roots: readonly string[]): Promise<void> {
  for (const mp of await mountsUnder(roots)) {
    try {
      await run(['umount', mp]);
    } catch {
      await run(['umount', '-l', mp]);
    }
  }
  const left = await mountsUnder(roots);
  if (left.length) throw new Error(`still mounted: ${left.join(', ')}`);
}

/** Default daemon names: `dkr-<pid of the test process>-<n>`. */
const DEFAULT_NAME_RE = /^dkr-(\d+)-\d+$/;

/**
 * Remove what daemons with default names left behind when their test process died without
 * stop() (crash, SIGKILL): for each `dkr-<pid>-<n>` whose <pid> is not alive, kill the processes
 * in its netns that are not in our mount namespace (dockerd, containerd, shims, containers' parents)
 * and their descendants, remove its cgroups, mounts, directories and netns. Returns the names swept.
 * startDockerd() runs it once per process.
 */
export async function sweepStaleDaemons(): Promise<string[]> {
  const names = new Set<string>();
  const add = (n: string): void => {
    if (DEFAULT_NAME_RE.test(n)) names.add(n);
  };
  const ls = (dir: string): Promise<string[]> => readdir(dir).catch(() => [] as string[]);
  for (const n of await ls('/run')) add(n);
  for (const n of await ls('/run/netns')) add(n);
  for (const n of await ls('/var/lib')) if (n.startsWith('docker-')) add(n.slice('docker-'.length));
  for (const mp of await cgroupMounts()) for (const n of await ls(mp)) add(n);

  const swept: string[] = [];
  const errors: Error[] = [];
  const ourMnt = await nsOf(process.pid, 'mnt');
  for (const name of names) {
    const owner = Number(DEFAULT_NAME_RE.exec(name)?.[1]);
    if (owner === process.pid || (await isAlive(owner))) continue;
    try {
      if (await netnsExists(name)) {
        const net = `net:[${await netnsInode(name)}]`;
        const roots: number[] = [];
        for (const pid of await listPids()) {
          if ((await nsOf(pid, 'net')) === net && (await nsOf(pid, 'mnt')) !== ourMnt && (await isAlive(pid))) roots.push(pid);
        }
        const all = [...roots, ...(await descendants(roots))];
        for (const p of all) signal(p, 'SIGKILL');
        await waitGone(all, 5000);
      }
      await removeCgroups(`/${name}`);
      await unmountUnder([`/run/${name}`, `/var/lib/docker-${name}`]);
      await rm(`/run/${name}`, { recursive: true, force: true, maxRetries: 5 });
      await rm(`/var/lib/docker-${name}`, { recursive: true, force: true, maxRetries: 5 });
      await deleteNetns(name);
      swept.push(name);
    } catch (err) {
      errors.push(new Error(`sweeping ${name}: ${(err as Error).message}`, { cause: err }));
    }
  }
  if (errors.length) throw new AggregateError(errors, errors.map((e) => e.message).join('; '));
  return swept;
}

let staleSwept: Promise<void> | undefined;

export async function startDockerd(opts: StartDockerdOptions = {}): Promise<DockerdHandle> {
  staleSwept ??= sweepStaleDaemons().then(
    (names) => {
      if (names.length) console.error(`dockerd harness: removed leftovers of dead test processes: ${names.join(' ')}`);
    },
    (err: Error) => console.error(`dockerd harness: sweeping leftovers failed: ${err.message}`),
  );
  await staleSwept;
  const name = opts.name ?? uniqueName('dkr');
  assertName(name, 'daemon name');
  if (opts.netns !== undefined) assertName(opts.netns, 'netns name');
  const cgroupParent = opts.cgroupParent ?? `/${name}`;
  if (!/^(\/[a-zA-Z0-9_.-]+)+$/.test(cgroupParent)) throw new Error(`invalid cgroupParent ${cgroupParent}`);
  const init = opts.init ?? (await exists(DOCKER_INIT));
  const startTimeoutMs = opts.startTimeoutMs ?? 30_000;
  const stopTimeoutMs = opts.stopTimeoutMs ?? 10_000;

  const runDir = `/run/${name}`;
  const pluginDir = `${runDir}/plugins`;
  const execRoot = `${runDir}/exec`;
  const runDockerDir = `${runDir}/mnt/run-docker`;
  const runContainerdDir = `${runDir}/mnt/run-containerd`;
  const etcDockerDir = `${runDir}/mnt/etc-docker`;
  const dataRoot = `/var/lib/docker-${name}`;
  const socketPath = `${runDir}/docker.sock`;
  const pidFile = `${runDir}/docker.pid`;
  const logPath = `${runDir}/dockerd.log`;
  const configFile = `${runDir}/daemon.json`;

  if (await exists(runDir)) throw new Error(`${runDir} already exists: another daemon named ${name}, or a leftover`);
  if (await exists(dataRoot)) throw new Error(`${dataRoot} already exists: another daemon named ${name}, or a leftover`);

  // --- state shared with teardown ---
  let ownsNetns = false;
  const netns = opts.netns ?? name;
  let child: ChildProcess | undefined;
  let childExited = false;
  let dockerdPid = 0;
  let dockerdStart = 0;
  let mountNs = '';
  let netNs = '';
  let savedLog: string | undefined;
  let stopPromise: Promise<void> | undefined;

  const docker = (args: readonly string[], o: RunOptions = {}): Promise<RunResult> =>
    run(['docker', '-H', `unix://${socketPath}`, ...args], { env: dockerEnv(), ...o });

  const logs = async (maxBytes = 1 << 20): Promise<string> => {
    let text = savedLog;
    if (text === undefined) {
      try {
        text = await readFile(logPath, 'utf8');
      } catch {
        text = '';
      }
    }
    return text.length > maxBytes ? text.slice(text.length - maxBytes) : text;
  };

  const dockerdAlive = async (): Promise<boolean> => {
    if (!dockerdPid) return false;
    const st = await procStat(dockerdPid);
    return st !== null && st.state !== 'Z' && st.starttime === dockerdStart;
  };

  /** Find dockerd (pidfile) and its namespaces; also used by teardown after a failed start. */
  const identify = async (): Promise<void> => {
    if (!dockerdPid && child?.pid) {
      const pid = await readPid(pidFile);
      const st = pid === null ? null : await procStat(pid);
      if (pid !== null && st && st.comm === 'dockerd' && (pid === child.pid || st.ppid === child.pid)) {
        dockerdPid = pid;
        dockerdStart = st.starttime;
      }
    }
    const probe = dockerdPid && (await dockerdAlive()) ? dockerdPid : !childExited ? child?.pid : undefined;
    if (!mountNs && probe) {
      const m = await nsOf(probe, 'mnt');
      if (m && m !== (await nsOf(process.pid, 'mnt'))) mountNs = m;
    }
    if (!netNs && (await netnsExists(netns))) netNs = `net:[${await netnsInode(netns)}]`;
  };

  const processes = async (): Promise<number[]> => {
    const extra: number[] = [];
    if (child?.pid && !childExited) extra.push(child.pid);
    if (await dockerdAlive()) extra.push(dockerdPid);
    if (!mountNs || !netNs) return extra.filter((p, i) => extra.indexOf(p) === i);
    return familyOf(mountNs, netNs, extra);
  };

  const teardown = async (): Promise<void> => {
    const errors: Error[] = [];
    const step = async (what: string, fn: () => Promise<void>): Promise<void> => {
      try {
        await fn();
      } catch (err) {
        errors.push(new Error(`${name}: ${what}: ${(err as Error).message}`, { cause: err }));
      }
    };

    await identify().catch(() => {});

    // 1. Kill containers first (a graceful daemon shutdown waits 10 s per container that
    //    ignores SIGTERM, e.g. `sleep` as pid 1). Best effort: the daemon may be wedged.
    if (await dockerdAlive()) {
      try {
        const ids = (await docker(['ps', '-q'], { timeoutMs: 5000 })).stdout.split(/\s+/).filter(Boolean);
        if (ids.length) await docker(['kill', ...ids], { timeoutMs: 10_000 });
      } catch {
        /* the SIGTERM/SIGKILL below handles it */
      }
    }

    // 2. SIGTERM dockerd, SIGKILL after stopTimeoutMs.
    await step('stop dockerd', async () => {
      if (await dockerdAlive()) {
        signal(dockerdPid, 'SIGTERM');
        const deadline = Date.now() + stopTimeoutMs;
        while ((await dockerdAlive()) && Date.now() < deadline) await sleep(50);
        if (await dockerdAlive()) {
          signal(dockerdPid, 'SIGKILL');
          const d2 = Date.now() + 5000;
          while ((await dockerdAlive()) && Date.now() < d2) await sleep(50);
          if (await dockerdAlive()) throw new Error(`dockerd pid ${dockerdPid} survives SIGKILL`);
        }
      }
      // The spawned child (docker-init, or dockerd itself): must exit now.
      if (child?.pid && !childExited) {
        const d3 = Date.now() + 2000;
        while (!childExited && Date.now() < d3) await sleep(20);
        if (!childExited) {
          signal(child.pid, 'SIGKILL');
          const d4 = Date.now() + 5000;
          while (!childExited && Date.now() < d4) await sleep(20);
          if (!childExited) throw new Error(`spawned pid ${child.pid} does not exit`);
        }
      }
    });

    // 3. Anything left of the daemon's family: containerd (if dockerd died without stopping it),
    //    containerd-shims (they outlive dockerd by design) and container processes.
    await step('kill leftover processes', async () => {
      for (let round = 0; round < 3; round++) {
        const left = await processes();
        if (left.length === 0) return;
        for (const p of left) signal(p, 'SIGKILL');
        await waitGone(left, 5000);
      }
      const left = await processes();
      if (left.length) throw new Error(`processes survive SIGKILL: ${left.join(' ')}`);
    });

    // 4. Container processes outside the family (none expected) and the cgroup tree.
    await step('remove cgroups', () => removeCgroups(cgroupParent));

    // 5. Mounts visible on the host under our roots (dockerd's own mounts lived in its private
    //    mount namespace and vanished with it; this catches anything propagated or made by tests).
    await step('unmount', () => unmountUnder([runDir, dataRoot]));

    // 6. Files.
    savedLog = await logs().catch(() => '');
    await step('remove directories', async () => {
      for (const dir of [runDir, dataRoot]) await rm(dir, { recursive: true, force: true, maxRetries: 5 });
    });

    // 7. The netns, if ours.
    if (ownsNetns) await step('delete netns', () => deleteNetns(netns));

    if (errors.length) throw new AggregateError(errors, errors.map((e) => e.message).join('; '));
  };

  const stop = (): Promise<void> => (stopPromise ??= teardown());

  const tail = async (lines = 40): Promise<string> => (await logs()).split('\n').slice(-lines).join('\n');

  try {
    // --- netns and directories ---
    if (opts.netns === undefined) {
      if (await netnsExists(netns)) throw new Error(`netns ${netns} already exists`);
      await createNetns({ name: netns });
      ownsNetns = true;
    } else if (!(await netnsExists(netns))) {
      throw new Error(`netns ${netns} does not exist`);
    }
    await ensureHostDirs();
    for (const d of [pluginDir, execRoot, `${runDockerDir}/plugins`, runContainerdDir, etcDockerDir, dataRoot]) {
      await mkdir(d, { recursive: true, mode: 0o711 });
    }
    await writeFile(configFile, '{}\n');

    // --- spawn ---
    const args = [
      `--config-file=${configFile}`,
      `--data-root=${dataRoot}`,
      `--exec-root=${execRoot}`,
      `--host=unix://${socketPath}`,
      `--pidfile=${pidFile}`,
      '--bridge=none',
      `--iptables=${opts.iptables ? 'true' : 'false'}`,
      '--ip-masq=false',
      `--cgroup-parent=${cgroupParent}`,
      ...(opts.extraArgs ?? []),
    ];
    const prog = init ? [DOCKER_INIT, '-s', '-p', 'SIGTERM', '--', 'dockerd'] : ['dockerd'];
    const script = [
      'set -e',
      'mount --make-rprivate /',
      `mount --bind ${shq(runDockerDir)} /run/docker`,
      `mount --bind ${shq(pluginDir)} /run/docker/plugins`,
      `mount --bind ${shq(runContainerdDir)} /run/containerd`,
      `mount --bind ${shq(etcDockerDir)} /etc/docker`,
      `exec nsenter ${shq(`--net=${netnsPath(netns)}`)} -- ${[...prog, ...args].map(shq).join(' ')}`,
    ].join('\n');

    const logFile = await open(logPath, 'a');
    const t0 = performance.now();
    try {
      child = spawn('unshare', ['-m', 'sh', '-c', script], {
        stdio: ['ignore', logFile.fd, logFile.fd],
      });
    } finally {
      await logFile.close();
    }
    const spawnError = new Promise<Error>((resolve) => child?.once('error', resolve));
    child.once('exit', () => {
      childExited = true;
    });
    child.unref();
    if (child.pid === undefined) throw await spawnError;

    // --- wait for the API ---
    const deadline = Date.now() + startTimeoutMs;
    for (;;) {
      if (await ping(socketPath)) break;
      if (childExited) throw new Error(`dockerd exited during start (exit code ${child.exitCode ?? child.signalCode})`);
      if (Date.now() >= deadline) throw new Error(`dockerd did not answer on ${socketPath} within ${startTimeoutMs} ms`);
      await sleep(25);
    }
    const startMs = performance.now() - t0;

    // --- identify dockerd and check it is where it should be ---
    await identify();
    if (!dockerdPid) throw new Error(`no dockerd pid in ${pidFile} (child ${child.pid})`);
    const pid = dockerdPid;
    const want = `net:[${await netnsInode(netns)}]`;
    const actualNet = await nsOf(pid, 'net');
    if (actualNet !== want) throw new Error(`dockerd is in ${actualNet}, expected netns ${netns} (${want})`);
    if (!mountNs || mountNs !== (await nsOf(pid, 'mnt'))) throw new Error('dockerd is not in a private mount namespace');
    // The docker CLI talks to it.
    await docker(['info', '--format', '{{.ID}}'], { timeoutMs: 15_000 });

    const handle: DockerdHandle = {
      name,
      netns,
      ownsNetns,
      socketPath,
      host: `unix://${socketPath}`,
      pluginDir,
      runDir,
      execRoot,
      dataRoot,
      logPath,
      cgroupParent,
      pid,
      mountNs,
      netNs,
      startMs,
      docker,
      logs,
      containerdPid: () => readPid(`${execRoot}/containerd/containerd.pid`),
      processes,
      stop,
      get stopped() {
        return stopPromise !== undefined;
      },
    };
    return handle;
  } catch (err) {
    const log = await tail().catch(() => '');
    const cleanupErr = await stop().then(
      () => '',
      (e: Error) => `\n(cleanup after failed start also failed: ${e.message})`,
    );
    throw new Error(`startDockerd(${name}): ${(err as Error).message}${cleanupErr}\n--- dockerd log (tail) ---\n${log}`, {
      cause: err,
    });
  }
}

/** Whether this machine can run the harness (root, dockerd, unshare, nsenter). Reason if not. */
export async function dockerdUnavailable(): Promise<string | undefined> {
  if (process.getuid?.() !== 0) return 'needs root';
  for (const bin of ['dockerd', 'docker', 'unshare', 'nsenter', 'ip', 'containerd']) {
    if (!(await which(bin))) return `${bin} not installed`;
  }
  return undefined;
}
