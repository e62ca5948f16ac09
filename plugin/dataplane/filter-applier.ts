/**
 * The iptables/ipset applier for policy: makes the filter table and the ipsets of one IP family match a
 * DesiredFilterState (computed by calc/), writing only what differs, through `iptables-restore --noflush`
 * (one atomic transaction for the table) and `ipset restore`. Nothing else is ever used to write.
 * One instance per family: IPv4 (`iptables-*`, sets `cali40*`/`cali4t*`, family inet) and IPv6
 * (`ip6tables-*`, sets `cali60*`/`cali6t*`, family inet6). Everything below said of `cali40`/`cali4t`
 * holds for `cali60`/`cali6t` in the IPv6 instance; each instance leaves the other family's sets alone.
 * An instance may own another table instead (ApplierScope): the nat table for outgoing NAT and floating
 * IPs. Everything below says "the filter table"; a nat-scoped applier does the same in the nat table,
 * with its own ipsets (and leaves the filter applier's alone, as that one leaves its).
 *
 * DESIGN NOTE — what it owns and how it recognises it after a restart (nothing is persisted; what it keeps
 * in memory between applies is a cache of the kernel, see below):
 *   - chains of the filter table whose name starts with `cali-`. Every rule it writes into them carries a
 *     hash comment `cali:<16 chars>` (Felix style): a SHA-224 over the render version, the chain name, the
 *     previous rule's hash and the rule text. A chain is unchanged iff the list of hashes read back from
 *     `iptables-save` equals the desired list (the kernel normalises rule text, e.g. `-s 1.2.3.4` →
 *     `-s 1.2.3.4/32`, so the text itself cannot be compared; the comment survives). A rule without a hash
 *     (someone appended to our chain by hand) makes the chain differ, so it is rewritten;
 *   - hook jumps: rules in any other chain (FORWARD, INPUT, ...) that jump (`-j`/`-g`) to a `cali-` chain
 *     AND carry a comment starting with `cali:`. The one it writes is
 *     `-m comment --comment "cali:hook" -j <target>` at position 1; anything else matching that pattern
 *     (a stale target, a duplicate, LinuxDataplane's older `cali:forward-jump`) is deleted by its exact
 *     saved spec, never by number. A hook that is present but no longer first (Docker inserted above it) is
 *     deleted and re-inserted at 1 in the same transaction;
 *   - ipsets whose name starts with `cali40` (desired) or `cali4t` (its temporary sets: `cali4t` + the
 *     rest of the name, same length, so at most 31 characters like the original).
 * It never touches other chains, other rules in kernel chains, or other sets. A `cali-` chain that is no
 * longer desired but is still the target of a rule it does not own (someone's `-j cali-x`) is left as it is
 * (with a warning) together with every chain it reaches, since deleting it would fail the transaction.
 *
 * One apply: know the kernel state, plan (pure: planFilterUpdate), then run at most these writes, in this
 * order:
 *   1. `ipset -exist restore`: create new sets; for a set whose members changed, `del` the members that
 *      went and `add` the new ones (every member that stays is never absent, so no packet sees a set
 *      missing a member it has both before and after; no flush+refill); a set whose header must change
 *      (maxelem too small, other options) is rebuilt as its `cali4t` twin and `swap`ped in (atomic); a set
 *      whose TYPE changes and that no rule references is destroyed and re-created;
 *   2-3. only for a TYPE change of a set a rule references (swap refuses different types, destroy refuses a
 *      referenced set): fill the `cali4t` twin with the new type, atomically rewrite every `cali-` chain
 *      that references the set to use the twin, destroy and re-create the set;
 *   4. `iptables-restore --noflush`: `*filter`, `:chain - [0:0]` for each chain to create or rewrite
 *      (declaring flushes just that chain) and for each stale chain, `-D` of stale hook jumps, the `-A`
 *      rules, `-I K 1` hook jumps, `-X` of stale chains, `COMMIT` — one transaction;
 *   5. `ipset restore` with `destroy` of sets no longer desired (and used twins), now that no rule of ours
 *      references them. A set that cannot be destroyed (a foreign rule uses it) is left with a warning.
 * So sets exist before the rules that use them and are destroyed only after the rules that used them.
 * Every apply is serialised with the previous one.
 *
 * Knowing the kernel state (as Felix does): after a successful apply the applier keeps a view of what the
 * kernel holds — the tables and sets of its last read, updated with what it wrote since (per chain its
 * rules and hashes, per set its header and canonical members, the hooks) — and plans the next apply
 * against that view, so a steady-state apply reads nothing and runs only the writes it needs (none for a
 * no-op). It reads the kernel (`iptables-save -t filter` and `ipset save`, in parallel, once) instead when
 * there is no view (first apply, restart), the previous apply failed (any error drops the view: a restore
 * may have been applied partly), the last read is `resyncMs` old or more (default 30 s: the periodic full
 * read that catches drift by other tools or hands), after invalidate(), and in the rare cases the view
 * cannot decide (a set type change, whose way depends on every rule that uses the set; a hook into a
 * kernel chain the view does not have). Validation, rendering and hashing are memoised per chain (name +
 * rules) and per set (name + type + members), and the plan per chain object it has seen, so an apply
 * costs in proportion to what changed. For the same kernel and desired state the plan is the one a
 * full read gives.
 *
 * Errors: a failing command (CommandFailedError, with stderr) is rethrown as a FilterApplyError that names
 * the chain or set of the failing input line (iptables-restore and ipset report the line number).
 */
import { createHash } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import { CommandFailedError, ValidationError } from '../lib/errors.js';
import type { CommandRunner } from '../lib/exec.js';
import { silentLogger, type Logger } from '../lib/log.js';
import { formatAddress, formatCidr, parseCidr } from '../lib/cidr.js';
import { ALL_POOLS_SET, MASQ_POOLS_SET, type ChainSpec, type DesiredFilterState, type FilterApplyReport, type IpsetSpec, type PolicyDataplane } from './policy-types.js';

export const CHAIN_PREFIX = 'cali-';
export const IPSET_PREFIX = 'cali40';
export const TEMP_IPSET_PREFIX = 'cali4t';
export const IPSET6_PREFIX = 'cali60';
export const TEMP_IPSET6_PREFIX = 'cali6t';
/** The comment on every hook jump this module inserts. */
export const HOOK_COMMENT = 'cali:hook';
/** Our comments (rule hashes, hooks, older hook comments) all start with this. */
export const OWNED_COMMENT_PREFIX = 'cali:';
/** Bump to make every chain be rewritten once (when the rendering of rules changes). */
const RENDER_VERSION = '1';
const HASH_LENGTH = 16;
const MAX_CHAIN_NAME = 28;
const MAX_SET_NAME = 31;
const DEFAULT_MAXELEM = 65536;

export const IPTABLES_SAVE_ARGV: readonly string[] = ['iptables-save', '-t', 'filter'];
export const IPSET_SAVE_ARGV: readonly string[] = ['ipset', 'save'];
/** `-w 10`: wait for the xtables lock (legacy backend) instead of failing at once; ignored by nf_tables. */
export const IPTABLES_RESTORE_ARGV: readonly string[] = ['iptables-restore', '--noflush', '-w', '10'];
export const IPSET_RESTORE_ARGV: readonly string[] = ['ipset', '-exist', 'restore'];

