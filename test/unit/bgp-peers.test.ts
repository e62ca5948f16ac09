/**
 * computePeerSessions: Calico's peering semantics (mesh, global / node-specific BGPPeers, peer
 * selectors configured on both ends, route reflection, precedence), as pure data.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ValidationError } from '../../plugin/lib/errors.js';
import { computePeerSessions, ipv4ToInt, isIPv4, protocolName } from '../../plugin/bgp/peers.js';
import { DEFAULT_BGP_CONFIG, type BgpInputs, type BgpNode, type BgpPeerSpec, type SelectorMatcher } from '../../plugin/bgp/types.js';

/** Enough of Calico's selector grammar for these tests: all(), k == 'v', k != 'v', has(k), joined by &&. */
const match: SelectorMatcher = (selector, labels) =>
  selector.split('&&').every((term) => {
    const t = term.trim();
    if (t === 'all()' || t === '') return true;
    let m = /^has\((\S+)\)$/.exec(t);
    if (m) return (m[1] ?? '') in labels;
    m = /^(\S+)\s*(==|!=)\s*'([^']*)'$/.exec(t);
    if (!m) throw new Error(`test matcher cannot parse ${t}`);
    const eq = labels[m[1] ?? ''] === m[3];
    return m[2] === '==' ? eq : !eq;
  });

const node = (name: string, ipv4: string, extra: Partial<BgpNode> = {}): BgpNode => ({
  name,
  ipv4,
  asNumber: 64512,
  labels: {},
  ...extra,
});

const A = node('a', '10.0.0.1');
const B = node('b', '10.0.0.2');
const C = node('c', '10.0.0.10');
const RR = node('rr', '10.0.0.5', { routeReflectorClusterId: '224.0.0.1', labels: { 'route-reflector': 'true' } });
const RR2 = node('rr2', '10.0.0.6', { routeReflectorClusterId: '224.0.0.1', labels: { 'route-reflector': 'true' } });

function inputs(self: BgpNode, nodes: BgpNode[], peers: BgpPeerSpec[] = [], mesh = true): BgpInputs {
  return {
    self,
    nodes,
    config: { ...DEFAULT_BGP_CONFIG, nodeToNodeMeshEnabled: mesh },
    peers,
    localBlocks: [],
    pools: [{ cidr: '192.168.0.0/16', disabled: false }],
  };
}

