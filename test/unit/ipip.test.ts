/**
 * IPIP without a kernel: the pure planner (calc/ipip.ts), the executor's argv (dataplane/ipip.ts) over a
 * runner that simulates tunl0, and the node's IPIP agent against the in-memory datastore and real IPAM:
 * tunnel address from the handle (kept across restarts), MTU, undo, and the "no ipip module" problem.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  IPIP_PROBLEM_PREFIX,
  ipipMtu,
  ipipPoolsForNode,
  ipipTunnelHandle,
  planTunl0,
  reusableTunnelAddress,
  withIpipStatus,
} from '../../plugin/calc/ipip.js';
import { matchSelector } from '../../plugin/calc/selector.js';
import { MemoryDatastore } from '../../plugin/datastore/memory.js';
import { keys, type IPPool, type NodeRecord } from '../../plugin/datastore/model.js';
import { IpipDataplane, parseAddrShow } from '../../plugin/dataplane/ipip.js';
import { Ipam, isTunnelHandle } from '../../plugin/ipam/ipam.js';
import { CommandFailedError } from '../../plugin/lib/errors.js';
import type { CommandResult, CommandRunner } from '../../plugin/lib/exec.js';
import { silentLogger } from '../../plugin/lib/log.js';
import { IpipAgent } from '../../plugin/node/ipip-agent.js';

const pool = (name: string, cidr: string, over: Partial<IPPool> = {}): IPPool => ({
  name,
  cidr,
  blockSize: 26,
  ipipMode: 'Always',
  vxlanMode: 'Never',
  natOutgoing: false,
  disabled: false,
  nodeSelector: 'all()',
  ...over,
});

const nodeRecord = (over: Partial<NodeRecord> = {}): NodeRecord => ({
  name: 'h1',
  ipv4Address: '10.0.0.1/24',
  asNumber: null,
  routeReflectorClusterId: null,
  labels: {},
  startedAt: 1,
  ...over,
});

describe('IPIP planner (pure)', () => {
  it('selects enabled IPv4 pools with ipipMode Always/CrossSubnet whose nodeSelector matches, by name', () => {
    const pools = [
      pool('z-cross', '10.2.0.0/16', { ipipMode: 'CrossSubnet' }),
      pool('a-always', '10.1.0.0/16'),
      pool('never', '10.3.0.0/16', { ipipMode: 'Never' }),
      pool('disabled', '10.4.0.0/16', { disabled: true }),
      pool('v6', 'fd00::/48'),
      pool('rack-b', '10.5.0.0/16', { nodeSelector: "rack == 'b'" }),
    ];
    assert.deepEqual(ipipPoolsForNode(pools, { labels: { rack: 'a' } }, matchSelector).map((p) => p.name), ['a-always', 'z-cross']);
    assert.deepEqual(ipipPoolsForNode(pools, { labels: { rack: 'b' } }, matchSelector).map((p) => p.name), ['a-always', 'rack-b', 'z-cross']);
  });

  it('MTU is the underlay minus 20 unless configured; 1500 when the underlay is unknown', () => {
    assert.equal(ipipMtu(0, 9000), 8980);
    assert.equal(ipipMtu(0, undefined), 1480);
    assert.equal(ipipMtu(1400, 9000), 1400);
  });

  it('reuses a held tunnel address only while it lies in a wanted pool', () => {
    const wanted = [pool('p', '10.1.0.0/16')];
    assert.equal(reusableTunnelAddress(['10.9.0.1', '10.1.3.0'], wanted), '10.1.3.0');
    assert.equal(reusableTunnelAddress(['10.9.0.1'], wanted), undefined);
  });

  it('brings tunl0 to exactly our /32, MTU and up; a second plan is empty', () => {
    const desired = { address: '10.1.3.0', mtu: 1480 };
    const steps = planTunl0({ up: false, mtu: 1480, addresses: ['10.1.9.9/32', '172.16.0.1/24'] }, desired, ['10.1.0.0/16']);
    assert.deepEqual(steps, [
      { op: 'addr-del', address: '10.1.9.9/32' },
      { op: 'addr-del', address: '172.16.0.1/24' },
      { op: 'link-up', mtu: 1480 },
      { op: 'addr-add', address: '10.1.3.0/32' },
    ]);
    assert.deepEqual(planTunl0({ up: true, mtu: 1480, addresses: ['10.1.3.0/32'] }, desired, []), []);
    assert.deepEqual(planTunl0({ up: true, mtu: 1500, addresses: ['10.1.3.0/32'] }, desired, []), [{ op: 'link-up', mtu: 1480 }]);
  });

  it('undo removes only addresses inside our pools, then sets tunl0 down; foreign addresses stay', () => {
    assert.deepEqual(planTunl0({ up: true, mtu: 1480, addresses: ['10.1.3.0/32', '172.16.0.1/24'] }, null, ['10.1.0.0/16', 'fd00::/48']), [
      { op: 'addr-del', address: '10.1.3.0/32' },
      { op: 'link-down' },
    ]);
    assert.deepEqual(planTunl0({ up: true, mtu: 1480, addresses: ['172.16.0.1/24'] }, null, ['10.1.0.0/16']), []);
    assert.deepEqual(planTunl0({ up: false, mtu: 0, addresses: [] }, null, ['10.1.0.0/16']), []);
  });

  it('the node record keeps other layers\' problems and changes only when something differs', () => {
    const n = nodeRecord({ problems: ['vxlan: something'] });
    const withProblem = withIpipStatus(n, null, 'no module');
    assert.deepEqual(withProblem?.problems, ['vxlan: something', `${IPIP_PROBLEM_PREFIX}no module`]);
    assert.equal(withIpipStatus(withProblem as NodeRecord, null, 'no module'), undefined);
    const fixed = withIpipStatus(withProblem as NodeRecord, '10.1.3.0', null);
    assert.deepEqual(fixed?.problems, ['vxlan: something']);
    assert.equal(fixed?.ipv4IPIPTunnelAddr, '10.1.3.0');
    const undone = withIpipStatus(nodeRecord({ ipv4IPIPTunnelAddr: '10.1.3.0' }), null, null);
    assert.ok(undone && !('ipv4IPIPTunnelAddr' in undone) && !('problems' in undone));
  });

  it('tunnel handles are recognised so the garbage collector leaves them alone', () => {
    assert.ok(isTunnelHandle(ipipTunnelHandle('h1')));
    assert.ok(isTunnelHandle('vxlan-tunnel-addr-h1'));
    assert.ok(!isTunnelHandle('0123456789abcdef'));
  });
});

/** A kernel with (or without) the ipip module, as far as `ip` and `modprobe` show it. */
class FakeTunl0Runner implements CommandRunner {
  readonly calls: string[] = [];
  tunl0: { up: boolean; mtu: number; addresses: string[] } | undefined;
  constructor(
    private readonly moduleLoadable: boolean,
    present = false,
  ) {
    if (present) this.tunl0 = { up: false, mtu: 1480, addresses: [] };
  }
  async run(argv: readonly string[]): Promise<CommandResult> {
    const cmd = argv.join(' ');
    this.calls.push(cmd);
    const ok = (stdout = ''): CommandResult => ({ stdout, stderr: '' });
    const fail = (stderr: string): never => {
      throw new CommandFailedError([...argv], 1, null, stderr);
    };
    const t = this.tunl0;
    if (cmd === 'ip -json addr show dev tunl0') {
      if (!t) return fail('Device "tunl0" does not exist.');
      const info = t.addresses.map((a) => ({ family: 'inet', local: a.split('/')[0], prefixlen: Number(a.split('/')[1]) }));
      return ok(JSON.stringify([{ ifname: 'tunl0', mtu: t.mtu, flags: t.up ? ['NOARP', 'UP'] : ['NOARP'], addr_info: info }]));
    }
    if (cmd === 'ip -json -4 addr show') {
      return ok(JSON.stringify([{ ifname: 'eth0', mtu: 9000, flags: ['UP'], addr_info: [{ family: 'inet', local: '10.0.0.1', prefixlen: 24 }] }]));
    }
    if (cmd === 'modprobe ipip') {
      if (!this.moduleLoadable) return fail('modprobe: FATAL: Module ipip not found in directory /lib/modules/6.18.44');
      this.tunl0 = { up: false, mtu: 1480, addresses: [] };
      return ok();
    }
    if (!t) return fail('Cannot find device "tunl0"');
    const m = /^ip (addr (add|del) (\S+) dev tunl0|link set dev tunl0 (mtu (\d+) up|down))$/.exec(cmd);
    if (!m) return fail(`unexpected command ${cmd}`);
    if (m[2] === 'add') t.addresses.push(m[3] as string);
    else if (m[2] === 'del') t.addresses = t.addresses.filter((a) => a !== m[3]);
    else if (m[5]) Object.assign(t, { up: true, mtu: Number(m[5]) });
    else t.up = false;
    return ok();
  }
}

