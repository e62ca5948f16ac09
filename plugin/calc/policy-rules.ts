/**
 * Pure: datastore snapshot (endpoints, profiles, policies) → the filter-table state of one IP family
 * (iptables for IPv4, ip6tables for IPv6: `input.family`) that enforces Calico policy on this node's
 * workloads (Felix's rule renderer, reduced to what calico-ts needs).
 * No exec, no datastore: dataplane/ diffs `DesiredFilterState` against the kernel and applies it.
 *
 * Chains (all rules are the arguments that follow `-A <chain>` in iptables-restore input):
 *
 *   FORWARD → cali-FORWARD
 *     -i cali+ -j MARK --set-xmark 0x0/0x30000        clear accept + pass bits (cali traffic only)
 *     -i cali+ -j cali-from-wl-dispatch               egress policy of the source workload
 *     -o cali+ -j MARK --set-xmark 0x0/0x30000        egress verdict consumed: clear again
 *     -o cali+ -j cali-to-wl-dispatch                 ingress policy of the destination workload
 *     -i cali+ -m mark --mark 0x10000/0x10000 -j ACCEPT
 *     -o cali+ -m mark --mark 0x10000/0x10000 -j ACCEPT
 *     -i cali+ -j DROP ; -o cali+ -j DROP             defence in depth: cali traffic never falls through
 *   INPUT → cali-INPUT:   -i cali+ -j cali-wl-to-host
 *   cali-wl-to-host:      clear bits; -j cali-from-wl-dispatch; accepted → ACCEPT
 *                         (Calico's DefaultEndpointToHostAction=ACCEPT, after the workload's egress
 *                         policy); else DROP
 *   OUTPUT → cali-OUTPUT: -o cali+ -j RETURN  (host → local workload is allowed: nothing blocks it)
 *   cali-from-wl-dispatch: -i <if> -g cali-fw-<if> per local endpoint, then DROP (unknown cali interface:
 *                         fail closed until its chains exist); cali-to-wl-dispatch likewise with -o/tw.
 *
 * Endpoint chains cali-fw-<if> (egress policy) / cali-tw-<if> (ingress policy):
 *     -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
 *     -m conntrack --ctstate INVALID -j DROP
 *     -j cali-pi-<policy>  |  -j cali-gi-<hash>       the endpoint's policies, when it has any
 *     -m mark --mark 0x20000/0x30000 -j cali-pri-<p>  per profile (0x0/0x10000 when no policy applies)
 *     -m mark --mark 0x0/0x10000 -j DROP              nothing accepted
 *   ending with the accept bit set (fall off the end = RETURN) or dropped. An endpoint with neither
 *   profiles nor policies gets a plain DROP after the conntrack rules (isolated).
 *
 * Marks, as Felix: 0x10000 = "accepted", 0x20000 = "passed". The callers (cali-FORWARD,
 * cali-wl-to-host) clear both bits before each dispatch, so a local → local packet is judged by the
 * source's egress and then, afresh, by the destination's ingress. Instead of Felix's "RETURN if
 * accepted" after every jump, the later jumps are conditional on the mark: a profile runs only if a
 * policy passed (0x20000 set, 0x10000 clear) or no policy applies; the final rule drops unless the
 * accept bit is set. That gives "first Allow/Deny wins, Pass skips to the profiles, a policy applied
 * but nothing matched → drop, no profile matched → drop" with 4 + (number of profiles) rules per
 * endpoint chain.
 *
 * Policy chains cali-pi-<id> (ingress rules) / cali-po-<id> (egress rules), one per policy and shared
 * by every endpoint it applies to; profile chains cali-pri-<name> / cali-pro-<name> likewise. Inside:
 *     Allow: <match> -j MARK --set-xmark 0x10000/0x10000, then -m mark --mark 0x10000/0x10000 -j RETURN
 *     Pass:  <match> -j MARK --set-xmark 0x20000/0x20000, then -m mark --mark 0x20000/0x20000 -j RETURN
 *     Deny:  <match> -j DROP
 *     Log:   <match> -j LOG --log-prefix "calico-packet: "     (and carry on)
 *   Pass inside a profile ends that profile; the next profile (if any) is tried, then the final drop.
 *
 * Policy groups cali-gi-<hash> / cali-go-<hash> (Felix's policy groups, keyed by the whole ordered
 * list): an endpoint with two or more applicable policies jumps to one chain holding
 *     -j cali-pi-A ; -m mark --mark 0x0/0x30000 -j cali-pi-B ; ...
 * shared by every endpoint with the same list. So the rule count is
 *     ~12 per endpoint + Σ rules of the policies/profiles in use + Σ lengths of distinct policy lists
 * — never endpoints × policies unless every endpoint has its own distinct list.
 *
 * Ipsets: `cali40s:<uniqueId>` (hash:ip) per rule selector / notSelector, holding the IPv4 addresses
 * of every endpoint on every host whose effective labels match; `cali40n:<hash>` (hash:net) per list
 * of nets with more than one entry (a single net is a plain -s/-d, a single notNet `! -s`/`! -d` unless
 * the rule already has that flag). A /0 among nets drops the condition; among notNets, the rule.
 *
 * Each rule is written with its matches in the order iptables-save prints them (-s, -d, -p, then
 * modules), so iptables-save reads it back byte-for-byte (protocol numbers aside, printed as names).
 * Positive port lists beyond one multiport (15 slots, a range takes two) become one rule per chunk;
 * negative ones become several `! --dports` matches in the same rule.
 *
 * Only policies that apply to a local endpoint and profiles a local endpoint uses are rendered
 * (as Felix: inactive ones cost nothing), but every policy and profile given is validated; an
 * invalid rule throws ValidationError naming the resource and field.
 *
 * Output is deterministic (chains and ipsets sorted by name, members sorted), and names depend only
 * on the thing named: editing one policy's rules changes only its cali-pi/po chain (and ipsets its
 * rules use); endpoint/dispatch chains change only when the set of policies an endpoint has changes.
 *
 * IPv6 (family 6): the same chains in ip6tables' filter table, ipsets `cali60s:` / `cali60n:` (family
 * inet6) holding endpoints' IPv6 addresses and IPv6 nets. A rule is rendered into a family's table when it
 * can match there: ipVersion, protocol ICMP (4) / ICMPv6 (6) and its nets decide (a rule whose `nets` are
 * all of the other family is left out; notNets of the other family are ignored). `icmp` matches become
 * `-m icmp6 --icmpv6-type`. cali-wl-to-host first accepts the ICMPv6 types of neighbour and router
 * discovery and MLD (130-133, 135, 136), as Felix does: without them a workload could not resolve its
 * gateway, whatever its egress policy says. Traffic between workloads is judged exactly as in IPv4.
 *
 * Not here: anti-spoofing (left to rp_filter), named ports, NetworkPolicy namespace scoping of
 * rule selectors (all calico-ts workloads live in namespace "default").
 */
