/**
 * libnetwork NetworkDriver: records networks and endpoints in the datastore and plumbs veths through the
 * dataplane. Every handler is idempotent (Docker retries, and a restarted plugin may see a call twice).
 *
 * Deletes of things already gone succeed (DeleteNetwork, DeleteEndpoint, Leave); calls that need an
 * object to exist (CreateEndpoint's network, Join's endpoint, EndpointOperInfo) fail with a message.
 */
import type { Datastore } from '../datastore/datastore.js';
import { keys, type Network, type WorkloadEndpoint } from '../datastore/model.js';
import type { Dataplane } from '../dataplane/types.js';
import { hostVethName, peerVethName } from '../calc/naming.js';
import type { Ipam } from '../ipam/ipam.js';
import { ANY_IPV4, ANY_IPV6 } from './ipam-driver.js';
import { parseAddress, parseCidr, type Family } from '../lib/cidr.js';
import { BadRequestError, NotFoundError, UnsupportedError, ValidationError } from '../lib/errors.js';
import type { Logger } from '../lib/log.js';
import {
  GATEWAY_V4,
  GATEWAY_V6,
  OPTION_GENERIC,
  OPTION_INTERNAL,
  OPTION_MTU,
  readId,
  readIpamData,
  readOptionalObject,
  readOptionalString,
  type Body,
} from './protocol.js';

export interface NetworkDriverDeps {
  store: Datastore;
  ipam: Ipam;
  dataplane: Dataplane;
  node: string;
  log: Logger;
  /** Default veth MTU when the network sets none (0 = kernel default). */
  defaultMtu: number;
  /** Veth MTU when neither the network nor defaultMtu sets one: the underlay's minus the encapsulation
   * of the pool holding the address (0 = unknown, kernel default). */
  autoMtu?: (address: string) => number;
  /** Called after CreateNetwork has answered, to learn the network's name without blocking Docker. */
  onNetworkCreated?: (networkId: string) => void;
  /** Called after Join, to learn the endpoint's container and labels without blocking Docker. */
  onEndpointJoined?: (networkId: string, endpointId: string) => void;
}

/** `-o` options we understand; any other is logged and ignored (Docker adds its own freely). */
const KNOWN_GENERIC_OPTIONS = new Set([OPTION_MTU]);

export class NetworkDriver {
  constructor(private readonly deps: NetworkDriverDeps) {}

  getCapabilities(): Body {
    return { Scope: 'local', ConnectivityScope: 'global' };
  }

  async createNetwork(body: Body): Promise<Body> {
    const id = readId(body, 'NetworkID');
    const options = readOptionalObject(body, 'Options');
    const generic = readOptionalObject(options, OPTION_GENERIC);
    if (options[OPTION_INTERNAL] === true || generic[OPTION_INTERNAL] === 'true') {
      throw new UnsupportedError(
        '--internal is not supported by calico-ts yet; create the network without it and restrict egress with a policy',
      );
    }
    let mtu = 0;
    for (const [name, value] of Object.entries(generic)) {
      if (name === OPTION_MTU) {
        mtu = Number(value);
        if (!Number.isInteger(mtu) || mtu < 68 || mtu > 65535) {
          throw new ValidationError(OPTION_MTU, `${JSON.stringify(value)} is not an MTU between 68 and 65535`);
        }
      } else if (!KNOWN_GENERIC_OPTIONS.has(name)) {
        this.deps.log.info('ignoring unknown network option', { network: id, option: name });
      }
    }
    const ipv4Pool = await this.readPool(body, 4);
    const ipv6Pool = await this.readPool(body, 6);
    if (ipv4Pool === undefined && ipv6Pool === undefined) {
      throw new BadRequestError('IPv4Data or IPv6Data is required; use --ipam-driver calico-ts');
    }
    const existing = await this.deps.store.get(keys.network(id));
    if (!existing) {
      const network: Network = {
        id,
        node: this.deps.node,
        name: null,
        ipv4Pool: ipv4Pool ?? null,
        ipv6Pool: ipv6Pool ?? null,
        mtu,
        createdAt: Date.now(),
      };
      await this.deps.store.put(keys.network(id), network);
    }
    this.deps.onNetworkCreated?.(id);
    return {};
  }

