/**
 * Child process for the two-host IPAM race: `node ipam-worker.js <endpoint> <node> <count> <range>`.
 * Allocates `count` addresses with 10 in flight, prints {"addresses": [...], "ms": n} on stdout.
 */
import { EtcdDatastore } from '../../plugin/datastore/etcd.js';
import { Ipam } from '../../plugin/ipam/ipam.js';

const [endpoint, node, countText, range] = process.argv.slice(2);
if (!endpoint || !node || !countText || !range) throw new Error('usage: ipam-worker <endpoint> <node> <count> <range>');
const store = new EtcdDatastore({ endpoints: [endpoint] });
const ipam = new Ipam(store, { node });
const count = Number(countText);
const addresses: string[] = [];
const started = performance.now();
let next = 0;
await Promise.all(
  Array.from({ length: 10 }, async () => {
    while (next < count) {
      next++;
      addresses.push(await ipam.autoAssign(range, `${node}-ep-${next}-${Math.random()}`));
    }
  }),
);
const ms = performance.now() - started;
process.stdout.write(JSON.stringify({ addresses, ms }) + '\n');
await store.close();
