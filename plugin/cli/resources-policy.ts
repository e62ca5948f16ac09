/**
 * Policy resources of the registry (resources.ts): Profile, GlobalNetworkPolicy, NetworkPolicy and the
 * read-only WorkloadEndpoint, in projectcalico.org/v3 shape, with Calico's rule validation and the
 * conversion of Calico v1 `profile` / `policy` documents (old calicoctl tutorials).
 *
 * Module-load note: resources.ts imports this module and this module imports resources.ts; nothing at
 * the top level here may use resources.ts values (only function bodies do).
 */
import { stringify } from 'yaml';
import type { Datastore } from '../datastore/datastore.js';
import {
  keys,
  type EntityRule,
  type IcmpMatch,
  type Policy,
  type PolicyType,
  type Profile,
  type Rule,
  type RuleAction,
  type WorkloadEndpoint,
} from '../datastore/model.js';
import { formatCidr, parseAddress, parseCidr, type Cidr } from '../lib/cidr.js';
import { parseSelector } from '../calc/selector.js';
import { ValidationError } from '../lib/errors.js';
import { API_VERSION, onlyFields, optInt, optSelector, validLabels, type ResourceDoc, type ResourceKind, type Spec } from './resources.js';

// --- rules ---------------------------------------------------------------------------------------------

const ACTIONS: readonly RuleAction[] = ['Allow', 'Deny', 'Log', 'Pass'];
const PROTOCOL_NAMES = ['TCP', 'UDP', 'ICMP', 'ICMPv6', 'SCTP', 'UDPLite'] as const;
const PROTOCOL_MESSAGE = 'must be TCP, UDP, ICMP, ICMPv6, SCTP, UDPLite or a number 1-255';
/** Protocols with ports, by name and number. */
const PORT_PROTOCOLS = new Set<string | number>(['TCP', 'UDP', 'SCTP', 'UDPLite', 6, 17, 132, 136]);
const RULE_FIELDS = ['action', 'ipVersion', 'protocol', 'notProtocol', 'icmp', 'notICMP', 'source', 'destination'];
const ENTITY_FIELDS = ['nets', 'notNets', 'selector', 'notSelector', 'ports', 'notPorts'];
const POLICY_TYPES: readonly PolicyType[] = ['Ingress', 'Egress'];

function mapping(v: unknown, at: string): Spec {
  if (!v || typeof v !== 'object' || Array.isArray(v)) throw new ValidationError(at, 'must be a mapping');
  return v as Spec;
}

function list(v: unknown, at: string): unknown[] {
  if (!Array.isArray(v)) throw new ValidationError(at, 'must be a list');
  return v;
}

function protocol(v: unknown, at: string): string | number | undefined {
  if (v === undefined || v === null) return undefined;
  if (typeof v === 'number' || (typeof v === 'string' && /^\d+$/.test(v))) {
    const n = Number(v);
    if (Number.isInteger(n) && n >= 1 && n <= 255) return n;
    throw new ValidationError(at, PROTOCOL_MESSAGE);
  }
  if (typeof v === 'string' && (PROTOCOL_NAMES as readonly string[]).includes(v)) return v;
  const near = typeof v === 'string' ? PROTOCOL_NAMES.find((p) => p.toLowerCase() === v.toLowerCase()) : undefined;
  throw new ValidationError(at, `${PROTOCOL_MESSAGE}${near ? ` (names are case-sensitive: ${near})` : ''}`);
}

function icmp(v: unknown, at: string): IcmpMatch | undefined {
  if (v === undefined || v === null) return undefined;
  const m = mapping(v, at);
  onlyFields(m, ['type', 'code'], at);
  const type = optInt(m, 'type', at, 0, 254);
  const code = optInt(m, 'code', at, 0, 255);
  if (code !== undefined && type === undefined) throw new ValidationError(`${at}.code`, 'requires type');
  return { ...(type !== undefined ? { type } : {}), ...(code !== undefined ? { code } : {}) };
}

/** A CIDR or a bare address (a /32 or /128), stored as its network in canonical text. */
function cidrs(v: unknown, at: string): Cidr[] | undefined {
  if (v === undefined || v === null) return undefined;
  return list(v, at).map((item, i) => {
    const field = `${at}[${i}]`;
    if (typeof item !== 'string') throw new ValidationError(field, 'must be a CIDR string like 10.0.0.0/16');
    if (item.includes('/')) return parseCidr(item, field);
    const a = parseAddress(item, field);
    return { family: a.family, base: a.value, prefix: a.family === 4 ? 32 : 128 };
  });
}

