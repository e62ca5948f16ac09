/**
 * The BGP sidecar against real BIRD 2 processes in throwaway network namespaces.
 *
 * Each suite builds its own testbed: a "fabric" netns holding a bridge, and one netns per host joined
 * to it by a veth (`eth0` in the host, 10.77.<suite>.<n>/24). Every host runs a BirdSupervisor whose
 * BIRD lives in the host's netns (`nsenter --net=`). Traffic only flows between these namespaces.
 * after() stops every BIRD and deletes the namespaces and run dirs, whatever happened.
 * Needs root, iproute2 and bird2. Set LOG_LEVEL=debug to see BIRD's own log lines.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { BirdConfigError, BirdNotRunningError, BirdSupervisor } from '../../plugin/bgp/bird.js';
import { computePeerSessions } from '../../plugin/bgp/peers.js';
import { renderBirdConfig } from '../../plugin/bgp/render.js';
import { DEFAULT_BGP_CONFIG, type BgpConfig, type BgpInputs, type BgpNode, type BgpPeerSpec, type SelectorMatcher } from '../../plugin/bgp/types.js';
import { CommandFailedError } from '../../plugin/lib/errors.js';
import { ExecFileRunner } from '../../plugin/lib/exec.js';
import { createLogger } from '../../plugin/lib/log.js';
import { isAlive, waitFor } from '../helpers/proc.js';

const isRoot = typeof process.getuid === 'function' && process.getuid() === 0;
const skip = isRoot ? false : 'needs root (network namespaces) and bird2';

const plain = new ExecFileRunner();
const log = createLogger(process.env.LOG_LEVEL ? (process.env.LOG_LEVEL as 'debug') : 'silent');

/** all() and key == 'value' (joined by &&): all these tests need of Calico's selector grammar. */
const match: SelectorMatcher = (selector, labels) =>
  selector.split('&&').every((term) => {
    const t = term.trim();
    if (t === 'all()') return true;
    const m = /^(\S+)\s*==\s*'([^']*)'$/.exec(t);
    if (!m) throw new Error(`test matcher cannot parse ${JSON.stringify(t)}`);
    return labels[m[1] ?? ''] === m[2];
  });

async function sh(argv: string[]): Promise<string> {
  return (await plain.run(argv, { timeoutMs: 10_000 })).stdout;
}

interface Host {
  name: string;
  ns: string;
  ip: string;
  dir: string;
  sup: BirdSupervisor;
}

interface KernelRoute {
  dst: string;
  gateway?: string;
  type?: string;
  protocol?: string;
}

/** A fabric bridge plus hosts; everything it creates is undone by destroy(). */
class Testbed {
  readonly fabric: string;
  readonly hosts: Host[] = [];
  /** Supervisors a test replaced (their BIRDs must be stopped too) and processes a test spawned itself. */
  readonly retired: BirdSupervisor[] = [];
  readonly pids: number[] = [];
  readonly dirs: string[] = [];
  private readonly namespaces: string[] = [];

  constructor(
    private readonly label: string,
    private readonly subnet: string, // "10.77.1"
  ) {
    this.fabric = `ctb-${process.pid}-${label}-f`;
  }

  async init(): Promise<void> {
    await this.addNs(this.fabric);
    await sh(['ip', '-n', this.fabric, 'link', 'add', 'br0', 'type', 'bridge']);
    await sh(['ip', '-n', this.fabric, 'link', 'set', 'br0', 'up']);
  }

