/**
 * The pure parts of the Linux dataplane (parsers, argv builders, the reconcile plan, the iptables plan)
 * and LinuxDataplane driven by a recording CommandRunner: no kernel involved.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { AlreadyExistsError, CommandFailedError, ValidationError } from '../../plugin/lib/errors.js';
import type { CommandResult, CommandRunner, RunOptions } from '../../plugin/lib/exec.js';
import {
  batchInput,
  blackholeReplaceCommand,
  endpointSysctls,
  IPV6_FORWARDING,
  formatIPv6,
  hostRouteReplaceCommand,
  parseCidr,
  parseLinks,
  parseRoutes,
  parseSysctlOutput,
  routeDelCommand,
  sysctlPath,
  vethAddCommand,
  type KernelLink,
  type KernelRoute,
} from '../../plugin/dataplane/iproute.js';
import { LinuxDataplane, planForwardChain, planReconcile, type KernelState, type Step } from '../../plugin/dataplane/linux.js';
import type { DesiredEndpoint, DesiredHostState } from '../../plugin/dataplane/types.js';

// ---------------------------------------------------------------------------------------------------
// A recording runner: `handler` answers each argv (throw to fail it), `calls` keeps argv and stdin.

interface Call {
  argv: string[];
  input?: string;
}
type Handler = (argv: string[], input: string | undefined) => string | Promise<string>;

class RecordingRunner implements CommandRunner {
  readonly calls: Call[] = [];
  constructor(private readonly handler: Handler = () => '') {}
  async run(argv: readonly string[], options: RunOptions = {}): Promise<CommandResult> {
    const call: Call = { argv: [...argv] };
    if (options.input !== undefined) call.input = options.input;
    this.calls.push(call);
    return { stdout: await this.handler([...argv], options.input), stderr: '' };
  }
  argvs(): string[] {
    return this.calls.map((c) => c.argv.join(' '));
  }
}
const failed = (argv: string[], stderr = 'RTNETLINK answers: File exists'): CommandFailedError => new CommandFailedError(argv, 2, null, stderr);
const is = (argv: string[], text: string): boolean => argv.join(' ') === text;
const starts = (argv: string[], text: string): boolean => argv.join(' ').startsWith(text);

// Real `ip -json` output captured on this kernel (iproute2 6.1).
const LINKS_JSON = JSON.stringify([
  { ifindex: 1, ifname: 'lo', flags: ['LOOPBACK', 'UP', 'LOWER_UP'], mtu: 65536, link_type: 'loopback', address: '00:00:00:00:00:00' },
  {
    ifindex: 3,
    link_index: 2,
    ifname: 'cali0123456789a',
    flags: ['BROADCAST', 'MULTICAST', 'UP', 'LOWER_UP'],
    mtu: 1500,
    address: 'ee:ee:ee:ee:ee:ee',
    link_netnsid: 0,
    linkinfo: { info_kind: 'veth' },
  },
  { ifindex: 4, link: 'cali0000000000b', ifname: 'tmp0000000000b', flags: ['BROADCAST', 'MULTICAST'], mtu: 1500, address: '4e:fa:17:46:42:88', linkinfo: { info_kind: 'veth' } },
]);
const ROUTES4_JSON =
  '[{"type":"blackhole","dst":"10.1.0.0/26","flags":[]},{"dst":"10.1.0.5","dev":"cali0123456789a","scope":"link","flags":["linkdown"]}]';
const ROUTES6_JSON =
  '[{"dst":"fd00::5","dev":"cali0123456789a","metric":1024,"flags":["linkdown"],"pref":"medium"},{"type":"blackhole","dst":"fd00::/122","dev":"lo","metric":1024,"flags":[],"pref":"medium"}]';

describe('addresses', () => {
  it('parses and canonicalises CIDRs and bare addresses', () => {
    assert.equal(parseCidr('10.1.0.5').text, '10.1.0.5/32');
    assert.equal(parseCidr('10.1.0.0/26').text, '10.1.0.0/26');
    assert.equal(parseCidr('FD00:0:0::5/128').text, 'fd00::5/128');
    assert.equal(parseCidr('fd00::5').text, 'fd00::5/128');
    assert.equal(parseCidr('::ffff:10.1.2.3').text, '::ffff:a01:203/128');
    assert.equal(parseCidr('default').text, '0.0.0.0/0');
    assert.equal(parseCidr('default', 'dst', 6).text, '::/0');
    for (const bad of ['10.1.0.5/26', '10.1.0.256/32', '10.1.0/24', '010.1.0.0/24', '1::2::3', 'fd00::/129', 'x', '', '10.0.0.0/8 x', '-1.0.0.0/8']) {
      assert.throws(() => parseCidr(bad), ValidationError, bad);
    }
  });
  it('formats IPv6 per RFC 5952', () => {
    const f = (s: string): string => formatIPv6(parseCidr(s).addr);
    assert.equal(f('::'), '::');
    assert.equal(f('::1'), '::1');
    assert.equal(f('fd00:0:0:1::'), 'fd00:0:0:1::');
    assert.equal(f('1:0:1:0:1:0:1:0'), '1:0:1:0:1:0:1:0');
    assert.equal(f('1:0:0:1:0:0:0:1'), '1:0:0:1::1');
    assert.equal(f('1:0:0:1:0:0:1:1'), '1::1:0:0:1:1');
    assert.equal(f('2001:DB8:0000:0000:0000:0000:0000:0001'), '2001:db8::1');
  });
});

describe('ip -json parsers', () => {
  it('parses links', () => {
    assert.deepEqual(parseLinks(LINKS_JSON), [
      { name: 'lo', index: 1, mtu: 65536, up: true, mac: '00:00:00:00:00:00' },
      { name: 'cali0123456789a', index: 3, mtu: 1500, up: true, mac: 'ee:ee:ee:ee:ee:ee', kind: 'veth' },
      { name: 'tmp0000000000b', index: 4, mtu: 1500, up: false, mac: '4e:fa:17:46:42:88', kind: 'veth' },
    ]);
    assert.deepEqual(parseLinks(''), []);
    assert.deepEqual(parseLinks('[]\n'), []);
    assert.throws(() => parseLinks('{oops'), SyntaxError);
  });
  it('parses routes of both families, giving host routes their prefix', () => {
    assert.deepEqual(parseRoutes(ROUTES4_JSON, 4), [
      { family: 4, dst: '10.1.0.0/26', type: 'blackhole' },
      { family: 4, dst: '10.1.0.5/32', type: 'unicast', dev: 'cali0123456789a', scope: 'link' },
    ]);
    assert.deepEqual(parseRoutes(ROUTES6_JSON, 6), [
      { family: 6, dst: 'fd00::5/128', type: 'unicast', dev: 'cali0123456789a', metric: 1024 },
      { family: 6, dst: 'fd00::/122', type: 'blackhole', dev: 'lo', metric: 1024 },
    ]);
    assert.deepEqual(parseRoutes('[{"dst":"default","dev":"eth0"}]', 4), [{ family: 4, dst: '0.0.0.0/0', type: 'unicast', dev: 'eth0' }]);
  });
  it('parses sysctl output', () => {
    const m = parseSysctlOutput('net.ipv4.conf.cali1.proxy_arp = 1\nnet.ipv4.neigh.cali1.proxy_delay = 80\n');
    assert.deepEqual([...m], [
      ['net.ipv4.conf.cali1.proxy_arp', '1'],
      ['net.ipv4.neigh.cali1.proxy_delay', '80'],
    ]);
  });
});

describe('argv builders', () => {
  it('builds ip commands with proto 80 and no shell metacharacters', () => {
    assert.deepEqual(vethAddCommand('cali1', 'tmp1', 1400), [
      'link', 'add', 'name', 'cali1', 'mtu', '1400', 'address', 'ee:ee:ee:ee:ee:ee', 'up', 'type', 'veth', 'peer', 'name', 'tmp1', 'mtu', '1400',
    ]);
    assert.deepEqual(vethAddCommand('cali1', 'tmp1', 0), ['link', 'add', 'name', 'cali1', 'address', 'ee:ee:ee:ee:ee:ee', 'up', 'type', 'veth', 'peer', 'name', 'tmp1']);
    assert.deepEqual(hostRouteReplaceCommand(4, '10.1.0.5/32', 'cali1'), ['route', 'replace', '10.1.0.5/32', 'dev', 'cali1', 'scope', 'link', 'proto', '80']);
    assert.deepEqual(hostRouteReplaceCommand(6, 'fd00::5/128', 'cali1'), ['route', 'replace', 'fd00::5/128', 'dev', 'cali1', 'proto', '80']);
    assert.deepEqual(blackholeReplaceCommand('10.1.0.0/26'), ['route', 'replace', 'blackhole', '10.1.0.0/26', 'proto', '80']);
    assert.deepEqual(routeDelCommand({ family: 6, dst: 'fd00::/122', type: 'blackhole', dev: 'lo', metric: 1024 }), [
      'route', 'del', 'blackhole', 'fd00::/122', 'proto', '80', 'metric', '1024',
    ]);
    assert.deepEqual(routeDelCommand({ family: 4, dst: '10.1.0.5/32', type: 'unicast', dev: 'cali1', scope: 'link' }), [
      'route', 'del', '10.1.0.5/32', 'dev', 'cali1', 'proto', '80',
    ]);
    assert.equal(batchInput([['route', 'replace', 'a'], ['route', 'replace', 'b']]), 'route replace a\nroute replace b\n');
    assert.equal(sysctlPath('/proc/sys/', 'net.ipv4.conf.cali1.proxy_arp'), '/proc/sys/net/ipv4/conf/cali1/proxy_arp');
    assert.deepEqual(
      endpointSysctls('cali1').map((s) => `${s.key}=${s.value}`),
      ['net.ipv4.conf.cali1.proxy_arp=1', 'net.ipv4.neigh.cali1.proxy_delay=0', 'net.ipv4.conf.cali1.forwarding=1'],
    );
  });
});

// ---------------------------------------------------------------------------------------------------
// planReconcile

const EP_A: DesiredEndpoint = { interfaceName: 'cali0000000000a', peerName: 'tmp0000000000a', ipNetworks: ['10.65.0.2/32'], mtu: 0 };
const EP_B: DesiredEndpoint = { interfaceName: 'cali0000000000b', peerName: 'tmp0000000000b', ipNetworks: ['10.65.0.3/32', 'fd00:65::3/128'], mtu: 1400 };

function veth(name: string, extra: Partial<KernelLink> = {}): KernelLink {
  return { name, index: 10, kind: 'veth', mtu: 1500, mac: 'ee:ee:ee:ee:ee:ee', up: true, ...extra };
}
function hostRoute(dst: string, dev: string, extra: Partial<KernelRoute> = {}): KernelRoute {
  return dst.includes(':')
    ? { family: 6, dst, type: 'unicast', dev, metric: 1024, ...extra }
    : { family: 4, dst, type: 'unicast', dev, scope: 'link', ...extra };
}
function blackhole(dst: string): KernelRoute {
  return dst.includes(':') ? { family: 6, dst, type: 'blackhole', dev: 'lo', metric: 1024 } : { family: 4, dst, type: 'blackhole' };
}
function goodSysctls(...eps: DesiredEndpoint[]): Map<string, string> {
  const v6 = eps.some((e) => e.ipNetworks.some((n) => n.includes(':')));
  return new Map([
    ...eps.flatMap((e) => endpointSysctls(e.interfaceName, e.ipNetworks.some((n) => n.includes(':'))).map((s) => [s.key, s.value] as [string, string])),
    ...(v6 ? [[IPV6_FORWARDING.key, IPV6_FORWARDING.value] as [string, string]] : []),
  ]);
}
/** A kernel exactly matching EP_A + EP_B + one v4 blackhole, with EP_B's peer still in the host namespace. */
function inSync(): KernelState {
  return {
    links: [
      { name: 'lo', index: 1, mtu: 65536, up: true },
      veth(EP_A.interfaceName),
      veth(EP_B.interfaceName, { mtu: 1400 }),
      veth(EP_B.peerName, { mtu: 1400, up: false, mac: '4e:fa:17:46:42:88' }),
    ],
    routes: [
      hostRoute('10.65.0.2/32', EP_A.interfaceName),
      hostRoute('10.65.0.3/32', EP_B.interfaceName),
      hostRoute('fd00:65::3/128', EP_B.interfaceName),
      blackhole('10.65.0.0/26'),
      { family: 4, dst: '169.254.1.1/32', type: 'unicast', dev: 'lo', scope: 'link' },
    ],
    sysctls: goodSysctls(EP_A, EP_B),
  };
}
const DESIRED: DesiredHostState = { endpoints: [EP_A, EP_B], blackholes: ['10.65.0.0/26'] };
const ops = (steps: Step[]): string[] => steps.map((s) => s.op);

