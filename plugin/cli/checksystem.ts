/**
 * `calico-ts node checksystem`: is this host able to run a node? Each check is a real probe, not a
 * guess from module lists (this kernel has features built in, and a managed plugin may not see
 * /lib/modules): kernel features are tried by creating the device or set inside a throwaway network
 * namespace (`unshare --net <cmd>`), which the kernel destroys with the process, so a probe leaves
 * nothing behind even when it is killed. Nothing in the host's own namespace is touched.
 *
 * Required checks failing → exit code 1. Optional ones (tunnels) only warn: they matter only for pools
 * that use them.
 */
import { constants } from 'node:fs';
import { access, readFile } from 'node:fs/promises';
import { request } from 'node:http';
import { release } from 'node:os';
import { delimiter, join } from 'node:path';
import type { CommandRunner } from '../lib/exec.js';
import { CommandFailedError } from '../lib/errors.js';

export type CheckStatus = 'pass' | 'warn' | 'fail';

export interface CheckResult {
  name: string;
  status: CheckStatus;
  detail: string;
}

export interface Check {
  name: string;
  /** A required check that cannot pass fails; an optional one warns. */
  required: boolean;
  /** Resolves with what was found; rejects (or returns a status) when the feature is missing. */
  probe(): Promise<string | { status: CheckStatus; detail: string }>;
}

// ---- pure part ------------------------------------------------------------------------------

/** `iptables -V` → version and backend: "iptables v1.8.9 (nf_tables)"; old builds print no backend = legacy. */
export function parseIptablesVersion(text: string): { version: string; backend: 'nf_tables' | 'legacy' } | undefined {
  const m = /iptables v(\d+(?:\.\d+)*)(?:\s+\((nf_tables|legacy)\))?/.exec(text);
  if (!m) return undefined;
  return { version: m[1]!, backend: m[2] === 'nf_tables' ? 'nf_tables' : 'legacy' };
}

/** `bird --version` (prints to stderr): "BIRD version 2.0.12" → "2.0.12". */
export function parseBirdVersion(text: string): string | undefined {
  return /BIRD version (\d+(?:\.\d+)*)/.exec(text)?.[1];
}

/** The first line of a failure that says why, without our argv noise. */
export function reason(err: unknown): string {
  const missing = /spawn (\S+) ENOENT/.exec(err instanceof Error ? err.message : '');
  if (missing) return `${missing[1]}: command not found`;
  const text = err instanceof CommandFailedError ? err.stderr.trim() || err.message : err instanceof Error ? err.message : String(err);
  return text.split('\n')[0]?.trim() || 'failed';
}

/** Settled probe outcome → result: a rejection fails a required check and warns for an optional one. */
export function toResult(check: Pick<Check, 'name' | 'required'>, outcome: PromiseSettledResult<string | { status: CheckStatus; detail: string }>): CheckResult {
  if (outcome.status === 'rejected') {
    const why = reason(outcome.reason);
    return { name: check.name, status: check.required ? 'fail' : 'warn', detail: check.required ? why : `optional: ${why}` };
  }
  const v = outcome.value;
  return typeof v === 'string' ? { name: check.name, status: 'pass', detail: v } : { name: check.name, ...v };
}

/** The report and whether every required check passed. */
export function formatReport(results: readonly CheckResult[], kernel: string): { text: string; ok: boolean } {
  const width = Math.max(...results.map((r) => r.name.length));
  const label: Record<CheckStatus, string> = { pass: 'PASS', warn: 'WARN', fail: 'FAIL' };
  const lines = [`calico-ts system check (kernel ${kernel})`, ''];
  for (const r of results) lines.push(`  ${label[r.status]}  ${r.name.padEnd(width)}  ${r.detail}`);
  const failed = results.filter((r) => r.status === 'fail');
  const warned = results.filter((r) => r.status === 'warn');
  lines.push('');
  if (failed.length) lines.push(`${failed.length} required check(s) failed: ${failed.map((r) => r.name).join(', ')}. Fix them before running the node.`);
  else lines.push(`All required checks passed${warned.length ? ` (${warned.length} warning(s): ${warned.map((r) => r.name).join(', ')})` : ''}.`);
  return { text: lines.join('\n'), ok: failed.length === 0 };
}

// ---- probes ---------------------------------------------------------------------------------

export interface CheckEnv {
  runner: CommandRunner;
  /** Resolves when the datastore answers. */
  pingEtcd(): Promise<string>;
  /** Docker API socket path. */
  dockerSocket: string;
  /** CALICO_NETWORKING_BACKEND: with `none`, BIRD is not needed. */
  bgp: boolean;
  procRoot?: string;
}

const TIMEOUT = { timeoutMs: 10_000 };

async function onPath(command: string): Promise<boolean> {
  for (const dir of (process.env.PATH ?? '').split(delimiter).filter(Boolean)) {
    if (await access(join(dir, command), constants.X_OK).then(() => true, () => false)) return true;
  }
  return false;
}