  async addHost(name: string, hostPart: number): Promise<Host> {
    const ns = `ctb-${process.pid}-${this.label}-${name}`;
    await this.addNs(ns);
    const ip = `${this.subnet}.${hostPart}`;
    const veth = `v${hostPart}`;
    await sh(['ip', '-n', this.fabric, 'link', 'add', veth, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', ns]);
    await sh(['ip', '-n', this.fabric, 'link', 'set', veth, 'master', 'br0', 'up']);
    await sh(['ip', '-n', ns, 'addr', 'add', `${ip}/24`, 'dev', 'eth0']);
    await sh(['ip', '-n', ns, 'link', 'set', 'eth0', 'up']);
    const dir = await mkdtemp(path.join(tmpdir(), `ct-bird-${process.pid}-${name}-`));
    this.dirs.push(dir);
    const sup = new BirdSupervisor({
      runDir: dir,
      netnsPrefix: ['nsenter', `--net=/run/netns/${ns}`, '--'],
      log: log.child({ host: name }),
    });
    const host = { name, ns, ip, dir, sup };
    this.hosts.push(host);
    return host;
  }

  newSupervisor(h: Host): BirdSupervisor {
    this.retired.push(h.sup);
    h.sup = new BirdSupervisor({ runDir: h.dir, netnsPrefix: ['nsenter', `--net=/run/netns/${h.ns}`, '--'], log: log.child({ host: h.name }) });
    return h.sup;
  }

  /** Start a BIRD by hand (not supervised), as a crashed node run would have left it. */
  async spawnBird(ns: string, dir: string): Promise<number> {
    const child = spawn('nsenter', [`--net=/run/netns/${ns}`, '--', 'bird', '-f', '-c', `${dir}/bird.conf`, '-s', `${dir}/bird.ctl`, '-P', `${dir}/bird.pid`], {
      stdio: 'ignore',
    });
    const pid = child.pid;
    assert.ok(pid, 'spawned bird');
    this.pids.push(pid);
    await waitFor(() => plain.run(['birdc', '-s', `${dir}/bird.ctl`, 'show', 'status']).then(() => true), 5_000, `hand-started BIRD in ${ns}`);
    return pid;
  }

  private async addNs(ns: string): Promise<void> {
    await sh(['ip', 'netns', 'add', ns]);
    this.namespaces.push(ns);
    await sh(['ip', '-n', ns, 'link', 'set', 'lo', 'up']);
  }

  async destroy(): Promise<void> {
    const errors: unknown[] = [];
    for (const sup of [...this.hosts.map((h) => h.sup), ...this.retired]) await sup.stop().catch((e: unknown) => errors.push(e));
    for (const pid of this.pids) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        /* gone */
      }
    }
    // Belt and braces: a BIRD from one of our run dirs that is still alive is killed.
    for (const h of this.hosts) {
      const pid = Number((await readFile(path.join(h.dir, 'bird.pid'), 'utf8').catch(() => '')).trim());
      if (!pid) continue;
      const cmdline = await readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '');
      if (cmdline.includes(h.dir)) {
        try {
          process.kill(pid, 'SIGKILL');
        } catch {
          /* gone */
        }
      }
    }
    for (const ns of this.namespaces.reverse()) await sh(['ip', 'netns', 'delete', ns]).catch((e: unknown) => errors.push(e));
    for (const d of this.dirs) await rm(d, { recursive: true, force: true });
    if (errors.length) throw new Error(`testbed ${this.label} cleanup: ${errors.map(String).join('; ')}`);
  }
}

async function birdRoutes(ns: string): Promise<KernelRoute[]> {
  const out = (await sh(['ip', '-n', ns, '-json', 'route', 'show', 'proto', 'bird'])).trim();
  return out ? (JSON.parse(out) as KernelRoute[]) : [];
}

async function hasRoute(ns: string, dst: string, gateway: string): Promise<boolean> {
  return (await birdRoutes(ns)).some((r) => r.dst === dst && r.gateway === gateway && (r.type ?? 'unicast') === 'unicast');
}

const node = (name: string, ipv4: string, extra: Partial<BgpNode> = {}): BgpNode => ({ name, ipv4, asNumber: 64512, labels: {}, ...extra });

function render(self: BgpNode, nodes: BgpNode[], config: BgpConfig, peers: BgpPeerSpec[], localBlocks: string[], pools: BgpInputs['pools'], ctl: string) {
  const inputs: BgpInputs = { self, nodes, config, peers, localBlocks, pools };
  const sessions = computePeerSessions(inputs, match);
  return { sessions, text: renderBirdConfig(inputs, sessions, { controlSocket: ctl }) };
}