function ports(v: unknown, at: string): (number | string)[] | undefined {
  if (v === undefined || v === null) return undefined;
  return list(v, at).map((item, i) => {
    const field = `${at}[${i}]`;
    const text = typeof item === 'number' ? String(item) : item;
    if (typeof text === 'string') {
      const single = /^\d{1,5}$/.exec(text);
      if (single && Number(text) <= 65535 && Number.isInteger(Number(text))) return Number(text);
      const range = /^(\d{1,5}):(\d{1,5})$/.exec(text);
      if (range) {
        const from = Number(range[1]);
        const to = Number(range[2]);
        if (from > 65535 || to > 65535) throw new ValidationError(field, 'ports must be from 0 to 65535');
        if (from > to) throw new ValidationError(field, `range ${text} is backwards (write ${to}:${from})`);
        return `${from}:${to}`;
      }
      if (/^[A-Za-z]/.test(text)) {
        throw new ValidationError(field, `${JSON.stringify(text)} is a named port; named ports are not supported, use a number or a range like 8000:8080`);
      }
    }
    throw new ValidationError(field, 'must be a port number 0-65535 or a range like 8000:8080');
  });
}

interface Entity {
  rule: EntityRule;
  families: { family: 4 | 6; at: string }[];
}

function entity(v: unknown, at: string, proto: string | number | undefined, protoAt: string): Entity | undefined {
  if (v === undefined || v === null) return undefined;
  const e = mapping(v, at);
  onlyFields(e, ENTITY_FIELDS, at);
  const rule: EntityRule = {};
  const families: Entity['families'] = [];
  for (const f of ['nets', 'notNets'] as const) {
    const parsed = cidrs(e[f], `${at}.${f}`);
    if (!parsed) continue;
    rule[f] = parsed.map(formatCidr);
    parsed.forEach((c, i) => families.push({ family: c.family, at: `${at}.${f}[${i}]` }));
  }
  for (const f of ['selector', 'notSelector'] as const) {
    const s = optSelector(e, f, at);
    if (s !== undefined) rule[f] = s;
  }
  for (const f of ['ports', 'notPorts'] as const) {
    const p = ports(e[f], `${at}.${f}`);
    if (!p) continue;
    if (proto === undefined || !PORT_PROTOCOLS.has(proto)) {
      throw new ValidationError(`${at}.${f}`, `require ${protoAt} to be TCP, UDP, SCTP or UDPLite`);
    }
    rule[f] = p;
  }
  return { rule, families };
}

/** Validates one projectcalico.org/v3 rule; messages name the field (`spec.ingress[0].protocol`). */
export function parseRule(v: unknown, at: string): Rule {
  const r = mapping(v, at);
  onlyFields(r, RULE_FIELDS, at);
  if (r.action === undefined || r.action === null) throw new ValidationError(`${at}.action`, 'is required: Allow, Deny, Log or Pass');
  if (typeof r.action !== 'string' || !(ACTIONS as readonly string[]).includes(r.action)) {
    throw new ValidationError(`${at}.action`, 'must be Allow, Deny, Log or Pass');
  }
  const rule: Rule = { action: r.action as RuleAction };
  if (r.ipVersion !== undefined && r.ipVersion !== null) {
    if (r.ipVersion !== 4 && r.ipVersion !== 6) throw new ValidationError(`${at}.ipVersion`, 'must be 4 or 6');
    rule.ipVersion = r.ipVersion;
  }
  const proto = protocol(r.protocol, `${at}.protocol`);
  if (proto !== undefined) rule.protocol = proto;
  const notProto = protocol(r.notProtocol, `${at}.notProtocol`);
  if (notProto !== undefined) rule.notProtocol = notProto;
  const isIcmp4 = proto === 'ICMP' || proto === 1;
  const isIcmp6 = proto === 'ICMPv6' || proto === 58;
  for (const f of ['icmp', 'notICMP'] as const) {
    const m = icmp(r[f], `${at}.${f}`);
    if (!m) continue;
    if (!isIcmp4 && !isIcmp6) throw new ValidationError(`${at}.${f}`, `requires ${at}.protocol to be ICMP or ICMPv6`);
    rule[f] = m;
  }
  if (isIcmp4 && rule.ipVersion === 6) throw new ValidationError(`${at}.ipVersion`, 'must be 4 with protocol ICMP (IPv6 uses ICMPv6)');
  if (isIcmp6 && rule.ipVersion === 4) throw new ValidationError(`${at}.ipVersion`, 'must be 6 with protocol ICMPv6 (IPv4 uses ICMP)');
  const families: Entity['families'] = [];
  for (const f of ['source', 'destination'] as const) {
    const e = entity(r[f], `${at}.${f}`, proto, `${at}.protocol`);
    if (!e) continue;
    if (Object.keys(e.rule).length > 0) rule[f] = e.rule;
    families.push(...e.families);
  }
  const version = rule.ipVersion ?? (isIcmp4 ? 4 : isIcmp6 ? 6 : undefined);
  for (const { family, at: netAt } of families) {
    if (version !== undefined && family !== version) {
      throw new ValidationError(netAt, `is an IPv${family} CIDR but the rule is IPv${version}-only${rule.ipVersion ? ' (ipVersion)' : ` (protocol ${String(proto)})`}`);
    }
  }
  if (new Set(families.map((f) => f.family)).size > 1) {
    throw new ValidationError(at, 'mixes IPv4 and IPv6 CIDRs, so it can never match; split it into one rule per IP version');
  }
  return rule;
}

