/**
 * IPv6 policy against the real kernel: computeFilterState(family 6) applied by a FilterApplier for
 * family 6 (ip6tables-restore, inet6 ipsets `cali60*`) beside the IPv4 one, in throwaway namespaces:
 *   ct-fa6-<pid>-h         the host, programmed by LinuxDataplane (dual-stack veths) and both appliers,
 *   ct-fa6-<pid>-a/-b/-c   workloads: A (role web), B (role db), C with an interface no endpoint has.
 * Containers route IPv6 via the host veth's link-local address, as Docker sets them up.
 * after() deletes the namespaces whatever happened. Needs root, iproute2, ip6tables, ipset and ping.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { computeFilterState } from '../../plugin/calc/policy-rules.js';
import type { Policy, WorkloadEndpoint } from '../../plugin/datastore/model.js';
import { FilterApplier, parseIpsetSave } from '../../plugin/dataplane/filter-applier.js';
import { LinuxDataplane } from '../../plugin/dataplane/linux.js';
import { ExecFileRunner, type CommandResult, type CommandRunner, type RunOptions } from '../../plugin/lib/exec.js';

const isRoot = typeof process.getuid === 'function' && process.getuid() === 0;
const base = `ct-fa6-${process.pid}`;
const [HOST, A, B, C] = ['h', 'a', 'b', 'c'].map((s) => `${base}-${s}`) as [string, string, string, string];
const plain = new ExecFileRunner();
const inNs = (ns: string): ExecFileRunner => new ExecFileRunner(['nsenter', `--net=/run/netns/${ns}`]);
const host = inNs(HOST);
const GATEWAY_V6 = 'fe80::ecee:eeff:feee:eeee';

class Recording implements CommandRunner {
  readonly calls: string[] = [];
  constructor(private readonly inner: CommandRunner) {}
  run(argv: readonly string[], options?: RunOptions): Promise<CommandResult> {
    this.calls.push(argv.join(' '));
    return this.inner.run(argv, options);
  }
}

function endpoint(name: string, n: number, labels: Record<string, string>): WorkloadEndpoint {
  return {
    node: 'h',
    endpointId: name,
    networkId: 'net',
    containerId: null,
    interfaceName: `cali000000000${name}`,
    ipNetworks: [`10.66.0.${n}/32`, `fd00:66::${n}/128`],
    mac: null,
    mtu: 0,
    labels,
    profiles: [],
    createdAt: 0,
  };
}
const epA = endpoint('a', 2, { role: 'web' });
const epB = endpoint('b', 3, { role: 'db' });
const epC = endpoint('c', 4, {}); // plumbed, but not in the policy input: an unknown interface
const policy: Policy = {
  kind: 'GlobalNetworkPolicy',
  name: 'web-to-db',
  selector: 'all()',
  types: ['Ingress', 'Egress'],
  ingress: [{ action: 'Allow', source: { selector: "role == 'web'" } }],
  egress: [{ action: 'Allow' }],
};
const stateFor = (family: 4 | 6) => computeFilterState({ node: 'h', family, localEndpoints: [epA, epB], allEndpoints: [epA, epB], profiles: [], policies: [policy] });

async function sh(r: CommandRunner, ...argv: string[]): Promise<string> {
  return (await r.run(argv, { timeoutMs: 20_000 })).stdout;
}
async function pings(ns: string, addr: string): Promise<boolean> {
  try {
    await inNs(ns).run(['ping', '-c1', '-W1', '-q', addr], { timeoutMs: 5_000 });
    return true;
  } catch {
    return false;
  }
}

describe('IPv6 policy on a real kernel (ip6tables + inet6 ipsets)', { skip: isRoot ? false : 'needs root (network namespaces)' }, () => {
  const v4 = new FilterApplier(host);
  const v6 = new FilterApplier(host, { family: 6 });

  before(async () => {
    for (const ns of [HOST, A, B, C]) {
      await plain.run(['ip', 'netns', 'add', ns]);
      await sh(inNs(ns), 'ip', 'link', 'set', 'lo', 'up');
    }
    const dp = new LinuxDataplane(host);
    await dp.ensureBase();
    for (const [ep, ns] of [[epA, A], [epB, B], [epC, C]] as const) {
      const peerName = `tmp000000000${ep.endpointId}`;
      await dp.ensureEndpoint({ interfaceName: ep.interfaceName, peerName, ipNetworks: ep.ipNetworks, mtu: 0 });
      const ctr = inNs(ns);
      await sh(host, 'ip', 'link', 'set', peerName, 'netns', ns);
      await sh(ctr, 'ip', 'link', 'set', peerName, 'name', 'eth0');
      await sh(ctr, 'ip', 'addr', 'add', ep.ipNetworks[0] ?? '', 'dev', 'eth0');
      await sh(ctr, 'ip', '-6', 'addr', 'add', ep.ipNetworks[1] ?? '', 'dev', 'eth0', 'nodad');
      await sh(ctr, 'ip', 'link', 'set', 'eth0', 'up');
      await sh(ctr, 'ip', 'route', 'add', '169.254.1.1', 'dev', 'eth0', 'scope', 'link');
      await sh(ctr, 'ip', 'route', 'add', 'default', 'via', '169.254.1.1');
      await sh(ctr, 'ip', '-6', 'route', 'add', 'default', 'via', GATEWAY_V6, 'dev', 'eth0');
    }
  });

  after(async () => {
    for (const ns of [HOST, A, B, C]) await plain.run(['ip', 'netns', 'del', ns]).catch(() => undefined);
  });

  test('before policy, IPv6 flows between all workloads (the veth link-local is the gateway)', async () => {
    assert.ok(await pings(A, 'fd00:66::3'), 'A -> B');
    assert.ok(await pings(C, 'fd00:66::2'), 'C -> A');
  });

  test('both tables applied: IPv4 and IPv6 enforce the same policy; unknown interface dropped in both', async () => {
    await v4.apply(stateFor(4));
    const report = await v6.apply(stateFor(6));
    assert.ok(report.changedChains.includes('cali-FORWARD'));
    assert.ok(report.changedSets.some((s) => s.startsWith('cali60s:')), report.changedSets.join(' '));
    assert.match(await sh(host, 'ip6tables', '-S', 'FORWARD'), /-A FORWARD -m comment --comment "?cali:hook"? -j cali-FORWARD/);
    const sets = parseIpsetSave(await sh(host, 'ipset', 'save'));
    const six = [...sets.values()].filter((s) => s.name.startsWith('cali60'));
    assert.ok(six.length > 0 && six.every((s) => s.options.join(' ').includes('family inet6')));
    assert.ok([...sets.keys()].some((n) => n.startsWith('cali40')), 'the IPv4 sets are still there');
    for (const [family, b, a, c] of [['IPv4', '10.66.0.3', '10.66.0.2', '10.66.0.2'], ['IPv6', 'fd00:66::3', 'fd00:66::2', 'fd00:66::2']] as const) {
      assert.ok(await pings(A, b), `${family}: A (web) -> B allowed`);
      assert.equal(await pings(B, a), false, `${family}: B (db) -> A denied`);
      assert.equal(await pings(C, c), false, `${family}: C (unknown interface) dropped`);
    }
  });

  test('each family leaves the other alone; a fresh IPv6 applier (a restart) finds nothing to do and only reads', async () => {
    assert.deepEqual(await v4.apply(stateFor(4)), { changedChains: [], changedSets: [] });
    const rec = new Recording(host);
    assert.deepEqual(await new FilterApplier(rec, { family: 6 }).apply(stateFor(6)), { changedChains: [], changedSets: [] });
    assert.deepEqual([...rec.calls].sort(), ['ip6tables-save -t filter', 'ipset save']);
  });

  test('an empty IPv6 state removes every ip6tables chain and cali60 set of ours, and no IPv4 one', async () => {
    await v6.apply({ chains: [], ipsets: [], hooks: {} });
    assert.doesNotMatch(await sh(host, 'ip6tables-save', '-t', 'filter'), /cali/);
    const names = [...parseIpsetSave(await sh(host, 'ipset', 'save')).keys()];
    assert.ok(!names.some((n) => n.startsWith('cali6')));
    assert.ok(names.some((n) => n.startsWith('cali40')));
    assert.match(await sh(host, 'iptables-save', '-t', 'filter'), /cali-FORWARD/);
  });
});