export type IpFamily = 4 | 6;

/** What differs between the IPv4 and the IPv6 instance. */
interface FamilyProfile {
  setPrefix: string;
  tempPrefix: string;
  /** `family` of `ipset create`. */
  ipsetFamily: 'inet' | 'inet6';
  saveArgv: readonly string[];
  restoreArgv: readonly string[];
}

const FAMILY: Record<IpFamily, FamilyProfile> = {
  4: { setPrefix: IPSET_PREFIX, tempPrefix: TEMP_IPSET_PREFIX, ipsetFamily: 'inet', saveArgv: IPTABLES_SAVE_ARGV, restoreArgv: IPTABLES_RESTORE_ARGV },
  6: {
    setPrefix: IPSET6_PREFIX,
    tempPrefix: TEMP_IPSET6_PREFIX,
    ipsetFamily: 'inet6',
    saveArgv: ['ip6tables-save', '-t', 'filter'],
    restoreArgv: ['ip6tables-restore', '--noflush', '-w', '10'],
  },
};

/**
 * What one applier owns besides its family: a table, and which of the family's sets (with their twins)
 * are its own. Two appliers run side by side (filter and nat); each sweeps only its own sets, so the sets
 * of one are never destroyed as stale by the other.
 */
export interface ApplierScope {
  table: 'filter' | 'nat';
  /** Whether a set name (the desired name, never a twin's) belongs to this applier. */
  ownsSet(name: string): boolean;
}

/** The ipsets the nat-table applier owns (Felix's names); every other set is the filter table's. */
export const NAT_IPSET_NAMES: ReadonlySet<string> = new Set([MASQ_POOLS_SET, ALL_POOLS_SET]);
export const FILTER_SCOPE: ApplierScope = { table: 'filter', ownsSet: (name) => !NAT_IPSET_NAMES.has(name) };
export const NAT_SCOPE: ApplierScope = { table: 'nat', ownsSet: (name) => NAT_IPSET_NAMES.has(name) };

/** The family a set name belongs to (`cali6…` is IPv6, everything else IPv4). */
export function setFamily(name: string): IpFamily {
  return name.startsWith(IPSET6_PREFIX) || name.startsWith(TEMP_IPSET6_PREFIX) ? 6 : 4;
}

// ---------------------------------------------------------------------------------------------------
// Tokens

/** Splits a rule like iptables-restore does: whitespace-separated, double quotes group (with `\"`). */
export function tokenizeRule(rule: string): string[] {
  if (!rule.includes('"')) return rule.split(/\s+/).filter((t) => t !== ''); // the common case, fast
  const out: string[] = [];
  let cur = '';
  let inToken = false;
  let quoted = false;
  for (let i = 0; i < rule.length; i++) {
    const ch = rule[i] as string;
    if (quoted) {
      if (ch === '\\' && rule[i + 1] === '"') {
        cur += '"';
        i++;
      } else if (ch === '"') {
        quoted = false;
      } else {
        cur += ch;
      }
    } else if (ch === '"') {
      quoted = true;
      inToken = true;
    } else if (/\s/.test(ch)) {
      if (inToken) out.push(cur);
      cur = '';
      inToken = false;
    } else {
      cur += ch;
      inToken = true;
    }
  }
  if (inToken) out.push(cur);
  return out;
}

/** Values following any of `options` in a token list (e.g. the targets of `-j`/`-g`). */
function optionValues(tokens: readonly string[], options: readonly string[]): string[] {
  const out: string[] = [];
  tokens.forEach((t, i) => {
    const next = tokens[i + 1];
    if (options.includes(t) && next !== undefined) out.push(next);
  });
  return out;
}

const JUMP_OPTIONS = ['-j', '--jump', '-g', '--goto'] as const;
const SET_OPTIONS = ['--match-set', '--set'] as const;

function jumpTargets(tokens: readonly string[]): string[] {
  return optionValues(tokens, JUMP_OPTIONS);
}
function comments(tokens: readonly string[]): string[] {
  return optionValues(tokens, ['--comment']);
}
function setRefs(tokens: readonly string[]): string[] {
  return optionValues(tokens, SET_OPTIONS);
}

// ---------------------------------------------------------------------------------------------------
// Reading: iptables-save and ipset save

export interface ParsedChain {
  name: string;
  /** `ACCEPT`/`DROP` for built-in chains, `-` for user chains. */
  policy: string;
  /** Each rule as iptables-save prints it after `-A <chain> `. */
  rules: string[];
}

export interface ParsedFilterTable {
  /** In the order iptables-save lists them. */
  chains: Map<string, ParsedChain>;
}

/** Parses the `*filter` section of `iptables-save` output (other tables, comments and counters ignored). */
export function parseIptablesSave(text: string, table = 'filter'): ParsedFilterTable {
  const chains = new Map<string, ParsedChain>();
  let inTable = false;
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) continue;
    if (line.startsWith('*')) {
      inTable = line.slice(1) === table;
      continue;
    }
    if (!inTable) continue;
    if (line === 'COMMIT') {
      inTable = false;
      continue;
    }
    if (line.startsWith(':')) {
      const [name, policy] = line.slice(1).split(/\s+/);
      if (name) chains.set(name, { name, policy: policy ?? '-', rules: [] });
      continue;
    }
    // With -c, rules start with their counters: "[p:b] -A chain ...".
    const m = /^(?:\[\d+:\d+\]\s+)?-A\s+(\S+)(?:\s+(.*))?$/.exec(line);
    if (m) {
      const name = m[1] as string;
      let chain = chains.get(name);
      if (!chain) {
        chain = { name, policy: '-', rules: [] };
        chains.set(name, chain);
      }
      chain.rules.push((m[2] ?? '').replace(/\s+/g, ' '));
    }
  }
  return { chains };
}

export interface ParsedIpset {
  name: string;
  type: string;
  /** The header options after the type, as `ipset save` prints them (`family inet hashsize 1024 ...`). */
  options: string[];
  /** Canonical members (see canonicalMembers); unparsable ones as printed. */
  members: string[];
}

export type ParsedIpsets = Map<string, ParsedIpset>;

/** Parses `ipset save` (= `ipset list -o save`) output: `create <name> <type> <options>` and `add <name> <member> ...`. */
export function parseIpsetSave(text: string): ParsedIpsets {
  const sets: ParsedIpsets = new Map();
  for (const raw of text.split('\n')) {
    const parts = raw.trim().split(/\s+/);
    const [cmd, name, arg, ...rest] = parts;
    if (!name || !arg) continue;
    if (cmd === 'create') {
      sets.set(name, { name, type: arg, options: rest, members: [] });
    } else if (cmd === 'add') {
      const set = sets.get(name);
      if (!set) continue;
      const canon = tryCanonicalMember(arg);
      set.members.push(...(canon ?? [arg]));
    }
  }
  return sets;
}

// ---------------------------------------------------------------------------------------------------
// Rendering