function rules(v: unknown, at: string): Rule[] {
  if (v === undefined || v === null) return [];
  return list(v, at).map((r, i) => parseRule(r, `${at}[${i}]`));
}

// --- Profile ---------------------------------------------------------------------------------------------

/** Profiles are named after Docker networks, whose names may use capitals and underscores. */
const PROFILE_NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,252}$/;

const labelText = (labels: Record<string, string>): string =>
  Object.entries(labels)
    .map(([k, v]) => `${k}=${v}`)
    .join(',');

export const profileKind: ResourceKind<Profile> = {
  kind: 'Profile',
  names: ['profile', 'profiles', 'pro'],
  key: (name) => keys.profile(name),
  prefix: () => keys.profiles(),
  namePattern: { re: PROFILE_NAME, hint: 'letters, digits, _ - and . (a Docker network name)' },
  fromDoc(doc, at) {
    const spec = `${at}.spec`;
    onlyFields(doc.spec, ['ingress', 'egress', 'labelsToApply'], spec);
    return {
      name: doc.metadata.name,
      ingress: rules(doc.spec.ingress, `${spec}.ingress`),
      egress: rules(doc.spec.egress, `${spec}.egress`),
      labelsToApply: validLabels(doc.spec.labelsToApply, `${spec}.labelsToApply`),
    };
  },
  toDoc: (p) => ({
    apiVersion: API_VERSION,
    kind: 'Profile',
    metadata: { name: p.name },
    spec: { ingress: p.ingress, egress: p.egress, labelsToApply: p.labelsToApply },
  }),
  name: (p) => p.name,
  columns: ['NAME', 'LABELS'],
  wideColumns: ['NAME', 'LABELS', 'INGRESS', 'EGRESS'],
  row: (p, wide) => (wide ? [p.name, labelText(p.labelsToApply), String(p.ingress.length), String(p.egress.length)] : [p.name, labelText(p.labelsToApply)]),
};

// --- GlobalNetworkPolicy / NetworkPolicy ---------------------------------------------------------------

function policyFromDoc(kind: Policy['kind'], doc: ResourceDoc, at: string): Policy {
  const s = doc.spec;
  const spec = `${at}.spec`;
  onlyFields(s, ['order', 'selector', 'types', 'ingress', 'egress'], spec);
  let order: number | undefined;
  if (s.order !== undefined && s.order !== null) {
    if (typeof s.order !== 'number' || !Number.isFinite(s.order)) throw new ValidationError(`${spec}.order`, 'must be a number (lower orders apply first)');
    order = s.order;
  }
  const ingress = rules(s.ingress, `${spec}.ingress`);
  const egress = rules(s.egress, `${spec}.egress`);
  let types: PolicyType[] = [];
  if (s.types !== undefined && s.types !== null) {
    types = list(s.types, `${spec}.types`).map((t, i) => {
      if (typeof t !== 'string' || !(POLICY_TYPES as readonly string[]).includes(t)) throw new ValidationError(`${spec}.types[${i}]`, 'must be Ingress or Egress');
      return t as PolicyType;
    });
    if (new Set(types).size !== types.length) throw new ValidationError(`${spec}.types`, 'lists a type twice');
  }
  // Calico's default: Ingress, plus Egress when there are egress rules; Egress alone when only egress rules.
  if (types.length === 0) types = egress.length === 0 ? ['Ingress'] : ingress.length === 0 ? ['Egress'] : ['Ingress', 'Egress'];
  for (const [t, r, f] of [['Ingress', ingress, 'ingress'], ['Egress', egress, 'egress']] as const) {
    if (r.length > 0 && !types.includes(t)) throw new ValidationError(`${spec}.${f}`, `has rules but ${spec}.types does not include ${t}`);
  }
  return {
    kind,
    name: doc.metadata.name,
    ...(kind === 'NetworkPolicy' ? { namespace: doc.metadata.namespace ?? 'default' } : {}),
    ...(order !== undefined ? { order } : {}),
    selector: optSelector(s, 'selector', spec) ?? 'all()',
    types: POLICY_TYPES.filter((t) => types.includes(t)),
    ingress,
    egress,
  };
}

