/**
 * The pure policy calculator (plugin/calc/policy-rules.ts): structure, Calico semantics (checked by
 * running packets through a small interpreter of exactly the iptables subset we emit), rendering,
 * validation, determinism, incremental stability, scale, and the kernel's own parsers
 * (ipset restore + iptables-restore --test + a real restore, in a throwaway network namespace).
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import type { Policy, Profile, Rule, WorkloadEndpoint } from '../../plugin/datastore/model.js';
import type { ChainSpec, DesiredFilterState } from '../../plugin/dataplane/policy-types.js';
import {
  computeFilterState,
  effectiveLabels,
  endpointChainName,
  MARK_ACCEPT,
  MARK_PASS,
  MAX_CHAIN_NAME,
  MAX_IPSET_NAME,
  policyChainName,
  profileChainName,
  validateRule,
  type FilterStateInput,
} from '../../plugin/calc/policy-rules.js';
import { parseSelector } from '../../plugin/calc/selector.js';
import { ValidationError } from '../../plugin/lib/errors.js';

// ---------------------------------------------------------------------------------------------
// Fixtures

let nextId = 0;
function ep(
  name: string,
  ip: string,
  opts: { node?: string; labels?: Record<string, string>; profiles?: string[]; iface?: string } = {},
): WorkloadEndpoint {
  const id = (nextId++).toString(16).padStart(4, '0');
  return {
    node: opts.node ?? 'h1',
    endpointId: `${name}-${id}`,
    networkId: 'net',
    containerId: null,
    interfaceName: opts.iface ?? `cali${name.padEnd(7, '0').slice(0, 7)}${id}`,
    ipNetworks: [`${ip}/32`],
    mac: null,
    mtu: 1500,
    labels: opts.labels ?? {},
    profiles: opts.profiles ?? [],
    createdAt: 0,
  };
}

/** The default profile of a network, as calico-ts creates it. */
function netProfile(name: string): Profile {
  return {
    name,
    labelsToApply: { [`pcv.network.${name}`]: '' },
    ingress: [{ action: 'Allow', source: { selector: `has(pcv.network.${name})` } }],
    egress: [{ action: 'Allow' }],
  };
}

function gnp(name: string, spec: Partial<Omit<Policy, 'kind' | 'name'>>): Policy {
  return { kind: 'GlobalNetworkPolicy', name, selector: 'all()', types: ['Ingress'], ingress: [], egress: [], ...spec };
}

function input(p: Partial<FilterStateInput> & { endpoints?: WorkloadEndpoint[] }): FilterStateInput {
  const all = p.allEndpoints ?? p.endpoints ?? [];
  return {
    node: 'h1',
    localEndpoints: p.localEndpoints ?? all.filter((e) => e.node === 'h1'),
    allEndpoints: all,
    profiles: p.profiles ?? [],
    policies: p.policies ?? [],
  };
}

const chainMap = (s: DesiredFilterState): Map<string, string[]> => new Map(s.chains.map((c) => [c.name, c.rules]));
const chainOf = (s: DesiredFilterState, name: string): string[] => {
  const c = chainMap(s).get(name);
  assert.ok(c, `chain ${name} exists`);
  return c;
};
const ruleCount = (s: DesiredFilterState): number => s.chains.reduce((n, c) => n + c.rules.length, 0);
const ip4 = (e: WorkloadEndpoint): string => e.ipNetworks[0]!.split('/')[0]!;

// ---------------------------------------------------------------------------------------------
// A packet interpreter for exactly the iptables subset the calculator emits (anything else throws,
// so a rule it cannot read fails the tests instead of being silently skipped).

interface Packet {
  in?: string;
  out?: string;
  src: string;
  dst: string;
  /** Protocol number; default TCP. */
  proto?: number;
  sport?: number;
  dport?: number;
  icmpType?: number;
  icmpCode?: number;
  ct?: 'NEW' | 'ESTABLISHED' | 'RELATED' | 'INVALID';
}

const PROTO_NUMBERS: Record<string, number> = { tcp: 6, udp: 17, icmp: 1, sctp: 132, udplite: 136 };

function tokenize(rule: string): string[] {
  const out: string[] = [];
  const re = /"([^"]*)"|(\S+)/g;
  for (let m = re.exec(rule); m; m = re.exec(rule)) out.push(m[1] ?? m[2]!);
  return out;
}

function ipNum(a: string): number {
  return a.split('.').reduce((acc, o) => acc * 256 + Number(o), 0);
}
function inCidr(addr: string, cidr: string): boolean {
  const [net, len] = cidr.split('/');
  const size = 2 ** (32 - Number(len ?? 32));
  return Math.floor(ipNum(addr) / size) === Math.floor(ipNum(net!) / size);
}
function ifaceMatch(actual: string | undefined, pattern: string): boolean {
  if (actual === undefined) return false;
  return pattern.endsWith('+') ? actual.startsWith(pattern.slice(0, -1)) : actual === pattern;
}
function portIn(port: number | undefined, list: string): boolean {
  if (port === undefined) return false;
  return list.split(',').some((p) => {
    const [a, b] = p.split(':').map(Number);
    return port >= a! && port <= (b ?? a!);
  });
}

type Verdict = 'ACCEPT' | 'DROP' | 'RETURN';

class Interpreter {
  private readonly chains: Map<string, string[]>;
  private readonly sets: Map<string, { type: string; members: string[] }>;
  logged: string[] = [];
  mark = 0;
  constructor(readonly state: DesiredFilterState) {
    this.chains = chainMap(state);
    this.sets = new Map(state.ipsets.map((s) => [s.name, s]));
  }

  /** What happens to `pkt` in a kernel chain holding only our hook: CONTINUE = we let it go on. */
  hook(kernelChain: 'FORWARD' | 'INPUT' | 'OUTPUT', pkt: Packet): 'ACCEPT' | 'DROP' | 'CONTINUE' {
    this.logged = [];
    this.mark = 0;
    const ours = this.state.hooks[kernelChain];
    assert.ok(ours, `hook for ${kernelChain}`);
    const v = this.run(ours, { proto: 6, ct: 'NEW', ...pkt }, 0);
    return v === 'RETURN' ? 'CONTINUE' : v;
  }

  private run(chain: string, pkt: Packet, depth: number): Verdict {
    assert.ok(depth < 20, 'jump depth');
    const rules = this.chains.get(chain);
    assert.ok(rules, `jump to missing chain ${chain}`);
    for (const rule of rules) {
      const v = this.rule(rule, pkt, depth);
      if (v !== null) return v;
    }
    return 'RETURN';
  }

  /** null: carry on with the next rule. */
  private rule(rule: string, pkt: Packet, depth: number): Verdict | null {
    const t = tokenize(rule);
    let i = 0;
    let neg = false;
    let ok = true;
    const next = (): string => {
      const v = t[i++];
      assert.ok(v !== undefined, `truncated rule: ${rule}`);
      return v;
    };
    const check = (cond: boolean): void => {
      if (cond === neg) ok = false;
      neg = false;
    };
    while (i < t.length) {
      const tok = next();
      switch (tok) {
        case '!':
          neg = true;
          break;
        case '-i':
          check(ifaceMatch(pkt.in, next()));
          break;
        case '-o':
          check(ifaceMatch(pkt.out, next()));
          break;
        case '-s':
          check(inCidr(pkt.src, next()));
          break;
        case '-d':
          check(inCidr(pkt.dst, next()));
          break;
        case '-p': {
          const p = next();
          check((PROTO_NUMBERS[p] ?? Number(p)) === pkt.proto);
          break;
        }
        case '-m': {
          const mod = next();
          if (next() === '!') {
            neg = true;
          } else {
            i--;
          }
          const opt = next();
          if (mod === 'set' && opt === '--match-set') {
            const set = this.sets.get(next());
            assert.ok(set, `rule uses a missing ipset: ${rule}`);
            const addr = next() === 'src' ? pkt.src : pkt.dst;
            check(set.members.some((m) => (set.type === 'hash:ip' && !m.includes('/') ? m === addr : inCidr(addr, m))));
          } else if (mod === 'multiport' && (opt === '--dports' || opt === '--sports')) {
            const list = next();
            assert.ok([6, 17, 132, 136].includes(pkt.proto!) || !ok, 'multiport without a port protocol');
            check(portIn(opt === '--dports' ? pkt.dport : pkt.sport, list));
          } else if (mod === 'icmp' && opt === '--icmp-type') {
            const [type, code] = next().split('/').map(Number);
            check(pkt.icmpType === type && (code === undefined || pkt.icmpCode === code));
          } else if (mod === 'conntrack' && opt === '--ctstate') {
            check(next().split(',').includes(pkt.ct!));
          } else if (mod === 'mark' && opt === '--mark') {
            const [v, m] = next().split('/').map(Number);
            check((this.mark & m!) === v);
          } else if (mod === 'comment' && opt === '--comment') {
            next();
          } else {
            assert.fail(`unknown match in: ${rule}`);
          }
          break;
        }
        case '-j':
        case '-g': {
          const target = next();
          if (!ok) return null;
          if (target === 'MARK') {
            assert.equal(next(), '--set-xmark');
            const [v, m] = next().split('/').map(Number);
            this.mark = ((this.mark & ~m!) ^ v!) >>> 0;
            return null;
          }
          if (target === 'LOG') {
            assert.equal(next(), '--log-prefix');
            this.logged.push(next());
            return null;
          }
          assert.equal(i, t.length, `trailing arguments after the target: ${rule}`);
          if (target === 'ACCEPT' || target === 'DROP' || target === 'RETURN') return target;
          const v = this.run(target, pkt, depth + 1);
          if (v === 'ACCEPT' || v === 'DROP') return v;
          return tok === '-g' ? 'RETURN' : null;
        }
        default:
          assert.fail(`unknown token ${tok} in: ${rule}`);
      }
    }
    assert.fail(`rule without a target: ${rule}`);
  }
}

