/**
 * BirdSupervisor: runs BIRD 2 as a supervised child of the node and applies configuration to it.
 *
 * Files, all under runDir (absolute paths are passed to BIRD):
 *   bird.conf           the configuration BIRD runs with (only ever replaced by an atomic rename)
 *   bird.conf.tmp       the candidate being checked with `bird -p -c`
 *   bird.conf.rejected  the last candidate BIRD refused (kept for the operator; line numbers match)
 *   bird.ctl            BIRD's control socket (`birdc -s`)
 *   bird.pid            BIRD's pid file (`-P`)
 * BIRD logs to stderr (`log stderr`, see render.ts); the supervisor forwards each line to our logger
 * at the matching level and keeps the last lines for error messages. No log file.
 *
 * The BIRD loop (Calico's confd): render → compare with what is running → `bird -p -c tmp` →
 * rename → `birdc configure`. Identical text and a BIRD that has loaded it: nothing is done
 * ('unchanged', no reload). A candidate BIRD rejects never replaces bird.conf, so a restarted BIRD
 * always comes up with the last good configuration.
 *
 * Supervision: `bird -f` (foreground) is our child. If it exits while we want it running, it is
 * started again after 200 ms, doubling on each quick failure (up to 30 s; a BIRD that ran for 10 s
 * resets the backoff). `stop()` sends SIGTERM (BIRD withdraws its kernel routes and says goodbye to
 * its peers), SIGKILL after 5 s, and waits for the exit.
 *
 * Recognising our own BIRD after a node restart: if the node died without stop() (SIGKILL, crash),
 * its BIRD keeps running, orphaned. We cannot supervise a process that is not our child (no exit
 * notification, no stderr), so on the first start the supervisor replaces it: it reads bird.pid,
 * and if that pid is alive, is a `bird` executable, and its command line carries `-s <our bird.ctl>`,
 * it is ours — SIGTERM, then SIGKILL after 3 s — and a fresh child is started. A pid that fails any
 * of those checks (reused pid, someone else's BIRD, another runDir) is never touched. The restart
 * costs one short session flap; the new BIRD prunes stale `proto bird` routes and re-learns them.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { CalicoError, CommandFailedError } from '../lib/errors.js';
import { ExecFileRunner, type CommandRunner } from '../lib/exec.js';
import { silentLogger, type Logger } from '../lib/log.js';
import { Mutex } from '../lib/mutex.js';
import { parseShowProtocols, peerStatuses, type BirdProtocolRow } from './status.js';
import type { PeerSession, PeerStatus } from './types.js';

/** BIRD refused a configuration (`bird -p` or `birdc configure`). The running configuration is unchanged. */
export class BirdConfigError extends CalicoError {
  readonly code = 'VALIDATION' as const;
  constructor(
    /** BIRD's own message, e.g. "…/bird.conf.tmp:12:3 syntax error, unexpected …". */
    readonly birdMessage: string,
    readonly rejectedPath: string,
  ) {
    super(
      `BIRD rejected the generated configuration: ${birdMessage}; BIRD keeps running with the previous ` +
        `configuration. The rejected file is ${rejectedPath}: check the BGP resources (calico-ts get bgppeers, ` +
        `bgpconfig, nodes) for the value it names.`,
    );
  }
}

/** BIRD cannot be reached on its control socket (or failed to start). */
export class BirdNotRunningError extends CalicoError {
  readonly code = 'COMMAND_FAILED' as const;
  constructor(reason: string, options?: { cause?: unknown }) {
    super(`BIRD is not running: ${reason}`, options);
  }
}

export type ApplyResult = 'unchanged' | 'reloaded' | 'started';

export interface BirdSupervisorOptions {
  runDir: string;
  runner?: CommandRunner;
  log?: Logger;
  birdBinary?: string;
  birdcBinary?: string;
  /** argv prefix for bird and birdc, e.g. ['nsenter', '--net=/run/netns/x']. */
  netnsPrefix?: readonly string[];
  /** First restart delay after an unexpected exit (doubles per quick failure). Default 200 ms. */
  restartDelayMs?: number;
  /** Cap of the restart backoff. Default 30 s. */
  maxRestartDelayMs?: number;
  /** How long a starting BIRD may take to answer on its control socket. Default 5 s. */
  startTimeoutMs?: number;
}

