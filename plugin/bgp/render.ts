/**
 * BIRD 2 configuration for one node: a pure function of the BGP inputs and the sessions
 * (peers.ts). Same inputs, same text, byte for byte — the supervisor compares texts to decide
 * whether anything changed, so everything is sorted and nothing depends on time or order of arrival.
 *
 * Shape of the result (every construct checked with `bird -p` of BIRD 2.0.12):
 * - `router id` = the node's IPv4; `log stderr` with the classes for logSeverityScreen (the
 *   supervisor forwards BIRD's stderr into our log); `timeformat protocol iso long` so `show
 *   protocols` has one unambiguous "Since" format.
 * - `CALICO_POOLS`: a prefix set of the enabled IPv4 pools, each as `<pool>+` (the pool and
 *   everything inside it: blocks and borrowed /32s). Disabled pools are left out entirely: their
 *   routes are neither exported nor imported.
 * - `protocol static calico_blocks`: one `route <block> blackhole;` per local block. That is what
 *   we announce; the blackhole never reaches the kernel from BIRD (the dataplane owns that route).
 * - `protocol kernel calico_kernel`: import none (the kernel's routes are not ours to announce);
 *   export only BGP-learned routes inside the pools (never static blackholes, never device routes).
 *   They appear in the kernel as `proto bird`. BIRD removes stale `proto bird` routes on start.
 *   Pools with vxlanMode Always/CrossSubnet are rejected there: the node routes them from etcd.
 * - `protocol device` (interfaces, for `direct` next-hop resolution), scanning every second: BIRD
 *   2.0.12's main loop polls with a 3 s timeout when idle, and the first UPDATE after a session
 *   comes up was measured waiting for that wake-up (established → UPDATE: 3.0 s); any 1 s timer
 *   bounds it (measured 0.5–0.7 s).
 * - `template bgp calico_peer`: local address/AS (and port when listenPort is not 179), `direct`
 *   (iBGP defaults to multihop, whose recursive next-hop lookup leaves routes `unreachable`
 *   without an IGP; `direct` resolves the next hop on the shared link — BIRD 2 rejects
 *   `gateway direct` with multihop), short connect/error timers so a restarted BIRD is back in
 *   about a second, pool-only import and export filters.
 * - IPIP (pools with ipipMode Always/CrossSubnet, when this node's tunl0 is up): the import filter turns
 *   their routes into `via <BGP next hop> dev tunl0 onlink`. BIRD 2 has no krt_tunnel; the three
 *   assignments must come in this order (`onlink`, then `ifname`, then `gw`: setting gw first fails
 *   next-hop resolution on tunl0). CrossSubnet: only when the next hop lies outside `localSubnet`. The export filter also passes routes
 *   learned from other peers: a route reflector must re-advertise them (plain iBGP peers do not
 *   re-advertise iBGP routes anyway — BGP's own rule).
 * - one `protocol bgp <name> from calico_peer` per session: `neighbor <ip> [port N] as <asn>`
 *   (port N = listenPort for calico-ts nodes, which all listen there; 179 for external routers),
 *   `passive on` for the side that waits, `rr client` + `rr cluster id` where we reflect (iBGP
 *   only: BIRD refuses "Only internal neighbor can be RR client").
 * - Floating IPs (IPv4): `CALICO_FLOATING_IPS` (every node's, each a /32) is accepted by the three filters
 *   like a pool; this node's own ones are announced as `blackhole` static routes beside its blocks
 *   (the nat table DNATs them before routing; the blackhole never reaches the kernel).
 *
 * IPv6, when this node has an IPv6 address and the cluster an enabled IPv6 pool: an `ipv6` channel on the
 * same (IPv4) sessions (MP-BGP), with `next hop address <node IPv6>` (an IPv4 session has no IPv6 address
 * of its own to put there; peers on the same link resolve it directly), `CALICO_POOLS6` and filters of its
 * own, `protocol static calico_blocks6` (the local IPv6 blocks as blackholes) and `protocol kernel
 * calico_kernel6` (BGP-learned IPv6 routes inside the pools, `proto bird`). Without both, nothing IPv6 is
 * rendered (and the text is what it was before IPv6 existed).
 */
import { ValidationError } from '../lib/errors.js';
import { formatCidr, parseAddress, parseCidr, type Cidr } from '../lib/cidr.js';
import { ipv4ToInt, isIPv4 } from './peers.js';
import type { BgpInputs, PeerSession } from './types.js';

export interface RenderOptions {
  /** BIRD's control socket; BIRD 2.0 takes it on the command line (-s), so it is only noted in the header. */
  controlSocket?: string;
}

