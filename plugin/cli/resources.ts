/**
 * The resource registry behind `calico-ts apply|create|replace|delete|get` (after calicoctl's
 * resourcemgr): each kind registers its names, its datastore key, how a projectcalico.org/v3 document
 * becomes a stored value (with field-level validation) and back, and its table columns. The verbs are
 * written once, over this registry.
 */
import type { Datastore } from '../datastore/datastore.js';
import type { Key, KeyPrefix } from '../datastore/model.js';
import { keys, type BgpConfiguration, type BgpPeer, type EncapMode, type IPPool, type NodeRecord } from '../datastore/model.js';
import { parseAddress, parseCidr } from '../lib/cidr.js';
import { parseSelector } from '../calc/selector.js';
import { ValidationError } from '../lib/errors.js';
// A cycle (resources-policy.ts reads the field readers below): safe because nothing here uses its
// exports while modules load, only inside functions (see resourceKinds()).
import { globalNetworkPolicyKind, networkPolicyKind, profileKind, workloadEndpointKind } from './resources-policy.js';

export const API_VERSION = 'projectcalico.org/v3';

export interface ResourceDoc {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string; labels?: Record<string, string>; [k: string]: unknown };
  spec: Record<string, unknown>;
}

export interface ResourceKind<T> {
  kind: string;
  /** Lower-case names accepted on the command line: singular, plural, short. */
  names: string[];
  /** `namespace` is given (default "default") for namespaced kinds only. */
  key(name: string, namespace?: string): Key<T>;
  prefix(): KeyPrefix<T>;
  /** Namespaced kinds (NetworkPolicy): metadata.namespace, default "default". */
  namespaced?: boolean;
  namespace?(value: T): string;
  /** Validates a document (`at` = its position for messages) and builds the stored value. */
  fromDoc(doc: ResourceDoc, at: string, existing: T | undefined): T;
  toDoc(value: T): ResourceDoc;
  name(value: T): string;
  columns: string[];
  wideColumns: string[];
  row(value: T, wide: boolean): string[];
  /** Users may not create or delete these (e.g. nodes register themselves). */
  readOnlyCreate?: boolean;
  /** Read-only kinds (WorkloadEndpoint): why apply/create/replace/delete refuse them. */
  readOnly?: string;
  /**
   * Kinds whose key cannot be built from a command-line name (endpoints are keyed by node): `get`
   * lists the prefix and keeps the values this accepts.
   */
  matchName?(value: T, name: string): boolean;
  /** A name syntax other than the default lower-case DNS form, with a hint for the message. */
  namePattern?: { re: RegExp; hint: string };
  /** Kinds `get --selector` can filter: the labels a selector sees for each value. */
  selectorLabels?(store: Datastore): Promise<(value: T) => Record<string, string>>;
}

// --- field readers: every failure names the field ----------------------------------------------------

export type Spec = Record<string, unknown>;

export function optString(spec: Spec, field: string, at: string): string | undefined {
  const v = spec[field];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'string') throw new ValidationError(`${at}.${field}`, 'must be a string');
  return v;
}

export function optBool(spec: Spec, field: string, at: string): boolean | undefined {
  const v = spec[field];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'boolean') throw new ValidationError(`${at}.${field}`, 'must be true or false');
  return v;
}

export function optInt(spec: Spec, field: string, at: string, min: number, max: number): number | undefined {
  const v = spec[field];
  if (v === undefined || v === null) return undefined;
  const n = typeof v === 'string' && /^\d+$/.test(v) ? Number(v) : v;
  if (typeof n !== 'number' || !Number.isInteger(n) || n < min || n > max) {
    throw new ValidationError(`${at}.${field}`, `must be an integer from ${min} to ${max}`);
  }
  return n;
}

export function optSelector(spec: Spec, field: string, at: string): string | undefined {
  const s = optString(spec, field, at);
  if (s === undefined) return undefined;
  try {
    return parseSelector(s).toString();
  } catch (err) {
    throw new ValidationError(`${at}.${field}`, err instanceof Error ? err.message.replace(/^selector: /, '') : String(err));
  }
}

export function onlyFields(spec: Spec, allowed: string[], at: string): void {
  for (const k of Object.keys(spec)) {
    if (!allowed.includes(k)) throw new ValidationError(`${at}.${k}`, `unknown field (allowed: ${allowed.join(', ')})`);
  }
}

const ENCAP_MODES: EncapMode[] = ['Never', 'Always', 'CrossSubnet'];

