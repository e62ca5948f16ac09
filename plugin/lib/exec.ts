/**
 * The one way calico-ts runs system commands: execFile with an argv array, never a shell.
 * Everything that touches the kernel (ip, iptables-restore, ipset, sysctl files aside) goes through a
 * CommandRunner so unit tests can record argv instead of executing.
 */
import { execFile } from 'node:child_process';
import { CommandFailedError } from './errors.js';

export interface CommandResult {
  stdout: string;
  stderr: string;
}

export interface RunOptions {
  /** Written to the command's standard input (iptables-restore, ipset restore, ip -batch). */
  input?: string;
  timeoutMs?: number;
}

export interface CommandRunner {
  run(argv: readonly string[], options?: RunOptions): Promise<CommandResult>;
}

/** Runs commands for real. `prefix` (e.g. ['nsenter', '--net=/run/netns/x']) wraps every argv. */
export class ExecFileRunner implements CommandRunner {
  constructor(private readonly prefix: readonly string[] = []) {}

  run(argv: readonly string[], options: RunOptions = {}): Promise<CommandResult> {
    const full = [...this.prefix, ...argv];
    const [file, ...args] = full;
    if (!file) return Promise.reject(new Error('empty argv'));
    return new Promise((resolve, reject) => {
      const child = execFile(
        file,
        args,
        { timeout: options.timeoutMs ?? 30_000, maxBuffer: 64 * 1024 * 1024, encoding: 'utf8' },
        (error, stdout, stderr) => {
          if (error) {
            const code = typeof error.code === 'number' ? error.code : null;
            reject(new CommandFailedError(full, code, error.signal ?? null, stderr || error.message));
            return;
          }
          resolve({ stdout, stderr });
        },
      );
      if (options.input !== undefined) child.stdin?.end(options.input);
    });
  }
}
