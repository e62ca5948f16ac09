/**
 * Calico-style IPAM over the datastore.
 *
 * - Pools are split into blocks (/26 by default). A node claims a block by *creating* it with
 *   `affinity: host:<node>` (create-if-absent decides the winner), then records an affinity index key.
 * - Each address of a block has an owner (Allocation). Docker's RequestAddress carries no endpoint ID,
 *   so an address starts as `unbound:<node>` and CreateEndpoint binds it to the endpoint ID (the handle);
 *   the handle record lists the addresses it owns so releasing an endpoint needs no scan.
 * - Every block write is a compare-and-swap with bounded retry (casLoop): the new block value is built
 *   and persisted before anything else is touched.
 * - A block whose last address is released stays with its host for a grace period (no claim/drop churn
 *   when containers come and go), then returns to the pool (releaseEmptyBlocks, run by the node's GC).
 * - When no block is free to claim, addresses are borrowed from other nodes' blocks (Calico's
 *   non-strict affinity), so a pool is never "full" while it has free addresses.
 */
import { createHash, randomUUID } from 'node:crypto';
import { Mutex } from '../lib/mutex.js';
import { casLoop, type Datastore, type KVPair } from '../datastore/datastore.js';
import { keys, type Allocation, type Block, type IPPool } from '../datastore/model.js';
import {
  AddressInUseError,
  AlreadyExistsError,
  NotFoundError,
  PoolExhaustedError,
  PoolNotFoundError,
  UpdateConflictError,
  ValidationError,
} from '../lib/errors.js';
import {
  blockContaining,
  blocksOverlapping,
  cidrWithin,
  cidrsOverlap,
  containsAddress,
  formatAddress,
  formatCidr,
  parseAddress,
  parseCidr,
  type Cidr,
  type Family,
} from '../lib/cidr.js';

export const DEFAULT_IPV4_POOL: IPPool = {
  name: 'default-ipv4-ippool',
  cidr: '192.168.0.0/16',
  blockSize: 26,
  ipipMode: 'Never',
  vxlanMode: 'Never',
  natOutgoing: false,
  disabled: false,
  nodeSelector: 'all()',
};

export const DEFAULT_IPV6_BLOCK_SIZE = 122;

/** The pool CALICO_TS_IPV6_POOL_CIDR asks for: like Calico's default-ipv6-ippool (blocks of /122). */
export function defaultIPv6Pool(cidrText: string): IPPool {
  const cidr = parseCidr(cidrText, 'CALICO_TS_IPV6_POOL_CIDR');
  if (cidr.family !== 6) throw new ValidationError('CALICO_TS_IPV6_POOL_CIDR', `${cidrText} is not an IPv6 CIDR`);
  if (cidr.prefix > DEFAULT_IPV6_BLOCK_SIZE) {
    throw new ValidationError('CALICO_TS_IPV6_POOL_CIDR', `${cidrText} is smaller than one /${DEFAULT_IPV6_BLOCK_SIZE} block; use a /${DEFAULT_IPV6_BLOCK_SIZE} or larger prefix`);
  }
  return { ...DEFAULT_IPV4_POOL, name: 'default-ipv6-ippool', cidr: formatCidr(cidr), blockSize: DEFAULT_IPV6_BLOCK_SIZE };
}

export const UNBOUND_PREFIX = 'unbound:';
/** Handles of tunnel addresses (`vxlan-tunnel-addr-<node>`, `ipip-tunnel-addr-<node>`): owned by the node
 * itself, never by a Docker endpoint, so the garbage collector leaves them alone. */
export const isTunnelHandle = (handle: string): boolean => /^(vxlan|vxlan-v6|ipip)-tunnel-addr-/.test(handle);
const MAX_ATTEMPTS = 20;
const POOL_CACHE_MS = 1000;

export interface IpamOptions {
  node: string;
  now?: () => number;
}

/** A pure helper: the lowest free ordinal of `block` whose address lies in `range`, or -1. */
export function firstFreeOrdinal(block: Block, range: Cidr): number {
  const blockCidr = parseCidr(block.cidr);
  for (let i = 0; i < block.allocations.length; i++) {
    if (block.allocations[i] === null && containsAddress(range, blockCidr.family, blockCidr.base + BigInt(i))) return i;
  }
  return -1;
}

export function newBlock(cidr: Cidr, node: string | null): Block {
  const count = Number(1n << BigInt((cidr.family === 4 ? 32 : 128) - cidr.prefix));
  return { cidr: formatCidr(cidr), affinity: node === null ? null : `host:${node}`, allocations: Array(count).fill(null) };
}