/** Packet from local endpoint a to local endpoint b, forwarded by this host. */
const local = (a: WorkloadEndpoint, b: WorkloadEndpoint, extra: Partial<Packet> = {}): Packet => ({
  in: a.interfaceName,
  out: b.interfaceName,
  src: ip4(a),
  dst: ip4(b),
  ...extra,
});
/** Packet from a remote endpoint (or any outside address) arriving on eth0 for local endpoint b. */
const inbound = (src: string, b: WorkloadEndpoint, extra: Partial<Packet> = {}): Packet => ({
  in: 'eth0',
  out: b.interfaceName,
  src,
  dst: ip4(b),
  ...extra,
});
const outbound = (a: WorkloadEndpoint, dst: string, extra: Partial<Packet> = {}): Packet => ({
  in: a.interfaceName,
  out: 'eth0',
  src: ip4(a),
  dst,
  ...extra,
});

// ---------------------------------------------------------------------------------------------
// Structure

function checkIntegrity(s: DesiredFilterState, family: 4 | 6 = 4): void {
  const names = new Set<string>();
  for (const c of s.chains) {
    assert.ok(c.name.startsWith('cali-'), c.name);
    assert.ok(c.name.length <= MAX_CHAIN_NAME, `${c.name} is too long`);
    assert.match(c.name, /^[A-Za-z0-9._-]+$/);
    assert.ok(!names.has(c.name), `duplicate chain ${c.name}`);
    names.add(c.name);
  }
  const setNames = new Set(s.ipsets.map((x) => x.name));
  for (const x of s.ipsets) {
    assert.ok(x.name.startsWith(`cali${family}0`), x.name);
    assert.ok(x.name.length <= MAX_IPSET_NAME, `${x.name} is too long`);
    assert.match(x.name, /^[A-Za-z0-9:._-]+$/);
    assert.deepEqual(x.members, [...new Set(x.members)], 'members are unique');
  }
  const usedSets = new Set<string>();
  for (const c of s.chains) {
    for (const r of c.rules) {
      for (const m of r.matchAll(/-[jg] (cali-\S+)/g)) assert.ok(names.has(m[1]!), `${c.name} refers to missing chain ${m[1]}`);
      for (const m of r.matchAll(/--match-set (\S+)/g)) {
        assert.ok(setNames.has(m[1]!), `${c.name} refers to missing ipset ${m[1]}`);
        usedSets.add(m[1]!);
      }
    }
  }
  assert.deepEqual([...setNames].sort(), [...usedSets].sort(), 'every ipset is used');
  for (const hooked of Object.values(s.hooks)) assert.ok(names.has(hooked), hooked);
  const sorted = [...s.chains].map((c) => c.name);
  assert.deepEqual(sorted, [...sorted].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0)), 'chains sorted');
}

describe('computeFilterState: structure', () => {
  const a = ep('a', '192.168.0.1', { profiles: ['net1'] });
  const b = ep('b', '192.168.0.2', { profiles: ['net1'] });
  const s = computeFilterState(input({ endpoints: [a, b], profiles: [netProfile('net1')] }));

  it('hooks FORWARD, INPUT and OUTPUT into our chains', () => {
    assert.deepEqual(s.hooks, { FORWARD: 'cali-FORWARD', INPUT: 'cali-INPUT', OUTPUT: 'cali-OUTPUT' });
    checkIntegrity(s);
  });

  it('cali-FORWARD dispatches cali+ traffic both ways and accepts only what the endpoint chains accepted', () => {
    assert.deepEqual(chainOf(s, 'cali-FORWARD'), [
      '-i cali+ -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT',
      '-o cali+ -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT',
      '-i cali+ -j MARK --set-xmark 0x0/0x30000',
      '-i cali+ -j cali-from-wl-dispatch',
      '-o cali+ -j MARK --set-xmark 0x0/0x30000',
      '-o cali+ -j cali-to-wl-dispatch',
      '-i cali+ -m mark --mark 0x10000/0x10000 -m comment --comment "Policy accepted packet" -j ACCEPT',
      '-o cali+ -m mark --mark 0x10000/0x10000 -m comment --comment "Policy accepted packet" -j ACCEPT',
      '-i cali+ -j DROP',
      '-o cali+ -j DROP',
    ]);
    assert.equal(MARK_ACCEPT, 0x10000);
    assert.equal(MARK_PASS, 0x20000);
  });

  it('dispatch chains: one goto per local endpoint, unknown cali interfaces dropped', () => {
    const [first, second] = [a, b].sort((x, y) => (x.interfaceName < y.interfaceName ? -1 : 1));
    assert.deepEqual(chainOf(s, 'cali-from-wl-dispatch'), [
      `-i ${first!.interfaceName} -g cali-fw-${first!.interfaceName}`,
      `-i ${second!.interfaceName} -g cali-fw-${second!.interfaceName}`,
      '-m comment --comment "Unknown interface" -j DROP',
    ]);
    assert.deepEqual(chainOf(s, 'cali-to-wl-dispatch'), [
      `-o ${first!.interfaceName} -g cali-tw-${first!.interfaceName}`,
      `-o ${second!.interfaceName} -g cali-tw-${second!.interfaceName}`,
      '-m comment --comment "Unknown interface" -j DROP',
    ]);
  });

  it('endpoint chains: conntrack first, then profiles, then drop', () => {
    assert.deepEqual(chainOf(s, endpointChainName(a.interfaceName, 'to')), [
      '-m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT',
      '-m conntrack --ctstate INVALID -j DROP',
      '-m mark --mark 0x0/0x10000 -j cali-pri-net1',
      '-m mark --mark 0x0/0x10000 -m comment --comment "Drop if not accepted by policy or profile" -j DROP',
    ]);
    assert.deepEqual(chainOf(s, `cali-fw-${a.interfaceName}`).slice(2, 3), ['-m mark --mark 0x0/0x10000 -j cali-pro-net1']);
  });

  it('profile chains: Allow sets the accept mark and returns', () => {
    const set = s.ipsets.find((x) => x.type === 'hash:ip');
    assert.ok(set);
    assert.equal(set.name, `cali40${parseSelector('has(pcv.network.net1)').uniqueId()}`.slice(0, 31));
    assert.deepEqual(chainOf(s, 'cali-pri-net1'), [
      `-m set --match-set ${set.name} src -j MARK --set-xmark 0x10000/0x10000`,
      '-m mark --mark 0x10000/0x10000 -j RETURN',
    ]);
    assert.deepEqual(chainOf(s, 'cali-pro-net1'), ['-j MARK --set-xmark 0x10000/0x10000', '-m mark --mark 0x10000/0x10000 -j RETURN']);
  });

  it('INPUT: workload → host goes through the egress policy, then ACCEPT; OUTPUT never blocks', () => {
    assert.deepEqual(chainOf(s, 'cali-INPUT'), ['-i cali+ -j cali-wl-to-host']);
    assert.deepEqual(chainOf(s, 'cali-wl-to-host'), [
      '-j MARK --set-xmark 0x0/0x30000',
      '-j cali-from-wl-dispatch',
      '-m mark --mark 0x10000/0x10000 -m comment --comment "DefaultEndpointToHostAction ACCEPT" -j ACCEPT',
      '-j DROP',
    ]);
    for (const r of chainOf(s, 'cali-OUTPUT')) assert.doesNotMatch(r, /DROP|REJECT/);
  });

  it('only profiles and policies in use are rendered', () => {
    const s2 = computeFilterState(
      input({
        endpoints: [a],
        profiles: [netProfile('net1'), netProfile('unused')],
        policies: [gnp('nobody', { selector: "role == 'none'" }), gnp('some', { selector: 'has(pcv.network.net1)' })],
      }),
    );
    const names = s2.chains.map((c) => c.name);
    assert.ok(names.includes('cali-pi-some'));
    assert.ok(!names.some((n) => n.includes('nobody') || n.includes('unused')));
    assert.ok(!names.includes('cali-po-some'), 'Ingress-only policy has no egress chain');
    checkIntegrity(s2);
  });

  it('long or unusual names are shortened with a stable hash; short plain names are kept', () => {
    assert.equal(policyChainName({ kind: 'GlobalNetworkPolicy', name: 'db-from-web' }, 'Ingress'), 'cali-pi-db-from-web');
    assert.equal(policyChainName({ kind: 'GlobalNetworkPolicy', name: 'db-from-web' }, 'Egress'), 'cali-po-db-from-web');
    const long = policyChainName({ kind: 'GlobalNetworkPolicy', name: 'a-very-long-policy-name-indeed' }, 'Ingress');
    assert.ok(long.length <= 28 && long.startsWith('cali-pi-') && long.includes('_'), long);
    assert.equal(long, policyChainName({ kind: 'GlobalNetworkPolicy', name: 'a-very-long-policy-name-indeed' }, 'Ingress'));
    const np = policyChainName({ kind: 'NetworkPolicy', namespace: 'default', name: 'db-from-web' }, 'Ingress');
    assert.notEqual(np, 'cali-pi-db-from-web');
    assert.ok(np.length <= 28);
    assert.equal(profileChainName('net1', 'Egress'), 'cali-pro-net1');
    assert.notEqual(profileChainName('my_net', 'Ingress'), profileChainName('mynet', 'Ingress'));
    assert.ok(profileChainName('a'.repeat(200), 'Ingress').length <= 28);
  });

  it('effective labels: the endpoint own labels win, then the first profile in order', () => {
    const profiles = new Map<string, Profile>([
      ['p1', { name: 'p1', ingress: [], egress: [], labelsToApply: { a: 'p1', b: 'p1' } }],
      ['p2', { name: 'p2', ingress: [], egress: [], labelsToApply: { a: 'p2', b: 'p2', c: 'p2' } }],
    ]);
    const e = ep('x', '10.0.0.1', { labels: { a: 'own' }, profiles: ['p1', 'p2', 'missing'] });
    assert.deepEqual(effectiveLabels(e, profiles), { a: 'own', b: 'p1', c: 'p2' });
  });

  it('endpoints with a bad or non-cali interface name get no chains (their traffic is dropped by dispatch)', () => {
    const bad = ep('bad', '10.0.0.9', { iface: 'eth0' });
    const bad2 = ep('bad2', '10.0.0.10', { iface: 'cali x' });
    const s2 = computeFilterState(input({ endpoints: [bad, bad2, a], profiles: [netProfile('net1')] }));
    assert.equal(chainOf(s2, 'cali-from-wl-dispatch').length, 2);
    checkIntegrity(s2);
  });
});