function policyToDoc(p: Policy): ResourceDoc {
  return {
    apiVersion: API_VERSION,
    kind: p.kind,
    metadata: { name: p.name, ...(p.kind === 'NetworkPolicy' ? { namespace: p.namespace ?? 'default' } : {}) },
    spec: { ...(p.order !== undefined ? { order: p.order } : {}), selector: p.selector, types: p.types, ingress: p.ingress, egress: p.egress },
  };
}

const policyRow = (p: Policy, wide: boolean): string[] => {
  const base = [p.name, p.order === undefined ? '' : String(p.order), p.selector];
  return wide ? [...base, p.types.join(',')] : base;
};

export const globalNetworkPolicyKind: ResourceKind<Policy> = {
  kind: 'GlobalNetworkPolicy',
  names: ['globalnetworkpolicy', 'globalnetworkpolicies', 'gnp'],
  key: (name) => keys.globalNetworkPolicy(name),
  prefix: () => keys.globalNetworkPolicies(),
  fromDoc: (doc, at) => policyFromDoc('GlobalNetworkPolicy', doc, at),
  toDoc: policyToDoc,
  name: (p) => p.name,
  columns: ['NAME', 'ORDER', 'SELECTOR'],
  wideColumns: ['NAME', 'ORDER', 'SELECTOR', 'TYPES'],
  row: policyRow,
};

export const networkPolicyKind: ResourceKind<Policy> = {
  kind: 'NetworkPolicy',
  names: ['networkpolicy', 'networkpolicies', 'netpol', 'np'],
  namespaced: true,
  key: (name, namespace) => keys.networkPolicy(namespace ?? 'default', name),
  prefix: () => keys.networkPolicies(),
  namespace: (p) => p.namespace ?? 'default',
  fromDoc: (doc, at) => policyFromDoc('NetworkPolicy', doc, at),
  toDoc: policyToDoc,
  name: (p) => p.name,
  columns: ['NAME', 'ORDER', 'SELECTOR'],
  wideColumns: ['NAME', 'ORDER', 'SELECTOR', 'TYPES'],
  row: policyRow,
};

// --- WorkloadEndpoint (read-only) ------------------------------------------------------------------------

const WEP_READ_ONLY =
  'WorkloadEndpoint resources are read-only: the calico-ts node creates and removes them as containers join and leave networks (set labels with docker run --label org.projectcalico.label.<key>=<value>, or a Profile\'s labelsToApply)';

const short = (id: string | null): string => (id ? id.slice(0, 12) : '');

/** The labels selectors see on an endpoint: its profiles' labelsToApply, overlaid by its own labels. */
export function effectiveLabels(ep: WorkloadEndpoint, profiles: ReadonlyMap<string, Profile>): Record<string, string> {
  const out = new Map<string, string>();
  for (const name of ep.profiles) for (const [k, v] of Object.entries(profiles.get(name)?.labelsToApply ?? {})) out.set(k, v);
  for (const [k, v] of Object.entries(ep.labels)) out.set(k, v);
  return Object.fromEntries(out);
}