function encapMode(spec: Spec, field: string, at: string): EncapMode {
  const v = optString(spec, field, at) ?? 'Never';
  if (!ENCAP_MODES.includes(v as EncapMode)) throw new ValidationError(`${at}.${field}`, `must be one of ${ENCAP_MODES.join(', ')}`);
  return v as EncapMode;
}

const AS_MAX = 4294967295;
const LOG_SEVERITIES = ['Fatal', 'Error', 'Warning', 'Info', 'Debug'];

// --- kinds ---------------------------------------------------------------------------------------------

export const ipPoolKind: ResourceKind<IPPool> = {
  kind: 'IPPool',
  names: ['ippool', 'ippools', 'ipp', 'pool', 'pools'],
  key: keys.pool,
  prefix: keys.pools,
  fromDoc(doc, at, existing) {
    const spec = doc.spec;
    onlyFields(spec, ['cidr', 'blockSize', 'ipipMode', 'vxlanMode', 'natOutgoing', 'disabled', 'nodeSelector'], `${at}.spec`);
    const cidrText = optString(spec, 'cidr', `${at}.spec`);
    if (!cidrText) throw new ValidationError(`${at}.spec.cidr`, 'is required (e.g. 10.10.0.0/16)');
    const cidr = parseCidr(cidrText, `${at}.spec.cidr`);
    const canonical = `${cidrText.split('/')[0]}/${cidr.prefix}`;
    const max = cidr.family === 4 ? 32 : 128;
    const blockSize = optInt(spec, 'blockSize', `${at}.spec`, cidr.family === 4 ? 20 : 116, max) ?? (cidr.family === 4 ? 26 : 122);
    if (blockSize < cidr.prefix) throw new ValidationError(`${at}.spec.blockSize`, `must be at least the pool's prefix length /${cidr.prefix}`);
    if (existing && existing.cidr !== canonical) {
      throw new ValidationError(`${at}.spec.cidr`, `cannot change from ${existing.cidr}; create a new pool and disable this one`);
    }
    if (existing && existing.blockSize !== blockSize) {
      throw new ValidationError(`${at}.spec.blockSize`, `cannot change from ${existing.blockSize} on an existing pool`);
    }
    return {
      name: doc.metadata.name,
      cidr: canonical,
      blockSize,
      ipipMode: encapMode(spec, 'ipipMode', `${at}.spec`),
      vxlanMode: encapMode(spec, 'vxlanMode', `${at}.spec`),
      natOutgoing: optBool(spec, 'natOutgoing', `${at}.spec`) ?? false,
      disabled: optBool(spec, 'disabled', `${at}.spec`) ?? false,
      nodeSelector: optSelector(spec, 'nodeSelector', `${at}.spec`) ?? 'all()',
    };
  },
  toDoc: (p) => ({
    apiVersion: API_VERSION,
    kind: 'IPPool',
    metadata: { name: p.name },
    spec: { cidr: p.cidr, blockSize: p.blockSize, ipipMode: p.ipipMode, vxlanMode: p.vxlanMode, natOutgoing: p.natOutgoing, disabled: p.disabled, nodeSelector: p.nodeSelector },
  }),
  name: (p) => p.name,
  columns: ['NAME', 'CIDR', 'SELECTOR'],
  wideColumns: ['NAME', 'CIDR', 'NAT', 'IPIPMODE', 'VXLANMODE', 'DISABLED', 'BLOCKSIZE', 'SELECTOR'],
  row: (p, wide) =>
    wide
      ? [p.name, p.cidr, String(p.natOutgoing), p.ipipMode, p.vxlanMode, String(p.disabled), String(p.blockSize), p.nodeSelector]
      : [p.name, p.cidr, p.nodeSelector],
};

