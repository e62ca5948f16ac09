/**
 * The Linux dataplane: veth pairs, host routes, sysctls and the base iptables chain, all through a
 * CommandRunner (iproute2, sysctl, iptables-save / iptables-restore), so one instance can drive another
 * network namespace by giving the runner an `nsenter --net=...` prefix.
 *
 * DESIGN NOTE — how it recognises its own kernel objects after a restart (it keeps no state of its own):
 *   - host-side veths are links of kind `veth` whose name starts with `cali`;
 *   - every route it adds carries `proto 80` (Calico's route protocol number, always given as the number);
 *     workload routes are `<ip>/32 dev cali* scope link proto 80` (IPv6: `<ip>/128 dev cali* proto 80`);
 *   - IPAM block routes are `blackhole <cidr> proto 80`;
 *   - the gateway route on hosts without a default route is `169.254.1.1/32 dev lo proto 80`;
 *   - iptables: chain `cali-FORWARD` in the filter table, hooked by one rule at the top of FORWARD that
 *     carries the comment `cali:forward-jump`.
 * reconcile() only ever deletes things carrying those marks: `cali*` veths, `proto 80` unicast routes whose
 * device is such a veth, and `proto 80` blackholes. It never deletes anything on another device (so the
 * 169.254.1.1 route on lo, other layers' `proto 80` routes on vxlan/tunnel devices, and everybody else's
 * links and routes are safe). Only with `manageForwardChain` (policy enforcement off) does this module own
 * cali-FORWARD: ensureBase() then rewrites it when its content differs from the two accept rules. With
 * enforcement on (the default), dataplane/filter-applier.ts owns every cali-* chain instead.
 *
 * Verified on the kernel (test/kernel/dataplane.test.ts): proxy ARP on the host veth answers for
 * 169.254.1.1 only if the host has a unicast route covering 169.254.1.1 through another device; with no
 * route (or only a blackhole) the container's ARP stays INCOMPLETE. `169.254.1.1/32 dev lo` is enough.
 * A route to an administratively down device is refused ("Device for nexthop is not up"), so the host end
 * is brought up before routes are added; carrier is not needed (the peer may still be down, or in the
 * host namespace). `ip link add ... up type veth peer name P up` fails (ENOTCONN): only the host end is set
 * up at creation; Docker brings the container end up after moving it.
 */
import { AlreadyExistsError, ValidationError } from '../lib/errors.js';
import type { CommandRunner } from '../lib/exec.js';
import { silentLogger, type Logger } from '../lib/log.js';
import {
  BASE_SYSCTLS,
  HOST_IFACE_PREFIX,
  IPV6_FORWARDING,
  HOST_VETH_MAC,
  LINK_LOCAL_GATEWAY,
  batchInput,
  blackholeReplaceCommand,
  endpointSysctls,
  gatewayRouteCommand,
  hostLinkSetCommand,
  hostRouteReplaceCommand,
  ipArgv,
  linkDelCommand,
  linkMtuCommand,
  parseCidr,
  parseLinks,
  parseRoutes,
  parseSysctlOutput,
  routeDelCommand,
  sysctlPath,
  validateHostInterfaceName,
  validateInterfaceName,
  validateMtu,
  vethAddCommand,
  type Family,
  type IpCommand,
  type KernelLink,
  type KernelRoute,
  type SysctlSetting,
} from './iproute.js';
import type { Dataplane, DesiredEndpoint, DesiredHostState, ReconcileReport } from './types.js';

// ---------------------------------------------------------------------------------------------------
// Kernel state and the pure plan

/** What reconcile() reads from the kernel before planning. */
export interface KernelState {
  /** Every link in the namespace (`ip -json -d link show`). */
  links: KernelLink[];
  /** Every `proto 80` route of the main table, both families (unicast and blackhole). */
  routes: KernelRoute[];
  /** Current values of the endpoint sysctls of desired, existing host veths (key → value), and of
   * IPV6_FORWARDING when IPv6 is wanted. */
  sysctls: ReadonlyMap<string, string>;
}

