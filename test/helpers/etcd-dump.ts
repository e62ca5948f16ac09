/**
 * `node etcd-dump.js <endpoint>`: prints every calico-ts key and value as JSON. Tests run it inside the
 * namespace where their etcd listens.
 */
import { EtcdDatastore } from '../../plugin/datastore/etcd.js';
import { keys } from '../../plugin/datastore/model.js';

const endpoint = process.argv[2];
if (!endpoint) throw new Error('usage: etcd-dump <endpoint>');
const store = new EtcdDatastore({ endpoints: [endpoint] });
const { items } = await store.list(keys.root);
process.stdout.write(JSON.stringify(Object.fromEntries(items.map((i) => [i.key.path, i.value]))) + '\n');
await store.close();