export const bgpPeerKind: ResourceKind<BgpPeer> = {
  kind: 'BGPPeer',
  names: ['bgppeer', 'bgppeers', 'bgpp', 'peer', 'peers'],
  key: keys.bgpPeer,
  prefix: keys.bgpPeers,
  fromDoc(doc, at) {
    const s = doc.spec;
    const spec = `${at}.spec`;
    onlyFields(s, ['node', 'nodeSelector', 'peerIP', 'asNumber', 'peerSelector'], spec);
    const peer: BgpPeer = {
      name: doc.metadata.name,
      node: optString(s, 'node', spec) ?? null,
      nodeSelector: optSelector(s, 'nodeSelector', spec) ?? null,
      peerIP: optString(s, 'peerIP', spec) ?? null,
      asNumber: optInt(s, 'asNumber', spec, 1, AS_MAX) ?? null,
      peerSelector: optSelector(s, 'peerSelector', spec) ?? null,
    };
    if (peer.node && peer.nodeSelector) throw new ValidationError(`${spec}.nodeSelector`, 'cannot be combined with node');
    if (peer.peerIP) {
      if (parseAddress(peer.peerIP, `${spec}.peerIP`).family !== 4) throw new ValidationError(`${spec}.peerIP`, 'must be an IPv4 address');
      if (peer.peerSelector) throw new ValidationError(`${spec}.peerSelector`, 'cannot be combined with peerIP');
      if (peer.asNumber === null) throw new ValidationError(`${spec}.asNumber`, 'is required with peerIP');
    } else if (!peer.peerSelector) {
      throw new ValidationError(spec, 'needs peerIP + asNumber (an external router) or peerSelector (calico-ts nodes)');
    }
    return peer;
  },
  toDoc: (p) => ({
    apiVersion: API_VERSION,
    kind: 'BGPPeer',
    metadata: { name: p.name },
    spec: Object.fromEntries(
      Object.entries({ node: p.node, nodeSelector: p.nodeSelector, peerIP: p.peerIP, asNumber: p.asNumber, peerSelector: p.peerSelector }).filter(([, v]) => v !== null),
    ),
  }),
  name: (p) => p.name,
  columns: ['NAME', 'PEERIP', 'NODE', 'ASN'],
  wideColumns: ['NAME', 'PEERIP', 'NODE', 'ASN', 'PEERSELECTOR'],
  row: (p, wide) => {
    const base = [p.name, p.peerIP ?? '', p.node ?? p.nodeSelector ?? '(global)', p.asNumber === null ? '' : String(p.asNumber)];
    return wide ? [...base, p.peerSelector ?? ''] : base;
  },
};

export const bgpConfigurationKind: ResourceKind<BgpConfiguration> = {
  kind: 'BGPConfiguration',
  names: ['bgpconfiguration', 'bgpconfigurations', 'bgpconfig', 'bgpconfigs'],
  key: keys.bgpConfiguration,
  prefix: keys.bgpConfigurations,
  fromDoc(doc, at) {
    const s = doc.spec;
    const spec = `${at}.spec`;
    onlyFields(s, ['asNumber', 'nodeToNodeMeshEnabled', 'listenPort', 'logSeverityScreen'], spec);
    const sev = optString(s, 'logSeverityScreen', spec);
    if (sev !== undefined && !LOG_SEVERITIES.includes(sev)) throw new ValidationError(`${spec}.logSeverityScreen`, `must be one of ${LOG_SEVERITIES.join(', ')}`);
    if (doc.metadata.name !== 'default') throw new ValidationError(`${at}.metadata.name`, 'only the cluster-wide BGPConfiguration named "default" is supported');
    return {
      name: doc.metadata.name,
      asNumber: optInt(s, 'asNumber', spec, 1, AS_MAX) ?? null,
      nodeToNodeMeshEnabled: optBool(s, 'nodeToNodeMeshEnabled', spec) ?? null,
      listenPort: optInt(s, 'listenPort', spec, 1, 65535) ?? null,
      logSeverityScreen: sev ?? null,
    };
  },
  toDoc: (c) => ({
    apiVersion: API_VERSION,
    kind: 'BGPConfiguration',
    metadata: { name: c.name },
    spec: Object.fromEntries(
      Object.entries({ asNumber: c.asNumber, nodeToNodeMeshEnabled: c.nodeToNodeMeshEnabled, listenPort: c.listenPort, logSeverityScreen: c.logSeverityScreen }).filter(([, v]) => v !== null),
    ),
  }),
  name: (c) => c.name,
  columns: ['NAME', 'LOGSEVERITY', 'MESHENABLED', 'ASNUMBER'],
  wideColumns: ['NAME', 'LOGSEVERITY', 'MESHENABLED', 'ASNUMBER', 'LISTENPORT'],
  row: (c, wide) => {
    const base = [c.name, c.logSeverityScreen ?? 'Info', String(c.nodeToNodeMeshEnabled ?? true), String(c.asNumber ?? 64512)];
    return wide ? [...base, String(c.listenPort ?? 179)] : base;
  },
};