interface Child {
  proc: ChildProcess;
  pid: number | undefined;
  argv: string[];
  startedAt: number;
  /** The configuration text this BIRD has loaded. */
  text: string;
  done: boolean;
  code: number | null;
  signal: string | null;
  exited: Promise<void>;
  markExited: () => void;
}

const TAIL_LINES = 40;
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

export class BirdSupervisor {
  readonly runDir: string;
  readonly confPath: string;
  readonly tmpPath: string;
  readonly rejectedPath: string;
  readonly ctlPath: string;
  readonly pidPath: string;

  /** Successful `birdc configure` runs. */
  reloadCount = 0;
  /** Times the supervisor started BIRD again after it exited on its own. */
  restartCount = 0;

  private readonly runner: CommandRunner;
  private readonly log: Logger;
  private readonly bird: string;
  private readonly birdc: string;
  private readonly prefix: readonly string[];
  private readonly restartDelayMs: number;
  private readonly maxRestartDelayMs: number;
  private readonly startTimeoutMs: number;
  private readonly mutex = new Mutex();

  private current: Child | undefined;
  /** BIRD should be running (set by the first start, cleared by stop()). */
  private wanted = false;
  private stopping = false;
  private staleChecked = false;
  private quickFailures = 0;
  private restartTimer: NodeJS.Timeout | undefined;
  private tail: string[] = [];

  constructor(opts: BirdSupervisorOptions) {
    this.runDir = path.resolve(opts.runDir);
    this.confPath = path.join(this.runDir, 'bird.conf');
    this.tmpPath = path.join(this.runDir, 'bird.conf.tmp');
    this.rejectedPath = path.join(this.runDir, 'bird.conf.rejected');
    this.ctlPath = path.join(this.runDir, 'bird.ctl');
    this.pidPath = path.join(this.runDir, 'bird.pid');
    this.runner = opts.runner ?? new ExecFileRunner();
    this.log = (opts.log ?? silentLogger).child({ component: 'bird' });
    this.bird = opts.birdBinary ?? 'bird';
    this.birdc = opts.birdcBinary ?? 'birdc';
    this.prefix = opts.netnsPrefix ?? [];
    this.restartDelayMs = opts.restartDelayMs ?? 200;
    this.maxRestartDelayMs = opts.maxRestartDelayMs ?? 30_000;
    this.startTimeoutMs = opts.startTimeoutMs ?? 5_000;
  }

  /** Pid of the running BIRD child, if any. */
  pid(): number | undefined {
    return this.current && !this.current.done ? this.current.pid : undefined;
  }

  /** The last lines BIRD wrote to stderr (newest last). */
  recentLog(): string[] {
    return [...this.tail];
  }

  /**
   * Make BIRD run `configText`. 'unchanged': it already does (nothing touched). 'reloaded': checked,
   * installed, `birdc configure` done. 'started': BIRD was not running and now is, with this text.
   * Throws BirdConfigError (previous configuration kept) if BIRD refuses the text.
   */
  apply(configText: string): Promise<ApplyResult> {
    return this.mutex.run(async () => {
      const onDisk = await readFile(this.confPath, 'utf8').catch(() => undefined);
      const running = this.current && !this.current.done ? this.current : undefined;
      if (onDisk === configText && running?.text === configText) return 'unchanged';

      if (onDisk !== configText) {
        await mkdir(this.runDir, { recursive: true });
        await writeFile(this.tmpPath, configText, { mode: 0o644 });
        await this.check(this.tmpPath);
        await rename(this.tmpPath, this.confPath);
      }

      if (running) {
        await this.configure();
        running.text = configText;
        this.reloadCount++;
        this.log.info('BIRD reconfigured', { pid: running.pid, reloads: this.reloadCount });
        return 'reloaded';
      }
      this.wanted = true;
      this.clearRestartTimer();
      await this.start();
      return 'started';
    });
  }

  /** `birdc show protocols`, parsed. Works against any BIRD on our control socket (e.g. from the CLI). */
  async showProtocols(): Promise<BirdProtocolRow[]> {
    let stdout: string;
    try {
      ({ stdout } = await this.runner.run([...this.prefix, this.birdc, '-s', this.ctlPath, 'show', 'protocols'], { timeoutMs: 10_000 }));
    } catch (err) {
      throw new BirdNotRunningError(
        `${describe(err)}. Is "calico-ts node run" running on this host? (BIRD's control socket: ${this.ctlPath})`,
        { cause: err },
      );
    }
    return parseShowProtocols(stdout);
  }

