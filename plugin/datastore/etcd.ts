/**
 * Datastore over etcd v3 (the `etcd3` client). Create = txn `create_revision == 0`; update/delete with
 * a revision = txn `mod_revision == rev`; list returns the header revision; watch starts at a revision.
 * Every etcd failure is wrapped once, here, into DatastoreError (or the typed conflict errors).
 */
import { readFileSync } from 'node:fs';
import { Etcd3, type ComparatorBuilder, type IOptions, type Watcher } from 'etcd3';
import { AlreadyExistsError, CalicoError, DatastoreError, NotFoundError, UpdateConflictError } from '../lib/errors.js';
import type { Datastore, KVPair, ListResult, Watch, WatchEvent } from './datastore.js';
import type { Key, KeyPrefix } from './model.js';

export interface EtcdConfig {
  endpoints: string[];
  caFile?: string;
  certFile?: string;
  keyFile?: string;
  dialTimeoutMs?: number;
}

const decode = <T>(buf: Buffer): T => JSON.parse(buf.toString('utf8')) as T;
const encode = (value: unknown): string => JSON.stringify(value);

export class EtcdDatastore implements Datastore {
  private readonly client: Etcd3;

  constructor(config: EtcdConfig) {
    const options: IOptions = {
      hosts: config.endpoints,
      dialTimeout: config.dialTimeoutMs ?? 5_000,
    };
    if (config.caFile || config.certFile || config.keyFile) {
      options.credentials = {
        rootCertificate: config.caFile ? readFileSync(config.caFile) : Buffer.alloc(0),
        ...(config.certFile ? { certChain: readFileSync(config.certFile) } : {}),
        ...(config.keyFile ? { privateKey: readFileSync(config.keyFile) } : {}),
      };
    }
    this.client = new Etcd3(options);
  }

  private async wrap<R>(what: string, fn: () => Promise<R>): Promise<R> {
    try {
      return await fn();
    } catch (err) {
      if (err instanceof CalicoError) throw err;
      const message = err instanceof Error ? err.message : String(err);
      throw new DatastoreError(`etcd ${what} failed: ${message}; check ETCD_ENDPOINTS and that etcd is running`, {
        cause: err,
      });
    }
  }

  /** Runs `op` only if `path` is still at `revision`; otherwise NotFound (gone) or UpdateConflict (changed). */
  private async ifUnchanged(path: string, revision: number, op: Parameters<ComparatorBuilder['then']>[0]) {
    const res = await this.client.if(path, 'Mod', '==', revision).then(op).else(this.client.get(path)).commit();
    if (!res.succeeded) {
      const current = res.responses[0]?.response_range?.kvs ?? [];
      if (current.length === 0) throw new NotFoundError('key', path);
      throw new UpdateConflictError(path);
    }
    return res;
  }

  get<T>(key: Key<T>): Promise<KVPair<T> | undefined> {
    return this.wrap('get', async () => {
      const res = await this.client.get(key.path).exec();
      const kv = res.kvs[0];
      if (!kv) return undefined;
      return { key, value: decode<T>(kv.value), revision: Number(kv.mod_revision) };
    });
  }

  create<T>(key: Key<T>, value: T): Promise<KVPair<T>> {
    return this.wrap('create', async () => {
      const res = await this.client.if(key.path, 'Create', '==', 0).then(this.client.put(key.path).value(encode(value))).commit();
      if (!res.succeeded) throw new AlreadyExistsError('key', key.path);
      return { key, value, revision: Number(res.header.revision) };
    });
  }

  update<T>(key: Key<T>, value: T, revision: number): Promise<KVPair<T>> {
    return this.wrap('update', async () => {
      const res = await this.ifUnchanged(key.path, revision, this.client.put(key.path).value(encode(value)));
      return { key, value, revision: Number(res.header.revision) };
    });
  }

  put<T>(key: Key<T>, value: T): Promise<KVPair<T>> {
    return this.wrap('put', async () => {
      const res = await this.client.put(key.path).value(encode(value)).exec();
      return { key, value, revision: Number(res.header.revision) };
    });
  }

  delete<T>(key: Key<T>, revision?: number): Promise<void> {
    return this.wrap('delete', async () => {
      if (revision === undefined) {
        const res = await this.client.delete().key(key.path).exec();
        if (Number(res.deleted) === 0) throw new NotFoundError('key', key.path);
        return;
      }
      await this.ifUnchanged(key.path, revision, this.client.delete().key(key.path));
    });
  }

  list<T>(prefix: KeyPrefix<T>): Promise<ListResult<T>> {
    return this.wrap('list', async () => {
      const res = await this.client.getAll().prefix(prefix.path).exec();
      return {
        items: res.kvs.map((kv) => ({
          key: { path: kv.key.toString('utf8') },
          value: decode<T>(kv.value),
          revision: Number(kv.mod_revision),
        })),
        revision: Number(res.header.revision),
      };
    });
  }

  watch<T>(
    prefix: KeyPrefix<T>,
    fromRevision: number,
    onEvent: (event: WatchEvent<T>) => void,
    onError: (err: Error) => void = () => undefined,
  ): Promise<Watch> {
    return this.wrap('watch', async () => {
      const watcher: Watcher = await this.client.watch().prefix(prefix.path).startRevision(String(fromRevision)).create();
      watcher.on('put', (kv) =>
        onEvent({ type: 'put', key: { path: kv.key.toString('utf8') }, value: decode<T>(kv.value), revision: Number(kv.mod_revision) }),
      );
      watcher.on('delete', (kv) =>
        onEvent({ type: 'delete', key: { path: kv.key.toString('utf8') }, revision: Number(kv.mod_revision) }),
      );
      watcher.on('error', (err) => onError(err));
      return { close: () => watcher.cancel() };
    });
  }

  async close(): Promise<void> {
    this.client.close();
  }
}
