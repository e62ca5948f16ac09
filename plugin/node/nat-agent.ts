/**
 * Outgoing NAT and floating IPs in the node: on any change to pools or this node's endpoints, recompute
 * the nat table (pure, calc/nat-rules.ts) and hand it to a nat-table applier (dataplane/filter-applier.ts
 * with NAT_SCOPE), which rewrites only what differs. Runs whether or not policy enforcement is on; a
 * periodic apply repairs drift (the applier re-reads the kernel every 30 s).
 */
import { computeNatState } from '../calc/nat-rules.js';
import type { Datastore } from '../datastore/datastore.js';
import { keys } from '../datastore/model.js';
import type { PolicyDataplane } from '../dataplane/policy-types.js';
import { DebouncedJob } from '../lib/debounced-job.js';
import type { Logger } from '../lib/log.js';

export class NatAgent {
  private readonly job = new DebouncedJob(() => this.sync(), (err) => this.failed(err), 10);
  private resyncTimer: NodeJS.Timeout | undefined;
  lastError: string | undefined;
  /** Floating IPs that could not be programmed, as of the last computation. */
  problems: string[] = [];

  static readonly WATCHED = [keys.pools(), keys.endpoints()];

  constructor(
    private readonly store: Datastore,
    private readonly node: string,
    private readonly applier: PolicyDataplane,
    private readonly log: Logger,
  ) {}

  /** Records and logs a failed apply, and retries in a second. */
  private failed(err: unknown): void {
    this.lastError = err instanceof Error ? err.message : String(err);
    this.log.error('nat table not applied; will retry', { error: this.lastError });
    setTimeout(() => this.kick(), 1000).unref();
  }

  kick(): void {
    this.job.kick();
  }

  async sync(): Promise<void> {
    const [pools, endpoints] = await Promise.all([this.store.list(keys.pools()), this.store.list(keys.endpoints(this.node))]);
    const { desired, problems } = computeNatState({ pools: pools.items.map((i) => i.value), localEndpoints: endpoints.items.map((i) => i.value) });
    if (problems.join('\n') !== this.problems.join('\n')) for (const p of problems) this.log.warn('floating IP not programmed', { problem: p });
    this.problems = problems;
    const report = await this.applier.apply(desired);
    this.lastError = undefined;
    if (report.changedChains.length + report.changedSets.length > 0) this.log.info('nat table applied', { ...report });
  }

  /** A failed first apply does not stop the node (containers still get addresses): it is retried. */
  async start(resyncMs = 30_000): Promise<void> {
    await this.job.runNow().catch((err: unknown) => this.failed(err));
    this.resyncTimer = setInterval(() => this.job.kick(), resyncMs);
    this.resyncTimer.unref();
  }

  async stop(): Promise<void> {
    clearInterval(this.resyncTimer);
    await this.job.stop();
  }
}