import { createHash } from 'node:crypto';
import type { EntityRule, IcmpMatch, Policy, PolicyType, Profile, Rule, WorkloadEndpoint } from '../datastore/model.js';
import type { ChainSpec, DesiredFilterState, IpsetSpec } from '../dataplane/policy-types.js';
import { formatCidr, parseAddress, parseCidr } from '../lib/cidr.js';
import { ValidationError } from '../lib/errors.js';
import { compareCodePoints, parseSelector, type Selector } from './selector.js';

export interface FilterStateInput {
  /** This node's name (informational; `localEndpoints` are taken as given). */
  node: string;
  /** Which table to compute: 4 (iptables, the default) or 6 (ip6tables). */
  family?: IpFamily;
  /** Endpoints on this node: they get dispatch and endpoint chains. */
  localEndpoints: WorkloadEndpoint[];
  /** Endpoints of every host (local ones may be repeated): they fill the selector ipsets. */
  allEndpoints: WorkloadEndpoint[];
  profiles: Profile[];
  policies: Policy[];
}

/** Mark bit set by a policy/profile chain that accepted the packet. */
export const MARK_ACCEPT = 0x10000;
/** Mark bit set by a policy chain whose rule said Pass: skip the other policies, go to the profiles. */
export const MARK_PASS = 0x20000;

export const CHAIN = {
  forward: 'cali-FORWARD',
  input: 'cali-INPUT',
  output: 'cali-OUTPUT',
  wlToHost: 'cali-wl-to-host',
  fromWlDispatch: 'cali-from-wl-dispatch',
  toWlDispatch: 'cali-to-wl-dispatch',
} as const;

/** iptables' limit on chain names. */
export const MAX_CHAIN_NAME = 28;
/** The kernel's limit on ipset names. */
export const MAX_IPSET_NAME = 31;
/** `-m multiport` takes at most 15 ports, a range counting as two. */
export const MULTIPORT_MAX = 15;
export const LOG_PREFIX = 'calico-packet: ';

const HEX = (n: number): string => `0x${n.toString(16)}`;
const BOTH = MARK_ACCEPT | MARK_PASS;
const CLEAR_MARKS = `-j MARK --set-xmark 0x0/${HEX(BOTH)}`;
const SET_ACCEPT = `-j MARK --set-xmark ${HEX(MARK_ACCEPT)}/${HEX(MARK_ACCEPT)}`;
const SET_PASS = `-j MARK --set-xmark ${HEX(MARK_PASS)}/${HEX(MARK_PASS)}`;
const IF_ACCEPTED = `-m mark --mark ${HEX(MARK_ACCEPT)}/${HEX(MARK_ACCEPT)}`;
const IF_PASSED = `-m mark --mark ${HEX(MARK_PASS)}/${HEX(MARK_PASS)}`;
const IF_NOT_ACCEPTED = `-m mark --mark 0x0/${HEX(MARK_ACCEPT)}`;
/** Neither accepted nor passed: the next policy still has a say. */
const IF_UNDECIDED = `-m mark --mark 0x0/${HEX(BOTH)}`;
/** Passed and not accepted: the profiles have a say. */
const IF_PASSED_ONLY = `-m mark --mark ${HEX(MARK_PASS)}/${HEX(BOTH)}`;
const comment = (text: string): string => `-m comment --comment "${text}"`;

export type IpFamily = 4 | 6;
/** ICMPv6 a workload must be able to send its host whatever its policy: MLD (130-132), router solicitation
 * (133), neighbour solicitation/advertisement (135, 136). */
const NDP_ICMPV6_TYPES = [130, 131, 132, 133, 135, 136];

// ---------------------------------------------------------------------------------------------
// Names

function shortHash(text: string, length: number): string {
  return createHash('sha224').update(text).digest('base64url').slice(0, length);
}

const SAFE_ID = /^[A-Za-z0-9.-]+$/;

/**
 * `prefix + id` when the id is short and plain; otherwise `prefix + <readable start>_<hash>`. Plain
 * ids never contain `_`, so a hashed name cannot collide with a plain one.
 */
function limitedName(prefix: string, id: string, max: number): string {
  const room = max - prefix.length;
  if (id.length <= room && SAFE_ID.test(id)) return prefix + id;
  const hash = shortHash(id, 12);
  const readable = id.replace(/[^A-Za-z0-9.-]/g, '').slice(0, room - hash.length - 1);
  return `${prefix}${readable}_${hash}`;
}

