/**
 * `calico-ts node run`: one process per host. Connects to etcd, registers the node, makes sure a pool
 * exists, prepares the host (forwarding, the cali-FORWARD chain), serves the plugin socket, and keeps
 * the kernel in step with the datastore (reconciler) and the datastore in step with Docker (DockerSync).
 */
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import type { Server } from 'node:http';
import { IpamDriver } from '../api/ipam-driver.js';
import { NetworkDriver } from '../api/network-driver.js';
import { createApp, listenOnSocket } from '../api/server.js';
import { casLoop, type Datastore, type Watch } from '../datastore/datastore.js';
import { DebouncedJob } from '../lib/debounced-job.js';
import { EtcdDatastore } from '../datastore/etcd.js';
import { keys } from '../datastore/model.js';
import { LinuxDataplane } from '../dataplane/linux.js';
import type { Dataplane } from '../dataplane/types.js';
import { Ipam } from '../ipam/ipam.js';
import { ExecFileRunner } from '../lib/exec.js';
import { ValidationError } from '../lib/errors.js';
import { createLogger, type Logger } from '../lib/log.js';
import { statusFile, type NodeConfig } from './config.js';
import { detectIPv4, detectIPv6 } from './autodetect.js';
import { DockerSync } from './docker-sync.js';
import { BgpAgent } from './bgp-agent.js';
import { PolicyAgent } from './policy-agent.js';
import { FilterApplier, NAT_SCOPE } from '../dataplane/filter-applier.js';
import { NatAgent } from './nat-agent.js';
import { IpipAgent } from './ipip-agent.js';
import { IpipDataplane } from '../dataplane/ipip.js';
import type { PolicyDataplane } from '../dataplane/policy-types.js';
import { BirdSupervisor } from '../bgp/bird.js';
import { Reconciler, type OverlayParts } from './reconciler.js';
import { OverlayDataplane } from '../dataplane/overlay.js';
import { VxlanTunnelAddress } from './tunnel-address.js';

export interface NodeAgentDeps {
  store?: Datastore;
  dataplane?: Dataplane;
  policyDataplane?: PolicyDataplane;
  /** The IPv6 policy applier (ip6tables); default: a FilterApplier for family 6. */
  policyDataplane6?: PolicyDataplane;
  /** The nat-table applier (outgoing NAT, floating IPs). */
  natDataplane?: PolicyDataplane;
  ipipDataplane?: IpipDataplane;
  log?: Logger;
}

export class NodeAgent {
  readonly store: Datastore;
  readonly ipam: Ipam;
  readonly reconciler: Reconciler;
  readonly dockerSync: DockerSync;
  private readonly log: Logger;
  private server: Server | undefined;
  private gcTimer: NodeJS.Timeout | undefined;
  private readonly networkSync: DebouncedJob;
  readonly bgp: BgpAgent | undefined;
  readonly policy: PolicyAgent | undefined;
  readonly nat: NatAgent;
  readonly ipip: IpipAgent | undefined;
  private readonly watches: Watch[] = [];

