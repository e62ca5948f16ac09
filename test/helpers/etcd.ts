/**
 * Starts a real single-member etcd on loopback for a test, with a throwaway data dir, and stops it
 * (by PID) and removes the dir afterwards.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export interface EtcdHandle {
  endpoint: string;
  stop(): Promise<void>;
}

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      const port = typeof addr === 'object' && addr ? addr.port : 0;
      srv.close(() => resolve(port));
    });
  });
}

/** Runs argv inside a netns when given one (etcd must live where the node under test can reach it). */
const wrap = (netns: string | undefined, argv: string[]): string[] => (netns ? ['nsenter', `--net=/run/netns/${netns}`, ...argv] : argv);

async function healthy(endpoint: string, netns: string | undefined): Promise<boolean> {
  if (!netns) {
    try {
      return (await fetch(`${endpoint}/health`)).ok;
    } catch {
      return false;
    }
  }
  return new Promise((resolve) => {
    const [file, ...args] = wrap(netns, ['curl', '-fsS', '--max-time', '1', `${endpoint}/health`]);
    execFile(file!, args, (err) => resolve(!err));
  });
}

/** Starts etcd; with `netns`, inside that namespace (its loopback), reachable only from there. */
export async function startEtcd(options: { netns?: string } = {}): Promise<EtcdHandle> {
  const dataDir = mkdtempSync(join(tmpdir(), 'calico-ts-etcd-'));
  const clientPort = await freePort();
  const peerPort = await freePort();
  const endpoint = `http://127.0.0.1:${clientPort}`;
  const [file, ...prefixArgs] = wrap(options.netns, ['etcd']);
  const child: ChildProcess = spawn(
    file!,
    [
      ...prefixArgs,
      '--name', 'test',
      '--data-dir', dataDir,
      '--listen-client-urls', endpoint,
      '--advertise-client-urls', endpoint,
      '--listen-peer-urls', `http://127.0.0.1:${peerPort}`,
      '--initial-advertise-peer-urls', `http://127.0.0.1:${peerPort}`,
      '--initial-cluster', `test=http://127.0.0.1:${peerPort}`,
      '--log-level', 'error',
      '--logger', 'zap',
    ],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  );
  let stderr = '';
  child.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const stop = async (): Promise<void> => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
      await exited;
      clearTimeout(timer);
    }
    rmSync(dataDir, { recursive: true, force: true });
  };
  const deadline = Date.now() + 15_000;
  for (;;) {
    if (child.exitCode !== null) {
      await stop();
      throw new Error(`etcd exited early: ${stderr}`);
    }
    if (await healthy(endpoint, options.netns)) break;
    if (Date.now() > deadline) {
      await stop();
      throw new Error(`etcd did not become healthy: ${stderr}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  return { endpoint, stop };
}
