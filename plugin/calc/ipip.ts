/**
 * Pure IPIP planning: which pools make this node an IPIP node, what `tunl0` should look like, the steps
 * that take the kernel's `tunl0` there, and the node record's IPIP fields. No I/O: the node agent feeds
 * it the datastore, dataplane/ipip.ts feeds it the kernel and runs the steps.
 *
 * tunl0 is the kernel's fallback IPIP device: the ipip module creates it in every network namespace and
 * it cannot be deleted. So "undo" means: take our address off it and set it down, never delete it.
 */
import type { IPPool, NodeRecord } from '../datastore/model.js';
import { containsAddress, parseAddress, parseCidr } from '../lib/cidr.js';

export const IPIP_DEVICE = 'tunl0';
/** The outer IPv4 header IPIP adds to every packet. */
export const IPIP_OVERHEAD = 20;
/** What `tunl0` gets when the underlay MTU cannot be found. */
export const DEFAULT_UNDERLAY_MTU = 1500;
/** Every IPIP entry of NodeRecord.problems starts with this, so other layers' entries are kept. */
export const IPIP_PROBLEM_PREFIX = 'ipip: ';

/** IPAM handle of the node's tunnel address: stable, so a restarted node gets the same address back. */
export function ipipTunnelHandle(node: string): string {
  return `ipip-tunnel-addr-${node}`;
}

export type SelectorMatcher = (selector: string, labels: Record<string, string>) => boolean;

/** Enabled IPv4 pools with ipipMode Always or CrossSubnet whose nodeSelector selects `node`, by name. */
export function ipipPoolsForNode(pools: readonly IPPool[], node: Pick<NodeRecord, 'labels'>, matches: SelectorMatcher): IPPool[] {
  return pools
    .filter((p) => !p.disabled && p.ipipMode !== 'Never' && !p.cidr.includes(':'))
    .filter((p) => matches(p.nodeSelector || 'all()', node.labels))
    .sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
}

/** The tunnel address to keep from what the handle already owns: the first one inside a wanted pool. */
export function reusableTunnelAddress(owned: readonly string[], wanted: readonly IPPool[]): string | undefined {
  const ranges = wanted.map((p) => parseCidr(p.cidr));
  return owned.find((a) => {
    const { family, value } = parseAddress(a);
    return ranges.some((r) => containsAddress(r, family, value));
  });
}

/** tunl0's MTU: explicit, else the underlay's minus the outer header. */
export function ipipMtu(configured: number, underlayMtu: number | undefined): number {
  if (configured > 0) return configured;
  return (underlayMtu ?? DEFAULT_UNDERLAY_MTU) - IPIP_OVERHEAD;
}

/** What the dataplane is asked to make true; null = this node is not an IPIP node. */
export interface DesiredTunl0 {
  /** "192.168.3.0" (no prefix); configured as a /32 on tunl0. */
  address: string;
  mtu: number;
}

/** tunl0 as the kernel has it (undefined when the device does not exist: no ipip module). */
export interface Tunl0State {
  up: boolean;
  mtu: number;
  /** IPv4 addresses on tunl0 with their prefix, as `ip -json addr` prints them: "192.168.3.0/32". */
  addresses: string[];
}

export type IpipStep =
  | { op: 'addr-del'; address: string }
  | { op: 'addr-add'; address: string }
  | { op: 'link-up'; mtu: number }
  | { op: 'link-down' };

/**
 * Pure diff for tunl0. With a desired state, tunl0 is ours: every other IPv4 address on it goes, ours is
 * added, MTU and up are set. Without one, only addresses inside `ourPools` (every calico-ts pool) are
 * removed — they can only be ours — and tunl0 is set down if one was; anything else on it is left alone.
 */
export function planTunl0(kernel: Tunl0State, desired: DesiredTunl0 | null, ourPools: readonly string[]): IpipStep[] {
  const steps: IpipStep[] = [];
  if (desired) {
    const want = `${desired.address}/32`;
    for (const a of kernel.addresses) if (a !== want) steps.push({ op: 'addr-del', address: a });
    if (!kernel.up || kernel.mtu !== desired.mtu) steps.push({ op: 'link-up', mtu: desired.mtu });
    if (!kernel.addresses.includes(want)) steps.push({ op: 'addr-add', address: want });
    return steps;
  }
  const ranges = ourPools.map((p) => parseCidr(p)).filter((r) => r.family === 4);
  for (const a of kernel.addresses) {
    const { family, value } = parseAddress(a.split('/')[0] ?? a);
    if (ranges.some((r) => containsAddress(r, family, value))) steps.push({ op: 'addr-del', address: a });
  }
  if (steps.length > 0 && kernel.up) steps.push({ op: 'link-down' });
  return steps;
}

/** The node record with its IPIP fields set; other layers' problems are kept. Undefined = no change. */
export function withIpipStatus(node: NodeRecord, tunnelAddr: string | null, problem: string | null): NodeRecord | undefined {
  const others = (node.problems ?? []).filter((p) => !p.startsWith(IPIP_PROBLEM_PREFIX));
  const problems = problem === null ? others : [...others, `${IPIP_PROBLEM_PREFIX}${problem}`];
  const sameProblems = JSON.stringify(problems) === JSON.stringify(node.problems ?? []);
  if ((node.ipv4IPIPTunnelAddr ?? null) === tunnelAddr && sameProblems) return undefined;
  const next: NodeRecord = { ...node, ipv4IPIPTunnelAddr: tunnelAddr, problems };
  if (tunnelAddr === null) delete next.ipv4IPIPTunnelAddr;
  if (problems.length === 0) delete next.problems;
  return next;
}