// ---------------------------------------------------------------------------------------------
// Semantics, by packet

describe('computeFilterState: Calico semantics', () => {
  const web = ep('web', '192.168.0.10', { profiles: ['net1'], labels: { role: 'web' } });
  const db = ep('db', '192.168.0.20', { profiles: ['net1'], labels: { role: 'db' } });
  const other = ep('oth', '192.168.0.30', { profiles: ['net2'] });
  const lonely = ep('lonely', '192.168.0.40');
  const remoteWeb = ep('rweb', '192.168.1.10', { node: 'h2', profiles: ['net1'], labels: { role: 'web' } });
  const remoteNet2 = ep('rnet2', '192.168.1.30', { node: 'h2', profiles: ['net2'] });
  const endpoints = [web, db, other, lonely, remoteWeb, remoteNet2];
  const profiles = [netProfile('net1'), netProfile('net2')];
  const build = (policies: Policy[] = [], extra: Partial<FilterStateInput> = {}): Interpreter => {
    const s = computeFilterState(input({ endpoints, profiles, policies, ...extra }));
    checkIntegrity(s);
    return new Interpreter(s);
  };

  it('default profiles: same network talks (same host and across hosts), other networks cannot, egress is allowed', () => {
    const f = build();
    assert.equal(f.hook('FORWARD', local(web, db)), 'ACCEPT');
    assert.equal(f.hook('FORWARD', local(db, web)), 'ACCEPT');
    assert.equal(f.hook('FORWARD', inbound(ip4(remoteWeb), db)), 'ACCEPT');
    assert.equal(f.hook('FORWARD', local(other, db)), 'DROP', 'net2 → net1');
    assert.equal(f.hook('FORWARD', local(db, other)), 'DROP', 'net1 → net2');
    assert.equal(f.hook('FORWARD', inbound(ip4(remoteNet2), db)), 'DROP');
    assert.equal(f.hook('FORWARD', inbound(ip4(remoteNet2), other)), 'ACCEPT');
    assert.equal(f.hook('FORWARD', inbound('8.8.8.8', db)), 'DROP', 'outsiders cannot reach in');
    assert.equal(f.hook('FORWARD', outbound(db, '8.8.8.8')), 'ACCEPT', 'egress allowed');
    assert.equal(f.hook('FORWARD', inbound('8.8.8.8', db, { ct: 'ESTABLISHED' })), 'ACCEPT', 'replies come back');
  });

  it('an endpoint with no profile and no policy is isolated', () => {
    const f = build();
    assert.equal(f.hook('FORWARD', outbound(lonely, '8.8.8.8')), 'DROP');
    assert.equal(f.hook('FORWARD', inbound('8.8.8.8', lonely)), 'DROP');
    assert.equal(f.hook('FORWARD', local(web, lonely)), 'DROP');
    assert.equal(f.hook('INPUT', { in: lonely.interfaceName, src: ip4(lonely), dst: '10.0.0.1' }), 'DROP');
  });

  it('fail closed: an unknown cali interface is dropped; non-cali traffic is not our business', () => {
    const f = build();
    const ghost = ep('ghost', '192.168.0.99', { profiles: ['net1'] });
    assert.equal(f.hook('FORWARD', local(ghost, db)), 'DROP');
    assert.equal(f.hook('FORWARD', inbound(ip4(db), ghost)), 'DROP');
    assert.equal(f.hook('INPUT', { in: ghost.interfaceName, src: ip4(ghost), dst: '10.0.0.1' }), 'DROP');
    assert.equal(f.hook('FORWARD', { in: 'eth0', out: 'eth1', src: '1.1.1.1', dst: '2.2.2.2' }), 'CONTINUE');
    assert.equal(f.hook('INPUT', { in: 'eth0', src: '1.1.1.1', dst: '10.0.0.1' }), 'CONTINUE');
  });

  it('host → local workload is allowed (OUTPUT), workload → host follows its egress policy then ACCEPT', () => {
    const f = build([gnp('no-egress', { selector: "role == 'db'", types: ['Egress'], egress: [{ action: 'Deny' }] })]);
    assert.notEqual(f.hook('OUTPUT', { out: lonely.interfaceName, src: '10.0.0.1', dst: ip4(lonely) }), 'DROP');
    assert.notEqual(f.hook('OUTPUT', { out: db.interfaceName, src: '10.0.0.1', dst: ip4(db) }), 'DROP');
    assert.equal(f.hook('INPUT', { in: web.interfaceName, src: ip4(web), dst: '10.0.0.1' }), 'ACCEPT');
    assert.equal(f.hook('INPUT', { in: db.interfaceName, src: ip4(db), dst: '10.0.0.1' }), 'DROP');
  });

  const dbFromWeb = gnp('db-from-web', {
    order: 100,
    selector: "role == 'db'",
    types: ['Ingress'],
    ingress: [{ action: 'Allow', protocol: 'TCP', source: { selector: "role == 'web'" }, destination: { ports: [5432] } }],
  });

  it("the issue's example: web → db on TCP 5432 only, same host and across hosts", () => {
    const f = build([dbFromWeb]);
    assert.equal(f.hook('FORWARD', local(web, db, { dport: 5432 })), 'ACCEPT');
    assert.equal(f.hook('FORWARD', inbound(ip4(remoteWeb), db, { dport: 5432 })), 'ACCEPT');
    assert.equal(f.hook('FORWARD', local(web, db, { dport: 22 })), 'DROP', 'policy applies, nothing matched: no profile fallback');
    assert.equal(f.hook('FORWARD', local(web, db, { proto: 17, dport: 5432 })), 'DROP');
    assert.equal(f.hook('FORWARD', inbound(ip4(remoteWeb), db, { dport: 22 })), 'DROP');
    assert.equal(f.hook('FORWARD', local(other, db, { dport: 5432 })), 'DROP');
    // The policy does not select web: web keeps its profile behaviour.
    assert.equal(f.hook('FORWARD', local(db, web, { dport: 22 })), 'ACCEPT');
  });

  it('traffic between two local endpoints needs the source egress and the destination ingress', () => {
    const denyEgress = gnp('web-no-egress', { selector: "role == 'web'", types: ['Egress'], egress: [{ action: 'Deny' }] });
    let f = build([dbFromWeb, denyEgress]);
    assert.equal(f.hook('FORWARD', local(web, db, { dport: 5432 })), 'DROP', 'egress of web denies');
    assert.equal(f.hook('FORWARD', inbound(ip4(remoteWeb), db, { dport: 5432 })), 'ACCEPT');
    f = build([gnp('web-egress-ok', { selector: "role == 'web'", types: ['Egress'], egress: [{ action: 'Allow' }] }), gnp('db-closed', { selector: "role == 'db'" })]);
    assert.equal(f.hook('FORWARD', local(web, db)), 'DROP', 'ingress of db denies after egress allowed');
    assert.equal(f.hook('FORWARD', outbound(web, '8.8.8.8')), 'ACCEPT');
  });

  it('policies run in order; the first Allow or Deny wins', () => {
    const deny = gnp('deny-web', { order: 10, selector: "role == 'db'", ingress: [{ action: 'Deny', source: { selector: "role == 'web'" } }] });
    let f = build([dbFromWeb, deny]);
    assert.equal(f.hook('FORWARD', local(web, db, { dport: 5432 })), 'DROP');
    f = build([dbFromWeb, { ...deny, order: 200 }]);
    assert.equal(f.hook('FORWARD', local(web, db, { dport: 5432 })), 'ACCEPT');
    // No order = last; equal order → by name.
    f = build([dbFromWeb, { ...deny, order: undefined }]);
    assert.equal(f.hook('FORWARD', local(web, db, { dport: 5432 })), 'ACCEPT');
    f = build([{ ...dbFromWeb, name: 'b' }, { ...deny, name: 'a', order: 100 }]);
    assert.equal(f.hook('FORWARD', local(web, db, { dport: 5432 })), 'DROP');
    f = build([{ ...dbFromWeb, name: 'a' }, { ...deny, name: 'b', order: 100 }]);
    assert.equal(f.hook('FORWARD', local(web, db, { dport: 5432 })), 'ACCEPT');
  });

  it('Pass skips the remaining policies and goes to the profiles', () => {
    const pass = gnp('pass-web', { order: 10, selector: "role == 'db'", ingress: [{ action: 'Pass', source: { selector: "role == 'web'" } }] });
    const denyAll = gnp('deny-all', { order: 20, selector: "role == 'db'", ingress: [{ action: 'Deny' }] });
    const f = build([pass, denyAll]);
    assert.equal(f.hook('FORWARD', local(web, db, { dport: 22 })), 'ACCEPT', 'passed to profile net1, which allows net1');
    assert.equal(f.hook('FORWARD', inbound(ip4(remoteNet2), db)), 'DROP', 'not passed: deny-all');
    // Passed to the profiles, but the profile does not allow: dropped.
    const passAll = gnp('pass-all', { order: 10, selector: "role == 'db'", ingress: [{ action: 'Pass' }] });
    const g = build([passAll, denyAll]);
    assert.equal(g.hook('FORWARD', local(web, db)), 'ACCEPT');
    assert.equal(g.hook('FORWARD', local(other, db)), 'DROP');
    // Pass with no profiles: dropped.
    const h = build([gnp('pass-lonely', { selector: 'all()', ingress: [{ action: 'Pass' }] })]);
    assert.equal(h.hook('FORWARD', local(web, lonely)), 'DROP');
  });

  it('Log logs with the calico prefix and carries on', () => {
    const f = build([gnp('log', { order: 1, selector: "role == 'db'", ingress: [{ action: 'Log' }, { action: 'Allow' }] })]);
    assert.equal(f.hook('FORWARD', inbound('8.8.8.8', db)), 'ACCEPT');
    assert.deepEqual(f.logged, ['calico-packet: ']);
  });

  it('types: an Egress-only policy leaves ingress to the profiles, and vice versa', () => {
    const f = build([gnp('egress-only', { selector: "role == 'db'", types: ['Egress'], egress: [{ action: 'Allow', destination: { nets: ['8.8.8.0/24'] } }] })]);
    assert.equal(f.hook('FORWARD', local(web, db)), 'ACCEPT');
    assert.equal(f.hook('FORWARD', inbound('1.1.1.1', db)), 'DROP');
    assert.equal(f.hook('FORWARD', outbound(db, '8.8.8.8')), 'ACCEPT');
    assert.equal(f.hook('FORWARD', outbound(db, '1.1.1.1')), 'DROP', 'egress policy applies, no match');
    // types missing: Ingress, plus Egress when there are egress rules (Calico's default).
    const g = build([gnp('defaulted', { selector: "role == 'db'", types: [], egress: [{ action: 'Deny' }] })]);
    assert.equal(g.hook('FORWARD', local(web, db)), 'DROP');
    assert.equal(g.hook('FORWARD', outbound(db, '1.1.1.1')), 'DROP');
  });

  it('labelsToApply feed selectors (also for the selected endpoint), and own labels override them', () => {
    const prof: Profile = { name: 'net1', labelsToApply: { 'pcv.network.net1': '', role: 'db' }, ingress: netProfile('net1').ingress, egress: [{ action: 'Allow' }] };
    const noRole = ep('norole', '192.168.0.50', { profiles: ['net1'] });
    const f = build([gnp('db-closed', { selector: "role == 'db'", ingress: [{ action: 'Deny' }] })], {
      allEndpoints: [...endpoints, noRole],
      localEndpoints: [web, db, noRole],
      profiles: [prof, netProfile('net2')],
    });
    assert.equal(f.hook('FORWARD', local(web, noRole)), 'DROP', 'noRole gets role=db from its profile');
    assert.equal(f.hook('FORWARD', local(db, web)), 'ACCEPT', "web's own role=web wins over the profile's role=db");
  });

  it('NetworkPolicy in namespace default applies; in another namespace it does not', () => {
    const np = (ns: string): Policy => ({ ...gnp('np', { selector: "role == 'db'", ingress: [{ action: 'Deny' }] }), kind: 'NetworkPolicy', namespace: ns });
    assert.equal(build([np('default')]).hook('FORWARD', local(web, db)), 'DROP');
    assert.equal(build([np('elsewhere')]).hook('FORWARD', local(web, db)), 'ACCEPT');
  });

  it('nets, notNets, notSelector, notProtocol, ICMP type/code, ipVersion', () => {
    const rules: Rule[] = [
      { action: 'Deny', ipVersion: 6 },
      { action: 'Deny', protocol: 'ICMPv6' },
      { action: 'Deny', source: { nets: ['fd00::/64'] } },
      { action: 'Deny', protocol: 'ICMP', icmp: { type: 8, code: 0 }, notICMP: { type: 8, code: 1 } },
      { action: 'Allow', protocol: 'ICMP', icmp: { type: 8 } },
      { action: 'Deny', source: { nets: ['10.1.0.0/16'], notNets: ['10.1.2.0/24'] } },
      { action: 'Allow', source: { nets: ['10.1.0.0/16', '10.3.0.0/16'] } },
      { action: 'Allow', notProtocol: 'UDP', source: { nets: ['0.0.0.0/0'], notSelector: "role == 'web'", notNets: ['10.9.0.0/16', '10.8.0.0/16'] } },
    ];
    const f = build([gnp('p', { selector: "role == 'db'", ingress: rules })]);
    assert.equal(f.hook('FORWARD', inbound('1.1.1.1', db, { proto: 1, icmpType: 8, icmpCode: 0 })), 'DROP');
    assert.equal(f.hook('FORWARD', inbound('1.1.1.1', db, { proto: 1, icmpType: 8, icmpCode: 1 })), 'ACCEPT');
    assert.equal(f.hook('FORWARD', inbound('10.1.1.1', db, { proto: 17 })), 'DROP');
    assert.equal(f.hook('FORWARD', inbound('10.1.2.1', db, { proto: 17 })), 'ACCEPT', 'notNets keeps it out of the Deny; the nets rule allows');
    assert.equal(f.hook('FORWARD', inbound('10.1.2.1', db, { proto: 6 })), 'ACCEPT');
    assert.equal(f.hook('FORWARD', inbound('10.3.2.1', db, { proto: 17 })), 'ACCEPT');
    assert.equal(f.hook('FORWARD', inbound('7.7.7.7', db, { proto: 6 })), 'ACCEPT');
    assert.equal(f.hook('FORWARD', inbound('7.7.7.7', db, { proto: 17 })), 'DROP');
    assert.equal(f.hook('FORWARD', inbound('10.9.1.1', db, { proto: 6 })), 'DROP');
    assert.equal(f.hook('FORWARD', local(web, db, { proto: 6 })), 'DROP', 'notSelector');
    const text = chainOf(f.state, 'cali-pi-p').join('\n');
    assert.doesNotMatch(text, /fd00|icmpv6|58/);
  });

  it('ports: numbers and ranges, source and destination, notPorts; more than 15 ports are split', () => {
    const many = Array.from({ length: 20 }, (_, i) => 1000 + i * 2);
    const f = build([
      gnp('ports', {
        selector: "role == 'db'",
        ingress: [
          { action: 'Deny', protocol: 'TCP', destination: { ports: ['2000:2010'], notPorts: [2005] } },
          { action: 'Allow', protocol: 'TCP', source: { ports: ['1:1023'] }, destination: { ports: many } },
          { action: 'Allow', protocol: 'UDP', destination: { notPorts: Array.from({ length: 20 }, (_, i) => 53 + i) } },
        ],
      }),
    ]);
    const tcp = (sport: number, dport: number): Packet => inbound('1.1.1.1', db, { sport, dport });
    assert.equal(f.hook('FORWARD', tcp(500, 1000)), 'ACCEPT');
    assert.equal(f.hook('FORWARD', tcp(500, 1038)), 'ACCEPT', 'in the second multiport');
    assert.equal(f.hook('FORWARD', tcp(500, 1001)), 'DROP');
    assert.equal(f.hook('FORWARD', tcp(5000, 1000)), 'DROP', 'source port outside 1:1023');
    assert.equal(f.hook('FORWARD', tcp(500, 2004)), 'DROP');
    assert.equal(f.hook('FORWARD', inbound('1.1.1.1', db, { proto: 17, dport: 60 })), 'DROP');
    assert.equal(f.hook('FORWARD', inbound('1.1.1.1', db, { proto: 17, dport: 80 })), 'ACCEPT');
    for (const r of chainOf(f.state, 'cali-pi-ports')) {
      for (const m of r.matchAll(/--[sd]ports (\S+)/g)) {
        const slots = m[1]!.split(',').reduce((n, p) => n + (p.includes(':') ? 2 : 1), 0);
        assert.ok(slots <= 15, `${slots} multiport slots in ${r}`);
      }
    }
  });
});