  /** One row per session, from BIRD's view of its protocols. */
  async status(sessions: PeerSession[]): Promise<PeerStatus[]> {
    return peerStatuses(await this.showProtocols(), sessions);
  }

  /** Stop supervising and terminate BIRD (SIGTERM, SIGKILL after 5 s). Idempotent. */
  async stop(): Promise<void> {
    this.wanted = false;
    this.clearRestartTimer();
    await this.mutex.run(async () => {
      const child = this.current;
      if (!child || child.done) return;
      this.stopping = true;
      try {
        child.proc.kill('SIGTERM');
        let timer: NodeJS.Timeout | undefined;
        const timeout = new Promise<'timeout'>((resolve) => (timer = setTimeout(() => resolve('timeout'), 5_000)));
        const first = await Promise.race([child.exited.then(() => 'exited' as const), timeout]);
        clearTimeout(timer);
        if (first === 'timeout') {
          this.log.warn('BIRD ignored SIGTERM for 5 s; killing it', { pid: child.pid });
          child.proc.kill('SIGKILL');
          await child.exited;
        }
      } finally {
        this.stopping = false;
      }
      this.log.info('BIRD stopped', { pid: child.pid });
    });
  }

  // ---- internals ----------------------------------------------------------------------------

  private async check(file: string): Promise<void> {
    const argv = [...this.prefix, this.bird, '-p', '-c', file];
    try {
      await this.runner.run(argv, { timeoutMs: 10_000 });
    } catch (err) {
      // Could not run bird at all (not installed, nsenter failed): not a verdict on the text.
      if (!(err instanceof CommandFailedError) || (err.exitCode === null && err.signal === null)) throw err;
      if (err.signal !== null) throw err;
      await rename(file, this.rejectedPath).catch(() => undefined);
      const message = err.stderr.trim().replace(/^bird: /, '') || `bird -p exited with code ${err.exitCode}`;
      this.log.error('BIRD rejected a configuration', { bird: message, file: this.rejectedPath });
      throw new BirdConfigError(message, this.rejectedPath);
    }
  }

  private async configure(): Promise<void> {
    const argv = [...this.prefix, this.birdc, '-s', this.ctlPath, 'configure'];
    let stdout: string;
    try {
      ({ stdout } = await this.runner.run(argv, { timeoutMs: 30_000 }));
    } catch (err) {
      if (err instanceof CommandFailedError && /Unable to connect|Connection refused|No such file/i.test(err.stderr)) {
        // bird.conf is already the new text: a restarted BIRD will load it.
        throw new BirdNotRunningError(`${describe(err)}; the supervisor restarts it with the new configuration`, { cause: err });
      }
      throw err;
    }
    if (!/Reconfigur/.test(stdout)) {
      throw new BirdConfigError(stdout.replace(/^BIRD [^\n]* ready\.\n/, '').trim(), this.confPath);
    }
  }

