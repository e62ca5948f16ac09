/**
 * Everything the node learns from Docker's API, always asynchronously — never from inside a plugin call
 * Docker is waiting on (that deadlocks during daemon start):
 *
 * - network names (CreateNetwork carries only the ID) → network record `name`, the network's Profile,
 *   and the profile of its endpoints;
 * - garbage collection against Docker's live state: Docker cleans stale endpoints at daemon start before
 *   the plugin may be up, so endpoints, veths and addresses it forgot are released here. Young objects
 *   (< graceMs) are left alone: Docker may not list them yet.
 */
import Docker from 'dockerode';
import { casLoop, type Datastore } from '../datastore/datastore.js';
import { keys, type Key, type Network, type Profile } from '../datastore/model.js';
import type { Dataplane } from '../dataplane/types.js';
import { UNBOUND_PREFIX, isTunnelHandle, type Ipam } from '../ipam/ipam.js';
import { formatAddress, parseCidr, parseIPv4 } from '../lib/cidr.js';
import { AlreadyExistsError } from '../lib/errors.js';
import type { Logger } from '../lib/log.js';

/** The label every endpoint of a network carries (from its profile), so same-network traffic can be allowed. */
export const NETWORK_LABEL = 'calico-ts/network';

export const DOCKER_LABEL_PREFIX = 'org.projectcalico.label.';

/** Docker labels `org.projectcalico.label.<key>=<value>` → endpoint labels `<key>=<value>`. */
export function labelsFromDocker(dockerLabels: Record<string, string>): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(dockerLabels).sort(([a], [b]) => (a < b ? -1 : 1))) {
    if (k.startsWith(DOCKER_LABEL_PREFIX) && k.length > DOCKER_LABEL_PREFIX.length) out[k.slice(DOCKER_LABEL_PREFIX.length)] = v;
  }
  return out;
}

/**
 * Docker label giving a container floating IPs: `org.projectcalico.floating-ip=<externalIP>[,<externalIP>...]`,
 * each mapped to the container's IPv4 address on the network.
 */
export const FLOATING_IP_LABEL = 'org.projectcalico.floating-ip';

/** The endpoint's `ipNATs` from its container's labels (undefined: no label), or why the label is unusable. */
export function floatingIpsFromDocker(
  dockerLabels: Record<string, string>,
  ipNetworks: readonly string[],
): { ipNATs?: { internalIP: string; externalIP: string }[]; problem?: string } {
  const value = dockerLabels[FLOATING_IP_LABEL];
  if (value === undefined) return {};
  const internalIP = ipNetworks.map((n) => n.split('/')[0] ?? '').find((ip) => parseIPv4(ip) !== undefined);
  if (!internalIP) return { problem: `${FLOATING_IP_LABEL}: the container has no IPv4 address on this network` };
  const externals = value.split(',').map((v) => v.trim()).filter((v) => v !== '');
  const bad = externals.find((v) => parseIPv4(v) === undefined);
  if (bad !== undefined || externals.length === 0) return { problem: `${FLOATING_IP_LABEL}=${JSON.stringify(value)}: give IPv4 addresses, comma-separated` };
  return { ipNATs: [...new Set(externals)].map((externalIP) => ({ internalIP, externalIP })) };
}

export function networkProfile(name: string): Profile {
  return {
    name,
    ingress: [{ action: 'Allow', source: { selector: `${NETWORK_LABEL} == "${name}"` } }],
    egress: [{ action: 'Allow' }],
    labelsToApply: { [NETWORK_LABEL]: name },
  };
}

async function createIfAbsent<T>(store: Datastore, key: Key<T>, value: T): Promise<void> {
  try {
    await store.create(key, value);
  } catch (err) {
    if (!(err instanceof AlreadyExistsError)) throw err;
  }
}

export interface GcReport {
  endpointsRemoved: string[];
  addressesReleased: string[];
  networksRemoved: string[];
}

export interface DockerSyncOptions {
  store: Datastore;
  ipam: Ipam;
  dataplane: Dataplane;
  node: string;
  dockerSocket: string;
  log: Logger;
  graceMs?: number;
  unboundGraceMs?: number;
  /** The name this node's Docker knows us by (`calico-ts`, or `calico-ts:latest` as a managed plugin):
   * networks copied from other hosts use it, whatever name their creator's Docker used. */
  driverName?: string;
}

