/**
 * Pure: datastore snapshot → how this node reaches other nodes' blocks when pools ask for VXLAN.
 *
 * Calico's semantics, per pool (enabled pools only; a disabled pool is neither routed nor announced):
 *   vxlanMode Always      every remote block of the pool goes `via <remote VTEP IP> dev vxlan.calico onlink`;
 *   vxlanMode CrossSubnet remote nodes on this node's own IPv4 subnet get a plain route `via <their IP>`,
 *                         the others the VXLAN route;
 *   vxlanMode Never       BGP (BIRD) routes the pool; nothing here.
 * Routes for VXLAN pools come from etcd (block affinities + node records), not from BGP: BIRD's kernel
 * export leaves those pools alone (bgp/render.ts).
 *
 * The node gets a VTEP (vxlan.calico) when an enabled VXLAN pool's nodeSelector selects it; its tunnel
 * address comes from such a pool (node/tunnel-address.ts). A remote node takes part once its record
 * carries a tunnel address and MAC.
 */
import { createHash } from 'node:crypto';
import type { Block, EncapMode, IPPool, NodeRecord } from '../datastore/model.js';
import { cidrWithin, containsAddress, formatCidr, parseAddress, parseCidr, type Cidr } from '../lib/cidr.js';
import { matchSelector } from './selector.js';

export const VXLAN_DEVICE = 'vxlan.calico';
/** Calico's defaults. */
export const VXLAN_VNI = 4096;
export const VXLAN_PORT = 4789;
/** Outer IPv4 (20) + UDP (8) + VXLAN (8) + inner Ethernet (14). */
export const VXLAN_OVERHEAD = 50;
/** Outer IPv4 header. */
export const IPIP_OVERHEAD = 20;
/** The handle that owns a node's VXLAN tunnel address in IPAM (stable: reused after a restart). */
export const vxlanTunnelHandle = (node: string): string => `vxlan-tunnel-addr-${node}`;

/** Calico's selector semantics for pools: empty or all() selects every node. */
export function poolSelectsNode(pool: IPPool, node: Pick<NodeRecord, 'labels'>): boolean {
  const sel = pool.nodeSelector.trim();
  return sel === '' || sel === 'all()' || matchSelector(sel, node.labels);
}

const isV4 = (p: IPPool): boolean => !p.cidr.includes(':');

/** Enabled IPv4 pools with VXLAN on, in name order. */
export function vxlanPools(pools: readonly IPPool[]): IPPool[] {
  return pools.filter((p) => !p.disabled && isV4(p) && p.vxlanMode !== 'Never').sort((a, b) => (a.name < b.name ? -1 : 1));
}

/** The VXLAN pools this node's tunnel address may come from (those that select it). */
export function vxlanPoolsForNode(pools: readonly IPPool[], node: Pick<NodeRecord, 'labels'>): IPPool[] {
  return vxlanPools(pools).filter((p) => poolSelectsNode(p, node));
}

/**
 * A stable, locally administered unicast MAC for a node's VTEP, derived from its name: the same after
 * a restart or with a lost node record, and different per node (collisions: 2^-46 per pair).
 */
export function vtepMac(node: string): string {
  const h = createHash('sha256').update(`calico-ts vtep ${node}`).digest();
  const bytes = [...h.subarray(0, 6)];
  bytes[0] = ((bytes[0] ?? 0) & 0xfc) | 0x02;
  return bytes.map((b) => b.toString(16).padStart(2, '0')).join(':');
}

export interface DesiredVtep {
  vni: number;
  port: number;
  /** Underlay source address (the node's IPv4, no prefix). */
  localIp: string;
  mac: string;
  /** "10.x.y.z/32" on vxlan.calico. */
  address: string;
  /** 0 = underlay MTU − 50 (the executor knows the underlay). */
  mtu: number;
}

export interface OverlayRoute {
  /** Remote block. */
  dst: string;
  /** Next hop: the remote VTEP address (dev vxlan.calico, onlink) or the remote host's IP (plain). */
  via: string;
  encap: 'vxlan' | 'none';
  node: string;
}

