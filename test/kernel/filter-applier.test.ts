/**
 * FilterApplier against the real kernel (iptables v1.8.9 nf_tables, ipset v7.17), inside throwaway
 * network namespaces (iptables and ipsets are both per network namespace):
 *   ct-fa-<pid>-h        the "host" whose filter table and ipsets the applier programs (nsenter --net=),
 *   ct-fa-<pid>-a/-b/-c  three "workloads", plugged in with LinuxDataplane as Docker would; A and B have
 *                        policy, C's interface is unknown to the policy (fail closed: dropped);
 *   ct-fa-<pid>-s        a host for the scale run (500 endpoint chains, 200 policy chains, 200 ipsets).
 * after() deletes them whatever happened. Needs root, iproute2, iptables, ipset and ping.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { performance } from 'node:perf_hooks';
import { ExecFileRunner, type CommandResult, type CommandRunner, type RunOptions } from '../../plugin/lib/exec.js';
import { LinuxDataplane } from '../../plugin/dataplane/linux.js';
import { FilterApplier, parseIpsetSave, parseIptablesSave } from '../../plugin/dataplane/filter-applier.js';
import type { DesiredEndpoint } from '../../plugin/dataplane/types.js';
import type { ChainSpec, DesiredFilterState, IpsetSpec } from '../../plugin/dataplane/policy-types.js';

const isRoot = typeof process.getuid === 'function' && process.getuid() === 0;
const skip = isRoot ? false : 'needs root (network namespaces)';

const base = `ct-fa-${process.pid}`;
const HOST = `${base}-h`;
const A = `${base}-a`;
const B = `${base}-b`;
const C = `${base}-c`;
const SCALE = `${base}-s`;
const ALL_NS = [HOST, A, B, C, SCALE];

const plain = new ExecFileRunner();
const inNs = (ns: string): ExecFileRunner => new ExecFileRunner(['nsenter', `--net=/run/netns/${ns}`]);
const host = inNs(HOST);

/** Passes everything through, remembering each argv and how long it took. */
class Recording implements CommandRunner {
  readonly calls: string[] = [];
  readonly ms: number[] = [];
  constructor(private readonly inner: CommandRunner) {}
  async run(argv: readonly string[], options?: RunOptions): Promise<CommandResult> {
    this.calls.push(argv.join(' '));
    const t0 = performance.now();
    try {
      return await this.inner.run(argv, options);
    } finally {
      this.ms.push(performance.now() - t0);
    }
  }
  reset(): void {
    this.calls.length = 0;
    this.ms.length = 0;
  }
}

async function sh(r: CommandRunner, ...argv: string[]): Promise<string> {
  return (await r.run(argv, { timeoutMs: 20_000 })).stdout;
}
async function pings(r: CommandRunner, addr: string): Promise<boolean> {
  try {
    await r.run(['ping', '-c1', '-W1', '-q', addr], { timeoutMs: 5_000 });
    return true;
  } catch {
    return false;
  }
}
/** Packet counters of each rule of a chain (`iptables -L <chain> -v -x -n`). */
async function counters(chain: string): Promise<number[]> {
  const lines = (await sh(host, 'iptables', '-L', chain, '-v', '-x', '-n')).trim().split('\n').slice(2);
  return lines.map((l) => Number(l.trim().split(/\s+/)[0]));
}
async function rules(chain: string): Promise<string[]> {
  return (await sh(host, 'iptables', '-S', chain)).trim().split('\n');
}
async function ourChains(r: CommandRunner = host): Promise<string[]> {
  return [...parseIptablesSave(await sh(r, 'iptables-save', '-t', 'filter')).chains.keys()].filter((n) => n.startsWith('cali-')).sort();
}
async function setNames(r: CommandRunner = host): Promise<string[]> {
  return [...parseIpsetSave(await sh(r, 'ipset', 'save')).keys()].sort();
}

