/**
 * Pure helpers for the Linux dataplane: address/CIDR parsing, parsers of `ip -json` output, and argv
 * builders for iproute2 / sysctl. Nothing here touches the kernel; linux.ts runs what these build.
 *
 * Every name and address that ends up in an argv (or in an `ip -batch` line) is validated here first, so
 * a batch line can safely be the argv joined with spaces: no element ever contains whitespace or quotes.
 */
import { formatIPv4, formatIPv6, parseIPv4, parseIPv6, type Family } from '../lib/cidr.js';

export { formatIPv4, formatIPv6 };
import { ValidationError } from '../lib/errors.js';

/** Calico's route protocol number. Always passed as the number (no /etc/iproute2/rt_protos dependency). */
export const ROUTE_PROTO = '80';
/** MAC of every host-side veth, as in Calico: containers see one fixed next-hop MAC. */
export const HOST_VETH_MAC = 'ee:ee:ee:ee:ee:ee';
/** Prefix of every host-side veth we own. */
export const HOST_IFACE_PREFIX = 'cali';
/** The containers' gateway; answered by proxy ARP on the host-side veth. */
export const LINK_LOCAL_GATEWAY = '169.254.1.1';

/** `cali` + 1..11 characters: the kernel's 15-character limit, nothing a shell or sysctl path could misread. */
const HOST_IFACE_RE = /^cali[A-Za-z0-9_-]{1,11}$/;
/** Any Linux interface name we are willing to pass to `ip`: 1..15 chars, not starting with '-'. */
const IFACE_RE = /^[A-Za-z0-9_][A-Za-z0-9_.-]{0,14}$/;

export function validateHostInterfaceName(name: string, field = 'interfaceName'): void {
  if (!HOST_IFACE_RE.test(name)) {
    throw new ValidationError(
      field,
      `${JSON.stringify(name)} is not a calico-ts host interface name; it must be "cali" followed by 1-11 letters, digits, '_' or '-'`,
    );
  }
}

export function validateInterfaceName(name: string, field = 'peerName'): void {
  if (!IFACE_RE.test(name)) {
    throw new ValidationError(field, `${JSON.stringify(name)} is not a valid interface name (1-15 of [A-Za-z0-9_.-], not starting with '-' or '.')`);
  }
}

export function validateMtu(mtu: number, field = 'mtu'): void {
  if (!Number.isInteger(mtu) || (mtu !== 0 && (mtu < 68 || mtu > 65535))) {
    throw new ValidationError(field, `${String(mtu)} is not a valid MTU; use 0 (kernel default) or an integer 68-65535`);
  }
}

// ---------------------------------------------------------------------------------------------------
// Addresses and CIDRs

export type { Family };

export interface Cidr {
  family: Family;
  /** Network address as an integer (32 or 128 bits). */
  addr: bigint;
  prefix: number;
  /** Canonical text: dotted quad or RFC 5952 IPv6, always with "/prefix". */
  text: string;
}

/**
 * Parse "a.b.c.d/n", "x::y/n" or a bare address (= host prefix, as `ip -json` prints host routes).
 * "default" is 0.0.0.0/0 (or ::/0 with family 6). Host bits must be zero. Throws ValidationError.
 */
export function parseCidr(text: string, field = 'cidr', defaultFamily: Family = 4): Cidr {
  const bad = (why: string): never => {
    throw new ValidationError(field, `${JSON.stringify(text)} ${why}`);
  };
  if (text === 'default') text = defaultFamily === 4 ? '0.0.0.0/0' : '::/0';
  const slash = text.indexOf('/');
  const addrText = slash < 0 ? text : text.slice(0, slash);
  const prefixText = slash < 0 ? undefined : text.slice(slash + 1);
  const family: Family = addrText.includes(':') ? 6 : 4;
  const addr = family === 6 ? parseIPv6(addrText) : parseIPv4(addrText);
  if (addr === undefined) return bad('is not an IPv4 or IPv6 address or CIDR');
  const bits = family === 4 ? 32 : 128;
  let prefix = bits;
  if (prefixText !== undefined) {
    if (!/^(0|[1-9][0-9]{0,2})$/.test(prefixText) || Number(prefixText) > bits) return bad(`has an invalid prefix length (0-${bits})`);
    prefix = Number(prefixText);
  }
  const hostMask = (1n << BigInt(bits - prefix)) - 1n;
  if ((addr & hostMask) !== 0n) return bad(`has host bits set; use the network address of the /${prefix}`);
  return { family, addr, prefix, text: `${family === 4 ? formatIPv4(addr) : formatIPv6(addr)}/${prefix}` };
}