// ---------------------------------------------------------------------------------------------
// Rendering

describe('computeFilterState: rule rendering', () => {
  const db = ep('db', '192.168.0.20', { labels: { role: 'db' } });
  const render = (rules: Rule[]): DesiredFilterState =>
    computeFilterState(input({ endpoints: [db], policies: [gnp('p', { selector: 'all()', ingress: rules })] }));

  it('renders each action and match as iptables-save prints it', () => {
    const s = render([
      { action: 'Log' },
      { action: 'Deny', protocol: 'TCP', source: { nets: ['10.0.0.7'] }, destination: { nets: ['10.2.0.0/16'], ports: [80, '8000:8080'] } },
      { action: 'Allow', protocol: 'ICMP', icmp: { type: 8, code: 0 } },
      { action: 'Pass', notProtocol: 17, source: { notNets: ['10.3.3.3/24'] } },
      { action: 'Allow', protocol: 132, destination: { notPorts: [9] } },
      { action: 'Deny', protocol: 'udplite', notProtocol: 'TCP' },
      { action: 'Deny', protocol: 47 },
      { action: 'Deny', protocol: 'TCP', notProtocol: 'TCP' },
      { action: 'Deny', source: { notNets: ['0.0.0.0/0'] } },
    ]);
    assert.deepEqual(chainOf(s, 'cali-pi-p'), [
      '-j LOG --log-prefix "calico-packet: "',
      '-s 10.0.0.7/32 -d 10.2.0.0/16 -p tcp -m multiport --dports 80,8000:8080 -j DROP',
      '-p icmp -m icmp --icmp-type 8/0 -j MARK --set-xmark 0x10000/0x10000',
      '-m mark --mark 0x10000/0x10000 -j RETURN',
      '! -s 10.3.3.0/24 ! -p udp -j MARK --set-xmark 0x20000/0x20000',
      '-m mark --mark 0x20000/0x20000 -j RETURN',
      '-p sctp -m multiport ! --dports 9 -j MARK --set-xmark 0x10000/0x10000',
      '-m mark --mark 0x10000/0x10000 -j RETURN',
      '-p udplite -j DROP',
      '-p 47 -j DROP',
    ]);
  });

  it('several nets become one hash:net ipset shared by every rule with the same nets', () => {
    const s = render([
      { action: 'Deny', source: { nets: ['10.0.0.0/8', '172.16.0.1/12'] } },
      { action: 'Deny', destination: { nets: ['172.16.0.0/12', '10.0.0.0/8'] } },
      { action: 'Deny', source: { nets: ['10.0.0.1/32'], notNets: ['10.0.0.0/8', '172.16.0.0/12'] } },
    ]);
    assert.equal(s.ipsets.length, 1);
    const set = s.ipsets[0]!;
    assert.equal(set.type, 'hash:net');
    assert.match(set.name, /^cali40n:[A-Za-z0-9_-]{23}$/);
    assert.deepEqual(set.members, ['10.0.0.0/8', '172.16.0.0/12']);
    assert.deepEqual(chainOf(s, 'cali-pi-p'), [
      `-m set --match-set ${set.name} src -j DROP`,
      `-m set --match-set ${set.name} dst -j DROP`,
      `-s 10.0.0.1/32 -m set ! --match-set ${set.name} src -j DROP`,
    ]);
  });

  it('selector ipsets hold the /32s of every matching endpoint on every host (effective labels)', () => {
    const remote = ep('r', '192.168.9.9', { node: 'h2', labels: { role: 'web' } });
    const remote6: WorkloadEndpoint = { ...ep('r6', '192.168.9.10', { node: 'h3', profiles: ['webby'] }), ipNetworks: ['192.168.9.10/32', 'fd00::10/128'] };
    const s = computeFilterState(
      input({
        allEndpoints: [db, remote, remote6],
        localEndpoints: [db],
        profiles: [{ name: 'webby', ingress: [], egress: [], labelsToApply: { role: 'web' } }],
        policies: [gnp('p', { ingress: [{ action: 'Allow', source: { selector: "role == 'web'" } }] })],
      }),
    );
    assert.deepEqual(s.ipsets, [
      { name: `cali40${parseSelector("role == 'web'").uniqueId()}`.slice(0, 31), type: 'hash:ip', members: ['192.168.9.9', '192.168.9.10'] },
    ]);
  });

  it('validateRule is exported for other validators', () => {
    validateRule({ action: 'Allow', protocol: 'TCP', destination: { ports: [1] } });
    assert.throws(() => validateRule({ action: 'Allow', destination: { ports: [1] } }, 'spec.ingress[0]'), /^ValidationError: spec\.ingress\[0\]\.destination\.ports: /);
  });
});