export class Ipam {
  readonly node: string;
  private readonly now: () => number;
  private readonly allocationLock = new Mutex();
  private poolCache: { at: number; pools: IPPool[] } | undefined;
  /**
   * This node's blocks as last read or written (allocation is serialised, so usually current): an
   * allocation is then one compare-and-swap write. A stale entry just costs one re-read.
   */
  private readonly affineBlocks = new Map<string, KVPair<Block>>();

  constructor(
    private readonly store: Datastore,
    options: IpamOptions,
  ) {
    this.node = options.node;
    this.now = options.now ?? Date.now;
  }

  /**
   * Creates the default IPv4 pool when the cluster has no pool at all (first start), and, when
   * `ipv6Cidr` is given (CALICO_TS_IPV6_POOL_CIDR), the default IPv6 pool if the cluster has no IPv6
   * pool. IPv6 is otherwise off until someone applies an IPv6 IPPool.
   */
  async ensureDefaultPool(ipv6Cidr?: string): Promise<void> {
    const { items } = await this.store.list(keys.pools());
    const wanted: IPPool[] = [];
    if (items.length === 0) wanted.push(DEFAULT_IPV4_POOL);
    if (ipv6Cidr !== undefined && !items.some((i) => parseCidr(i.value.cidr).family === 6)) wanted.push(defaultIPv6Pool(ipv6Cidr));
    for (const pool of wanted) {
      try {
        await this.store.create(keys.pool(pool.name), pool);
      } catch (err) {
        if (!(err instanceof AlreadyExistsError)) throw err;
      }
    }
  }

  async listPools(): Promise<IPPool[]> {
    return (await this.store.list(keys.pools())).items.map((i) => i.value);
  }

  /** Pools for the allocation path: re-read at most once a second (pools change rarely). */
  private async poolsForAllocation(): Promise<IPPool[]> {
    const now = this.now();
    if (!this.poolCache || now - this.poolCache.at > POOL_CACHE_MS) this.poolCache = { at: now, pools: await this.listPools() };
    return this.poolCache.pools;
  }

  /**
   * The range a Docker network allocates from: `subnet` when given (it must lie inside an enabled pool),
   * else the first enabled pool of the family.
   */
  async resolveRange(subnet: string | undefined, family: Family): Promise<{ range: Cidr; pool: IPPool }> {
    const pools = (await this.poolsForAllocation()).filter((p) => !p.disabled && parseCidr(p.cidr).family === family);
    if (!subnet) {
      const pool = pools.sort((a, b) => (a.name < b.name ? -1 : 1))[0];
      if (!pool) {
        throw new PoolNotFoundError(
          `no enabled calico-ts IPv${family} pool exists; create one with calico-ts apply -f pool.yaml (kind: IPPool)`,
        );
      }
      return { range: parseCidr(pool.cidr), pool };
    }
    const range = parseCidr(subnet, 'subnet');
    if (range.family !== family) throw new ValidationError('subnet', `${subnet} is not an IPv${family} subnet`);
    const pool = pools.find((p) => cidrWithin(range, parseCidr(p.cidr)));
    if (!pool) {
      throw new PoolNotFoundError(
        `no calico-ts IP pool contains ${formatCidr(range)}; create one with calico-ts apply -f pool.yaml ` +
          `(kind: IPPool, spec.cidr covering it) or omit --subnet to use the default pool`,
      );
    }
    return { range, pool };
  }

  /**
   * Allocates one address from `range` for this node, preferring blocks it already holds. Calls from
   * one process are serialised so parallel `docker run`s fill one block instead of each claiming a new
   * one; other hosts are kept apart by the compare-and-swap writes.
   */
  autoAssign(rangeText: string, handle?: string): Promise<string> {
    return this.allocationLock.run(() => this.autoAssignUnlocked(rangeText, handle));
  }

