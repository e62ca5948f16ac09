/**
 * Policy enforcement in the node (Felix's role): on any change to workload endpoints (of every host:
 * selectors match remote endpoints too), profiles or policies, recompute the filter-table state (pure,
 * calc/policy-rules.ts) and hand it to the applier, which rewrites only the chains and ipsets that
 * differ. Changes are debounced briefly so a burst becomes one update. With an IPv6 applier it does the
 * same for ip6tables (the IPv6 table is always programmed, pools or not: no unfiltered IPv6 on cali
 * interfaces, fail closed), IPv4 first.
 */
import { computeFilterState } from '../calc/policy-rules.js';
import type { Datastore } from '../datastore/datastore.js';
import { keys } from '../datastore/model.js';
import type { PolicyDataplane } from '../dataplane/policy-types.js';
import { DebouncedJob } from '../lib/debounced-job.js';
import type { Logger } from '../lib/log.js';

export class PolicyAgent {
  private readonly job: DebouncedJob;
  lastError: string | undefined;
  /** ms from the first change of a burst to the applied update, for the last few updates. */
  readonly latencies: number[] = [];
  private pendingSince: number | undefined;
  private resyncTimer: NodeJS.Timeout | undefined;

  static readonly WATCHED = [keys.endpoints(), keys.profiles(), keys.globalNetworkPolicies(), keys.networkPolicies()];

  constructor(
    private readonly store: Datastore,
    private readonly node: string,
    private readonly applier: PolicyDataplane,
    private readonly log: Logger,
    private readonly applier6?: PolicyDataplane,
  ) {
    this.job = new DebouncedJob(
      () => this.sync(),
      (err) => {
        this.lastError = err instanceof Error ? err.message : String(err);
        this.log.error('policy not applied; will retry', { error: this.lastError });
        setTimeout(() => this.kick(), 1000).unref();
      },
      10,
    );
  }

  kick(): void {
    this.pendingSince ??= performance.now();
    this.job.kick();
  }

  async sync(): Promise<void> {
    const started = this.pendingSince;
    this.pendingSince = undefined;
    const [endpoints, profiles, globalPolicies, namespaced] = await Promise.all([
      this.store.list(keys.endpoints()),
      this.store.list(keys.profiles()),
      this.store.list(keys.globalNetworkPolicies()),
      this.store.list(keys.networkPolicies()),
    ]);
    const all = endpoints.items.map((i) => i.value);
    const input = {
      node: this.node,
      localEndpoints: all.filter((e) => e.node === this.node),
      allEndpoints: all,
      profiles: profiles.items.map((i) => i.value),
      policies: [...globalPolicies.items, ...namespaced.items].map((i) => i.value),
    };
    const report = await this.applier.apply(computeFilterState(input));
    if (this.applier6) {
      const report6 = await this.applier6.apply(computeFilterState({ ...input, family: 6 }));
      report.changedChains = [...report.changedChains, ...report6.changedChains.map((c) => `ip6:${c}`)];
      report.changedSets = [...report.changedSets, ...report6.changedSets];
    }
    this.lastError = undefined;
    if (started !== undefined) {
      this.latencies.push(performance.now() - started);
      if (this.latencies.length > 100) this.latencies.shift();
    }
    if (report.changedChains.length + report.changedSets.length > 0) {
      this.log.info('policy applied', { chains: report.changedChains.length, sets: report.changedSets.length });
      this.log.debug('policy changes', { ...report });
    }
  }

  async start(resyncMs = 30_000): Promise<void> {
    this.pendingSince = performance.now();
    await this.job.runNow();
    // The applier re-reads the kernel when its view is older than its resync interval: an apply now
    // and then repairs rules other tools changed, even when no policy changes.
    this.resyncTimer = setInterval(() => this.job.kick(), resyncMs);
    this.resyncTimer.unref();
  }

  async stop(): Promise<void> {
    clearInterval(this.resyncTimer);
    await this.job.stop();
  }
}