  /** Spawn BIRD and wait until it answers on its control socket. Caller holds the mutex. */
  private async start(): Promise<void> {
    await mkdir(this.runDir, { recursive: true });
    if (!this.staleChecked) {
      this.staleChecked = true;
      await this.replaceStaleBird();
    }
    const text = await readFile(this.confPath, 'utf8');
    const argv = [...this.prefix, this.bird, '-f', '-c', this.confPath, '-s', this.ctlPath, '-P', this.pidPath];
    const [file, ...args] = argv;
    if (file === undefined) throw new BirdNotRunningError('empty BIRD command');

    this.tail = [];
    let markExited = (): void => {};
    const exited = new Promise<void>((resolve) => (markExited = resolve));
    const proc = spawn(file, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    const child: Child = { proc, pid: proc.pid, argv, startedAt: Date.now(), text, done: false, code: null, signal: null, exited, markExited };
    this.current = child;

    for (const stream of [proc.stdout, proc.stderr]) {
      if (stream) createInterface({ input: stream }).on('line', (l) => this.onBirdLine(l));
    }
    let spawnError: Error | undefined;
    proc.on('error', (err) => {
      spawnError = err;
      this.onGone(child, null, null);
    });
    proc.on('close', (code, signal) => this.onGone(child, code, signal));

    const deadline = Date.now() + this.startTimeoutMs;
    for (;;) {
      if (child.done) {
        const stderr = spawnError ? spawnError.message : this.tail.join('\n');
        throw new CommandFailedError(argv, child.code, child.signal, stderr);
      }
      try {
        await this.runner.run([...this.prefix, this.birdc, '-s', this.ctlPath, 'show', 'status'], { timeoutMs: 2_000 });
        if (!child.done) break;
      } catch {
        /* not listening yet */
      }
      if (Date.now() >= deadline) {
        proc.kill('SIGKILL');
        throw new BirdNotRunningError(
          `it did not answer on ${this.ctlPath} within ${this.startTimeoutMs} ms (killed; the supervisor retries). ` +
            `Last log lines: ${this.tail.slice(-5).join(' | ') || '(none)'}`,
        );
      }
      await sleep(50);
    }
    this.log.info('BIRD started', { pid: child.pid, restarts: this.restartCount });
  }

  private onGone(child: Child, code: number | null, signal: string | null): void {
    if (child.done) return;
    child.done = true;
    child.code = code;
    child.signal = signal;
    child.markExited();
    if (this.current === child) this.current = undefined;
    if (this.stopping || !this.wanted) return;
    const lived = Date.now() - child.startedAt;
    if (lived >= 10_000) this.quickFailures = 0;
    const delay = Math.min(this.maxRestartDelayMs, this.restartDelayMs * 2 ** this.quickFailures);
    this.quickFailures++;
    this.log.warn('BIRD exited; restarting it', { pid: child.pid, code, signal, inMs: delay, lastLines: this.tail.slice(-5) });
    this.clearRestartTimer();
    this.restartTimer = setTimeout(() => {
      this.restartTimer = undefined;
      this.mutex
        .run(async () => {
          if (!this.wanted || this.stopping || (this.current && !this.current.done)) return;
          this.restartCount++;
          await this.start();
        })
        .catch((err: unknown) => this.log.error('BIRD restart failed', { err: describe(err) }));
    }, delay);
  }

  private clearRestartTimer(): void {
    if (this.restartTimer) clearTimeout(this.restartTimer);
    this.restartTimer = undefined;
  }

  /** BIRD's stderr: "2026-11-21 23:36:08.094 <INFO> Started" → our log at the matching level. */
  private onBirdLine(line: string): void {
    this.tail.push(line);
    if (this.tail.length > TAIL_LINES) this.tail.shift();
    const m = /<([A-Z]+)>\s*(.*)$/.exec(line);
    const cls = m?.[1] ?? 'INFO';
    const msg = m?.[2] ?? line;
    const fields = { bird: msg };
    if (this.stopping || cls === 'DBG' || cls === 'TRACE') this.log.debug('bird', fields);
    else if (cls === 'WARN') this.log.warn('bird', fields);
    else if (cls === 'ERR' || cls === 'BUG' || cls === 'FATAL') this.log.error('bird', fields);
    else this.log.info('bird', fields);
  }

  /** See the design note at the top: replace a BIRD a previous node run left on our control socket. */
  private async replaceStaleBird(): Promise<void> {
    const pid = Number.parseInt((await readFile(this.pidPath, 'utf8').catch(() => '')).trim(), 10);
    if (!Number.isInteger(pid) || pid <= 1 || pid === process.pid) return;
    const cmdline = await readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '');
    const args = cmdline.split('\0');
    const exe = path.basename(args[0] ?? '');
    const s = args.indexOf('-s');
    if (exe !== path.basename(this.bird) || s < 0 || args[s + 1] !== this.ctlPath) return;
    this.log.warn('replacing a BIRD left running by a previous node run', { pid });
    const alive = async (): Promise<boolean> => {
      const stat = await readFile(`/proc/${pid}/stat`, 'utf8').catch(() => '');
      const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
      return stat !== '' && state !== 'Z' && state !== 'X';
    };
    const kill = (sig: NodeJS.Signals): void => {
      try {
        process.kill(pid, sig);
      } catch {
        /* already gone */
      }
    };
    kill('SIGTERM');
    for (let i = 0; i < 60 && (await alive()); i++) await sleep(50);
    if (await alive()) {
      kill('SIGKILL');
      for (let i = 0; i < 40 && (await alive()); i++) await sleep(50);
    }
  }
}

function describe(err: unknown): string {
  if (err instanceof CommandFailedError) return err.stderr.trim() || err.message;
  return err instanceof Error ? err.message : String(err);
}
