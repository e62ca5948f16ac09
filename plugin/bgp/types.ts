/**
 * What the BGP sidecar needs to know, assembled by the node from the datastore. Pure data: the
 * renderer turns it into BIRD 2 configuration; nothing here reads etcd or execs.
 */

export interface BgpNode {
  name: string;
  /** The node's IPv4 address: its BGP router ID and the address peers dial. */
  ipv4: string;
  /** Its IPv6 address (no prefix): the next hop of its IPv6 blocks; absent = no IPv6 routing. */
  ipv6?: string;
  asNumber: number;
  /** Set on route reflectors (Calico's `routeReflectorClusterID`). */
  routeReflectorClusterId?: string;
  labels: Record<string, string>;
}

/** projectcalico.org/v3 BGPPeer spec, flattened with its name. */
export interface BgpPeerSpec {
  name: string;
  /** Which calico-ts nodes use this peering: `node` (one by name) or `nodeSelector`; neither = all nodes. */
  node?: string;
  nodeSelector?: string;
  /** An external router: peerIP + asNumber. */
  peerIP?: string;
  asNumber?: number;
  /** Or other calico-ts nodes, chosen by label selector (e.g. route reflectors). */
  peerSelector?: string;
}

/** projectcalico.org/v3 BGPConfiguration (the cluster-wide `default`). */
export interface BgpConfig {
  asNumber: number;
  nodeToNodeMeshEnabled: boolean;
  listenPort: number;
  /** BIRD log level: Fatal | Error | Warning | Info | Debug (Calico's names). */
  logSeverityScreen: string;
}

export const DEFAULT_BGP_CONFIG: BgpConfig = {
  asNumber: 64512,
  nodeToNodeMeshEnabled: true,
  listenPort: 179,
  logSeverityScreen: 'Info',
};

export interface BgpInputs {
  self: BgpNode;
  /** Every node in the cluster, self included. */
  nodes: BgpNode[];
  config: BgpConfig;
  peers: BgpPeerSpec[];
  /** Blocks this node holds: announced as blackhole static routes. */
  localBlocks: string[];
  /** Pool CIDRs: only routes inside them are exported to peers or imported into the kernel.
   * `ipipMode` Always/CrossSubnet: imported routes of the pool go through tunl0 (absent = Never). */
  pools: { cidr: string; disabled: boolean; vxlanMode?: 'Never' | 'Always' | 'CrossSubnet'; ipipMode?: 'Never' | 'Always' | 'CrossSubnet' }[];
  /** This node's own subnet ("10.0.0.0/24"): CrossSubnet IPIP pools tunnel only to next hops outside it. */
  localSubnet?: string;
  /** tunl0 is up here (the node recorded its IPIP tunnel address). Without it no route is sent to
   * tunl0 (the node reports why in its record; `calico-ts node status` shows it). */
  ipipTunnel?: boolean;
  /**
   * Floating IPs (IPv4, no prefix): `local` are DNATed on this node and announced as /32s; `all` (every
   * node's) are accepted from peers like pool routes. Absent = none.
   */
  floatingIPs?: { local: string[]; all: string[] };
}

/** Label selector evaluation, injected (Calico's selector grammar lives in its own module). */
export type SelectorMatcher = (selector: string, labels: Record<string, string>) => boolean;

export type PeerType = 'node-to-node mesh' | 'global' | 'node specific';

/** One BGP session this node should have. */
export interface PeerSession {
  /** BIRD protocol name, unique and stable: e.g. Mesh_10_0_0_2, Global_10_1_1_1, Node_10_1_1_1. */
  protocolName: string;
  peerIP: string;
  asNumber: number;
  type: PeerType;
  /** This node reflects routes to that peer (we are an RR and it is a client). */
  routeReflectorClient: boolean;
  /** Wait for the other side to dial (only one side of a mesh pair dials). */
  passive: boolean;
}

/** One row of `calico-ts node status`. */
export interface PeerStatus {
  peerIP: string;
  type: PeerType;
  /** BIRD's state: up, start, down, ... */
  state: string;
  since: string;
  /** BIRD's info column: Established, Active, Connect, ... */
  info: string;
}