  constructor(
    readonly config: NodeConfig,
    deps: NodeAgentDeps = {},
  ) {
    this.log = deps.log ?? createLogger(config.logLevel, { node: config.nodeName });
    this.store = deps.store ?? new EtcdDatastore(config.etcd);
    this.ipam = new Ipam(this.store, { node: config.nodeName });
    const dataplane = deps.dataplane ?? new LinuxDataplane(new ExecFileRunner(), {
      log: this.log,
      manageForwardChain: !config.policyEnforcement,
      ...(config.sysctlRoot ? { sysctlRoot: config.sysctlRoot } : {}),
    });
    this.policy = config.policyEnforcement
      ? new PolicyAgent(
          this.store,
          config.nodeName,
          deps.policyDataplane ?? new FilterApplier(new ExecFileRunner(), { log: this.log }),
          this.log.child({ component: 'policy' }),
          deps.policyDataplane6 ?? (deps.policyDataplane ? undefined : new FilterApplier(new ExecFileRunner(), { log: this.log, family: 6 })),
        )
      : undefined;
    this.nat = new NatAgent(
      this.store,
      config.nodeName,
      deps.natDataplane ?? new FilterApplier(new ExecFileRunner(), { log: this.log, scope: NAT_SCOPE }),
      this.log.child({ component: 'nat' }),
    );
    // The overlay (VXLAN, CrossSubnet routes) comes with the real dataplane; tests that inject a dataplane
    // inject none.
    const overlay: OverlayParts | undefined = deps.dataplane
      ? undefined
      : {
          dataplane: new OverlayDataplane(new ExecFileRunner(), { log: this.log }),
          tunnel: new VxlanTunnelAddress(this.store, this.ipam, config.nodeName, this.log.child({ component: 'vxlan' })),
          vxlanMtu: config.vxlanMtu,
        };
    this.reconciler = new Reconciler(this.store, dataplane, config.nodeName, this.log, overlay);
    // IPIP (tunl0) likewise: only with the real dataplane, or an injected one.
    const ipipDataplane = deps.ipipDataplane ?? (deps.dataplane ? undefined : new IpipDataplane(new ExecFileRunner(), { log: this.log }));
    this.ipip = ipipDataplane
      ? new IpipAgent(this.store, this.ipam, ipipDataplane, config.nodeName, { mtu: config.ipipMtu, resyncMs: config.reconcileIntervalMs }, this.log)
      : undefined;
    this.dockerSync = new DockerSync({
      store: this.store,
      ipam: this.ipam,
      dataplane: this.reconciler.lockedDataplane,
      node: config.nodeName,
      dockerSocket: config.dockerSocket,
      log: this.log,
      graceMs: config.gcGraceMs,
      unboundGraceMs: config.gcUnboundGraceMs,
      driverName: config.driverName,
    });
    this.bgp =
      config.networkingBackend === 'bird'
        ? new BgpAgent(this.store, config.nodeName, config.runDir, new BirdSupervisor({ runDir: config.runDir, log: this.log.child({ component: 'bird' }) }), this.log)
        : undefined;
    this.networkSync = new DebouncedJob(
      async () => void (await this.dockerSync.syncNetworks()),
      (err) => this.log.debug('network sync failed; will retry', { error: String(err) }),
      50,
    );
  }

  /** Runs `onChange` on every change under the given prefixes (from now on). */
  private async watchPrefixes(prefixes: { path: string }[], onChange: () => void): Promise<void> {
    const revision = (await this.store.list(keys.nodes())).revision + 1;
    for (const prefix of prefixes) {
      this.watches.push(await this.store.watch(prefix, revision, onChange, (err) => this.log.warn('watch failed', { prefix: prefix.path, error: String(err) })));
    }
  }

