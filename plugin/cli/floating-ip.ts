/**
 * `calico-ts floating-ip add|remove|list`: edits a workload endpoint's `ipNATs` (floating IPs) in the
 * datastore; the node that hosts the endpoint programs the nat table and announces the address.
 * An endpoint is named by its endpoint ID or its container ID (or a unique prefix of either).
 *
 * An external IP is refused when it could reach something else: an address of an enabled pool (IPAM could
 * give it to a container), an address allocated in any pool, a node's address, one already used by another
 * endpoint, or a special address (loopback, link-local — 169.254.1.1 is every container's gateway —,
 * multicast, 0.0.0.0, broadcast).
 */
import { casLoop, type Datastore } from '../datastore/datastore.js';
import { keys, type WorkloadEndpoint } from '../datastore/model.js';
import { containsAddress, parseCidr, parseIPv4 } from '../lib/cidr.js';
import { NotFoundError, ValidationError } from '../lib/errors.js';
import { renderTable } from './table.js';

type IpNat = { internalIP: string; externalIP: string };

const SPECIAL: { cidr: string; what: string }[] = [
  { cidr: '0.0.0.0/8', what: 'a "this network" address' },
  { cidr: '127.0.0.0/8', what: 'a loopback address' },
  { cidr: '169.254.0.0/16', what: 'a link-local address (169.254.1.1 is the containers\' gateway)' },
  { cidr: '224.0.0.0/4', what: 'a multicast address' },
  { cidr: '255.255.255.255/32', what: 'the broadcast address' },
];

function ipv4(text: string, field: string): bigint {
  const v = parseIPv4(text);
  if (v === undefined) throw new ValidationError(field, `${JSON.stringify(text)} is not an IPv4 address (e.g. 172.16.9.10)`);
  return v;
}

function v4Addresses(ep: WorkloadEndpoint): string[] {
  return ep.ipNetworks.map((n) => n.split('/')[0] ?? '').filter((ip) => parseIPv4(ip) !== undefined);
}

/** The one endpoint whose endpoint ID or container ID starts with `name`. */
async function findEndpoint(store: Datastore, name: string): Promise<WorkloadEndpoint> {
  if (!/^[0-9a-f]{1,64}$/.test(name)) throw new ValidationError('endpoint', `${JSON.stringify(name)} is not an endpoint or container ID (hex; a unique prefix is enough)`);
  const all = (await store.list(keys.endpoints())).items.map((i) => i.value);
  const byEndpoint = all.filter((ep) => ep.endpointId.startsWith(name));
  const matches = byEndpoint.length > 0 ? byEndpoint : all.filter((ep) => ep.containerId?.startsWith(name));
  if (matches.length === 0) throw new NotFoundError('workload endpoint', name, 'list them with `calico-ts get workloadendpoints` (or give the container ID)');
  if (matches.length > 1) throw new ValidationError('endpoint', `${JSON.stringify(name)} matches ${matches.length} endpoints; give more of the ID`);
  return matches[0] as WorkloadEndpoint;
}

/** Throws a ValidationError saying why `external` cannot be a floating IP of `ep`. */
async function checkExternal(store: Datastore, ep: WorkloadEndpoint, external: string): Promise<void> {
  const value = ipv4(external, 'externalIP');
  for (const s of SPECIAL) {
    if (containsAddress(parseCidr(s.cidr), 4, value)) throw new ValidationError('externalIP', `${external} is ${s.what}`);
  }
  const [pools, blocks, nodes, endpoints] = await Promise.all([
    store.list(keys.pools()),
    store.list(keys.blocks()),
    store.list(keys.nodes()),
    store.list(keys.endpoints()),
  ]);
  for (const { value: pool } of pools.items) {
    if (!pool.disabled && containsAddress(parseCidr(pool.cidr), 4, value)) {
      throw new ValidationError('externalIP', `${external} is inside the enabled pool ${pool.name} (${pool.cidr}), whose addresses IPAM gives to containers; use an address outside the pools, or a disabled pool`);
    }
  }
  for (const { value: block } of blocks.items) {
    const cidr = parseCidr(block.cidr);
    if (!containsAddress(cidr, 4, value)) continue;
    const owner = block.allocations[Number(value - cidr.base)];
    if (owner) throw new ValidationError('externalIP', `${external} is allocated (to ${owner.handle} on ${owner.node})`);
  }
  const node = nodes.items.find((n) => n.value.ipv4Address?.split('/')[0] === external);
  if (node) throw new ValidationError('externalIP', `${external} is the address of node ${node.value.name}`);
  for (const { value: other } of endpoints.items) {
    if (other.endpointId === ep.endpointId) continue;
    if (other.ipNATs?.some((n) => n.externalIP === external)) throw new ValidationError('externalIP', `${external} is already a floating IP of endpoint ${other.endpointId.slice(0, 12)}`);
    if (v4Addresses(other).includes(external)) throw new ValidationError('externalIP', `${external} is the address of endpoint ${other.endpointId.slice(0, 12)}`);
  }
}