describe('computeFilterState: validation', () => {
  const e = ep('v', '10.0.0.1');
  const tryRules = (rules: Rule[], where: 'ingress' | 'egress' = 'ingress'): (() => unknown) => () =>
    computeFilterState(input({ endpoints: [e], policies: [gnp('bad', { [where]: rules, types: ['Ingress', 'Egress'] })] }));
  const fails = (rules: Rule[], re: RegExp, where: 'ingress' | 'egress' = 'ingress'): void =>
    assert.throws(tryRules(rules, where), (err: unknown) => {
      assert.ok(err instanceof ValidationError, String(err));
      assert.match(err.message, re);
      return true;
    });

  it('ports need TCP, UDP, SCTP or UDPLite', () => {
    fails([{ action: 'Allow', destination: { ports: [80] } }], /^GlobalNetworkPolicy "bad" spec\.ingress\[0\]\.destination\.ports: ports need protocol TCP, UDP, SCTP or UDPLite/);
    fails([{ action: 'Allow', protocol: 'ICMP', source: { notPorts: [80] } }], /spec\.ingress\[0\]\.source\.notPorts: ports need protocol/);
    fails([{ action: 'Allow', notProtocol: 'TCP', destination: { ports: [80] } }], /ports need protocol/);
    fails([{ action: 'Allow' }, { action: 'Allow', protocol: 1, destination: { ports: [1] } }], /spec\.egress\[1\]\.destination\.ports/, 'egress');
    for (const protocol of ['TCP', 'UDP', 'SCTP', 'UDPLite', 'tcp', 6, 17, '132', 136]) {
      assert.doesNotThrow(tryRules([{ action: 'Allow', protocol, destination: { ports: [80] } }]), String(protocol));
    }
  });

  it('rejects bad protocols, ports, nets, ICMP, actions and selectors with the field named', () => {
    fails([{ action: 'Allow', protocol: 'GRE' }], /spec\.ingress\[0\]\.protocol: must be TCP, UDP, ICMP, ICMPv6, SCTP, UDPLite or a protocol number 1-255/);
    fails([{ action: 'Allow', notProtocol: 256 }], /notProtocol: must be/);
    fails([{ action: 'Allow', protocol: 0 }], /protocol: must be/);
    fails([{ action: 'Allow', protocol: 'TCP', destination: { ports: ['http'] } }], /destination\.ports\[0\]: "http" is not a port.*named ports are not supported/);
    fails([{ action: 'Allow', protocol: 'TCP', destination: { ports: [70000] } }], /ports\[0\]: 70000 is not a port/);
    fails([{ action: 'Allow', protocol: 'TCP', destination: { ports: [1, '90:80'] } }], /ports\[1\]: port range "90:80" runs backwards/);
    fails([{ action: 'Allow', source: { nets: ['10.0.0.0/33'] } }], /source\.nets\[0\]: "10\.0\.0\.0\/33" is not a CIDR/);
    fails([{ action: 'Allow', destination: { notNets: ['300.1.1.1'] } }], /destination\.notNets\[0\]/);
    fails([{ action: 'Allow', icmp: { type: 8 } }], /icmp: needs protocol ICMP/);
    fails([{ action: 'Allow', protocol: 'ICMP', icmp: { code: 1 } }], /icmp\.code: a code needs a type/);
    fails([{ action: 'Allow', protocol: 'ICMP', notICMP: { type: 255 } }], /notICMP\.type: must be an integer 0-254/);
    fails([{ action: 'Allow', protocol: 'ICMPv6', ipVersion: 4 }], /protocol: ICMPv6 cannot be used with ipVersion 4/);
    fails([{ action: 'Reject' as Rule['action'] }], /action: must be Allow, Deny, Log or Pass/);
    fails([{ action: 'Allow', source: { selector: 'role == ' } }], /spec\.ingress\[0\]\.source\.selector: .*position/);
    assert.throws(
      () => computeFilterState(input({ endpoints: [e], policies: [gnp('badsel', { selector: 'a ==' })] })),
      /GlobalNetworkPolicy "badsel" spec\.selector: /,
    );
    assert.throws(
      () => computeFilterState(input({ endpoints: [e], profiles: [{ name: 'pr', labelsToApply: {}, ingress: [], egress: [{ action: 'Allow', destination: { ports: [1] } }] }] })),
      /Profile "pr" spec\.egress\[0\]\.destination\.ports/,
    );
  });

  it('validates every policy given, even one that applies to no endpoint', () => {
    assert.throws(
      () => computeFilterState(input({ endpoints: [e], policies: [gnp('inactive', { selector: "x == 'nobody'", ingress: [{ action: 'Allow', destination: { ports: [1] } }] })] })),
      ValidationError,
    );
  });
});