  private async autoAssignUnlocked(rangeText: string, handle?: string): Promise<string> {
    const { range, pool } = await this.resolveRange(rangeText, parseCidr(rangeText).family);
    const owner = this.owner(handle);
    for (let attempt = 0; attempt < MAX_ATTEMPTS; attempt++) {
      const fromAffine = await this.assignFromAffineBlocks(range, owner);
      if (fromAffine) return this.recordHandle(fromAffine, owner.handle);
      const claimed = await this.claimBlockAndAssign(pool, range, owner);
      if (claimed === 'retry') continue;
      if (claimed) return this.recordHandle(claimed, owner.handle);
      const borrowed = await this.borrow(pool, range, owner);
      if (borrowed) return this.recordHandle(borrowed, owner.handle);
      throw new PoolExhaustedError(
        `no free address left in ${formatCidr(range)}; remove unused containers or add an IP pool with calico-ts apply`,
      );
    }
    throw new UpdateConflictError(`ipam allocation in ${formatCidr(range)}`);
  }

  /** Assigns a specific address (`docker run --ip`). */
  async assign(addressText: string, rangeText: string, handle?: string): Promise<string> {
    const { family, value } = parseAddress(addressText, 'address');
    const { range, pool } = await this.resolveRange(rangeText, family);
    if (!containsAddress(range, family, value)) {
      throw new ValidationError('address', `${addressText} is not inside the network's subnet ${formatCidr(range)}`);
    }
    const owner = this.owner(handle);
    const blockCidr = blockContaining(family, value, pool.blockSize);
    const ordinal = Number(value - blockCidr.base);
    let conflict: Allocation | undefined;
    const written = await casLoop(this.store, keys.block(formatCidr(blockCidr)), (current) => {
      const block = current?.value ?? newBlock(blockCidr, this.node);
      const existing = block.allocations[ordinal];
      if (existing) {
        conflict = existing;
        return undefined;
      }
      conflict = undefined;
      const allocations = [...block.allocations];
      allocations[ordinal] = owner;
      return { ...block, allocations };
    });
    if (conflict || !written) {
      const who = conflict?.handle.startsWith(UNBOUND_PREFIX) ? 'an address being assigned' : `endpoint ${conflict?.handle.slice(0, 12)}`;
      throw new AddressInUseError(`${addressText} is already in use (by ${who} on node ${conflict?.node}); choose another --ip`);
    }
    if (written.value.affinity === `host:${this.node}`) await this.store.put(keys.affinity(this.node, written.value.cidr), { node: this.node, cidr: written.value.cidr });
    return this.recordHandle(addressText, owner.handle);
  }

  /**
   * Frees one address. Returns false when it was not allocated (release is idempotent).
   * With `expectedHandle`, frees only if that handle owns it.
   */
  async release(addressText: string, expectedHandle?: string): Promise<boolean> {
    const { family, value } = parseAddress(addressText, 'address');
    const pool = (await this.listPools()).find((p) => containsAddress(parseCidr(p.cidr), family, value));
    const blockSizes = pool ? [pool.blockSize] : await this.blockSizesInUse(family);
    for (const blockSize of blockSizes) {
      const blockCidr = blockContaining(family, value, blockSize);
      const released = await this.releaseInBlock(blockCidr, Number(value - blockCidr.base), expectedHandle);
      if (released) {
        if (!released.startsWith(UNBOUND_PREFIX)) await this.removeFromHandle(released, addressText);
        return true;
      }
    }
    return false;
  }

  /** Gives the addresses `unbound` allocations to `handle` (CreateEndpoint, once the endpoint ID is known). */
  async bind(addressText: string, handle: string): Promise<void> {
    const { family, value } = parseAddress(addressText, 'address');
    const block = await this.findBlockFor(family, value);
    if (!block) throw new NotFoundError('address', addressText, 'it was not assigned by calico-ts IPAM');
    const ordinal = Number(value - parseCidr(block).base);
    let missing = false;
    await casLoop(this.store, keys.block(block), (current) => {
      const a = current?.value.allocations[ordinal];
      missing = !a;
      if (!current || !a || a.handle === handle) return undefined;
      const allocations = [...current.value.allocations];
      allocations[ordinal] = { ...a, handle };
      return { ...current.value, allocations };
    });
    if (missing) throw new NotFoundError('address', addressText, 'it was not assigned by calico-ts IPAM');
    await this.recordHandle(addressText, handle);
  }

  /** Frees every address a handle (endpoint ID) owns, and the handle. */
  async releaseHandle(handle: string): Promise<string[]> {
    const record = await this.store.get(keys.handle(handle));
    if (!record) return [];
    const freed: string[] = [];
    for (const address of record.value.addresses) {
      if (await this.release(address, handle)) freed.push(address);
    }
    await this.store.delete(keys.handle(handle)).catch((err) => {
      if (!(err instanceof NotFoundError)) throw err;
    });
    return freed;
  }

