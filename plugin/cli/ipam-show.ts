/** `calico-ts ipam show`: pools, blocks per host, and every address in use with its owner. */
import type { Datastore } from '../datastore/datastore.js';
import { keys } from '../datastore/model.js';
import { formatAddress, parseCidr } from '../lib/cidr.js';
import { UNBOUND_PREFIX, isTunnelHandle } from '../ipam/ipam.js';
import { renderTable } from './table.js';

export async function ipamShow(store: Datastore): Promise<string> {
  const pools = (await store.list(keys.pools())).items.map((i) => i.value);
  const blocks = (await store.list(keys.blocks())).items.map((i) => i.value);
  const out: string[] = [];
  out.push(
    'IP POOLS',
    renderTable(
      ['NAME', 'CIDR', 'BLOCK SIZE', 'DISABLED'],
      pools.map((p) => [p.name, p.cidr, String(p.blockSize), String(p.disabled)]),
    ),
    '',
  );
  out.push(
    'BLOCKS',
    renderTable(
      ['HOST', 'BLOCK', 'IN USE'],
      blocks
        .map((b) => [b.affinity?.replace(/^host:/, '') ?? '(none)', b.cidr, `${b.allocations.filter((a) => a !== null).length}/${b.allocations.length}`])
        .sort((a, b) => (a.join() < b.join() ? -1 : 1)),
    ),
    '',
  );
  const rows: string[][] = [];
  for (const b of blocks) {
    const cidr = parseCidr(b.cidr);
    b.allocations.forEach((a, i) => {
      if (!a) return;
      const owner = a.handle.startsWith(UNBOUND_PREFIX)
        ? 'unbound (assigned, no endpoint yet)'
        : isTunnelHandle(a.handle)
          ? `tunnel ${a.handle}`
          : `endpoint ${a.handle.slice(0, 12)}`;
      rows.push([formatAddress(cidr.family, cidr.base + BigInt(i)), a.node, b.cidr, owner]);
    });
  }
  out.push('ADDRESSES IN USE', renderTable(['ADDRESS', 'HOST', 'BLOCK', 'OWNER'], rows));
  return out.join('\n');
}