export async function addFloatingIp(store: Datastore, name: string, external: string, internal?: string): Promise<string> {
  const ep = await findEndpoint(store, name);
  const own = v4Addresses(ep);
  if (internal !== undefined) ipv4(internal, '--internal-ip');
  const internalIP = internal ?? own[0];
  if (internalIP === undefined) throw new ValidationError('endpoint', `${ep.endpointId.slice(0, 12)} has no IPv4 address`);
  if (!own.includes(internalIP)) throw new ValidationError('--internal-ip', `${internalIP} is not an address of endpoint ${ep.endpointId.slice(0, 12)} (it has ${own.join(', ') || 'none'})`);
  await checkExternal(store, ep, external);
  let result = '';
  await casLoop(store, keys.endpoint(ep.node, ep.endpointId), (cur) => {
    if (!cur) throw new NotFoundError('workload endpoint', ep.endpointId, 'it was removed meanwhile');
    const nats = cur.value.ipNATs ?? [];
    const same = nats.find((n) => n.externalIP === external);
    if (same?.internalIP === internalIP) {
      result = `floating IP ${external} → ${internalIP} is already set on endpoint ${ep.endpointId.slice(0, 12)}`;
      return undefined;
    }
    result = `floating IP ${external} → ${internalIP} set on endpoint ${ep.endpointId.slice(0, 12)} (node ${ep.node})`;
    const next: IpNat[] = [...nats.filter((n) => n.externalIP !== external), { internalIP, externalIP: external }];
    return { ...cur.value, ipNATs: next };
  });
  return result;
}

/** Removes one floating IP of the endpoint, or all of them when `external` is not given. */
export async function removeFloatingIp(store: Datastore, name: string, external?: string): Promise<string> {
  if (external !== undefined) ipv4(external, 'externalIP');
  const ep = await findEndpoint(store, name);
  let removed: string[] = [];
  await casLoop(store, keys.endpoint(ep.node, ep.endpointId), (cur) => {
    if (!cur) throw new NotFoundError('workload endpoint', ep.endpointId, 'it was removed meanwhile');
    const nats = cur.value.ipNATs ?? [];
    const keep = external === undefined ? [] : nats.filter((n) => n.externalIP !== external);
    removed = nats.filter((n) => !keep.includes(n)).map((n) => n.externalIP);
    if (removed.length === 0) return undefined;
    const { ipNATs: _dropped, ...rest } = cur.value;
    return keep.length > 0 ? { ...rest, ipNATs: keep } : rest;
  });
  if (removed.length === 0) {
    if (external !== undefined) throw new NotFoundError('floating IP', external, `endpoint ${ep.endpointId.slice(0, 12)} does not have it`);
    return `endpoint ${ep.endpointId.slice(0, 12)} has no floating IPs`;
  }
  return `floating IP ${removed.join(', ')} removed from endpoint ${ep.endpointId.slice(0, 12)}`;
}

export async function listFloatingIps(store: Datastore): Promise<string> {
  const rows = (await store.list(keys.endpoints())).items
    .flatMap(({ value: ep }) => (ep.ipNATs ?? []).map((n) => [n.externalIP, n.internalIP, ep.node, ep.endpointId.slice(0, 12), (ep.containerId ?? '').slice(0, 12)]))
    .sort((a, b) => Number((parseIPv4(a[0] ?? '') ?? 0n) - (parseIPv4(b[0] ?? '') ?? 0n)));
  return renderTable(['EXTERNAL IP', 'INTERNAL IP', 'NODE', 'ENDPOINT', 'WORKLOAD'], rows);
}