const POOLS = [{ cidr: '192.168.0.0/16', disabled: false }];

describe('rendered configurations pass `bird -p`', { skip }, () => {
  let dir = '';
  before(async () => {
    dir = await mkdtemp(path.join(tmpdir(), `ct-bird-p-${process.pid}-`));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('mesh, reflector with clients, eBGP, listen port, debug logging, no pools, no blocks', async () => {
    const rr = node('rr', '10.0.0.5', { routeReflectorClusterId: '224.0.0.1', labels: { 'route-reflector': 'true' } });
    const nodes = [node('a', '10.0.0.1'), node('b', '10.0.0.2', { asNumber: 65002 }), rr];
    const tor: BgpPeerSpec = { name: 'tor', peerIP: '10.0.0.254', asNumber: 65001 };
    const toRr: BgpPeerSpec = { name: 'rr', nodeSelector: 'all()', peerSelector: "route-reflector == 'true'" };
    const variants: Record<string, string> = {
      mesh: render(nodes[0] as BgpNode, nodes, DEFAULT_BGP_CONFIG, [], ['192.168.1.0/26'], POOLS, '/x').text,
      reflector: render(rr, nodes, { ...DEFAULT_BGP_CONFIG, nodeToNodeMeshEnabled: false }, [toRr, tor], ['192.168.5.0/26'], POOLS, '/x').text,
      port: render(nodes[1] as BgpNode, nodes, { ...DEFAULT_BGP_CONFIG, listenPort: 1790 }, [tor], [], POOLS, '/x').text,
      debug: render(nodes[0] as BgpNode, nodes, { ...DEFAULT_BGP_CONFIG, logSeverityScreen: 'Debug' }, [], [], [], '/x').text,
      fatal: render(nodes[0] as BgpNode, nodes, { ...DEFAULT_BGP_CONFIG, logSeverityScreen: 'Fatal' }, [], [], [{ cidr: '192.168.0.0/16', disabled: true }], '/x').text,
    };
    assert.match(variants.reflector ?? '', /rr client;\n {2}rr cluster id 224\.0\.0\.1;/);
    assert.match(variants.port ?? '', /local 10\.0\.0\.2 port 1790 as 65002;/);
    for (const [name, text] of Object.entries(variants)) {
      const file = path.join(dir, `${name}.conf`);
      await writeFile(file, text);
      await assert.doesNotReject(plain.run(['bird', '-p', '-c', file]), `variant ${name}:\n${text}`);
    }
  });
});

describe('supervision of a BIRD that cannot stay up', { skip }, () => {
  let dir = '';
  let sup: BirdSupervisor | undefined;
  before(async () => {
    dir = await mkdtemp(path.join(tmpdir(), `ct-bird-fake-${process.pid}-`));
  });
  after(async () => {
    await sup?.stop();
    await rm(dir, { recursive: true, force: true });
  });

  it('start failures surface BIRD\'s stderr; restarts back off exponentially; stop() ends them', async () => {
    // A stand-in for bird: `-p` accepts anything, `-f` logs the time and dies at once.
    const fake = path.join(dir, 'fake-bird');
    const starts = path.join(dir, 'starts');
    await writeFile(fake, `#!/bin/sh\ncase "$1" in -p) exit 0;; esac\ndate +%s%N >> ${starts}\necho "bird: cannot start (fake)" >&2\nexit 3\n`, { mode: 0o755 });
    sup = new BirdSupervisor({ runDir: path.join(dir, 'run'), birdBinary: fake, restartDelayMs: 100, log });
    await assert.rejects(sup.apply('router id 10.0.0.1;\n'), (e: unknown) => {
      assert.ok(e instanceof CommandFailedError, String(e));
      assert.equal(e.exitCode, 3);
      assert.match(e.message, /cannot start \(fake\)/);
      return true;
    });
    await waitFor(() => sup?.restartCount === 4, 3_000, 'four restarts');
    await sup.stop();
    const count = sup.restartCount;
    const times = (await readFile(starts, 'utf8')).trim().split('\n').map((t) => Number(BigInt(t) / 1_000_000n));
    const gaps = times.slice(1).map((t, i) => t - (times[i] ?? t));
    // 100, 200, 400, 800 ms (+ process start time): each wait about twice the previous one.
    for (let i = 1; i < gaps.length; i++) assert.ok((gaps[i] ?? 0) > (gaps[i - 1] ?? 0) * 1.5, `gaps ${gaps.join(', ')}`);
    await new Promise((r) => setTimeout(r, 1_000));
    assert.equal(sup.restartCount, count, 'no restart after stop()');
    assert.equal(sup.pid(), undefined);
  });
});

describe('a node-to-node mesh of two hosts', { skip }, () => {
  const bed = new Testbed('mesh', '10.77.1');
  let A!: Host;
  let B!: Host;
  const config: BgpConfig = { ...DEFAULT_BGP_CONFIG, listenPort: 1790 };
  const BLOCK_A = '192.168.10.0/26';
  const BLOCK_A2 = '192.168.10.64/26';
  const BLOCK_B = '192.168.20.64/26';
  let nodes: BgpNode[] = [];
  const conf = (h: Host, blocks: string[]) => render(nodes.find((n) => n.name === h.name) as BgpNode, nodes, config, [], blocks, POOLS, h.sup.ctlPath);

  before(async () => {
    await bed.init();
    A = await bed.addHost('a', 1);
    B = await bed.addHost('b', 2);
    nodes = [node('a', A.ip), node('b', B.ip)];
  });
  after(() => bed.destroy());

  it('each host learns the other block via the other host, as proto bird; no blackhole reaches the kernel', async () => {
    await assert.rejects(A.sup.status([]), (e: unknown) => e instanceof BirdNotRunningError && /^BIRD is not running: /.test(e.message));
    const t0 = Date.now();
    assert.equal(await A.sup.apply(conf(A, [BLOCK_A]).text), 'started');
    assert.equal(await B.sup.apply(conf(B, [BLOCK_B]).text), 'started');
    await waitFor(() => hasRoute(A.ns, BLOCK_B, B.ip), 10_000, `${BLOCK_B} via ${B.ip} on a`);
    await waitFor(() => hasRoute(B.ns, BLOCK_A, A.ip), 10_000, `${BLOCK_A} via ${A.ip} on b`);
    const ms = Date.now() - t0;

    for (const h of [A, B]) {
      const routes = await birdRoutes(h.ns);
      assert.equal(routes.length, 1, `only the peer's block from BIRD on ${h.name}: ${JSON.stringify(routes)}`);
      assert.ok(routes.every((r) => (r.type ?? 'unicast') === 'unicast'), 'no blackhole from BIRD');
    }
    const sessions = conf(A, [BLOCK_A]).sessions;
    const status = await A.sup.status(sessions);
    assert.equal(status.length, 1);
    assert.equal(status[0]?.peerIP, B.ip);
    assert.equal(status[0]?.type, 'node-to-node mesh');
    assert.equal(status[0]?.state, 'up');
    assert.equal(status[0]?.info, 'Established');
    // listenPort 1790: the session runs on it, and a (the lower IP) dialled b (passive).
    const ss = await sh(['nsenter', `--net=/run/netns/${A.ns}`, '--', 'ss', '-Htn', 'state', 'established']);
    assert.match(ss, new RegExp(`${B.ip.replaceAll('.', '\\.')}:1790`), ss);
    assert.ok(A.sup.pid() !== undefined && B.sup.pid() !== undefined);
    console.log(`# mesh of two: routes in both kernels ${ms} ms after start`);
  });

  it('the same config again is "unchanged" (no reload); a changed one is checked and reloaded', async () => {
    const before = A.sup.reloadCount;
    assert.equal(await A.sup.apply(conf(A, [BLOCK_A]).text), 'unchanged');
    assert.equal(A.sup.reloadCount, before);

    assert.equal(await A.sup.apply(conf(A, [BLOCK_A, BLOCK_A2]).text), 'reloaded');
    assert.equal(A.sup.reloadCount, before + 1);
    await waitFor(() => hasRoute(B.ns, BLOCK_A2, A.ip), 5_000, `${BLOCK_A2} via ${A.ip} on b after reload`);
    assert.equal(await A.sup.apply(conf(A, [BLOCK_A, BLOCK_A2]).text), 'unchanged');
    assert.equal(A.sup.reloadCount, before + 1);

    // Back to one block: b loses the withdrawn one.
    assert.equal(await A.sup.apply(conf(A, [BLOCK_A]).text), 'reloaded');
    await waitFor(async () => !(await hasRoute(B.ns, BLOCK_A2, A.ip)), 5_000, `${BLOCK_A2} withdrawn on b`);
  });

  it('a configuration BIRD rejects throws with BIRD\'s message; the running one stays', async () => {
    const good = conf(A, [BLOCK_A]).text;
    const pid = A.sup.pid();
    const reloads = A.sup.reloadCount;
    await assert.rejects(A.sup.apply(`${good}protocol bogus nonsense;\n`), (e: unknown) => {
      assert.ok(e instanceof BirdConfigError, String(e));
      assert.match(e.birdMessage, /bird\.conf\.tmp:\d+:\d+ .*syntax error/);
      assert.match(e.message, /^BIRD rejected the generated configuration: /);
      return true;
    });
    assert.equal(await readFile(A.sup.confPath, 'utf8'), good);
    assert.match(await readFile(A.sup.rejectedPath, 'utf8'), /protocol bogus nonsense;/);
    await assert.rejects(stat(A.sup.tmpPath), /ENOENT/);
    assert.equal(A.sup.pid(), pid);
    assert.equal(A.sup.reloadCount, reloads);
    assert.equal((await A.sup.status(conf(A, [BLOCK_A]).sessions))[0]?.info, 'Established');
    assert.ok(await hasRoute(A.ns, BLOCK_B, B.ip));
    assert.equal(await A.sup.apply(good), 'unchanged');
  });

  it('BIRD killed with SIGKILL is restarted; routes and session are back within 5 s', async () => {
    const oldPid = A.sup.pid();
    assert.ok(oldPid);
    const restarts = A.sup.restartCount;
    const t0 = Date.now();
    process.kill(oldPid, 'SIGKILL');
    await waitFor(() => {
      const p = A.sup.pid();
      return p !== undefined && p !== oldPid;
    }, 3_000, 'a new BIRD pid');
    assert.equal(A.sup.restartCount, restarts + 1);
    const sessions = conf(A, [BLOCK_A]).sessions;
    await waitFor(async () => (await A.sup.status(sessions))[0]?.info === 'Established', 5_000, 'session re-established');
    await waitFor(() => hasRoute(A.ns, BLOCK_B, B.ip), 5_000, `${BLOCK_B} back on a`);
    await waitFor(() => hasRoute(B.ns, BLOCK_A, A.ip), 5_000, `${BLOCK_A} back on b`);
    console.log(`# SIGKILL → restarted, session and routes back in ${Date.now() - t0} ms`);
    // The restarted BIRD runs the last good configuration: nothing to do.
    assert.equal(await A.sup.apply(conf(A, [BLOCK_A]).text), 'unchanged');
  });

  it('stop() terminates BIRD; status then says it is not running; the supervisor does not restart it', async () => {
    const pid = B.sup.pid();
    assert.ok(pid);
    await B.sup.stop();
    assert.equal(B.sup.pid(), undefined);
    assert.equal(await isAlive(pid), false, 'BIRD is gone');
    await assert.rejects(B.sup.status([]), /^BirdNotRunningError: BIRD is not running: /);
    await new Promise((r) => setTimeout(r, 400));
    assert.equal(B.sup.pid(), undefined);
    // a withdraws b's block once the session is gone.
    await waitFor(async () => !(await hasRoute(A.ns, BLOCK_B, B.ip)), 5_000, `${BLOCK_B} withdrawn on a`);
  });

  it('after a node restart: a BIRD left on our pid file + control socket is replaced; a foreign BIRD is never touched', async () => {
    const good = conf(B, [BLOCK_B]).text;
    assert.equal(await readFile(B.sup.confPath, 'utf8'), good);

    // A foreign BIRD (another run dir, in the fabric netns) whose pid happens to be in our pid file.
    const foreignDir = await mkdtemp(path.join(tmpdir(), `ct-bird-${process.pid}-foreign-`));
    bed.dirs.push(foreignDir);
    await writeFile(`${foreignDir}/bird.conf`, 'router id 10.77.1.99;\nprotocol device {}\n');
    const foreign = await bed.spawnBird(bed.fabric, foreignDir);
    await writeFile(B.sup.pidPath, `${foreign}\n`);
    const sup2 = bed.newSupervisor(B);
    assert.equal(await sup2.apply(good), 'started');
    assert.ok(await isAlive(foreign), 'the foreign BIRD is untouched');
    await waitFor(() => hasRoute(A.ns, BLOCK_B, B.ip), 10_000, `${BLOCK_B} on a`);
    await sup2.stop();

    // Our own BIRD, orphaned by a node that died without stop(): same argv, our pid file and socket.
    const orphan = await bed.spawnBird(B.ns, B.dir);
    const sup3 = bed.newSupervisor(B);
    assert.equal(await sup3.apply(good), 'started');
    assert.equal(await isAlive(orphan), false, 'the orphaned BIRD was replaced');
    assert.notEqual(sup3.pid(), orphan);
    assert.equal(Number((await readFile(B.sup.pidPath, 'utf8')).trim()), sup3.pid());
    await waitFor(() => hasRoute(A.ns, BLOCK_B, B.ip), 10_000, `${BLOCK_B} on a via the new BIRD`);
    assert.ok(await isAlive(foreign), 'the foreign BIRD is still untouched');
  });
});

describe('a route reflector with two clients, mesh off', { skip }, () => {
  const bed = new Testbed('rr', '10.77.2');
  const config: BgpConfig = { ...DEFAULT_BGP_CONFIG, nodeToNodeMeshEnabled: false };
  const peers: BgpPeerSpec[] = [{ name: 'to-rr', nodeSelector: 'all()', peerSelector: "route-reflector == 'true'" }];
  const blocks: Record<string, string> = { rr: '192.168.50.0/26', c1: '192.168.30.0/26', c2: '192.168.40.0/26' };
  let hosts: Host[] = [];
  let nodes: BgpNode[] = [];

  before(async () => {
    await bed.init();
    hosts = [await bed.addHost('rr', 1), await bed.addHost('c1', 2), await bed.addHost('c2', 3)];
    nodes = [
      node('rr', '10.77.2.1', { routeReflectorClusterId: '224.0.0.1', labels: { 'route-reflector': 'true' } }),
      node('c1', '10.77.2.2', { labels: { rack: 'a' } }),
      node('c2', '10.77.2.3', { labels: { rack: 'b' } }),
    ];
  });
  after(() => bed.destroy());

  it('clients learn each other\'s blocks through the reflector, next hop unchanged', async () => {
    const t0 = Date.now();
    const sessions: Record<string, ReturnType<typeof computePeerSessions>> = {};
    for (const h of hosts) {
      const self = nodes.find((n) => n.name === h.name) as BgpNode;
      const r = render(self, nodes, config, peers, [blocks[h.name] ?? ''], POOLS, h.sup.ctlPath);
      sessions[h.name] = r.sessions;
      assert.equal(await h.sup.apply(r.text), 'started');
    }
    // Clients only peer with the reflector; the reflector treats both as clients.
    assert.deepEqual(sessions.c1?.map((s) => s.peerIP), ['10.77.2.1']);
    assert.deepEqual(sessions.rr?.map((s) => [s.peerIP, s.routeReflectorClient]), [
      ['10.77.2.2', true],
      ['10.77.2.3', true],
    ]);
    const [rr, c1, c2] = hosts as [Host, Host, Host];
    await waitFor(() => hasRoute(c1.ns, blocks.c2 ?? '', c2.ip), 10_000, 'c2 block on c1 via c2');
    await waitFor(() => hasRoute(c2.ns, blocks.c1 ?? '', c1.ip), 10_000, 'c1 block on c2 via c1');
    await waitFor(() => hasRoute(c1.ns, blocks.rr ?? '', rr.ip), 10_000, 'rr block on c1');
    await waitFor(() => hasRoute(rr.ns, blocks.c1 ?? '', c1.ip), 10_000, 'c1 block on rr');
    const st = await rr.sup.status(sessions.rr ?? []);
    assert.deepEqual(st.map((s) => [s.peerIP, s.state, s.info]), [
      ['10.77.2.2', 'up', 'Established'],
      ['10.77.2.3', 'up', 'Established'],
    ]);
    console.log(`# route reflector: clients have each other's blocks ${Date.now() - t0} ms after start`);
  });
});

describe('an external router (eBGP ToR)', { skip }, () => {
  const bed = new Testbed('tor', '10.77.3');
  let host!: Host;
  let tor!: Host;
  const TOR_IP = '10.77.3.254';
  const pools = [...POOLS, { cidr: '10.200.0.0/16', disabled: true }];
  const torConf = (hostIp: string): string =>
    [
      '# A plain BIRD 2 playing a top-of-rack router in AS 65001 (hand-written, not rendered).',
      `router id ${TOR_IP};`,
      'log stderr all;',
      'protocol device {}',
      'protocol static tor_routes { ipv4; route 192.168.99.0/24 blackhole; route 172.20.0.0/16 blackhole; }',
      'protocol kernel { ipv4 { import none; export where source = RTS_BGP; }; }',
      `protocol bgp host1 { local ${TOR_IP} as 65001; neighbor ${hostIp} as 64512; ipv4 { import all; export where source = RTS_STATIC; }; }`,
      '',
    ].join('\n');

  before(async () => {
    await bed.init();
    host = await bed.addHost('h1', 1);
    tor = await bed.addHost('tor', 254);
  });
  after(() => bed.destroy());

  it('the ToR receives the host\'s pool blocks only; the host takes only pool routes from it', async () => {
    const self = node('h1', host.ip);
    const peers: BgpPeerSpec[] = [{ name: 'tor', peerIP: TOR_IP, asNumber: 65001 }];
    // One block in the pool, one outside every pool, one in a disabled pool.
    const r = render(self, [self], DEFAULT_BGP_CONFIG, peers, ['192.168.60.0/26', '172.16.5.0/26', '10.200.0.0/26'], pools, host.sup.ctlPath);
    assert.deepEqual(r.sessions.map((s) => [s.protocolName, s.asNumber, s.type]), [['Global_10_77_3_254', 65001, 'global']]);
    assert.equal(await tor.sup.apply(torConf(host.ip)), 'started');
    assert.equal(await host.sup.apply(r.text), 'started');

    await waitFor(() => hasRoute(tor.ns, '192.168.60.0/26', host.ip), 10_000, 'host block on the ToR');
    await waitFor(() => hasRoute(host.ns, '192.168.99.0/24', TOR_IP), 10_000, 'ToR pool route on the host');
    // The host exported nothing else (no outside-pool or disabled-pool block, no device route) ...
    const onTor = (await birdRoutes(tor.ns)).map((x) => x.dst);
    assert.deepEqual(onTor, ['192.168.60.0/26']);
    // ... and imported nothing outside the pools.
    const onHost = (await birdRoutes(host.ns)).map((x) => x.dst);
    assert.deepEqual(onHost, ['192.168.99.0/24']);
    const st = await host.sup.status(r.sessions);
    assert.deepEqual(st, [{ peerIP: TOR_IP, type: 'global', state: 'up', since: st[0]?.since ?? '', info: 'Established' }]);
    assert.match(st[0]?.since ?? '', /^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}$/);
  });
});
