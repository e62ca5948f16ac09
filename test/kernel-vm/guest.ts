/**
 * Runs INSIDE the qemu VM of the kernel lane (started by the initramfs's /init, as root, on Debian's
 * kernel, which has the ipip module). Builds two "hosts" as network namespaces joined by a veth, and
 * on each runs the node's real code: the IPIP executor (loading the module with modprobe, tunl0 address
 * and MTU), the workload dataplane (a container veth + /32 route), and BIRD 2 with the configuration
 * renderBirdConfig() makes, whose import filter must put the other host's block `via <host> dev tunl0
 * onlink` in the kernel. Then a container on host A pings the one on host B, over tunl0.
 *
 * Every result is one console line `CALICO-TS-VM {"step": ..., ...}`; the last is `{"step":"done"}` or
 * `{"step":"failed","error":...}`. The host side (ipip-vm.test.ts) reads them from the serial console.
 */
import { spawn } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { ipipMtu } from '../../plugin/calc/ipip.js';
import { matchSelector } from '../../plugin/calc/selector.js';
import { computePeerSessions } from '../../plugin/bgp/peers.js';
import { renderBirdConfig } from '../../plugin/bgp/render.js';
import { DEFAULT_BGP_CONFIG, type BgpInputs, type BgpNode } from '../../plugin/bgp/types.js';
import { IpipDataplane } from '../../plugin/dataplane/ipip.js';
import { LinuxDataplane } from '../../plugin/dataplane/linux.js';
import { ExecFileRunner } from '../../plugin/lib/exec.js';

const MARK = 'CALICO-TS-VM';
const report = (step: string, data: Record<string, unknown> = {}): void => {
  process.stdout.write(`${MARK} ${JSON.stringify({ step, ...data })}\n`);
};

const POOL = '10.77.0.0/16';
interface GuestHost {
  name: string;
  ip: string;
  block: string;
  tunnel: string;
  workload: string;
}
const HOSTS: GuestHost[] = [
  { name: 'hosta', ip: '10.0.0.1', block: '10.77.1.0/26', tunnel: '10.77.1.0', workload: '10.77.1.5' },
  { name: 'hostb', ip: '10.0.0.2', block: '10.77.2.0/26', tunnel: '10.77.2.0', workload: '10.77.2.5' },
];

const root = new ExecFileRunner();
const inNs = (ns: string) => new ExecFileRunner(['nsenter', `--net=/run/netns/${ns}`]);
const sh = async (r: ExecFileRunner, ...argv: string[]): Promise<string> => (await r.run(argv, { timeoutMs: 60_000 })).stdout;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function waitFor<T>(what: string, timeoutMs: number, probe: () => Promise<T | undefined>): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await probe().catch(() => undefined);
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(250);
  }
}

async function tunl0Counters(ns: string): Promise<{ tx: number; rx: number }> {
  const [link] = JSON.parse(await sh(inNs(ns), 'ip', '-json', '-s', 'link', 'show', 'dev', 'tunl0')) as { stats64: { tx: { packets: number }; rx: { packets: number } } }[];
  return { tx: link?.stats64.tx.packets ?? 0, rx: link?.stats64.rx.packets ?? 0 };
}

