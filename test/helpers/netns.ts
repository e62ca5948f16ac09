// Named network namespaces for tests (`ip netns add`), entered with `nsenter --net=` — not
// `ip netns exec`, which remounts /sys and hides the cgroup mounts dockerd needs.

import { spawn, type ChildProcess, type SpawnOptions } from 'node:child_process';
import { stat } from 'node:fs/promises';
import { run, type RunOptions, type RunResult } from './proc.js';

export const NAME_RE = /^[a-z0-9-]+$/;

export function assertName(name: string, what = 'name'): void {
  if (!NAME_RE.test(name) || name.length > 48) {
    throw new Error(`invalid ${what} ${JSON.stringify(name)}: use 1-48 characters of [a-z0-9-]`);
  }
}

let counter = 0;

/** A name unique to this process: `<prefix>-<pid>-<n>`. */
export function uniqueName(prefix: string): string {
  const name = `${prefix}-${process.pid}-${++counter}`;
  assertName(name);
  return name;
}

export function netnsPath(name: string): string {
  assertName(name, 'netns name');
  return `/run/netns/${name}`;
}

export async function netnsExists(name: string): Promise<boolean> {
  try {
    await stat(netnsPath(name));
    return true;
  } catch {
    return false;
  }
}

/** Inode number of the namespace (matches the N in /proc/<pid>/ns/net -> "net:[N]"). */
export async function netnsInode(name: string): Promise<number> {
  return Number((await stat(netnsPath(name))).ino);
}

/** argv that runs `argv` inside the netns. */
export function inNetns(name: string, argv: readonly string[]): string[] {
  return ['nsenter', `--net=${netnsPath(name)}`, '--', ...argv];
}

/** Run a command inside the netns (nsenter --net), like run(). */
export function execInNetns(name: string, argv: readonly string[], opts?: RunOptions): Promise<RunResult> {
  return run(inNetns(name, argv), opts);
}

/** Spawn a long-running process inside the netns (nsenter execs it: the child pid is the process). */
export function spawnInNetns(name: string, argv: readonly string[], opts: SpawnOptions = {}): ChildProcess {
  const [file, ...args] = inNetns(name, argv);
  return spawn(file as string, args, opts);
}

/** Delete the netns; succeeds if it does not exist. */
export async function deleteNetns(name: string): Promise<void> {
  if (!(await netnsExists(name))) return;
  try {
    await run(['ip', 'netns', 'delete', name]);
  } catch (err) {
    if (await netnsExists(name)) throw err; // else: deleted concurrently by someone else
  }
}

export interface Netns {
  readonly name: string;
  readonly path: string;
  exec(argv: readonly string[], opts?: RunOptions): Promise<RunResult>;
  spawn(argv: readonly string[], opts?: SpawnOptions): ChildProcess;
  /** Idempotent. */
  delete(): Promise<void>;
}

/**
 * Create a network namespace (default name: `<prefix>-<pid>-<n>`, prefix "tns") with lo up.
 * Fails if it already exists.
 */
export async function createNetns(opts: { name?: string; prefix?: string } = {}): Promise<Netns> {
  const name = opts.name ?? uniqueName(opts.prefix ?? 'tns');
  assertName(name, 'netns name');
  await run(['ip', 'netns', 'add', name]);
  try {
    await run(['ip', '-n', name, 'link', 'set', 'lo', 'up']);
  } catch (err) {
    await deleteNetns(name).catch(() => {});
    throw err;
  }
  return {
    name,
    path: netnsPath(name),
    exec: (argv, o) => execInNetns(name, argv, o),
    spawn: (argv, o) => spawnInNetns(name, argv, o),
    delete: () => deleteNetns(name),
  };
}