export type Step =
  | { op: 'link-del'; name: string }
  /** A desired interface name is taken by a link that is not a veth: reported as an error, nothing done. */
  | { op: 'conflict'; name: string; kind: string }
  | { op: 'link-add'; interfaceName: string; peerName: string; mtu: number }
  /** Host end exists but is down, has the wrong MAC or MTU: `ip link set dev X [mtu M] address ee:.. up`. */
  | { op: 'link-set'; name: string; mtu: number; reasons: string[] }
  | { op: 'peer-mtu'; name: string; mtu: number }
  | { op: 'sysctl'; interfaceName: string; settings: SysctlSetting[] }
  | { op: 'route-replace'; family: Family; dst: string; dev: string }
  | { op: 'blackhole-add'; family: Family; dst: string }
  | { op: 'route-del'; route: KernelRoute }
  | { op: 'blackhole-del'; route: KernelRoute };

/** The order apply() runs the groups in (plan output is sorted the same way). */
const STEP_ORDER: readonly Step['op'][] = [
  'link-del',
  'conflict',
  'link-add',
  'link-set',
  'peer-mtu',
  'sysctl',
  'route-replace',
  'blackhole-add',
  'route-del',
  'blackhole-del',
];

export function isOwnedLink(link: KernelLink): boolean {
  return link.name.startsWith(HOST_IFACE_PREFIX) && link.kind === 'veth';
}

function isDefaultMetric(r: KernelRoute): boolean {
  return r.metric === undefined || r.metric === (r.family === 4 ? 0 : 1024);
}

interface NormalisedEndpoint {
  interfaceName: string;
  peerName: string;
  mtu: number;
  networks: { family: Family; dst: string }[];
}

function normaliseEndpoint(ep: DesiredEndpoint, where = 'endpoint'): NormalisedEndpoint {
  validateHostInterfaceName(ep.interfaceName, `${where}.interfaceName`);
  validateInterfaceName(ep.peerName, `${where}.peerName`);
  if (ep.peerName === ep.interfaceName) throw new ValidationError(`${where}.peerName`, 'must differ from interfaceName');
  validateMtu(ep.mtu, `${where}.mtu`);
  const networks = ep.ipNetworks.map((n, i) => {
    const c = parseCidr(n, `${where}.ipNetworks[${i}]`);
    const host = c.family === 4 ? 32 : 128;
    if (c.prefix !== host) throw new ValidationError(`${where}.ipNetworks[${i}]`, `${JSON.stringify(n)} must be a /${host}`);
    return { family: c.family, dst: c.text };
  });
  return { interfaceName: ep.interfaceName, peerName: ep.peerName, mtu: ep.mtu, networks };
}

function hasIPv6(ep: NormalisedEndpoint): boolean {
  return ep.networks.some((n) => n.family === 6);
}

/** Whether the host needs IPv6 forwarding: some desired endpoint or block is IPv6. */
export function wantsIPv6(desired: DesiredHostState): boolean {
  return desired.endpoints.some((e) => e.ipNetworks.some((n) => n.includes(':'))) || desired.blackholes.some((b) => b.includes(':'));
}

/**
 * Pure diff: the steps that make the kernel match `desired`, touching only calico-owned objects.
 * Throws ValidationError for an invalid desired state (bad names or CIDRs, duplicate interfaces or addresses).
 */
