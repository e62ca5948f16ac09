/**
 * `node etcd-dump.js <endpoint>`: prints every calico-ts key and value as JSON.
 * `node etcd-dump.js <endpoint> --delete <key>`: deletes one key (a test simulating an operator).
 * Tests run it inside the namespace from which their etcd is reachable.
 */
import { EtcdDatastore } from '../../plugin/datastore/etcd.js';
import { keys } from '../../plugin/datastore/model.js';

const [endpoint, flag, key] = process.argv.slice(2);
if (!endpoint) throw new Error('usage: etcd-dump <endpoint> [--delete <key>]');
const store = new EtcdDatastore({ endpoints: [endpoint] });
if (flag === '--delete' && key) {
  await store.delete({ path: key });
} else {
  const { items } = await store.list(keys.root);
  process.stdout.write(JSON.stringify(Object.fromEntries(items.map((i) => [i.key.path, i.value]))) + '\n');
}
await store.close();