describe('planReconcile', () => {
  it('makes no steps when the kernel matches', () => {
    assert.deepEqual(planReconcile(inSync(), DESIRED), []);
  });

  it('creates everything on an empty kernel, in apply order', () => {
    const steps = planReconcile({ links: [], routes: [], sysctls: new Map() }, DESIRED);
    // The third sysctl step is the host-wide IPv6 forwarding (EP_B has an IPv6 address).
    assert.deepEqual(ops(steps), ['link-add', 'link-add', 'sysctl', 'sysctl', 'sysctl', 'route-replace', 'route-replace', 'route-replace', 'blackhole-add']);
    assert.deepEqual(steps[4], { op: 'sysctl', interfaceName: '', settings: [IPV6_FORWARDING] });
    assert.deepEqual(steps[1], { op: 'link-add', interfaceName: EP_B.interfaceName, peerName: EP_B.peerName, mtu: 1400 });
    assert.deepEqual(steps[7], { op: 'route-replace', family: 6, dst: 'fd00:65::3/128', dev: EP_B.interfaceName });
  });

  it('deletes stray cali veths (not their routes separately) and leaves everything else alone', () => {
    const k = inSync();
    k.links.push(veth('califfffffffff1'), veth('keepme0'), { name: 'cali-vxlan', index: 20, kind: 'vxlan', mtu: 1450, up: true });
    k.routes.push(
      hostRoute('10.65.0.9/32', 'califfffffffff1'), // goes with its link
      hostRoute('10.77.0.0/24', 'keepme0'), // proto 80 but not on our device
      hostRoute('10.66.0.0/26', 'cali-vxlan', { scope: undefined }), // another layer's device
    );
    assert.deepEqual(planReconcile(k, DESIRED), [{ op: 'link-del', name: 'califfffffffff1' }]);
  });

  it('deletes unwanted proto 80 routes on our veths and unwanted blackholes; adds missing ones', () => {
    const k = inSync();
    k.routes.push(hostRoute('10.65.0.40/32', EP_A.interfaceName), blackhole('10.66.0.0/26'), blackhole('fd00:66::/122'));
    k.routes = k.routes.filter((r) => r.dst !== '10.65.0.3/32');
    const steps = planReconcile(k, { ...DESIRED, blackholes: ['10.65.0.0/26', 'FD00:65:0::/122'] });
    assert.deepEqual(steps, [
      { op: 'route-replace', family: 4, dst: '10.65.0.3/32', dev: EP_B.interfaceName },
      { op: 'blackhole-add', family: 6, dst: 'fd00:65::/122' },
      { op: 'route-del', route: hostRoute('10.65.0.40/32', EP_A.interfaceName) },
      { op: 'blackhole-del', route: blackhole('10.66.0.0/26') },
      { op: 'blackhole-del', route: blackhole('fd00:66::/122') },
    ]);
  });

  it('moves a wanted address to its device by replace (no delete unless the metric differs)', () => {
    const k = inSync();
    k.routes = k.routes.filter((r) => r.dst !== '10.65.0.2/32' && r.dst !== 'fd00:65::3/128');
    k.routes.push(hostRoute('10.65.0.2/32', EP_B.interfaceName), hostRoute('fd00:65::3/128', EP_A.interfaceName, { metric: 200 }));
    assert.deepEqual(planReconcile(k, DESIRED), [
      { op: 'route-replace', family: 4, dst: '10.65.0.2/32', dev: EP_A.interfaceName },
      { op: 'route-replace', family: 6, dst: 'fd00:65::3/128', dev: EP_B.interfaceName },
      { op: 'route-del', route: hostRoute('fd00:65::3/128', EP_A.interfaceName, { metric: 200 }) },
    ]);
  });

  it('replaces an IPv4 route that lacks scope link', () => {
    const k = inSync();
    k.routes = k.routes.map((r) => (r.dst === '10.65.0.2/32' ? { ...r, scope: undefined } : r));
    assert.deepEqual(planReconcile(k, DESIRED), [{ op: 'route-replace', family: 4, dst: '10.65.0.2/32', dev: EP_A.interfaceName }]);
  });

  it('completes an existing veth: up, MAC, MTU, peer MTU, only the wrong sysctls, no recreate', () => {
    const k = inSync();
    k.links = k.links.map((l) =>
      l.name === EP_B.interfaceName ? { ...l, up: false, mac: 'aa:bb:cc:dd:ee:ff', mtu: 1500 } : l.name === EP_B.peerName ? { ...l, mtu: 1500 } : l,
    );
    const sysctls = goodSysctls(EP_A, EP_B);
    sysctls.set(`net.ipv4.neigh.${EP_B.interfaceName}.proxy_delay`, '80');
    sysctls.delete(`net.ipv4.conf.${EP_A.interfaceName}.forwarding`);
    const steps = planReconcile({ ...k, sysctls }, DESIRED);
    assert.deepEqual(steps, [
      { op: 'link-set', name: EP_B.interfaceName, mtu: 1400, reasons: ['down', 'address aa:bb:cc:dd:ee:ff', 'mtu 1500'] },
      { op: 'peer-mtu', name: EP_B.peerName, mtu: 1400 },
      { op: 'sysctl', interfaceName: EP_A.interfaceName, settings: [{ key: `net.ipv4.conf.${EP_A.interfaceName}.forwarding`, value: '1' }] },
      { op: 'sysctl', interfaceName: EP_B.interfaceName, settings: [{ key: `net.ipv4.neigh.${EP_B.interfaceName}.proxy_delay`, value: '0' }] },
    ]);
  });

  it('a peer moved into a container is fine (host end only)', () => {
    const k = inSync();
    k.links = k.links.filter((l) => l.name !== EP_B.peerName);
    assert.deepEqual(planReconcile(k, DESIRED), []);
  });

  it('reports a conflict for a desired name held by a non-veth, and does not route to it', () => {
    const k = inSync();
    k.links = k.links.map((l) => (l.name === EP_A.interfaceName ? { ...l, kind: 'dummy' } : l));
    k.routes = k.routes.filter((r) => r.dev !== EP_A.interfaceName);
    assert.deepEqual(planReconcile(k, DESIRED), [{ op: 'conflict', name: EP_A.interfaceName, kind: 'dummy' }]);
  });

  it('rejects an invalid desired state', () => {
    const empty: KernelState = { links: [], routes: [], sysctls: new Map() };
    const bad: DesiredHostState[] = [
      { endpoints: [EP_A, EP_A], blackholes: [] },
      { endpoints: [EP_A, { ...EP_B, ipNetworks: ['10.65.0.2/32'] }], blackholes: [] },
      { endpoints: [{ ...EP_A, ipNetworks: ['10.65.0.0/26'] }], blackholes: [] },
      { endpoints: [{ ...EP_A, interfaceName: 'eth0' }], blackholes: [] },
      { endpoints: [{ ...EP_A, interfaceName: 'cali;rm -rf /' }], blackholes: [] },
      { endpoints: [{ ...EP_A, peerName: '-tmp' }], blackholes: [] },
      { endpoints: [{ ...EP_A, mtu: 20 }], blackholes: [] },
      { endpoints: [], blackholes: ['10.65.0.1/26'] },
    ];
    for (const d of bad) assert.throws(() => planReconcile(empty, d), ValidationError, JSON.stringify(d));
  });
});