/** BIRD log classes for Calico's logSeverityScreen names (case-insensitive; unknown = Info). */
export function birdLogClasses(severity: string): string {
  switch (severity.trim().toLowerCase()) {
    case 'debug':
      return 'all';
    case 'warning':
    case 'warn':
      return '{ warning, error, auth, fatal, bug }';
    case 'error':
      return '{ error, fatal, bug }';
    case 'fatal':
    case 'panic':
      return '{ fatal, bug }';
    default:
      return '{ info, remote, warning, error, auth, fatal, bug }';
  }
}

interface V4Cidr {
  base: number;
  prefix: number;
  text: string;
}

/** Strict IPv4 CIDR (host bits cleared), or null for anything that is not IPv4 (e.g. an IPv6 pool). */
function v4Cidr(text: string, field: string): V4Cidr | null {
  const m = /^([^/]+)\/(\d{1,3})$/.exec(text.trim());
  if (!m || m[1] === undefined || m[2] === undefined) {
    throw new ValidationError(field, `${JSON.stringify(text)} is not a CIDR (expected e.g. 192.168.0.0/16)`);
  }
  if (m[1].includes(':')) return null;
  const addr = ipv4ToInt(m[1], field);
  const prefix = Number(m[2]);
  if (prefix > 32) throw new ValidationError(field, `${JSON.stringify(text)}: prefix length must be at most 32`);
  const mask = prefix === 0 ? 0 : (0xffffffff << (32 - prefix)) >>> 0;
  const base = (addr & mask) >>> 0;
  const ip = [24, 16, 8, 0].map((s) => (base >>> s) & 255).join('.');
  return { base, prefix, text: `${ip}/${prefix}` };
}

/** The IPv6 CIDRs among `texts` (host bits cleared, RFC 5952), sorted numerically and deduplicated. */
function v6Cidrs(texts: string[], field: string): string[] {
  const out = new Map<string, Cidr>();
  for (const t of texts) {
    if (!t.includes(':')) continue;
    const c = parseCidr(t, field);
    out.set(formatCidr(c), c);
  }
  return [...out.entries()].sort(([, a], [, b]) => (a.base < b.base ? -1 : a.base > b.base ? 1 : a.prefix - b.prefix)).map(([text]) => text);
}

function sortedUnique(cidrs: V4Cidr[]): V4Cidr[] {
  const seen = new Set<string>();
  return cidrs
    .sort((a, b) => a.base - b.base || a.prefix - b.prefix)
    .filter((c) => (seen.has(c.text) ? false : (seen.add(c.text), true)));
}

function checkAs(asn: number, field: string): number {
  if (!Number.isInteger(asn) || asn < 1 || asn > 4294967295) {
    throw new ValidationError(field, `${JSON.stringify(asn)} is not an AS number (1-4294967295)`);
  }
  return asn;
}

/** Calico's routeReflectorClusterID is IPv4-shaped; BIRD also takes a plain number. */
function checkClusterId(id: string): string {
  if (isIPv4(id) || /^[1-9]\d{0,9}$/.test(id)) return id;
  throw new ValidationError('routeReflectorClusterID', `${JSON.stringify(id)} must be an IPv4-style ID such as 224.0.0.1`);
}

/** Comment text: one line, printable ASCII, no way to end the comment early. */
function commentSafe(text: string): string {
  return text.replace(/[^\x20-\x7e]/g, '?');
}