// ---------------------------------------------------------------------------------------------
// Scale, determinism, incremental stability

interface Scale {
  endpoints: number;
  policies: number;
  /** Distinct `app` label values. */
  apps?: number;
  /** Every policy selects all(). */
  allSelectAll?: boolean;
}

function scaleInput(sc: Scale): FilterStateInput {
  const apps = sc.apps ?? 25;
  const nets = 5;
  const profiles = Array.from({ length: nets }, (_, k) => netProfile(`net${k}`));
  const mk = (i: number, node: string, base: number): WorkloadEndpoint => ({
    node,
    endpointId: `${node}-${i}`,
    networkId: `net${i % nets}`,
    containerId: null,
    interfaceName: `cali${(base + i).toString(16).padStart(11, '0')}`,
    ipNetworks: [`10.${base >> 16 || 0}.${Math.floor(i / 250)}.${(i % 250) + 1}/32`],
    mac: null,
    mtu: 1500,
    labels: { app: `app${i % apps}`, tier: i % 2 ? 'front' : 'back' },
    profiles: [`net${i % nets}`],
    createdAt: 0,
  });
  const locals = Array.from({ length: sc.endpoints }, (_, i) => mk(i, 'h1', 0));
  const remotes = Array.from({ length: sc.endpoints }, (_, i) => mk(i, 'h2', 1 << 16));
  const policies = Array.from({ length: sc.policies }, (_, j): Policy => ({
    kind: 'GlobalNetworkPolicy',
    name: `policy-${String(j).padStart(4, '0')}`,
    order: j % 7 === 0 ? undefined : j,
    selector: sc.allSelectAll ? 'all()' : `app == 'app${j % apps}'`,
    types: ['Ingress', 'Egress'],
    ingress: [
      { action: 'Allow', protocol: 'TCP', source: { selector: `app == 'app${(j + 1) % apps}'` }, destination: { ports: [8000 + j] } },
      { action: j % 3 === 0 ? 'Pass' : 'Deny', source: { nets: [`172.${16 + (j % 16)}.0.0/16`, '192.0.2.0/24'] } },
    ],
    egress: [{ action: 'Allow', protocol: 'UDP', destination: { nets: ['10.96.0.10/32'], ports: [53] } }],
  }));
  return { node: 'h1', localEndpoints: locals, allEndpoints: [...locals, ...remotes], profiles, policies };
}

function rulesInPolicies(s: DesiredFilterState): number {
  return s.chains.filter((c) => /^cali-p(i|o|ri|ro)-/.test(c.name)).reduce((n, c) => n + c.rules.length, 0);
}

function diffChains(a: DesiredFilterState, b: DesiredFilterState): string[] {
  const ma = chainMap(a);
  const mb = chainMap(b);
  const names = new Set([...ma.keys(), ...mb.keys()]);
  return [...names].filter((n) => JSON.stringify(ma.get(n)) !== JSON.stringify(mb.get(n))).sort();
}

function shuffled<T>(xs: readonly T[], seed: number): T[] {
  const out = [...xs];
  let x = seed;
  for (let i = out.length - 1; i > 0; i--) {
    x = (x * 1103515245 + 12345) % 2 ** 31;
    const j = x % (i + 1);
    [out[i], out[j]] = [out[j]!, out[i]!];
  }
  return out;
}

