/**
 * The values calico-ts stores, and the typed keys that own their paths. No other module builds an
 * etcd path: they ask `keys` for one. Everything lives under /calico-ts/v1/ so a shared etcd can host
 * other data; key segments are URI-encoded so a CIDR ("10.0.0.0/26") is one segment.
 */

export type EncapMode = 'Never' | 'Always' | 'CrossSubnet';

/** projectcalico.org/v3 IPPool spec, flattened with its name. */
export interface IPPool {
  name: string;
  cidr: string;
  blockSize: number;
  ipipMode: EncapMode;
  vxlanMode: EncapMode;
  natOutgoing: boolean;
  disabled: boolean;
  nodeSelector: string;
}

/** One address in a block: who owns it. `handle` is the Docker endpoint ID once CreateEndpoint bound
 * it; until then it is `unbound:<node>` (Docker's RequestAddress carries no endpoint ID). */
export interface Allocation {
  handle: string;
  node: string;
  /** ms since epoch; lets the garbage collector age out addresses Docker never bound nor released. */
  since: number;
}

/** An IPAM block: `allocations[i]` is the owner of the i-th address of `cidr`, or null when free. */
export interface Block {
  cidr: string;
  /** `host:<node>` while a node holds the block's affinity; null for a borrowed/orphaned block. */
  affinity: string | null;
  allocations: (Allocation | null)[];
  /** When the last address was released (ms). An empty block stays with its host for a grace period,
   * so a host that stops and starts containers does not claim and drop a block each time. */
  emptySince?: number | null;
}

/** Index: node → blocks it holds. The block's own `affinity` field is the truth; this makes lookup cheap. */
export interface BlockAffinity {
  node: string;
  cidr: string;
}

/** Handle (endpoint ID) → the addresses it owns, so release needs no scan. */
export interface Handle {
  id: string;
  addresses: string[];
}

/** A Docker network created with the calico-ts driver on one node (Docker gives each host its own ID). */
export interface Network {
  id: string;
  node: string;
  /** Docker's name for it; learnt asynchronously after CreateNetwork (never inside a Docker call). */
  name: string | null;
  ipv4Pool: string | null;
  ipv6Pool: string | null;
  /** Veth MTU from `-o com.docker.network.driver.mtu`; 0 = the node default. */
  mtu: number;
  createdAt: number;
}

/** The `source` / `destination` of a projectcalico.org/v3 rule. */
export interface EntityRule {
  nets?: string[];
  notNets?: string[];
  selector?: string;
  notSelector?: string;
  /** Numbers or "from:to" ranges (named ports are not supported). */
  ports?: (number | string)[];
  notPorts?: (number | string)[];
}

export interface IcmpMatch {
  type?: number;
  code?: number;
}

export type RuleAction = 'Allow' | 'Deny' | 'Log' | 'Pass';

/** A projectcalico.org/v3 rule. */
export interface Rule {
  action: RuleAction;
  ipVersion?: 4 | 6;
  /** TCP, UDP, ICMP, ICMPv6, SCTP, UDPLite, or a number 1-255. */
  protocol?: string | number;
  notProtocol?: string | number;
  icmp?: IcmpMatch;
  notICMP?: IcmpMatch;
  source?: EntityRule;
  destination?: EntityRule;
}

/** Kept for older records: the rule type profiles were first written with. */
export type RuleSpec = Rule;

/** projectcalico.org/v3 Profile. One per network, named after it. */
export interface Profile {
  name: string;
  ingress: Rule[];
  egress: Rule[];
  labelsToApply: Record<string, string>;
}

export type PolicyType = 'Ingress' | 'Egress';

/** projectcalico.org/v3 GlobalNetworkPolicy, or NetworkPolicy when `namespace` is set. */
export interface Policy {
  kind: 'GlobalNetworkPolicy' | 'NetworkPolicy';
  name: string;
  /** NetworkPolicy only; workload endpoints of calico-ts live in namespace "default". */
  namespace?: string;
  /** Lower first; policies without an order come last. */
  order?: number;
  selector: string;
  types: PolicyType[];
  ingress: Rule[];
  egress: Rule[];
}

export interface NodeRecord {
  name: string;
  /** "10.0.0.11/24": the address (with its subnet) other hosts reach this one at; BGP router ID. */
  ipv4Address: string | null;
  /** Overrides the cluster AS from BGPConfiguration; null = use it. */
  asNumber: number | null;
  /** Set on route reflectors. */
  routeReflectorClusterId: string | null;
  labels: Record<string, string>;
  startedAt: number;
  /** "fd00::11/64": this host's IPv6 address (BGP ipv6 channel next hop); absent/null = none. */
  ipv6Address?: string | null;
  /** vxlan.calico's address (no prefix), allocated from a VXLAN pool; absent/null = no VXLAN here. */
  ipv4VXLANTunnelAddr?: string | null;
  /** vxlan.calico's MAC, which other hosts put in their FDB and neighbour tables. */
  vxlanTunnelMACAddr?: string | null;
  /** tunl0's address (no prefix), allocated from an IPIP pool; absent/null = no IPIP here. */
  ipv4IPIPTunnelAddr?: string | null;
  /** What this node could not program (e.g. "ipip: kernel module missing"), shown by `node status`. */
  problems?: string[];
}

/** projectcalico.org/v3 BGPConfiguration; the cluster-wide one is named `default`. */
export interface BgpConfiguration {
  name: string;
  asNumber: number | null;
  nodeToNodeMeshEnabled: boolean | null;
  listenPort: number | null;
  logSeverityScreen: string | null;
}