/** Identity of a policy: its name, namespaced for a NetworkPolicy. */
export function policyKey(p: Pick<Policy, 'kind' | 'name' | 'namespace'>): string {
  return p.kind === 'NetworkPolicy' ? `${p.namespace ?? 'default'}/${p.name}` : p.name;
}

/** cali-pi-<id> (ingress rules) / cali-po-<id> (egress rules). */
export function policyChainName(p: Pick<Policy, 'kind' | 'name' | 'namespace'>, direction: PolicyType): string {
  return limitedName(direction === 'Ingress' ? 'cali-pi-' : 'cali-po-', policyKey(p), MAX_CHAIN_NAME);
}

/** cali-pri-<name> (ingress rules) / cali-pro-<name> (egress rules). */
export function profileChainName(name: string, direction: PolicyType): string {
  return limitedName(direction === 'Ingress' ? 'cali-pri-' : 'cali-pro-', name, MAX_CHAIN_NAME);
}

/** cali-fw-<if> (from workload: egress policy) / cali-tw-<if> (to workload: ingress policy). */
export function endpointChainName(interfaceName: string, direction: 'from' | 'to'): string {
  return limitedName(direction === 'from' ? 'cali-fw-' : 'cali-tw-', interfaceName, MAX_CHAIN_NAME);
}

function groupChainName(policyChains: readonly string[], direction: PolicyType): string {
  const prefix = direction === 'Ingress' ? 'cali-gi-' : 'cali-go-';
  return prefix + shortHash(policyChains.join('\n'), MAX_CHAIN_NAME - prefix.length);
}

/** `cali40s:` (`cali60s:` for IPv6) + the start of the selector's Calico unique ID (as Felix names its ipsets). */
export function selectorIpsetName(sel: Selector, family: IpFamily = 4): string {
  return `cali${family}0${sel.uniqueId()}`.slice(0, MAX_IPSET_NAME);
}

/** `cali40n:` (`cali60n:`) + a hash of the (normalised, sorted) nets. */
export function netsIpsetName(nets: readonly string[], family: IpFamily = 4): string {
  const prefix = `cali${family}0n:`;
  return prefix + shortHash(nets.join(','), MAX_IPSET_NAME - prefix.length);
}

// ---------------------------------------------------------------------------------------------
// Validation and normalisation of rule fields

interface Proto {
  /** What follows `-p`: a name iptables knows without /etc/protocols, or a number. */
  arg: string;
  ports: boolean;
  icmp4: boolean;
  icmp6: boolean;
}

const NAMED_PROTOCOLS: Record<string, Proto> = {
  tcp: { arg: 'tcp', ports: true, icmp4: false, icmp6: false },
  udp: { arg: 'udp', ports: true, icmp4: false, icmp6: false },
  sctp: { arg: 'sctp', ports: true, icmp4: false, icmp6: false },
  udplite: { arg: 'udplite', ports: true, icmp4: false, icmp6: false },
  icmp: { arg: 'icmp', ports: false, icmp4: true, icmp6: false },
  icmpv6: { arg: '58', ports: false, icmp4: false, icmp6: true },
};
const PROTOCOL_NUMBERS: Record<number, string> = { 1: 'icmp', 6: 'tcp', 17: 'udp', 58: 'icmpv6', 132: 'sctp', 136: 'udplite' };
const PROTOCOL_HELP = 'must be TCP, UDP, ICMP, ICMPv6, SCTP, UDPLite or a protocol number 1-255';

function parseProtocol(value: string | number, field: string): Proto {
  let n: number | undefined;
  if (typeof value === 'number') n = value;
  else if (/^[0-9]+$/.test(value)) n = Number(value);
  if (n !== undefined) {
    if (!Number.isInteger(n) || n < 1 || n > 255) throw new ValidationError(field, PROTOCOL_HELP);
    const name = PROTOCOL_NUMBERS[n];
    return name ? NAMED_PROTOCOLS[name]! : { arg: String(n), ports: false, icmp4: false, icmp6: false };
  }
  const named = typeof value === 'string' ? NAMED_PROTOCOLS[value.toLowerCase()] : undefined;
  if (!named) throw new ValidationError(field, PROTOCOL_HELP);
  return named;
}

interface PortRange {
  from: number;
  to: number;
}

function parsePort(value: number | string, field: string): PortRange {
  const bad = (): ValidationError =>
    new ValidationError(field, `${JSON.stringify(value)} is not a port: use a number 0-65535 or a range "from:to" (named ports are not supported)`);
  const num = (s: string): number => {
    if (!/^[0-9]{1,5}$/.test(s)) throw bad();
    const n = Number(s);
    if (n > 65535) throw bad();
    return n;
  };
  if (typeof value === 'number') {
    if (!Number.isInteger(value) || value < 0 || value > 65535) throw bad();
    return { from: value, to: value };
  }
  if (typeof value !== 'string') throw bad();
  const m = /^([^:]+):([^:]+)$/.exec(value);
  if (!m) {
    const n = num(value);
    return { from: n, to: n };
  }
  const from = num(m[1]!);
  const to = num(m[2]!);
  if (from > to) throw new ValidationError(field, `port range ${JSON.stringify(value)} runs backwards: write it "${to}:${from}"`);
  return { from, to };
}

interface Net {
  kind: IpFamily;
  /** Normalised: host bits cleared, always with a prefix length (IPv6 in RFC 5952 form). */
  text: string;
  prefix: number;
}

