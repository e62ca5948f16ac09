/**
 * `calico-ts node status`: is the node process alive (its status file + pid), and BIRD's view of each
 * BGP session, named with the sessions the node last applied (bgp-sessions.json).
 */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseShowProtocols, peerStatuses } from '../bgp/status.js';
import type { PeerSession, PeerStatus } from '../bgp/types.js';
import type { NodeRecord } from '../datastore/model.js';
import type { CommandRunner } from '../lib/exec.js';
import { CalicoError, InternalError } from '../lib/errors.js';
import { SESSIONS_FILE } from '../node/bgp-agent.js';

export class NodeNotRunningError extends CalicoError {
  readonly code = 'NOT_FOUND' as const;
}

export function processRunning(runDir: string): boolean {
  const file = join(runDir, 'status.json');
  if (!existsSync(file)) return false;
  try {
    const { pid } = JSON.parse(readFileSync(file, 'utf8')) as { pid: number };
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** calicoctl's boxed table. */
export function boxTable(headers: string[], rows: string[][]): string {
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)) + 2);
  const rule = '+' + widths.map((w) => '-'.repeat(w)).join('+') + '+';
  const center = (t: string, w: number) => {
    const left = Math.floor((w - t.length) / 2);
    return ' '.repeat(left) + t + ' '.repeat(w - t.length - left);
  };
  const line = (cells: string[], fmt: (t: string, w: number) => string) => '|' + cells.map((c, i) => fmt(c, widths[i] ?? 0)).join('|') + '|';
  return [rule, line(headers, center), rule, ...rows.map((r) => line(r, (t, w) => ` ${t.padEnd(w - 1)}`)), rule].join('\n');
}

/** The node's own record (tunnels, problems), read from the datastore; undefined when it cannot be read. */
export type NodeRecordReader = (node: string) => Promise<NodeRecord | undefined>;

/** Tunnels and what the node could not program, from its record. */
function recordLines(record: NodeRecord | undefined): string[] {
  if (!record) return [];
  const out: string[] = [];
  if (record.ipv4VXLANTunnelAddr) out.push('', `VXLAN tunnel: vxlan.calico ${record.ipv4VXLANTunnelAddr} (VTEP MAC ${record.vxlanTunnelMACAddr ?? '?'})`);
  if (record.ipv4IPIPTunnelAddr) out.push('', `IPIP tunnel: tunl0 ${record.ipv4IPIPTunnelAddr}`);
  const problems = record.problems ?? [];
  if (problems.length > 0) out.push('', 'Problems', ...problems.map((p) => `  - ${p}`));
  return out;
}

function statusNodeName(runDir: string): string | undefined {
  try {
    return (JSON.parse(readFileSync(join(runDir, 'status.json'), 'utf8')) as { node?: string }).node;
  } catch {
    return undefined;
  }
}

export async function nodeStatus(runDir: string, runner: CommandRunner, readRecord?: NodeRecordReader): Promise<string> {
  if (!processRunning(runDir)) {
    throw new NodeNotRunningError(`Calico-ts process is not running (no live node with run dir ${runDir}); start it with make run or calico-ts node run`);
  }
  const name = statusNodeName(runDir);
  const record = name && readRecord ? await readRecord(name).catch(() => undefined) : undefined;
  const out = ['Calico-ts process is running.', ''];
  const sessionsFile = join(runDir, SESSIONS_FILE);
  if (!existsSync(sessionsFile)) {
    out.push('BGP is not running on this node (CALICO_NETWORKING_BACKEND=none, or no IPv4 address: see the node log).');
    out.push(...recordLines(record));
    return out.join('\n');
  }
  const sessions = JSON.parse(readFileSync(sessionsFile, 'utf8')) as PeerSession[];
  let statuses: PeerStatus[];
  try {
    const { stdout } = await runner.run(['birdc', '-s', join(runDir, 'bird.ctl'), 'show', 'protocols'], { timeoutMs: 10_000 });
    statuses = peerStatuses(parseShowProtocols(stdout), sessions);
  } catch (err) {
    throw new InternalError(`BIRD is not running or not answering on ${join(runDir, 'bird.ctl')}: ${err instanceof Error ? err.message : String(err)}; the node restarts it, check the node log`);
  }
  out.push(
    'IPv4 BGP status',
    statuses.length === 0
      ? 'No IPv4 peers found.'
      : boxTable(
          ['PEER ADDRESS', 'PEER TYPE', 'STATE', 'SINCE', 'INFO'],
          statuses.map((s) => [s.peerIP, s.type, s.state, s.since, s.info]),
        ),
  );
  out.push(...recordLines(record));
  return out.join('\n');
}