/** projectcalico.org/v3 BGPPeer. */
export interface BgpPeer {
  name: string;
  node: string | null;
  nodeSelector: string | null;
  peerIP: string | null;
  asNumber: number | null;
  peerSelector: string | null;
}

/**
 * A network by name, shared by every host: each node makes sure its Docker has a network of this
 * name (Docker ≥ 23 has no cluster store, so every host's network has its own ID).
 */
export interface ClusterNetwork {
  name: string;
  /** The explicit --subnet, or null when the network uses the default pool. */
  subnet: string | null;
  /** `--ipv6`: the network also (or only, on Docker ≥ 28 with --ipv4=false) has IPv6. Absent = false. */
  ipv6?: boolean;
  /** The explicit IPv6 --subnet, or null/absent for the default IPv6 pool. */
  subnetIPv6?: string | null;
  mtu: number;
  driver: string;
  ipamDriver: string;
  createdBy: string;
  createdAt: number;
}

/** A container's attachment on this host, as the dataplane needs it. */
export interface WorkloadEndpoint {
  node: string;
  endpointId: string;
  networkId: string;
  containerId: string | null;
  interfaceName: string;
  /** Addresses with prefix: "192.168.3.4/32", "fd00::5/128". */
  ipNetworks: string[];
  mac: string | null;
  mtu: number;
  labels: Record<string, string>;
  profiles: string[];
  /** Floating IPs: traffic to `externalIP` is DNATed to `internalIP` (one of ipNetworks). */
  ipNATs?: { internalIP: string; externalIP: string }[];
  /** ms since epoch; the garbage collector leaves young endpoints alone (Docker may not list them yet). */
  createdAt: number;
}

export interface Key<T> {
  readonly path: string;
  /** Phantom: ties a path to the type stored there. Never set. */
  readonly _value?: T;
}

export interface KeyPrefix<T> {
  readonly path: string;
  readonly _value?: T;
}

const ROOT = '/calico-ts/v1';
const seg = (s: string): string => encodeURIComponent(s);
const key = <T>(path: string): Key<T> => ({ path });
const prefix = <T>(path: string): KeyPrefix<T> => ({ path: path.endsWith('/') ? path : path + '/' });

export const keys = {
  root: prefix<unknown>(ROOT),
  pool: (name: string) => key<IPPool>(`${ROOT}/ippools/${seg(name)}`),
  pools: () => prefix<IPPool>(`${ROOT}/ippools`),
  block: (cidr: string) => key<Block>(`${ROOT}/ipam/blocks/${seg(cidr)}`),
  blocks: () => prefix<Block>(`${ROOT}/ipam/blocks`),
  affinity: (node: string, cidr: string) => key<BlockAffinity>(`${ROOT}/ipam/affinity/${seg(node)}/${seg(cidr)}`),
  affinities: (node?: string) =>
    prefix<BlockAffinity>(node === undefined ? `${ROOT}/ipam/affinity` : `${ROOT}/ipam/affinity/${seg(node)}`),
  handle: (id: string) => key<Handle>(`${ROOT}/ipam/handles/${seg(id)}`),
  handles: () => prefix<Handle>(`${ROOT}/ipam/handles`),
  network: (id: string) => key<Network>(`${ROOT}/networks/${seg(id)}`),
  networks: () => prefix<Network>(`${ROOT}/networks`),
  profile: (name: string) => key<Profile>(`${ROOT}/profiles/${seg(name)}`),
  globalNetworkPolicy: (name: string) => key<Policy>(`${ROOT}/globalnetworkpolicies/${seg(name)}`),
  globalNetworkPolicies: () => prefix<Policy>(`${ROOT}/globalnetworkpolicies`),
  networkPolicy: (namespace: string, name: string) => key<Policy>(`${ROOT}/networkpolicies/${seg(namespace)}/${seg(name)}`),
  networkPolicies: () => prefix<Policy>(`${ROOT}/networkpolicies`),
  profiles: () => prefix<Profile>(`${ROOT}/profiles`),
  node: (name: string) => key<NodeRecord>(`${ROOT}/nodes/${seg(name)}`),
  bgpConfiguration: (name: string) => key<BgpConfiguration>(`${ROOT}/bgpconfigurations/${seg(name)}`),
  bgpConfigurations: () => prefix<BgpConfiguration>(`${ROOT}/bgpconfigurations`),
  bgpPeer: (name: string) => key<BgpPeer>(`${ROOT}/bgppeers/${seg(name)}`),
  bgpPeers: () => prefix<BgpPeer>(`${ROOT}/bgppeers`),
  clusterNetwork: (name: string) => key<ClusterNetwork>(`${ROOT}/clusternetworks/${seg(name)}`),
  clusterNetworks: () => prefix<ClusterNetwork>(`${ROOT}/clusternetworks`),
  nodes: () => prefix<NodeRecord>(`${ROOT}/nodes`),
  endpoint: (node: string, endpointId: string) =>
    key<WorkloadEndpoint>(`${ROOT}/workloadendpoints/${seg(node)}/${seg(endpointId)}`),
  endpoints: (node?: string) =>
    prefix<WorkloadEndpoint>(
      node === undefined ? `${ROOT}/workloadendpoints` : `${ROOT}/workloadendpoints/${seg(node)}`,
    ),
};
