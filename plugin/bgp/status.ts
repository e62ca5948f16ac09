/**
 * `birdc show protocols` (BIRD 2) → rows → `calico-ts node status` rows. Pure.
 *
 * BIRD 2 prints (after the "BIRD 2.0.12 ready." banner):
 *
 *   Name       Proto      Table      State  Since         Info
 *   device1    Device     ---        up     23:36:08.094
 *   Mesh_10_0_0_2 BGP        ---        up     2026-11-21 23:36:08  Established
 *
 * Columns are padded but a long name pushes the rest to the right, so rows are split on
 * whitespace: four single-word columns, then Since (a time, a date, or "date time" — the
 * renderer sets `timeformat protocol iso long`), then Info (the rest, e.g. "Active  Socket:
 * Connection refused", whitespace collapsed). BIRD 1's lower-case header is rejected: its
 * columns differ.
 */
import { InternalError } from '../lib/errors.js';
import type { PeerSession, PeerStatus } from './types.js';

export interface BirdProtocolRow {
  name: string;
  proto: string;
  table: string;
  state: string;
  since: string;
  info: string;
}

const HEADER_RE = /^Name\s+Proto\s+Table\s+State\s+Since\s+Info\s*$/;
const BIRD1_HEADER_RE = /^name\s+proto\s+table\s+state\s+since\s+info\s*$/;
const ROW_RE = /^(\S+)\s+(\S+)\s+(\S+)\s+(\S+)(?:\s+(.*))?$/;
const SINCE_RE = /^(\d{4}-\d{2}-\d{2}(?: \d{2}:\d{2}:\d{2}(?:\.\d+)?)?|\S+)(?:\s+(.*))?$/;
/** `birdc -v` prefixes reply lines with a 4-digit code and ' ' or '-'. */
const CODE_RE = /^\d{4}[ -]/;

export function parseShowProtocols(output: string): BirdProtocolRow[] {
  const lines = output.split('\n').map((l) => l.replace(/\r$/, ''));
  const coded = lines.some((l) => /^0001 /.test(l));
  const text = coded ? lines.map((l) => (CODE_RE.test(l) ? l.slice(5) : l.replace(/^ /, ''))) : lines;

  const headerAt = text.findIndex((l) => HEADER_RE.test(l.trim()));
  if (headerAt < 0) {
    const bird1 = text.some((l) => BIRD1_HEADER_RE.test(l.trim()));
    const excerpt = JSON.stringify(output.slice(0, 200));
    throw new InternalError(
      bird1
        ? `"birdc show protocols" printed BIRD 1's header; calico-ts needs BIRD 2 (Debian package bird2): ${excerpt}`
        : `unexpected output of "birdc show protocols" (no "Name Proto Table State Since Info" header): ${excerpt}`,
    );
  }

  const rows: BirdProtocolRow[] = [];
  for (const raw of text.slice(headerAt + 1)) {
    const l = raw.trim();
    if (l === '') continue;
    const m = ROW_RE.exec(l);
    if (!m) continue;
    const [, name = '', proto = '', table = '', state = '', rest = ''] = m;
    const s = SINCE_RE.exec(rest.trim());
    rows.push({
      name,
      proto,
      table,
      state,
      since: s?.[1] ?? '',
      info: (s?.[2] ?? '').replace(/\s+/g, ' ').trim(),
    });
  }
  return rows;
}

/** Shown for a session the running BIRD does not have (e.g. config not applied yet). */
export const MISSING_STATE = 'unknown';

/** One status row per session, in the sessions' order, matched to BIRD's rows by protocol name. */
export function peerStatuses(rows: readonly BirdProtocolRow[], sessions: readonly PeerSession[]): PeerStatus[] {
  const byName = new Map(rows.map((r) => [r.name, r]));
  return sessions.map((s) => {
    const row = byName.get(s.protocolName);
    if (!row) {
      return { peerIP: s.peerIP, type: s.type, state: MISSING_STATE, since: '', info: 'not in the running BIRD configuration' };
    }
    return { peerIP: s.peerIP, type: s.type, state: row.state, since: row.since, info: row.info };
  });
}