export function planReconcile(kernel: KernelState, desired: DesiredHostState): Step[] {
  const eps = desired.endpoints.map((ep, i) => normaliseEndpoint(ep, `endpoints[${i}]`));
  const desiredNames = new Set<string>();
  const desiredRoutes = new Map<string, { family: Family; dst: string; dev: string }>();
  for (const ep of eps) {
    if (desiredNames.has(ep.interfaceName)) throw new ValidationError('endpoints', `interface ${ep.interfaceName} is listed twice`);
    desiredNames.add(ep.interfaceName);
    for (const n of ep.networks) {
      const key = `${n.family}|${n.dst}`;
      const other = desiredRoutes.get(key);
      if (other) throw new ValidationError('endpoints', `${n.dst} is wanted on both ${other.dev} and ${ep.interfaceName}`);
      desiredRoutes.set(key, { ...n, dev: ep.interfaceName });
    }
  }
  const desiredBlackholes = new Map<string, { family: Family; dst: string }>();
  desired.blackholes.forEach((b, i) => {
    const c = parseCidr(b, `blackholes[${i}]`);
    desiredBlackholes.set(`${c.family}|${c.text}`, { family: c.family, dst: c.text });
  });

  const steps: Step[] = [];
  const links = new Map(kernel.links.map((l) => [l.name, l]));
  const owned = new Set(kernel.links.filter(isOwnedLink).map((l) => l.name));

  // Stale host veths (their routes go with them).
  const deleted = new Set<string>();
  for (const name of owned) {
    if (!desiredNames.has(name)) {
      steps.push({ op: 'link-del', name });
      deleted.add(name);
    }
  }

  const unicast = kernel.routes.filter((r) => r.type === 'unicast');
  const matches = (r: KernelRoute, want: { family: Family; dst: string; dev: string }): boolean =>
    r.family === want.family &&
    r.dst === want.dst &&
    r.dev === want.dev &&
    isDefaultMetric(r) &&
    (r.family === 6 || r.scope === 'link');

  for (const ep of eps) {
    const link = links.get(ep.interfaceName);
    if (link && !isOwnedLink(link)) {
      steps.push({ op: 'conflict', name: ep.interfaceName, kind: link.kind ?? 'device' });
      continue;
    }
    if (!link) {
      steps.push({ op: 'link-add', interfaceName: ep.interfaceName, peerName: ep.peerName, mtu: ep.mtu });
      steps.push({ op: 'sysctl', interfaceName: ep.interfaceName, settings: endpointSysctls(ep.interfaceName, hasIPv6(ep)) });
      for (const n of ep.networks) steps.push({ op: 'route-replace', ...n, dev: ep.interfaceName });
      continue;
    }
    // Existing host end: its peer may be in the host namespace (not yet joined) or in a container.
    const reasons: string[] = [];
    if (!link.up) reasons.push('down');
    if (link.mac !== HOST_VETH_MAC) reasons.push(`address ${link.mac ?? 'unknown'}`);
    if (ep.mtu > 0 && link.mtu !== ep.mtu) reasons.push(`mtu ${link.mtu}`);
    if (reasons.length > 0) steps.push({ op: 'link-set', name: ep.interfaceName, mtu: ep.mtu, reasons });
    const peer = links.get(ep.peerName);
    if (peer && peer.kind === 'veth' && ep.mtu > 0 && peer.mtu !== ep.mtu) steps.push({ op: 'peer-mtu', name: ep.peerName, mtu: ep.mtu });
    const settings = endpointSysctls(ep.interfaceName, hasIPv6(ep)).filter((s) => kernel.sysctls.get(s.key) !== s.value);
    if (settings.length > 0) steps.push({ op: 'sysctl', interfaceName: ep.interfaceName, settings });
    for (const n of ep.networks) {
      const want = { ...n, dev: ep.interfaceName };
      if (!unicast.some((r) => matches(r, want))) steps.push({ op: 'route-replace', ...want });
    }
  }

  // proto 80 routes on our veths that are not wanted. A wrong route for a wanted destination with the
  // default metric is taken over by the route-replace above (same kernel key), so it is not deleted.
  for (const r of unicast) {
    if (!r.dev || !owned.has(r.dev) || deleted.has(r.dev)) continue;
    const want = desiredRoutes.get(`${r.family}|${r.dst}`);
    if (want && (matches(r, want) || isDefaultMetric(r))) continue;
    steps.push({ op: 'route-del', route: r });
  }

  if (wantsIPv6(desired) && kernel.sysctls.get(IPV6_FORWARDING.key) !== IPV6_FORWARDING.value) {
    steps.push({ op: 'sysctl', interfaceName: '', settings: [IPV6_FORWARDING] });
  }

  const kernelBlackholes = kernel.routes.filter((r) => r.type === 'blackhole');
  for (const [key, b] of desiredBlackholes) {
    if (!kernelBlackholes.some((r) => `${r.family}|${r.dst}` === key)) steps.push({ op: 'blackhole-add', ...b });
  }
  for (const r of kernelBlackholes) {
    if (!desiredBlackholes.has(`${r.family}|${r.dst}`)) steps.push({ op: 'blackhole-del', route: r });
  }

  const rank = (s: Step): number => STEP_ORDER.indexOf(s.op);
  return steps.map((s, i) => ({ s, i })).sort((a, b) => rank(a.s) - rank(b.s) || a.i - b.i).map((x) => x.s);
}