export function renderBirdConfig(inputs: BgpInputs, sessions: PeerSession[], opts: RenderOptions = {}): string {
  const self = inputs.self;
  const routerId = self.ipv4;
  ipv4ToInt(routerId, `node ${self.name}: ipv4`);
  const localAs = checkAs(self.asNumber || inputs.config.asNumber, 'asNumber');
  const port = inputs.config.listenPort || 179;
  if (!Number.isInteger(port) || port < 1 || port > 65535) {
    throw new ValidationError('listenPort', `${JSON.stringify(port)} is not a TCP port (1-65535)`);
  }
  const clusterId = self.routeReflectorClusterId ? checkClusterId(self.routeReflectorClusterId) : '';

  const pools = sortedUnique(
    inputs.pools
      .filter((p) => !p.disabled)
      .map((p) => v4Cidr(p.cidr, 'pool cidr'))
      .filter((c): c is V4Cidr => c !== null),
  );
  // VXLAN pools (Always and CrossSubnet) are routed by the node from etcd (calc/overlay.ts): BIRD still
  // announces their blocks but puts none of their routes into the kernel.
  const vxlanPools = sortedUnique(
    inputs.pools
      .filter((p) => !p.disabled && (p.vxlanMode ?? 'Never') !== 'Never')
      .map((p) => v4Cidr(p.cidr, 'pool cidr'))
      .filter((c): c is V4Cidr => c !== null),
  );
  const blocks = sortedUnique(inputs.localBlocks.map((b) => v4Cidr(b, 'block')).filter((c): c is V4Cidr => c !== null));
  const fip = (ips: readonly string[]): V4Cidr[] => sortedUnique(ips.map((ip) => v4Cidr(`${ip}/32`, 'floating IP')).filter((c): c is V4Cidr => c !== null));
  const allFloating = fip(inputs.floatingIPs?.all ?? []);
  const localFloating = fip(inputs.floatingIPs?.local ?? []);
  /** `if net ~ CALICO_FLOATING_IPS then accept;` in each filter, when there are floating IPs. */
  const acceptFloating = (): void => {
    if (allFloating.length > 0) line('  if net ~ CALICO_FLOATING_IPS then accept;');
  };
  const calicoNodeIps = new Set(inputs.nodes.map((n) => n.ipv4));
  const pools6 = v6Cidrs(inputs.pools.filter((p) => !p.disabled).map((p) => p.cidr), 'pool cidr');
  const nextHop6 = self.ipv6 && pools6.length > 0 ? self.ipv6 : undefined;
  if (nextHop6 !== undefined && parseAddress(nextHop6, `node ${self.name}: ipv6`).family !== 6) {
    throw new ValidationError(`node ${self.name}: ipv6`, `${JSON.stringify(nextHop6)} is not an IPv6 address`);
  }
  const ipipPools = (mode: 'Always' | 'CrossSubnet'): V4Cidr[] =>
    inputs.ipipTunnel
      ? sortedUnique(
          inputs.pools
            .filter((p) => !p.disabled && p.ipipMode === mode)
            .map((p) => v4Cidr(p.cidr, 'pool cidr'))
            .filter((c): c is V4Cidr => c !== null),
        )
      : [];
  const ipipAlways = ipipPools('Always');
  const localSubnet = inputs.localSubnet ? v4Cidr(inputs.localSubnet, 'localSubnet') : null;
  // CrossSubnet without a known local subnet: every next hop counts as remote (tunnel, as Always).
  const ipipCrossSubnet = ipipPools('CrossSubnet');

  const out: string[] = [];
  const line = (s = ''): void => {
    out.push(s);
  };

  line(`# Generated by calico-ts for node ${JSON.stringify(commentSafe(self.name))}. Do not edit: calico-ts`);
  line('# rewrites this file whenever the cluster changes (render, bird -p, rename, birdc configure).');
  if (opts.controlSocket) line(`# Control socket: ${commentSafe(opts.controlSocket)}`);
  line();
  line(`router id ${routerId};`);
  line(`log stderr ${birdLogClasses(inputs.config.logSeverityScreen)};`);
  line('timeformat protocol iso long;');
  if (inputs.config.logSeverityScreen.trim().toLowerCase() === 'debug') {
    line('debug protocols { states, routes, filters, interfaces, events };');
  }
  line();
  line('# Enabled IP pools: only routes inside them go to peers or into the kernel.');
  line(`define CALICO_POOLS = [ ${pools.map((p) => `${p.text}+`).join(', ')} ];`);
  if (allFloating.length > 0) line(`define CALICO_FLOATING_IPS = [ ${allFloating.map((c) => c.text).join(', ')} ];`);
  line();
  const ipipRoute = '{ onlink = true; ifname = "tunl0"; gw = bgp_next_hop; }';
  if (ipipAlways.length > 0 || ipipCrossSubnet.length > 0) {
    line('# IPIP pools: their routes go via the remote host over tunl0 (set in this order: onlink, ifname, gw).');
    if (ipipAlways.length > 0) line(`define CALICO_IPIP_ALWAYS = [ ${ipipAlways.map((p) => `${p.text}+`).join(', ')} ];`);
    if (ipipCrossSubnet.length > 0) line(`define CALICO_IPIP_CROSS_SUBNET = [ ${ipipCrossSubnet.map((p) => `${p.text}+`).join(', ')} ];`);
    if (ipipCrossSubnet.length > 0 && localSubnet) line(`define CALICO_LOCAL_SUBNET = ${localSubnet.text};`);
    line();
  }
  line('filter calico_bgp_import {');
  if (ipipAlways.length > 0) line(`  if net ~ CALICO_IPIP_ALWAYS then ${ipipRoute}`);
  if (ipipCrossSubnet.length > 0) {
    line(`  if net ~ CALICO_IPIP_CROSS_SUBNET${localSubnet ? ' && !(bgp_next_hop ~ CALICO_LOCAL_SUBNET)' : ''} then ${ipipRoute}`);
  }
  line('  if net ~ CALICO_POOLS then accept;');
  acceptFloating();
  line('  reject;');
  line('}');
  line();
  line('# Our blocks and, on a route reflector, the routes it reflects.');
  line('filter calico_bgp_export {');
  line('  if net ~ CALICO_POOLS then accept;');
  acceptFloating();
  line('  reject;');
  line('}');
  line();
  line('# Only routes learned over BGP: never our blackholes (static) or device routes.');
  line('filter calico_kernel_export {');
  line('  if source != RTS_BGP then reject;');
  if (vxlanPools.length > 0) line(`  if net ~ [ ${vxlanPools.map((p) => `${p.text}+`).join(', ')} ] then reject; # VXLAN pools: routed by calico-ts`);
  line('  if net ~ CALICO_POOLS then accept;');
  acceptFloating();
  line('  reject;');
  line('}');
  line();
  line('# scan time 1: BIRD 2.0 sleeps up to 3 s when idle, and the first UPDATE of a new session can');
  line('# wait for that wake-up; a 1 s timer bounds it (one link dump per second).');
  line('protocol device {');
  line('  scan time 1;');
  line('}');
  line();
  line('# Blocks affine to this node, announced to peers.');
  line('protocol static calico_blocks {');
  line('  ipv4;');
  for (const b of blocks) line(`  route ${b.text} blackhole;`);
  for (const f of localFloating) line(`  route ${f.text} blackhole; # floating IP`);
  line('}');
  line();
  line('protocol kernel calico_kernel {');
  line('  scan time 10;');
  line('  ipv4 {');
  line('    import none;');
  line('    export filter calico_kernel_export;');
  line('  };');
  line('}');
  line();
  if (nextHop6 !== undefined) {
    const blocks6 = v6Cidrs(inputs.localBlocks, 'block');
    line('# IPv6: the same policy for IPv6 pools and blocks, on an ipv6 channel of the same sessions.');
    line(`define CALICO_POOLS6 = [ ${pools6.map((p) => `${p}+`).join(', ')} ];`);
    line();
    for (const [name, head] of [
      ['calico_bgp_import6', []],
      ['calico_bgp_export6', []],
      ['calico_kernel_export6', ['  if source != RTS_BGP then reject;']],
    ] as const) {
      line(`filter ${name} {`);
      for (const h of head) line(h);
      line('  if net ~ CALICO_POOLS6 then accept;');
      line('  reject;');
      line('}');
      line();
    }
    line('protocol static calico_blocks6 {');
    line('  ipv6;');
    for (const b of blocks6) line(`  route ${b} blackhole;`);
    line('}');
    line();
    line('protocol kernel calico_kernel6 {');
    line('  scan time 10;');
    line('  ipv6 {');
    line('    import none;');
    line('    export filter calico_kernel_export6;');
    line('  };');
    line('}');
    line();
  }
  line('template bgp calico_peer {');
  line(`  local ${routerId}${port === 179 ? '' : ` port ${port}`} as ${localAs};`);
  line('  direct;');
  line('  connect delay time 1;');
  line('  connect retry time 2;');
  line('  error wait time 1,30;');
  line('  ipv4 {');
  line('    import filter calico_bgp_import;');
  line('    export filter calico_bgp_export;');
  line('  };');
  if (nextHop6 !== undefined) {
    line('  ipv6 {');
    line(`    next hop address ${nextHop6};`);
    line('    import filter calico_bgp_import6;');
    line('    export filter calico_bgp_export6;');
    line('  };');
  }
  line('}');

  const seen = new Set<string>();
  const ordered = [...sessions].sort((a, b) => ipv4ToInt(a.peerIP, 'peerIP') - ipv4ToInt(b.peerIP, 'peerIP'));
  for (const s of ordered) {
    if (!/^[A-Za-z][A-Za-z0-9_]*$/.test(s.protocolName)) {
      throw new ValidationError('protocolName', `${JSON.stringify(s.protocolName)} is not a BIRD protocol name`);
    }
    if (seen.has(s.protocolName)) throw new ValidationError('protocolName', `${s.protocolName} appears twice`);
    seen.add(s.protocolName);
    const asn = checkAs(s.asNumber, `peer ${s.peerIP}: asNumber`);
    const neighborPort = calicoNodeIps.has(s.peerIP) && port !== 179 ? ` port ${port}` : '';
    line();
    line(`protocol bgp ${s.protocolName} from calico_peer {`);
    line(`  description "${s.type}";`);
    line(`  neighbor ${s.peerIP}${neighborPort} as ${asn};`);
    if (s.passive) line('  passive on;');
    if (s.routeReflectorClient && asn === localAs) {
      line('  rr client;');
      if (clusterId) line(`  rr cluster id ${clusterId};`);
    }
    line('}');
  }
  line();
  return out.join('\n');
}
