/**
 * Feeds the BGP sidecar: assembles BgpInputs from the datastore (nodes, BGPConfiguration, BGPPeers,
 * this node's blocks, pools), computes the sessions, renders BIRD's configuration and hands it to the
 * supervisor — on start and on every relevant datastore change (debounced). The sessions are also
 * written to <runDir>/bgp-sessions.json so `calico-ts node status` can name each BIRD protocol.
 */
import { writeFileSync, renameSync } from 'node:fs';
import { join } from 'node:path';
import { matchSelector } from '../calc/selector.js';
import type { Datastore } from '../datastore/datastore.js';
import { keys, type NodeRecord, type WorkloadEndpoint } from '../datastore/model.js';
import { floatingIpMappings } from '../calc/nat-rules.js';
import type { BirdSupervisor } from '../bgp/bird.js';
import { computePeerSessions } from '../bgp/peers.js';
import { renderBirdConfig } from '../bgp/render.js';
import { DEFAULT_BGP_CONFIG, type BgpConfig, type BgpInputs, type BgpNode, type PeerSession } from '../bgp/types.js';
import { DebouncedJob } from '../lib/debounced-job.js';
import { formatCidr, parseCidr } from '../lib/cidr.js';
import type { Logger } from '../lib/log.js';

export const SESSIONS_FILE = 'bgp-sessions.json';

export function toBgpNode(n: NodeRecord, config: BgpConfig): BgpNode | undefined {
  if (!n.ipv4Address) return undefined;
  return {
    name: n.name,
    ipv4: n.ipv4Address.split('/')[0] ?? n.ipv4Address,
    ...(n.ipv6Address ? { ipv6: n.ipv6Address.split('/')[0] ?? n.ipv6Address } : {}),
    asNumber: n.asNumber ?? config.asNumber,
    ...(n.routeReflectorClusterId ? { routeReflectorClusterId: n.routeReflectorClusterId } : {}),
    labels: n.labels,
  };
}

/** This node's subnet (for CrossSubnet) and whether its tunl0 is up (it recorded a tunnel address). */
function ipipInputs(self: NodeRecord | undefined): Pick<BgpInputs, 'localSubnet' | 'ipipTunnel'> {
  const address = self?.ipv4Address;
  const subnet = address?.includes('/') ? formatCidr(parseCidr(address, 'ipv4Address')) : undefined;
  return { ...(subnet ? { localSubnet: subnet } : {}), ipipTunnel: Boolean(self?.ipv4IPIPTunnelAddr) };
}

/** Pure: datastore values → the sidecar's inputs (undefined when this node has no address yet). */
export async function loadBgpInputs(store: Datastore, node: string): Promise<BgpInputs | undefined> {
  const [nodes, configs, peers, blocks, pools, endpoints] = await Promise.all([
    store.list(keys.nodes()),
    store.list(keys.bgpConfigurations()),
    store.list(keys.bgpPeers()),
    store.list(keys.blocks()),
    store.list(keys.pools()),
    store.list(keys.endpoints()),
  ]);
  const stored = configs.items.find((c) => c.value.name === 'default')?.value;
  const config: BgpConfig = {
    asNumber: stored?.asNumber ?? DEFAULT_BGP_CONFIG.asNumber,
    nodeToNodeMeshEnabled: stored?.nodeToNodeMeshEnabled ?? DEFAULT_BGP_CONFIG.nodeToNodeMeshEnabled,
    listenPort: stored?.listenPort ?? DEFAULT_BGP_CONFIG.listenPort,
    logSeverityScreen: stored?.logSeverityScreen ?? DEFAULT_BGP_CONFIG.logSeverityScreen,
  };
  const bgpNodes = nodes.items.flatMap((n) => toBgpNode(n.value, config) ?? []);
  const self = bgpNodes.find((n) => n.name === node);
  if (!self) return undefined;
  return {
    self,
    nodes: bgpNodes,
    config,
    peers: peers.items.map(({ value: p }) => ({
      name: p.name,
      ...(p.node ? { node: p.node } : {}),
      ...(p.nodeSelector ? { nodeSelector: p.nodeSelector } : {}),
      ...(p.peerIP ? { peerIP: p.peerIP } : {}),
      ...(p.asNumber !== null ? { asNumber: p.asNumber } : {}),
      ...(p.peerSelector ? { peerSelector: p.peerSelector } : {}),
    })),
    localBlocks: blocks.items.filter((b) => b.value.affinity === `host:${node}`).map((b) => b.value.cidr).sort(),
    pools: pools.items.map((p) => ({ cidr: p.value.cidr, disabled: p.value.disabled, vxlanMode: p.value.vxlanMode, ipipMode: p.value.ipipMode })),
    ...ipipInputs(nodes.items.find((n) => n.value.name === node)?.value),
    floatingIPs: floatingIPsFor(endpoints.items.map((e) => e.value), node),
  };
}