/** Human-readable summaries of what a step changes (one per kernel change). */
export function describeStep(step: Step): string[] {
  switch (step.op) {
    case 'link-del':
      return [`link del ${step.name}`];
    case 'conflict':
      return [];
    case 'link-add':
      return [`link add ${step.interfaceName} type veth peer ${step.peerName}${step.mtu > 0 ? ` mtu ${step.mtu}` : ''}`];
    case 'link-set':
      return [`link set ${step.name}${step.mtu > 0 ? ` mtu ${step.mtu}` : ''} address ${HOST_VETH_MAC} up (was ${step.reasons.join(', ')})`];
    case 'peer-mtu':
      return [`link set ${step.name} mtu ${step.mtu}`];
    case 'sysctl':
      return step.settings.map((s) => `sysctl ${s.key}=${s.value}`);
    case 'route-replace':
      return [`route add ${step.dst} dev ${step.dev}`];
    case 'blackhole-add':
      return [`route add blackhole ${step.dst}`];
    case 'route-del':
      return [`route del ${step.route.dst} dev ${step.route.dev ?? '?'}`];
    case 'blackhole-del':
      return [`route del blackhole ${step.route.dst}`];
  }
}

// ---------------------------------------------------------------------------------------------------
// iptables: the cali-FORWARD chain and its jump

export const FORWARD_CHAIN = 'cali-FORWARD';
export const FORWARD_JUMP_COMMENT = 'cali:forward-jump';
/** The chain's whole content, as iptables-save prints it. */
export const FORWARD_CHAIN_RULES: readonly string[] = [
  `-A ${FORWARD_CHAIN} -i ${HOST_IFACE_PREFIX}+ -j ACCEPT`,
  `-A ${FORWARD_CHAIN} -o ${HOST_IFACE_PREFIX}+ -j ACCEPT`,
];
const JUMP_SPEC = `-m comment --comment "${FORWARD_JUMP_COMMENT}" -j ${FORWARD_CHAIN}`;

function isOurJump(rule: string): boolean {
  return /--comment "?cali:forward-jump"?(\s|$)/.test(rule) && /\s-j cali-FORWARD(\s|$)/.test(rule);
}

/**
 * Given `iptables-save -t filter` output, the `iptables-restore --noflush` input that puts the chain and
 * one jump at position 1 of FORWARD in place, or undefined if it is already so. Declaring the chain in a
 * --noflush restore flushes it, so its content is rewritten atomically; stale or duplicate jumps are
 * deleted by their exact saved spec (never by number, which could hit another rule after a race).
 */
export function planForwardChain(save: string): string | undefined {
  const lines = save.split('\n').map((l) => l.trim());
  const declared = lines.some((l) => l.startsWith(`:${FORWARD_CHAIN} `));
  const chainRules = lines.filter((l) => l.startsWith(`-A ${FORWARD_CHAIN} `)).map((l) => l.replace(/\s+/g, ' '));
  const forward = lines.filter((l) => l.startsWith('-A FORWARD '));
  const jumps = forward.filter(isOurJump);
  const chainOk =
    declared && chainRules.length === FORWARD_CHAIN_RULES.length && chainRules.every((r, i) => r === FORWARD_CHAIN_RULES[i]);
  const jumpOk = jumps.length === 1 && forward[0] !== undefined && isOurJump(forward[0]);
  if (chainOk && jumpOk) return undefined;
  const out = ['*filter', `:${FORWARD_CHAIN} - [0:0]`, ...FORWARD_CHAIN_RULES];
  if (!jumpOk) {
    for (const j of jumps) out.push(j.replace(/^-A FORWARD /, '-D FORWARD '));
    out.push(`-I FORWARD 1 ${JUMP_SPEC}`);
  }
  out.push('COMMIT', '');
  return out.join('\n');
}