function parseNet(value: unknown, field: string): Net {
  const bad = (): ValidationError => new ValidationError(field, `${JSON.stringify(value)} is not a CIDR such as 10.0.0.0/8 or fd00::/64`);
  if (typeof value !== 'string') throw bad();
  if (value.includes(':')) {
    let c: ReturnType<typeof parseCidr>;
    try {
      c = parseCidr(value.includes('/') ? value : `${value}/128`);
    } catch {
      throw bad();
    }
    if (c.family !== 6) throw bad();
    return { kind: 6, text: formatCidr(c), prefix: c.prefix };
  }
  const m = /^([0-9]{1,3})\.([0-9]{1,3})\.([0-9]{1,3})\.([0-9]{1,3})(?:\/([0-9]{1,2}))?$/.exec(value);
  if (!m) throw bad();
  const octets = [m[1], m[2], m[3], m[4]].map(Number);
  if (octets.some((o) => o > 255)) throw bad();
  const prefix = m[5] === undefined ? 32 : Number(m[5]);
  if (prefix > 32) throw bad();
  const addr = octets.reduce((acc, o) => acc * 256 + o, 0);
  const size = 2 ** (32 - prefix);
  const net = Math.floor(addr / size) * size;
  return { kind: 4, text: `${ipv4ToString(net)}/${prefix}`, prefix };
}

function ipv4ToString(n: number): string {
  return [24, 16, 8, 0].map((s) => Math.floor(n / 2 ** s) % 256).join('.');
}

function addressToNumber(text: string): bigint {
  return parseAddress(text.split('/')[0]!).value;
}

function parseIcmp(match: IcmpMatch, field: string): IcmpMatch {
  if (typeof match !== 'object' || match === null) throw new ValidationError(field, 'must be an object with type and optional code');
  const { type, code } = match;
  if (type === undefined && code === undefined) throw new ValidationError(field, 'needs a type (and optionally a code)');
  if (type === undefined) throw new ValidationError(`${field}.code`, 'a code needs a type: set type as well');
  if (!Number.isInteger(type) || type < 0 || type > 254) throw new ValidationError(`${field}.type`, 'must be an integer 0-254');
  if (code !== undefined && (!Number.isInteger(code) || code < 0 || code > 255)) {
    throw new ValidationError(`${field}.code`, 'must be an integer 0-255');
  }
  return { type, code };
}

function parseRuleSelector(text: unknown, field: string): Selector {
  if (typeof text !== 'string') throw new ValidationError(field, 'must be a selector string');
  try {
    return parseSelector(text);
  } catch (err) {
    if (err instanceof ValidationError) throw new ValidationError(field, err.message.replace(/^selector: /, ''));
    throw err;
  }
}

/** A rule's source or destination, checked and normalised (both families; a table takes its own). */
interface Entity {
  /** null: no constraint; otherwise the nets of both families (none of a family: cannot match there). */
  nets: Net[] | null;
  /** Both families; a /0 of the table's family means the rule can never match there. */
  notNets: Net[];
  selector: Selector | null;
  notSelector: Selector | null;
  ports: PortRange[] | null;
  notPorts: PortRange[];
}

function parseEntity(e: EntityRule | undefined, field: string): Entity {
  const out: Entity = { nets: null, notNets: [], selector: null, notSelector: null, ports: null, notPorts: [] };
  if (e === undefined) return out;
  if (typeof e !== 'object' || e === null) throw new ValidationError(field, 'must be an object');
  const list = <T>(v: T[] | undefined, f: string): T[] | undefined => {
    if (v === undefined) return undefined;
    if (!Array.isArray(v)) throw new ValidationError(f, 'must be a list');
    return v;
  };
  const nets = list(e.nets, `${field}.nets`);
  if (nets !== undefined && nets.length > 0) {
    out.nets = nets.map((n, i) => parseNet(n, `${field}.nets[${i}]`));
  }
  const notNets = list(e.notNets, `${field}.notNets`);
  if (notNets !== undefined) {
    out.notNets = notNets.map((n, i) => parseNet(n, `${field}.notNets[${i}]`));
  }
  if (e.selector !== undefined) out.selector = parseRuleSelector(e.selector, `${field}.selector`);
  if (e.notSelector !== undefined) out.notSelector = parseRuleSelector(e.notSelector, `${field}.notSelector`);
  const ports = list(e.ports, `${field}.ports`);
  if (ports !== undefined && ports.length > 0) out.ports = ports.map((p, i) => parsePort(p, `${field}.ports[${i}]`));
  const notPorts = list(e.notPorts, `${field}.notPorts`);
  if (notPorts !== undefined) out.notPorts = notPorts.map((p, i) => parsePort(p, `${field}.notPorts[${i}]`));
  return out;
}

/** A rule, checked; `null` fields are absent. */
interface ParsedRule {
  action: Rule['action'];
  /** Whether the rule may match in the IPv4 / IPv6 table (ipVersion and ICMP/ICMPv6 decide). */
  ipv4: boolean;
  ipv6: boolean;
  protocol: Proto | null;
  notProtocol: Proto | null;
  icmp: IcmpMatch | null;
  notICMP: IcmpMatch | null;
  source: Entity;
  destination: Entity;
}

const ACTIONS: readonly Rule['action'][] = ['Allow', 'Deny', 'Log', 'Pass'];

