/**
 * The overlay executor: makes vxlan.calico, its permanent neighbour and FDB entries, and the routes to
 * remote blocks match a DesiredOverlay (calc/overlay.ts). Read the kernel, diff (planOverlay, pure),
 * apply; every step is idempotent (`replace`), so running it twice changes nothing the second time.
 *
 * DESIGN NOTE — how it recognises its own kernel objects after a restart (it keeps no state):
 *   - the link named `vxlan.calico` (kind vxlan) is ours, and so is everything on it: its addresses,
 *     neighbour entries, FDB entries and routes;
 *   - routes to remote blocks are IPv4 `proto 80` routes WITH a gateway: `via <VTEP> dev vxlan.calico
 *     onlink` or, for CrossSubnet peers on our subnet, `via <peer host IP>`. Other calico-ts routes are
 *     gateway-less (`dev cali*`, blackholes, 169.254.1.1 on lo: dataplane/linux.ts), and BIRD's routes
 *     carry `proto bird`, so nothing else is ever swept here.
 * When no VXLAN pool is left the device is deleted (its neighbours, FDB entries and routes go with it)
 * and stale plain routes are removed.
 */
import type { DesiredOverlay, OverlayRoute } from '../calc/overlay.js';
import { VXLAN_DEVICE, VXLAN_OVERHEAD } from '../calc/overlay.js';
import type { CommandRunner } from '../lib/exec.js';
import { silentLogger, type Logger } from '../lib/log.js';
import { HOST_IFACE_PREFIX, ROUTE_PROTO, parseLinks, type IpCommand } from './iproute.js';

export interface KernelVtep {
  kind: string | undefined;
  vni: number | undefined;
  local: string | undefined;
  port: number | undefined;
  underlay: string | undefined;
  learning: boolean | undefined;
  mac: string | undefined;
  mtu: number;
  up: boolean;
  addresses: string[];
}

export interface KernelOverlayRoute {
  dst: string;
  gateway: string;
  dev: string | undefined;
  onlink: boolean;
}

export interface KernelOverlay {
  vtep: KernelVtep | undefined;
  neighbours: { ip: string; mac: string | undefined; permanent: boolean }[];
  fdb: { mac: string; dst: string | undefined; permanent: boolean }[];
  /** IPv4 proto 80 routes that have a gateway (see the design note). */
  routes: KernelOverlayRoute[];
  /** The device holding the VTEP's local address, and its MTU (undefined when not found). */
  underlay: { dev: string; mtu: number } | undefined;
}

export type OverlayStep =
  | { op: 'vtep-del'; why: string }
  | { op: 'vtep-add'; vni: number; port: number; localIp: string; underlay: string; mac: string; mtu: number }
  | { op: 'vtep-set'; mac: string; mtu: number; why: string }
  | { op: 'addr-add'; address: string }
  | { op: 'addr-del'; address: string }
  | { op: 'fdb-replace'; mac: string; dst: string }
  | { op: 'fdb-del'; mac: string; dst: string | undefined }
  | { op: 'neigh-replace'; ip: string; mac: string }
  | { op: 'neigh-del'; ip: string }
  | { op: 'route-replace'; route: OverlayRoute }
  | { op: 'route-del'; route: KernelOverlayRoute }
  /** Nothing can be done: reported as a problem (e.g. the underlay device is not found). */
  | { op: 'blocked'; why: string };

const ZERO_MAC = '00:00:00:00:00:00';

