/**
 * The nat-table applier on a real kernel, beside the filter-table applier in the same throwaway network
 * namespace (ct-nat-<pid>): each programs its own table and keeps only its own ipsets; a new instance (a
 * restarted node) recognises what the previous one wrote and changes nothing; an empty desired state
 * sweeps the nat chains, hooks and sets and nothing else. Needs root, iptables and ipset.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { computeNatState } from '../../plugin/calc/nat-rules.js';
import type { IPPool, WorkloadEndpoint } from '../../plugin/datastore/model.js';
import { FilterApplier, NAT_SCOPE, parseIpsetSave, parseIptablesSave } from '../../plugin/dataplane/filter-applier.js';
import type { DesiredFilterState } from '../../plugin/dataplane/policy-types.js';
import { ExecFileRunner } from '../../plugin/lib/exec.js';

const isRoot = typeof process.getuid === 'function' && process.getuid() === 0;
const NS = `ct-nat-${process.pid}`;
const host = new ExecFileRunner(['nsenter', `--net=/run/netns/${NS}`]);
const sh = async (...argv: string[]) => (await host.run(argv, { timeoutMs: 20_000 })).stdout;

const pool: IPPool = { name: 'p', cidr: '10.66.0.0/16', blockSize: 26, ipipMode: 'Never', vxlanMode: 'Never', natOutgoing: true, disabled: false, nodeSelector: 'all()' };
const ep: WorkloadEndpoint = {
  node: 'h',
  endpointId: 'e1',
  networkId: 'n',
  containerId: null,
  interfaceName: 'calie1',
  ipNetworks: ['10.66.0.5/32'],
  mac: null,
  mtu: 0,
  labels: {},
  profiles: [],
  ipNATs: [{ internalIP: '10.66.0.5', externalIP: '172.16.9.10' }],
  createdAt: 0,
};
const filterState: DesiredFilterState = {
  chains: [{ name: 'cali-FORWARD', rules: ['-m set --match-set cali40s:web src -j ACCEPT'] }],
  ipsets: [{ name: 'cali40s:web', type: 'hash:ip', members: ['10.66.0.7'] }],
  hooks: { FORWARD: 'cali-FORWARD' },
};
const natChains = async () => [...parseIptablesSave(await sh('iptables-save', '-t', 'nat'), 'nat').chains.keys()].filter((c) => c.startsWith('cali-')).sort();
const sets = async () => [...parseIpsetSave(await sh('ipset', 'save')).keys()].sort();

describe('nat-table applier on a real kernel', { skip: isRoot ? false : 'needs root' }, () => {
  before(async () => {
    await new ExecFileRunner().run(['ip', 'netns', 'add', NS]);
  });
  after(async () => {
    await new ExecFileRunner().run(['ip', 'netns', 'delete', NS]).catch(() => undefined);
  });

  it('programs the nat table beside the filter applier; neither removes the other\'s sets', async () => {
    const filter = new FilterApplier(host, { resyncMs: 0 });
    const nat = new FilterApplier(host, { resyncMs: 0, scope: NAT_SCOPE });
    await filter.apply(filterState);
    await nat.apply(computeNatState({ pools: [pool], localEndpoints: [ep] }).desired);
    assert.deepEqual(await natChains(), ['cali-OUTPUT', 'cali-POSTROUTING', 'cali-PREROUTING', 'cali-fip-dnat', 'cali-fip-snat', 'cali-nat-outgoing']);
    assert.match(await sh('iptables', '-t', 'nat', '-S', 'cali-fip-dnat'), /-d 172\.16\.9\.10\/32 .*-j DNAT --to-destination 10\.66\.0\.5/);
    assert.match(await sh('iptables', '-t', 'nat', '-S', 'POSTROUTING'), /-A POSTROUTING -m comment --comment "?cali:hook"? -j cali-POSTROUTING/);
    // Both re-read the kernel (resyncMs 0): each sees the other's sets and leaves them.
    assert.deepEqual(await filter.apply(filterState), { changedChains: [], changedSets: [] });
    assert.deepEqual(await sets(), ['cali40all-ipam-pools', 'cali40masq-ipam-pools', 'cali40s:web']);
    assert.match(await sh('iptables', '-t', 'filter', '-S', 'cali-FORWARD'), /cali40s:web/, 'the filter table is the filter applier\'s');
  });

  it('a new instance (restart) recognises its chains; an empty state sweeps only the nat objects', async () => {
    const restarted = new FilterApplier(host, { scope: NAT_SCOPE });
    assert.deepEqual(await restarted.apply(computeNatState({ pools: [pool], localEndpoints: [ep] }).desired), { changedChains: [], changedSets: [] });
    await restarted.apply({ chains: [], ipsets: [], hooks: {} });
    assert.deepEqual(await natChains(), []);
    assert.doesNotMatch(await sh('iptables-save', '-t', 'nat'), /cali/);
    assert.deepEqual(await sets(), ['cali40s:web']);
  });
});