/** `<cmd>` inside a network namespace that dies with it. */
function inThrowawayNetns(runner: CommandRunner, argv: string[]): Promise<unknown> {
  return runner.run(['unshare', '--net', '--', ...argv], TIMEOUT);
}

function dockerPing(socketPath: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const req = request({ socketPath, path: '/version', timeout: 5_000 }, (res) => {
      let body = '';
      res.on('data', (c: Buffer) => (body += c.toString()));
      res.on('end', () => {
        try {
          resolve(`Docker ${(JSON.parse(body) as { Version?: string }).Version ?? '?'} answers on ${socketPath}`);
        } catch {
          reject(new Error(`unexpected answer from ${socketPath}`));
        }
      });
    });
    req.on('timeout', () => req.destroy(new Error(`no answer from ${socketPath} within 5 s`)));
    req.on('error', (err) => reject(new Error(`Docker API not reachable on ${socketPath}: ${err.message}`)));
    req.end();
  });
}

export function systemChecks(env: CheckEnv): Check[] {
  const { runner } = env;
  const procRoot = env.procRoot ?? '/proc';
  return [
    { name: 'iproute2', required: true, probe: async () => (await runner.run(['ip', '-V'], TIMEOUT)).stdout.trim() },
    {
      name: 'veth',
      required: true,
      probe: async () => (await inThrowawayNetns(runner, ['ip', 'link', 'add', 'name', 'chk0', 'type', 'veth', 'peer', 'name', 'chk1']), 'veth pairs can be created'),
    },
    {
      name: 'vxlan',
      required: false,
      probe: async () => (await inThrowawayNetns(runner, ['ip', 'link', 'add', 'name', 'chkvx', 'type', 'vxlan', 'id', '1', 'dstport', '4789']), 'VXLAN devices can be created (vxlanMode pools work)'),
    },
    {
      name: 'ipip',
      required: false,
      probe: () =>
        inThrowawayNetns(runner, ['ip', 'link', 'add', 'name', 'chkip', 'type', 'ipip', 'local', '127.0.0.1']).then(
          () => 'IPIP tunnels can be created (ipipMode pools work)',
          (err: unknown) => Promise.reject(new Error(`no IPIP in this kernel (${reason(err)}); ipipMode pools will not work, use vxlanMode`)),
        ),
    },
    {
      name: 'ipset',
      required: true,
      probe: async () => {
        const version = (await runner.run(['ipset', '--version'], TIMEOUT)).stdout.trim();
        await inThrowawayNetns(runner, ['ipset', 'create', 'chk', 'hash:net']);
        return `${version}; hash:net sets can be created`;
      },
    },
    {
      name: 'iptables',
      required: true,
      probe: async () => {
        const { stdout, stderr } = await runner.run(['iptables', '-V'], TIMEOUT);
        const v = parseIptablesVersion(stdout + stderr);
        if (!v) throw new Error(`cannot read the version from ${JSON.stringify((stdout + stderr).trim())}`);
        await inThrowawayNetns(runner, ['iptables', '-w', '-n', '-L', 'FORWARD']);
        await runner.run(['iptables-restore', '--version'], TIMEOUT);
        return `iptables ${v.version}, backend ${v.backend === 'nf_tables' ? 'nft' : 'legacy'}; the filter table works`;
      },
    },
    {
      name: 'ip_forward',
      required: false,
      probe: async () => {
        const value = (await readFile(`${procRoot}/sys/net/ipv4/ip_forward`, 'utf8')).trim();
        return value === '1' ? 'net.ipv4.ip_forward = 1' : { status: 'warn', detail: `net.ipv4.ip_forward = ${value}; the node sets it to 1 when it starts` };
      },
    },
    {
      name: 'bird',
      required: env.bgp,
      probe: async () => {
        if (!env.bgp) return 'not needed (CALICO_NETWORKING_BACKEND=none)';
        const { stdout, stderr } = await runner.run(['bird', '--version'], TIMEOUT);
        const v = parseBirdVersion(stdout + stderr);
        if (!v) throw new Error(`cannot read BIRD's version from ${JSON.stringify((stdout + stderr).trim())}`);
        if (!v.startsWith('2.')) throw new Error(`BIRD ${v} found; BIRD 2 is needed (Debian package bird2)`);
        if (!(await onPath('birdc'))) throw new Error('birdc is missing (Debian package bird2)');
        return `BIRD ${v}`;
      },
    },
    { name: 'etcd', required: true, probe: () => env.pingEtcd() },
    { name: 'docker', required: false, probe: () => dockerPing(env.dockerSocket) },
  ];
}

export async function checkSystem(env: CheckEnv): Promise<{ text: string; ok: boolean }> {
  const checks = systemChecks(env);
  const outcomes = await Promise.allSettled(checks.map((c) => c.probe()));
  return formatReport(
    checks.map((c, i) => toResult(c, outcomes[i]!)),
    release(),
  );
}
