/**
 * This node's VXLAN tunnel address and VTEP MAC, kept in step with the pools: allocated from a VXLAN
 * pool that selects the node (IPAM handle `vxlan-tunnel-addr-<node>`, so a restarted node finds and
 * reuses its address), released when no such pool is left, and both written into the node record
 * where every other node reads them.
 */
import { vtepMac, vxlanPoolsForNode, vxlanTunnelHandle } from '../calc/overlay.js';
import { casLoop, type Datastore } from '../datastore/datastore.js';
import { keys, type IPPool, type NodeRecord } from '../datastore/model.js';
import type { Ipam } from '../ipam/ipam.js';
import { containsAddress, parseAddress, parseCidr } from '../lib/cidr.js';
import type { Logger } from '../lib/log.js';

function inPool(address: string, pool: IPPool): boolean {
  const { family, value } = parseAddress(address);
  return containsAddress(parseCidr(pool.cidr), family, value);
}

export class VxlanTunnelAddress {
  constructor(
    private readonly store: Datastore,
    private readonly ipam: Ipam,
    private readonly node: string,
    private readonly log: Logger,
  ) {}

  /** Makes the record (and IPAM) match the pools; returns the record as it now is. Idempotent. */
  async ensure(self: NodeRecord, pools: readonly IPPool[]): Promise<NodeRecord> {
    const handle = vxlanTunnelHandle(this.node);
    const wanted = vxlanPoolsForNode(pools, self);
    const owned = (await this.store.get(keys.handle(handle)))?.value.addresses ?? [];
    let address: string | null = owned.find((a) => wanted.some((p) => inPool(a, p))) ?? null;
    for (const a of owned) {
      if (a !== address) await this.ipam.release(a, handle);
    }
    if (wanted.length > 0 && !address) {
      for (const pool of wanted) {
        try {
          address = await this.ipam.autoAssign(pool.cidr, handle);
          this.log.info('VXLAN tunnel address allocated', { address, pool: pool.name });
          break;
        } catch (err) {
          this.log.warn('no VXLAN tunnel address from this pool', { pool: pool.name, error: String(err) });
        }
      }
    }
    if (wanted.length === 0 && owned.length > 0) {
      await this.ipam.releaseHandle(handle);
      this.log.info('VXLAN tunnel address released: no VXLAN pool selects this node', { addresses: owned });
    }
    const mac = address ? vtepMac(this.node) : null;
    const written = await casLoop(this.store, keys.node(this.node), (cur) => {
      if (!cur) return undefined;
      if ((cur.value.ipv4VXLANTunnelAddr ?? null) === address && (cur.value.vxlanTunnelMACAddr ?? null) === mac) return undefined;
      return { ...cur.value, ipv4VXLANTunnelAddr: address, vxlanTunnelMACAddr: mac };
    });
    return written?.value ?? self;
  }

  /** Replaces this node's problems that start with one of `prefixes` (other modules own the rest). */
  async recordProblems(prefixes: readonly string[], problems: readonly string[]): Promise<void> {
    await casLoop(this.store, keys.node(this.node), (cur) => {
      if (!cur) return undefined;
      const kept = (cur.value.problems ?? []).filter((p) => !prefixes.some((x) => p.startsWith(x)));
      const next = [...kept, ...problems];
      const same = next.length === (cur.value.problems ?? []).length && next.every((p, i) => p === cur.value.problems?.[i]);
      return same ? undefined : { ...cur.value, problems: next };
    });
  }
}