interface DockerNetworkInfo {
  Name: string;
  Id?: string;
  Driver?: string;
  EnableIPv6?: boolean;
  IPAM?: { Driver?: string; Config?: { Subnet?: string }[] };
  Containers?: Record<string, { EndpointID?: string }>;
}

/** How long Docker must have not known one of our networks before collect() drops its record. */
const MISSING_NETWORK_CONFIRM_MS = 5_000;

/** Driver names the plugin answers to: legacy socket (`calico-ts`) and managed plugin (`calico-ts:latest`). */
export const OUR_DRIVERS = new Set(['calico-ts', 'calico-ts:latest']);

export class DockerSync {
  private readonly docker: Docker;
  private readonly graceMs: number;
  private readonly unboundGraceMs: number;
  /** Networks of ours Docker did not know at a collection pass, and since when (see collect()). */
  private readonly missingSince = new Map<string, number>();

  constructor(private readonly o: DockerSyncOptions) {
    this.docker = new Docker({ socketPath: o.dockerSocket, timeout: 10_000 });
    this.graceMs = o.graceMs ?? 60_000;
    this.unboundGraceMs = o.unboundGraceMs ?? 10 * 60_000;
  }

  /** Polls Docker for the network's name (it exists only once CreateNetwork has returned). */
  resolveNameSoon(networkId: string, attempts = 50, delayMs = 200): void {
    const attempt = async (left: number): Promise<void> => {
      try {
        const info = (await this.docker.getNetwork(networkId).inspect()) as DockerNetworkInfo;
        await this.recordName(networkId, info);
      } catch (err) {
        if (left > 1) setTimeout(() => void attempt(left - 1), delayMs).unref();
        else this.o.log.warn('could not learn network name from Docker', { network: networkId, error: String(err) });
      }
    };
    setTimeout(() => void attempt(attempts), delayMs).unref();
  }

  /**
   * Records the network's name, creates its profile, puts its endpoints in that profile, and publishes
   * it by name so every other host creates it too.
   */
  /**
   * After Join has answered: find the endpoint's container and copy its `org.projectcalico.label.*`
   * Docker labels onto the workload endpoint (policy selectors match them).
   */
  resolveEndpointSoon(networkId: string, endpointId: string, attempts = 50, delayMs = 100): void {
    const attempt = async (left: number): Promise<void> => {
      try {
        const info = (await this.docker.getNetwork(networkId).inspect()) as DockerNetworkInfo;
        const containerId = Object.entries(info.Containers ?? {}).find(([, c]) => c.EndpointID === endpointId)?.[0];
        if (!containerId) throw new Error('endpoint not listed yet');
        await this.recordContainer(endpointId, containerId);
      } catch (err) {
        if (left > 1) setTimeout(() => void attempt(left - 1), delayMs).unref();
        else this.o.log.debug('could not learn the container of an endpoint', { endpoint: endpointId, error: String(err) });
      }
    };
    setTimeout(() => void attempt(attempts), delayMs).unref();
  }

  /**
   * Copies the container's labels onto its endpoint; its floating-IP label too, but only when the
   * endpoint is first linked to the container (Docker labels never change; later `calico-ts floating-ip`
   * edits are not undone).
   */
  async recordContainer(endpointId: string, containerId: string): Promise<void> {
    const container = (await this.docker.getContainer(containerId).inspect()) as { Config?: { Labels?: Record<string, string> | null } };
    const dockerLabels = container.Config?.Labels ?? {};
    const labels = labelsFromDocker(dockerLabels);
    await casLoop(this.o.store, keys.endpoint(this.o.node, endpointId), (cur) => {
      if (!cur) return undefined;
      const first = cur.value.containerId !== containerId;
      if (!first && JSON.stringify(cur.value.labels) === JSON.stringify(labels)) return undefined;
      const fip = first ? floatingIpsFromDocker(dockerLabels, cur.value.ipNetworks) : {};
      if (fip.problem) this.o.log.warn('floating IP label ignored', { endpoint: endpointId, container: containerId, problem: fip.problem });
      return { ...cur.value, containerId, labels, ...(fip.ipNATs ? { ipNATs: fip.ipNATs } : {}) };
    });
  }

