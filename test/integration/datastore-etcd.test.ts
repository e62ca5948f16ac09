import { after, before } from 'node:test';
import { EtcdDatastore } from '../../plugin/datastore/etcd.js';
import { datastoreContract } from '../contract/datastore.contract.js';
import { startEtcd, type EtcdHandle } from '../helpers/etcd.js';

let etcd: EtcdHandle | undefined;
before(async () => {
  etcd = await startEtcd();
});
after(async () => {
  await etcd?.stop();
});

datastoreContract('etcd', async () => new EtcdDatastore({ endpoints: [etcd!.endpoint] }));