  async start(): Promise<void> {
    const { config } = this;
    mkdirSync(config.runDir, { recursive: true });
    await this.register();
    await this.ipam.ensureDefaultPool(config.ipv6PoolCidr);
    const dataplane = this.reconciler.lockedDataplane;
    await dataplane.ensureBase();
    // Kernel first, then the socket: Docker's first calls find the host already consistent, and no
    // workload traffic passes before its policy is in place (fail closed).
    if (this.policy) {
      const policy = this.policy;
      await policy.start();
      await this.watchPrefixes(PolicyAgent.WATCHED, () => policy.kick());
      policy.kick(); // covers changes between the first computation and the watch
    }
    const nat = this.nat;
    await nat.start();
    await this.watchPrefixes(NatAgent.WATCHED, () => nat.kick());
    nat.kick();
    await this.reconciler.start(config.reconcileIntervalMs);
    if (this.ipip) {
      const ipip = this.ipip;
      await ipip.start();
      await this.watchPrefixes(IpipAgent.WATCHED, () => ipip.kick());
      ipip.kick(); // covers changes between the first sync and the watch
    }
    const network = new NetworkDriver({
      store: this.store,
      ipam: this.ipam,
      dataplane,
      node: config.nodeName,
      log: this.log,
      defaultMtu: config.defaultMtu,
      autoMtu: (address) => this.reconciler.workloadMtuFor(address),
      onNetworkCreated: (id) => this.dockerSync.resolveNameSoon(id),
      onEndpointJoined: (networkId, endpointId) => this.dockerSync.resolveEndpointSoon(networkId, endpointId),
    });
    const app = createApp({ network, ipam: new IpamDriver(this.ipam), log: this.log });
    this.server = await listenOnSocket(app, config.socketPath);
    writeFileSync(statusFile(config), JSON.stringify({ pid: process.pid, node: config.nodeName, socket: config.socketPath, startedAt: new Date().toISOString() }));
    await this.watchPrefixes([keys.clusterNetworks()], () => this.networkSync.kick());
    if (this.bgp) {
      const bgp = this.bgp;
      await bgp.start();
      await this.watchPrefixes(BgpAgent.WATCHED, () => bgp.kick());
      bgp.kick();
    }
    this.gcTimer = setInterval(() => void this.collectGarbage(), config.gcIntervalMs);
    this.gcTimer.unref();
    // Docker may still be starting (and waiting on us): collect later, never inline.
    setTimeout(() => void this.collectGarbage(), 2_000).unref();
    this.log.info('calico-ts node running', { socket: config.socketPath, etcd: config.etcd.endpoints });
  }

  /**
   * Writes this node's record, keeping what users set with `calico-ts apply` (labels, AS, route
   * reflector) unless the environment sets it.
   */
  private async register(): Promise<void> {
    const { config } = this;
    const ipv4Address = await detectIPv4(new ExecFileRunner(), { IP: config.ip, IP_AUTODETECTION_METHOD: config.ipAutodetectionMethod });
    if (!ipv4Address) this.log.warn('no IPv4 address found for this host; set IP or IP_AUTODETECTION_METHOD (BGP stays off)');
    // A bad IP6 setting is an error like a bad IP; a host that cannot list IPv6 at all just has none.
    const ipv6Address = await detectIPv6(new ExecFileRunner(), { IP6: config.ip6, IP6_AUTODETECTION_METHOD: config.ip6AutodetectionMethod }).catch((err: unknown) => {
      if (err instanceof ValidationError) throw err;
      this.log.warn('cannot detect an IPv6 address; IPv6 routes of this host are not announced', { error: String(err) });
      return null;
    });
    await casLoop(this.store, keys.node(config.nodeName), (cur) => ({
      // Fields other modules keep (tunnel addresses, problems) survive a restart.
      ...cur?.value,
      name: config.nodeName,
      ipv4Address,
      ipv6Address,
      asNumber: config.asNumber ?? cur?.value.asNumber ?? null,
      routeReflectorClusterId: config.routeReflectorClusterId ?? cur?.value.routeReflectorClusterId ?? null,
      labels: cur?.value.labels ?? {},
      startedAt: Date.now(),
    }));
  }

  async collectGarbage(): Promise<void> {
    this.networkSync.kick();
    try {
      const report = await this.dockerSync.collect();
      const blocksReleased = await this.ipam.releaseEmptyBlocks(this.config.gcGraceMs);
      if (blocksReleased.length > 0) this.log.info('empty blocks returned to the pool', { blocks: blocksReleased });
      if ((report && report.endpointsRemoved.length > 0) || blocksReleased.length > 0) this.reconciler.kick();
    } catch (err) {
      this.log.warn('garbage collection failed', { error: String(err) });
    }
  }

  async stop(): Promise<void> {
    clearInterval(this.gcTimer);
    await Promise.all(this.watches.map((w) => w.close().catch(() => undefined)));
    await this.networkSync.stop();
    await this.bgp?.stop();
    await this.ipip?.stop();
    await this.policy?.stop();
    await this.nat.stop();
    const server = this.server;
    if (server) {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    }
    rmSync(this.config.socketPath, { force: true });
    rmSync(statusFile(this.config), { force: true });
    await this.reconciler.stop();
    await this.store.close();
  }
}
