/**
 * Keeps the kernel matching the datastore for this node: on start, on every relevant datastore event
 * (debounced), and periodically. Join/DeleteEndpoint go through the same lock, so a reconcile that read
 * the datastore before an endpoint existed can never delete the veth Join just made.
 */
import { desiredHostState } from '../calc/host-state.js';
import { crossSubnetProblems, desiredOverlay, poolContaining, workloadMtu } from '../calc/overlay.js';
import type { Datastore, Watch } from '../datastore/datastore.js';
import { keys, type Block, type IPPool, type NodeRecord } from '../datastore/model.js';
import type { OverlayDataplane } from '../dataplane/overlay.js';
import type { Dataplane, DesiredEndpoint, ReconcileReport } from '../dataplane/types.js';
import type { Logger } from '../lib/log.js';
import { Mutex } from '../lib/mutex.js';
import type { VxlanTunnelAddress } from './tunnel-address.js';

/** Routes to other nodes' blocks when pools use VXLAN (and CrossSubnet): programmed from etcd. */
export interface OverlayParts {
  dataplane: OverlayDataplane;
  tunnel: VxlanTunnelAddress;
  /** vxlan.calico MTU; 0 = underlay − 50. */
  vxlanMtu: number;
}

/** The node-record problems the overlay owns (other modules own other prefixes). */
const OVERLAY_PROBLEM_PREFIXES = ['vxlan:', 'cross-subnet:'];

const WATCH_DEBOUNCE_MS = 1000;

export class Reconciler {
  private readonly lock = new Mutex();
  private timer: NodeJS.Timeout | undefined;
  private debounce: NodeJS.Timeout | undefined;
  private watches: Watch[] = [];
  private stopped = false;
  lastReport: ReconcileReport | undefined;
  lastError: string | undefined;

  constructor(
    private readonly store: Datastore,
    private readonly dataplane: Dataplane,
    private readonly node: string,
    private readonly log: Logger,
    private readonly overlay?: OverlayParts,
  ) {}

  /** The underlay's MTU as the overlay last saw it (workload veth MTUs follow it). */
  underlayMtu: number | undefined;
  private pools: IPPool[] = [];

  /** The veth MTU for a new workload address: underlay − the encapsulation of its pool (0 = unknown). */
  workloadMtuFor(address: string): number {
    if (this.underlayMtu === undefined) return 0;
    return workloadMtu(this.underlayMtu, poolContaining(this.pools, address));
  }

  /** The dataplane as the plugin API must use it: serialised with reconciles. */
  get lockedDataplane(): Dataplane {
    return {
      ensureBase: () => this.lock.run(() => this.dataplane.ensureBase()),
      ensureEndpoint: (ep: DesiredEndpoint) => this.lock.run(() => this.dataplane.ensureEndpoint(ep)),
      removeEndpoint: (name: string) => this.lock.run(() => this.dataplane.removeEndpoint(name)),
      reconcile: () => this.reconcileNow(),
    };
  }

  reconcileNow(): Promise<ReconcileReport> {
    return this.lock.run(async () => {
      const [endpoints, blocks] = await Promise.all([this.store.list(keys.endpoints(this.node)), this.store.list(keys.blocks())]);
      const desired = desiredHostState(this.node, endpoints.items.map((i) => i.value), blocks.items.map((i) => i.value));
      const report = await this.dataplane.reconcile(desired);
      if (this.overlay) {
        const [nodes, pools] = await Promise.all([this.store.list(keys.nodes()), this.store.list(keys.pools())]);
        const overlayChanges = await this.reconcileOverlay(
          this.overlay,
          nodes.items.map((i) => i.value),
          pools.items.map((i) => i.value),
          blocks.items.map((i) => i.value),
        );
        report.changes.push(...overlayChanges);
      }
      if (report.changes.length > 0) this.log.info('reconciled dataplane', { changes: report.changes });
      this.lastReport = report;
      this.lastError = undefined;
      return report;
    });
  }

  private async reconcileOverlay(overlay: OverlayParts, nodes: NodeRecord[], pools: IPPool[], blocks: Block[]): Promise<string[]> {
    const index = nodes.findIndex((n) => n.name === this.node);
    const self = nodes[index];
    if (!self) return [];
    this.pools = pools;
    nodes[index] = await overlay.tunnel.ensure(self, pools);
    const desired = desiredOverlay({ node: this.node, nodes, pools, blocks, vxlanMtu: overlay.vxlanMtu });
    const report = await overlay.dataplane.reconcile(desired, self.ipv4Address?.split('/')[0]);
    this.underlayMtu = report.underlayMtu;
    await overlay.tunnel.recordProblems(OVERLAY_PROBLEM_PREFIXES, [...report.problems, ...crossSubnetProblems(this.node, nodes, pools)]);
    return report.changes;
  }

  /** Schedules a reconcile soon, coalescing bursts of events into one. */
  kick(delayMs = 20): void {
    if (this.stopped || this.debounce) return;
    this.debounce = setTimeout(() => {
      this.debounce = undefined;
      this.reconcileNow().catch((err: unknown) => this.recordError(err));
    }, delayMs);
  }

  async start(intervalMs: number): Promise<void> {
    await this.reconcileNow();
    const revision = (await this.store.list(keys.endpoints(this.node))).revision + 1;
    const prefixes: { path: string }[] = [keys.endpoints(this.node), keys.blocks()];
    if (this.overlay) prefixes.push(keys.nodes(), keys.pools());
    // Not at once: the plugin's own writes (CreateEndpoint, then Join a few ms later) trigger these
    // events, and Join plumbs its veth itself. Waiting lets a burst of container starts settle into one
    // reconcile instead of racing each Join for the lock. Opened together: each waits for etcd.
    this.watches.push(
      ...(await Promise.all(
        prefixes.map((prefix) => this.store.watch(prefix, revision, () => this.kick(WATCH_DEBOUNCE_MS), (err) => this.recordError(err))),
      )),
    );
    this.timer = setInterval(() => this.kick(0), intervalMs);
    this.timer.unref();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearInterval(this.timer);
    clearTimeout(this.debounce);
    await Promise.all(this.watches.map((w) => w.close().catch(() => undefined)));
    this.watches = [];
    await this.lock.run(async () => undefined);
  }

  private recordError(err: unknown): void {
    this.lastError = err instanceof Error ? err.message : String(err);
    this.log.warn('reconcile failed; will retry', { error: this.lastError });
  }
}