  async deleteNetwork(body: Body): Promise<Body> {
    const id = readId(body, 'NetworkID');
    const existing = await this.deps.store.get(keys.network(id));
    if (!existing) return {};
    const name = existing.value.name;
    // Removed here means removed everywhere: the cluster record goes first (so no host's network sync
    // recreates it), the other hosts drop their copy once it is unused.
    if (name) await this.deps.store.delete(keys.clusterNetwork(name)).catch(ignoreNotFound);
    await this.deps.store.delete(keys.network(id)).catch(ignoreNotFound);
    if (name) {
      // The profile is shared by every host's network of this name: remove it with the last one.
      const others = (await this.deps.store.list(keys.networks())).items.filter((n) => n.value.name === name);
      if (others.length === 0) await this.deps.store.delete(keys.profile(name)).catch(ignoreNotFound);
    }
    return {};
  }

  async createEndpoint(body: Body): Promise<Body> {
    const networkId = readId(body, 'NetworkID');
    const endpointId = readId(body, 'EndpointID');
    const iface = readOptionalObject(body, 'Interface');
    const addresses = (['Address', 'AddressIPv6'] as const)
      .map((field) => ({ field, text: readOptionalString(iface, field) }))
      .filter((a) => a.text !== '');
    const network = await this.requireNetwork(networkId);
    if (addresses.length === 0) throw new BadRequestError('Interface.Address is required; the network must use --ipam-driver calico-ts');
    const ipNetworks: string[] = [];
    for (const { field, text } of addresses) {
      const ip = text.split('/')[0] ?? '';
      const { family } = parseAddress(ip, `Interface.${field}`);
      if (family !== (field === 'Address' ? 4 : 6)) throw new BadRequestError(`Interface.${field} ${JSON.stringify(text)} is not an IPv${field === 'Address' ? 4 : 6} address`);
      ipNetworks.push(`${ip}/${family === 4 ? 32 : 128}`);
    }
    for (const n of ipNetworks) await this.deps.ipam.bind(n.split('/')[0] ?? '', endpointId);
    const endpoint: WorkloadEndpoint = {
      node: this.deps.node,
      endpointId,
      networkId,
      containerId: null,
      interfaceName: hostVethName(endpointId),
      ipNetworks,
      mac: readOptionalString(iface, 'MacAddress') || null,
      // Precedence: the network's -o com.docker.network.driver.mtu, then CALICO_TS_VETH_MTU, then the pool's.
      // (The pool of the first address: IPv4 when the endpoint has one; encapsulation is IPv4-only.)
      mtu: network.mtu || this.deps.defaultMtu || (this.deps.autoMtu?.(ipNetworks[0]?.split('/')[0] ?? '') ?? 0),
      labels: {},
      profiles: network.name ? [network.name] : [],
      createdAt: Date.now(),
    };
    await this.deps.store.put(keys.endpoint(this.deps.node, endpointId), endpoint);
    return {};
  }

  async endpointOperInfo(body: Body): Promise<Body> {
    readId(body, 'NetworkID');
    const ep = await this.requireEndpoint(readId(body, 'EndpointID'));
    return { Value: { hostVeth: ep.interfaceName, addresses: ep.ipNetworks, node: ep.node } };
  }

  async deleteEndpoint(body: Body): Promise<Body> {
    readId(body, 'NetworkID');
    const endpointId = readId(body, 'EndpointID');
    // Record first: a reconcile running in between must not recreate the veth.
    await this.deps.store.delete(keys.endpoint(this.deps.node, endpointId)).catch(ignoreNotFound);
    // Deleting a veth costs the kernel ~20 ms; Docker need not wait for it. If this fails, the
    // reconciler removes the veth (it is ours and no endpoint wants it).
    this.deps.dataplane.removeEndpoint(hostVethName(endpointId)).catch((err: unknown) =>
      this.deps.log.warn('veth removal failed; the reconciler will retry', { endpoint: endpointId, error: String(err) }),
    );
    return {};
  }

