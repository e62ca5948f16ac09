/**
 * Address math on BigInt, for IPv4 and IPv6 alike. Parsing is strict (ip6addr validates the text);
 * everything else is integer arithmetic so a /122 is as cheap as a /26.
 */
import ip6addr from 'ip6addr';
import { ValidationError } from '../lib/errors.js';

export type Family = 4 | 6;

export interface Cidr {
  family: Family;
  /** Network address as an integer (host bits zero). */
  base: bigint;
  prefix: number;
}

const bits = (family: Family): number => (family === 4 ? 32 : 128);

export function parseAddress(text: string, field = 'address'): { family: Family; value: bigint } {
  if (typeof text !== 'string' || !/^[0-9a-fA-F.:]+$/.test(text)) {
    throw new ValidationError(field, `${JSON.stringify(text)} is not an IP address`);
  }
  let addr;
  try {
    addr = ip6addr.parse(text);
  } catch {
    throw new ValidationError(field, `${JSON.stringify(text)} is not an IP address`);
  }
  const family: Family = addr.kind() === 'ipv4' ? 4 : 6;
  if (family === 4 && text.includes(':')) throw new ValidationError(field, `${JSON.stringify(text)}: IPv4-mapped IPv6 addresses are not supported`);
  const buf = addr.toBuffer();
  let value = 0n;
  const bytes = family === 4 ? buf.slice(buf.length - 4) : buf;
  for (const b of bytes) value = (value << 8n) | BigInt(b);
  return { family, value };
}

export function formatAddress(family: Family, value: bigint): string {
  if (family === 4) {
    return [24n, 16n, 8n, 0n].map((s) => ((value >> s) & 255n).toString()).join('.');
  }
  const groups: string[] = [];
  for (let i = 7; i >= 0; i--) groups.push(((value >> BigInt(i * 16)) & 0xffffn).toString(16));
  return ip6addr.parse(groups.join(':')).toString();
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