/** The hash comments of a chain's rules, in order (each depends on the chain, the rule and the one before). */
export function ruleHashes(chain: string, rules: readonly string[]): string[] {
  let prev = `${RENDER_VERSION}:${chain}`;
  return rules.map((rule) => {
    const h = createHash('sha224').update(prev).update('\0').update(rule).digest('base64url').slice(0, HASH_LENGTH);
    prev = h;
    return h;
  });
}

/** A chain's iptables-restore lines: `-A <chain> -m comment --comment "cali:<hash>" <rule>` each. */
export function renderChainRules(chain: ChainSpec, hashes: readonly string[] = ruleHashes(chain.name, chain.rules)): string[] {
  return chain.rules.map((rule, i) => `-A ${chain.name} -m comment --comment "${OWNED_COMMENT_PREFIX}${hashes[i] ?? ''}" ${rule}`);
}

/** The hash comment of a saved rule, if it has one of ours. */
export function savedRuleHash(rule: string): string | undefined {
  if (!rule.includes(OWNED_COMMENT_PREFIX)) return undefined;
  for (const c of comments(tokenizeRule(rule))) {
    const m = HASH_COMMENT_RE.exec(c);
    if (m) return m[1];
  }
  return undefined;
}
const HASH_COMMENT_RE = new RegExp(`^${OWNED_COMMENT_PREFIX}([A-Za-z0-9_-]{${HASH_LENGTH}})$`);

/** The hook jump as it follows `-I <kernel chain> 1 ` (and as iptables-save prints it after `-A <chain> `). */
export function hookRuleSpec(target: string): string {
  return `-m comment --comment "${HOOK_COMMENT}" -j ${target}`;
}

/** A rule in a non-`cali-` chain that is ours: jumps to a `cali-` chain and carries a `cali:` comment. */
export function isOwnedHookRule(rule: string): boolean {
  const tokens = tokenizeRule(rule);
  return (
    jumpTargets(tokens).some((t) => t.startsWith(CHAIN_PREFIX)) && comments(tokens).some((c) => c.startsWith(OWNED_COMMENT_PREFIX))
  );
}

function isHookFor(rule: string, target: string): boolean {
  return tokenizeRule(rule).join(' ') === tokenizeRule(hookRuleSpec(target)).join(' ');
}

export function tempSetName(name: string): string {
  return FAMILY[setFamily(name)].tempPrefix + name.slice(IPSET_PREFIX.length);
}

/** A set of this family and scope, or the twin of one. */
function isOwnedSet(name: string, family: IpFamily = 4, scope: ApplierScope = FILTER_SCOPE): boolean {
  const { setPrefix, tempPrefix } = FAMILY[family];
  if (name.startsWith(setPrefix)) return scope.ownsSet(name);
  return name.startsWith(tempPrefix) && scope.ownsSet(setPrefix + name.slice(tempPrefix.length));
}

function isTwinName(name: string): boolean {
  return name.startsWith(TEMP_IPSET_PREFIX) || name.startsWith(TEMP_IPSET6_PREFIX);
}

// ---------------------------------------------------------------------------------------------------
// Validation and normalisation of the desired state

const CHAIN_NAME_RE = /^cali-[A-Za-z0-9_.:-]+$/;
const SET_NAME_RE: Record<IpFamily, RegExp> = { 4: /^cali40[A-Za-z0-9_.:-]+$/, 6: /^cali60[A-Za-z0-9_.:-]+$/ };
const KERNEL_CHAIN_RE = /^[A-Za-z0-9_-]+$/;
/** Tokens that would turn a rule into another command (they cannot appear in a rule's own arguments). */
const COMMAND_TOKENS = new Set([
  '-A', '--append', '-I', '--insert', '-D', '--delete', '-R', '--replace', '-N', '--new-chain', '-X', '--delete-chain',
  '-F', '--flush', '-P', '--policy', '-E', '--rename-chain', '-Z', '--zero', '-t', '--table',
]);

function parseIpv4(text: string): { addr: number; prefix: number } | undefined {
  const m = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})(?:\/(\d{1,2}))?$/.exec(text);
  if (!m) return undefined;
  const octets = [m[1], m[2], m[3], m[4]].map((o) => o as string);
  if (octets.some((o) => (o.length > 1 && o.startsWith('0')) || Number(o) > 255)) return undefined;
  const prefix = m[5] === undefined ? 32 : Number(m[5]);
  if (prefix > 32 || (m[5] !== undefined && m[5].length > 1 && m[5].startsWith('0'))) return undefined;
  const addr = octets.reduce((a, o) => a * 256 + Number(o), 0);
  return { addr, prefix };
}

function formatIpv4(addr: number): string {
  return [24, 16, 8, 0].map((s) => Math.floor(addr / 2 ** s) % 256).join('.');
}

function maskIpv4(addr: number, prefix: number): number {
  const size = 2 ** (32 - prefix);
  return addr - (addr % size);
}

/** Canonical form of a member as `ipset save` prints it: host bits cleared, `/32` dropped; /0 as two /1s. */
function tryCanonicalMember(text: string): string[] | undefined {
  const p = parseIpv4(text);
  if (!p) return undefined;
  if (p.prefix === 0) return ['0.0.0.0/1', '128.0.0.0/1'];
  const net = formatIpv4(maskIpv4(p.addr, p.prefix));
  return [p.prefix === 32 ? net : `${net}/${p.prefix}`];
}

/** IPv6 members as `ipset save` prints them (RFC 5952, `/128` dropped; /0 as two /1s). */
function canonicalMembers6(set: IpsetSpec, where: string): string[] {
  const out = new Set<string>();
  set.members.forEach((m, i) => {
    const text = m.includes('/') ? m : `${m}/128`;
    let c: ReturnType<typeof parseCidr> | undefined;
    try {
      c = parseCidr(text);
    } catch {
      c = undefined;
    }
    if (!c || c.family !== 6) throw new ValidationError(`${where}.members[${i}]`, `${JSON.stringify(m)} is not an IPv6 address or CIDR`);
    if (set.type === 'hash:ip' && c.prefix !== 128) {
      throw new ValidationError(`${where}.members[${i}]`, `${m}: a hash:ip set holds single addresses; use a hash:net set for CIDRs`);
    }
    if (c.prefix === 0) ['::/1', '8000::/1'].forEach((x) => out.add(x));
    else out.add(c.prefix === 128 ? formatAddress(6, c.base) : formatCidr(c));
  });
  return [...out].sort();
}

/** The members of a desired set in canonical form, deduplicated and sorted. Throws ValidationError. */
export function canonicalMembers(set: IpsetSpec, where = `ipset ${set.name}`): string[] {
  if (setFamily(set.name) === 6) return canonicalMembers6(set, where);
  const out = new Set<string>();
  set.members.forEach((m, i) => {
    const p = parseIpv4(m);
    if (!p) throw new ValidationError(`${where}.members[${i}]`, `${JSON.stringify(m)} is not an IPv4 address or CIDR`);
    if (set.type === 'hash:ip' && p.prefix !== 32) {
      throw new ValidationError(`${where}.members[${i}]`, `${m}: a hash:ip set holds single addresses; use a hash:net set for CIDRs`);
    }
    for (const c of tryCanonicalMember(m) ?? []) out.add(c);
  });
  return [...out].sort();
}