// ---------------------------------------------------------------------------------------------------
// sysctl access through the runner

interface SysctlAccess {
  /** Missing keys (e.g. the interface vanished) are simply absent from the result. */
  read(keys: readonly string[]): Promise<Map<string, string>>;
  write(settings: readonly SysctlSetting[]): Promise<void>;
}

/** sysctl(8), run by the runner: works in whatever namespace the runner enters. */
class SysctlCommand implements SysctlAccess {
  constructor(private readonly runner: CommandRunner) {}
  async read(keys: readonly string[]): Promise<Map<string, string>> {
    if (keys.length === 0) return new Map();
    const { stdout } = await this.runner.run(['sysctl', '-e', ...keys]);
    return parseSysctlOutput(stdout);
  }
  async write(settings: readonly SysctlSetting[]): Promise<void> {
    if (settings.length === 0) return;
    await this.runner.run(['sysctl', '-q', '-w', ...settings.map((s) => `${s.key}=${s.value}`)]);
  }
}

/** Files under `root` (as seen by the runner's commands), read with cat and written with tee. */
class SysctlFiles implements SysctlAccess {
  constructor(
    private readonly runner: CommandRunner,
    private readonly root: string,
  ) {}
  async read(keys: readonly string[]): Promise<Map<string, string>> {
    const out = new Map<string, string>();
    if (keys.length === 0) return out;
    try {
      const { stdout } = await this.runner.run(['cat', ...keys.map((k) => sysctlPath(this.root, k))]);
      const values = stdout.split('\n');
      if (values.length >= keys.length) {
        keys.forEach((k, i) => out.set(k, (values[i] ?? '').trim()));
        return out;
      }
    } catch {
      // some file is missing: fall back to one read each
    }
    for (const k of keys) {
      try {
        out.set(k, (await this.runner.run(['cat', sysctlPath(this.root, k)])).stdout.trim());
      } catch {
        // absent
      }
    }
    return out;
  }
  async write(settings: readonly SysctlSetting[]): Promise<void> {
    const byValue = new Map<string, string[]>();
    for (const s of settings) byValue.set(s.value, [...(byValue.get(s.value) ?? []), sysctlPath(this.root, s.key)]);
    for (const [value, files] of byValue) await this.runner.run(['tee', ...files], { input: `${value}\n` });
  }
}

// ---------------------------------------------------------------------------------------------------
// A small shared/exclusive lock: endpoint operations run concurrently, reconcile runs alone, so it never
// sees (or deletes) an endpoint half-way through being created.

class SharedExclusiveLock {
  private shared = 0;
  private exclusive = false;
  private readonly waiting: { exclusive: boolean; grant: () => void }[] = [];

  async run<T>(exclusive: boolean, fn: () => Promise<T>): Promise<T> {
    await new Promise<void>((grant) => {
      this.waiting.push({ exclusive, grant });
      this.pump();
    });
    try {
      return await fn();
    } finally {
      if (exclusive) this.exclusive = false;
      else this.shared--;
      this.pump();
    }
  }

  private pump(): void {
    for (;;) {
      const next = this.waiting[0];
      if (!next || this.exclusive) return;
      if (next.exclusive) {
        if (this.shared > 0) return;
        this.exclusive = true;
      } else {
        this.shared++;
      }
      this.waiting.shift();
      next.grant();
    }
  }
}

// ---------------------------------------------------------------------------------------------------