export interface DesiredOverlay {
  /** null: no VXLAN pool selects this node (or it has no tunnel address yet): vxlan.calico must not exist. */
  vtep: DesiredVtep | null;
  /** Permanent neighbour entries on vxlan.calico: remote VTEP IP → MAC. */
  neighbours: { ip: string; mac: string }[];
  /** Permanent FDB entries on vxlan.calico: remote VTEP MAC → remote underlay IP. */
  fdb: { mac: string; dst: string }[];
  routes: OverlayRoute[];
  /** Why some remote blocks are not routed (shown by `calico-ts node status`). */
  problems: string[];
}

export interface OverlayInputs {
  node: string;
  nodes: readonly NodeRecord[];
  pools: readonly IPPool[];
  blocks: readonly Block[];
  /** Configured vxlan.calico MTU; 0 = underlay − 50. */
  vxlanMtu: number;
}

/** The node's underlay address and (from its prefix length) its subnet. */
function hostIp(n: NodeRecord): { ip: string; subnet: Cidr | undefined } | undefined {
  if (!n.ipv4Address) return undefined;
  const [ip = '', prefix] = n.ipv4Address.split('/');
  try {
    parseAddress(ip);
    return { ip, subnet: prefix === undefined ? undefined : parseCidr(n.ipv4Address) };
  } catch {
    return undefined;
  }
}

/** Whether two nodes share an IPv4 subnet (by this node's prefix, as CrossSubnet decides it). */
export function sameSubnet(self: NodeRecord, other: NodeRecord): boolean {
  const a = hostIp(self);
  const b = hostIp(other);
  if (!a?.subnet || !b) return false;
  const { family, value } = parseAddress(b.ip);
  return containsAddress(a.subnet, family, value);
}

function poolOf(pools: readonly IPPool[], cidr: Cidr): IPPool | undefined {
  return pools.find((p) => cidrWithin(cidr, parseCidr(p.cidr)));
}

function modeRoute(mode: EncapMode, same: boolean): 'vxlan' | 'none' {
  return mode === 'CrossSubnet' && same ? 'none' : 'vxlan';
}

export function desiredOverlay(inputs: OverlayInputs): DesiredOverlay {
  const { node } = inputs;
  const self = inputs.nodes.find((n) => n.name === node);
  const empty: DesiredOverlay = { vtep: null, neighbours: [], fdb: [], routes: [], problems: [] };
  const pools = vxlanPools(inputs.pools);
  if (!self || pools.length === 0) return empty;
  const selfIp = hostIp(self);
  const problems: string[] = [];
  let vtep: DesiredVtep | null = null;
  if (vxlanPoolsForNode(inputs.pools, self).length > 0) {
    if (!selfIp) problems.push('vxlan: this node has no IPv4 address (set IP or IP_AUTODETECTION_METHOD); no VXLAN tunnel');
    else if (!self.ipv4VXLANTunnelAddr) problems.push('vxlan: waiting for a tunnel address from a VXLAN pool');
    else {
      vtep = {
        vni: VXLAN_VNI,
        port: VXLAN_PORT,
        localIp: selfIp.ip,
        mac: self.vxlanTunnelMACAddr ?? vtepMac(node),
        address: `${self.ipv4VXLANTunnelAddr}/32`,
        mtu: inputs.vxlanMtu,
      };
    }
  }

  const byName = new Map(inputs.nodes.map((n) => [n.name, n]));
  const neighbours = new Map<string, { ip: string; mac: string }>();
  const fdb = new Map<string, { mac: string; dst: string }>();
  const routes: OverlayRoute[] = [];
  const unreachable = new Set<string>();
  for (const block of inputs.blocks) {
    const owner = block.affinity?.startsWith('host:') ? block.affinity.slice('host:'.length) : undefined;
    if (!owner || owner === node) continue;
    let cidr: Cidr;
    try {
      cidr = parseCidr(block.cidr);
    } catch {
      continue;
    }
    const pool = poolOf(pools, cidr);
    if (!pool) continue;
    const remote = byName.get(owner);
    const remoteIp = remote && hostIp(remote);
    if (!remote || !remoteIp) {
      unreachable.add(`${owner} (no node record with an IPv4 address)`);
      continue;
    }
    const encap = modeRoute(pool.vxlanMode, sameSubnet(self, remote));
    if (encap === 'none') {
      routes.push({ dst: formatCidr(cidr), via: remoteIp.ip, encap, node: owner });
      continue;
    }
    if (!vtep) {
      unreachable.add(`${owner} (this node has no VXLAN tunnel)`);
      continue;
    }
    if (!remote.ipv4VXLANTunnelAddr || !remote.vxlanTunnelMACAddr) {
      unreachable.add(`${owner} (it has no VXLAN tunnel yet)`);
      continue;
    }
    neighbours.set(remote.ipv4VXLANTunnelAddr, { ip: remote.ipv4VXLANTunnelAddr, mac: remote.vxlanTunnelMACAddr });
    fdb.set(remote.vxlanTunnelMACAddr, { mac: remote.vxlanTunnelMACAddr, dst: remoteIp.ip });
    routes.push({ dst: formatCidr(cidr), via: remote.ipv4VXLANTunnelAddr, encap, node: owner });
  }
  for (const u of [...unreachable].sort()) problems.push(`vxlan: blocks of node ${u} are not routed`);
  const byKey = <T>(k: (x: T) => string) => (a: T, b: T) => (k(a) < k(b) ? -1 : k(a) > k(b) ? 1 : 0);
  return {
    vtep,
    neighbours: [...neighbours.values()].sort(byKey((n) => n.ip)),
    fdb: [...fdb.values()].sort(byKey((f) => f.mac)),
    routes: routes.sort(byKey((r) => r.dst)),
    problems,
  };
}