export const nodeKind: ResourceKind<NodeRecord> = {
  kind: 'Node',
  names: ['node', 'nodes', 'no'],
  key: keys.node,
  prefix: keys.nodes,
  readOnlyCreate: true,
  selectorLabels: async () => (n) => n.labels,
  fromDoc(doc, at, existing) {
    if (!existing) throw new ValidationError(`${at}.metadata.name`, `node ${JSON.stringify(doc.metadata.name)} is not registered; nodes register themselves with calico-ts node run`);
    const bgp = (doc.spec.bgp ?? {}) as Spec;
    if (typeof bgp !== 'object' || Array.isArray(bgp)) throw new ValidationError(`${at}.spec.bgp`, 'must be an object');
    // The tunnel fields are the node's own (shown by get, ignored by apply so a round trip works).
    onlyFields(doc.spec, ['bgp', 'ipv4VXLANTunnelAddr', 'vxlanTunnelMACAddr'], `${at}.spec`);
    onlyFields(bgp, ['ipv4Address', 'asNumber', 'routeReflectorClusterID'], `${at}.spec.bgp`);
    const rr = optString(bgp, 'routeReflectorClusterID', `${at}.spec.bgp`);
    if (rr !== undefined && rr !== '') parseAddress(rr, `${at}.spec.bgp.routeReflectorClusterID`);
    const ipv4 = optString(bgp, 'ipv4Address', `${at}.spec.bgp`);
    if (ipv4) parseCidr(ipv4.includes('/') ? ipv4 : `${ipv4}/32`, `${at}.spec.bgp.ipv4Address`);
    return {
      ...existing,
      labels: validLabels(doc.metadata.labels, `${at}.metadata.labels`),
      ipv4Address: ipv4 ?? existing.ipv4Address,
      asNumber: optInt(bgp, 'asNumber', `${at}.spec.bgp`, 1, AS_MAX) ?? null,
      routeReflectorClusterId: rr || null,
    };
  },
  toDoc: (n) => ({
    apiVersion: API_VERSION,
    kind: 'Node',
    metadata: { name: n.name, labels: n.labels },
    spec: {
      bgp: Object.fromEntries(
        Object.entries({ ipv4Address: n.ipv4Address, asNumber: n.asNumber, routeReflectorClusterID: n.routeReflectorClusterId }).filter(([, v]) => v !== null),
      ),
      ...(n.ipv4VXLANTunnelAddr ? { ipv4VXLANTunnelAddr: n.ipv4VXLANTunnelAddr, vxlanTunnelMACAddr: n.vxlanTunnelMACAddr } : {}),
    },
  }),
  name: (n) => n.name,
  columns: ['NAME'],
  wideColumns: ['NAME', 'ASN', 'IPV4', 'RRCLUSTERID', 'LABELS'],
  row: (n, wide) =>
    wide
      ? [n.name, n.asNumber === null ? '(64512)' : String(n.asNumber), n.ipv4Address ?? '', n.routeReflectorClusterId ?? '', Object.entries(n.labels).map(([k, v]) => `${k}=${v}`).join(',')]
      : [n.name],
};

const LABEL_KEY = /^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*\/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$/;
const LABEL_VALUE = /^(([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9])?$/;

export function validLabels(labels: unknown, at: string): Record<string, string> {
  if (labels === undefined || labels === null) return {};
  if (typeof labels !== 'object' || Array.isArray(labels)) throw new ValidationError(at, 'must be a map of label keys to values');
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(labels as Record<string, unknown>)) {
    if (!LABEL_KEY.test(k)) throw new ValidationError(`${at}.${k}`, 'is not a valid label key');
    if (typeof v !== 'string' || !LABEL_VALUE.test(v)) throw new ValidationError(`${at}.${k}`, 'must be a label value (letters, digits, - _ ., up to 63)');
    out[k] = v;
  }
  return out;
}

let registry: ResourceKind<unknown>[] | undefined;

/** Every kind the CLI knows, in the order messages list them. Built on first use (see the import note). */
export function resourceKinds(): readonly ResourceKind<unknown>[] {
  registry ??= [
    ipPoolKind,
    profileKind,
    globalNetworkPolicyKind,
    networkPolicyKind,
    bgpPeerKind,
    bgpConfigurationKind,
    nodeKind,
    workloadEndpointKind,
  ] as unknown as ResourceKind<unknown>[];
  return registry;
}

export function kindByName(name: string): ResourceKind<unknown> | undefined {
  const lower = name.toLowerCase();
  return resourceKinds().find((k) => k.kind.toLowerCase() === lower || k.names.includes(lower));
}
