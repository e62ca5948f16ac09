/**
 * The filter-table state policy enforcement wants, as computed by calc/ (pure) and applied by the
 * iptables/ipset applier (dataplane/). Everything named here is ours: chains start with `cali-`,
 * ipsets with `cali40` (IPv4).
 */

/** The nat table's ipsets (Felix's names): IPv4 pools with natOutgoing, and every IPv4 pool. */
export const MASQ_POOLS_SET = 'cali40masq-ipam-pools';
export const ALL_POOLS_SET = 'cali40all-ipam-pools';

export interface IpsetSpec {
  /** `cali40` + a short id: at most 31 characters (the kernel's limit). */
  name: string;
  type: 'hash:net' | 'hash:ip';
  /** IPv4 addresses or CIDRs. */
  members: string[];
}

export interface ChainSpec {
  /** `cali-...`, at most 28 characters (iptables' limit). */
  name: string;
  /**
   * Each rule as the arguments that follow `-A <chain>` in iptables-restore input, e.g.
   * `-m set --match-set cali40s:AbC src -j cali-pi-db-from-web`. Order matters.
   */
  rules: string[];
}

export interface DesiredFilterState {
  /** Every `cali-*` chain of the filter table, with its complete content. */
  chains: ChainSpec[];
  ipsets: IpsetSpec[];
  /** Jumps from the kernel chains into ours: e.g. { FORWARD: 'cali-FORWARD', INPUT: 'cali-INPUT', OUTPUT: 'cali-OUTPUT' }. */
  hooks: Record<string, string>;
}

export interface FilterApplyReport {
  /** Chains created, rewritten or deleted. */
  changedChains: string[];
  /** Ipsets created, changed or destroyed. */
  changedSets: string[];
}

export interface PolicyDataplane {
  /** Makes the filter table and ipsets match `desired`, touching only what differs; idempotent. */
  apply(desired: DesiredFilterState): Promise<FilterApplyReport>;
}
