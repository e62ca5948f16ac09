// Small process utilities for tests: run a command (argv, never a shell), poll until a condition
// holds, and a cleanup stack for after() hooks.

import { execFile } from 'node:child_process';
import { constants as fsc } from 'node:fs';
import { access, readdir, readFile, readlink } from 'node:fs/promises';
import type { Readable } from 'node:stream';

export interface RunOptions {
  /** Data written to the child's stdin (then stdin is closed). A stream is piped. */
  input?: string | Buffer | Readable;
  /** Kill the child (SIGKILL) after this many ms. Default: no timeout. */
  timeoutMs?: number;
  env?: NodeJS.ProcessEnv;
  cwd?: string;
  /** Default 64 MiB. */
  maxBuffer?: number;
}

export interface RunResult {
  stdout: string;
  stderr: string;
}

/** Thrown by run() when the command cannot start, exits non-zero, is killed or times out. */
export class RunError extends Error {
  constructor(
    readonly argv: readonly string[],
    /** Exit code, or null when killed by a signal / not started. */
    readonly code: number | null,
    readonly signal: string | null,
    readonly stdout: string,
    readonly stderr: string,
    detail: string,
  ) {
    super(`${argv.join(' ')}: ${detail}${stderr.trim() ? `\n${stderr.trim()}` : ''}`);
    this.name = 'RunError';
  }
}

/**
 * Run argv[0] with argv[1..] (execFile, no shell). Resolves with stdout/stderr on exit 0;
 * rejects with a RunError carrying stderr otherwise.
 */