function parseRule(rule: Rule, field: string): ParsedRule {
  if (typeof rule !== 'object' || rule === null) throw new ValidationError(field, 'must be an object');
  if (!ACTIONS.includes(rule.action)) throw new ValidationError(`${field}.action`, 'must be Allow, Deny, Log or Pass');
  if (rule.ipVersion !== undefined && rule.ipVersion !== 4 && rule.ipVersion !== 6) {
    throw new ValidationError(`${field}.ipVersion`, 'must be 4 or 6');
  }
  const protocol = rule.protocol === undefined ? null : parseProtocol(rule.protocol, `${field}.protocol`);
  const notProtocol = rule.notProtocol === undefined ? null : parseProtocol(rule.notProtocol, `${field}.notProtocol`);
  const icmp = rule.icmp === undefined ? null : parseIcmp(rule.icmp, `${field}.icmp`);
  const notICMP = rule.notICMP === undefined ? null : parseIcmp(rule.notICMP, `${field}.notICMP`);
  if ((icmp || notICMP) && !(protocol?.icmp4 || protocol?.icmp6)) {
    throw new ValidationError(`${field}.${icmp ? 'icmp' : 'notICMP'}`, 'needs protocol ICMP (or ICMPv6): set protocol as well');
  }
  if (protocol?.icmp6 && rule.ipVersion === 4) {
    throw new ValidationError(`${field}.protocol`, 'ICMPv6 cannot be used with ipVersion 4');
  }
  if (protocol?.icmp4 && rule.ipVersion === 6) {
    throw new ValidationError(`${field}.protocol`, 'ICMP cannot be used with ipVersion 6: use ICMPv6');
  }
  const source = parseEntity(rule.source, `${field}.source`);
  const destination = parseEntity(rule.destination, `${field}.destination`);
  for (const [name, e] of [['source', source], ['destination', destination]] as const) {
    for (const key of ['ports', 'notPorts'] as const) {
      const given = key === 'ports' ? e.ports !== null : e.notPorts.length > 0;
      if (given && !protocol?.ports) {
        throw new ValidationError(`${field}.${name}.${key}`, 'ports need protocol TCP, UDP, SCTP or UDPLite: set protocol as well');
      }
    }
  }
  return {
    action: rule.action,
    ipv4: rule.ipVersion !== 6 && !protocol?.icmp6,
    ipv6: rule.ipVersion !== 4 && !protocol?.icmp4,
    protocol,
    notProtocol,
    icmp,
    notICMP,
    source,
    destination,
  };
}

/** Throws ValidationError (field = `<field>.<path>`) when the rule cannot be enforced. */
export function validateRule(rule: Rule, field = 'rule'): void {
  parseRule(rule, field);
}

// ---------------------------------------------------------------------------------------------
// Rendering rules

/** Collects the ipsets the rendered rules refer to. */
class IpsetRegistry {
  readonly selectors = new Map<string, Selector>();
  readonly nets = new Map<string, string[]>();

  constructor(readonly family: IpFamily) {}

  selector(sel: Selector): string {
    const name = selectorIpsetName(sel, this.family);
    this.selectors.set(name, sel);
    return name;
  }

  netList(nets: readonly Net[]): string {
    const members = sortNets(new Set(nets.map((n) => n.text)));
    const name = netsIpsetName(members, this.family);
    this.nets.set(name, members);
    return name;
  }
}

/** Addresses / CIDRs in numeric order (then by prefix length). Decorated once: sets can be large. */
function sortNets(items: Iterable<string>): string[] {
  return [...items]
    .map((text) => {
      const slash = text.indexOf('/');
      return { text, n: addressToNumber(text), len: slash < 0 ? 128 : Number(text.slice(slash + 1)) };
    })
    .sort((a, b) => (a.n < b.n ? -1 : a.n > b.n ? 1 : a.len - b.len))
    .map((x) => x.text);
}

function portsArg(ranges: readonly PortRange[]): string {
  return ranges.map((r) => (r.from === r.to ? String(r.from) : `${r.from}:${r.to}`)).join(',');
}

/** Splits into multiport-sized chunks: a range takes two of the 15 slots. */
function chunkPorts(ranges: readonly PortRange[]): PortRange[][] {
  const chunks: PortRange[][] = [];
  let current: PortRange[] = [];
  let used = 0;
  for (const r of ranges) {
    const cost = r.from === r.to ? 1 : 2;
    if (used + cost > MULTIPORT_MAX) {
      chunks.push(current);
      current = [];
      used = 0;
    }
    current.push(r);
    used += cost;
  }
  if (current.length > 0) chunks.push(current);
  return chunks;
}

function dedupePorts(ranges: readonly PortRange[]): PortRange[] {
  const seen = new Map<string, PortRange>();
  for (const r of ranges) seen.set(`${r.from}:${r.to}`, r);
  return [...seen.values()].sort((a, b) => a.from - b.from || a.to - b.to);
}

function icmpArg(m: IcmpMatch): string {
  return m.code === undefined ? String(m.type) : `${m.type}/${m.code}`;
}

/**
 * The match part(s) of a rule: several when positive port lists need more than one multiport
 * (alternatives: OR), none when the rule cannot match a packet of the registry's family.
 */
