/**
 * Which BGP sessions this node should have: a pure function of the cluster's nodes, BGPPeers and the
 * BGPConfiguration (Calico's semantics), rendered into BIRD protocols by render.ts.
 *
 * - Node-to-node mesh (config.nodeToNodeMeshEnabled): one session per other node. Only one side of
 *   each pair dials — the node with the numerically lower IPv4 — the other has `passive on`, so the
 *   two sides never race (no connection collisions, no flap when both restart at once).
 * - A BGPPeer applies to this node if `node` names it, or `nodeSelector` matches its labels, or
 *   neither is set (a global peer).
 *   - `peerIP` + `asNumber`: one session to that (usually external) router. Never passive.
 *   - `peerSelector`: sessions to every other calico-ts node whose labels match. As in Calico, such a
 *     peering is configured on both ends: a node matched by `peerSelector` also gets sessions to every
 *     node the BGPPeer applies to. That is what makes `{peerSelector: "route-reflector == 'true'"}`
 *     work with the mesh off: the clients dial the reflectors and the reflectors accept the clients.
 *     Both ends are calico-ts, so the mesh's "lower IPv4 dials" rule applies to these too.
 * - Route reflection: if this node has a routeReflectorClusterId and the peer is a calico-ts node
 *   in our AS without one (or with a different one), the peer is our client (`rr client`).
 *   Reflectors of the same cluster peer as ordinary iBGP neighbours; eBGP peers are never clients.
 * - One session per peer IP. Precedence when several sources name the same IP: a node-specific
 *   BGPPeer beats a global BGPPeer, which beats the mesh (explicit configuration overrides the mesh
 *   entry for the same IP); among BGPPeers of the same kind the first by name wins.
 * - Self is never a peer. Nodes and peers without a valid IPv4 are skipped (IPv6 routes ride the IPv4 sessions: render.ts).
 * - A `peerIP` BGPPeer without `asNumber` peers in this node's own AS (iBGP).
 *
 * The result is sorted by peer IP (numerically): rendering it is deterministic.
 */
import { ValidationError } from '../lib/errors.js';
import type { BgpInputs, BgpNode, PeerSession, PeerType, SelectorMatcher } from './types.js';

const IPV4_RE = /^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}$/;

/** True for a dotted-quad IPv4 address in canonical form (no leading zeros, no port, no prefix). */
export function isIPv4(text: unknown): text is string {
  return typeof text === 'string' && IPV4_RE.test(text);
}

/** The address as an unsigned 32-bit integer; throws ValidationError if it is not an IPv4 address. */
export function ipv4ToInt(text: string, field = 'ipv4'): number {
  if (!isIPv4(text)) throw new ValidationError(field, `${JSON.stringify(text)} is not an IPv4 address`);
  return text.split('.').reduce((acc, octet) => acc * 256 + Number(octet), 0);
}

/** BIRD protocol name for a session: `<Prefix>_10_0_0_2`. */
export function protocolName(prefix: 'Mesh' | 'Global' | 'Node', ip: string): string {
  return `${prefix}_${ip.replaceAll('.', '_')}`;
}

const RANK: Record<PeerType, number> = { 'node-to-node mesh': 0, global: 1, 'node specific': 2 };
const PREFIX: Record<PeerType, 'Mesh' | 'Global' | 'Node'> = {
  'node-to-node mesh': 'Mesh',
  global: 'Global',
  'node specific': 'Node',
};

export function computePeerSessions(inputs: BgpInputs, match: SelectorMatcher): PeerSession[] {
  const self = inputs.self;
  const selfIp = ipv4ToInt(self.ipv4, `node ${self.name}: ipv4`);
  const localAs = self.asNumber || inputs.config.asNumber;
  const selfCluster = self.routeReflectorClusterId ?? '';

  // Other calico-ts nodes with a usable address, in address order.
  const others = inputs.nodes
    .filter((n) => n.name !== self.name && isIPv4(n.ipv4) && n.ipv4 !== self.ipv4)
    .sort((a, b) => ipv4ToInt(a.ipv4) - ipv4ToInt(b.ipv4) || a.name.localeCompare(b.name));
  const nodeByIp = new Map<string, BgpNode>();
  for (const n of others) if (!nodeByIp.has(n.ipv4)) nodeByIp.set(n.ipv4, n);

  // Route reflection is an iBGP thing: BIRD refuses `rr client` on an eBGP session.
  const isClient = (peer: BgpNode | undefined): boolean =>
    selfCluster !== '' &&
    peer !== undefined &&
    (peer.routeReflectorClusterId ?? '') !== selfCluster &&
    (peer.asNumber || inputs.config.asNumber) === localAs;

  const chosen = new Map<string, PeerSession>();
  const offer = (s: PeerSession): void => {
    const prev = chosen.get(s.peerIP);
    if (!prev || RANK[s.type] > RANK[prev.type]) chosen.set(s.peerIP, s);
  };
  const nodeSession = (peer: BgpNode, type: PeerType): PeerSession => ({
    protocolName: protocolName(PREFIX[type], peer.ipv4),
    peerIP: peer.ipv4,
    asNumber: peer.asNumber || inputs.config.asNumber,
    type,
    routeReflectorClient: isClient(peer),
    passive: selfIp > ipv4ToInt(peer.ipv4),
  });

  if (inputs.config.nodeToNodeMeshEnabled) {
    for (const peer of others) offer(nodeSession(peer, 'node-to-node mesh'));
  }

  const specs = [...inputs.peers].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  for (const spec of specs) {
    const type: PeerType = spec.node || spec.nodeSelector ? 'node specific' : 'global';
    const appliesTo = (n: BgpNode): boolean =>
      (!spec.node && !spec.nodeSelector) ||
      (!!spec.node && spec.node === n.name) ||
      (!!spec.nodeSelector && match(spec.nodeSelector, n.labels));

    if (spec.peerSelector) {
      const selector = spec.peerSelector;
      if (appliesTo(self)) {
        for (const peer of others) if (match(selector, peer.labels)) offer(nodeSession(peer, type));
      }
      // The other end of the same peering: we are one of the selected peers.
      if (match(selector, self.labels)) {
        for (const peer of others) if (appliesTo(peer)) offer(nodeSession(peer, type));
      }
    } else if (spec.peerIP !== undefined) {
      if (!appliesTo(self) || !isIPv4(spec.peerIP) || spec.peerIP === self.ipv4) continue;
      offer({
        protocolName: protocolName(PREFIX[type], spec.peerIP),
        peerIP: spec.peerIP,
        asNumber: spec.asNumber ?? localAs,
        type,
        routeReflectorClient: isClient(nodeByIp.get(spec.peerIP)),
        passive: false,
      });
    }
  }

  return [...chosen.values()].sort((a, b) => ipv4ToInt(a.peerIP) - ipv4ToInt(b.peerIP));
}
