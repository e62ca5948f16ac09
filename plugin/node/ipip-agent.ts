/**
 * Keeps this node's IPIP side in step with the pools: when an enabled IPv4 pool with ipipMode Always or
 * CrossSubnet selects the node, tunl0 is up with a tunnel address from IPAM (handle
 * `ipip-tunnel-addr-<node>`, so a restart gets the same address back) and MTU underlay − 20, and the
 * node record carries `ipv4IPIPTunnelAddr`. When no such pool is left, all of it is undone.
 *
 * If the kernel has no ipip module, nothing is programmed and no address is held: the node record gets
 * an `ipip: ...` problem (shown by `calico-ts node status`) and the error is logged. The pool itself
 * stays accepted; other nodes may have the module.
 *
 * Runs on start and on every change to pools or node records (debounced), one run at a time.
 */
import { ipipMtu, ipipPoolsForNode, ipipTunnelHandle, reusableTunnelAddress, withIpipStatus } from '../calc/ipip.js';
import { matchSelector } from '../calc/selector.js';
import { casLoop, type Datastore } from '../datastore/datastore.js';
import { keys, type IPPool } from '../datastore/model.js';
import type { IpipDataplane } from '../dataplane/ipip.js';
import type { Ipam } from '../ipam/ipam.js';
import { DebouncedJob } from '../lib/debounced-job.js';
import type { Logger } from '../lib/log.js';

export interface IpipAgentOptions {
  /** tunl0 MTU; 0 = the underlay interface's MTU − 20. */
  mtu: number;
  /** Full resync period (repairs drift in the kernel); 0 = none. */
  resyncMs?: number;
}

const RETRY_MS = 2_000;

export class IpipAgent {
  /** The datastore prefixes whose changes can change this node's IPIP state (pools; labels and address of nodes). */
  static readonly WATCHED = [keys.pools(), keys.nodes()];
  private readonly job: DebouncedJob;
  private readonly log: Logger;
  /** The last problem reported, so the error is logged once per change, not on every sync. */
  private lastProblem: string | null = null;
  private timer: NodeJS.Timeout | undefined;
  private stopped = false;
  lastError: string | undefined;

  constructor(
    private readonly store: Datastore,
    private readonly ipam: Ipam,
    private readonly dataplane: IpipDataplane,
    private readonly node: string,
    private readonly options: IpipAgentOptions,
    log: Logger,
  ) {
    this.log = log.child({ component: 'ipip' });
    this.job = new DebouncedJob(
      () => this.sync(),
      (err) => this.failed(err),
      50,
    );
  }

  /** Logged, and retried soon: a failure (etcd hiccup, IPAM's pool cache not showing a new pool yet) must not wait for the next change. */
  private failed(err: unknown): void {
    this.lastError = err instanceof Error ? err.message : String(err);
    this.log.warn('IPIP not programmed; will retry', { error: this.lastError });
    if (!this.stopped) setTimeout(() => this.kick(), RETRY_MS).unref();
  }

  kick(): void {
    this.job.kick();
  }

  async start(): Promise<void> {
    await this.job.runNow().catch((err: unknown) => this.failed(err));
    if (this.options.resyncMs) {
      this.timer = setInterval(() => this.kick(), this.options.resyncMs);
      this.timer.unref();
    }
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearInterval(this.timer);
    await this.job.stop();
  }

  async sync(): Promise<void> {
    const [pools, self] = await Promise.all([this.store.list(keys.pools()), this.store.get(keys.node(this.node))]);
    if (!self) return; // not registered yet; registration kicks us again
    const allPools = pools.items.map((p) => p.value);
    const wanted = ipipPoolsForNode(allPools, self.value, matchSelector);
    const poolCidrs = allPools.map((p) => p.cidr);
    if (wanted.length === 0) {
      await this.dataplane.apply(null, poolCidrs);
      await this.releaseTunnelAddress();
      await this.record(null, null);
      return;
    }
    const availability = await this.dataplane.ensureAvailable();
    if (!availability.available) {
      // Nothing half-done: no address held, nothing on the (absent) device.
      await this.releaseTunnelAddress();
      await this.record(null, `pools ${wanted.map((p) => p.name).join(', ')} want IPIP, but ${availability.reason}`);
      return;
    }
    const address = await this.tunnelAddress(wanted);
    const hostAddress = self.value.ipv4Address?.split('/')[0];
    const underlay = hostAddress ? await this.dataplane.underlayMtu(hostAddress) : undefined;
    await this.dataplane.apply({ address, mtu: ipipMtu(this.options.mtu, underlay) }, poolCidrs);
    await this.record(address, null);
  }

  /** The handle's address if it is still inside a wanted pool; else a new one from the first wanted pool. */
  private async tunnelAddress(wanted: IPPool[]): Promise<string> {
    const handle = ipipTunnelHandle(this.node);
    const owned = (await this.store.get(keys.handle(handle)))?.value.addresses ?? [];
    const keep = reusableTunnelAddress(owned, wanted);
    for (const a of owned) if (a !== keep) await this.ipam.release(a, handle);
    if (keep) return keep;
    const [first] = wanted;
    if (!first) throw new Error('no IPIP pool to allocate from');
    const address = await this.ipam.autoAssign(first.cidr, handle);
    this.log.info('allocated the IPIP tunnel address', { address, pool: first.name });
    return address;
  }

  private async releaseTunnelAddress(): Promise<void> {
    const released = await this.ipam.releaseHandle(ipipTunnelHandle(this.node));
    if (released.length > 0) this.log.info('released the IPIP tunnel address', { addresses: released });
  }

  private async record(tunnelAddr: string | null, problem: string | null): Promise<void> {
    if (problem !== this.lastProblem) {
      if (problem) this.log.error('IPIP cannot be programmed on this node', { problem });
      else if (this.lastProblem) this.log.info('IPIP problem resolved');
      this.lastProblem = problem;
    }
    await casLoop(this.store, keys.node(this.node), (cur) => (cur ? withIpipStatus(cur.value, tunnelAddr, problem) : undefined));
    this.lastError = undefined;
  }
}