function renderMatches(r: ParsedRule, sets: IpsetRegistry): string[] {
  const family = sets.family;
  if (!(family === 4 ? r.ipv4 : r.ipv6)) return [];
  // Built-in matches first, in the order iptables-save prints them (-s, -d, -p), then modules:
  // the rendered rule reads back byte-for-byte from `iptables-save`.
  const addresses: string[] = [];
  const modules: string[] = [];
  let protocol = '';
  if (r.protocol) protocol = `-p ${r.protocol.arg}`;
  if (r.notProtocol) {
    if (r.protocol) {
      if (r.protocol.arg === r.notProtocol.arg) return [];
      // `-p tcp` already excludes any other protocol; iptables takes only one -p.
    } else {
      protocol = `! -p ${r.notProtocol.arg}`;
    }
  }
  for (const [e, flag, dir] of [
    [r.source, '-s', 'src'],
    [r.destination, '-d', 'dst'],
  ] as const) {
    let addressFlagUsed = false;
    if (e.nets !== null) {
      const nets = e.nets.filter((n) => n.kind === family);
      if (nets.length === 0) return []; // only nets of the other family: nothing to match here
      if (!nets.some((n) => n.prefix === 0)) {
        const unique = [...new Set(nets.map((n) => n.text))];
        if (unique.length === 1) {
          addresses.push(`${flag} ${unique[0]}`);
          addressFlagUsed = true;
        } else {
          modules.push(`-m set --match-set ${sets.netList(nets)} ${dir}`);
        }
      }
    }
    const notNets = e.notNets.filter((n) => n.kind === family);
    if (notNets.length > 0) {
      if (notNets.some((n) => n.prefix === 0)) return []; // excludes everything
      const unique = [...new Set(notNets.map((n) => n.text))];
      if (unique.length === 1 && !addressFlagUsed) addresses.push(`! ${flag} ${unique[0]}`);
      else modules.push(`-m set ! --match-set ${sets.netList(notNets)} ${dir}`);
    }
    if (e.selector) modules.push(`-m set --match-set ${sets.selector(e.selector)} ${dir}`);
    if (e.notSelector) modules.push(`-m set ! --match-set ${sets.selector(e.notSelector)} ${dir}`);
  }
  // Positive port lists longer than one multiport become alternatives (one rule each); negative
  // ones are ANDed in the same rule.
  let alternatives: string[][] = [[]];
  for (const [e, flag] of [
    [r.source, '--sports'],
    [r.destination, '--dports'],
  ] as const) {
    if (e.ports !== null) {
      const chunks = chunkPorts(dedupePorts(e.ports)).map((c) => `-m multiport ${flag} ${portsArg(c)}`);
      alternatives = alternatives.flatMap((alt) => chunks.map((c) => [...alt, c]));
    }
    const negated = chunkPorts(dedupePorts(e.notPorts)).map((c) => `-m multiport ! ${flag} ${portsArg(c)}`);
    for (const alt of alternatives) alt.push(...negated);
  }
  const icmp: string[] = [];
  const [icmpModule, icmpOption] = family === 4 ? ['icmp', '--icmp-type'] : ['icmp6', '--icmpv6-type'];
  if (r.icmp) icmp.push(`-m ${icmpModule} ${icmpOption} ${icmpArg(r.icmp)}`);
  if (r.notICMP) icmp.push(`-m ${icmpModule} ! ${icmpOption} ${icmpArg(r.notICMP)}`);
  const head = [...addresses, protocol, ...modules].filter((s) => s !== '');
  return alternatives.map((alt) => [...head, ...alt, ...icmp].join(' '));
}

