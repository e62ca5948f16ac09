/**
 * The IPIP executor: reads tunl0 from the kernel, runs the steps calc/ipip.ts plans, and loads the ipip
 * module when tunl0 is missing. Everything goes through a CommandRunner, so one instance can drive
 * another network namespace (or the qemu lane's VM namespaces) with an `nsenter --net=...` prefix.
 *
 * DESIGN NOTE — how it recognises its own kernel objects after a restart (it keeps no state):
 *   - the only device is `tunl0`, the ipip module's fallback device. It exists in every namespace once
 *     the module is loaded, cannot be deleted, and is never created or deleted here;
 *   - while an IPIP pool selects this node, tunl0 is ours: its MTU, its up state and its IPv4 addresses
 *     (exactly one, our tunnel address, as a /32);
 *   - when none does, an IPv4 address on tunl0 is ours only if it lies inside a calico-ts pool; only those
 *     are removed (and tunl0 set down after removing one). Anything else on tunl0 is left alone.
 *   - routes over tunl0 are BIRD's (`proto bird`, from the BGP import filter), not this module's.
 */
import { IPIP_DEVICE, planTunl0, type DesiredTunl0, type IpipStep, type Tunl0State } from '../calc/ipip.js';
import type { CommandRunner } from '../lib/exec.js';
import { silentLogger, type Logger } from '../lib/log.js';
import { ipArgv, type IpCommand } from './iproute.js';

/** Whether this kernel can do IPIP: tunl0 exists (after loading the module if needed), or why not. */
export type IpipAvailability = { available: true } | { available: false; reason: string };

/** `ip -json addr show` → per interface: name, MTU and IPv4 addresses with prefix. */
export function parseAddrShow(stdout: string): { name: string; mtu: number; up: boolean; v4: string[] }[] {
  const text = stdout.trim();
  if (text === '') return [];
  const data = JSON.parse(text) as unknown;
  if (!Array.isArray(data)) throw new SyntaxError('ip -json addr show: expected a JSON array');
  return (data as unknown[]).flatMap((item) => {
    if (typeof item !== 'object' || item === null) return [];
    const o = item as Record<string, unknown>;
    if (typeof o.ifname !== 'string') return [];
    const infos = Array.isArray(o.addr_info) ? (o.addr_info as Record<string, unknown>[]) : [];
    const flags = Array.isArray(o.flags) ? (o.flags as unknown[]) : [];
    return [
      {
        name: o.ifname,
        mtu: typeof o.mtu === 'number' ? o.mtu : 0,
        up: flags.includes('UP'),
        v4: infos.filter((a) => a.family === 'inet' && typeof a.local === 'string').map((a) => `${String(a.local)}/${String(a.prefixlen)}`),
      },
    ];
  });
}

export function ipipStepCommand(step: IpipStep): IpCommand {
  switch (step.op) {
    case 'addr-del':
      return ['addr', 'del', step.address, 'dev', IPIP_DEVICE];
    case 'addr-add':
      return ['addr', 'add', step.address, 'dev', IPIP_DEVICE];
    case 'link-up':
      return ['link', 'set', 'dev', IPIP_DEVICE, 'mtu', String(step.mtu), 'up'];
    case 'link-down':
      return ['link', 'set', 'dev', IPIP_DEVICE, 'down'];
  }
}

export class IpipDataplane {
  private readonly log: Logger;

  constructor(
    private readonly runner: CommandRunner,
    options: { log?: Logger } = {},
  ) {
    this.log = (options.log ?? silentLogger).child({ component: 'ipip' });
  }

  /** tunl0 now; undefined when the device does not exist. */
  async readTunl0(): Promise<Tunl0State | undefined> {
    let stdout: string;
    try {
      ({ stdout } = await this.runner.run(['ip', '-json', 'addr', 'show', 'dev', IPIP_DEVICE]));
    } catch {
      return undefined; // "Device "tunl0" does not exist."
    }
    const dev = parseAddrShow(stdout).find((d) => d.name === IPIP_DEVICE);
    return dev && { up: dev.up, mtu: dev.mtu, addresses: dev.v4 };
  }

  /** Makes sure tunl0 exists: if it does not, `modprobe ipip` once; says why when the kernel cannot. */
  async ensureAvailable(): Promise<IpipAvailability> {
    if (await this.readTunl0()) return { available: true };
    let why: string;
    try {
      await this.runner.run(['modprobe', 'ipip']);
      if (await this.readTunl0()) {
        this.log.info('loaded the ipip kernel module');
        return { available: true };
      }
      why = 'modprobe ipip succeeded but no tunl0 device appeared';
    } catch (err) {
      why = `modprobe ipip failed: ${(err as { stderr?: string }).stderr?.trim() || (err instanceof Error ? err.message : String(err))}`;
    }
    return {
      available: false,
      reason: `this kernel has no ipip module (${why}); IPIP pools cannot carry traffic to or from this node. Use a kernel with CONFIG_NET_IPIP, or set the pool's ipipMode to Never (vxlanMode for encapsulation)`,
    };
  }

  /** MTU of the interface that holds `hostAddress` (the underlay), or undefined if none does. */
  async underlayMtu(hostAddress: string): Promise<number | undefined> {
    const { stdout } = await this.runner.run(['ip', '-json', '-4', 'addr', 'show']);
    const dev = parseAddrShow(stdout).find((d) => d.v4.some((a) => a.split('/')[0] === hostAddress));
    return dev?.mtu;
  }

  /**
   * Make tunl0 match `desired` (null: take our addresses off it). `ourPools` are every calico-ts pool CIDR.
   * Returns what was changed. A missing tunl0 is fine only when nothing is desired.
   */
  async apply(desired: DesiredTunl0 | null, ourPools: readonly string[]): Promise<string[]> {
    const kernel = await this.readTunl0();
    if (!kernel) {
      if (desired) throw new Error(`${IPIP_DEVICE} does not exist; call ensureAvailable() first`);
      return [];
    }
    const steps = planTunl0(kernel, desired, ourPools);
    const changes: string[] = [];
    for (const step of steps) {
      await this.runner.run(ipArgv(ipipStepCommand(step)));
      changes.push(ipipStepCommand(step).join(' '));
    }
    if (changes.length > 0) this.log.info('tunl0 programmed', { changes });
    return changes;
  }
}