/** Pure diff of the kernel against the desired overlay. */
export function planOverlay(kernel: KernelOverlay, desired: DesiredOverlay): OverlayStep[] {
  const steps: OverlayStep[] = [];
  const want = desired.vtep;
  let vtepFresh = false;
  if (!want) {
    if (kernel.vtep) steps.push({ op: 'vtep-del', why: 'no VXLAN pool selects this node' });
  } else if (!kernel.underlay) {
    if (kernel.vtep) steps.push({ op: 'vtep-del', why: `no device holds ${want.localIp}` });
    steps.push({ op: 'blocked', why: `vxlan: no device holds this node's address ${want.localIp}; no VXLAN tunnel` });
  } else {
    const mtu = want.mtu > 0 ? want.mtu : kernel.underlay.mtu - VXLAN_OVERHEAD;
    const k = kernel.vtep;
    const mismatch = !k
      ? 'missing'
      : k.kind !== 'vxlan'
        ? `it is a ${k.kind ?? 'device'}`
        : k.vni !== want.vni
          ? `vni ${k.vni}`
          : k.local !== want.localIp
            ? `local ${k.local}`
            : k.port !== want.port
              ? `port ${k.port}`
              : k.underlay !== kernel.underlay.dev
                ? `dev ${k.underlay}`
                : k.learning !== false
                  ? 'learning on'
                  : undefined;
    if (mismatch) {
      if (k) steps.push({ op: 'vtep-del', why: mismatch });
      steps.push({ op: 'vtep-add', vni: want.vni, port: want.port, localIp: want.localIp, underlay: kernel.underlay.dev, mac: want.mac, mtu });
      vtepFresh = true;
    } else if (k && (k.mac !== want.mac || k.mtu !== mtu || !k.up)) {
      const why = [k.mac !== want.mac ? `mac ${k.mac}` : '', k.mtu !== mtu ? `mtu ${k.mtu}` : '', k.up ? '' : 'down'].filter(Boolean).join(', ');
      steps.push({ op: 'vtep-set', mac: want.mac, mtu, why });
    }
    const have = vtepFresh ? [] : (k?.addresses ?? []);
    if (!have.includes(want.address)) steps.push({ op: 'addr-add', address: want.address });
    for (const a of have) if (a !== want.address) steps.push({ op: 'addr-del', address: a });

    const fdb = vtepFresh ? [] : kernel.fdb.filter((f) => f.mac !== ZERO_MAC);
    for (const f of desired.fdb) {
      if (!fdb.some((x) => x.mac === f.mac && x.dst === f.dst && x.permanent)) steps.push({ op: 'fdb-replace', ...f });
    }
    for (const x of fdb) if (!desired.fdb.some((f) => f.mac === x.mac && f.dst === x.dst)) steps.push({ op: 'fdb-del', mac: x.mac, dst: x.dst });

    const neigh = vtepFresh ? [] : kernel.neighbours;
    for (const n of desired.neighbours) {
      if (!neigh.some((x) => x.ip === n.ip && x.mac === n.mac && x.permanent)) steps.push({ op: 'neigh-replace', ...n });
    }
    for (const x of neigh) if (!desired.neighbours.some((n) => n.ip === x.ip)) steps.push({ op: 'neigh-del', ip: x.ip });
  }

  // Routes: with the device gone, its routes are gone too; plain routes are ours wherever they point.
  const vtepGone = steps.some((s) => s.op === 'vtep-del');
  const routesNow = kernel.routes.filter((r) => !(vtepGone && r.dev === VXLAN_DEVICE));
  const wanted = desired.routes.filter((r) => r.encap === 'none' || (want && kernel.underlay));
  for (const r of wanted) {
    const ok = routesNow.some(
      (k) => k.dst === r.dst && k.gateway === r.via && (r.encap === 'none' ? k.dev !== VXLAN_DEVICE : k.dev === VXLAN_DEVICE && k.onlink),
    );
    if (!ok || (r.encap === 'vxlan' && vtepFresh)) steps.push({ op: 'route-replace', route: r });
  }
  for (const k of routesNow) {
    if (!wanted.some((r) => r.dst === k.dst)) steps.push({ op: 'route-del', route: k });
  }
  return steps;
}

export function describeOverlayStep(s: OverlayStep): string {
  switch (s.op) {
    case 'vtep-del':
      return `link del ${VXLAN_DEVICE} (${s.why})`;
    case 'vtep-add':
      return `link add ${VXLAN_DEVICE} vni ${s.vni} local ${s.localIp} dev ${s.underlay} mtu ${s.mtu}`;
    case 'vtep-set':
      return `link set ${VXLAN_DEVICE} address ${s.mac} mtu ${s.mtu} up (was ${s.why})`;
    case 'addr-add':
      return `addr add ${s.address} dev ${VXLAN_DEVICE}`;
    case 'addr-del':
      return `addr del ${s.address} dev ${VXLAN_DEVICE}`;
    case 'fdb-replace':
      return `fdb ${s.mac} dst ${s.dst}`;
    case 'fdb-del':
      return `fdb del ${s.mac}`;
    case 'neigh-replace':
      return `neigh ${s.ip} lladdr ${s.mac}`;
    case 'neigh-del':
      return `neigh del ${s.ip}`;
    case 'route-replace':
      return `route ${s.route.dst} via ${s.route.via}${s.route.encap === 'vxlan' ? ` dev ${VXLAN_DEVICE} onlink` : ''}`;
    case 'route-del':
      return `route del ${s.route.dst} via ${s.route.gateway}`;
    case 'blocked':
      return s.why;
  }
}