export const workloadEndpointKind: ResourceKind<WorkloadEndpoint> = {
  kind: 'WorkloadEndpoint',
  names: ['workloadendpoint', 'workloadendpoints', 'wep', 'weps'],
  readOnly: WEP_READ_ONLY,
  key: () => {
    throw new ValidationError('', WEP_READ_ONLY);
  },
  prefix: () => keys.endpoints(),
  /** The endpoint ID, or a unique prefix of it (as `docker` accepts short IDs). */
  matchName: (ep, name) => name.length > 0 && ep.endpointId.startsWith(name),
  async selectorLabels(store: Datastore) {
    const profiles = new Map((await store.list(keys.profiles())).items.map((i) => [i.value.name, i.value] as const));
    return (ep) => effectiveLabels(ep, profiles);
  },
  fromDoc(_doc, at) {
    throw new ValidationError(at, WEP_READ_ONLY);
  },
  toDoc: (ep) => ({
    apiVersion: API_VERSION,
    kind: 'WorkloadEndpoint',
    metadata: { name: ep.endpointId, namespace: 'default', labels: ep.labels },
    spec: {
      orchestrator: 'libnetwork',
      node: ep.node,
      workload: ep.containerId ?? '',
      endpoint: ep.endpointId,
      interfaceName: ep.interfaceName,
      ...(ep.mac ? { mac: ep.mac } : {}),
      ipNetworks: ep.ipNetworks,
      profiles: ep.profiles,
      ...(ep.ipNATs?.length ? { ipNATs: ep.ipNATs } : {}),
    },
  }),
  name: (ep) => ep.endpointId,
  columns: ['NAME', 'NODE', 'WORKLOAD', 'NETWORKS', 'INTERFACE', 'PROFILES'],
  wideColumns: ['NAME', 'NODE', 'WORKLOAD', 'NETWORKS', 'INTERFACE', 'PROFILES', 'MAC', 'LABELS', 'FLOATING IPS'],
  row: (ep, wide) => {
    const base = [short(ep.endpointId), ep.node, short(ep.containerId), ep.ipNetworks.join(','), ep.interfaceName, ep.profiles.join(',')];
    const fips = (ep.ipNATs ?? []).map((n) => `${n.externalIP}->${n.internalIP}`).join(',');
    return wide ? [...base, ep.mac ?? '', labelText(ep.labels), fips] : base;
  },
};

// --- Calico v1 documents ---------------------------------------------------------------------------------

const V1_ACTIONS: Record<string, RuleAction> = { allow: 'Allow', deny: 'Deny', log: 'Log', pass: 'Pass', 'next-tier': 'Pass' };
const V1_TYPES: Record<string, PolicyType> = { ingress: 'Ingress', egress: 'Egress' };

const isMapping = (v: unknown): v is Spec => !!v && typeof v === 'object' && !Array.isArray(v);

/** Canonical form when it parses (validation reports it otherwise). */
function tidySelector(s: string): string {
  try {
    return parseSelector(s).toString();
  } catch {
    return s;
  }
}

function v1Protocol(v: unknown): unknown {
  if (typeof v !== 'string') return v;
  return PROTOCOL_NAMES.find((p) => p.toLowerCase() === v.toLowerCase()) ?? v;
}

function v1Entity(v: unknown, at: string, problems: string[]): unknown {
  if (!isMapping(v)) return v;
  const out: Spec = {};
  const terms: string[] = [];
  for (const [k, val] of Object.entries(v)) {
    if (k === 'net' || k === 'notNet') {
      const f = k === 'net' ? 'nets' : 'notNets';
      out[f] = [val, ...(Array.isArray(out[f]) ? (out[f] as unknown[]) : [])];
    } else if (k === 'nets' || k === 'notNets') {
      out[k] = [...(Array.isArray(out[k]) ? (out[k] as unknown[]) : []), ...(Array.isArray(val) ? val : [val])];
    } else if (k === 'tag' || k === 'notTag') {
      const tag = String(val);
      terms.push(k === 'tag' ? `has(${tag})` : `!has(${tag})`);
      problems.push(
        `${at}.${k}: v3 has no tags; the equivalent selects a label, ${k === 'tag' ? `has(${tag})` : `!has(${tag})`}, which the tagged profile must apply (labelsToApply: {${tag}: ""})`,
      );
    } else {
      out[k] = val;
    }
  }
  if (terms.length > 0) {
    const sel = typeof out.selector === 'string' && out.selector.trim() !== '' ? [`(${out.selector})`] : [];
    out.selector = tidySelector([...sel, ...terms].join(' && '));
  }
  return out;
}

