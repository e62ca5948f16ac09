/**
 * Which IPv4 address this host is reached at (its BGP router ID and peering address), as Calico
 * detects it: `IP` when set; else IP_AUTODETECTION_METHOD:
 *   first-found (default)  the interface holding the default route, else the first global address
 *                          on an interface that is not ours or Docker's;
 *   interface=<regex>      the first interface whose name matches;
 *   can-reach=<address>    the source address the kernel would use to reach it.
 * Reads the kernel with `ip -json` through the CommandRunner.
 *
 * IPv6 likewise (detectIPv6) from `IP6` and `IP6_AUTODETECTION_METHOD`, global-scope addresses only;
 * `IP6=none` turns it off. The IPv6 address is the next hop of this node's IPv6 blocks.
 */
import type { CommandRunner } from '../lib/exec.js';
import { ValidationError } from '../lib/errors.js';
import { parseAddress } from '../lib/cidr.js';

/** Interfaces that never carry the host's address: ours, Docker's, loopback, tunnels. */
const EXCLUDED = /^(lo|cali.*|tmp.*|docker.*|br-.*|veth.*|vxlan\.calico|tunl.*|kube-.*)$/;

interface AddrInfo {
  ifname: string;
  addr_info?: { family: string; local: string; prefixlen: number; scope: string }[];
}

/** "10.0.0.11/24" */
export type AddressWithPrefix = string;

export async function detectIPv4(
  runner: CommandRunner,
  env: { IP?: string | undefined; IP_AUTODETECTION_METHOD?: string | undefined },
): Promise<AddressWithPrefix | null> {
  return detect(runner, 4, env.IP, env.IP_AUTODETECTION_METHOD, ['IP', 'IP_AUTODETECTION_METHOD']);
}

export async function detectIPv6(
  runner: CommandRunner,
  env: { IP6?: string | undefined; IP6_AUTODETECTION_METHOD?: string | undefined },
): Promise<AddressWithPrefix | null> {
  if (env.IP6 === 'none') return null;
  return detect(runner, 6, env.IP6, env.IP6_AUTODETECTION_METHOD, ['IP6', 'IP6_AUTODETECTION_METHOD']);
}

async function detect(
  runner: CommandRunner,
  family: 4 | 6,
  given: string | undefined,
  methodText: string | undefined,
  [ipVar, methodVar]: [string, string],
): Promise<AddressWithPrefix | null> {
  if (given && given !== 'autodetect') {
    const [addr, prefix] = given.split('/');
    const parsed = parseAddress(addr ?? '', ipVar);
    if (parsed.family !== family) throw new ValidationError(ipVar, `${given} is not an IPv${family} address`);
    if (prefix !== undefined) return given;
    // Find the prefix length the kernel has for it; a host prefix when the address is not configured here.
    const found = (await addresses(runner, family)).find((a) => a.local === addr);
    return `${addr}/${found?.prefixlen ?? (family === 4 ? 32 : 128)}`;
  }
  const method = methodText || 'first-found';
  const all = await addresses(runner, family);
  if (method === 'first-found') {
    const defaultDev = await defaultRouteDevice(runner, family);
    const onDefault = all.find((a) => a.ifname === defaultDev);
    const pick = onDefault ?? all.find((a) => !EXCLUDED.test(a.ifname));
    return pick ? `${pick.local}/${pick.prefixlen}` : null;
  }
  if (method.startsWith('interface=')) {
    let re: RegExp;
    try {
      re = new RegExp(`^(${method.slice('interface='.length)})$`);
    } catch {
      throw new ValidationError(methodVar, `${JSON.stringify(method)}: not a valid interface regex`);
    }
    const pick = all.find((a) => re.test(a.ifname));
    return pick ? `${pick.local}/${pick.prefixlen}` : null;
  }
  if (method.startsWith('can-reach=')) {
    const target = method.slice('can-reach='.length);
    if (parseAddress(target, `${methodVar} can-reach`).family !== family) {
      throw new ValidationError(methodVar, `can-reach=${target} is not an IPv${family} address`);
    }
    const { stdout } = await runner.run(['ip', '-json', `-${family}`, 'route', 'get', target]);
    const src = (JSON.parse(stdout) as { prefsrc?: string }[])[0]?.prefsrc;
    if (!src) return null;
    return `${src}/${all.find((a) => a.local === src)?.prefixlen ?? (family === 4 ? 32 : 128)}`;
  }
  throw new ValidationError(methodVar, `${JSON.stringify(method)} is not one of first-found, interface=<regex>, can-reach=<address>`);
}

async function addresses(runner: CommandRunner, family: 4 | 6): Promise<{ ifname: string; local: string; prefixlen: number }[]> {
  const { stdout } = await runner.run(['ip', '-json', `-${family}`, 'addr', 'show']);
  const links = JSON.parse(stdout || '[]') as AddrInfo[];
  return links.flatMap((l) =>
    (l.addr_info ?? [])
      .filter((a) => a.family === (family === 4 ? 'inet' : 'inet6') && a.scope === 'global')
      .map((a) => ({ ifname: l.ifname, local: a.local, prefixlen: a.prefixlen })),
  );
}

async function defaultRouteDevice(runner: CommandRunner, family: 4 | 6): Promise<string | undefined> {
  const { stdout } = await runner.run(['ip', '-json', `-${family}`, 'route', 'show', 'default']);
  return (JSON.parse(stdout || '[]') as { dev?: string }[])[0]?.dev;
}