  async recordName(networkId: string, info: DockerNetworkInfo): Promise<void> {
    const name = info.Name;
    const written = await casLoop(this.o.store, keys.network(networkId), (cur) =>
      cur && cur.value.name !== name ? { ...cur.value, name } : undefined,
    );
    if (!written) return;
    await createIfAbsent(this.o.store, keys.profile(name), networkProfile(name));
    const net = written.value;
    const poolCidrs = new Set((await this.o.store.list(keys.pools())).items.map((p) => p.value.cidr));
    await createIfAbsent(this.o.store, keys.clusterNetwork(name), {
      name,
      subnet: net.ipv4Pool && !poolCidrs.has(net.ipv4Pool) ? net.ipv4Pool : null,
      ...(info.EnableIPv6 ? { ipv6: true, subnetIPv6: net.ipv6Pool && !poolCidrs.has(net.ipv6Pool) ? net.ipv6Pool : null } : {}),
      mtu: net.mtu,
      driver: info.Driver ?? 'calico-ts',
      ipamDriver: info.IPAM?.Driver ?? info.Driver ?? 'calico-ts',
      createdBy: this.o.node,
      createdAt: Date.now(),
    });
    for (const ep of (await this.o.store.list(keys.endpoints(this.o.node))).items) {
      if (ep.value.networkId !== networkId || ep.value.profiles.includes(name)) continue;
      await casLoop(this.o.store, keys.endpoint(this.o.node, ep.value.endpointId), (cur) =>
        cur ? { ...cur.value, profiles: [name] } : undefined,
      );
    }
    this.o.log.info('network named', { network: networkId, name });
  }

  /**
   * Makes this host's Docker match the cluster's networks by name: creates the missing ones (Docker
   * then calls our CreateNetwork), removes ours whose cluster record is gone once they are unused.
   */
  async syncNetworks(now = Date.now()): Promise<{ created: string[]; removed: string[] }> {
    const result = { created: [] as string[], removed: [] as string[] };
    // Docker first, then etcd: a network missing here because `docker network rm` just removed it has
    // already had its cluster record deleted by our DeleteNetwork, so it is not recreated.
    // Docker hides a network it is deleting before it calls our DeleteNetwork: a name this node still has
    // a record of is such a network (or one the collector will forget), never one to create. Records are
    // read before cluster records: DeleteNetwork removes the cluster record first, the record second.
    const local = (await this.docker.listNetworks()) as DockerNetworkInfo[];
    const recordList = (await this.o.store.list(keys.networks())).items.map((i) => i.value);
    const wanted = new Map((await this.o.store.list(keys.clusterNetworks())).items.map((i) => [i.value.name, i.value]));
    const localNames = new Set(local.map((n) => n.Name));
    const beingDeleted = new Set(recordList.filter((r) => r.node === this.o.node && r.name && !localNames.has(r.name)).map((r) => r.name));
    for (const net of wanted.values()) {
      if (localNames.has(net.name) || beingDeleted.has(net.name)) continue;
      const ours = (driver: string) => (OUR_DRIVERS.has(driver) ? (this.o.driverName ?? driver) : driver);
      try {
        await this.docker.createNetwork({
          Name: net.name,
          Driver: ours(net.driver),
          CheckDuplicate: true,
          ...(net.ipv6 ? { EnableIPv6: true } : {}),
          IPAM: { Driver: ours(net.ipamDriver), Config: [net.subnet, net.subnetIPv6].filter((s): s is string => !!s).map((s) => ({ Subnet: s })) },
          Options: net.mtu ? { 'com.docker.network.driver.mtu': String(net.mtu) } : {},
        });
        result.created.push(net.name);
      } catch (err) {
        this.o.log.warn('could not create network from the cluster', { name: net.name, error: String(err) });
      }
    }
    const records = new Map(recordList.map((r) => [r.id, r]));
    for (const n of local) {
      if (!n.Id || !(OUR_DRIVERS.has(n.Driver ?? '') || n.Driver === this.o.driverName) || wanted.has(n.Name)) continue;
      const record = records.get(n.Id);
      // Only networks this node has named and that are old enough: a new network is published a moment
      // after Docker creates it.
      if (!record?.name || now - record.createdAt < this.graceMs) continue;
      const info = (await this.docker.getNetwork(n.Id).inspect()) as DockerNetworkInfo;
      if (Object.keys(info.Containers ?? {}).length > 0) continue;
      try {
        await this.docker.getNetwork(n.Id).remove();
        result.removed.push(n.Name);
      } catch (err) {
        this.o.log.warn('could not remove network deleted elsewhere', { name: n.Name, error: String(err) });
      }
    }
    if (result.created.length + result.removed.length > 0) this.o.log.info('networks synced with the cluster', result);
    return result;
  }