// ---------------------------------------------------------------------------------------------------
// planForwardChain

const SAVE_GOOD = `# Generated by iptables-save v1.8.9 (nf_tables)
*filter
:INPUT ACCEPT [0:0]
:FORWARD DROP [0:0]
:OUTPUT ACCEPT [0:0]
:cali-FORWARD - [0:0]
-A FORWARD -m comment --comment "cali:forward-jump" -j cali-FORWARD
-A FORWARD -j DOCKER-USER
-A cali-FORWARD -i cali+ -j ACCEPT
-A cali-FORWARD -o cali+ -j ACCEPT
COMMIT
`;
const RESTORE_FULL = `*filter
:cali-FORWARD - [0:0]
-A cali-FORWARD -i cali+ -j ACCEPT
-A cali-FORWARD -o cali+ -j ACCEPT
-I FORWARD 1 -m comment --comment "cali:forward-jump" -j cali-FORWARD
COMMIT
`;

describe('planForwardChain', () => {
  it('nothing to do when the chain and one top jump are there', () => {
    assert.equal(planForwardChain(SAVE_GOOD), undefined);
  });
  it('creates chain and jump from nothing', () => {
    assert.equal(planForwardChain(''), RESTORE_FULL);
    assert.equal(planForwardChain('*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\nCOMMIT\n'), RESTORE_FULL);
  });
  it('moves a jump that is no longer first, and removes duplicates, by their saved spec', () => {
    const jump = '-A FORWARD -m comment --comment "cali:forward-jump" -j cali-FORWARD';
    const save = SAVE_GOOD.replace(`${jump}\n-A FORWARD -j DOCKER-USER\n`, `-A FORWARD -j DOCKER-USER\n${jump}\n${jump}\n`);
    assert.equal(
      planForwardChain(save),
      RESTORE_FULL.replace(
        '-I FORWARD 1',
        '-D FORWARD -m comment --comment "cali:forward-jump" -j cali-FORWARD\n-D FORWARD -m comment --comment "cali:forward-jump" -j cali-FORWARD\n-I FORWARD 1',
      ),
    );
  });
  it('rewrites drifted chain content without touching a good jump', () => {
    const save = SAVE_GOOD.replace('-A cali-FORWARD -o cali+ -j ACCEPT\n', '-A cali-FORWARD -o cali+ -j ACCEPT\n-A cali-FORWARD -j DROP\n');
    assert.equal(planForwardChain(save), '*filter\n:cali-FORWARD - [0:0]\n-A cali-FORWARD -i cali+ -j ACCEPT\n-A cali-FORWARD -o cali+ -j ACCEPT\nCOMMIT\n');
  });
  it('ignores a jump to cali-FORWARD that is not ours (no comment)', () => {
    const save = SAVE_GOOD.replace('-A FORWARD -j DOCKER-USER', '-A FORWARD -j cali-FORWARD');
    assert.equal(planForwardChain(save), undefined);
  });
});