describe('IPIP executor (recorded argv)', () => {
  it('parses ip -json addr show', () => {
    const out = parseAddrShow(JSON.stringify([{ ifname: 'tunl0', mtu: 1480, flags: ['NOARP', 'UP', 'LOWER_UP'], addr_info: [{ family: 'inet', local: '10.1.3.0', prefixlen: 32 }, { family: 'inet6', local: 'fe80::1', prefixlen: 64 }] }]));
    assert.deepEqual(out, [{ name: 'tunl0', mtu: 1480, up: true, v4: ['10.1.3.0/32'] }]);
  });

  it('loads the module when tunl0 is missing', async () => {
    const runner = new FakeTunl0Runner(true);
    assert.deepEqual(await new IpipDataplane(runner).ensureAvailable(), { available: true });
    assert.ok(runner.calls.includes('modprobe ipip'));
  });

  it('says why when the kernel cannot provide ipip, and touches nothing', async () => {
    const runner = new FakeTunl0Runner(false);
    const result = await new IpipDataplane(runner).ensureAvailable();
    assert.equal(result.available, false);
    assert.match(result.available ? '' : result.reason, /this kernel has no ipip module \(modprobe ipip failed: modprobe: FATAL: Module ipip not found/);
    assert.deepEqual(runner.calls, ['ip -json addr show dev tunl0', 'modprobe ipip']);
  });

  it('programs tunl0 with ip argv; applying again changes nothing', async () => {
    const runner = new FakeTunl0Runner(false, true);
    const dp = new IpipDataplane(runner);
    assert.deepEqual(await dp.apply({ address: '10.1.3.0', mtu: 8980 }, ['10.1.0.0/16']), ['link set dev tunl0 mtu 8980 up', 'addr add 10.1.3.0/32 dev tunl0']);
    assert.deepEqual(await dp.apply({ address: '10.1.3.0', mtu: 8980 }, ['10.1.0.0/16']), []);
    assert.deepEqual(await dp.apply(null, ['10.1.0.0/16']), ['addr del 10.1.3.0/32 dev tunl0', 'link set dev tunl0 down']);
    assert.equal(await dp.underlayMtu('10.0.0.1'), 9000);
  });
});

describe('IPIP agent (memory datastore, real IPAM, simulated tunl0)', () => {
  const setup = async (runner: FakeTunl0Runner, store = new MemoryDatastore()) => {
    await store.put(keys.node('h1'), nodeRecord());
    // IPAM caches pools for a second; each call here is a second later.
    let clock = 0;
    const ipam = new Ipam(store, { node: 'h1', now: () => (clock += 2_000) });
    const agent = new IpipAgent(store, ipam, new IpipDataplane(runner), 'h1', { mtu: 0 }, silentLogger);
    const node = async () => (await store.get(keys.node('h1')))?.value;
    return { store, agent, node };
  };

  it('with an IPIP pool: tunnel address from IPAM under a stable handle, MTU underlay − 20, node record; undone when the pool goes', async () => {
    const runner = new FakeTunl0Runner(true);
    const { store, agent, node } = await setup(runner);
    await store.put(keys.pool('ipip'), pool('ipip', '10.1.0.0/16'));
    await agent.sync();
    const addr = (await node())?.ipv4IPIPTunnelAddr;
    assert.ok(addr && addr.startsWith('10.1.'));
    assert.deepEqual(runner.tunl0, { up: true, mtu: 8980, addresses: [`${addr}/32`] });
    assert.deepEqual((await store.get(keys.handle(ipipTunnelHandle('h1'))))?.value.addresses, [addr]);

    // A restarted node (new agent, same datastore and kernel) keeps the same address and changes nothing.
    const again = new IpipAgent(store, new Ipam(store, { node: 'h1' }), new IpipDataplane(runner), 'h1', { mtu: 0 }, silentLogger);
    const before = runner.calls.length;
    await again.sync();
    assert.equal((await node())?.ipv4IPIPTunnelAddr, addr);
    assert.ok(!runner.calls.slice(before).some((c) => / (add|del|set) /.test(c)), 'no kernel change on the second run');

    // The pool turns IPIP off: address released, tunl0 cleared and down, node record cleared.
    await store.put(keys.pool('ipip'), pool('ipip', '10.1.0.0/16', { ipipMode: 'Never' }));
    await again.sync();
    assert.deepEqual(runner.tunl0, { up: false, mtu: 8980, addresses: [] });
    assert.equal((await node())?.ipv4IPIPTunnelAddr, undefined);
    assert.equal(await store.get(keys.handle(ipipTunnelHandle('h1'))), undefined);
  });

  it('without the ipip module: pool accepted, no address held, a clear problem in the node record; cleared when IPIP is off', async () => {
    const runner = new FakeTunl0Runner(false);
    const { store, agent, node } = await setup(runner);
    await store.put(keys.node('h1'), nodeRecord({ problems: ['vxlan: keep me'] }));
    await store.put(keys.pool('ipip'), pool('ipip', '10.1.0.0/16', { ipipMode: 'CrossSubnet' }));
    await agent.sync();
    const rec = await node();
    assert.equal(rec?.ipv4IPIPTunnelAddr, undefined);
    assert.equal(rec?.problems?.[0], 'vxlan: keep me');
    assert.match(rec?.problems?.[1] ?? '', /^ipip: pools ipip want IPIP, but this kernel has no ipip module/);
    assert.equal(await store.get(keys.handle(ipipTunnelHandle('h1'))), undefined);
    assert.equal((await store.list(keys.blocks())).items.length, 0, 'no block claimed for a tunnel that cannot exist');
    assert.ok((await store.get(keys.pool('ipip')))?.value, 'the pool stays');

    await store.delete(keys.pool('ipip'));
    await agent.sync();
    assert.deepEqual((await node())?.problems, ['vxlan: keep me']);
  });

  it('moves the tunnel address when its pool stops being an IPIP pool for this node', async () => {
    const runner = new FakeTunl0Runner(false, true);
    const { store, agent, node } = await setup(runner);
    await store.put(keys.pool('a'), pool('a', '10.1.0.0/16'));
    await agent.sync();
    await store.put(keys.pool('a'), pool('a', '10.1.0.0/16', { nodeSelector: "rack == 'x'" }));
    await store.put(keys.pool('b'), pool('b', '10.2.0.0/16'));
    await agent.sync();
    const addr = (await node())?.ipv4IPIPTunnelAddr ?? '';
    assert.match(addr, /^10\.2\./);
    assert.deepEqual(runner.tunl0?.addresses, [`${addr}/32`]);
    assert.deepEqual((await store.get(keys.handle(ipipTunnelHandle('h1'))))?.value.addresses, [addr]);
  });
});
