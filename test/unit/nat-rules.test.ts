/**
 * The nat table planner (calc/nat-rules.ts) and the applier's scopes: a nat-table plan writes `*nat`,
 * and the filter and nat appliers each sweep only their own ipsets.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { computeNatState, FIP_DNAT_CHAIN, FIP_SNAT_CHAIN, NAT_OUTGOING_CHAIN } from '../../plugin/calc/nat-rules.js';
import type { IPPool, WorkloadEndpoint } from '../../plugin/datastore/model.js';
import { NAT_SCOPE, parseIpsetSave, parseIptablesSave, planFilterUpdate } from '../../plugin/dataplane/filter-applier.js';
import { ALL_POOLS_SET, MASQ_POOLS_SET } from '../../plugin/dataplane/policy-types.js';
import { ValidationError } from '../../plugin/lib/errors.js';

const pool = (name: string, cidr: string, natOutgoing: boolean, disabled = false): IPPool => ({
  name,
  cidr,
  blockSize: 26,
  ipipMode: 'Never',
  vxlanMode: 'Never',
  natOutgoing,
  disabled,
  nodeSelector: 'all()',
});

const endpoint = (id: string, ip: string, ipNATs?: WorkloadEndpoint['ipNATs']): WorkloadEndpoint => ({
  node: 'h1',
  endpointId: id,
  networkId: 'n',
  containerId: null,
  interfaceName: `cali${id}`,
  ipNetworks: [`${ip}/32`],
  mac: null,
  mtu: 1500,
  labels: {},
  profiles: [],
  ...(ipNATs ? { ipNATs } : {}),
  createdAt: 0,
});

const rulesOf = (s: ReturnType<typeof computeNatState>, chain: string) => s.desired.chains.find((c) => c.name === chain)?.rules;
const membersOf = (s: ReturnType<typeof computeNatState>, set: string) => s.desired.ipsets.find((x) => x.name === set)?.members;

const NAT_SAVE = `*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
COMMIT
`;

describe('computeNatState', () => {
  it('masquerades natOutgoing pools towards anything outside every pool; ipsets of pools', () => {
    const s = computeNatState({ pools: [pool('a', '192.168.0.0/16', true), pool('b', '10.50.0.0/16', false), pool('v6', 'fd00::/64', true)], localEndpoints: [] });
    assert.deepEqual(rulesOf(s, NAT_OUTGOING_CHAIN), [`-m set --match-set ${MASQ_POOLS_SET} src -m set ! --match-set ${ALL_POOLS_SET} dst -j MASQUERADE`]);
    assert.deepEqual(membersOf(s, MASQ_POOLS_SET), ['192.168.0.0/16']);
    assert.deepEqual(membersOf(s, ALL_POOLS_SET), ['10.50.0.0/16', '192.168.0.0/16'], 'IPv6 pools are left out');
    assert.deepEqual(s.desired.hooks, { PREROUTING: 'cali-PREROUTING', OUTPUT: 'cali-OUTPUT', POSTROUTING: 'cali-POSTROUTING' });
    assert.deepEqual(rulesOf(s, 'cali-POSTROUTING'), [`-j ${FIP_SNAT_CHAIN}`, `-j ${NAT_OUTGOING_CHAIN}`]);
  });

  it('no pool with natOutgoing: cali-nat-outgoing is empty (but exists)', () => {
    const s = computeNatState({ pools: [pool('a', '192.168.0.0/16', false)], localEndpoints: [] });
    assert.deepEqual(rulesOf(s, NAT_OUTGOING_CHAIN), []);
    assert.deepEqual(membersOf(s, MASQ_POOLS_SET), []);
  });

  it('floating IPs: DNAT from PREROUTING and OUTPUT, hairpin SNAT, sorted by external address', () => {
    const s = computeNatState({
      pools: [],
      localEndpoints: [endpoint('b', '192.168.0.7', [{ internalIP: '192.168.0.7', externalIP: '172.16.9.10' }]), endpoint('a', '192.168.0.5', [{ internalIP: '192.168.0.5', externalIP: '172.16.9.9' }])],
    });
    assert.deepEqual(rulesOf(s, FIP_DNAT_CHAIN), ['-d 172.16.9.9/32 -j DNAT --to-destination 192.168.0.5', '-d 172.16.9.10/32 -j DNAT --to-destination 192.168.0.7']);
    assert.deepEqual(rulesOf(s, FIP_SNAT_CHAIN), [
      '-s 192.168.0.5/32 -d 192.168.0.5/32 -j SNAT --to-source 172.16.9.9',
      '-s 192.168.0.7/32 -d 192.168.0.7/32 -j SNAT --to-source 172.16.9.10',
    ]);
    assert.deepEqual(rulesOf(s, 'cali-PREROUTING'), [`-j ${FIP_DNAT_CHAIN}`]);
    assert.deepEqual(rulesOf(s, 'cali-OUTPUT'), [`-j ${FIP_DNAT_CHAIN}`]);
    assert.deepEqual(s.problems, []);
  });

  it('bad floating IPs are left out with a reason; a duplicate external IP goes to the first endpoint by ID', () => {
    const s = computeNatState({
      pools: [],
      localEndpoints: [
        endpoint('c', '192.168.0.9', [{ internalIP: '192.168.0.9', externalIP: '172.16.9.9' }]),
        endpoint('a', '192.168.0.5', [
          { internalIP: '192.168.0.5', externalIP: '172.16.9.9' },
          { internalIP: '192.168.0.6', externalIP: '172.16.9.1' },
          { internalIP: '192.168.0.5', externalIP: 'fd00::1' },
        ]),
      ],
    });
    assert.deepEqual(rulesOf(s, FIP_DNAT_CHAIN), ['-d 172.16.9.9/32 -j DNAT --to-destination 192.168.0.5']);
    assert.equal(s.problems.length, 3);
    assert.match(s.problems.join('\n'), /192\.168\.0\.6 is not an address of the endpoint/);
    assert.match(s.problems.join('\n'), /"fd00::1" is not an IPv4 address/);
    assert.match(s.problems.join('\n'), /endpoint c: floating IP 172\.16\.9\.9 is already mapped to 192\.168\.0\.5 \(endpoint a\)/);
  });

  it('is deterministic: the same inputs in another order give the same state', () => {
    const eps = [endpoint('a', '192.168.0.5', [{ internalIP: '192.168.0.5', externalIP: '172.16.9.9' }]), endpoint('b', '192.168.0.7')];
    const pools = [pool('a', '192.168.0.0/16', true), pool('b', '10.50.0.0/16', true)];
    assert.deepEqual(computeNatState({ pools, localEndpoints: eps }), computeNatState({ pools: [...pools].reverse(), localEndpoints: [...eps].reverse() }));
  });
});

describe('applier scopes', () => {
  const natState = computeNatState({ pools: [pool('a', '192.168.0.0/16', true)], localEndpoints: [] }).desired;

  it('a nat-table plan writes *nat, hooks PREROUTING/OUTPUT/POSTROUTING and creates the pool sets', () => {
    const plan = planFilterUpdate(parseIptablesSave(NAT_SAVE, 'nat'), parseIpsetSave(''), natState, 4, NAT_SCOPE);
    const restore = plan.restoreInput ?? '';
    assert.match(restore, /^\*nat$/m);
    assert.doesNotMatch(restore, /\*filter/);
    for (const k of ['PREROUTING', 'OUTPUT', 'POSTROUTING']) assert.match(restore, new RegExp(`^-I ${k} 1 -m comment --comment "cali:hook" -j cali-${k}$`, 'm'));
    assert.match(plan.ipsetInput ?? '', /^create cali40masq-ipam-pools hash:net/m);
    assert.match(plan.ipsetInput ?? '', /^add cali40all-ipam-pools 192\.168\.0\.0\/16$/m);
  });

  it('each applier sweeps only its own ipsets', () => {
    const sets = parseIpsetSave(
      ['create cali40masq-ipam-pools hash:net family inet maxelem 65536', 'create cali40all-ipam-pools hash:net family inet maxelem 65536', 'create cali40s:policy hash:ip family inet maxelem 65536', 'create cali4ts:policy hash:ip family inet maxelem 65536'].join('\n'),
    );
    const filterPlan = planFilterUpdate(parseIptablesSave('*filter\n:FORWARD ACCEPT [0:0]\nCOMMIT\n'), sets, { chains: [], ipsets: [], hooks: {} });
    assert.deepEqual(filterPlan.deleteSetsAfter, ['cali40s:policy', 'cali4ts:policy'], 'the filter applier leaves the nat sets alone');
    const natPlan = planFilterUpdate(parseIptablesSave(NAT_SAVE, 'nat'), sets, { chains: [], ipsets: [], hooks: {} }, 4, NAT_SCOPE);
    assert.deepEqual(natPlan.deleteSetsAfter, ['cali40all-ipam-pools', 'cali40masq-ipam-pools'], 'the nat applier leaves policy sets alone');
  });

  it('an applier refuses a set that belongs to the other one', () => {
    assert.throws(
      () => planFilterUpdate(parseIptablesSave('*filter\n:FORWARD ACCEPT [0:0]\nCOMMIT\n'), parseIpsetSave(''), { chains: [], ipsets: [{ name: MASQ_POOLS_SET, type: 'hash:net', members: [] }], hooks: {} }),
      (e: unknown) => e instanceof ValidationError && /belongs to another table's applier/.test(e.message),
    );
    assert.throws(
      () => planFilterUpdate(parseIptablesSave(NAT_SAVE, 'nat'), parseIpsetSave(''), { chains: [], ipsets: [{ name: 'cali40s:x', type: 'hash:ip', members: [] }], hooks: {} }, 4, NAT_SCOPE),
      ValidationError,
    );
  });
});