  /** One garbage-collection pass. Returns undefined when Docker cannot be asked (nothing is touched). */
  async collect(now = Date.now()): Promise<GcReport | undefined> {
    const report: GcReport = { endpointsRemoved: [], addressesReleased: [], networksRemoved: [] };
    const networks = (await this.o.store.list(keys.networks())).items.filter((n) => n.value.node === this.o.node);
    const live = new Set<string>();
    const liveContainers = new Map<string, string>();
    try {
      for (const { value: net } of networks) {
        const info = await this.inspectNetwork(net);
        if (info === null) {
          // Docker forgets a network before it calls DeleteNetwork, which needs our record to find the
          // cluster record it must delete (else every host's network sync recreates the network). So a
          // record is dropped only when Docker has not known the network for a while.
          const since = this.missingSince.get(net.id) ?? now;
          this.missingSince.set(net.id, since);
          if (now - net.createdAt > this.graceMs && now - since >= MISSING_NETWORK_CONFIRM_MS) {
            await this.o.store.delete(keys.network(net.id)).catch(() => undefined);
            this.missingSince.delete(net.id);
            report.networksRemoved.push(net.id);
          }
          continue;
        }
        this.missingSince.delete(net.id);
        if (!net.name) await this.recordName(net.id, info);
        for (const [containerId, c] of Object.entries(info.Containers ?? {})) {
          if (c.EndpointID) {
            live.add(c.EndpointID);
            liveContainers.set(c.EndpointID, containerId);
          }
        }
      }
    } catch (err) {
      this.o.log.debug('garbage collection skipped: Docker not reachable', { error: String(err) });
      return undefined;
    }
    for (const id of this.missingSince.keys()) if (!networks.some((n) => n.value.id === id)) this.missingSince.delete(id);
    const endpoints = (await this.o.store.list(keys.endpoints(this.o.node))).items;
    const known = new Set<string>();
    for (const { value: ep } of endpoints) {
      if (live.has(ep.endpointId)) {
        known.add(ep.endpointId);
        const containerId = liveContainers.get(ep.endpointId);
        if (containerId && ep.containerId !== containerId) await this.recordContainer(ep.endpointId, containerId);
        continue;
      }
      if (now - ep.createdAt < this.graceMs) {
        known.add(ep.endpointId);
        continue;
      }
      await this.o.dataplane.removeEndpoint(ep.interfaceName);
      await this.o.store.delete(keys.endpoint(this.o.node, ep.endpointId)).catch(() => undefined);
      report.addressesReleased.push(...(await this.o.ipam.releaseHandle(ep.endpointId)));
      report.endpointsRemoved.push(ep.endpointId);
    }
    // Addresses of this node whose owner is gone: bound to an endpoint nobody knows, or never bound.
    for (const { value: block } of (await this.o.store.list(keys.blocks())).items) {
      const cidr = parseCidr(block.cidr);
      for (const [i, a] of block.allocations.entries()) {
        if (!a || a.node !== this.o.node || isTunnelHandle(a.handle)) continue;
        const unbound = a.handle.startsWith(UNBOUND_PREFIX);
        const stale = unbound ? now - a.since > this.unboundGraceMs : !known.has(a.handle) && !live.has(a.handle) && now - a.since > this.graceMs;
        if (!stale) continue;
        const address = formatAddress(cidr.family, cidr.base + BigInt(i));
        if (await this.o.ipam.release(address, a.handle)) report.addressesReleased.push(address);
      }
    }
    if (report.endpointsRemoved.length + report.addressesReleased.length + report.networksRemoved.length > 0) {
      this.o.log.info('garbage collected', { ...report });
    }
    return report;
  }

  /** Docker's view of one of our networks; null when Docker says it does not exist. */
  private async inspectNetwork(net: Network): Promise<DockerNetworkInfo | null> {
    try {
      return (await this.docker.getNetwork(net.id).inspect()) as DockerNetworkInfo;
    } catch (err) {
      if ((err as { statusCode?: number }).statusCode === 404) return null;
      throw err;
    }
  }
}