describe('computePeerSessions', () => {
  it('mesh: one session per other node, sorted by IP numerically; the lower IP dials', () => {
    const fromB = computePeerSessions(inputs(B, [C, A, B]), match);
    assert.deepEqual(fromB, [
      { protocolName: 'Mesh_10_0_0_1', peerIP: '10.0.0.1', asNumber: 64512, type: 'node-to-node mesh', routeReflectorClient: false, passive: true },
      { protocolName: 'Mesh_10_0_0_10', peerIP: '10.0.0.10', asNumber: 64512, type: 'node-to-node mesh', routeReflectorClient: false, passive: false },
    ]);
    // The other ends agree: exactly one side of every pair is passive.
    const fromA = computePeerSessions(inputs(A, [A, B, C]), match);
    const fromC = computePeerSessions(inputs(C, [A, B, C]), match);
    assert.equal(fromA.find((s) => s.peerIP === B.ipv4)?.passive, false);
    assert.equal(fromC.find((s) => s.peerIP === B.ipv4)?.passive, true);
  });

  it('mesh off and no peers: no sessions', () => {
    assert.deepEqual(computePeerSessions(inputs(A, [A, B], [], false), match), []);
  });

  it('skips self (by name and by IP) and nodes without a usable IPv4', () => {
    const twin = node('twin', '10.0.0.1');
    const noIp = node('noip', '');
    const v6 = node('v6', 'fd00::1');
    const s = computePeerSessions(inputs(A, [A, twin, noIp, v6, B]), match);
    assert.deepEqual(s.map((x) => x.peerIP), ['10.0.0.2']);
  });

  it('a global peerIP BGPPeer: one session, never passive, in the peer AS', () => {
    const tor: BgpPeerSpec = { name: 'tor', peerIP: '10.0.0.254', asNumber: 65001 };
    const s = computePeerSessions(inputs(A, [A], [tor], false), match);
    assert.deepEqual(s, [
      { protocolName: 'Global_10_0_0_254', peerIP: '10.0.0.254', asNumber: 65001, type: 'global', routeReflectorClient: false, passive: false },
    ]);
  });

  it('node and nodeSelector decide which nodes use a BGPPeer', () => {
    const peers: BgpPeerSpec[] = [
      { name: 'for-b', node: 'b', peerIP: '10.1.1.1', asNumber: 65001 },
      { name: 'racks', nodeSelector: "rack == 'r1'", peerIP: '10.1.1.2', asNumber: 65002 },
    ];
    const b = node('b', '10.0.0.2', { labels: { rack: 'r2' } });
    const a = node('a', '10.0.0.1', { labels: { rack: 'r1' } });
    assert.deepEqual(
      computePeerSessions(inputs(b, [a, b], peers, false), match).map((s) => [s.protocolName, s.type]),
      [['Node_10_1_1_1', 'node specific']],
    );
    assert.deepEqual(
      computePeerSessions(inputs(a, [a, b], peers, false), match).map((s) => [s.protocolName, s.asNumber]),
      [['Node_10_1_1_2', 65002]],
    );
  });

  it('a peerIP BGPPeer without asNumber peers in our own AS; invalid and self peer IPs are skipped', () => {
    const peers: BgpPeerSpec[] = [
      { name: 'ibgp', peerIP: '10.9.9.9' },
      { name: 'v6', peerIP: 'fd00::1', asNumber: 1 },
      { name: 'port', peerIP: '10.9.9.8:179', asNumber: 1 },
      { name: 'me', peerIP: '10.0.0.1', asNumber: 1 },
    ];
    const s = computePeerSessions(inputs(A, [A], peers, false), match);
    assert.deepEqual(s.map((x) => [x.peerIP, x.asNumber]), [['10.9.9.9', 64512]]);
  });

  it('peerSelector: the selected nodes peer with the nodes the BGPPeer applies to, configured on both ends', () => {
    const rrPeer: BgpPeerSpec = { name: 'to-rr', peerSelector: "route-reflector == 'true'" };
    const nodes = [A, B, RR];
    const a = computePeerSessions(inputs(A, nodes, [rrPeer], false), match);
    assert.deepEqual(a, [
      { protocolName: 'Global_10_0_0_5', peerIP: '10.0.0.5', asNumber: 64512, type: 'global', routeReflectorClient: false, passive: false },
    ]);
    const rr = computePeerSessions(inputs(RR, nodes, [rrPeer], false), match);
    assert.deepEqual(rr, [
      { protocolName: 'Global_10_0_0_1', peerIP: '10.0.0.1', asNumber: 64512, type: 'global', routeReflectorClient: true, passive: true },
      { protocolName: 'Global_10_0_0_2', peerIP: '10.0.0.2', asNumber: 64512, type: 'global', routeReflectorClient: true, passive: true },
    ]);
  });

  it('route reflectors of the same cluster peer as plain iBGP; another cluster is a client', () => {
    const rrPeer: BgpPeerSpec = { name: 'to-rr', peerSelector: "route-reflector == 'true'" };
    const other = node('rr3', '10.0.0.7', { routeReflectorClusterId: '224.0.0.2', labels: { 'route-reflector': 'true' } });
    const s = computePeerSessions(inputs(RR, [A, RR, RR2, other], [rrPeer], false), match);
    assert.deepEqual(
      s.map((x) => [x.peerIP, x.routeReflectorClient]),
      [
        ['10.0.0.1', true],
        ['10.0.0.6', false],
        ['10.0.0.7', true],
      ],
    );
  });

  it('an eBGP neighbour is never a route reflector client', () => {
    const ebgp = node('far', '10.0.0.9', { asNumber: 65009 });
    const s = computePeerSessions(inputs(RR, [A, RR, ebgp]), match);
    assert.deepEqual(
      s.map((x) => [x.peerIP, x.routeReflectorClient]),
      [
        ['10.0.0.1', true],
        ['10.0.0.9', false],
      ],
    );
  });

  it('a mesh session between a reflector and a non-reflector is a client session on the reflector', () => {
    const s = computePeerSessions(inputs(RR, [A, RR, RR2]), match);
    assert.deepEqual(
      s.map((x) => [x.protocolName, x.routeReflectorClient]),
      [
        ['Mesh_10_0_0_1', true],
        ['Mesh_10_0_0_6', false],
      ],
    );
  });

  it('node-specific peerSelector: only the named node and the selected nodes get the sessions', () => {
    const spec: BgpPeerSpec = { name: 'a-to-c', node: 'a', peerSelector: "name == 'c'" };
    const c = node('c', '10.0.0.10', { labels: { name: 'c' } });
    const nodes = [A, B, c];
    assert.deepEqual(computePeerSessions(inputs(A, nodes, [spec], false), match).map((s) => s.protocolName), ['Node_10_0_0_10']);
    assert.deepEqual(computePeerSessions(inputs(c, nodes, [spec], false), match).map((s) => s.protocolName), ['Node_10_0_0_1']);
    assert.deepEqual(computePeerSessions(inputs(B, nodes, [spec], false), match), []);
  });

  it('one session per IP: node-specific beats global beats mesh; equal kinds, first BGPPeer by name', () => {
    const peers: BgpPeerSpec[] = [
      { name: 'z-global', peerIP: '10.0.0.2', asNumber: 65002 },
      { name: 'a-global', peerIP: '10.0.0.2', asNumber: 65001 },
      { name: 'node', node: 'a', peerIP: '10.0.0.10', asNumber: 65010 },
      { name: 'all-nodes', peerSelector: 'all()' },
    ];
    const s = computePeerSessions(inputs(A, [A, B, C], peers), match);
    assert.deepEqual(
      s.map((x) => [x.protocolName, x.asNumber, x.type]),
      [
        ['Global_10_0_0_2', 65001, 'global'],
        ['Node_10_0_0_10', 65010, 'node specific'],
      ],
    );
  });

  it('uses each node AS (eBGP between nodes) and falls back to the cluster AS when a node has none', () => {
    const b = node('b', '10.0.0.2', { asNumber: 65100 });
    const a = node('a', '10.0.0.1', { asNumber: 0 });
    const s = computePeerSessions(inputs(a, [a, b]), match);
    assert.equal(s[0]?.asNumber, 65100);
    const back = computePeerSessions(inputs(b, [a, b]), match);
    assert.equal(back[0]?.asNumber, DEFAULT_BGP_CONFIG.asNumber);
  });

  it('rejects a self without an IPv4 address (it is the router ID)', () => {
    assert.throws(() => computePeerSessions(inputs(node('x', 'nope'), []), match), ValidationError);
  });

  it('helpers', () => {
    assert.equal(ipv4ToInt('10.0.0.10'), 167772170);
    assert.equal(ipv4ToInt('255.255.255.255'), 4294967295);
    assert.ok(isIPv4('1.2.3.4'));
    assert.ok(!isIPv4('01.2.3.4'));
    assert.ok(!isIPv4('1.2.3.4/32'));
    assert.ok(!isIPv4('256.1.1.1'));
    assert.equal(protocolName('Mesh', '10.0.0.2'), 'Mesh_10_0_0_2');
  });
});