function v1Rules(v: unknown, at: string, problems: string[]): unknown {
  if (!Array.isArray(v)) return v;
  return v.map((r, i) => {
    if (!isMapping(r)) return r;
    const out: Spec = {};
    for (const [k, val] of Object.entries(r)) {
      if (k === 'action') out.action = typeof val === 'string' ? (V1_ACTIONS[val.toLowerCase()] ?? val) : val;
      else if (k === 'protocol' || k === 'notProtocol') out[k] = v1Protocol(val);
      else if (k === 'source' || k === 'destination') out[k] = v1Entity(val, `${at}[${i}].${k}`, problems);
      else out[k] = val;
    }
    return out;
  });
}

export interface V1Conversion {
  /** The projectcalico.org/v3 document (not yet validated). */
  doc: Record<string, unknown>;
  /** One line for the user: what was converted to what. */
  note: string;
}

/** Is this a Calico v1 `profile` / `policy` document? */
export function isV1PolicyDocument(d: Record<string, unknown>): boolean {
  return d.apiVersion === 'v1' && typeof d.kind === 'string' && ['profile', 'policy'].includes(d.kind.toLowerCase());
}

/** The v3 form of a v1 document, as YAML, for messages. */
export function v3Yaml(doc: Record<string, unknown>): string {
  return stringify(doc).trimEnd();
}

/**
 * Converts a Calico v1 `profile` (→ Profile; metadata.labels → spec.labelsToApply) or `policy`
 * (→ GlobalNetworkPolicy): lower-case actions and protocols, `next-tier` → Pass, `net`/`notNet` →
 * `nets`/`notNets`, lower-case types. Where the meaning would change (tags, doNotTrack, preDNAT,
 * applyOnForward) it throws, and the message shows the v3 document to review and apply instead.
 */
export function convertV1Document(d: Record<string, unknown>, at: string): V1Conversion {
  const v1Kind = String(d.kind).toLowerCase();
  const problems: string[] = [];
  const meta = isMapping(d.metadata) ? d.metadata : {};
  const spec = isMapping(d.spec) ? d.spec : {};
  const name = meta.name;
  const out: Spec = {};
  let v3Kind: string;
  if (v1Kind === 'profile') {
    v3Kind = 'Profile';
    const labels: Spec = isMapping(meta.labels) ? { ...meta.labels } : {};
    if (meta.tags !== undefined) {
      const tags = Array.isArray(meta.tags) ? meta.tags.map(String) : [String(meta.tags)];
      for (const t of tags) if (!(t in labels)) labels[t] = '';
      problems.push(`${at}.metadata.tags: v3 has no tags; each tag becomes a label the profile applies (labelsToApply), and rules select it with has(<tag>)`);
    }
    if (Object.keys(labels).length > 0) out.labelsToApply = labels;
    for (const k of Object.keys(meta)) if (!['name', 'labels', 'tags'].includes(k)) problems.push(`${at}.metadata.${k}: has no v3 equivalent`);
  } else {
    v3Kind = 'GlobalNetworkPolicy';
    for (const k of Object.keys(meta)) if (k !== 'name') problems.push(`${at}.metadata.${k}: has no v3 equivalent`);
  }
  for (const [k, val] of Object.entries(spec)) {
    if (k === 'ingress' || k === 'egress') out[k] = v1Rules(val, `${at}.spec.${k}`, problems);
    else if (v1Kind === 'policy' && k === 'types' && Array.isArray(val)) out.types = val.map((t) => (typeof t === 'string' ? (V1_TYPES[t.toLowerCase()] ?? t) : t));
    else if (v1Kind === 'policy' && ['doNotTrack', 'preDNAT', 'applyOnForward'].includes(k)) {
      if (val) problems.push(`${at}.spec.${k}: is not supported by calico-ts (left out below)`);
    } else out[k] = val;
  }
  const doc = { apiVersion: API_VERSION, kind: v3Kind, metadata: { name }, spec: out };
  if (problems.length > 0) {
    throw new ValidationError(
      at,
      `a Calico v1 ${v1Kind} cannot be converted to ${API_VERSION} without changing its meaning:\n  - ${problems.join('\n  - ')}\n` +
        `Its ${API_VERSION} form would be (review it, then apply this instead):\n${v3Yaml(doc)}`,
    );
  }
  return { doc, note: `${at}: converted the Calico v1 ${v1Kind} ${JSON.stringify(name)} to a ${API_VERSION} ${v3Kind}` };
}