// ---------------------------------------------------------------------------------------------------
// `ip -json` parsers

/** One link as `ip -json -d link show` reports it (only the fields we use). */
export interface KernelLink {
  name: string;
  index: number;
  /** linkinfo.info_kind ("veth", "vxlan", ...); undefined for plain devices (lo, physical NICs) or without -d. */
  kind?: string;
  mtu: number;
  mac?: string;
  /** Administratively up (IFF_UP). */
  up: boolean;
}

/** One route from `ip -json [-6] route show proto 80` (main table). */
export interface KernelRoute {
  family: Family;
  /** Canonical CIDR text (host routes get their /32 or /128). */
  dst: string;
  /** "unicast" when `ip` prints no type. */
  type: string;
  dev?: string;
  /** "link", "host", ...; undefined = global (ip omits it). IPv6 routes have none. */
  scope?: string;
  /** undefined when ip prints none (IPv4 metric 0). */
  metric?: number;
}

function parseJsonArray(stdout: string, what: string): Record<string, unknown>[] {
  const text = stdout.trim();
  if (text === '') return [];
  let data: unknown;
  try {
    data = JSON.parse(text);
  } catch (err) {
    throw new SyntaxError(`cannot parse ${what} JSON from ip: ${(err as Error).message}`);
  }
  if (!Array.isArray(data)) throw new SyntaxError(`${what}: expected a JSON array from ip`);
  return data.filter((x): x is Record<string, unknown> => typeof x === 'object' && x !== null && !Array.isArray(x));
}

export function parseLinks(stdout: string): KernelLink[] {
  const out: KernelLink[] = [];
  for (const o of parseJsonArray(stdout, 'link list')) {
    if (typeof o.ifname !== 'string') continue;
    const flags = Array.isArray(o.flags) ? o.flags : [];
    const info = o.linkinfo as { info_kind?: unknown } | undefined;
    const link: KernelLink = {
      name: o.ifname,
      index: typeof o.ifindex === 'number' ? o.ifindex : -1,
      mtu: typeof o.mtu === 'number' ? o.mtu : 0,
      up: flags.includes('UP'),
    };
    if (typeof o.address === 'string') link.mac = o.address.toLowerCase();
    if (info && typeof info.info_kind === 'string') link.kind = info.info_kind;
    out.push(link);
  }
  return out;
}

export function parseRoutes(stdout: string, family: Family): KernelRoute[] {
  const out: KernelRoute[] = [];
  for (const o of parseJsonArray(stdout, 'route list')) {
    if (typeof o.dst !== 'string') continue;
    let dst: string;
    try {
      dst = parseCidr(o.dst, 'dst', family).text;
    } catch {
      continue; // something we do not understand is not something we own
    }
    const route: KernelRoute = { family, dst, type: typeof o.type === 'string' ? o.type : 'unicast' };
    if (typeof o.dev === 'string') route.dev = o.dev;
    if (typeof o.scope === 'string') route.scope = o.scope;
    if (typeof o.metric === 'number') route.metric = o.metric;
    out.push(route);
  }
  return out;
}

// ---------------------------------------------------------------------------------------------------
// argv builders (without the leading "ip"; `ipArgv` adds it, `batchLine` joins for `ip -batch -`)

export type IpCommand = string[];

export function ipArgv(cmd: IpCommand): string[] {
  return ['ip', ...cmd];
}

/** `ip -batch -` input: one command per line. Safe because every element was validated (no spaces). */
export function batchInput(cmds: readonly IpCommand[]): string {
  return cmds.map((c) => c.join(' ')).join('\n') + '\n';
}

/** Create the pair with the host end already configured (MAC, MTU, up). `up` on the peer fails at creation. */
export function vethAddCommand(interfaceName: string, peerName: string, mtu: number): IpCommand {
  const mtuArgs = mtu > 0 ? ['mtu', String(mtu)] : [];
  return ['link', 'add', 'name', interfaceName, ...mtuArgs, 'address', HOST_VETH_MAC, 'up', 'type', 'veth', 'peer', 'name', peerName, ...mtuArgs];
}

/** Bring an existing host end to the desired state (idempotent). */
export function hostLinkSetCommand(interfaceName: string, mtu: number): IpCommand {
  return ['link', 'set', 'dev', interfaceName, ...(mtu > 0 ? ['mtu', String(mtu)] : []), 'address', HOST_VETH_MAC, 'up'];
}