interface NormalisedSet {
  name: string;
  type: IpsetSpec['type'];
  members: string[];
  maxelem: number;
}

/** One desired chain, validated, with its rendered restore lines and rule hashes. */
export interface NormalisedChain {
  spec: ChainSpec;
  lines: string[];
  hashes: string[];
}

/** A validated desired state, with each chain's rendered lines and hashes (from normaliseDesired). */
export interface NormalisedDesired {
  chains: Map<string, NormalisedChain>;
  sets: Map<string, NormalisedSet>;
  hooks: Map<string, string>;
  scope: ApplierScope;
}

/** A memoised chain: what normaliseDesired computed, plus the cross-references its validation depends on. */
interface MemoChain extends NormalisedChain {
  /** `cali-` chains its rules jump to and `cali40`/`cali4t` sets they match (must be desired too). */
  chainRefs: string[];
  setRefs: string[];
}

interface MemoSet {
  type: string;
  /** The members as given (a private copy). */
  input: string[];
  set: NormalisedSet;
}

/**
 * What normaliseDesired() validated and rendered last time, per chain (by name and rules) and per set (by
 * name, type and members), so that an unchanged chain is neither re-tokenised nor re-hashed and an
 * unchanged set not re-canonicalised. Holds only the chains and sets of the last successful call.
 */
export class NormaliseMemo {
  chains = new Map<string, MemoChain>();
  sets = new Map<string, MemoSet>();
}

