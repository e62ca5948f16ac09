/**
 * What the dataplane is asked to make true on this host. Built by calc/ (pure) from the datastore;
 * applied by dataplane/ (diff against the kernel, then change only what differs).
 */

/** One local container attachment. */
export interface DesiredEndpoint {
  /** Host end of the veth: `cali` + 11 hex chars of the endpoint ID (15 chars, the kernel's limit). */
  interfaceName: string;
  /** Container end while it is still in the host namespace: `tmp` + the same 11 hex chars. */
  peerName: string;
  /** "192.168.0.5/32" (and later "fd00::5/128"): a host route each, `scope link dev <interfaceName>`. */
  ipNetworks: string[];
  /** Veth MTU; 0 = leave the kernel default (1500). */
  mtu: number;
}

export interface DesiredHostState {
  endpoints: DesiredEndpoint[];
  /** Local IPAM blocks: one `blackhole <cidr> proto calico` route each (announced later by BGP). */
  blackholes: string[];
}

export interface ReconcileReport {
  /** Human-readable summaries of every kernel change made, e.g. "route add 192.168.0.5/32 dev cali0123". */
  changes: string[];
}

export interface Dataplane {
  /** Host-wide setup, idempotent: forwarding sysctls, the cali-FORWARD accept chain and its jump, and a
   * route covering 169.254.1.1 when the host has no default route (proxy ARP needs one). */
  ensureBase(): Promise<void>;
  /** Create (or complete) the veth pair, host-side MAC/sysctls/up, and the host routes. Idempotent. */
  ensureEndpoint(endpoint: DesiredEndpoint): Promise<void>;
  /** Remove the veth (and with it its routes). No error if already gone. */
  removeEndpoint(interfaceName: string): Promise<void>;
  /** Make all calico-owned kernel objects match `desired`: add what is missing, remove what is ours but not desired. */
  reconcile(desired: DesiredHostState): Promise<ReconcileReport>;
}