const epA: DesiredEndpoint = { interfaceName: 'cali0000000000a', peerName: 'tmp0000000000a', ipNetworks: ['10.65.0.2/32'], mtu: 0 };
const epB: DesiredEndpoint = { interfaceName: 'cali0000000000b', peerName: 'tmp0000000000b', ipNetworks: ['10.65.0.3/32'], mtu: 0 };
const epC: DesiredEndpoint = { interfaceName: 'cali0000000000c', peerName: 'tmp0000000000c', ipNetworks: ['10.65.0.4/32'], mtu: 0 };
const ipA = '10.65.0.2';
const ipB = '10.65.0.3';
const ipC = '10.65.0.4';

/**
 * Hand-written policy, shaped like Calico's: traffic from a workload goes (goto) to its from-workload chain,
 * which returns when egress is allowed; traffic to a workload is then decided by its to-workload chain
 * (ACCEPT or DROP); what comes from a workload and goes elsewhere is accepted at the end. A and B are known
 * endpoints; B accepts ICMP only from cali40s:web; A accepts only replies; anything else is dropped.
 */
function policy(webMembers: string[], opts: { twA?: string[]; webType?: IpsetSpec['type']; withWeb?: boolean } = {}): DesiredFilterState {
  const withWeb = opts.withWeb ?? true;
  const chains: ChainSpec[] = [
    { name: 'cali-FORWARD', rules: ['-i cali+ -j cali-from-wl-dispatch', '-o cali+ -j cali-to-wl-dispatch', '-i cali+ -j ACCEPT'] },
    // Fail closed: a cali interface the policy does not know is dropped, both ways.
    { name: 'cali-from-wl-dispatch', rules: [`-i ${epA.interfaceName} -g cali-fw-a`, `-i ${epB.interfaceName} -g cali-fw-b`, '-j DROP'] },
    { name: 'cali-to-wl-dispatch', rules: [`-o ${epA.interfaceName} -g cali-tw-a`, `-o ${epB.interfaceName} -g cali-tw-b`, '-j DROP'] },
    { name: 'cali-fw-a', rules: ['-m comment --comment "egress: allowed" -j RETURN'] }, // a comment of its own too
    { name: 'cali-fw-b', rules: ['-j RETURN'] },
    { name: 'cali-tw-a', rules: opts.twA ?? ['-m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT', '-j DROP'] },
    { name: 'cali-tw-b', rules: withWeb ? ['-j cali-pi-web-icmp', '-j DROP'] : ['-j DROP'] },
  ];
  if (withWeb) chains.push({ name: 'cali-pi-web-icmp', rules: ['-p icmp -m set --match-set cali40s:web src -j ACCEPT'] });
  return {
    chains,
    ipsets: withWeb ? [{ name: 'cali40s:web', type: opts.webType ?? 'hash:net', members: webMembers }] : [],
    hooks: { FORWARD: 'cali-FORWARD' },
  };
}

async function assertForeignIntact(): Promise<void> {
  const fwd = await rules('FORWARD');
  assert.ok(fwd.includes('-A FORWARD -s 192.0.2.1/32 -j ACCEPT'), `foreign FORWARD rule kept: ${fwd.join('; ')}`);
  assert.deepEqual(await rules('FOREIGN'), ['-N FOREIGN', '-A FOREIGN -s 192.0.2.9/32 -j RETURN']);
  assert.ok((await rules('INPUT')).includes('-A INPUT -j FOREIGN'));
  assert.ok((await setNames()).includes('keepme'), 'foreign ipset kept');
}