function sameStrings(a: readonly string[], b: readonly string[]): boolean {
  if (a === b) return true;
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

function nextPow2(n: number): number {
  let p = 1;
  while (p < n) p *= 2;
  return p;
}

/**
 * Validates `desired` (names, rule text, references, members) and precomputes what planning needs.
 * With a `memo`, a chain whose name and rules equal the memo's (and whose referenced chains and sets are
 * still desired) and a set whose name, type and members equal the memo's are taken from it as they are;
 * the result, and any error, are the same as without it. On success the memo keeps this call's entries.
 */
export function normaliseDesired(desired: DesiredFilterState, memo?: NormaliseMemo, family: IpFamily = 4, scope: ApplierScope = FILTER_SCOPE): NormalisedDesired {
  const sets = new Map<string, NormalisedSet>();
  const memoSets = new Map<string, MemoSet>();
  desired.ipsets.forEach((s, i) => {
    const where = `ipsets[${i}]`;
    if (!SET_NAME_RE[family].test(s.name) || s.name.length > MAX_SET_NAME) {
      throw new ValidationError(`${where}.name`, `${JSON.stringify(s.name)} must be "${FAMILY[family].setPrefix}" followed by [A-Za-z0-9_.:-], at most ${MAX_SET_NAME} characters`);
    }
    if (!scope.ownsSet(s.name)) throw new ValidationError(`${where}.name`, `ipset ${s.name} belongs to another table's applier, not the ${scope.table} table's`);
    if (s.type !== 'hash:net' && s.type !== 'hash:ip') throw new ValidationError(`${where}.type`, `${JSON.stringify(s.type)} must be hash:net or hash:ip`);
    if (sets.has(s.name)) throw new ValidationError(where, `ipset ${s.name} is listed twice`);
    const prev = memo?.sets.get(s.name);
    if (prev && prev.type === s.type && sameStrings(prev.input, s.members)) {
      sets.set(s.name, prev.set);
      memoSets.set(s.name, prev);
      return;
    }
    const members = canonicalMembers(s, where);
    const set: NormalisedSet = { name: s.name, type: s.type, members, maxelem: Math.max(DEFAULT_MAXELEM, nextPow2(members.length)) };
    sets.set(s.name, set);
    if (memo) memoSets.set(s.name, { type: s.type, input: [...s.members], set });
  });

  const names = new Set<string>();
  desired.chains.forEach((c, i) => {
    if (!CHAIN_NAME_RE.test(c.name) || c.name.length > MAX_CHAIN_NAME) {
      throw new ValidationError(`chains[${i}].name`, `${JSON.stringify(c.name)} must be "${CHAIN_PREFIX}" followed by [A-Za-z0-9_.:-], at most ${MAX_CHAIN_NAME} characters`);
    }
    if (names.has(c.name)) throw new ValidationError(`chains[${i}]`, `chain ${c.name} is listed twice`);
    names.add(c.name);
  });

  const chains = new Map<string, MemoChain>();
  desired.chains.forEach((c, i) => {
    const prev = memo?.chains.get(c.name);
    if (prev && sameStrings(prev.spec.rules, c.rules) && prev.chainRefs.every((t) => names.has(t)) && prev.setRefs.every((t) => sets.has(t))) {
      chains.set(c.name, prev); // validated before against the same rules; its references still hold
      return;
    }
    const chainRefs: string[] = [];
    const setRefs: string[] = [];
    c.rules.forEach((rule, j) => {
      const fail = (reason: string): never => {
        throw new ValidationError(`chains[${i}] (${c.name}).rules[${j}]`, reason);
      };
      if (/[\r\n\0]/.test(rule)) fail('a rule must be on one line');
      const tokens = tokenizeRule(rule);
      if (tokens.length === 0) fail('empty rule');
      tokens.forEach((t, k) => {
        if (COMMAND_TOKENS.has(t)) fail(`${JSON.stringify(rule)}: give only the rule's arguments, without ${t}`);
        const prev = tokens[k - 1];
        if (prev === undefined) return;
        if ((JUMP_OPTIONS as readonly string[]).includes(prev) && t.startsWith(CHAIN_PREFIX)) {
          if (!names.has(t)) fail(`jumps to ${t}, which is not among the desired chains`);
          chainRefs.push(t);
        }
        if ((SET_OPTIONS as readonly string[]).includes(prev) && isOwnedSet(t, family, scope)) {
          if (!sets.has(t)) fail(`matches ipset ${t}, which is not among the desired ipsets`);
          setRefs.push(t);
        }
      });
    });
    const hashes = ruleHashes(c.name, c.rules);
    const spec: ChainSpec = { name: c.name, rules: [...c.rules] };
    chains.set(c.name, { spec, lines: renderChainRules(spec, hashes), hashes, chainRefs, setRefs });
  });

  const hooks = new Map<string, string>();
  for (const [kernelChain, target] of Object.entries(desired.hooks)) {
    if (!KERNEL_CHAIN_RE.test(kernelChain) || kernelChain.startsWith(CHAIN_PREFIX)) {
      throw new ValidationError(`hooks.${kernelChain}`, 'hooks go from a chain that is not ours (FORWARD, INPUT, OUTPUT, ...) into a cali- chain');
    }
    if (!names.has(target)) throw new ValidationError(`hooks.${kernelChain}`, `target ${JSON.stringify(target)} is not among the desired chains`);
    hooks.set(kernelChain, target);
  }
  if (memo) {
    memo.chains = new Map(chains);
    memo.sets = memoSets;
  }
  return { chains, sets, hooks, scope };
}

// ---------------------------------------------------------------------------------------------------
// The plan (pure)

/** One restore input and, for error messages, which chain or set each of its lines belongs to. */
class Script {
  readonly lines: string[] = [];
  readonly owners: string[] = [];
  push(owner: string, ...lines: string[]): void {
    for (const l of lines) {
      this.lines.push(l);
      this.owners.push(owner);
    }
  }
  get empty(): boolean {
    return this.lines.length === 0;
  }
  text(): string {
    return this.lines.join('\n') + '\n';
  }
}

export interface FilterPlan {
  /** Step 1, `ipset -exist restore`: creates, member deltas, swaps; undefined if no set changes. */
  ipsetInput?: string;
  /** Steps 2-3, only for a type change of a referenced set: iptables detour onto the twin, then re-create. */
  detourRestoreInput?: string;
  detourIpsetInput?: string;
  /** Step 4, `iptables-restore --noflush`; undefined if the table needs no change. */
  restoreInput?: string;
  /** Step 5: sets to destroy once the rules no longer reference them. */
  deleteSetsAfter: string[];
  /** Chains created, rewritten or deleted, and kernel chains whose hook jump was inserted or removed (sorted). */
  changedChains: string[];
  /** Desired sets created or changed, and stale `cali40` sets to destroy (sorted). */
  changedSets: string[];
  /** For each input above, the chain or set each line (index = line number - 1) belongs to. */
  lineOwners: { ipset: string[]; detourRestore: string[]; detourIpset: string[]; restore: string[] };
  /** Things left alone on purpose (e.g. a stale chain someone else's rule still jumps to). */
  warnings: string[];
}

const KNOWN_SET_OPTIONS = new Set(['family', 'hashsize', 'maxelem', 'bucketsize', 'initval']);

function headerOption(set: ParsedIpset, key: string): string | undefined {
  const i = set.options.indexOf(key);
  return i >= 0 ? set.options[i + 1] : undefined;
}

/** Can the existing set be brought to `want` by adding and deleting members? */
function deltaCompatible(cur: ParsedIpset, want: NormalisedSet): boolean {
  if (cur.type !== want.type || (headerOption(cur, 'family') ?? 'inet') !== FAMILY[setFamily(want.name)].ipsetFamily) return false;
  const maxelem = Number(headerOption(cur, 'maxelem') ?? DEFAULT_MAXELEM);
  if (!(maxelem >= want.members.length)) return false;
  for (let i = 0; i < cur.options.length; i++) {
    const k = cur.options[i] as string;
    if (!KNOWN_SET_OPTIONS.has(k)) return false; // timeout, counters, comment, netmask, ...
    i++; // skip its value
  }
  return true;
}

/** Can `want` be built aside and swapped in? (The kernel swaps only sets of the same type and family.) */
function swapCompatible(cur: ParsedIpset, want: NormalisedSet): boolean {
  return cur.type === want.type && (headerOption(cur, 'family') ?? 'inet') === FAMILY[setFamily(want.name)].ipsetFamily;
}

function createLine(name: string, s: NormalisedSet): string {
  return `create ${name} ${s.type} family ${FAMILY[setFamily(s.name)].ipsetFamily} maxelem ${s.maxelem}`;
}

/**
 * What planning needs to know about a chain of the current table, computed once per ParsedChain object
 * (a chain the planner saw before, e.g. in FilterApplier's cached view, is not tokenised again).
 * ParsedChain objects are treated as immutable: a changed chain is a new object.
 */
interface ChainFacts {
  /** The rules array these facts were computed from (a different or resized array invalidates them). */
  rules: readonly string[];
  length: number;
  /** savedRuleHash of each rule. */
  hashes?: readonly (string | undefined)[];
  /** Whether a rule matches a `cali4t` set (a twin left by an interrupted detour). */
  usesTwin?: boolean;
  /** Every jump/goto target of its rules, in order. */
  targets?: readonly string[];
  /** Its owned hook jumps (isOwnedHookRule), in order. */
  ownedHooks?: readonly string[];
  /** Its other rules that jump somewhere, with their targets. */
  foreignJumps?: readonly { rule: string; targets: readonly string[] }[];
}
const chainFacts = new WeakMap<ParsedChain, ChainFacts>();

function factsOf(c: ParsedChain): ChainFacts {
  let f = chainFacts.get(c);
  if (!f || f.rules !== c.rules || f.length !== c.rules.length) {
    f = { rules: c.rules, length: c.rules.length };
    chainFacts.set(c, f);
  }
  return f;
}
function hashesOf(c: ParsedChain): readonly (string | undefined)[] {
  const f = factsOf(c);
  return (f.hashes ??= c.rules.map(savedRuleHash));
}
function usesTwinOf(c: ParsedChain): boolean {
  const f = factsOf(c);
  return (f.usesTwin ??= c.rules.some((r) => (r.includes(TEMP_IPSET_PREFIX) || r.includes(TEMP_IPSET6_PREFIX)) && setRefs(tokenizeRule(r)).some(isTwinName)));
}
function targetsOf(c: ParsedChain): readonly string[] {
  const f = factsOf(c);
  return (f.targets ??= c.rules.flatMap((r) => jumpTargets(tokenizeRule(r))));
}
function ownedHooksOf(c: ParsedChain): readonly string[] {
  const f = factsOf(c);
  return (f.ownedHooks ??= c.rules.filter(isOwnedHookRule));
}
function foreignJumpsOf(c: ParsedChain): readonly { rule: string; targets: readonly string[] }[] {
  const f = factsOf(c);
  return (f.foreignJumps ??= c.rules
    .filter((r) => !isOwnedHookRule(r))
    .map((rule) => ({ rule, targets: jumpTargets(tokenizeRule(rule)) }))
    .filter((j) => j.targets.length > 0));
}

/**
 * Sets known to hold exactly a desired set (members, and a header deltaCompatible with it): entries of
 * FilterApplier's cached view, made after an apply from the NormalisedSet they now hold. Planning skips
 * the member diff for them when the desired set is that same (memoised) object.
 */
const setsInSync = new WeakMap<ParsedIpset, NormalisedSet>();

/** Whether any rule of the table matches the set (its name after --match-set). */
function tableReferencesSet(table: ParsedFilterTable, set: string): boolean {
  for (const c of table.chains.values()) {
    for (const r of c.rules) if (setRefs(tokenizeRule(r)).includes(set)) return true;
  }
  return false;
}

function byName(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

function escapeRe(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

/**
 * Pure diff between what the kernel holds (`current`, `currentSets`) and `desired`: the restore inputs
 * that change exactly what differs, in the order FilterApplier runs them. Throws ValidationError for an
 * invalid desired state or a hook into a chain the table does not have.
 */
export function planFilterUpdate(
  current: ParsedFilterTable,
  currentSets: ParsedIpsets,
  desired: DesiredFilterState,
  family: IpFamily = 4,
  scope: ApplierScope = FILTER_SCOPE,
): FilterPlan {
  return planNormalised(current, currentSets, normaliseDesired(desired, undefined, family, scope), family);
}

/** planFilterUpdate for a state normaliseDesired() already validated. */
export function planNormalised(current: ParsedFilterTable, currentSets: ParsedIpsets, want: NormalisedDesired, family: IpFamily = 4): FilterPlan {
  const changedChains = new Set<string>();
  const changedSets = new Set<string>();
  const warnings: string[] = [];

  // --- ipsets -----------------------------------------------------------------------------------
  const ipset = new Script();
  const detourIpset = new Script();
  const detoured = new Map<string, string>(); // set -> twin rebuilt with the new type
  const usedTwins = new Set<string>(); // twins still referenced after step 4 → destroyed in step 5
  const handledTwins = new Set<string>(); // existing twins the script itself destroys or reuses
  for (const s of [...want.sets.values()].sort((a, b) => a.name.localeCompare(b.name))) {
    const cur = currentSets.get(s.name);
    if (cur && setsInSync.get(cur) === s) continue; // holds exactly this set already
    const twin = tempSetName(s.name);
    const adds = (name: string): string[] => s.members.map((m) => `add ${name} ${m}`);
    if (!cur) {
      ipset.push(s.name, createLine(s.name, s), ...adds(s.name));
      changedSets.add(s.name);
      continue;
    }
    if (deltaCompatible(cur, s)) {
      const have = new Set(cur.members);
      const wanted = new Set(s.members);
      const dels = cur.members.filter((m) => !wanted.has(m));
      const news = s.members.filter((m) => !have.has(m));
      if (dels.length + news.length === 0) continue;
      // Deletions first: in between, the set is smaller rather than larger (fail closed for allow-lists)
      // and never exceeds maxelem. A member in both lists is never touched.
      ipset.push(s.name, ...dels.map((m) => `del ${s.name} ${m}`), ...news.map((m) => `add ${s.name} ${m}`));
      changedSets.add(s.name);
      continue;
    }
    changedSets.add(s.name);
    if (currentSets.has(twin)) {
      ipset.push(s.name, `destroy ${twin}`); // left by an interrupted apply
      handledTwins.add(twin);
    }
    if (swapCompatible(cur, s)) {
      ipset.push(s.name, createLine(twin, s), ...adds(twin), `swap ${twin} ${s.name}`, `destroy ${twin}`);
    } else if (!tableReferencesSet(current, s.name)) {
      ipset.push(s.name, `destroy ${s.name}`, createLine(s.name, s), ...adds(s.name));
    } else {
      ipset.push(s.name, createLine(twin, s), ...adds(twin));
      detourIpset.push(s.name, `destroy ${s.name}`, createLine(s.name, s), ...adds(s.name));
      detoured.set(s.name, twin);
      usedTwins.add(twin);
    }
  }
  const deleteSetsAfter: string[] = [];
  for (const name of [...currentSets.keys()].sort()) {
    if (!isOwnedSet(name, family, want.scope)) continue;
    if (name.startsWith(FAMILY[family].setPrefix) && !want.sets.has(name)) {
      deleteSetsAfter.push(name);
      changedSets.add(name);
    } else if (name.startsWith(FAMILY[family].tempPrefix) && !handledTwins.has(name)) {
      deleteSetsAfter.push(name); // a twin left by an interrupted apply
    }
  }
  for (const twin of usedTwins) deleteSetsAfter.push(twin);

  // --- iptables: detour (rare) --------------------------------------------------------------------
  const detourRestore = new Script();
  const detouredChains = new Set<string>();
  if (detoured.size > 0) {
    detourRestore.push('', `*${want.scope.table}`);
    for (const c of current.chains.values()) {
      if (!c.name.startsWith(CHAIN_PREFIX)) continue;
      const uses = c.rules.some((r) => setRefs(tokenizeRule(r)).some((s) => detoured.has(s)));
      if (!uses) continue;
      detouredChains.add(c.name);
      const rules = c.rules.map((r) => {
        let out = r;
        for (const [set, twin] of detoured) out = out.replace(new RegExp(`(--match-set\\s+)${escapeRe(set)}(?=\\s|$)`, 'g'), `$1${twin}`);
        return `-A ${c.name} ${out}`;
      });
      detourRestore.push(c.name, `:${c.name} - [0:0]`, ...rules);
    }
    detourRestore.push('', 'COMMIT');
  }

  // --- iptables: the main transaction -------------------------------------------------------------
  const decls = new Script();
  const hookDels = new Script();
  const adds = new Script();
  const hookInserts = new Script();
  const deletes = new Script();

  for (const [name, c] of want.chains) {
    const cur = current.chains.get(name);
    if (cur) {
      const hashes = hashesOf(cur);
      const same =
        (hashes === c.hashes || (hashes.length === c.hashes.length && hashes.every((h, i) => h === c.hashes[i]))) &&
        !detouredChains.has(name) &&
        !usesTwinOf(cur);
      if (same) continue;
    }
    decls.push(name, `:${name} - [0:0]`);
    adds.push(name, ...c.lines);
    changedChains.add(name);
  }

  // Hooks: exactly one owned jump per hooked kernel chain, in first position; no other owned jumps anywhere.
  for (const [kernelChain, target] of want.hooks) {
    if (!current.chains.has(kernelChain)) {
      throw new ValidationError(`hooks.${kernelChain}`, `the ${want.scope.table} table has no chain ${kernelChain}`);
    }
  }
  for (const c of current.chains.values()) {
    if (c.name.startsWith(CHAIN_PREFIX)) continue;
    const target = want.hooks.get(c.name);
    const owned = ownedHooksOf(c);
    const first = c.rules[0];
    const ok = target !== undefined ? owned.length === 1 && first !== undefined && isHookFor(first, target) : owned.length === 0;
    if (ok) continue;
    for (const r of owned) hookDels.push(c.name, `-D ${c.name} ${r}`);
    if (target !== undefined) hookInserts.push(c.name, `-I ${c.name} 1 ${hookRuleSpec(target)}`);
    changedChains.add(c.name);
  }

  // Stale chains: flush (by declaring) and delete, unless a rule we do not own still jumps to one. In name
  // order (as iptables-save lists user chains), so the plan does not depend on how `current` was built.
  const stale = [...current.chains.keys()].filter((n) => n.startsWith(CHAIN_PREFIX) && !want.chains.has(n)).sort(byName);
  const keep = new Set<string>();
  const staleSet = new Set(stale);
  const pending: string[] = [];
  for (const c of current.chains.values()) {
    if (c.name.startsWith(CHAIN_PREFIX)) continue;
    for (const { rule: r, targets } of foreignJumpsOf(c)) {
      for (const t of targets) {
        if (staleSet.has(t) && !keep.has(t)) {
          keep.add(t);
          pending.push(t);
          warnings.push(`chain ${t} is no longer wanted but "-A ${c.name} ${r}" (not ours) jumps to it: left in place`);
        }
      }
    }
  }
  while (pending.length > 0) {
    const chain = current.chains.get(pending.pop() as string);
    for (const t of chain ? targetsOf(chain) : []) {
      if (staleSet.has(t) && !keep.has(t)) {
        keep.add(t);
        pending.push(t);
      }
    }
  }
  for (const name of stale) {
    if (keep.has(name)) continue;
    decls.push(name, `:${name} - [0:0]`);
    deletes.push(name, `-X ${name}`);
    changedChains.add(name);
  }

  const restore = new Script();
  if (!decls.empty || !hookDels.empty || !hookInserts.empty) {
    restore.push('', `*${want.scope.table}`);
    for (const part of [decls, hookDels, adds, hookInserts, deletes]) part.lines.forEach((l, i) => restore.push(part.owners[i] ?? '', l));
    restore.push('', 'COMMIT');
  }

  return {
    ...(ipset.empty ? {} : { ipsetInput: ipset.text() }),
    ...(detourRestore.empty ? {} : { detourRestoreInput: detourRestore.text(), detourIpsetInput: detourIpset.text() }),
    ...(restore.empty ? {} : { restoreInput: restore.text() }),
    deleteSetsAfter,
    changedChains: [...changedChains].sort(),
    changedSets: [...changedSets].sort(),
    lineOwners: { ipset: ipset.owners, detourRestore: detourRestore.owners, detourIpset: detourIpset.owners, restore: restore.owners },
    warnings,
  };
}

// ---------------------------------------------------------------------------------------------------
// Errors

/** A restore that failed, naming the chains or sets of the failing line (still a CommandFailedError). */
export class FilterApplyError extends CommandFailedError {
  constructor(
    /** What was being done: e.g. "writing iptables chain cali-tw-x". */
    readonly what: string,
    /** The chains or sets the failure is attributed to. */
    readonly objects: readonly string[],
    cause: CommandFailedError,
  ) {
    super(cause.argv, cause.exitCode, cause.signal, cause.stderr);
    this.message = `${what} failed: ${cause.message}`;
    this.cause = cause;
  }
}

/** The 1-based line a restore's stderr blames ("Error occurred at line: 4", "line 4: ...", "Error in line 4:"). */
export function failedLine(stderr: string): number | undefined {
  const m = /\bline:?\s+(\d+)/i.exec(stderr);
  return m ? Number(m[1]) : undefined;
}

function blame(err: CommandFailedError, owners: readonly string[], kind: 'iptables chain' | 'ipset'): { what: string; objects: string[] } {
  const line = failedLine(err.stderr);
  const owner = line !== undefined ? owners[line - 1] : undefined;
  if (owner) return { what: `${kind === 'ipset' ? 'updating ipset' : 'writing iptables chain'} ${owner} (input line ${line})`, objects: [owner] };
  const all = [...new Set(owners.filter((o) => o !== ''))];
  const shown = all.slice(0, 5).join(', ') + (all.length > 5 ? ` and ${all.length - 5} more` : '');
  return { what: `${kind === 'ipset' ? 'updating ipsets' : 'writing iptables chains'} ${shown}`, objects: all };
}

// ---------------------------------------------------------------------------------------------------
// The cached view of the kernel

/**
 * What the kernel holds, as FilterApplier plans against: the tables and sets of its last full read, with
 * the effect of every successful apply since then applied to them (our chains as we wrote them, with
 * their hashes known; hooks; sets with the members we gave them). Foreign chains, rules and sets are as
 * last read: what changed since (drift) is seen at the next full read.
 */
interface KernelView {
  table: ParsedFilterTable;
  sets: ParsedIpsets;
  /** When (options.now) the kernel was last read. */
  readAt: number;
}

/** A chain as this applier writes it (rule text as rendered after `-A <chain> `), its hashes known. */
function writtenChain(name: string, want: NormalisedChain, policy = '-'): ParsedChain {
  const prefix = `-A ${name} `.length;
  const chain: ParsedChain = { name, policy, rules: want.lines.map((l) => l.slice(prefix)) };
  chainFacts.set(chain, { rules: chain.rules, length: chain.rules.length, hashes: want.hashes, usesTwin: false });
  return chain;
}

/**
 * The view after `plan` was carried out on `base` completely (every restore succeeded; `notDestroyed`:
 * sets step 5 could not destroy). Undefined when it cannot be derived exactly (a detour: chains of the
 * table were rewritten onto twins; a set left that the view does not know), so the next apply reads.
 */
function viewAfter(base: KernelView, want: NormalisedDesired, plan: FilterPlan, notDestroyed: ReadonlySet<string>, family: IpFamily): KernelView | undefined {
  if (plan.detourRestoreInput !== undefined || plan.detourIpsetInput !== undefined) return undefined;
  if ([...notDestroyed].some((n) => !base.sets.has(n))) return undefined;
  if (plan.changedChains.length + plan.changedSets.length + plan.deleteSetsAfter.length === 0) return base;

  const changed = new Set(plan.changedChains);
  const chains = new Map<string, ParsedChain>();
  for (const [name, c] of base.table.chains) {
    if (!changed.has(name)) {
      chains.set(name, c);
    } else if (name.startsWith(CHAIN_PREFIX)) {
      const w = want.chains.get(name);
      if (w) chains.set(name, writtenChain(name, w, c.policy)); // rewritten; otherwise stale and deleted
    } else {
      // A kernel chain whose hook jumps were fixed: every owned jump deleted, ours inserted at 1.
      const target = want.hooks.get(name);
      const rules = [...(target !== undefined ? [hookRuleSpec(target)] : []), ...c.rules.filter((r) => !isOwnedHookRule(r))];
      chains.set(name, { name, policy: c.policy, rules });
    }
  }
  for (const [name, w] of want.chains) if (!chains.has(name)) chains.set(name, writtenChain(name, w)); // created

  const sets: ParsedIpsets = new Map();
  for (const [name, cur] of base.sets) {
    // Owned sets that are not desired were destroyed (step 1 for twins it handled, step 5 otherwise).
    if (!isOwnedSet(name, family, want.scope) || notDestroyed.has(name)) sets.set(name, cur);
  }
  for (const s of want.sets.values()) {
    const cur = base.sets.get(s.name);
    let next: ParsedIpset;
    if (cur && setsInSync.get(cur) === s) next = cur;
    // Members changed in place: the header is as it was read.
    else if (cur && deltaCompatible(cur, s)) next = { name: s.name, type: cur.type, options: cur.options, members: s.members };
    // Created, re-created or swapped in: the header we gave it (the kernel adds only known options to it).
    else next = { name: s.name, type: s.type, options: ['family', FAMILY[family].ipsetFamily, 'maxelem', String(s.maxelem)], members: s.members };
    setsInSync.set(next, s);
    sets.set(s.name, next);
  }
  return { table: { chains }, sets, readAt: base.readAt };
}

// ---------------------------------------------------------------------------------------------------
// The applier

/** Default FilterApplierOptions.resyncMs. */
export const DEFAULT_RESYNC_MS = 30_000;

export interface FilterApplierOptions {
  log?: Logger;
  /**
   * How long (ms) after reading the kernel the applier keeps planning against its cached view instead of
   * reading again (default 30 s). A full read every so often catches drift (other tools, hand edits);
   * 0 reads on every apply.
   */
  resyncMs?: number;
  /** The clock for resyncMs, in ms (default performance.now: monotonic); for tests. */
  now?: () => number;
  /** Which filter table and sets (default 4: iptables and `cali40*`; 6: ip6tables and `cali60*`). */
  family?: IpFamily;
  /** The table and sets this applier owns (default FILTER_SCOPE). */
  scope?: ApplierScope;
}

export class FilterApplier implements PolicyDataplane {
  private readonly log: Logger;
  private readonly resyncMs: number;
  private readonly now: () => number;
  private last: Promise<unknown> = Promise.resolve();
  private readonly memo = new NormaliseMemo();
  /** The kernel as of the last successful apply; undefined until the first, after a failure, or invalidate(). */
  private view: KernelView | undefined;
  readonly family: IpFamily;
  private readonly profile: FamilyProfile;
  private readonly scope: ApplierScope;

  constructor(
    private readonly runner: CommandRunner,
    options: FilterApplierOptions = {},
  ) {
    this.scope = options.scope ?? FILTER_SCOPE;
    this.log = (options.log ?? silentLogger).child({ component: `${this.scope.table}-applier${options.family === 6 ? '-ipv6' : ''}` });
    this.resyncMs = options.resyncMs ?? DEFAULT_RESYNC_MS;
    this.now = options.now ?? (() => performance.now());
    this.family = options.family ?? 4;
    this.profile = FAMILY[this.family];
  }

  apply(desired: DesiredFilterState): Promise<FilterApplyReport> {
    // Validate (and snapshot) before queueing, so a bad desired state fails at once and touches nothing.
    let want: NormalisedDesired;
    try {
      want = normaliseDesired(desired, this.memo, this.family, this.scope);
    } catch (err) {
      return Promise.reject(err);
    }
    const run = this.last.then(
      () => this.doApply(want),
      () => this.doApply(want),
    );
    this.last = run.catch(() => undefined);
    return run;
  }

  /** Forgets the cached view: the next apply reads the kernel (e.g. after something else changed it). */
  invalidate(): void {
    this.view = undefined;
  }

  /** Reads the kernel's filter table and ipsets (the only commands a no-op apply with no usable cache runs). */
  async readState(): Promise<{ table: ParsedFilterTable; sets: ParsedIpsets }> {
    const { table } = this.scope;
    const saveArgv = table === 'filter' ? this.profile.saveArgv : [this.profile.saveArgv[0] ?? 'iptables-save', '-t', table];
    const [save, sets] = await Promise.all([this.runner.run(saveArgv), this.runner.run(IPSET_SAVE_ARGV)]);
    return { table: parseIptablesSave(save.stdout, table), sets: parseIpsetSave(sets.stdout) };
  }

  /** The plan against the cached view, or why the kernel must be read instead. */
  private planFromView(want: NormalisedDesired, now: number): { base: KernelView; plan: FilterPlan } | { reason: string } {
    const base = this.view;
    if (!base) return { reason: 'no cached state' };
    const age = now - base.readAt;
    if (!(age >= 0 && age < this.resyncMs)) return { reason: 'resync' };
    for (const kernelChain of want.hooks.keys()) {
      if (!base.table.chains.has(kernelChain)) return { reason: `hook chain ${kernelChain} not in the cached table` };
    }
    for (const s of want.sets.values()) {
      const cur = base.sets.get(s.name);
      // A type change: whether a rule (maybe a foreign one) uses the set decides the way; ask the kernel.
      if (cur && !swapCompatible(cur, s)) return { reason: `type change of ipset ${s.name}` };
    }
    let plan: FilterPlan;
    try {
      plan = planNormalised(base.table, base.sets, want, this.family);
    } catch (err) {
      return { reason: `planning against the cache failed: ${String(err)}` };
    }
    if (plan.detourRestoreInput !== undefined) return { reason: 'detour' };
    return { base, plan };
  }

  private async doApply(want: NormalisedDesired): Promise<FilterApplyReport> {
    const started = Date.now();
    const now = this.now();
    const cached = this.planFromView(want, now);
    // Until this apply has succeeded, nothing is cached: any failure below makes the next apply read.
    this.view = undefined;
    let base: KernelView;
    let plan: FilterPlan;
    if ('plan' in cached) {
      ({ base, plan } = cached);
    } else {
      this.log.debug('reading the kernel state', { reason: cached.reason });
      const { table, sets } = await this.readState();
      base = { table, sets, readAt: now };
      plan = planNormalised(table, sets, want, this.family);
    }
    for (const w of plan.warnings) this.log.warn(w);

    await this.restore(IPSET_RESTORE_ARGV, plan.ipsetInput, plan.lineOwners.ipset, 'ipset');
    await this.restore(this.profile.restoreArgv, plan.detourRestoreInput, plan.lineOwners.detourRestore, 'iptables chain');
    await this.restore(IPSET_RESTORE_ARGV, plan.detourIpsetInput, plan.lineOwners.detourIpset, 'ipset');
    await this.restore(this.profile.restoreArgv, plan.restoreInput, plan.lineOwners.restore, 'iptables chain');
    const notDestroyed = await this.destroySets(plan.deleteSetsAfter);
    this.view = viewAfter(base, want, plan, notDestroyed, this.family);

    const report: FilterApplyReport = {
      changedChains: plan.changedChains,
      changedSets: plan.changedSets.filter((s) => !notDestroyed.has(s)),
    };
    const fields = { chains: report.changedChains.length, sets: report.changedSets.length, cached: 'plan' in cached, ms: Date.now() - started };
    if (report.changedChains.length + report.changedSets.length > 0) this.log.info(`${this.scope.table} table updated`, fields);
    else this.log.debug(`${this.scope.table} table up to date`, fields);
    return report;
  }

  private async restore(argv: readonly string[], input: string | undefined, owners: readonly string[], kind: 'iptables chain' | 'ipset'): Promise<void> {
    if (input === undefined) return;
    try {
      await this.runner.run(argv, { input });
    } catch (err) {
      if (!(err instanceof CommandFailedError)) throw err;
      const { what, objects } = blame(err, owners, kind);
      const wrapped = new FilterApplyError(what, objects, err);
      this.log.error('filter update failed', { err: wrapped });
      throw wrapped;
    }
  }

  /**
   * Destroys sets in one `ipset restore`; `ipset restore` stops at the first failing line, so on failure
   * that set is skipped (left with a warning: something not ours still uses it) and the rest retried.
   * Returns the sets that could not be destroyed.
   */
  private async destroySets(names: readonly string[]): Promise<Set<string>> {
    const failed = new Set<string>();
    let rest = [...names];
    while (rest.length > 0) {
      try {
        await this.runner.run(IPSET_RESTORE_ARGV, { input: rest.map((n) => `destroy ${n}`).join('\n') + '\n' });
        return failed;
      } catch (err) {
        if (!(err instanceof CommandFailedError)) throw err;
        const line = failedLine(err.stderr);
        const culprit = line !== undefined ? rest[line - 1] : undefined;
        if (culprit === undefined) {
          // Cannot tell which one: try each once.
          for (const n of rest) {
            try {
              await this.runner.run(['ipset', 'destroy', n]);
            } catch (e) {
              if (e instanceof CommandFailedError && /does not exist/.test(e.stderr)) continue;
              failed.add(n);
              this.log.warn('cannot destroy ipset; left in place', { set: n, err: e });
            }
          }
          return failed;
        }
        failed.add(culprit);
        this.log.warn('cannot destroy ipset (still in use by something that is not ours?); left in place', { set: culprit, stderr: err.stderr.trim() });
        rest = rest.slice((line ?? 1));
      }
    }
    return failed;
  }
}