function renderRules(rules: readonly ParsedRule[], sets: IpsetRegistry): string[] {
  const out: string[] = [];
  for (const r of rules) {
    const matches = renderMatches(r, sets);
    if (matches.length === 0) continue;
    const withTarget = (target: string): void => {
      for (const m of matches) out.push(m === '' ? target : `${m} ${target}`);
    };
    switch (r.action) {
      case 'Allow':
        withTarget(SET_ACCEPT);
        out.push(`${IF_ACCEPTED} -j RETURN`);
        break;
      case 'Pass':
        withTarget(SET_PASS);
        out.push(`${IF_PASSED} -j RETURN`);
        break;
      case 'Deny':
        withTarget('-j DROP');
        break;
      case 'Log':
        withTarget(`-j LOG --log-prefix "${LOG_PREFIX}"`);
        break;
    }
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Policies, profiles and endpoints

interface ParsedPolicy {
  key: string;
  policy: Policy;
  order: number;
  selector: Selector;
  /** Applies to calico-ts workloads at all (a NetworkPolicy outside namespace "default" does not). */
  inScope: boolean;
  types: Set<PolicyType>;
  ingress: ParsedRule[];
  egress: ParsedRule[];
}

function describePolicy(p: Policy): string {
  return p.kind === 'NetworkPolicy' ? `NetworkPolicy ${JSON.stringify(policyKey(p))}` : `GlobalNetworkPolicy ${JSON.stringify(p.name)}`;
}

function parsePolicy(p: Policy): ParsedPolicy {
  const what = describePolicy(p);
  if (p.kind !== 'GlobalNetworkPolicy' && p.kind !== 'NetworkPolicy') {
    throw new ValidationError(`${what} kind`, 'must be GlobalNetworkPolicy or NetworkPolicy');
  }
  if (p.order !== undefined && (typeof p.order !== 'number' || !Number.isFinite(p.order))) {
    throw new ValidationError(`${what} spec.order`, 'must be a number');
  }
  let selector: Selector;
  try {
    selector = parseSelector(p.selector ?? '');
  } catch (err) {
    if (err instanceof ValidationError) throw new ValidationError(`${what} spec.selector`, err.message.replace(/^selector: /, ''));
    throw err;
  }
  const ingressRules = p.ingress ?? [];
  const egressRules = p.egress ?? [];
  const types = new Set<PolicyType>();
  for (const [i, t] of (p.types ?? []).entries()) {
    if (t !== 'Ingress' && t !== 'Egress') throw new ValidationError(`${what} spec.types[${i}]`, 'must be Ingress or Egress');
    types.add(t);
  }
  if (types.size === 0) {
    // Calico's default: Ingress, plus Egress when the policy has egress rules.
    types.add('Ingress');
    if (egressRules.length > 0) types.add('Egress');
  }
  return {
    key: policyKey(p),
    policy: p,
    order: p.order ?? Number.POSITIVE_INFINITY,
    selector,
    inScope: p.kind === 'GlobalNetworkPolicy' || (p.namespace ?? 'default') === 'default',
    types,
    ingress: ingressRules.map((r, i) => parseRule(r, `${what} spec.ingress[${i}]`)),
    egress: egressRules.map((r, i) => parseRule(r, `${what} spec.egress[${i}]`)),
  };
}

interface ParsedProfile {
  profile: Profile;
  ingress: ParsedRule[];
  egress: ParsedRule[];
}

function parseProfile(p: Profile): ParsedProfile {
  const what = `Profile ${JSON.stringify(p.name)}`;
  return {
    profile: p,
    ingress: (p.ingress ?? []).map((r, i) => parseRule(r, `${what} spec.ingress[${i}]`)),
    egress: (p.egress ?? []).map((r, i) => parseRule(r, `${what} spec.egress[${i}]`)),
  };
}

/** Own labels win; among profiles, the first in the endpoint's list that sets a label wins (as Calico). */
export function effectiveLabels(ep: WorkloadEndpoint, profiles: ReadonlyMap<string, Profile>): Record<string, string> {
  const out: Record<string, string> = {};
  for (const name of [...(ep.profiles ?? [])].reverse()) Object.assign(out, profiles.get(name)?.labelsToApply ?? {});
  Object.assign(out, ep.labels ?? {});
  return out;
}

/** Effective labels, with a signature equal for endpoints whose effective labels are equal. */
function labelsWithSignature(ep: WorkloadEndpoint, profiles: ReadonlyMap<string, Profile>): { labels: Record<string, string>; signature: string } {
  const labels = effectiveLabels(ep, profiles);
  const signature = JSON.stringify(Object.keys(labels).sort(compareCodePoints).map((k) => [k, labels[k]]));
  return { labels, signature };
}

const IFACE = /^cali[A-Za-z0-9._-]{1,11}$/;

function byCodePoints<T>(key: (t: T) => string): (a: T, b: T) => number {
  return (a, b) => compareCodePoints(key(a), key(b));
}

/** The endpoint's addresses of one family (host addresses without their /32 or /128). */
function addressesOf(ep: WorkloadEndpoint, family: IpFamily): string[] {
  const out: string[] = [];
  for (const n of ep.ipNetworks ?? []) {
    if (n.includes(':') !== (family === 6)) continue;
    let net: Net;
    try {
      net = parseNet(n, 'ipNetworks');
    } catch {
      continue;
    }
    const host = family === 4 ? 32 : 128;
    out.push(net.prefix === host ? net.text.slice(0, -`/${host}`.length) : net.text);
  }
  return out;
}

/**
 * The filter table and ipsets that enforce `policies` and `profiles` on `localEndpoints`.
 * Pure and deterministic. Throws ValidationError when a policy or profile holds a rule that cannot
 * be enforced (e.g. ports without protocol TCP/UDP/SCTP/UDPLite), naming resource and field.
 * Local endpoints whose interface is not `cali` + 1-11 name characters are left out (their
 * traffic hits the dispatch chains' DROP); for duplicate interface names the lowest endpointId wins.
 */
export function computeFilterState(input: FilterStateInput): DesiredFilterState {
  // Validate everything, in a fixed order so the first error reported does not depend on input order.
  const profilesByName = new Map<string, ParsedProfile>();
  for (const p of [...input.profiles].sort(byCodePoints((p) => p.name))) {
    if (!profilesByName.has(p.name)) profilesByName.set(p.name, parseProfile(p));
  }
  const rawProfiles = new Map([...profilesByName].map(([name, p]) => [name, p.profile]));
  const policies: ParsedPolicy[] = [];
  const seenPolicies = new Set<string>();
  for (const p of [...input.policies].sort(byCodePoints((p) => `${p.kind}\0${policyKey(p)}`))) {
    const parsed = parsePolicy(p);
    const id = `${p.kind}\0${parsed.key}`;
    if (seenPolicies.has(id)) continue;
    seenPolicies.add(id);
    policies.push(parsed);
  }
  // Calico's order: `order` ascending (none = last), then name.
  policies.sort((a, b) => (a.order === b.order ? 0 : a.order < b.order ? -1 : 1) || compareCodePoints(a.key, b.key) || compareCodePoints(a.policy.kind, b.policy.kind));

  const locals = new Map<string, WorkloadEndpoint>();
  for (const ep of [...input.localEndpoints].sort(byCodePoints((e) => `${e.interfaceName}\0${e.endpointId}`))) {
    if (typeof ep.interfaceName === 'string' && IFACE.test(ep.interfaceName) && !locals.has(ep.interfaceName)) {
      locals.set(ep.interfaceName, ep);
    }
  }

  const family = input.family ?? 4;
  const sets = new IpsetRegistry(family);
  const chains = new Map<string, string[]>();
  const policyChainsDone = new Set<string>();
  const profileChainsDone = new Set<string>();
  const fromDispatch: string[] = [];
  const toDispatch: string[] = [];

  const policyChain = (p: ParsedPolicy, dir: PolicyType): string => {
    const name = policyChainName(p.policy, dir);
    if (!policyChainsDone.has(name)) {
      policyChainsDone.add(name);
      chains.set(name, renderRules(dir === 'Ingress' ? p.ingress : p.egress, sets));
    }
    return name;
  };
  const profileChain = (p: ParsedProfile, dir: PolicyType): string => {
    const name = profileChainName(p.profile.name, dir);
    if (!profileChainsDone.has(name)) {
      profileChainsDone.add(name);
      chains.set(name, renderRules(dir === 'Ingress' ? p.ingress : p.egress, sets));
    }
    return name;
  };

  const endpointChain = (applicable: readonly ParsedPolicy[], profiles: readonly ParsedProfile[], dir: PolicyType): string[] => {
    const rules = [
      '-m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT',
      '-m conntrack --ctstate INVALID -j DROP',
    ];
    const pols = applicable.filter((p) => p.types.has(dir)).map((p) => policyChain(p, dir));
    if (pols.length === 0 && profiles.length === 0) {
      rules.push(`${comment('No policy or profile: isolated')} -j DROP`);
      return rules;
    }
    if (pols.length === 1) rules.push(`-j ${pols[0]}`);
    if (pols.length > 1) {
      const group = groupChainName(pols, dir);
      if (!chains.has(group)) chains.set(group, pols.map((c, i) => (i === 0 ? `-j ${c}` : `${IF_UNDECIDED} -j ${c}`)));
      rules.push(`-j ${group}`);
    }
    const profileGuard = pols.length > 0 ? IF_PASSED_ONLY : IF_NOT_ACCEPTED;
    for (const p of profiles) rules.push(`${profileGuard} -j ${profileChain(p, dir)}`);
    rules.push(`${IF_NOT_ACCEPTED} ${comment('Drop if not accepted by policy or profile')} -j DROP`);
    return rules;
  };

  // Endpoints with the same effective labels and profiles get the same chains: computed once.
  const bodies = new Map<string, { fw: readonly string[]; tw: readonly string[] }>();
  for (const [iface, ep] of locals) {
    const { labels, signature } = labelsWithSignature(ep, rawProfiles);
    const profileNames = [...new Set(ep.profiles ?? [])].filter((n) => profilesByName.has(n));
    const bodyKey = `${signature}\n${profileNames.join('\n')}`;
    let body = bodies.get(bodyKey);
    if (!body) {
      const applicable = policies.filter((p) => p.inScope && p.selector.matches(labels));
      const profiles = profileNames.map((n) => profilesByName.get(n)!);
      body = { fw: endpointChain(applicable, profiles, 'Egress'), tw: endpointChain(applicable, profiles, 'Ingress') };
      bodies.set(bodyKey, body);
    }
    const fw = endpointChainName(iface, 'from');
    const tw = endpointChainName(iface, 'to');
    chains.set(fw, [...body.fw]);
    chains.set(tw, [...body.tw]);
    fromDispatch.push(`-i ${iface} -g ${fw}`);
    toDispatch.push(`-o ${iface} -g ${tw}`);
  }
  fromDispatch.push(`${comment('Unknown interface')} -j DROP`);
  toDispatch.push(`${comment('Unknown interface')} -j DROP`);

  chains.set(CHAIN.fromWlDispatch, fromDispatch);
  chains.set(CHAIN.toWlDispatch, toDispatch);
  chains.set(CHAIN.forward, [
    // Fast path: a flow policy accepted when it started is accepted again without walking the dispatch
    // and endpoint chains (the same verdict their first rule gives), so established traffic pays two rules.
    `-i cali+ -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT`,
    `-o cali+ -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT`,
    `-i cali+ ${CLEAR_MARKS}`,
    `-i cali+ -j ${CHAIN.fromWlDispatch}`,
    `-o cali+ ${CLEAR_MARKS}`,
    `-o cali+ -j ${CHAIN.toWlDispatch}`,
    `-i cali+ ${IF_ACCEPTED} ${comment('Policy accepted packet')} -j ACCEPT`,
    `-o cali+ ${IF_ACCEPTED} ${comment('Policy accepted packet')} -j ACCEPT`,
    '-i cali+ -j DROP',
    '-o cali+ -j DROP',
  ]);
  chains.set(CHAIN.input, [`-i cali+ -j ${CHAIN.wlToHost}`]);
  chains.set(CHAIN.wlToHost, [
    ...(family === 6 ? NDP_ICMPV6_TYPES.map((t) => `-p ipv6-icmp -m icmp6 --icmpv6-type ${t} ${comment('Neighbour/router discovery, MLD')} -j ACCEPT`) : []),
    CLEAR_MARKS,
    `-j ${CHAIN.fromWlDispatch}`,
    `${IF_ACCEPTED} ${comment('DefaultEndpointToHostAction ACCEPT')} -j ACCEPT`,
    '-j DROP',
  ]);
  chains.set(CHAIN.output, [`-o cali+ ${comment('Host to workload: allowed')} -j RETURN`]);

  // Ipsets: selector sets over every endpoint of every host.
  const everyone = new Map<string, WorkloadEndpoint>();
  for (const ep of [...input.allEndpoints, ...input.localEndpoints]) {
    const id = `${ep.node}\0${ep.endpointId}`;
    if (!everyone.has(id)) everyone.set(id, ep);
  }
  // Endpoints grouped by effective labels: each selector is evaluated once per distinct label set.
  const groups = new Map<string, { labels: Record<string, string>; addrs: string[] }>();
  for (const ep of everyone.values()) {
    const addrs = addressesOf(ep, family);
    if (addrs.length === 0) continue;
    const { labels, signature } = labelsWithSignature(ep, rawProfiles);
    const g = groups.get(signature);
    if (g) g.addrs.push(...addrs);
    else groups.set(signature, { labels, addrs });
  }
  const ipsets: IpsetSpec[] = [];
  for (const [name, sel] of sets.selectors) {
    const members = new Set<string>();
    for (const { labels, addrs } of groups.values()) if (sel.matches(labels)) for (const a of addrs) members.add(a);
    ipsets.push({ name, type: 'hash:ip', members: sortNets(members) });
  }
  for (const [name, members] of sets.nets) ipsets.push({ name, type: 'hash:net', members });
  ipsets.sort(byCodePoints((s) => s.name));

  const chainSpecs: ChainSpec[] = [...chains].map(([name, rules]) => ({ name, rules })).sort(byCodePoints((c) => c.name));
  return {
    chains: chainSpecs,
    ipsets,
    hooks: { FORWARD: CHAIN.forward, INPUT: CHAIN.input, OUTPUT: CHAIN.output },
  };
}