  /** Blocks this node holds (for blackhole routes and, later, BGP). */
  async localBlocks(): Promise<string[]> {
    const { items } = await this.store.list(keys.blocks());
    return items.filter((i) => i.value.affinity === `host:${this.node}`).map((i) => i.value.cidr);
  }

  /**
   * Returns to the pool this node's blocks that have been empty for longer than `graceMs`.
   * Block first (it is the truth, deleted only if unchanged), then the affinity index.
   */
  async releaseEmptyBlocks(graceMs: number): Promise<string[]> {
    const released: string[] = [];
    const now = this.now();
    for (const { value: block, revision } of (await this.store.list(keys.blocks())).items) {
      if (block.affinity !== `host:${this.node}` || block.allocations.some((a) => a !== null)) continue;
      if (now - (block.emptySince ?? 0) < graceMs) continue;
      try {
        await this.store.delete(keys.block(block.cidr), revision);
      } catch (err) {
        if (err instanceof UpdateConflictError || err instanceof NotFoundError) continue;
        throw err;
      }
      this.affineBlocks.delete(block.cidr);
      await this.store.delete(keys.affinity(this.node, block.cidr)).catch(() => undefined);
      released.push(block.cidr);
    }
    return released;
  }

  // --- internals ---------------------------------------------------------------------------------

  /** Without a handle the address is `unbound:<node>:<nonce>` until CreateEndpoint binds it. */
  private owner(handle: string | undefined): Allocation {
    return { handle: handle ?? `${UNBOUND_PREFIX}${this.node}:${randomUUID().slice(0, 8)}`, node: this.node, since: this.now() };
  }

  private async recordHandle(address: string, handle: string): Promise<string> {
    if (handle.startsWith(UNBOUND_PREFIX)) return address;
    await casLoop(this.store, keys.handle(handle), (current) => {
      const addresses = current?.value.addresses ?? [];
      return addresses.includes(address) ? undefined : { id: handle, addresses: [...addresses, address] };
    });
    return address;
  }

  private async removeFromHandle(handle: string, address: string): Promise<void> {
    for (let i = 0; i < MAX_ATTEMPTS; i++) {
      const current = await this.store.get(keys.handle(handle));
      if (!current || !current.value.addresses.includes(address)) return;
      const addresses = current.value.addresses.filter((a) => a !== address);
      try {
        if (addresses.length === 0) await this.store.delete(keys.handle(handle), current.revision);
        else await this.store.update(keys.handle(handle), { id: handle, addresses }, current.revision);
        return;
      } catch (err) {
        if (!(err instanceof UpdateConflictError || err instanceof NotFoundError)) throw err;
      }
    }
  }

  private async assignFromAffineBlocks(range: Cidr, owner: Allocation): Promise<string | undefined> {
    const fromCache = await this.tryBlocks([...this.affineBlocks.keys()], range, owner);
    if (fromCache) return fromCache;
    // The cache may miss blocks (first call, a restart, a block claimed by --ip): ask the index.
    const listed = (await this.store.list(keys.affinities(this.node))).items.map((i) => i.value.cidr);
    return this.tryBlocks(listed.filter((c) => !this.affineBlocks.has(c)), range, owner);
  }

  private async tryBlocks(cidrs: string[], range: Cidr, owner: Allocation): Promise<string | undefined> {
    for (const cidrText of cidrs) {
      if (!cidrsOverlap(parseCidr(cidrText), range)) continue;
      let stale = false;
      const slot = { ordinal: -1 };
      const written = await casLoop(
        this.store,
        keys.block(cidrText),
        (current) => {
          stale = !current || current.value.affinity !== `host:${this.node}`;
          slot.ordinal = -1;
          if (!current || stale) return undefined;
          return this.withAllocation(current.value, range, owner, slot);
        },
        MAX_ATTEMPTS,
        this.affineBlocks.get(cidrText),
      );
      if (stale) {
        this.affineBlocks.delete(cidrText);
        await this.store.delete(keys.affinity(this.node, cidrText)).catch(() => undefined);
        continue;
      }
      if (written) this.affineBlocks.set(cidrText, written);
      const address = written && this.addressAt(written.value, slot);
      if (address) return address;
    }
    return undefined;
  }

