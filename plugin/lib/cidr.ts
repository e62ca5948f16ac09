/**
 * Address math on BigInt, for IPv4 and IPv6 alike, shared by IPAM, the API and the dataplane. Parsing is
 * strict (no leading zeros, no shortened forms) and IPv6 is printed per RFC 5952, as `ip` prints it;
 * everything else is integer arithmetic so a /122 is as cheap as a /26.
 */
import { ValidationError } from './errors.js';

export type Family = 4 | 6;

export interface Cidr {
  family: Family;
  /** Network address as an integer (host bits zero). */
  base: bigint;
  prefix: number;
}

const bits = (family: Family): number => (family === 4 ? 32 : 128);

export function parseAddress(text: string, field = 'address'): { family: Family; value: bigint } {
  if (typeof text === 'string' && /^[0-9.]+$/.test(text)) {
    const value = parseIPv4(text);
    if (value !== undefined) return { family: 4, value };
  } else if (typeof text === 'string' && text.includes(':')) {
    const value = parseIPv6(text);
    if (value !== undefined) return { family: 6, value };
  }
  throw new ValidationError(field, `${JSON.stringify(text)} is not an IP address`);
}

export function formatAddress(family: Family, value: bigint): string {
  return family === 4 ? formatIPv4(value) : formatIPv6(value);
}

// Strict parsers (no leading zeros, no shortened IPv4) and RFC 5952 output, which is what `ip` prints.

export function parseIPv4(s: string): bigint | undefined {
  const parts = s.split('.');
  if (parts.length !== 4) return undefined;
  let v = 0n;
  for (const p of parts) {
    if (!/^(0|[1-9][0-9]{0,2})$/.test(p)) return undefined;
    const n = Number(p);
    if (n > 255) return undefined;
    v = (v << 8n) | BigInt(n);
  }
  return v;
}

export function parseIPv6(s: string): bigint | undefined {
  if (!/^[0-9A-Fa-f:.]+$/.test(s)) return undefined;
  let head = s;
  let tailV4: bigint | undefined;
  // Embedded IPv4 in the last 32 bits (::ffff:1.2.3.4).
  if (s.includes('.')) {
    const i = s.lastIndexOf(':');
    tailV4 = parseIPv4(s.slice(i + 1));
    if (tailV4 === undefined) return undefined;
    head = s.slice(0, i + 1) + '0:0';
  }
  const halves = head.split('::');
  if (halves.length > 2) return undefined;
  const toGroups = (h: string): string[] | undefined => (h === '' ? [] : h.split(':'));
  const left = toGroups(halves[0] ?? '');
  const right = halves.length === 2 ? toGroups(halves[1] ?? '') : [];
  if (!left || !right) return undefined;
  let groups: string[];
  if (halves.length === 2) {
    const missing = 8 - left.length - right.length;
    if (missing < 1) return undefined;
    groups = [...left, ...Array<string>(missing).fill('0'), ...right];
  } else {
    groups = left;
  }
  if (groups.length !== 8) return undefined;
  let v = 0n;
  for (const g of groups) {
    if (!/^[0-9A-Fa-f]{1,4}$/.test(g)) return undefined;
    v = (v << 16n) | BigInt(parseInt(g, 16));
  }
  if (tailV4 !== undefined) v = (v & ~0xffffffffn) | tailV4;
  return v;
}

export function formatIPv4(v: bigint): string {
  return [24n, 16n, 8n, 0n].map((s) => String((v >> s) & 0xffn)).join('.');
}

/** RFC 5952: lower case, no leading zeros, the first longest run (>= 2) of zero groups as "::". */
export function formatIPv6(v: bigint): string {
  const groups: number[] = [];
  for (let i = 7; i >= 0; i--) groups.push(Number((v >> BigInt(i * 16)) & 0xffffn));
  let bestStart = -1;
  let bestLen = 0;
  for (let i = 0; i < 8; ) {
    if (groups[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLen) {
      bestStart = i;
      bestLen = j - i;
    }
    i = j;
  }
  const hex = groups.map((g) => g.toString(16));
  if (bestLen < 2) return hex.join(':');
  return `${hex.slice(0, bestStart).join(':')}::${hex.slice(bestStart + bestLen).join(':')}`;
}

/** Parses "a.b.c.d/n" (or v6). Host bits are cleared: "10.0.0.5/24" means 10.0.0.0/24. */
export function parseCidr(text: string, field = 'cidr'): Cidr {
  if (typeof text !== 'string') throw new ValidationError(field, 'must be a CIDR string like 10.0.0.0/16');
  const m = /^([^/]+)\/(\d{1,3})$/.exec(text.trim());
  if (!m || m[1] === undefined || m[2] === undefined) {
    throw new ValidationError(field, `${JSON.stringify(text)} is not a CIDR (expected e.g. 10.0.0.0/16)`);
  }
  const { family, value } = parseAddress(m[1], field);
  const prefix = Number(m[2]);
  if (prefix > bits(family)) throw new ValidationError(field, `${JSON.stringify(text)}: prefix length must be at most ${bits(family)}`);
  return { family, base: value & netmask(family, prefix), prefix };
}

function netmask(family: Family, prefix: number): bigint {
  const total = BigInt(bits(family));
  const all = (1n << total) - 1n;
  return (all >> BigInt(prefix)) ^ all;
}

export function formatCidr(c: Cidr): string {
  return `${formatAddress(c.family, c.base)}/${c.prefix}`;
}

export function size(c: Cidr): bigint {
  return 1n << BigInt(bits(c.family) - c.prefix);
}

export function containsAddress(c: Cidr, family: Family, value: bigint): boolean {
  return c.family === family && value >= c.base && value < c.base + size(c);
}

/** True when `inner` lies entirely inside `outer` (or equals it). */
export function cidrWithin(inner: Cidr, outer: Cidr): boolean {
  return inner.family === outer.family && inner.prefix >= outer.prefix && containsAddress(outer, inner.family, inner.base);
}

export function cidrsOverlap(a: Cidr, b: Cidr): boolean {
  return cidrWithin(a, b) || cidrWithin(b, a);
}

/** The block of `blockSize` containing an address. */
export function blockContaining(family: Family, value: bigint, blockSize: number): Cidr {
  return { family, base: value & netmask(family, blockSize), prefix: blockSize };
}

/**
 * The blocks of a pool that overlap `range`, in address order starting at `startIndex` (wrapping),
 * so different hosts can start their search at different places and rarely collide.
 */
export function* blocksOverlapping(pool: Cidr, blockSize: number, range: Cidr, startIndex = 0): Generator<Cidr> {
  if (range.prefix >= blockSize) {
    // The range fits inside one block.
    if (cidrWithin(range, pool)) yield blockContaining(range.family, range.base, blockSize);
    return;
  }
  const lo = range.base > pool.base ? range.base : pool.base;
  const rangeEnd = range.base + size(range);
  const poolEnd = pool.base + size(pool);
  const hi = rangeEnd < poolEnd ? rangeEnd : poolEnd;
  if (hi <= lo) return;
  const step = 1n << BigInt(bits(pool.family) - blockSize);
  const count = (hi - lo) / step;
  if (count === 0n) return;
  const start = BigInt(startIndex) % count;
  for (let i = 0n; i < count; i++) {
    yield { family: pool.family, base: lo + ((start + i) % count) * step, prefix: blockSize };
  }
}