describe('computeFilterState: scale, determinism, incremental updates', () => {
  it('500 endpoints × 200 policies: rule count O(endpoints + policies), timed', () => {
    for (const variant of [{}, { allSelectAll: true }] as const) {
      const inp = scaleInput({ endpoints: 500, policies: 200, ...variant });
      computeFilterState(inp); // warm up (selector cache, JIT)
      const runs = 10;
      const cpu0 = process.cpuUsage();
      const t0 = process.hrtime.bigint();
      let s: DesiredFilterState | undefined;
      for (let i = 0; i < runs; i++) s = computeFilterState(inp);
      const ms = Number(process.hrtime.bigint() - t0) / 1e6 / runs;
      const cpu = process.cpuUsage(cpu0);
      const cpuMs = (cpu.user + cpu.system) / 1000 / runs;
      assert.ok(s);
      checkIntegrity(s);
      const total = ruleCount(s);
      const inPolicies = rulesInPolicies(s);
      const naiveJumps = inp.localEndpoints.reduce(
        (n, e) => n + 2 * inp.policies.filter((p) => parseSelector(p.selector).matches({ ...e.labels, [`pcv.network.${e.profiles[0]}`]: '' })).length,
        0,
      );
      console.log(
        `[policy-rules] 500 endpoints × 200 policies${'allSelectAll' in variant ? ' (all select all())' : ''}: ` +
          `${total} rules in ${s.chains.length} chains (${inPolicies} in policy/profile chains, ` +
          `${total - inPolicies} structural), ${s.ipsets.length} ipsets; ` +
          `per-endpoint policy jumps without groups would be ${naiveJumps}; computeFilterState ${ms.toFixed(1)} ms wall, ${cpuMs.toFixed(1)} ms CPU (mean of ${runs})`,
      );
      assert.ok(total < 10 * (500 + 200) + inPolicies, `${total} rules`);
      assert.ok(inPolicies < 10 * 200 + 20, `${inPolicies} rules in policies`);
    }
  });

  it('rule count grows linearly: doubling endpoints and policies about doubles it', () => {
    const count = (e: number, p: number): number => ruleCount(computeFilterState(scaleInput({ endpoints: e, policies: p, apps: 25 })));
    const small = count(250, 100);
    const big = count(500, 200);
    const bigger = count(1000, 400);
    console.log(`[policy-rules] rules: 250×100 → ${small}, 500×200 → ${big}, 1000×400 → ${bigger}`);
    assert.ok(big / small < 2.2, `${big} / ${small}`);
    assert.ok(bigger / big < 2.2, `${bigger} / ${big}`);
    // Endpoints fixed, policies ×4: the structural part (dispatch + endpoint chains) does not move.
    const structural = (p: number): number => {
      const s = computeFilterState(scaleInput({ endpoints: 300, policies: p, apps: 25 }));
      return s.chains.filter((c) => /^cali-(fw|tw)-|dispatch$/.test(c.name)).reduce((n, c) => n + c.rules.length, 0);
    };
    assert.equal(structural(50), structural(200));
  });

  it('is deterministic: input order does not matter', () => {
    const inp = scaleInput({ endpoints: 60, policies: 30 });
    const a = computeFilterState(inp);
    const b = computeFilterState({
      ...inp,
      localEndpoints: shuffled(inp.localEndpoints, 1),
      allEndpoints: shuffled(inp.allEndpoints, 2),
      profiles: shuffled(inp.profiles, 3),
      policies: shuffled(inp.policies, 4),
    });
    assert.deepEqual(b, a);
  });

  it("changing one policy's rules changes only its own chain", () => {
    const inp = scaleInput({ endpoints: 100, policies: 40 });
    const before = computeFilterState(inp);
    const policies = inp.policies.map((p) =>
      p.name === 'policy-0005' ? { ...p, ingress: [{ action: 'Allow' as const, protocol: 'TCP', destination: { ports: [9999] } }] } : p,
    );
    const after = computeFilterState({ ...inp, policies });
    assert.deepEqual(diffChains(before, after), ['cali-pi-policy-0005']);
    // Its ipsets: the ones only it used are gone, the rest are untouched.
    const afterSets = new Map(after.ipsets.map((x) => [x.name, x]));
    for (const x of after.ipsets) assert.deepEqual(x, before.ipsets.find((y) => y.name === x.name));
    assert.ok(afterSets.size <= before.ipsets.length);
  });

  it('changing which endpoints a policy selects touches only their endpoint chains (and the policy groups)', () => {
    const inp = scaleInput({ endpoints: 100, policies: 40, apps: 25 });
    const before = computeFilterState(inp);
    // policy-0003 selected app3; now it selects app4 instead.
    const policies = inp.policies.map((p) => (p.name === 'policy-0003' ? { ...p, selector: "app == 'app4'" } : p));
    const after = computeFilterState({ ...inp, policies });
    const changed = diffChains(before, after);
    const touched = new Set(inp.localEndpoints.filter((e) => e.labels.app === 'app3' || e.labels.app === 'app4').map((e) => e.interfaceName));
    for (const name of changed) {
      const m = /^cali-[ft]w-(.*)$/.exec(name);
      if (m) assert.ok(touched.has(m[1]!), `${name} changed`);
      else assert.match(name, /^cali-g[io]-/, `${name} changed`);
    }
    assert.ok(changed.some((n) => n.startsWith('cali-tw-')));
    assert.ok(!changed.some((n) => n.startsWith('cali-p') || n.includes('dispatch')));
  });

  it('a policy that selects nothing changes nothing; a new endpoint adds its chains and dispatch rules only', () => {
    const inp = scaleInput({ endpoints: 50, policies: 20 });
    const before = computeFilterState(inp);
    const withIdle = computeFilterState({ ...inp, policies: [...inp.policies, gnp('idle', { selector: "app == 'none'", ingress: [{ action: 'Deny' }] })] });
    assert.deepEqual(withIdle, before);
    const extra: WorkloadEndpoint = { ...inp.localEndpoints[0]!, endpointId: 'new', interfaceName: 'califfffffffff0', ipNetworks: ['10.200.0.1/32'] };
    const withEp = computeFilterState({ ...inp, localEndpoints: [...inp.localEndpoints, extra], allEndpoints: [...inp.allEndpoints, extra] });
    assert.deepEqual(diffChains(before, withEp), ['cali-from-wl-dispatch', 'cali-fw-califfffffffff0', 'cali-to-wl-dispatch', 'cali-tw-califfffffffff0']);
  });
});

describe('computeFilterState: IPv6 (family 6)', () => {
  const dual = (name: string, v4: string, v6: string, opts: Parameters<typeof ep>[2] = {}): WorkloadEndpoint => ({ ...ep(name, v4, opts), ipNetworks: [`${v4}/32`, `${v6}/128`] });
  const db = dual('db', '192.168.0.20', 'fd00::20', { labels: { role: 'db' }, profiles: ['net1'] });
  const web = dual('web', '192.168.0.21', 'fd00::21', { labels: { role: 'web' }, profiles: ['net1'] });
  const v4only = ep('old', '192.168.0.22', { labels: { role: 'web' }, profiles: ['net1'] });
  const rules: Rule[] = [
    { action: 'Deny', ipVersion: 4 },
    { action: 'Deny', protocol: 'ICMP' },
    { action: 'Deny', source: { nets: ['10.0.0.0/8'] } },
    { action: 'Deny', protocol: 'ICMPv6', icmp: { type: 128, code: 0 } },
    { action: 'Allow', source: { nets: ['fd00:1::/64', '10.0.0.0/8'], notNets: ['10.1.0.0/16'] } },
    { action: 'Allow', ipVersion: 6, protocol: 'TCP', source: { selector: "role == 'web'", nets: ['fd00:2::/64', 'fd00:3::1'] }, destination: { ports: [80] } },
  ];
  const s6 = computeFilterState({ ...input({ endpoints: [db, web, v4only], profiles: [netProfile('net1')], policies: [gnp('p', { selector: "role == 'db'", ingress: rules })] }), family: 6 });

  it('the same chains, cali60 ipsets of IPv6 addresses, and neighbour discovery to the host before any policy', () => {
    checkIntegrity(s6, 6);
    const s4 = computeFilterState(input({ endpoints: [db, web, v4only], profiles: [netProfile('net1')], policies: [gnp('p', { selector: "role == 'db'", ingress: rules })] }));
    assert.deepEqual(s6.chains.map((c) => c.name).filter((n) => n !== 'cali-pi-p'), s4.chains.map((c) => c.name).filter((n) => n !== 'cali-pi-p'));
    assert.deepEqual(s6.hooks, s4.hooks);
    assert.deepEqual(chainOf(s6, 'cali-FORWARD'), chainOf(s4, 'cali-FORWARD'), 'fail closed: unknown cali interfaces drop IPv6 too');
    const webSetName = /--match-set (cali60s:\S+) src -m multiport/.exec(chainOf(s6, 'cali-pi-p').join('\n'))?.[1];
    const webSet = s6.ipsets.find((x) => x.name === webSetName);
    assert.deepEqual(webSet?.members, ['fd00::21'], 'IPv6 address of the web endpoint only (the v4-only one has none)');
    const wlToHost = chainOf(s6, 'cali-wl-to-host');
    assert.deepEqual(wlToHost.slice(0, 6).map((r) => /--icmpv6-type (\d+)/.exec(r)?.[1]), ['130', '131', '132', '133', '135', '136']);
    assert.ok(wlToHost.slice(0, 6).every((r) => r.endsWith('-j ACCEPT')));
    assert.equal(chainOf(s4, 'cali-wl-to-host').some((r) => r.includes('icmp')), false);
  });

  it('renders only the rules that can match IPv6: ipVersion, ICMP/ICMPv6 and the family of nets decide', () => {
    const text = chainOf(s6, 'cali-pi-p').join('\n');
    assert.doesNotMatch(text, /10\.|--icmp-type|-p icmp /);
    assert.match(text, /^-p 58 -m icmp6 --icmpv6-type 128\/0 -j DROP$/m);
    assert.match(text, /^-s fd00:1::\/64 -j MARK/m, 'the IPv4 notNets do not apply in the IPv6 table');
    assert.match(text, /^-p tcp -m set --match-set cali60n:\S+ src -m set --match-set cali60s:\S+ src -m multiport --dports 80 -j MARK/m);
    const nets = s6.ipsets.find((x) => x.name.startsWith('cali60n:'));
    assert.deepEqual(nets?.members, ['fd00:2::/64', 'fd00:3::1/128']);
    const text4 = chainOf(computeFilterState(input({ endpoints: [db], policies: [gnp('p', { selector: "role == 'db'", ingress: rules })] })), 'cali-pi-p').join('\n');
    assert.doesNotMatch(text4, /fd00|icmp6|cali60/);
  });

  it('rejects a malformed IPv6 net', () => {
    assert.throws(() => validateRule({ action: 'Allow', source: { nets: ['fd00::g/64'] } }), /is not a CIDR/);
    assert.throws(() => validateRule({ action: 'Allow', source: { nets: ['fd00::/129'] } }), /is not a CIDR/);
  });
});

// ---------------------------------------------------------------------------------------------
// The kernel's own parsers, in a throwaway network namespace (no change to this host).

function restoreInput(s: DesiredFilterState): string {
  const lines = ['*filter'];
  for (const c of s.chains) lines.push(`:${c.name} - [0:0]`);
  for (const c of s.chains) for (const r of c.rules) lines.push(`-A ${c.name} ${r}`);
  for (const [kernel, ours] of Object.entries(s.hooks)) lines.push(`-A ${kernel} -j ${ours}`);
  lines.push('COMMIT', '');
  return lines.join('\n');
}