export interface LinuxDataplaneOptions {
  log?: Logger;
  /**
   * Where the sysctl tree is, as seen by the runner's commands. Unset (default): sysctl(8) is used, which
   * reads /proc/sys of the namespace the runner runs in. Set (e.g. "/proc/sys" or a bind mount of the
   * host's): values are read with `cat` and written with `tee` under that directory.
   */
  sysctlRoot?: string;
  /**
   * Whether ensureBase() installs the accept-everything-on-cali `cali-FORWARD` chain (default true).
   * False when policy enforcement (dataplane/filter-applier.ts) owns the filter table's cali chains.
   */
  manageForwardChain?: boolean;
}

export class LinuxDataplane implements Dataplane {
  private readonly log: Logger;
  private readonly sysctl: SysctlAccess;
  private readonly lock = new SharedExclusiveLock();
  private baseChain: Promise<unknown> = Promise.resolve();
  private readonly manageForwardChain: boolean;

  constructor(
    private readonly runner: CommandRunner,
    options: LinuxDataplaneOptions = {},
  ) {
    this.log = (options.log ?? silentLogger).child({ component: 'dataplane' });
    this.sysctl = options.sysctlRoot === undefined ? new SysctlCommand(runner) : new SysctlFiles(runner, options.sysctlRoot);
    this.manageForwardChain = options.manageForwardChain ?? true;
  }

  // --- Dataplane ---------------------------------------------------------------------------------

  ensureBase(): Promise<void> {
    // Serialised with itself: two concurrent runs could both see "no jump" and insert two.
    const run = this.baseChain.then(
      () => this.doEnsureBase(),
      () => this.doEnsureBase(),
    );
    this.baseChain = run.catch(() => undefined);
    return run;
  }

  async ensureEndpoint(endpoint: DesiredEndpoint): Promise<void> {
    const ep = normaliseEndpoint(endpoint);
    await this.lock.run(false, () => this.doEnsureEndpoint(ep));
  }

  async removeEndpoint(interfaceName: string): Promise<void> {
    if (!interfaceName.startsWith(HOST_IFACE_PREFIX)) {
      throw new ValidationError('interfaceName', `refusing to delete ${JSON.stringify(interfaceName)}: calico-ts only deletes its own "cali*" interfaces`);
    }
    validateHostInterfaceName(interfaceName);
    await this.lock.run(false, () => this.deleteLink(interfaceName));
    this.log.info('endpoint removed', { interfaceName });
  }

  async reconcile(desired: DesiredHostState): Promise<ReconcileReport> {
    // Validate before taking the lock or touching anything.
    planReconcile({ links: [], routes: [], sysctls: new Map() }, desired);
    return this.lock.run(true, async () => {
      const kernel = await this.readKernelState(desired);
      const steps = planReconcile(kernel, desired);
      const report = await this.apply(steps);
      if (report.changes.length > 0) this.log.info('reconciled', { changes: report.changes });
      else this.log.debug('reconciled: no changes');
      return report;
    });
  }

  // --- kernel state -------------------------------------------------------------------------------

  /** Everything planReconcile() needs: 3 listings in parallel, then one sysctl read. */
  async readKernelState(desired: DesiredHostState): Promise<KernelState> {
    const wantsV6 = wantsIPv6(desired);
    const [linkOut, v4Out, v6Out] = await Promise.all([
      this.runner.run(['ip', '-json', '-d', 'link', 'show']),
      this.runner.run(['ip', '-json', '-4', 'route', 'show', 'proto', '80']),
      this.runner.run(['ip', '-json', '-6', 'route', 'show', 'proto', '80']).catch((err: unknown) => {
        // A kernel booted without IPv6 cannot list IPv6 routes; that only matters if we want some.
        if (wantsV6) throw err;
        this.log.debug('cannot list IPv6 routes; assuming none', { err });
        return { stdout: '[]', stderr: '' };
      }),
    ]);
    const links = parseLinks(linkOut.stdout);
    const routes = [...parseRoutes(v4Out.stdout, 4), ...parseRoutes(v6Out.stdout, 6)];
    const present = new Set(links.filter(isOwnedLink).map((l) => l.name));
    const keys = desired.endpoints
      .filter((e) => present.has(e.interfaceName))
      .flatMap((e) => endpointSysctls(e.interfaceName, e.ipNetworks.some((n) => n.includes(':'))).map((s) => s.key));
    if (wantsV6) keys.push(IPV6_FORWARDING.key);
    const sysctls = await this.sysctl.read(keys);
    return { links, routes, sysctls };
  }