/** ip / bridge argv for one step (without the program name); undefined for 'blocked'. */
export function overlayCommand(s: OverlayStep): { program: 'ip' | 'bridge'; args: IpCommand } | undefined {
  const dev = VXLAN_DEVICE;
  switch (s.op) {
    case 'vtep-del':
      return { program: 'ip', args: ['link', 'del', 'dev', dev] };
    case 'vtep-add':
      // nolearning: every remote MAC comes from etcd, never from flooding.
      return {
        program: 'ip',
        args: ['link', 'add', 'name', dev, 'address', s.mac, 'mtu', String(s.mtu), 'type', 'vxlan', 'id', String(s.vni), 'local', s.localIp, 'dev', s.underlay, 'dstport', String(s.port), 'nolearning'],
      };
    case 'vtep-set':
      return { program: 'ip', args: ['link', 'set', 'dev', dev, 'address', s.mac, 'mtu', String(s.mtu), 'up'] };
    case 'addr-add':
      return { program: 'ip', args: ['addr', 'replace', s.address, 'dev', dev] };
    case 'addr-del':
      return { program: 'ip', args: ['addr', 'del', s.address, 'dev', dev] };
    case 'fdb-replace':
      return { program: 'bridge', args: ['fdb', 'replace', s.mac, 'dev', dev, 'dst', s.dst, 'self', 'permanent'] };
    case 'fdb-del':
      return { program: 'bridge', args: ['fdb', 'del', s.mac, 'dev', dev, ...(s.dst ? ['dst', s.dst] : []), 'self'] };
    case 'neigh-replace':
      return { program: 'ip', args: ['neigh', 'replace', s.ip, 'lladdr', s.mac, 'dev', dev, 'nud', 'permanent'] };
    case 'neigh-del':
      return { program: 'ip', args: ['neigh', 'del', s.ip, 'dev', dev] };
    case 'route-replace':
      return {
        program: 'ip',
        args:
          s.route.encap === 'vxlan'
            ? ['route', 'replace', s.route.dst, 'via', s.route.via, 'dev', dev, 'onlink', 'proto', ROUTE_PROTO]
            : ['route', 'replace', s.route.dst, 'via', s.route.via, 'proto', ROUTE_PROTO],
      };
    case 'route-del':
      return {
        program: 'ip',
        args: ['route', 'del', s.route.dst, 'via', s.route.gateway, ...(s.route.dev ? ['dev', s.route.dev] : []), 'proto', ROUTE_PROTO],
      };
    case 'blocked':
      return undefined;
  }
}

// ---------------------------------------------------------------------------------------------------
// `ip -json` / `bridge -json` parsers

type Json = Record<string, unknown>;
const arr = (text: string): Json[] => {
  const t = text.trim();
  if (t === '') return [];
  const v: unknown = JSON.parse(t);
  return Array.isArray(v) ? v.filter((x): x is Json => typeof x === 'object' && x !== null) : [];
};
const str = (v: unknown): string | undefined => (typeof v === 'string' ? v : undefined);
const num = (v: unknown): number | undefined => (typeof v === 'number' ? v : undefined);

export function parseVtep(linkJson: string, addrJson: string): KernelVtep | undefined {
  const link = arr(linkJson)[0];
  if (!link) return undefined;
  const base = parseLinks(JSON.stringify([link]))[0];
  const info = (link.linkinfo as Json | undefined)?.info_data as Json | undefined;
  const addresses = arr(addrJson)
    .flatMap((a) => (Array.isArray(a.addr_info) ? (a.addr_info as Json[]) : []))
    .filter((i) => i.family === 'inet' && typeof i.local === 'string')
    .map((i) => `${String(i.local)}/${String(num(i.prefixlen) ?? 32)}`);
  return {
    kind: base?.kind,
    vni: num(info?.id),
    local: str(info?.local),
    port: num(info?.port),
    underlay: str(info?.link),
    learning: typeof info?.learning === 'boolean' ? info.learning : undefined,
    mac: base?.mac,
    mtu: base?.mtu ?? 0,
    up: base?.up ?? false,
    addresses,
  };
}

export function parseNeighbours(json: string): KernelOverlay['neighbours'] {
  return arr(json).flatMap((n) => {
    const ip = str(n.dst);
    if (!ip || ip.includes(':')) return [];
    const state = Array.isArray(n.state) ? n.state : [n.state];
    return [{ ip, mac: str(n.lladdr)?.toLowerCase(), permanent: state.includes('PERMANENT') }];
  });
}

export function parseFdb(json: string): KernelOverlay['fdb'] {
  return arr(json).flatMap((f) => {
    const mac = str(f.mac)?.toLowerCase();
    const flags = Array.isArray(f.flags) ? f.flags : [];
    if (!mac || !flags.includes('self')) return [];
    return [{ mac, dst: str(f.dst), permanent: f.state === 'permanent' }];
  });
}

export function parseOverlayRoutes(json: string): KernelOverlayRoute[] {
  return arr(json).flatMap((r) => {
    const dst = str(r.dst);
    const gateway = str(r.gateway);
    const dev = str(r.dev);
    if (!dst || !gateway || (dev && dev.startsWith(HOST_IFACE_PREFIX))) return [];
    const flags = Array.isArray(r.flags) ? r.flags : [];
    return [{ dst: dst.includes('/') ? dst : `${dst}/32`, gateway, dev, onlink: flags.includes('onlink') }];
  });
}