export function linkMtuCommand(name: string, mtu: number): IpCommand {
  return ['link', 'set', 'dev', name, 'mtu', String(mtu)];
}

export function linkDelCommand(name: string): IpCommand {
  return ['link', 'del', 'dev', name];
}

/*
 * Route commands carry no `-6`: ip infers the family from the prefix, and `ip -batch` lines cannot take
 * global options, so one batch can mix IPv4 and IPv6.
 */

/** Host route to a workload: `<cidr> dev <if> scope link proto 80` (IPv6 routes have no scope). */
export function hostRouteReplaceCommand(family: Family, dst: string, dev: string): IpCommand {
  const scope = family === 4 ? ['scope', 'link'] : [];
  return ['route', 'replace', dst, 'dev', dev, ...scope, 'proto', ROUTE_PROTO];
}

export function routeDelCommand(route: KernelRoute): IpCommand {
  const cmd = ['route', 'del'];
  if (route.type !== 'unicast') cmd.push(route.type);
  cmd.push(route.dst);
  if (route.dev && route.type === 'unicast') cmd.push('dev', route.dev);
  cmd.push('proto', ROUTE_PROTO);
  if (route.metric !== undefined) cmd.push('metric', String(route.metric));
  return cmd;
}

export function blackholeReplaceCommand(dst: string): IpCommand {
  return ['route', 'replace', 'blackhole', dst, 'proto', ROUTE_PROTO];
}

/** The route that lets proxy ARP answer for 169.254.1.1 on a host without a default route. */
export function gatewayRouteCommand(): IpCommand {
  return ['route', 'replace', `${LINK_LOCAL_GATEWAY}/32`, 'dev', 'lo', 'proto', ROUTE_PROTO];
}

// ---------------------------------------------------------------------------------------------------
// sysctls

export interface SysctlSetting {
  /** Dotted key, e.g. "net.ipv4.conf.cali0123.proxy_arp". */
  key: string;
  value: string;
}

/**
 * What every host-side veth needs: proxy ARP for 169.254.1.1 without delay, and forwarding. With IPv6,
 * also: the EUI-64 link-local address (addr_gen_mode 0: fe80::ecee:eeff:feee:eeee from the fixed MAC,
 * the containers' IPv6 gateway), usable at once (accept_dad 0: the kernel adds it when the container end
 * comes up, and every veth has the same one, on its own link), and IPv6 forwarding. No proxy_ndp: the
 * gateway is the veth's own address, and the host resolves containers' /128s by ordinary ND on the veth.
 */
export function endpointSysctls(interfaceName: string, ipv6 = false): SysctlSetting[] {
  return [
    { key: `net.ipv4.conf.${interfaceName}.proxy_arp`, value: '1' },
    { key: `net.ipv4.neigh.${interfaceName}.proxy_delay`, value: '0' },
    { key: `net.ipv4.conf.${interfaceName}.forwarding`, value: '1' },
    ...(ipv6
      ? [
          { key: `net.ipv6.conf.${interfaceName}.addr_gen_mode`, value: '0' },
          { key: `net.ipv6.conf.${interfaceName}.accept_dad`, value: '0' },
          { key: `net.ipv6.conf.${interfaceName}.forwarding`, value: '1' },
        ]
      : []),
  ];
}

export const BASE_SYSCTLS: readonly SysctlSetting[] = [{ key: 'net.ipv4.ip_forward', value: '1' }];
/**
 * Set only once this host has IPv6 workloads or blocks: IPv6 forwarding stops the host accepting router
 * advertisements, which would break a host's own SLAAC address if it never needed calico-ts IPv6.
 */
export const IPV6_FORWARDING: SysctlSetting = { key: 'net.ipv6.conf.all.forwarding', value: '1' };

/** "net.ipv4.conf.x.proxy_arp" → "<root>/net/ipv4/conf/x/proxy_arp" (our keys never contain '/' or extra dots). */
export function sysctlPath(root: string, key: string): string {
  return `${root.replace(/\/+$/, '')}/${key.split('.').join('/')}`;
}

/** Parse `sysctl -e k1 k2 ...` output ("key = value" per line). */
export function parseSysctlOutput(stdout: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const line of stdout.split('\n')) {
    const i = line.indexOf(' = ');
    if (i <= 0) continue;
    out.set(line.slice(0, i).trim(), line.slice(i + 3).trim());
  }
  return out;
}