  // --- internals ----------------------------------------------------------------------------------

  private async doEnsureBase(): Promise<void> {
    await Promise.all([
      this.sysctl.write(BASE_SYSCTLS),
      this.manageForwardChain ? this.ensureForwardChain() : Promise.resolve(),
      this.ensureGatewayRoute(),
    ]);
  }

  private async ensureForwardChain(): Promise<void> {
    const { stdout } = await this.runner.run(['iptables-save', '-t', 'filter']);
    const restore = planForwardChain(stdout);
    if (restore === undefined) return;
    await this.runner.run(['iptables-restore', '--noflush'], { input: restore });
    this.log.info('installed cali-FORWARD chain and FORWARD jump');
  }

  /** Proxy ARP answers for 169.254.1.1 only if the host can route it; add a route if it cannot. */
  private async ensureGatewayRoute(): Promise<void> {
    try {
      await this.runner.run(['ip', 'route', 'get', LINK_LOCAL_GATEWAY]);
      return;
    } catch {
      // unreachable: no default route (or a blackhole/unreachable one)
    }
    await this.ip(gatewayRouteCommand());
    this.log.info('no route covers the gateway address; added one on lo for proxy ARP', { gateway: LINK_LOCAL_GATEWAY });
  }

  private async doEnsureEndpoint(ep: NormalisedEndpoint): Promise<void> {
    const routes = ep.networks.map((n) => hostRouteReplaceCommand(n.family, n.dst, ep.interfaceName));
    try {
      // Common case, one exec: create the pair with the host end configured and up, then its routes.
      await this.ipBatch([vethAddCommand(ep.interfaceName, ep.peerName, ep.mtu), ...routes]);
      this.log.debug('veth created', { interfaceName: ep.interfaceName, peerName: ep.peerName });
    } catch (err) {
      // Already there (or a route failed after the link was made): complete it instead of recreating it.
      // The peer may already be inside the container; that is fine.
      const link = await this.probeLink(ep.interfaceName);
      if (!link) throw err;
      if (link.kind !== 'veth') {
        throw new AlreadyExistsError('interface', ep.interfaceName, `it is a ${link.kind ?? 'non-veth device'}, not a veth; delete it`);
      }
      await this.ip(hostLinkSetCommand(ep.interfaceName, ep.mtu));
      if (ep.mtu > 0) {
        const peer = await this.probeLink(ep.peerName);
        if (peer && peer.kind === 'veth' && peer.mtu !== ep.mtu) await this.ip(linkMtuCommand(ep.peerName, ep.mtu));
      }
      if (routes.length > 0) await this.ipBatch(routes);
    }
    await this.sysctl.write([...endpointSysctls(ep.interfaceName, hasIPv6(ep)), ...(hasIPv6(ep) ? [IPV6_FORWARDING] : [])]);
    this.log.info('endpoint ensured', { interfaceName: ep.interfaceName, networks: ep.networks.map((n) => n.dst) });
  }

  /** `ip link del`; fine if the link is already gone. */
  private async deleteLink(name: string): Promise<void> {
    try {
      await this.ip(linkDelCommand(name));
    } catch (err) {
      if (await this.probeLink(name)) throw err;
    }
  }

  private async probeLink(name: string): Promise<KernelLink | undefined> {
    try {
      const { stdout } = await this.runner.run(['ip', '-json', '-d', 'link', 'show', 'dev', name]);
      return parseLinks(stdout).find((l) => l.name === name);
    } catch {
      return undefined;
    }
  }

  private async ip(cmd: IpCommand): Promise<void> {
    await this.runner.run(ipArgv(cmd));
  }