  /** Claims the first unclaimed block of the pool overlapping `range` and assigns from it. */
  private async claimBlockAndAssign(pool: IPPool, range: Cidr, owner: Allocation): Promise<string | undefined | 'retry'> {
    const poolCidr = parseCidr(pool.cidr);
    const existing = new Set((await this.store.list(keys.blocks())).items.map((i) => i.value.cidr));
    // Start each node's search at a different block so concurrent claims rarely collide.
    const start = createHash('sha1').update(this.node).digest().readUInt32BE(0);
    for (const cidr of blocksOverlapping(poolCidr, pool.blockSize, range, range.prefix >= pool.blockSize ? 0 : start)) {
      const text = formatCidr(cidr);
      if (existing.has(text)) continue;
      const slot = { ordinal: -1 };
      const block = this.withAllocation(newBlock(cidr, this.node), range, owner, slot);
      if (!block) continue;
      try {
        this.affineBlocks.set(text, await this.store.create(keys.block(text), block));
      } catch (err) {
        if (err instanceof AlreadyExistsError) return 'retry';
        throw err;
      }
      await this.store.put(keys.affinity(this.node, text), { node: this.node, cidr: text });
      return this.addressAt(block, slot);
    }
    return undefined;
  }

  private async borrow(pool: IPPool, range: Cidr, owner: Allocation): Promise<string | undefined> {
    const poolCidr = parseCidr(pool.cidr);
    const { items } = await this.store.list(keys.blocks());
    for (const { value } of items) {
      const cidr = parseCidr(value.cidr);
      if (!cidrWithin(cidr, poolCidr) || !cidrsOverlap(cidr, range) || firstFreeOrdinal(value, range) < 0) continue;
      const slot = { ordinal: -1 };
      const written = await casLoop(this.store, keys.block(value.cidr), (current) => {
        slot.ordinal = -1;
        return current ? this.withAllocation(current.value, range, owner, slot) : undefined;
      });
      const address = written && this.addressAt(written.value, slot);
      if (address) return address;
    }
    return undefined;
  }

  /** The block with `owner` in its first free slot inside `range` (noted in `slot`), or undefined when full. */
  private withAllocation(block: Block, range: Cidr, owner: Allocation, slot: { ordinal: number }): Block | undefined {
    slot.ordinal = firstFreeOrdinal(block, range);
    if (slot.ordinal < 0) return undefined;
    const allocations = [...block.allocations];
    allocations[slot.ordinal] = owner;
    return { ...block, allocations, emptySince: null };
  }

  private addressAt(block: Block, slot: { ordinal: number }): string | undefined {
    if (slot.ordinal < 0) return undefined;
    const cidr = parseCidr(block.cidr);
    return formatAddress(cidr.family, cidr.base + BigInt(slot.ordinal));
  }

  private async releaseInBlock(blockCidr: Cidr, ordinal: number, expectedHandle?: string): Promise<string | undefined> {
    const key = keys.block(formatCidr(blockCidr));
    for (let i = 0; i < MAX_ATTEMPTS; i++) {
      const current = await this.store.get(key);
      const owner = current?.value.allocations[ordinal];
      if (!current || !owner) return undefined;
      if (expectedHandle !== undefined && owner.handle !== expectedHandle) return undefined;
      const allocations = [...current.value.allocations];
      allocations[ordinal] = null;
      try {
        const empty = allocations.every((a) => a === null);
        const written = await this.store.update(key, { ...current.value, allocations, emptySince: empty ? this.now() : null }, current.revision);
        if (this.affineBlocks.has(written.value.cidr)) this.affineBlocks.set(written.value.cidr, written);
        return owner.handle;
      } catch (err) {
        if (!(err instanceof UpdateConflictError || err instanceof NotFoundError)) throw err;
      }
    }
    throw new UpdateConflictError(key.path);
  }

  private async findBlockFor(family: Family, value: bigint): Promise<string | undefined> {
    const pool = (await this.listPools()).find((p) => containsAddress(parseCidr(p.cidr), family, value));
    const sizes = pool ? [pool.blockSize] : await this.blockSizesInUse(family);
    for (const s of sizes) {
      const cidr = formatCidr(blockContaining(family, value, s));
      if (await this.store.get(keys.block(cidr))) return cidr;
    }
    return undefined;
  }

  /** For addresses whose pool was deleted: the block sizes that exist, so their blocks can still be found. */
  private async blockSizesInUse(family: Family): Promise<number[]> {
    const { items } = await this.store.list(keys.blocks());
    return [...new Set(items.map((i) => parseCidr(i.value.cidr)).filter((c) => c.family === family).map((c) => c.prefix))];
  }
}
