/** Parsing BIRD 2's `birdc show protocols` and mapping its rows to `node status` rows. */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { InternalError } from '../../plugin/lib/errors.js';
import { MISSING_STATE, parseShowProtocols, peerStatuses } from '../../plugin/bgp/status.js';
import type { PeerSession } from '../../plugin/bgp/types.js';

// Captured from BIRD 2.0.12 (default and `timeformat protocol iso long`).
const BIRD2 = [
  'BIRD 2.0.12 ready.',
  'Name       Proto      Table      State  Since         Info',
  'device1    Device     ---        up     23:36:08.094  ',
  'calico_blocks Static     master4    up     23:36:08.094  ',
  'calico_kernel Kernel     master4    up     23:36:08.094  ',
  'Mesh_10_0_0_2 BGP        ---        up     2026-11-21 23:36:08  Established   ',
  'Global_10_0_0_254 BGP        ---        start  2026-11-21 23:36:09  Active        Socket: Connection refused',
  'Node_10_1_1_1 BGP        ---        start  2026-11-20    Connect',
  '',
].join('\n');

const BIRD1 = [
  'BIRD 1.6.8 ready.',
  'name     proto    table    state  since       info',
  'Mesh_10_0_0_2 BGP      master   up     10:00:00    Established',
].join('\n');

const session = (protocolName: string, peerIP: string, type: PeerSession['type']): PeerSession => ({
  protocolName,
  peerIP,
  asNumber: 64512,
  type,
  routeReflectorClient: false,
  passive: false,
});

describe('parseShowProtocols', () => {
  it('reads BIRD 2 rows: Since as time, date or date+time; Info with its details', () => {
    const rows = parseShowProtocols(BIRD2);
    assert.equal(rows.length, 6);
    assert.deepEqual(rows[0], { name: 'device1', proto: 'Device', table: '---', state: 'up', since: '23:36:08.094', info: '' });
    assert.deepEqual(rows[3], { name: 'Mesh_10_0_0_2', proto: 'BGP', table: '---', state: 'up', since: '2026-11-21 23:36:08', info: 'Established' });
    assert.deepEqual(rows[4], {
      name: 'Global_10_0_0_254',
      proto: 'BGP',
      table: '---',
      state: 'start',
      since: '2026-11-21 23:36:09',
      info: 'Active Socket: Connection refused',
    });
    assert.equal(rows[5]?.since, '2026-11-20');
    assert.equal(rows[5]?.info, 'Connect');
  });

  it('reads `birdc -v` output with reply codes', () => {
    const coded = [
      '0001 BIRD 2.0.12 ready.',
      '2002-Name       Proto      Table      State  Since         Info',
      '1002-device1    Device     ---        up     23:36:08.094  ',
      ' Mesh_10_0_0_2 BGP        ---        up     23:36:08.989  Established   ',
      '0000 ',
    ].join('\n');
    const rows = parseShowProtocols(coded);
    assert.deepEqual(rows.map((r) => [r.name, r.info]), [
      ['device1', ''],
      ['Mesh_10_0_0_2', 'Established'],
    ]);
  });

  it('rejects BIRD 1 output and anything without the header, quoting it', () => {
    assert.throws(() => parseShowProtocols(BIRD1), (e: unknown) => e instanceof InternalError && /BIRD 1/.test(e.message));
    assert.throws(() => parseShowProtocols('Unable to connect'), /no "Name Proto Table State Since Info" header.*Unable to connect/);
  });

  it('a header with no protocols is an empty list', () => {
    assert.deepEqual(parseShowProtocols('BIRD 2.0.12 ready.\nName       Proto      Table      State  Since         Info\n'), []);
  });
});

describe('peerStatuses', () => {
  it('one row per session, in session order, matched by protocol name', () => {
    const sessions = [
      session('Mesh_10_0_0_2', '10.0.0.2', 'node-to-node mesh'),
      session('Global_10_0_0_254', '10.0.0.254', 'global'),
      session('Node_10_9_9_9', '10.9.9.9', 'node specific'),
    ];
    assert.deepEqual(peerStatuses(parseShowProtocols(BIRD2), sessions), [
      { peerIP: '10.0.0.2', type: 'node-to-node mesh', state: 'up', since: '2026-11-21 23:36:08', info: 'Established' },
      { peerIP: '10.0.0.254', type: 'global', state: 'start', since: '2026-11-21 23:36:09', info: 'Active Socket: Connection refused' },
      { peerIP: '10.9.9.9', type: 'node specific', state: MISSING_STATE, since: '', info: 'not in the running BIRD configuration' },
    ]);
  });
});
