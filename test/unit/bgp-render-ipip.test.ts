/**
 * The IPIP part of renderBirdConfig: routes of IPIP pools imported over tunl0 (BIRD 2: onlink, ifname, gw,
 * in that order), CrossSubnet only for next hops outside the node's subnet, nothing when tunl0 is not up.
 * (`bird -p` accepts these variants: test/kernel/ipip.test.ts.)
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { renderBirdConfig } from '../../plugin/bgp/render.js';
import { ipipInputs } from '../helpers/ipip-fixtures.js';

const TUNNEL = '{ onlink = true; ifname = "tunl0"; gw = bgp_next_hop; }';

function importFilter(text: string): string {
  const m = /filter calico_bgp_import \{\n([\s\S]*?)\n\}/.exec(text);
  assert.ok(m, text);
  return m[1] ?? '';
}

describe('renderBirdConfig: IPIP', () => {
  it('Always pools go over tunl0; CrossSubnet ones only to next hops outside the local subnet; then the pool filter', () => {
    const text = renderBirdConfig(ipipInputs, []);
    assert.ok(text.includes('define CALICO_IPIP_ALWAYS = [ 10.77.0.0/16+ ];'), text);
    assert.ok(text.includes('define CALICO_IPIP_CROSS_SUBNET = [ 10.78.0.0/16+ ];'), text);
    assert.ok(text.includes('define CALICO_LOCAL_SUBNET = 10.0.0.0/24;'), text);
    assert.deepEqual(importFilter(text).split('\n'), [
      `  if net ~ CALICO_IPIP_ALWAYS then ${TUNNEL}`,
      `  if net ~ CALICO_IPIP_CROSS_SUBNET && !(bgp_next_hop ~ CALICO_LOCAL_SUBNET) then ${TUNNEL}`,
      '  if net ~ CALICO_POOLS then accept;',
      '  reject;',
    ]);
    assert.ok(!text.includes('10.79.'), 'disabled pools are left out');
    assert.ok(!/fd00:7/.test(text), 'IPv6 pools are not IPIP');
  });

  it('the order of the three assignments is onlink, ifname, gw (BIRD 2 resolves gw against the interface set before)', () => {
    const text = renderBirdConfig(ipipInputs, []);
    const i = (s: string) => text.indexOf(s);
    assert.ok(i('onlink = true') < i('ifname = "tunl0"') && i('ifname = "tunl0"') < i('gw = bgp_next_hop'));
  });

  it('CrossSubnet without a known subnet tunnels every route (as Always)', () => {
    const { localSubnet: _dropped, ...noSubnet } = ipipInputs;
    const text = renderBirdConfig(noSubnet, []);
    assert.ok(!text.includes('CALICO_LOCAL_SUBNET'));
    assert.ok(importFilter(text).includes(`  if net ~ CALICO_IPIP_CROSS_SUBNET then ${TUNNEL}`));
  });

  it('no tunl0 on this node (no ipip module) or no IPIP pool: the filter is the plain pool filter', () => {
    const plain = ['  if net ~ CALICO_POOLS then accept;', '  reject;'];
    assert.deepEqual(importFilter(renderBirdConfig({ ...ipipInputs, ipipTunnel: false }, [])).split('\n'), plain);
    const never = { ...ipipInputs, pools: ipipInputs.pools.map((p) => ({ ...p, ipipMode: 'Never' as const })) };
    assert.deepEqual(importFilter(renderBirdConfig(never, [])).split('\n'), plain);
    assert.ok(!renderBirdConfig(never, []).includes('IPIP'));
  });

  it('deterministic: pool order does not matter', () => {
    assert.equal(renderBirdConfig(ipipInputs, []), renderBirdConfig({ ...ipipInputs, pools: [...ipipInputs.pools].reverse() }, []));
  });
});
