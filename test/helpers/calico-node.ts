/**
 * Runs a real `calico-ts node run` process for a test, inside a network namespace, with its plugin
 * socket in a given plugin directory (a test dockerd's /run/docker/plugins). Stopped by PID.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, openSync, closeSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { waitFor } from './proc.js';

export const CLI = fileURLToPath(new URL('../../plugin/cli/main.js', import.meta.url));

export interface CalicoNodeOptions {
  netns: string;
  nodeName: string;
  etcdEndpoint: string;
  pluginDir: string;
  dockerSocket: string;
  runDir: string;
  env?: Record<string, string>;
}

export interface CalicoNodeHandle {
  readonly socketPath: string;
  readonly logPath: string;
  pid(): number | undefined;
  /** SIGTERM (graceful), waiting for exit. Idempotent. */
  stop(): Promise<void>;
  /** SIGKILL: a crash, leaving the kernel and etcd as they are. */
  kill(): Promise<void>;
  /** Start again after stop()/kill(), with the same configuration. */
  restart(): Promise<void>;
  log(): string;
}

export async function startCalicoNode(o: CalicoNodeOptions): Promise<CalicoNodeHandle> {
  mkdirSync(o.runDir, { recursive: true });
  const socketPath = join(o.pluginDir, 'calico-ts.sock');
  const logPath = join(o.runDir, 'node.log');
  let child: ChildProcess | undefined;
  let exited: Promise<void> = Promise.resolve();

  const launch = async (): Promise<void> => {
    // A killed node leaves its socket and status file behind: without removing them, the wait below
    // would see the dead node's files and return before the new one serves (on a loaded machine, seconds).
    rmSync(socketPath, { force: true });
    rmSync(join(o.runDir, 'status.json'), { force: true });
    const fd = openSync(logPath, 'a');
    child = spawn('nsenter', [`--net=/run/netns/${o.netns}`, process.execPath, CLI, 'node', 'run'], {
      stdio: ['ignore', fd, fd],
      env: {
        PATH: process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin',
        NODENAME: o.nodeName,
        ETCD_ENDPOINTS: o.etcdEndpoint,
        CALICO_TS_SOCKET: socketPath,
        DOCKER_HOST: `unix://${o.dockerSocket}`,
        CALICO_TS_RUN_DIR: o.runDir,
        LOG_LEVEL: 'debug',
        ...o.env,
      },
    });
    closeSync(fd);
    const c = child;
    exited = new Promise((resolve) => c.once('exit', () => resolve()));
    // An exit ends the wait at once (waitFor would treat a throw as "not yet").
    await waitFor(() => c.exitCode !== null || (existsSync(socketPath) && existsSync(join(o.runDir, 'status.json'))), 30_000, 'calico-ts node socket');
    if (c.exitCode !== null) throw new Error(`calico-ts node exited: ${readFileSync(logPath, 'utf8').slice(-2000)}`);
  };

  const signalAndWait = async (signal: NodeJS.Signals): Promise<void> => {
    const c = child;
    if (!c || c.exitCode !== null || c.signalCode !== null) return;
    c.kill(signal);
    const timer = setTimeout(() => c.kill('SIGKILL'), 10_000);
    await exited;
    clearTimeout(timer);
  };

  await launch();
  return {
    socketPath,
    logPath,
    pid: () => child?.pid,
    stop: async () => {
      await signalAndWait('SIGTERM');
      rmSync(socketPath, { force: true });
    },
    kill: () => signalAndWait('SIGKILL'),
    restart: async () => {
      await signalAndWait('SIGTERM');
      await launch();
    },
    log: () => (existsSync(logPath) ? readFileSync(logPath, 'utf8') : ''),
  };
}