export function run(argv: readonly string[], opts: RunOptions = {}): Promise<RunResult> {
  const [file, ...args] = argv;
  if (file === undefined) return Promise.reject(new Error('run: empty argv'));
  return new Promise<RunResult>((resolve, reject) => {
    const child = execFile(
      file,
      args,
      {
        encoding: 'utf8',
        maxBuffer: opts.maxBuffer ?? 64 * 1024 * 1024,
        timeout: opts.timeoutMs ?? 0,
        killSignal: 'SIGKILL',
        env: opts.env ?? process.env,
        cwd: opts.cwd,
      },
      (err, stdout, stderr) => {
        if (!err) {
          resolve({ stdout, stderr });
          return;
        }
        const e = err as NodeJS.ErrnoException & { code?: unknown; killed?: boolean; signal?: NodeJS.Signals | null };
        const code = typeof e.code === 'number' ? e.code : null;
        const signal = e.signal ?? null;
        let detail: string;
        if (typeof e.code === 'string') detail = `cannot run (${e.code})`;
        else if (e.killed && opts.timeoutMs) detail = `timed out after ${opts.timeoutMs} ms`;
        else if (signal) detail = `killed by ${signal}`;
        else detail = `exit code ${code ?? '?'}`;
        reject(new RunError(argv, code, signal, stdout ?? '', stderr ?? '', detail));
      },
    );
    const stdin = child.stdin;
    if (!stdin) return;
    // A child that exits without reading its input gives EPIPE; the exit status tells the story.
    stdin.on('error', () => {});
    const input = opts.input;
    if (input === undefined) stdin.end();
    else if (typeof input === 'string' || Buffer.isBuffer(input)) stdin.end(input);
    else input.pipe(stdin);
  });
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/**
 * Poll predicate every intervalMs until it returns a truthy value (which is returned). A throwing
 * predicate counts as "not yet"; its last error is quoted when the wait times out.
 */
export async function waitFor<T>(
  predicate: () => T | Promise<T>,
  timeoutMs: number,
  what: string,
  intervalMs = 100,
): Promise<NonNullable<T>> {
  const deadline = Date.now() + timeoutMs;
  let lastErr: unknown;
  for (;;) {
    try {
      const v = await predicate();
      if (v) return v as NonNullable<T>;
    } catch (err) {
      lastErr = err;
    }
    if (Date.now() >= deadline) {
      const why = lastErr instanceof Error ? `: last error: ${lastErr.message}` : '';
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${why}`);
    }
    await sleep(Math.min(intervalMs, Math.max(1, deadline - Date.now())));
  }
}

type UndoFn = () => unknown | Promise<unknown>;

/**
 * A stack of undo actions. Register them as resources are created; run() undoes them in reverse
 * order, never throws, and returns (and remembers) the errors. Safe to run() more than once:
 * each action runs once.
 */
export class Cleanup {
  private readonly stack: { what: string; fn: UndoFn }[] = [];
  readonly errors: Error[] = [];

  constructor(private readonly log: (msg: string) => void = (m) => console.error(m)) {}

  /** Register an undo action; returns a function that runs it now (and unregisters it). */
  add(what: string, fn: UndoFn): () => Promise<void> {
    const entry = { what, fn };
    this.stack.push(entry);
    return async () => {
      const i = this.stack.indexOf(entry);
      if (i < 0) return;
      this.stack.splice(i, 1);
      await entry.fn();
    };
  }

  get size(): number {
    return this.stack.length;
  }

  async run(): Promise<Error[]> {
    const errs: Error[] = [];
    for (let entry = this.stack.pop(); entry; entry = this.stack.pop()) {
      try {
        await entry.fn();
      } catch (err) {
        const e = err instanceof Error ? err : new Error(String(err));
        const wrapped = new Error(`cleanup "${entry.what}" failed: ${e.message}`, { cause: e });
        errs.push(wrapped);
        this.log(wrapped.message);
      }
    }
    this.errors.push(...errs);
    return errs;
  }
}

// ---- /proc helpers -------------------------------------------------------------------------

export interface ProcInfo {
  pid: number;
  ppid: number;
  /** One-letter state from /proc/<pid>/stat ('Z' = zombie). */
  state: string;
  comm: string;
  /** Start time in clock ticks since boot (field 22): with pid, identifies a process. */
  starttime: number;
}

/** Parse /proc/<pid>/stat; null if the process is gone. */
export async function procStat(pid: number): Promise<ProcInfo | null> {
  let text: string;
  try {
    text = await readFile(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return null;
  }
  // comm is in parentheses and may itself contain spaces or parentheses.
  const open = text.indexOf('(');
  const close = text.lastIndexOf(')');
  const rest = text.slice(close + 2).split(' ');
  return {
    pid,
    comm: text.slice(open + 1, close),
    state: rest[0] ?? '?',
    ppid: Number(rest[1] ?? 0),
    starttime: Number(rest[19] ?? 0),
  };
}

/** True if the process exists and is not a zombie. */
export async function isAlive(pid: number): Promise<boolean> {
  const st = await procStat(pid);
  return st !== null && st.state !== 'Z' && st.state !== 'X';
}

export async function listPids(): Promise<number[]> {
  const names = await readdir('/proc');
  return names.filter((n) => /^\d+$/.test(n)).map(Number);
}

/** readlink /proc/<pid>/ns/<kind>, e.g. "mnt:[4026532386]"; null if unavailable. */
export async function nsOf(pid: number, kind: 'mnt' | 'net' | 'pid'): Promise<string | null> {
  try {
    return await readlink(`/proc/${pid}/ns/${kind}`);
  } catch {
    return null;
  }
}

/** All live (non-zombie) descendants of the given roots, roots excluded. */
export async function descendants(roots: Iterable<number>): Promise<number[]> {
  const children = new Map<number, number[]>();
  for (const pid of await listPids()) {
    const st = await procStat(pid);
    if (!st || st.state === 'Z') continue;
    const list = children.get(st.ppid) ?? [];
    list.push(pid);
    children.set(st.ppid, list);
  }
  const out: number[] = [];
  const queue = [...roots];
  const seen = new Set(queue);
  for (let p = queue.shift(); p !== undefined; p = queue.shift()) {
    for (const c of children.get(p) ?? []) {
      if (seen.has(c)) continue;
      seen.add(c);
      out.push(c);
      queue.push(c);
    }
  }
  return out;
}

/** Send a signal, ignoring "no such process". */
export function signal(pid: number, sig: NodeJS.Signals): void {
  try {
    process.kill(pid, sig);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ESRCH') throw err;
  }
}

/** Wait until none of pids is alive (zombies count as gone). Returns the ones still alive. */
export async function waitGone(pids: readonly number[], timeoutMs: number): Promise<number[]> {
  const deadline = Date.now() + timeoutMs;
  let alive = [...pids];
  for (;;) {
    const next: number[] = [];
    for (const p of alive) if (await isAlive(p)) next.push(p);
    alive = next;
    if (alive.length === 0 || Date.now() >= deadline) return alive;
    await sleep(50);
  }
}

/** Absolute path of an executable found on PATH, or null. */
export async function which(bin: string): Promise<string | null> {
  for (const dir of (process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin').split(':')) {
    if (!dir) continue;
    try {
      await access(`${dir}/${bin}`, fsc.X_OK);
      return `${dir}/${bin}`;
    } catch {
      /* next */
    }
  }
  return null;
}
