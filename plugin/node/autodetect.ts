/**
 * Which IPv4 address this host is reached at (its BGP router ID and peering address), as Calico
 * detects it: `IP` when set; else IP_AUTODETECTION_METHOD:
 *   first-found (default)  the interface holding the default route, else the first global address
 *                          on an interface that is not ours or Docker's;
 *   interface=<regex>      the first interface whose name matches;
 *   can-reach=<address>    the source address the kernel would use to reach it.
 * Reads the kernel with `ip -json` through the CommandRunner.
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
  if (env.IP && env.IP !== 'autodetect') {
    const [addr, prefix] = env.IP.split('/');
    const { family } = parseAddress(addr ?? '', 'IP');
    if (family !== 4) throw new ValidationError('IP', `${env.IP} is not an IPv4 address`);
    if (prefix !== undefined) return env.IP;
    // Find the prefix length the kernel has for it; /32 when the address is not configured here.
    const found = (await addresses(runner)).find((a) => a.local === addr);
    return `${addr}/${found?.prefixlen ?? 32}`;
  }
  const method = env.IP_AUTODETECTION_METHOD || 'first-found';
  const all = await addresses(runner);
  if (method === 'first-found') {
    const defaultDev = await defaultRouteDevice(runner);
    const onDefault = all.find((a) => a.ifname === defaultDev);
    const pick = onDefault ?? all.find((a) => !EXCLUDED.test(a.ifname));
    return pick ? `${pick.local}/${pick.prefixlen}` : null;
  }
  if (method.startsWith('interface=')) {
    let re: RegExp;
    try {
      re = new RegExp(`^(${method.slice('interface='.length)})$`);
    } catch {
      throw new ValidationError('IP_AUTODETECTION_METHOD', `${JSON.stringify(method)}: not a valid interface regex`);
    }
    const pick = all.find((a) => re.test(a.ifname));
    return pick ? `${pick.local}/${pick.prefixlen}` : null;
  }
  if (method.startsWith('can-reach=')) {
    const target = method.slice('can-reach='.length);
    parseAddress(target, 'IP_AUTODETECTION_METHOD can-reach');
    const { stdout } = await runner.run(['ip', '-json', '-4', 'route', 'get', target]);
    const src = (JSON.parse(stdout) as { prefsrc?: string }[])[0]?.prefsrc;
    if (!src) return null;
    return `${src}/${all.find((a) => a.local === src)?.prefixlen ?? 32}`;
  }
  throw new ValidationError(
    'IP_AUTODETECTION_METHOD',
    `${JSON.stringify(method)} is not one of first-found, interface=<regex>, can-reach=<address>`,
  );
}

async function addresses(runner: CommandRunner): Promise<{ ifname: string; local: string; prefixlen: number }[]> {
  const { stdout } = await runner.run(['ip', '-json', '-4', 'addr', 'show']);
  const links = JSON.parse(stdout || '[]') as AddrInfo[];
  return links.flatMap((l) =>
    (l.addr_info ?? [])
      .filter((a) => a.family === 'inet' && a.scope === 'global')
      .map((a) => ({ ifname: l.ifname, local: a.local, prefixlen: a.prefixlen })),
  );
}

async function defaultRouteDevice(runner: CommandRunner): Promise<string | undefined> {
  const { stdout } = await runner.run(['ip', '-json', '-4', 'route', 'show', 'default']);
  return (JSON.parse(stdout || '[]') as { dev?: string }[])[0]?.dev;
}