// ---------------------------------------------------------------------------------------------------
// LinuxDataplane with a recording runner

describe('LinuxDataplane (recording runner)', () => {
  it('ensureEndpoint on a fresh host: one ip batch, then one sysctl', async () => {
    const r = new RecordingRunner();
    await new LinuxDataplane(r).ensureEndpoint(EP_B);
    assert.deepEqual(r.calls, [
      {
        argv: ['ip', '-batch', '-'],
        input:
          'link add name cali0000000000b mtu 1400 address ee:ee:ee:ee:ee:ee up type veth peer name tmp0000000000b mtu 1400\n' +
          'route replace 10.65.0.3/32 dev cali0000000000b scope link proto 80\n' +
          'route replace fd00:65::3/128 dev cali0000000000b proto 80\n',
      },
      {
        argv: [
          'sysctl', '-q', '-w',
          'net.ipv4.conf.cali0000000000b.proxy_arp=1', 'net.ipv4.neigh.cali0000000000b.proxy_delay=0', 'net.ipv4.conf.cali0000000000b.forwarding=1',
          // IPv6: the EUI-64 link-local gateway without DAD, and forwarding.
          'net.ipv6.conf.cali0000000000b.addr_gen_mode=0', 'net.ipv6.conf.cali0000000000b.accept_dad=0', 'net.ipv6.conf.cali0000000000b.forwarding=1',
          'net.ipv6.conf.all.forwarding=1',
        ],
      },
    ]);
  });

  it('ensureEndpoint when the host end exists and its peer is gone: completes it', async () => {
    const r = new RecordingRunner((argv, input) => {
      if (is(argv, 'ip -batch -') && input?.startsWith('link add')) throw failed(argv);
      if (is(argv, 'ip -json -d link show dev cali0000000000b')) return JSON.stringify([{ ifname: 'cali0000000000b', mtu: 1500, flags: [], linkinfo: { info_kind: 'veth' } }]);
      if (starts(argv, 'ip -json -d link show dev tmp')) throw failed(argv, 'Device "tmp0000000000b" does not exist.');
      return '';
    });
    await new LinuxDataplane(r).ensureEndpoint(EP_B);
    assert.deepEqual(r.argvs(), [
      'ip -batch -',
      'ip -json -d link show dev cali0000000000b',
      'ip link set dev cali0000000000b mtu 1400 address ee:ee:ee:ee:ee:ee up',
      'ip -json -d link show dev tmp0000000000b',
      'ip -batch -',
      'sysctl -q -w net.ipv4.conf.cali0000000000b.proxy_arp=1 net.ipv4.neigh.cali0000000000b.proxy_delay=0 net.ipv4.conf.cali0000000000b.forwarding=1' +
        ' net.ipv6.conf.cali0000000000b.addr_gen_mode=0 net.ipv6.conf.cali0000000000b.accept_dad=0 net.ipv6.conf.cali0000000000b.forwarding=1 net.ipv6.conf.all.forwarding=1',
    ]);
  });

  it('ensureEndpoint: the original error when the link cannot be made; AlreadyExists for a non-veth', async () => {
    const r = new RecordingRunner((argv) => {
      if (is(argv, 'ip -batch -')) throw failed(argv, 'Error: Unknown device type.');
      if (starts(argv, 'ip -json -d link show')) throw failed(argv, 'does not exist');
      return '';
    });
    await assert.rejects(new LinuxDataplane(r).ensureEndpoint(EP_A), /Unknown device type/);
    const r2 = new RecordingRunner((argv) => {
      if (is(argv, 'ip -batch -')) throw failed(argv);
      if (starts(argv, 'ip -json -d link show')) return JSON.stringify([{ ifname: EP_A.interfaceName, mtu: 1500, flags: [], linkinfo: { info_kind: 'dummy' } }]);
      return '';
    });
    await assert.rejects(new LinuxDataplane(r2).ensureEndpoint(EP_A), AlreadyExistsError);
  });

  it('ensureEndpoint validates before running anything', async () => {
    const r = new RecordingRunner();
    await assert.rejects(new LinuxDataplane(r).ensureEndpoint({ ...EP_A, ipNetworks: ['10.65.0.2/32; reboot'] }), ValidationError);
    await assert.rejects(new LinuxDataplane(r).ensureEndpoint({ ...EP_A, interfaceName: 'eth0' }), ValidationError);
    assert.deepEqual(r.calls, []);
  });

  it('removeEndpoint: refuses non-cali names, tolerates a missing link, reports a real failure', async () => {
    const r = new RecordingRunner((argv) => {
      if (starts(argv, 'ip link del')) throw failed(argv, 'Cannot find device');
      if (starts(argv, 'ip -json -d link show')) throw failed(argv, 'does not exist');
      return '';
    });
    const dp = new LinuxDataplane(r);
    await assert.rejects(dp.removeEndpoint('eth0'), ValidationError);
    await assert.rejects(dp.removeEndpoint('docker0'), ValidationError);
    assert.deepEqual(r.calls, []);
    await dp.removeEndpoint('cali0000000000a');
    assert.deepEqual(r.argvs(), ['ip link del dev cali0000000000a', 'ip -json -d link show dev cali0000000000a']);

    const r2 = new RecordingRunner((argv) => {
      if (starts(argv, 'ip link del')) throw failed(argv, 'Operation not permitted');
      if (starts(argv, 'ip -json -d link show')) return JSON.stringify([{ ifname: 'cali0000000000a', flags: [], mtu: 1500 }]);
      return '';
    });
    await assert.rejects(new LinuxDataplane(r2).removeEndpoint('cali0000000000a'), /Operation not permitted/);
  });

  it('ensureBase: ip_forward, iptables-restore --noflush only when needed, gateway route only when unroutable', async () => {
    let save = '';
    const r = new RecordingRunner((argv, input) => {
      if (is(argv, 'iptables-save -t filter')) return save;
      if (is(argv, 'iptables-restore --noflush') && input === RESTORE_FULL) save = SAVE_GOOD;
      if (is(argv, 'ip route get 169.254.1.1')) throw failed(argv, 'RTNETLINK answers: Network is unreachable');
      return '';
    });
    const dp = new LinuxDataplane(r);
    await dp.ensureBase();
    // The three parts run concurrently: compare without order, then check the order within each part.
    const byArgv = (a: Call, b: Call): number => a.argv.join(' ').localeCompare(b.argv.join(' '));
    assert.deepEqual([...r.calls].sort(byArgv), [
      { argv: ['ip', 'route', 'get', '169.254.1.1'] },
      { argv: ['ip', 'route', 'replace', '169.254.1.1/32', 'dev', 'lo', 'proto', '80'] },
      { argv: ['iptables-restore', '--noflush'], input: RESTORE_FULL },
      { argv: ['iptables-save', '-t', 'filter'] },
      { argv: ['sysctl', '-q', '-w', 'net.ipv4.ip_forward=1'] },
    ]);
    const order = r.argvs();
    assert.ok(order.indexOf('iptables-save -t filter') < order.indexOf('iptables-restore --noflush'));
    assert.ok(order.indexOf('ip route get 169.254.1.1') < order.indexOf('ip route replace 169.254.1.1/32 dev lo proto 80'));
    r.calls.length = 0;
    await dp.ensureBase();
    assert.ok(!r.argvs().includes('iptables-restore --noflush'), 'second call: nothing to restore');
    assert.ok(r.calls.every((c) => c.argv[0] !== 'iptables'), 'never plain iptables');

    const routed = new RecordingRunner((argv) => (is(argv, 'iptables-save -t filter') ? SAVE_GOOD : ''));
    await new LinuxDataplane(routed).ensureBase();
    assert.deepEqual(routed.argvs().sort(), ['ip route get 169.254.1.1', 'iptables-save -t filter', 'sysctl -q -w net.ipv4.ip_forward=1']);
  });

  /** A fake kernel answering the reconcile listings from a KernelState-like description. */
  function kernelRunner(opts: { links: unknown[]; v4: unknown[]; v6: unknown[]; sysctl?: string; fail?: (argv: string[], input?: string) => boolean }): RecordingRunner {
    return new RecordingRunner((argv, input) => {
      if (opts.fail?.(argv, input)) throw failed(argv, 'RTNETLINK answers: No such device');
      if (is(argv, 'ip -json -d link show')) return JSON.stringify(opts.links);
      if (is(argv, 'ip -json -4 route show proto 80')) return JSON.stringify(opts.v4);
      if (is(argv, 'ip -json -6 route show proto 80')) return JSON.stringify(opts.v6);
      if (argv[0] === 'sysctl' && argv[1] === '-e') return opts.sysctl ?? '';
      return '';
    });
  }
  const link = (name: string, extra: Record<string, unknown> = {}): Record<string, unknown> => ({
    ifname: name, mtu: 1500, flags: ['UP'], address: 'ee:ee:ee:ee:ee:ee', linkinfo: { info_kind: 'veth' }, ...extra,
  });
  const sysctlText = (...names: string[]): string => names.flatMap((n) => endpointSysctls(n).map((s) => `${s.key} = ${s.value}`)).join('\n') + '\n';

  it('reconcile in steady state: four reads, no changes', async () => {
    const r = kernelRunner({
      links: [link('lo'), link(EP_A.interfaceName)],
      v4: [{ dst: '10.65.0.2', dev: EP_A.interfaceName, scope: 'link' }, { type: 'blackhole', dst: '10.65.0.0/26' }],
      v6: [],
      sysctl: sysctlText(EP_A.interfaceName),
    });
    const report = await new LinuxDataplane(r).reconcile({ endpoints: [EP_A], blackholes: ['10.65.0.0/26'] });
    assert.deepEqual(report, { changes: [] });
    assert.deepEqual(r.argvs(), [
      'ip -json -d link show',
      'ip -json -4 route show proto 80',
      'ip -json -6 route show proto 80',
      `sysctl -e net.ipv4.conf.${EP_A.interfaceName}.proxy_arp net.ipv4.neigh.${EP_A.interfaceName}.proxy_delay net.ipv4.conf.${EP_A.interfaceName}.forwarding`,
    ]);
  });

  it('reconcile applies a plan: deletes, creates, batches the replaces, reports each change', async () => {
    const r = kernelRunner({
      links: [link('lo'), link('califfffffffff1')],
      v4: [{ type: 'blackhole', dst: '10.66.0.0/26' }],
      v6: [],
    });
    const report = await new LinuxDataplane(r).reconcile({ endpoints: [EP_A], blackholes: ['10.65.0.0/26'] });
    assert.deepEqual(report.changes, [
      'link del califfffffffff1',
      `link add ${EP_A.interfaceName} type veth peer ${EP_A.peerName}`,
      `sysctl net.ipv4.conf.${EP_A.interfaceName}.proxy_arp=1`,
      `sysctl net.ipv4.neigh.${EP_A.interfaceName}.proxy_delay=0`,
      `sysctl net.ipv4.conf.${EP_A.interfaceName}.forwarding=1`,
      `route add 10.65.0.2/32 dev ${EP_A.interfaceName}`,
      'route add blackhole 10.65.0.0/26',
      'route del blackhole 10.66.0.0/26',
    ]);
    assert.deepEqual(r.calls.slice(3), [
      { argv: ['ip', 'link', 'del', 'dev', 'califfffffffff1'] },
      { argv: ['ip', ...vethAddCommand(EP_A.interfaceName, EP_A.peerName, 0)] },
      { argv: ['sysctl', '-q', '-w', ...endpointSysctls(EP_A.interfaceName).map((s) => `${s.key}=${s.value}`)] },
      {
        argv: ['ip', '-batch', '-'],
        input: `route replace 10.65.0.2/32 dev ${EP_A.interfaceName} scope link proto 80\nroute replace blackhole 10.65.0.0/26 proto 80\n`,
      },
      { argv: ['ip', 'route', 'del', 'blackhole', '10.66.0.0/26', 'proto', '80'] },
    ]);
  });

  it('reconcile keeps going after a failure, skips what depends on it, then throws', async () => {
    const r = kernelRunner({
      links: [link('lo')],
      v4: [],
      v6: [],
      fail: (argv, input) =>
        starts(argv, `ip link add name ${EP_A.interfaceName}`) ||
        (is(argv, 'ip -batch -') && (input ?? '').includes('10.65.0.9')) ||
        starts(argv, 'ip route replace 10.65.0.9/32'),
    });
    const bad = { ...EP_B, interfaceName: 'cali0000000000c', peerName: 'tmp0000000000c', ipNetworks: ['10.65.0.9/32'] };
    await assert.rejects(new LinuxDataplane(r).reconcile({ endpoints: [EP_A, EP_B, bad], blackholes: ['10.65.0.0/26'] }), CommandFailedError);
    const argvs = r.argvs();
    assert.ok(argvs.includes(`ip ${vethAddCommand(EP_B.interfaceName, EP_B.peerName, 1400).join(' ')}`));
    assert.ok(!argvs.some((a) => a.includes('10.65.0.2/32')), 'no route to the link that failed');
    // The batch failed (because of 10.65.0.9), so each replace ran alone: the good ones were applied.
    assert.ok(argvs.includes(`ip route replace 10.65.0.3/32 dev ${EP_B.interfaceName} scope link proto 80`));
    assert.ok(argvs.includes('ip route replace blackhole 10.65.0.0/26 proto 80'));
    assert.ok(!argvs.some((a) => a.startsWith('sysctl -q -w') && a.includes(EP_A.interfaceName)));
  });

  it('reconcile tolerates a kernel without IPv6 unless IPv6 is wanted', async () => {
    const fail6 = (argv: string[]): boolean => is(argv, 'ip -json -6 route show proto 80');
    const r = kernelRunner({ links: [], v4: [], v6: [], fail: fail6 });
    assert.deepEqual((await new LinuxDataplane(r).reconcile({ endpoints: [], blackholes: [] })).changes, []);
    const r6 = kernelRunner({ links: [], v4: [], v6: [], fail: fail6 });
    await assert.rejects(new LinuxDataplane(r6).reconcile({ endpoints: [], blackholes: ['fd00::/122'] }), CommandFailedError);
  });

  it('reconcile waits for endpoint operations in flight, and they wait for it', async () => {
    let release!: () => void;
    const gate = new Promise<void>((res) => (release = res));
    const r = new RecordingRunner(async (argv) => {
      if (is(argv, 'ip -batch -')) await gate;
      if (is(argv, 'ip -json -d link show')) return '[]';
      return '[]';
    });
    const dp = new LinuxDataplane(r);
    const ensuring = dp.ensureEndpoint(EP_A);
    const reconciling = dp.reconcile({ endpoints: [], blackholes: [] });
    const ensuring2 = dp.ensureEndpoint(EP_B);
    await new Promise((res) => setTimeout(res, 20));
    assert.deepEqual(r.argvs(), ['ip -batch -'], 'reconcile and the later ensure wait');
    release();
    await Promise.all([ensuring, reconciling, ensuring2]);
    const argvs = r.argvs();
    assert.ok(argvs.indexOf('ip -json -d link show') > argvs.findIndex((a) => a.startsWith('sysctl -q -w') && a.includes(EP_A.interfaceName)));
    assert.ok(argvs.lastIndexOf('ip -batch -') > argvs.indexOf('ip -json -d link show'));
  });

  it('sysctlRoot: reads with cat, writes with tee grouped by value', async () => {
    const r = new RecordingRunner((argv) => (argv[0] === 'cat' ? '1\n80\n1\n' : ''));
    const dp = new LinuxDataplane(r, { sysctlRoot: '/host/proc/sys' });
    await dp.ensureEndpoint(EP_A);
    const n = EP_A.interfaceName;
    assert.deepEqual(r.calls.slice(1), [
      { argv: ['tee', `/host/proc/sys/net/ipv4/conf/${n}/proxy_arp`, `/host/proc/sys/net/ipv4/conf/${n}/forwarding`], input: '1\n' },
      { argv: ['tee', `/host/proc/sys/net/ipv4/neigh/${n}/proxy_delay`], input: '0\n' },
    ]);
    const k = new RecordingRunner((argv) => {
      if (is(argv, 'ip -json -d link show')) return JSON.stringify([link(n)]);
      if (is(argv, 'ip -json -4 route show proto 80')) return JSON.stringify([{ dst: '10.65.0.2', dev: n, scope: 'link' }]);
      if (argv[0] === 'cat') return '1\n80\n1\n';
      return '[]';
    });
    const report = await new LinuxDataplane(k, { sysctlRoot: '/host/proc/sys' }).reconcile({ endpoints: [EP_A], blackholes: [] });
    assert.deepEqual(report.changes, [`sysctl net.ipv4.neigh.${n}.proxy_delay=0`]);
    assert.deepEqual(k.calls.at(-1), { argv: ['tee', `/host/proc/sys/net/ipv4/neigh/${n}/proxy_delay`], input: '0\n' });
  });
});