async function main(): Promise<void> {
  report('start', { kernel: (await sh(root, 'uname', '-r')).trim() });

  // The node loads the module itself: /init loaded only veth.
  const before = await new IpipDataplane(root).readTunl0();
  const availability = await new IpipDataplane(root).ensureAvailable();
  report('module', { tunl0Before: before !== undefined, availability });
  if (!availability.available) throw new Error(availability.reason);

  // Two hosts on one link (the underlay), each with a container namespace.
  for (const h of HOSTS) {
    await sh(root, 'ip', 'netns', 'add', h.name);
    await sh(root, 'ip', 'netns', 'add', `${h.name}-c`);
    for (const ns of [h.name, `${h.name}-c`]) await sh(inNs(ns), 'ip', 'link', 'set', 'lo', 'up');
  }
  const [a, b] = HOSTS as [GuestHost, GuestHost];
  await sh(root, 'ip', 'link', 'add', 'eth0', 'netns', a.name, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', b.name);
  for (const h of HOSTS) {
    await sh(inNs(h.name), 'ip', 'addr', 'add', `${h.ip}/24`, 'dev', 'eth0');
    await sh(inNs(h.name), 'ip', 'link', 'set', 'eth0', 'up');
  }

  for (const h of HOSTS) {
    const runner = inNs(h.name);
    // IPIP, as the node's agent does it: available? underlay MTU, then tunl0.
    const ipip = new IpipDataplane(runner);
    const avail = await ipip.ensureAvailable();
    if (!avail.available) throw new Error(`${h.name}: ${avail.reason}`);
    const mtu = ipipMtu(0, await ipip.underlayMtu(h.ip));
    const changes = await ipip.apply({ address: h.tunnel, mtu }, [POOL]);
    const again = await ipip.apply({ address: h.tunnel, mtu }, [POOL]);
    const t = await ipip.readTunl0();
    report('tunl0', { host: h.name, changes, secondRunChanges: again, tunl0: t });

    // The workload: host veth + /32 route (LinuxDataplane), then what Docker does with the peer.
    const dp = new LinuxDataplane(runner, { manageForwardChain: false });
    await dp.ensureBase();
    const iface = `cali${h.name}0000`.slice(0, 15);
    await dp.ensureEndpoint({ interfaceName: iface, peerName: `tmp${h.name}`, ipNetworks: [`${h.workload}/32`], mtu });
    await sh(runner, 'ip', 'link', 'set', `tmp${h.name}`, 'netns', `${h.name}-c`);
    const c = inNs(`${h.name}-c`);
    await sh(c, 'ip', 'link', 'set', `tmp${h.name}`, 'name', 'eth0');
    await sh(c, 'ip', 'addr', 'add', `${h.workload}/32`, 'dev', 'eth0');
    await sh(c, 'ip', 'link', 'set', 'eth0', 'up');
    await sh(c, 'ip', 'route', 'add', '169.254.1.1', 'dev', 'eth0', 'scope', 'link');
    await sh(c, 'ip', 'route', 'add', 'default', 'via', '169.254.1.1', 'dev', 'eth0');
    await sh(runner, 'ip', 'route', 'replace', 'blackhole', h.block, 'proto', '80');
  }

  // BIRD 2 with our rendered configuration: the import filter makes the tunl0 routes.
  const nodes: BgpNode[] = HOSTS.map((h) => ({ name: h.name, ipv4: h.ip, asNumber: 64512, labels: {} }));
  for (const h of HOSTS) {
    const self = nodes.find((n) => n.name === h.name) as BgpNode;
    const inputs: BgpInputs = {
      self,
      nodes,
      config: DEFAULT_BGP_CONFIG,
      peers: [],
      localBlocks: [h.block],
      pools: [{ cidr: POOL, disabled: false, ipipMode: 'Always' }],
      localSubnet: '10.0.0.0/24',
      ipipTunnel: true,
    };
    const conf = `/tmp/bird-${h.name}.conf`;
    writeFileSync(conf, renderBirdConfig(inputs, computePeerSessions(inputs, matchSelector)));
    await sh(root, 'bird', '-p', '-c', conf);
    // BIRD daemonises; the VM is powered off at the end, which ends it.
    await sh(inNs(h.name), 'bird', '-c', conf, '-s', `/tmp/bird-${h.name}.ctl`, '-P', `/tmp/bird-${h.name}.pid`);
  }
  for (const [h, other] of [
    [a, b],
    [b, a],
  ] as const) {
    const route = await waitFor(`the BIRD route to ${other.block} on ${h.name}`, 90_000, async () => {
      const out = (await sh(inNs(h.name), 'ip', '-d', 'route', 'show', other.block)).trim();
      return out.includes('dev tunl0') ? out : undefined;
    });
    report('route', { host: h.name, route });
  }

  // Container on A → container on B, and the tunnel addresses, over tunl0.
  const countersBefore = await tunl0Counters(a.name);
  const ping = await sh(inNs(`${a.name}-c`), 'ping', '-c', '3', '-W', '5', b.workload);
  const tunnelPing = await sh(inNs(a.name), 'ping', '-c', '1', '-W', '5', '-I', a.tunnel, b.tunnel);
  const countersAfter = await tunl0Counters(a.name);
  report('ping', {
    from: a.workload,
    to: b.workload,
    ok: / 0% packet loss/.test(ping),
    summary: ping.trim().split('\n').slice(-2),
    tunnelPingOk: / 0% packet loss/.test(tunnelPing),
    tunl0PacketsA: { tx: countersAfter.tx - countersBefore.tx, rx: countersAfter.rx - countersBefore.rx },
  });

  if (process.env.CALICO_TS_VM_IPERF === '1') await iperfRatio(a, b);
  report('done');
}

/**
 * iperf3 container→container over the product's IPIP path (the node's code + BIRD's routes), against the
 * same path built by hand with `ip` commands in two more host namespaces (veth + /32 route + proxy ARP,
 * tunl0 with a /32, `via <host> dev tunl0 onlink`). Alternated, so a trend in the VM favours neither.
 */
async function iperfRatio(a: GuestHost, b: GuestHost): Promise<void> {
  const seconds = Number(process.env.CALICO_TS_VM_IPERF_SECONDS ?? '5');
  const rounds = Number(process.env.CALICO_TS_VM_IPERF_ROUNDS ?? '3');
  const measure = async (clientNs: string, serverNs: string, serverIp: string): Promise<number> => {
    const server = spawn('nsenter', [`--net=/run/netns/${serverNs}`, 'iperf3', '-s', '-1', '-B', serverIp], { stdio: 'ignore' });
    try {
      await sleep(1000);
      const out = await sh(inNs(clientNs), 'iperf3', '-c', serverIp, '-t', String(seconds), '-J');
      return (JSON.parse(out) as { end: { sum_received: { bits_per_second: number } } }).end.sum_received.bits_per_second;
    } finally {
      server.kill('SIGKILL');
    }
  };
  const hand: GuestHost[] = [
    { name: 'handa', ip: '10.0.1.1', block: '10.88.1.0/26', tunnel: '10.88.1.0', workload: '10.88.1.5' },
    { name: 'handb', ip: '10.0.1.2', block: '10.88.2.0/26', tunnel: '10.88.2.0', workload: '10.88.2.5' },
  ];
  for (const h of hand) {
    await sh(root, 'ip', 'netns', 'add', h.name);
    await sh(root, 'ip', 'netns', 'add', `${h.name}-c`);
    for (const ns of [h.name, `${h.name}-c`]) await sh(inNs(ns), 'ip', 'link', 'set', 'lo', 'up');
  }
  await sh(root, 'ip', 'link', 'add', 'eth0', 'netns', 'handa', 'type', 'veth', 'peer', 'name', 'eth0', 'netns', 'handb');
  for (const [h, o] of [
    [hand[0], hand[1]],
    [hand[1], hand[0]],
  ] as [GuestHost, GuestHost][]) {
    const r = inNs(h.name);
    const c = inNs(`${h.name}-c`);
    await sh(r, 'sysctl', '-q', '-w', 'net.ipv4.ip_forward=1');
    await sh(r, 'ip', 'addr', 'add', `${h.ip}/24`, 'dev', 'eth0');
    await sh(r, 'ip', 'link', 'set', 'eth0', 'up');
    await sh(r, 'ip', 'link', 'set', 'tunl0', 'mtu', '1480', 'up');
    await sh(r, 'ip', 'addr', 'add', `${h.tunnel}/32`, 'dev', 'tunl0');
    await sh(r, 'ip', 'route', 'add', '169.254.1.1/32', 'dev', 'lo');
    await sh(r, 'ip', 'link', 'add', 'calihand', 'mtu', '1480', 'address', 'ee:ee:ee:ee:ee:ee', 'type', 'veth', 'peer', 'name', 'eth0', 'mtu', '1480', 'netns', `${h.name}-c`);
    await sh(r, 'ip', 'link', 'set', 'calihand', 'up');
    await sh(r, 'sysctl', '-q', '-w', 'net.ipv4.conf.calihand.proxy_arp=1', 'net.ipv4.neigh.calihand.proxy_delay=0', 'net.ipv4.conf.calihand.forwarding=1');
    await sh(r, 'ip', 'route', 'add', `${h.workload}/32`, 'dev', 'calihand', 'scope', 'link');
    await sh(r, 'ip', 'route', 'add', o.block, 'via', o.ip, 'dev', 'tunl0', 'onlink');
    await sh(c, 'ip', 'addr', 'add', `${h.workload}/32`, 'dev', 'eth0');
    await sh(c, 'ip', 'link', 'set', 'eth0', 'up');
    await sh(c, 'ip', 'route', 'add', '169.254.1.1', 'dev', 'eth0', 'scope', 'link');
    await sh(c, 'ip', 'route', 'add', 'default', 'via', '169.254.1.1', 'dev', 'eth0');
  }
  await sh(inNs('handa-c'), 'ping', '-c', '1', '-W', '5', '10.88.2.5');
  const productRun = () => measure(`${a.name}-c`, `${b.name}-c`, b.workload);
  const handRun = () => measure('handa-c', 'handb-c', '10.88.2.5');
  // Warm-up (TCG translates code on first use: early runs are slower), then A B B A rounds.
  await productRun();
  await handRun();
  const product: number[] = [];
  const byHand: number[] = [];
  for (let i = 0; i < rounds; i++) {
    if (i % 2 === 0) {
      product.push(await productRun());
      byHand.push(await handRun());
    } else {
      byHand.push(await handRun());
      product.push(await productRun());
    }
  }
  const median = (xs: number[]) => {
    const s = [...xs].sort((x, y) => x - y);
    const m = Math.floor(s.length / 2);
    return s.length % 2 ? (s[m] as number) : ((s[m - 1] as number) + (s[m] as number)) / 2;
  };
  report('iperf', { seconds, rounds, productBps: product, handBps: byHand, ratio: median(product) / median(byHand) });
}

/** What the namespaces look like, for the report of a failed run. */
async function diagnostics(): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  for (const ns of ['', ...HOSTS.map((h) => h.name)]) {
    const r = ns ? inNs(ns) : root;
    out[ns || 'root'] = await r.run(['ip', '-d', 'addr', 'show']).then((x) => x.stdout, (e: unknown) => `error: ${e instanceof Error ? e.message : String(e)}`);
  }
  return out;
}

main().catch(async (err: unknown) => {
  report('failed', { error: err instanceof Error ? err.message : String(err), diagnostics: await diagnostics().catch(() => ({})) });
});