/** The device holding `ip` and its MTU, from `ip -json -4 addr show`. */
export function parseUnderlay(addrJson: string, ip: string): { dev: string; mtu: number } | undefined {
  for (const l of arr(addrJson)) {
    const infos = Array.isArray(l.addr_info) ? (l.addr_info as Json[]) : [];
    if (infos.some((i) => i.local === ip) && typeof l.ifname === 'string' && l.ifname !== VXLAN_DEVICE) {
      return { dev: l.ifname, mtu: num(l.mtu) ?? 1500 };
    }
  }
  return undefined;
}

// ---------------------------------------------------------------------------------------------------

export interface OverlayReport {
  changes: string[];
  /** What could not be programmed (node status shows it). */
  problems: string[];
  /** The underlay's MTU when known (workload veth MTUs follow it). */
  underlayMtu: number | undefined;
}

export class OverlayDataplane {
  private readonly log: Logger;

  constructor(
    private readonly runner: CommandRunner,
    options: { log?: Logger } = {},
  ) {
    this.log = (options.log ?? silentLogger).child({ component: 'overlay' });
  }

  private async json(argv: string[]): Promise<string> {
    return (await this.runner.run(argv)).stdout;
  }

  async readKernel(localIp: string | undefined): Promise<KernelOverlay> {
    const [addrs, routes] = await Promise.all([this.json(['ip', '-json', '-4', 'addr', 'show']), this.json(['ip', '-json', '-4', 'route', 'show', 'proto', ROUTE_PROTO])]);
    const hasVtep = arr(addrs).some((l) => l.ifname === VXLAN_DEVICE);
    let vtep: KernelVtep | undefined;
    let neighbours: KernelOverlay['neighbours'] = [];
    let fdb: KernelOverlay['fdb'] = [];
    if (hasVtep || (await this.linkExists())) {
      const [link, addr, neigh, fdbOut] = await Promise.all([
        this.json(['ip', '-json', '-d', 'link', 'show', 'dev', VXLAN_DEVICE]),
        this.json(['ip', '-json', '-4', 'addr', 'show', 'dev', VXLAN_DEVICE]),
        this.json(['ip', '-json', '-4', 'neigh', 'show', 'dev', VXLAN_DEVICE]),
        this.json(['bridge', '-json', 'fdb', 'show', 'dev', VXLAN_DEVICE]),
      ]);
      vtep = parseVtep(link, addr);
      neighbours = parseNeighbours(neigh);
      fdb = parseFdb(fdbOut);
    }
    return {
      vtep,
      neighbours,
      fdb,
      routes: parseOverlayRoutes(routes),
      underlay: localIp ? parseUnderlay(addrs, localIp) : undefined,
    };
  }

  private async linkExists(): Promise<boolean> {
    try {
      await this.runner.run(['ip', 'link', 'show', 'dev', VXLAN_DEVICE]);
      return true;
    } catch {
      return false;
    }
  }

  /** The MTU of the device holding `localIp` (undefined if none holds it). */
  async underlayMtu(localIp: string): Promise<number | undefined> {
    return parseUnderlay(await this.json(['ip', '-json', '-4', 'addr', 'show']), localIp)?.mtu;
  }

  async reconcile(desired: DesiredOverlay, localIp: string | undefined): Promise<OverlayReport> {
    const kernel = await this.readKernel(desired.vtep?.localIp ?? localIp);
    const steps = planOverlay(kernel, desired);
    const changes: string[] = [];
    const problems = [...desired.problems];
    // One exec per step: steps are few (three per remote node, once) and each failure is reported alone.
    for (const s of steps) {
      const cmd = overlayCommand(s);
      if (!cmd) {
        if (s.op === 'blocked') problems.push(s.why);
        continue;
      }
      try {
        await this.runner.run([cmd.program, ...cmd.args]);
        // Created down: vxlan links cannot always be set up within `link add`.
        if (s.op === 'vtep-add') await this.runner.run(['ip', 'link', 'set', 'dev', VXLAN_DEVICE, 'up']);
        changes.push(describeOverlayStep(s));
      } catch (err) {
        if (s.op === 'route-del' || s.op === 'neigh-del' || s.op === 'addr-del' || s.op === 'fdb-del') continue; // already gone
        problems.push(`vxlan: ${describeOverlayStep(s)} failed: ${err instanceof Error ? err.message.split('\n')[0] : String(err)}`);
      }
    }
    if (changes.length > 0) this.log.info('overlay reconciled', { changes });
    if (problems.length > 0) this.log.warn('overlay problems', { problems });
    return { changes, problems, underlayMtu: kernel.underlay?.mtu };
  }
}
