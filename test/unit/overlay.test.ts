/**
 * calc/overlay (desired VXLAN/CrossSubnet state from etcd values) and dataplane/overlay's pure parts
 * (diff against the kernel, argv, parsers). The executor runs against the kernel in
 * test/kernel/overlay.test.ts.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  crossSubnetProblems,
  desiredOverlay,
  vtepMac,
  workloadMtu,
  type DesiredOverlay,
} from '../../plugin/calc/overlay.js';
import type { Block, IPPool, NodeRecord } from '../../plugin/datastore/model.js';
import {
  overlayCommand,
  parseFdb,
  parseNeighbours,
  parseOverlayRoutes,
  parseUnderlay,
  parseVtep,
  planOverlay,
  type KernelOverlay,
} from '../../plugin/dataplane/overlay.js';

const pool = (over: Partial<IPPool> = {}): IPPool => ({
  name: 'p1',
  cidr: '10.244.0.0/16',
  blockSize: 26,
  ipipMode: 'Never',
  vxlanMode: 'Always',
  natOutgoing: false,
  disabled: false,
  nodeSelector: 'all()',
  ...over,
});
const node = (name: string, ip: string, tunnel?: string, labels: Record<string, string> = {}): NodeRecord => ({
  name,
  ipv4Address: ip,
  asNumber: null,
  routeReflectorClusterId: null,
  labels,
  startedAt: 0,
  ...(tunnel ? { ipv4VXLANTunnelAddr: tunnel, vxlanTunnelMACAddr: vtepMac(name) } : {}),
});
const block = (cidr: string, owner: string | null): Block => ({ cidr, affinity: owner ? `host:${owner}` : null, allocations: [] });

// a and b share 10.0.0.0/24; c is on 10.0.1.0/24.
const nodes = [node('a', '10.0.0.11/24', '10.244.0.0'), node('b', '10.0.0.12/24', '10.244.1.0'), node('c', '10.0.1.11/24', '10.244.2.0')];
const blocks = [block('10.244.0.0/26', 'a'), block('10.244.1.0/26', 'b'), block('10.244.2.0/26', 'c'), block('10.244.3.0/26', null)];

describe('vtepMac', () => {
  it('is stable per node, unicast and locally administered, and differs between nodes', () => {
    assert.equal(vtepMac('a'), vtepMac('a'));
    assert.notEqual(vtepMac('a'), vtepMac('b'));
    const first = parseInt(vtepMac('a').slice(0, 2), 16);
    assert.equal(first & 1, 0);
    assert.equal(first & 2, 2);
    assert.match(vtepMac('x'), /^([0-9a-f]{2}:){5}[0-9a-f]{2}$/);
  });
});

describe('desiredOverlay', () => {
  it('Always: a VTEP, and every remote block via its VTEP with neighbour and FDB entries', () => {
    const d = desiredOverlay({ node: 'a', nodes, pools: [pool()], blocks, vxlanMtu: 0 });
    assert.deepEqual(d.vtep, { vni: 4096, port: 4789, localIp: '10.0.0.11', mac: vtepMac('a'), address: '10.244.0.0/32', mtu: 0 });
    assert.deepEqual(
      d.routes.map((r) => [r.dst, r.via, r.encap]),
      [
        ['10.244.1.0/26', '10.244.1.0', 'vxlan'],
        ['10.244.2.0/26', '10.244.2.0', 'vxlan'],
      ],
    );
    assert.deepEqual(d.neighbours, [
      { ip: '10.244.1.0', mac: vtepMac('b') },
      { ip: '10.244.2.0', mac: vtepMac('c') },
    ]);
    assert.deepEqual(new Set(d.fdb.map((f) => `${f.mac}>${f.dst}`)), new Set([`${vtepMac('b')}>10.0.0.12`, `${vtepMac('c')}>10.0.1.11`]));
    assert.deepEqual(d.problems, []);
  });

  it('CrossSubnet: plain route to the node on our subnet, VXLAN to the other', () => {
    const d = desiredOverlay({ node: 'a', nodes, pools: [pool({ vxlanMode: 'CrossSubnet' })], blocks, vxlanMtu: 1400 });
    assert.deepEqual(
      d.routes.map((r) => [r.dst, r.via, r.encap]),
      [
        ['10.244.1.0/26', '10.0.0.12', 'none'],
        ['10.244.2.0/26', '10.244.2.0', 'vxlan'],
      ],
    );
    assert.deepEqual(d.neighbours.map((n) => n.ip), ['10.244.2.0']);
    assert.equal(d.vtep?.mtu, 1400);
  });

  it('Never, disabled or IPv6 pools: nothing', () => {
    for (const p of [pool({ vxlanMode: 'Never' }), pool({ disabled: true }), pool({ cidr: 'fd00::/48' })]) {
      assert.deepEqual(desiredOverlay({ node: 'a', nodes, pools: [p], blocks, vxlanMtu: 0 }), { vtep: null, neighbours: [], fdb: [], routes: [], problems: [] });
    }
  });

  it('blocks outside VXLAN pools are left to BGP', () => {
    const d = desiredOverlay({ node: 'a', nodes, pools: [pool({ cidr: '10.244.0.0/23' }), pool({ name: 'p2', cidr: '10.244.2.0/23', vxlanMode: 'Never' })], blocks, vxlanMtu: 0 });
    assert.deepEqual(d.routes.map((r) => r.dst), ['10.244.1.0/26']);
  });

  it('a node the pool does not select gets no VTEP and says why its blocks are not routed', () => {
    const d = desiredOverlay({ node: 'a', nodes, pools: [pool({ nodeSelector: 'vxlan == "yes"' })], blocks, vxlanMtu: 0 });
    assert.equal(d.vtep, null);
    assert.deepEqual(d.routes, []);
    assert.match(d.problems.join('\n'), /node b \(this node has no VXLAN tunnel\)/);
  });

  it('a remote node without a tunnel yet is reported, not half-programmed', () => {
    const d = desiredOverlay({ node: 'a', nodes: [nodes[0]!, node('b', '10.0.0.12/24')], pools: [pool()], blocks, vxlanMtu: 0 });
    assert.deepEqual(d.routes, []);
    assert.deepEqual(d.neighbours, []);
    assert.match(d.problems.join('\n'), /node b \(it has no VXLAN tunnel yet\)/);
  });

  it('waits for its own tunnel address', () => {
    const d = desiredOverlay({ node: 'a', nodes: [node('a', '10.0.0.11/24'), nodes[1]!], pools: [pool()], blocks, vxlanMtu: 0 });
    assert.equal(d.vtep, null);
    assert.match(d.problems.join('\n'), /waiting for a tunnel address/);
  });
});

describe('crossSubnetProblems', () => {
  it('explains why a node on another subnet is unreachable with vxlanMode Never', () => {
    const [p, ...rest] = crossSubnetProblems('a', nodes, [pool({ vxlanMode: 'Never' })]);
    assert.equal(rest.length, 0);
    assert.match(p ?? '', /c \(10\.0\.1\.11\/24\) are not on this node's subnet 10\.0\.0\.11\/24/);
    assert.match(p ?? '', /vxlanMode: CrossSubnet \(or Always\)/);
  });
  it('is silent when the pool uses VXLAN or everybody shares the subnet', () => {
    assert.deepEqual(crossSubnetProblems('a', nodes, [pool({ vxlanMode: 'CrossSubnet' })]), []);
    assert.deepEqual(crossSubnetProblems('a', nodes.slice(0, 2), [pool({ vxlanMode: 'Never' })]), []);
  });
});

describe('workloadMtu', () => {
  it('subtracts the encapsulation the pool uses', () => {
    assert.equal(workloadMtu(1500, pool({ vxlanMode: 'Always' })), 1450);
    assert.equal(workloadMtu(1500, pool({ vxlanMode: 'CrossSubnet' })), 1450);
    assert.equal(workloadMtu(1500, pool({ vxlanMode: 'Never', ipipMode: 'Always' })), 1480);
    assert.equal(workloadMtu(9000, pool({ vxlanMode: 'Never' })), 9000);
    assert.equal(workloadMtu(0, pool()), 0);
  });
});

// ---- dataplane/overlay: the diff -------------------------------------------------------------

const want: DesiredOverlay = desiredOverlay({ node: 'a', nodes, pools: [pool({ vxlanMode: 'CrossSubnet' })], blocks, vxlanMtu: 0 });
const underlay = { dev: 'eth0', mtu: 1500 };
const inSync: KernelOverlay = {
  vtep: {
    kind: 'vxlan',
    vni: 4096,
    local: '10.0.0.11',
    port: 4789,
    underlay: 'eth0',
    learning: false,
    mac: vtepMac('a'),
    mtu: 1450,
    up: true,
    addresses: ['10.244.0.0/32'],
  },
  neighbours: [{ ip: '10.244.2.0', mac: vtepMac('c'), permanent: true }],
  fdb: [
    { mac: vtepMac('c'), dst: '10.0.1.11', permanent: true },
    { mac: '00:00:00:00:00:00', dst: undefined, permanent: true },
  ],
  routes: [
    { dst: '10.244.1.0/26', gateway: '10.0.0.12', dev: 'eth0', onlink: false },
    { dst: '10.244.2.0/26', gateway: '10.244.2.0', dev: 'vxlan.calico', onlink: true },
  ],
  underlay,
};
const empty: KernelOverlay = { vtep: undefined, neighbours: [], fdb: [], routes: [], underlay };

describe('planOverlay', () => {
  it('from nothing: device, address, fdb, neighbour, routes', () => {
    const steps = planOverlay(empty, want);
    assert.deepEqual(
      steps.map((s) => s.op),
      ['vtep-add', 'addr-add', 'fdb-replace', 'neigh-replace', 'route-replace', 'route-replace'],
    );
    assert.deepEqual(overlayCommand(steps[0]!)?.args, [
      'link', 'add', 'name', 'vxlan.calico', 'address', vtepMac('a'), 'mtu', '1450', 'type', 'vxlan', 'id', '4096', 'local', '10.0.0.11', 'dev', 'eth0', 'dstport', '4789', 'nolearning',
    ]);
    assert.deepEqual(overlayCommand(steps[4]!)?.args, ['route', 'replace', '10.244.1.0/26', 'via', '10.0.0.12', 'proto', '80']);
    assert.deepEqual(overlayCommand(steps[5]!)?.args, ['route', 'replace', '10.244.2.0/26', 'via', '10.244.2.0', 'dev', 'vxlan.calico', 'onlink', 'proto', '80']);
  });

  it('in sync: nothing to do (twice is a no-op)', () => {
    assert.deepEqual(planOverlay(inSync, want), []);
  });

  it('a wrong VNI or learning on: the device is recreated, and everything on it re-added', () => {
    const steps = planOverlay({ ...inSync, vtep: { ...inSync.vtep!, vni: 1 } }, want);
    assert.deepEqual(steps.slice(0, 2).map((s) => s.op), ['vtep-del', 'vtep-add']);
    assert.ok(steps.some((s) => s.op === 'route-replace' && s.route.encap === 'vxlan'));
    assert.equal(planOverlay({ ...inSync, vtep: { ...inSync.vtep!, learning: true } }, want)[0]?.op, 'vtep-del');
  });

  it('MTU, MAC or down is fixed in place', () => {
    const steps = planOverlay({ ...inSync, vtep: { ...inSync.vtep!, mtu: 1500, up: false } }, want);
    assert.deepEqual(steps, [{ op: 'vtep-set', mac: vtepMac('a'), mtu: 1450, why: 'mtu 1500, down' }]);
  });

  it('stale entries and routes are removed; a mode change replaces the route', () => {
    const steps = planOverlay(
      {
        ...inSync,
        vtep: { ...inSync.vtep!, addresses: ['10.244.0.0/32', '10.244.9.9/32'] },
        neighbours: [...inSync.neighbours, { ip: '10.244.7.0', mac: '66:00:00:00:00:07', permanent: true }],
        fdb: [...inSync.fdb, { mac: '66:00:00:00:00:07', dst: '10.0.0.99', permanent: true }],
        routes: [
          { dst: '10.244.1.0/26', gateway: '10.244.1.0', dev: 'vxlan.calico', onlink: true },
          inSync.routes[1]!,
          { dst: '10.244.7.0/26', gateway: '10.244.7.0', dev: 'vxlan.calico', onlink: true },
        ],
      },
      want,
    );
    assert.deepEqual(
      steps.map((s) => s.op),
      ['addr-del', 'fdb-del', 'neigh-del', 'route-replace', 'route-del'],
    );
  });

  it('no VXLAN pool left: the device goes (with what is on it), plain routes are deleted', () => {
    const none: DesiredOverlay = { vtep: null, neighbours: [], fdb: [], routes: [], problems: [] };
    const steps = planOverlay(inSync, none);
    assert.deepEqual(steps.map((s) => s.op), ['vtep-del', 'route-del']);
    assert.deepEqual(overlayCommand(steps[1]!)?.args, ['route', 'del', '10.244.1.0/26', 'via', '10.0.0.12', 'dev', 'eth0', 'proto', '80']);
  });

  it('no device holds the node address: blocked, reported', () => {
    const steps = planOverlay({ ...empty, underlay: undefined }, want);
    assert.ok(steps.some((s) => s.op === 'blocked' && /no device holds/.test(s.why)));
    assert.ok(!steps.some((s) => s.op === 'vtep-add'));
  });
});

describe('overlay parsers', () => {
  it('read ip/bridge JSON as iproute2 prints it', () => {
    const link =
      '[{"ifindex":4,"ifname":"vxlan.calico","flags":["BROADCAST","MULTICAST","UP","LOWER_UP"],"mtu":1450,"address":"66:11:22:33:44:55","linkinfo":{"info_kind":"vxlan","info_data":{"id":4096,"local":"10.9.0.1","link":"d0","port":4789,"learning":false}}}]';
    const addr = '[{"ifname":"vxlan.calico","addr_info":[{"family":"inet","local":"10.200.0.1","prefixlen":32}]}]';
    assert.deepEqual(parseVtep(link, addr), {
      kind: 'vxlan', vni: 4096, local: '10.9.0.1', port: 4789, underlay: 'd0', learning: false, mac: '66:11:22:33:44:55', mtu: 1450, up: true, addresses: ['10.200.0.1/32'],
    });
    assert.deepEqual(parseNeighbours('[{"dst":"10.200.1.1","lladdr":"66:00:00:00:00:02","state":["PERMANENT"]}]'), [
      { ip: '10.200.1.1', mac: '66:00:00:00:00:02', permanent: true },
    ]);
    assert.deepEqual(parseFdb('[{"mac":"66:00:00:00:00:02","dst":"10.9.0.2","flags":["self"],"state":"permanent"},{"mac":"33:33:00:00:00:01","flags":[]}]'), [
      { mac: '66:00:00:00:00:02', dst: '10.9.0.2', permanent: true },
    ]);
    assert.deepEqual(
      parseOverlayRoutes(
        '[{"dst":"10.200.1.0/26","gateway":"10.200.1.1","dev":"vxlan.calico","flags":["onlink"]},{"dst":"10.201.1.0/26","gateway":"10.9.0.2","dev":"d0","flags":[]},{"dst":"10.65.0.2","dev":"cali123","scope":"link"},{"dst":"169.254.1.1","dev":"lo"}]',
      ),
      [
        { dst: '10.200.1.0/26', gateway: '10.200.1.1', dev: 'vxlan.calico', onlink: true },
        { dst: '10.201.1.0/26', gateway: '10.9.0.2', dev: 'd0', onlink: false },
      ],
    );
    assert.deepEqual(parseUnderlay('[{"ifname":"lo","mtu":65536,"addr_info":[{"local":"127.0.0.1"}]},{"ifname":"eth0","mtu":1500,"addr_info":[{"local":"10.9.0.1"}]}]', '10.9.0.1'), {
      dev: 'eth0',
      mtu: 1500,
    });
  });
});