describe('FilterApplier on a real kernel', { skip }, () => {
  const applier = new FilterApplier(host);

  before(async () => {
    for (const ns of ALL_NS) await plain.run(['ip', 'netns', 'add', ns]);
    for (const ns of ALL_NS) await sh(inNs(ns), 'ip', 'link', 'set', 'lo', 'up');
    const dp = new LinuxDataplane(host);
    await dp.ensureBase(); // forwarding, gateway route, and its own cali-FORWARD + cali:forward-jump
    for (const [ep, ns] of [
      [epA, A],
      [epB, B],
      [epC, C],
    ] as const) {
      await dp.ensureEndpoint(ep);
      const ctr = inNs(ns);
      await sh(host, 'ip', 'link', 'set', ep.peerName, 'netns', ns);
      await sh(ctr, 'ip', 'link', 'set', ep.peerName, 'name', 'eth0');
      await sh(ctr, 'ip', 'addr', 'add', ep.ipNetworks[0] ?? '', 'dev', 'eth0');
      await sh(ctr, 'ip', 'link', 'set', 'eth0', 'up');
      await sh(ctr, 'ip', 'route', 'add', '169.254.1.1', 'dev', 'eth0', 'scope', 'link');
      await sh(ctr, 'ip', 'route', 'add', 'default', 'via', '169.254.1.1');
    }
    // Someone else's chain, rules and set.
    await sh(host, 'iptables', '-N', 'FOREIGN');
    await sh(host, 'iptables', '-A', 'FOREIGN', '-s', '192.0.2.9', '-j', 'RETURN');
    await sh(host, 'iptables', '-A', 'INPUT', '-j', 'FOREIGN');
    await sh(host, 'iptables', '-A', 'FORWARD', '-s', '192.0.2.1', '-j', 'ACCEPT');
    await sh(host, 'ipset', 'create', 'keepme', 'hash:ip');
    await sh(host, 'ipset', 'add', 'keepme', '192.0.2.3');
  });

  after(async () => {
    for (const ns of ALL_NS) await plain.run(['ip', 'netns', 'del', ns]).catch(() => undefined);
  });

  test('before policy (LinuxDataplane accepts all cali traffic): everybody reaches everybody', async () => {
    assert.ok(await pings(inNs(A), ipB), 'A -> B');
    assert.ok(await pings(inNs(C), ipA), 'C -> A');
    assert.ok(await pings(inNs(B), ipA), 'B -> A');
  });

  test('apply: takes over cali-FORWARD, one hook at the top, policy enforced, unknown cali interface dropped', async () => {
    const report = await applier.apply(policy([ipA]));
    assert.deepEqual(report.changedChains, [
      'FORWARD',
      'cali-FORWARD',
      'cali-from-wl-dispatch',
      'cali-fw-a',
      'cali-fw-b',
      'cali-pi-web-icmp',
      'cali-to-wl-dispatch',
      'cali-tw-a',
      'cali-tw-b',
    ]);
    assert.deepEqual(report.changedSets, ['cali40s:web']);
    const fwd = await rules('FORWARD');
    assert.equal(fwd[1], '-A FORWARD -m comment --comment "cali:hook" -j cali-FORWARD');
    assert.equal(fwd.filter((r) => r.includes('cali-')).length, 1, `only our hook: ${fwd.join('; ')}`);
    assert.ok(!fwd.some((r) => r.includes('cali:forward-jump')), "LinuxDataplane's jump is replaced");
    assert.deepEqual(
      (await rules('cali-FORWARD')).map((r) => r.replace(/ -m comment --comment "?cali:[^ "]+"?/, '')),
      ['-N cali-FORWARD', '-A cali-FORWARD -i cali+ -j cali-from-wl-dispatch', '-A cali-FORWARD -o cali+ -j cali-to-wl-dispatch', '-A cali-FORWARD -i cali+ -j ACCEPT'],
    );
    assert.match((await rules('cali-fw-a'))[1] ?? '', /^-A cali-fw-a -m comment --comment "cali:[A-Za-z0-9_-]{16}" -m comment --comment "egress: allowed" -j RETURN$/);
    assert.ok(await pings(inNs(A), ipB), 'A (in cali40s:web) -> B');
    assert.equal(await pings(inNs(B), ipA), false, 'B -> A: A accepts only replies');
    assert.equal(await pings(inNs(C), ipB), false, 'C (unknown interface) -> B dropped');
    assert.equal(await pings(inNs(C), ipA), false, 'C -> A dropped');
    await assertForeignIntact();
  });

  test('idempotent: a second apply (a fresh instance, as after a restart) only reads', async () => {
    const rec = new Recording(host);
    const report = await new FilterApplier(rec).apply(policy([ipA]));
    assert.deepEqual(report, { changedChains: [], changedSets: [] });
    assert.deepEqual([...rec.calls].sort(), ['ipset save', 'iptables-save -t filter']);
  });

  test('a membership change touches only the set: A out of cali40s:web -> ping fails; back in -> passes', async () => {
    const rec = new Recording(host);
    const out = await new FilterApplier(rec).apply(policy([]));
    assert.deepEqual(out, { changedChains: [], changedSets: ['cali40s:web'] });
    assert.deepEqual(rec.calls.filter((c) => !c.includes('save')), ['ipset -exist restore']);
    assert.equal(await pings(inNs(A), ipB), false, 'A no longer in the set');
    // Another instance changed the kernel behind `applier`'s back: drift, which it would see at its next
    // resync; make it read now.
    applier.invalidate();
    const back = await applier.apply(policy([ipA, '10.99.0.0/16']));
    assert.deepEqual(back, { changedChains: [], changedSets: ['cali40s:web'] });
    assert.ok(await pings(inNs(A), ipB), 'A back in the set');
    assert.ok(await pings(inNs(A), ipB));
  });

  test('changing one chain rewrites only that chain: the other chains keep their packet counters', async () => {
    const fwA = await counters('cali-fw-a');
    const twB = await counters('cali-tw-b');
    const dispatch = await counters('cali-from-wl-dispatch');
    assert.ok((fwA[0] ?? 0) > 0 && (twB[0] ?? 0) > 0, `counters are counting: ${fwA} ${twB}`);
    const before = await counters('cali-tw-a');
    assert.ok((before[0] ?? 0) > 0, 'replies counted in cali-tw-a');

    const rec = new Recording(host);
    const report = await new FilterApplier(rec).apply(
      policy([ipA, '10.99.0.0/16'], { twA: ['-p udp --dport 9 -j DROP', '-m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT', '-j DROP'] }),
    );
    assert.deepEqual(report, { changedChains: ['cali-tw-a'], changedSets: [] });
    assert.deepEqual(rec.calls.filter((c) => !c.includes('save')), ['iptables-restore --noflush -w 10']);
    assert.deepEqual(await counters('cali-fw-a'), fwA, 'cali-fw-a untouched');
    assert.deepEqual(await counters('cali-tw-b'), twB, 'cali-tw-b untouched');
    assert.deepEqual(await counters('cali-from-wl-dispatch'), dispatch, 'dispatch untouched');
    assert.deepEqual(await counters('cali-tw-a'), [0, 0, 0], 'cali-tw-a rewritten (counters start again)');
    assert.ok(await pings(inNs(A), ipB), 'still enforced the same way');
  });

  test('after drift (hand-edited chain, hook pushed down by a foreign insert): repaired, nothing else touched', async () => {
    const d = policy([ipA, '10.99.0.0/16']);
    applier.invalidate(); // the previous test's instance changed cali-tw-a behind its back
    await applier.apply(d); // back to the plain cali-tw-a
    await sh(host, 'iptables', '-A', 'cali-fw-b', '-j', 'DROP');
    await sh(host, 'iptables', '-I', 'FORWARD', '1', '-s', '192.0.2.2', '-j', 'ACCEPT');
    const fwA = await counters('cali-fw-a');
    const report = await new FilterApplier(host).apply(d);
    assert.deepEqual(report, { changedChains: ['FORWARD', 'cali-fw-b'], changedSets: [] });
    const fwd = await rules('FORWARD');
    assert.equal(fwd[1], '-A FORWARD -m comment --comment "cali:hook" -j cali-FORWARD');
    assert.equal(fwd[2], '-A FORWARD -s 192.0.2.2/32 -j ACCEPT', 'the foreign rule stays, below our hook');
    assert.equal(fwd.filter((r) => r.includes('cali:hook')).length, 1);
    assert.equal((await rules('cali-fw-b')).length, 2, 'the hand-added rule is gone');
    assert.deepEqual(await counters('cali-fw-a'), fwA);
    await sh(host, 'iptables', '-D', 'FORWARD', '-s', '192.0.2.2', '-j', 'ACCEPT');
    await assertForeignIntact();
  });

  test('steady state from the cache: no reads; a hand-deleted rule is restored at the resync', async () => {
    const d = policy([ipA, '10.99.0.0/16']);
    let now = 0;
    const rec = new Recording(host);
    const cached = new FilterApplier(rec, { now: () => now, resyncMs: 30_000 });
    assert.deepEqual(await cached.apply(d), { changedChains: [], changedSets: [] });
    assert.deepEqual([...rec.calls].sort(), ['ipset save', 'iptables-save -t filter'], 'the first apply reads');

    // One chain changed: only the write, planned from the cache.
    now = 1_000;
    rec.reset();
    const twA = ['-p udp --dport 9 -j DROP', '-m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT', '-j DROP'];
    assert.deepEqual(await cached.apply(policy([ipA, '10.99.0.0/16'], { twA })), { changedChains: ['cali-tw-a'], changedSets: [] });
    assert.deepEqual(rec.calls, ['iptables-restore --noflush -w 10']);
    assert.match((await rules('cali-tw-a'))[1] ?? '', /-p udp .*--dport 9 .*-j DROP/);
    rec.reset();
    assert.deepEqual(await cached.apply(d), { changedChains: ['cali-tw-a'], changedSets: [] });
    assert.deepEqual(rec.calls, ['iptables-restore --noflush -w 10']);

    // Someone deletes the rule that lets A reach B.
    assert.ok(await pings(inNs(A), ipB));
    await sh(host, 'iptables', '-D', 'cali-pi-web-icmp', '1');
    assert.equal(await pings(inNs(A), ipB), false, 'the hand deletion took effect');
    now = 29_999;
    rec.reset();
    assert.deepEqual(await cached.apply(d), { changedChains: [], changedSets: [] });
    assert.deepEqual(rec.calls, [], 'within resyncMs the cache is trusted: nothing runs, the drift is not seen yet');
    now = 30_000;
    rec.reset();
    assert.deepEqual(await cached.apply(d), { changedChains: ['cali-pi-web-icmp'], changedSets: [] });
    assert.deepEqual([...rec.calls].sort(), ['ipset save', 'iptables-restore --noflush -w 10', 'iptables-save -t filter'], 'resync: read, then repair');
    assert.ok(await pings(inNs(A), ipB), 'the deleted rule is back');
    assert.deepEqual(await new FilterApplier(host).apply(d), { changedChains: [], changedSets: [] }, 'a full read agrees');
    await assertForeignIntact();
    applier.invalidate(); // this instance wrote behind the shared one's back
  });

  test('a type change of a referenced set (hash:net -> hash:ip) goes through the twin; enforcement unchanged', async () => {
    const report = await applier.apply(policy([ipA], { webType: 'hash:ip' }));
    assert.deepEqual(report, { changedChains: ['cali-pi-web-icmp'], changedSets: ['cali40s:web'] });
    const saved = parseIpsetSave(await sh(host, 'ipset', 'save'));
    assert.equal(saved.get('cali40s:web')?.type, 'hash:ip');
    assert.deepEqual(saved.get('cali40s:web')?.members, [ipA]);
    assert.deepEqual(await setNames(), ['cali40s:web', 'keepme'], 'no twin left');
    assert.match((await rules('cali-pi-web-icmp'))[1] ?? '', /--match-set cali40s:web src/);
    assert.ok(await pings(inNs(A), ipB));
    assert.deepEqual(await applier.apply(policy([ipA], { webType: 'hash:ip' })), { changedChains: [], changedSets: [] });
  });

  test('a set no longer wanted is destroyed after the rules that used it are gone (same apply)', async () => {
    const report = await applier.apply(policy([], { withWeb: false }));
    assert.deepEqual(report, { changedChains: ['cali-pi-web-icmp', 'cali-tw-b'], changedSets: ['cali40s:web'] });
    assert.deepEqual(await setNames(), ['keepme']);
    assert.ok(!(await ourChains()).includes('cali-pi-web-icmp'));
    assert.equal(await pings(inNs(A), ipB), false, 'B now drops everything');
  });

  test('an invalid rule fails atomically, naming the chain; the table is as before', async () => {
    const beforeSave = parseIptablesSave(await sh(host, 'iptables-save', '-t', 'filter'));
    const bad = policy([], { withWeb: false, twA: ['-p bogus -j ACCEPT'] });
    await assert.rejects(applier.apply(bad), (e: unknown) => {
      assert.ok(e instanceof Error);
      assert.match(e.message, /^writing iptables chain cali-tw-a \(input line \d+\) failed: .*unknown protocol "bogus"/s);
      return true;
    });
    assert.deepEqual(parseIptablesSave(await sh(host, 'iptables-save', '-t', 'filter')), beforeSave);
    assert.deepEqual((await applier.apply(policy([], { withWeb: false }))).changedChains, [], 'and the next apply works');
  });

  test('an empty desired state removes every chain, hook and set of ours, and nothing else', async () => {
    const report = await applier.apply({ chains: [], ipsets: [], hooks: {} });
    assert.ok(report.changedChains.includes('FORWARD'));
    assert.deepEqual(await ourChains(), []);
    assert.ok(!(await rules('FORWARD')).some((r) => r.includes('cali')));
    assert.deepEqual(await setNames(), ['keepme']);
    await assertForeignIntact();
    assert.ok(await pings(inNs(C), ipA), 'no policy left: FORWARD accepts again');
    assert.deepEqual(await applier.apply({ chains: [], ipsets: [], hooks: {} }), { changedChains: [], changedSets: [] });
  });

  test('scale: 500 endpoint chains + 200 policy chains + 200 ipsets (timings printed, not asserted)', async (t) => {
    const r = inNs(SCALE);
    const ENDPOINTS = 500;
    const POLICIES = 200;
    const pad = (n: number, w = 4): string => String(n).padStart(w, '0');
    const iface = (i: number): string => `cali${pad(i, 11)}`;
    const ipsets = (gen: number): IpsetSpec[] =>
      Array.from({ length: POLICIES }, (_, p) => ({
        name: `cali40s:pol${pad(p)}`,
        type: 'hash:net' as const,
        members: Array.from({ length: 20 }, (_, m) => `10.${100 + (p % 100)}.${Math.floor(p / 100) * 100 + m}.${gen}`),
      }));
    const state = (gen: number, policyTweak = -1, endpointTweak = -1): DesiredFilterState => {
      const chains: ChainSpec[] = [
        { name: 'cali-FORWARD', rules: ['-i cali+ -j cali-from-wl-dispatch', '-o cali+ -j cali-to-wl-dispatch'] },
        { name: 'cali-from-wl-dispatch', rules: ['-j ACCEPT'] },
        { name: 'cali-to-wl-dispatch', rules: [...Array.from({ length: ENDPOINTS }, (_, i) => `-o ${iface(i)} -g cali-tw-ep${pad(i)}`), '-j DROP'] },
      ];
      for (let i = 0; i < ENDPOINTS; i++) {
        chains.push({
          name: `cali-tw-ep${pad(i)}`,
          rules: [
            '-m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT',
            '-m conntrack --ctstate INVALID -j DROP',
            '-j MARK --set-xmark 0x0/0x10000',
            `-j cali-pi-pol${pad(i % POLICIES)}`,
            '-m mark --mark 0x10000/0x10000 -j RETURN',
            `-j cali-pi-pol${pad((i + 1) % POLICIES)}`,
            '-m mark --mark 0x10000/0x10000 -j RETURN',
            ...(i === endpointTweak ? ['-p udp --dport 53 -j DROP'] : []),
            '-j DROP',
          ],
        });
      }
      for (let p = 0; p < POLICIES; p++) {
        chains.push({
          name: `cali-pi-pol${pad(p)}`,
          rules: [
            `-p tcp -m multiport --dports 80,443 -m set --match-set cali40s:pol${pad(p)} src -j MARK --set-xmark 0x10000/0x10000`,
            `-p icmp -m set --match-set cali40s:pol${pad(p)} src -j MARK --set-xmark 0x10000/0x10000`,
            ...(p === policyTweak ? ['-p tcp --dport 8080 -j MARK --set-xmark 0x10000/0x10000'] : []),
            '-m mark --mark 0x10000/0x10000 -j RETURN',
          ],
        });
      }
      return { chains, ipsets: ipsets(gen), hooks: { FORWARD: 'cali-FORWARD' } };
    };
    const rec = new Recording(r);
    const big = new FilterApplier(rec);
    const timings: Record<string, number> = {};
    const timed = async (label: string, d: DesiredFilterState): Promise<{ changedChains: string[]; changedSets: string[] }> => {
      const t0 = performance.now();
      const rep = await big.apply(d);
      timings[label] = Math.round(performance.now() - t0);
      return rep;
    };

    const first = await timed('initial apply (everything created)', state(1));
    assert.equal(first.changedChains.length, 3 + ENDPOINTS + POLICIES + 1);
    assert.equal(first.changedSets.length, POLICIES);
    assert.equal((await ourChains(r)).length, 3 + ENDPOINTS + POLICIES);
    const ruleCount = (await sh(r, 'iptables-save', '-t', 'filter')).split('\n').filter((l) => l.startsWith('-A cali-')).length;

    assert.deepEqual(await timed('no-op apply (cached: no command)', state(1)), { changedChains: [], changedSets: [] });
    big.invalidate();
    assert.deepEqual(await timed('no-op apply (full read)', state(1)), { changedChains: [], changedSets: [] });
    assert.deepEqual(await timed('one policy chain changed', state(1, 7)), { changedChains: ['cali-pi-pol0007'], changedSets: [] });
    assert.deepEqual(await timed('one endpoint chain changed', state(1, 7, 42)), { changedChains: ['cali-tw-ep0042'], changedSets: [] });

    // One policy chain changed (cali-pi-pol0007 toggled), before (a full read: iptables-save + ipset save,
    // parse, plan against the kernel) and after (planned against the cached view), alternately.
    const SAMPLES = 15;
    const full: number[] = [];
    const cachedMs: number[] = [];
    const restoreMs: number[] = [];
    let tweak = true;
    for (let i = 0; i < SAMPLES; i++) {
      for (const mode of ['full', 'cached'] as const) {
        tweak = !tweak;
        const d = state(1, tweak ? 7 : -1, 42);
        if (mode === 'full') big.invalidate();
        rec.reset();
        const t0 = performance.now();
        const rep = await big.apply(d);
        const ms = performance.now() - t0;
        assert.deepEqual(rep, { changedChains: ['cali-pi-pol0007'], changedSets: [] });
        if (mode === 'full') {
          assert.deepEqual([...rec.calls].sort(), ['ipset save', 'iptables-restore --noflush -w 10', 'iptables-save -t filter']);
          full.push(ms);
        } else {
          assert.deepEqual(rec.calls, ['iptables-restore --noflush -w 10']);
          cachedMs.push(ms);
          restoreMs.push(rec.ms[0] ?? 0);
        }
      }
    }
    const med = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? 0;
    const max = (xs: number[]): number => Math.max(...xs);
    const compare =
      `one policy chain changed, ${SAMPLES} applies each: full read (before) median ${med(full).toFixed(1)} ms, max ${max(full).toFixed(1)} ms; ` +
      `cached (after) median ${med(cachedMs).toFixed(1)} ms, max ${max(cachedMs).toFixed(1)} ms, of which iptables-restore median ${med(restoreMs).toFixed(1)} ms`;
    const oneSet = state(1, 7, 42);
    const first0 = oneSet.ipsets[0];
    if (first0) first0.members = [...first0.members.slice(1), '10.250.0.1'];
    assert.deepEqual(await timed('one ipset membership changed', oneSet), { changedChains: [], changedSets: ['cali40s:pol0000'] });
    const allSets = await timed('all 200 ipsets changed (every member replaced)', state(2, 7, 42));
    assert.equal(allSets.changedSets.length, POLICIES);
    const gone = await timed('everything removed', { chains: [], ipsets: [], hooks: {} });
    assert.equal(gone.changedSets.length, POLICIES);
    assert.deepEqual(await ourChains(r), []);
    assert.deepEqual(await setNames(r), []);

    const summary = `filter-applier scale (${ENDPOINTS} endpoint chains, ${POLICIES} policy chains, ${POLICIES} ipsets x 20 members, ${ruleCount} rules): ${Object.entries(timings)
      .map(([k, v]) => `${k} ${v} ms`)
      .join('; ')}`;
    t.diagnostic(summary);
    t.diagnostic(compare);
    console.log(summary);
    console.log(compare);
  });
});