  /** One exec for several ip commands (`ip -batch -` stops at the first failure). */
  private async ipBatch(cmds: readonly IpCommand[]): Promise<void> {
    const [only] = cmds;
    if (cmds.length === 0) return;
    if (cmds.length === 1 && only) return this.ip(only);
    await this.runner.run(['ip', '-batch', '-'], { input: batchInput(cmds) });
  }

  /**
   * Apply the plan group by group. A failure does not stop the other groups (one broken endpoint must not
   * keep the rest of the host stale); steps that depend on a link that failed to be created are skipped.
   * After everything was tried, the first error is thrown (all are logged).
   */
  private async apply(steps: readonly Step[]): Promise<ReconcileReport> {
    const changes: string[] = [];
    const errors: unknown[] = [];
    const failedLinks = new Set<string>();
    const fail = (err: unknown, step: Step): void => {
      errors.push(err);
      this.log.error('reconcile step failed', { step: describeStep(step).join('; ') || step.op, err });
    };
    const done = (step: Step): void => {
      changes.push(...describeStep(step));
    };
    const of = <K extends Step['op']>(op: K): Extract<Step, { op: K }>[] =>
      steps.filter((s): s is Extract<Step, { op: K }> => s.op === op);

    for (const s of of('link-del')) {
      try {
        await this.deleteLink(s.name);
        done(s);
      } catch (err) {
        fail(err, s);
      }
    }
    for (const s of of('conflict')) {
      failedLinks.add(s.name);
      fail(new AlreadyExistsError('interface', s.name, `it is a ${s.kind}, not a veth; delete it`), s);
    }
    for (const s of of('link-add')) {
      try {
        await this.ip(vethAddCommand(s.interfaceName, s.peerName, s.mtu));
        done(s);
      } catch (err) {
        failedLinks.add(s.interfaceName);
        fail(err, s);
      }
    }
    for (const s of [...of('link-set'), ...of('peer-mtu')]) {
      try {
        await this.ip(s.op === 'link-set' ? hostLinkSetCommand(s.name, s.mtu) : linkMtuCommand(s.name, s.mtu));
        done(s);
      } catch (err) {
        if (s.op === 'link-set') failedLinks.add(s.name);
        fail(err, s);
      }
    }
    await this.batchWithFallback(
      of('sysctl').filter((s) => !failedLinks.has(s.interfaceName)),
      (group) => this.sysctl.write(group.flatMap((s) => s.settings)),
      done,
      fail,
    );
    const replaces = steps.filter(
      (s): s is Extract<Step, { op: 'route-replace' | 'blackhole-add' }> =>
        (s.op === 'route-replace' && !failedLinks.has(s.dev)) || s.op === 'blackhole-add',
    );
    await this.batchWithFallback(
      replaces,
      (group) => this.ipBatch(group.map((s) => (s.op === 'route-replace' ? hostRouteReplaceCommand(s.family, s.dst, s.dev) : blackholeReplaceCommand(s.dst)))),
      done,
      fail,
    );
    for (const s of [...of('route-del'), ...of('blackhole-del')]) {
      try {
        await this.ip(routeDelCommand(s.route));
        done(s);
      } catch (err) {
        fail(err, s);
      }
    }
    if (errors.length > 0) {
      this.log.warn('reconcile incomplete', { failed: errors.length, changes });
      throw errors[0];
    }
    return { changes };
  }

  /** Run idempotent steps in one go; if that fails, once more one by one to apply what can be and find the culprit. */
  private async batchWithFallback<S extends Step>(
    group: S[],
    run: (group: S[]) => Promise<void>,
    done: (s: S) => void,
    fail: (err: unknown, s: S) => void,
  ): Promise<void> {
    if (group.length === 0) return;
    try {
      await run(group);
      group.forEach(done);
      return;
    } catch (err) {
      if (group.length === 1) {
        fail(err, group[0] as S);
        return;
      }
    }
    for (const s of group) {
      try {
        await run([s]);
        done(s);
      } catch (err) {
        fail(err, s);
      }
    }
  }
}
