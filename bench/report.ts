/** Shared by the benchmarks: percentiles, machine load, and writing one's own section of BENCHMARKS.md. */
import { existsSync, readFileSync } from 'node:fs';
import { readFile, writeFile } from 'node:fs/promises';
import { run } from '../test/helpers/proc.js';

/** Nearest-rank percentile (p in 0..100); NaN for an empty sample. */
export function pct(sample: readonly number[], p: number): number {
  if (sample.length === 0) return NaN;
  const s = [...sample].sort((a, b) => a - b);
  const rank = Math.max(1, Math.ceil((p / 100) * s.length));
  return s[Math.min(rank, s.length) - 1] ?? NaN;
}

/** The 1/5/15-minute load averages, for reading a run's numbers in context. */
export function loadavg(): string {
  try {
    return readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ');
  } catch {
    return '?';
  }
}

/**
 * Replaces the text between `begin` and `end` markers in `out` with `section` (which carries the
 * markers itself); appends it when absent; starts the file with `header` when it does not exist.
 * Other benchmarks' sections are left as they are.
 */
export async function writeSection(out: string, section: string, markers: { begin: string; end: string; header: string }): Promise<void> {
  let text = existsSync(out) ? await readFile(out, 'utf8') : '';
  const b = text.indexOf(markers.begin);
  const e = text.indexOf(markers.end);
  if (b >= 0 && e > b) text = `${text.slice(0, b)}${section}${text.slice(e + markers.end.length)}`;
  else if (text.trim()) text = `${text.trimEnd()}\n\n${section}\n`;
  else text = `${markers.header}\n${section}\n`;
  await writeFile(out, text.endsWith('\n') ? text : `${text}\n`);
}

/** A command-line integer option, at least `min`; a clear error otherwise. */
export function intOption(name: string, value: string, min: number): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < min) throw new Error(`--${name} must be an integer >= ${min}, got ${JSON.stringify(value)}`);
  return n;
}

/** A command's output (stdout, else stderr), trimmed; '?' when it cannot run. For version lines. */
export async function tryRun(argv: string[]): Promise<string> {
  try {
    const r = await run(argv, { timeoutMs: 10_000 });
    return r.stdout.trim() || r.stderr.trim() || '?';
  } catch {
    return '?';
  }
}

/** The CPU model from /proc/cpuinfo ('?' when unknown). */
export function cpuModel(): string {
  try {
    const text = readFileSync('/proc/cpuinfo', 'utf8');
    return /^model name\s*:\s*(.+)$/m.exec(text)?.[1]?.trim() ?? /^Hardware\s*:\s*(.+)$/m.exec(text)?.[1]?.trim() ?? '?';
  } catch {
    return '?';
  }
}

/** The commit the benchmark ran from, marked when the work tree has uncommitted changes; '?' outside git. */
export async function buildCommit(): Promise<string> {
  const head = await tryRun(['git', '-C', process.cwd(), 'rev-parse', '--short', 'HEAD']);
  if (head === '?') return '?';
  const status = await run(['git', '--no-optional-locks', '-C', process.cwd(), 'status', '--porcelain', '--untracked-files=no'], { timeoutMs: 10_000 }).then(
    (r) => r.stdout.trim(),
    () => '',
  );
  return `${head}${status ? ' (with uncommitted changes)' : ''}`;
}
