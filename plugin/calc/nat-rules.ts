/**
 * The nat table this node wants (pure: pools and this node's endpoints → chains, ipsets and hooks), in
 * Felix's shape, applied by dataplane/filter-applier.ts with NAT_SCOPE:
 *
 *   PREROUTING  → cali-PREROUTING  → cali-fip-dnat
 *   OUTPUT      → cali-OUTPUT      → cali-fip-dnat        (traffic this host itself sends to a floating IP)
 *   POSTROUTING → cali-POSTROUTING → cali-fip-snat, cali-nat-outgoing
 *
 * - cali-nat-outgoing: one MASQUERADE rule for traffic from a natOutgoing pool (`cali40masq-ipam-pools`)
 *   to anything outside every pool (`cali40all-ipam-pools`), present only while some pool has natOutgoing.
 *   Traffic between pools (container to container, any host) is never NATed.
 * - cali-fip-dnat: per floating IP of a local endpoint, `-d <external> -j DNAT --to-destination <internal>`.
 *   Replies are un-NATed by conntrack on the way back.
 * - cali-fip-snat: per floating IP, `-s <internal> -d <internal> -j SNAT --to-source <external>`: a
 *   container that connects to its own floating IP (hairpin) sees the reply come from the floating IP.
 *
 * The chains always exist (empty when there is nothing to do), so the hooks never move. IPv4 only.
 */
import type { IPPool, WorkloadEndpoint } from '../datastore/model.js';
import { ALL_POOLS_SET, MASQ_POOLS_SET, type DesiredFilterState } from '../dataplane/policy-types.js';
import { parseCidr, parseIPv4 } from '../lib/cidr.js';

export const NAT_OUTGOING_CHAIN = 'cali-nat-outgoing';
export const FIP_DNAT_CHAIN = 'cali-fip-dnat';
export const FIP_SNAT_CHAIN = 'cali-fip-snat';

export interface NatInputs {
  pools: readonly IPPool[];
  /** This node's endpoints (their floating IPs are DNATed here). */
  localEndpoints: readonly WorkloadEndpoint[];
}

export interface NatState {
  desired: DesiredFilterState;
  /** Floating IPs left out, and why (e.g. an internal IP the endpoint does not have). */
  problems: string[];
}

function isV4Cidr(text: string): boolean {
  try {
    return parseCidr(text).family === 4;
  } catch {
    return false;
  }
}

/** A floating IP's addresses, checked: both IPv4, the internal one an address of the endpoint. */
function checkFloatingIp(ep: WorkloadEndpoint, nat: { internalIP: string; externalIP: string }): string | undefined {
  if (parseIPv4(nat.externalIP) === undefined) return `externalIP ${JSON.stringify(nat.externalIP)} is not an IPv4 address`;
  if (parseIPv4(nat.internalIP) === undefined) return `internalIP ${JSON.stringify(nat.internalIP)} is not an IPv4 address`;
  if (!ep.ipNetworks.some((n) => n.split('/')[0] === nat.internalIP)) return `internalIP ${nat.internalIP} is not an address of the endpoint`;
  return undefined;
}

export interface FloatingIpMapping {
  external: string;
  internal: string;
  endpoint: string;
}

/**
 * The floating IPs of `endpoints` that can be programmed, sorted by external address, and why the others
 * cannot (a duplicate external IP goes to the first endpoint by ID). The nat table and BGP use the same list.
 */
export function floatingIpMappings(endpoints: readonly WorkloadEndpoint[]): { mappings: FloatingIpMapping[]; problems: string[] } {
  const problems: string[] = [];
  const byExternal = new Map<string, FloatingIpMapping>();
  const sorted = [...endpoints].sort((a, b) => (a.endpointId < b.endpointId ? -1 : a.endpointId > b.endpointId ? 1 : 0));
  for (const ep of sorted) {
    for (const nat of ep.ipNATs ?? []) {
      const problem = checkFloatingIp(ep, nat);
      const taken = byExternal.get(nat.externalIP);
      if (problem) problems.push(`endpoint ${ep.endpointId}: ${problem}`);
      else if (taken) problems.push(`endpoint ${ep.endpointId}: floating IP ${nat.externalIP} is already mapped to ${taken.internal} (endpoint ${taken.endpoint})`);
      else byExternal.set(nat.externalIP, { external: nat.externalIP, internal: nat.internalIP, endpoint: ep.endpointId });
    }
  }
  const mappings = [...byExternal.values()].sort((a, b) => Number((parseIPv4(a.external) ?? 0n) - (parseIPv4(b.external) ?? 0n)));
  return { mappings, problems };
}

export function computeNatState(inputs: NatInputs): NatState {
  const v4Pools = inputs.pools.filter((p) => isV4Cidr(p.cidr));
  const all = [...new Set(v4Pools.map((p) => p.cidr))].sort();
  const masq = [...new Set(v4Pools.filter((p) => p.natOutgoing).map((p) => p.cidr))].sort();
  const { mappings: fips, problems } = floatingIpMappings(inputs.localEndpoints);

  const desired: DesiredFilterState = {
    chains: [
      { name: 'cali-PREROUTING', rules: [`-j ${FIP_DNAT_CHAIN}`] },
      { name: 'cali-OUTPUT', rules: [`-j ${FIP_DNAT_CHAIN}`] },
      { name: 'cali-POSTROUTING', rules: [`-j ${FIP_SNAT_CHAIN}`, `-j ${NAT_OUTGOING_CHAIN}`] },
      { name: FIP_DNAT_CHAIN, rules: fips.map((f) => `-d ${f.external}/32 -j DNAT --to-destination ${f.internal}`) },
      { name: FIP_SNAT_CHAIN, rules: fips.map((f) => `-s ${f.internal}/32 -d ${f.internal}/32 -j SNAT --to-source ${f.external}`) },
      {
        name: NAT_OUTGOING_CHAIN,
        rules: masq.length > 0 ? [`-m set --match-set ${MASQ_POOLS_SET} src -m set ! --match-set ${ALL_POOLS_SET} dst -j MASQUERADE`] : [],
      },
    ],
    ipsets: [
      { name: ALL_POOLS_SET, type: 'hash:net', members: all },
      { name: MASQ_POOLS_SET, type: 'hash:net', members: masq },
    ],
    hooks: { PREROUTING: 'cali-PREROUTING', OUTPUT: 'cali-OUTPUT', POSTROUTING: 'cali-POSTROUTING' },
  };
  return { desired, problems };
}
