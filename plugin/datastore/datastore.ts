/**
 * The datastore contract (after libcalico-go's backend API): typed keys, values with the revision they
 * were written at, create-if-absent, compare-and-swap update and delete, list with the store revision,
 * and watch from a revision. Implementations: EtcdDatastore (the product) and MemoryDatastore (unit
 * tests of other modules). Both pass the same contract suite (test/contract/datastore.contract.ts).
 *
 * Failures are typed: NotFoundError, AlreadyExistsError, UpdateConflictError, DatastoreError.
 */
import { AlreadyExistsError, NotFoundError, UpdateConflictError } from '../lib/errors.js';
import type { Key, KeyPrefix } from './model.js';

export interface KVPair<T> {
  key: Key<T>;
  value: T;
  /** etcd mod_revision of this value; pass it back to update/delete for compare-and-swap. */
  revision: number;
}

export interface ListResult<T> {
  items: KVPair<T>[];
  /** Store revision the list was read at; watch from `revision + 1` to miss nothing. */
  revision: number;
}

export type WatchEvent<T> =
  | { type: 'put'; key: Key<T>; value: T; revision: number }
  | { type: 'delete'; key: Key<T>; revision: number };

export interface Watch {
  close(): Promise<void>;
}

export interface Datastore {
  get<T>(key: Key<T>): Promise<KVPair<T> | undefined>;
  /** Fails with AlreadyExistsError when the key is present. */
  create<T>(key: Key<T>, value: T): Promise<KVPair<T>>;
  /** Fails with UpdateConflictError unless the key is still at `revision` (NotFoundError if gone). */
  update<T>(key: Key<T>, value: T, revision: number): Promise<KVPair<T>>;
  /** Unconditional write, for records this node alone owns. */
  put<T>(key: Key<T>, value: T): Promise<KVPair<T>>;
  /** With `revision`, only if unchanged. Fails with NotFoundError when absent. */
  delete<T>(key: Key<T>, revision?: number): Promise<void>;
  list<T>(prefix: KeyPrefix<T>): Promise<ListResult<T>>;
  /** Events for keys under `prefix` with revision ≥ fromRevision, in order. */
  watch<T>(prefix: KeyPrefix<T>, fromRevision: number, onEvent: (event: WatchEvent<T>) => void, onError?: (err: Error) => void): Promise<Watch>;
  close(): Promise<void>;
}

/** Decoded last path segment(s) after a prefix: the id a key was built from. */
export function idOf(key: { path: string }, prefix: { path: string }): string {
  return key.path.startsWith(prefix.path) ? decodeURIComponent(key.path.slice(prefix.path.length)) : key.path;
}

/**
 * Bounded compare-and-swap loop: read, compute, write; on conflict re-read and retry. `compute` returns
 * the new value, or `undefined` to write nothing (the loop then returns the current pair).
 */
export async function casLoop<T>(
  store: Datastore,
  key: Key<T>,
  compute: (current: KVPair<T> | undefined) => T | undefined,
  attempts = 20,
  /** A value believed current (e.g. cached from our last write): the first attempt skips the read. */
  cached?: KVPair<T>,
): Promise<KVPair<T> | undefined> {
  for (let i = 0; i < attempts; i++) {
    const current = i === 0 && cached ? cached : await store.get(key);
    const next = compute(current);
    if (next === undefined) return current;
    try {
      return current ? await store.update(key, next, current.revision) : await store.create(key, next);
    } catch (err) {
      if (err instanceof UpdateConflictError || err instanceof AlreadyExistsError || err instanceof NotFoundError) {
        // A stale cached value is no contention: retry at once with a fresh read.
        if (i > 0 || !cached) await new Promise((r) => setTimeout(r, Math.random() * 5 * (i + 1)));
        continue;
      }
      throw err;
    }
  }
  throw new UpdateConflictError(key.path);
}