/**
 * Hints for `calico-ts node status` about nodes this one cannot reach directly: BGP sessions are
 * `direct` (one link), so a peer on another subnet never comes up, and pools with vxlanMode Never
 * have no way to its containers.
 */
export function crossSubnetProblems(node: string, nodes: readonly NodeRecord[], pools: readonly IPPool[]): string[] {
  const self = nodes.find((n) => n.name === node);
  if (!self || !hostIp(self)?.subnet) return [];
  const plain = pools.filter((p) => !p.disabled && isV4(p) && p.vxlanMode === 'Never' && p.ipipMode === 'Never');
  if (plain.length === 0) return [];
  const others = nodes.filter((n) => n.name !== node && hostIp(n) && !sameSubnet(self, n)).map((n) => `${n.name} (${n.ipv4Address})`);
  if (others.length === 0) return [];
  return [
    `cross-subnet: node(s) ${others.sort().join(', ')} are not on this node's subnet ${self.ipv4Address}; ` +
      `BGP sessions are direct, so they stay down, and pool(s) ${plain.map((p) => p.name).sort().join(', ')} ` +
      `(vxlanMode: Never) have no route to their containers. Set vxlanMode: CrossSubnet (or Always) on the pool ` +
      `with calico-ts apply`,
  ];
}

/** The enabled pool holding an address (undefined when none does or the address is not one). */
export function poolContaining(pools: readonly IPPool[], address: string): IPPool | undefined {
  try {
    const { family, value } = parseAddress(address);
    return pools.find((p) => !p.disabled && containsAddress(parseCidr(p.cidr), family, value));
  } catch {
    return undefined;
  }
}

/** MTU a workload veth gets when nothing configures it: the underlay's minus the encapsulation the
 * pool uses (VXLAN − 50, IPIP − 20; both modes of a pool → the larger overhead). 0 when unknown. */
export function workloadMtu(underlayMtu: number, pool: Pick<IPPool, 'vxlanMode' | 'ipipMode'> | undefined): number {
  if (underlayMtu <= 0) return 0;
  if (!pool) return underlayMtu;
  const overhead = Math.max(pool.vxlanMode !== 'Never' ? VXLAN_OVERHEAD : 0, pool.ipipMode !== 'Never' ? IPIP_OVERHEAD : 0);
  return underlayMtu - overhead;
}
