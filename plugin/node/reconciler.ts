/**
 * Keeps the kernel matching the datastore for this node: on start, on every relevant datastore event
 * (debounced), and periodically. Join/DeleteEndpoint go through the same lock, so a reconcile that read
 * the datastore before an endpoint existed can never delete the veth Join just made.
 */
import { desiredHostState } from '../calc/host-state.js';
import type { Datastore, Watch } from '../datastore/datastore.js';
import { keys } from '../datastore/model.js';
import type { Dataplane, DesiredEndpoint, ReconcileReport } from '../dataplane/types.js';
import type { Logger } from '../lib/log.js';
import { Mutex } from '../lib/mutex.js';

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
  ) {}

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
      if (report.changes.length > 0) this.log.info('reconciled dataplane', { changes: report.changes });
      this.lastReport = report;
      this.lastError = undefined;
      return report;
    });
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
    for (const prefix of [keys.endpoints(this.node), keys.blocks()] as { path: string }[]) {
      this.watches.push(
        // Not at once: the plugin's own writes (CreateEndpoint, then Join a few ms later) trigger these
        // events, and Join plumbs its veth itself. Waiting lets a burst of container starts settle
        // into one reconcile instead of racing each Join for the lock.
        await this.store.watch(prefix, revision, () => this.kick(WATCH_DEBOUNCE_MS), (err) => this.recordError(err)),
      );
    }
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
