/**
 * The calico-ts node as a Docker managed plugin on a test dockerd: built once per process with
 * scripts/build-plugin.sh (into a temp dir), then `docker plugin create` / `set` / `enable` on each
 * daemon. The handle looks like a legacy node's (CalicoNodeHandle) so tests treat both alike:
 * stop = `docker plugin disable -f`, restart = `enable`, log = the plugin's lines in dockerd's log.
 */
import { execFile } from 'node:child_process';
import { existsSync, readFileSync, rmSync } from 'node:fs';
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import type { CalicoNodeHandle } from './calico-node.js';
import type { DockerdHandle } from './dockerd.js';
import { isAlive, signal, waitFor, waitGone } from './proc.js';

const execFileP = promisify(execFile);
const REPO = fileURLToPath(new URL('../../../', import.meta.url));
export const PLUGIN_NAME = 'calico-ts:latest';

let built: Promise<string> | undefined;

/** Builds the plugin (config.json + rootfs) once per process; removed when the process exits. */
export function buildManagedPlugin(): Promise<string> {
  return (built ??= (async () => {
    const dir = await mkdtemp(join(tmpdir(), 'calico-ts-plugin-'));
    process.once('exit', () => rmSync(dir, { recursive: true, force: true }));
    await execFileP(join(REPO, 'scripts/build-plugin.sh'), [], { cwd: REPO, env: { ...process.env, PLUGIN_BUILD_DIR: join(dir, 'build') }, timeout: 300_000 });
    return join(dir, 'build');
  })());
}

export interface ManagedPluginOptions {
  buildDir: string;
  nodeName: string;
  etcdEndpoint: string;
  /** Mounted as the host's /run: the node's run dir is `<hostRun>/calico-ts`. */
  hostRun: string;
  env?: Record<string, string>;
}

/** `docker plugin create` + `set` + `enable` on one daemon; resolves once Docker has activated it. */
export async function installManagedPlugin(dockerd: DockerdHandle, o: ManagedPluginOptions): Promise<CalicoNodeHandle> {
  const docker = async (...args: string[]) => (await dockerd.docker(args, { timeoutMs: 180_000 })).stdout.trim();
  const runDir = join(o.hostRun, 'calico-ts');
  await docker('plugin', 'create', PLUGIN_NAME, o.buildDir);
  const id = await docker('plugin', 'inspect', '-f', '{{.Id}}', PLUGIN_NAME);
  const settings = { NODENAME: o.nodeName, ETCD_ENDPOINTS: o.etcdEndpoint, LOG_LEVEL: 'debug', ...o.env };
  await docker(
    'plugin',
    'set',
    PLUGIN_NAME,
    ...Object.entries(settings).map(([k, v]) => `${k}=${v}`),
    `docker-socket.source=${dockerd.socketPath}`,
    `host-run.source=${o.hostRun}`,
  );
  const statusFile = join(runDir, 'status.json');
  const pid = (): number | undefined => {
    try {
      return (JSON.parse(readFileSync(statusFile, 'utf8')) as { pid: number }).pid;
    } catch {
      return undefined;
    }
  };
  const enable = async () => {
    rmSync(statusFile, { force: true });
    await docker('plugin', 'enable', PLUGIN_NAME);
    await waitFor(() => existsSync(statusFile), 30_000, 'managed plugin status file');
  };
  const disable = async () => {
    const p = pid();
    if ((await docker('plugin', 'inspect', '-f', '{{.Enabled}}', PLUGIN_NAME)) === 'true') await docker('plugin', 'disable', '-f', PLUGIN_NAME);
    if (p !== undefined) await waitGone([p], 10_000);
  };
  await enable();
  return {
    socketPath: '',
    logPath: dockerd.logPath,
    pid,
    stop: disable,
    kill: async () => {
      const p = pid();
      if (p !== undefined && (await isAlive(p))) {
        signal(p, 'SIGKILL');
        await waitGone([p], 10_000);
      }
    },
    restart: async () => {
      await disable();
      await enable();
    },
    // dockerd prefixes what a plugin prints with plugin=<id>; keep the node's JSON part.
    log: () =>
      existsSync(dockerd.logPath)
        ? readFileSync(dockerd.logPath, 'utf8')
            .split('\n')
            .filter((l) => l.includes(`plugin=${id}`))
            .join('\n')
        : '',
  };
}