  async join(body: Body): Promise<Body> {
    readId(body, 'NetworkID');
    const endpointId = readId(body, 'EndpointID');
    const ep = await this.requireEndpoint(endpointId);
    const peerName = peerVethName(endpointId);
    await this.deps.dataplane.ensureEndpoint({
      interfaceName: ep.interfaceName,
      peerName,
      ipNetworks: ep.ipNetworks,
      mtu: ep.mtu,
    });
    this.deps.onEndpointJoined?.(ep.networkId, endpointId);
    const hasV4 = ep.ipNetworks.some((n) => !n.includes(':'));
    const hasV6 = ep.ipNetworks.some((n) => n.includes(':'));
    return {
      InterfaceName: { SrcName: peerName, DstPrefix: 'eth' },
      ...(hasV4 ? { Gateway: GATEWAY_V4 } : {}),
      ...(hasV6 ? { GatewayIPv6: GATEWAY_V6 } : {}),
      // RouteType 1 = connected: the gateway is reachable on eth0 without an address in its subnet.
      StaticRoutes: [
        ...(hasV4 ? [{ Destination: `${GATEWAY_V4}/32`, RouteType: 1, NextHop: '' }] : []),
        ...(hasV6 ? [{ Destination: `${GATEWAY_V6}/128`, RouteType: 1, NextHop: '' }] : []),
      ],
      DisableGatewayService: true,
    };
  }

  async leave(body: Body): Promise<Body> {
    readId(body, 'NetworkID');
    readId(body, 'EndpointID');
    // The veth goes with DeleteEndpoint (or with the container's namespace); nothing to undo here.
    return {};
  }

  async discover(): Promise<Body> {
    return {};
  }

  async programExternalConnectivity(body: Body): Promise<Body> {
    readId(body, 'NetworkID');
    readId(body, 'EndpointID');
    // Published ports (-p) need no plumbing: the container's address is routed, not NATed.
    return {};
  }

  /**
   * The network's pool of one family from IPv4Data / IPv6Data: undefined when Docker sent none, null for
   * the default pool (Docker was told 0.0.0.0/0 or ::/0, see IpamDriver), else the --subnet. It must be
   * one calico-ts IPAM handed out: a network made with another IPAM driver cannot route.
   */
  private async readPool(body: Body, family: Family): Promise<string | null | undefined> {
    const field = `IPv${family}Data`;
    const entries = readIpamData(body, field);
    if (entries.length > 1) throw new UnsupportedError(`a calico-ts network takes one IPv${family} subnet; pass a single --subnet per family`);
    const data = entries[0];
    if (!data) return undefined;
    if (Object.keys(data.AuxAddresses).length > 0) {
      throw new UnsupportedError('--aux-address is not supported by calico-ts; every address of a pool is routed to a container');
    }
    if (data.Pool === (family === 4 ? ANY_IPV4 : ANY_IPV6)) return null;
    const pool = parseCidr(data.Pool, `${field}[0].Pool`);
    if (pool.family !== family) throw new ValidationError(`${field}[0].Pool`, `${data.Pool} is not an IPv${family} subnet`);
    await this.deps.ipam.resolveRange(data.Pool, family).catch((err: unknown) => {
      throw new ValidationError(
        `${field}[0].Pool`,
        `${data.Pool} is not inside a calico-ts pool (${err instanceof Error ? err.message : String(err)}); create the network with --ipam-driver calico-ts`,
      );
    });
    return data.Pool;
  }

  private async requireNetwork(id: string): Promise<Network> {
    const n = await this.deps.store.get(keys.network(id));
    if (!n) {
      throw new NotFoundError(
        'network',
        id,
        'calico-ts has no record of it (was the datastore reset?); remove and recreate the network',
      );
    }
    return n.value;
  }

  private async requireEndpoint(id: string): Promise<WorkloadEndpoint> {
    const ep = await this.deps.store.get(keys.endpoint(this.deps.node, id));
    if (!ep) throw new NotFoundError('endpoint', id, 'Docker must call CreateEndpoint first; restart the container');
    return ep.value;
  }
}

export function ignoreNotFound(err: unknown): void {
  if (!(err instanceof NotFoundError)) throw err;
}