function ipsetInput(s: DesiredFilterState, family: 4 | 6): string {
  const lines: string[] = [];
  for (const x of s.ipsets) {
    lines.push(`create ${x.name} ${x.type} family ${family === 4 ? 'inet' : 'inet6'}`);
    for (const m of x.members) lines.push(`add ${x.name} ${m}`);
  }
  return lines.join('\n') + '\n';
}

const canRunKernelTools = ((): boolean => {
  if (process.getuid?.() !== 0) return false;
  const r = spawnSync('unshare', ['-n', 'sh', '-c', 'command -v iptables-restore && command -v ipset'], { encoding: 'utf8' });
  return r.status === 0;
})();

/** Runs ipset restore, iptables-restore --test, then a real iptables-restore in a new netns; returns iptables-save. */
function kernelCheck(s: DesiredFilterState, family: 4 | 6 = 4): { status: number | null; stdout: string; stderr: string } {
  const dir = mkdtempSync(join(tmpdir(), 'policy-rules-'));
  try {
    const sets = join(dir, 'sets');
    const rules = join(dir, 'rules');
    writeFileSync(sets, ipsetInput(s, family));
    writeFileSync(rules, restoreInput(s));
    const ipt = family === 4 ? 'iptables' : 'ip6tables';
    const script = `ipset restore -f "$0" && ${ipt}-restore --test "$1" && ${ipt}-restore "$1" && ${ipt}-save -t filter`;
    const r = spawnSync('unshare', ['-n', 'sh', '-c', script, sets, rules], { encoding: 'utf8', maxBuffer: 64 << 20 });
    return { status: r.status, stdout: r.stdout, stderr: r.stderr };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** `-p <name>` as iptables-save prints it (names from /etc/protocols) → the number. */
function protocolNumbers(): Map<string, string> {
  const out = new Map<string, string>();
  try {
    for (const line of readFileSync('/etc/protocols', 'utf8').split('\n')) {
      const [name, num] = line.replace(/#.*/, '').trim().split(/\s+/);
      if (name && num) out.set(name, num);
    }
  } catch {
    /* no /etc/protocols: iptables-save prints numbers */
  }
  for (const [n, v] of Object.entries(PROTO_NUMBERS)) out.set(n, String(v));
  return out;
}

describe('computeFilterState: iptables-restore and ipset accept the output', { skip: canRunKernelTools ? false : 'needs root, unshare, iptables-restore and ipset' }, () => {
  const everyRule = (): DesiredFilterState => {
    const db = ep('db', '192.168.0.20', { labels: { role: 'db' }, profiles: ['net1'] });
    const web = ep('web', '192.168.0.21', { labels: { role: 'web' }, profiles: ['net1'] });
    const lonely = ep('lonely', '192.168.0.22');
    const remote = ep('rweb', '192.168.1.21', { node: 'h2', labels: { role: 'web' }, profiles: ['net1'] });
    const rules: Rule[] = [
      { action: 'Log' },
      { action: 'Allow', protocol: 'TCP', source: { selector: "role == 'web'", notSelector: 'has(banned)', nets: ['10.0.0.0/8', '192.168.0.0/16'], notNets: ['10.1.0.0/16'], ports: ['1:1023'], notPorts: [7] }, destination: { ports: Array.from({ length: 20 }, (_, i) => 100 + i), notPorts: ['30:40'] } },
      { action: 'Deny', protocol: 'UDP', destination: { nets: ['8.8.8.8/32'], notNets: ['8.8.8.8/32', '9.9.9.9'] } },
      { action: 'Deny', protocol: 'ICMP', icmp: { type: 8, code: 0 }, notICMP: { type: 3 } },
      { action: 'Pass', notProtocol: 'SCTP', source: { nets: ['0.0.0.0/0'] } },
      { action: 'Allow', protocol: 'UDPLite', destination: { ports: ['5000:6000'] } },
      { action: 'Allow', protocol: 'SCTP', source: { notPorts: [1] } },
      { action: 'Allow', protocol: 47 },
      { action: 'Deny', notProtocol: 'ICMPv6' },
    ];
    return computeFilterState(
      input({
        endpoints: [db, web, lonely, remote],
        profiles: [netProfile('net1')],
        policies: [
          gnp('every-rule', { order: 1, selector: "role == 'db'", types: ['Ingress', 'Egress'], ingress: rules, egress: rules }),
          gnp('second', { order: 2, selector: 'has(role)', ingress: [{ action: 'Allow' }] }),
          { ...gnp('a-policy-with-a-very-long-name-indeed', { order: 3, selector: 'all()', ingress: [{ action: 'Deny' }] }), kind: 'NetworkPolicy', namespace: 'default' },
        ],
      }),
    );
  };

  it('accepts every kind of rule we render, and iptables-save reads each rule back unchanged', () => {
    const s = everyRule();
    checkIntegrity(s);
    const r = kernelCheck(s);
    assert.equal(r.status, 0, r.stderr);
    const protos = protocolNumbers();
    const norm = (rule: string): string => rule.replace(/(-p) (\S+)/g, (_, f: string, p: string) => `${f} ${protos.get(p) ?? p}`);
    const saved = r.stdout.split('\n').filter((l) => l.startsWith('-A cali-')).map(norm);
    const ours = s.chains.flatMap((c: ChainSpec) => c.rules.map((rule) => norm(`-A ${c.name} ${rule}`)));
    assert.deepEqual(saved, ours);
    assert.ok(r.stdout.includes('-A FORWARD -j cali-FORWARD'));
  });

  it('the IPv6 table and inet6 ipsets restore with ip6tables-restore, read back unchanged', () => {
    const db = { ...ep('db', '192.168.0.20', { labels: { role: 'db' }, profiles: ['net1'] }), ipNetworks: ['192.168.0.20/32', 'fd00::20/128'] };
    const web = { ...ep('web', '192.168.0.21', { labels: { role: 'web' }, profiles: ['net1'] }), ipNetworks: ['fd00::21/128'] };
    const rules: Rule[] = [
      { action: 'Log' },
      { action: 'Allow', protocol: 'TCP', source: { selector: "role == 'web'", nets: ['fd00::/16', 'fd01::/16'], notNets: ['fd00:1::/32'], ports: ['1:1023'] }, destination: { notPorts: ['30:40'] } },
      { action: 'Deny', protocol: 'UDP', destination: { nets: ['fd00:8::8/128'], notNets: ['fd00:8::8', 'fd00:9::9'] } },
      { action: 'Deny', protocol: 'ICMPv6', icmp: { type: 128, code: 0 }, notICMP: { type: 1 } },
      { action: 'Pass', notProtocol: 'SCTP', source: { nets: ['::/0'] } },
    ];
    const s = computeFilterState({
      ...input({ endpoints: [db, web], profiles: [netProfile('net1')], policies: [gnp('six', { selector: "role == 'db'", types: ['Ingress', 'Egress'], ingress: rules, egress: rules })] }),
      family: 6,
    });
    checkIntegrity(s, 6);
    const r = kernelCheck(s, 6);
    assert.equal(r.status, 0, r.stderr);
    const protos = protocolNumbers();
    const norm = (rule: string): string => rule.replace(/(-p) (\S+)/g, (_, f: string, p: string) => `${f} ${protos.get(p) ?? p}`);
    const saved = r.stdout.split('\n').filter((l) => l.startsWith('-A cali-')).map(norm);
    assert.deepEqual(saved, s.chains.flatMap((c: ChainSpec) => c.rules.map((rule) => norm(`-A ${c.name} ${rule}`))));
  });

  it('the 500 × 200 table restores too', () => {
    const s = computeFilterState(scaleInput({ endpoints: 500, policies: 200 }));
    const t0 = Date.now();
    const r = kernelCheck(s);
    assert.equal(r.status, 0, r.stderr);
    const saved = r.stdout.split('\n').filter((l) => l.startsWith('-A cali-')).length;
    console.log(`[policy-rules] 500×200: ${ruleCount(s)} rules, ${s.ipsets.length} ipsets restored in a fresh netns in ${Date.now() - t0} ms`);
    assert.equal(saved, ruleCount(s));
  });

  it('the check is real: a malformed rule or ipset name fails', () => {
    const s = everyRule();
    const broken: DesiredFilterState = { ...s, chains: [...s.chains, { name: 'cali-broken', rules: ['-m multiport --dports 1 -j DROP'] }] };
    assert.notEqual(kernelCheck(broken).status, 0);
    const badSet: DesiredFilterState = { ...s, ipsets: [...s.ipsets, { name: 'cali40' + 'x'.repeat(40), type: 'hash:ip', members: [] }] };
    assert.notEqual(kernelCheck(badSet).status, 0);
  });
});