/** Floating IPs announced by this node, and those of every node (each node's valid ones, as its nat table has them). */
function floatingIPsFor(endpoints: WorkloadEndpoint[], node: string): { local: string[]; all: string[] } {
  const byNode = new Map<string, WorkloadEndpoint[]>();
  for (const ep of endpoints) if (ep.ipNATs?.length) byNode.set(ep.node, [...(byNode.get(ep.node) ?? []), ep]);
  const externals = (eps: WorkloadEndpoint[]): string[] => floatingIpMappings(eps).mappings.map((m) => m.external);
  return { local: externals(byNode.get(node) ?? []), all: [...byNode.values()].flatMap(externals).sort() };
}

export class BgpAgent {
  private readonly job: DebouncedJob;
  sessions: PeerSession[] = [];
  lastError: string | undefined;

  constructor(
    private readonly store: Datastore,
    private readonly node: string,
    private readonly runDir: string,
    readonly bird: BirdSupervisor,
    private readonly log: Logger,
  ) {
    this.job = new DebouncedJob(
      () => this.sync(),
      (err) => {
        this.lastError = err instanceof Error ? err.message : String(err);
        this.log.warn('BGP configuration not applied; will retry on the next change', { error: this.lastError });
      },
      50,
    );
  }

  /** The datastore prefixes whose changes can change BIRD's configuration. */
  private bgpOffLogged = false;

  static readonly WATCHED = [keys.nodes(), keys.bgpConfigurations(), keys.bgpPeers(), keys.blocks(), keys.pools(), keys.endpoints()];

  kick(): void {
    this.job.kick();
  }

  async sync(): Promise<void> {
    const inputs = await loadBgpInputs(this.store, this.node);
    if (!inputs) {
      // Said once per change of state, not on every endpoint or block change (sync runs for each).
      if (!this.bgpOffLogged) this.log.warn('BGP is off: this node has no IPv4 address (set IP or IP_AUTODETECTION_METHOD)');
      this.bgpOffLogged = true;
      return;
    }
    this.bgpOffLogged = false;
    const sessions = computePeerSessions(inputs, matchSelector);
    const text = renderBirdConfig(inputs, sessions, { controlSocket: this.bird.ctlPath });
    const result = await this.bird.apply(text);
    this.sessions = sessions;
    const file = join(this.runDir, SESSIONS_FILE);
    writeFileSync(`${file}.tmp`, JSON.stringify(sessions));
    renameSync(`${file}.tmp`, file);
    this.lastError = undefined;
    if (result !== 'unchanged') this.log.info('BGP configuration applied', { result, peers: sessions.map((s) => s.peerIP), blocks: inputs.localBlocks });
  }

  async start(): Promise<void> {
    await this.job.runNow().catch((err: unknown) => {
      this.lastError = err instanceof Error ? err.message : String(err);
      this.log.warn('BGP configuration not applied; will retry on the next change', { error: this.lastError });
    });
  }

  async stop(): Promise<void> {
    await this.job.stop();
    await this.bird.stop();
  }
}
