/**
 * The Datastore contract, run against every implementation (etcd for real, memory for unit tests).
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { casLoop, idOf, type Datastore, type WatchEvent } from '../../plugin/datastore/datastore.js';
import { keys } from '../../plugin/datastore/model.js';
import { AlreadyExistsError, NotFoundError, UpdateConflictError } from '../../plugin/lib/errors.js';

export function datastoreContract(name: string, newStore: () => Promise<Datastore>): void {
  describe(`Datastore contract: ${name}`, () => {
    const pool = (cidr: string) => ({
      name: 'p',
      cidr,
      blockSize: 26,
      ipipMode: 'Never' as const,
      vxlanMode: 'Never' as const,
      natOutgoing: false,
      disabled: false,
      nodeSelector: 'all()',
    });

    it('create, get, update with revision, delete', async () => {
      const ds = await newStore();
      const k = keys.pool(`p-${Math.random()}`);
      assert.equal(await ds.get(k), undefined);
      const created = await ds.create(k, pool('10.0.0.0/16'));
      assert.ok(created.revision > 0);
      await assert.rejects(ds.create(k, pool('10.1.0.0/16')), AlreadyExistsError);
      const got = await ds.get(k);
      assert.equal(got?.value.cidr, '10.0.0.0/16');
      assert.equal(got?.revision, created.revision);
      const updated = await ds.update(k, pool('10.2.0.0/16'), created.revision);
      assert.ok(updated.revision > created.revision);
      await assert.rejects(ds.update(k, pool('10.3.0.0/16'), created.revision), UpdateConflictError);
      assert.equal((await ds.get(k))?.value.cidr, '10.2.0.0/16');
      await assert.rejects(ds.delete(k, created.revision), UpdateConflictError);
      await ds.delete(k, updated.revision);
      assert.equal(await ds.get(k), undefined);
      await assert.rejects(ds.delete(k), NotFoundError);
      await assert.rejects(ds.update(k, pool('10.3.0.0/16'), updated.revision), NotFoundError);
      await ds.close();
    });

    it('list under a prefix, with ids decoded and the store revision', async () => {
      const ds = await newStore();
      const node = `n-${Math.random()}`;
      await ds.put(keys.affinity(node, '10.0.0.0/26'), { node, cidr: '10.0.0.0/26' });
      await ds.put(keys.affinity(node, '10.0.0.64/26'), { node, cidr: '10.0.0.64/26' });
      await ds.put(keys.affinity(`${node}x`, '10.0.1.0/26'), { node: `${node}x`, cidr: '10.0.1.0/26' });
      const res = await ds.list(keys.affinities(node));
      assert.deepEqual(res.items.map((i) => idOf(i.key, keys.affinities(node))).sort(), ['10.0.0.0/26', '10.0.0.64/26']);
      assert.ok(res.revision >= Math.max(...res.items.map((i) => i.revision)));
      await ds.close();
    });

    it('watch from a revision delivers puts and deletes in order', async () => {
      const ds = await newStore();
      const node = `w-${Math.random()}`;
      const start = (await ds.list(keys.endpoints(node))).revision + 1;
      const events: WatchEvent<unknown>[] = [];
      const k = keys.handle(`${node}-h`);
      const w = await ds.watch(keys.handles(), start, (e) => {
        if (e.key.path === k.path) events.push(e);
      });
      await ds.put(k, { id: 'h', addresses: ['10.0.0.1'] });
      await ds.delete(k);
      const deadline = Date.now() + 5000;
      while (events.length < 2 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
      await w.close();
      assert.deepEqual(events.map((e) => e.type), ['put', 'delete']);
      await ds.close();
    });

    it('casLoop serialises concurrent increments', async () => {
      const ds = await newStore();
      const k = keys.handle(`cas-${Math.random()}`);
      await Promise.all(
        Array.from({ length: 10 }, (_, i) =>
          casLoop(ds, k, (cur) => ({ id: 'c', addresses: [...(cur?.value.addresses ?? []), String(i)] }), 100),
        ),
      );
      assert.equal((await ds.get(k))?.value.addresses.length, 10);
      await ds.close();
    });
  });
}
