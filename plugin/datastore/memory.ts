/**
 * In-process Datastore with etcd's revision semantics, for unit tests of the modules above the
 * datastore (IPAM planner, API handlers). It passes the same contract suite as EtcdDatastore.
 */
import { AlreadyExistsError, NotFoundError, UpdateConflictError } from '../lib/errors.js';
import type { Datastore, KVPair, ListResult, Watch, WatchEvent } from './datastore.js';
import type { Key, KeyPrefix } from './model.js';

interface Stored {
  json: string;
  revision: number;
}

interface Watcher {
  prefix: string;
  onEvent: (event: WatchEvent<unknown>) => void;
}

export class MemoryDatastore implements Datastore {
  private readonly data = new Map<string, Stored>();
  private readonly history: WatchEvent<unknown>[] = [];
  private readonly watchers = new Set<Watcher>();
  private revision = 1;

  private write(path: string, value: unknown): number {
    const revision = ++this.revision;
    const json = JSON.stringify(value);
    this.data.set(path, { json, revision });
    this.emit({ type: 'put', key: { path }, value: JSON.parse(json), revision });
    return revision;
  }

  private emit(event: WatchEvent<unknown>): void {
    this.history.push(event);
    for (const w of this.watchers) if (event.key.path.startsWith(w.prefix)) queueMicrotask(() => w.onEvent(event));
  }

  async get<T>(key: Key<T>): Promise<KVPair<T> | undefined> {
    const s = this.data.get(key.path);
    return s ? { key, value: JSON.parse(s.json) as T, revision: s.revision } : undefined;
  }

  async create<T>(key: Key<T>, value: T): Promise<KVPair<T>> {
    if (this.data.has(key.path)) throw new AlreadyExistsError('key', key.path);
    return { key, value, revision: this.write(key.path, value) };
  }

  async update<T>(key: Key<T>, value: T, revision: number): Promise<KVPair<T>> {
    const s = this.data.get(key.path);
    if (!s) throw new NotFoundError('key', key.path);
    if (s.revision !== revision) throw new UpdateConflictError(key.path);
    return { key, value, revision: this.write(key.path, value) };
  }

  async put<T>(key: Key<T>, value: T): Promise<KVPair<T>> {
    return { key, value, revision: this.write(key.path, value) };
  }

  async delete<T>(key: Key<T>, revision?: number): Promise<void> {
    const s = this.data.get(key.path);
    if (!s) throw new NotFoundError('key', key.path);
    if (revision !== undefined && s.revision !== revision) throw new UpdateConflictError(key.path);
    this.data.delete(key.path);
    this.emit({ type: 'delete', key: { path: key.path }, revision: ++this.revision });
  }

  async list<T>(prefix: KeyPrefix<T>): Promise<ListResult<T>> {
    const items: KVPair<T>[] = [];
    for (const [path, s] of [...this.data.entries()].sort(([a], [b]) => (a < b ? -1 : 1))) {
      if (path.startsWith(prefix.path)) items.push({ key: { path }, value: JSON.parse(s.json) as T, revision: s.revision });
    }
    return { items, revision: this.revision };
  }

  async watch<T>(prefix: KeyPrefix<T>, fromRevision: number, onEvent: (event: WatchEvent<T>) => void): Promise<Watch> {
    const w: Watcher = { prefix: prefix.path, onEvent: onEvent as (e: WatchEvent<unknown>) => void };
    for (const e of this.history) {
      if (e.revision >= fromRevision && e.key.path.startsWith(prefix.path)) queueMicrotask(() => w.onEvent(e));
    }
    this.watchers.add(w);
    return { close: async () => void this.watchers.delete(w) };
  }

  async close(): Promise<void> {
    this.watchers.clear();
  }
}
