/** MTU settings of `calico-ts node run`: our names, Felix's aliases, bad values refused. */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { loadConfig } from '../../plugin/node/config.js';
import { ValidationError } from '../../plugin/lib/errors.js';

const env = (e: Record<string, string>) => loadConfig({ NODENAME: 'n1', ...e });

describe('MTU configuration', () => {
  it('defaults to automatic (0) for veths and vxlan.calico', () => {
    assert.equal(env({}).defaultMtu, 0);
    assert.equal(env({}).vxlanMtu, 0);
  });
  it('takes CALICO_TS_VETH_MTU or Felix’s FELIX_VETHMTU; ours wins when both are set', () => {
    assert.equal(env({ FELIX_VETHMTU: '1410' }).defaultMtu, 1410);
    assert.equal(env({ CALICO_TS_VETH_MTU: '1400', FELIX_VETHMTU: '1410' }).defaultMtu, 1400);
    assert.equal(env({ FELIX_VXLANMTU: '1420' }).vxlanMtu, 1420);
    assert.equal(env({ CALICO_TS_VXLAN_MTU: '1430' }).vxlanMtu, 1430);
  });
  it('refuses a bad value, naming the variable that was set', () => {
    assert.throws(() => env({ FELIX_VETHMTU: 'big' }), (e: unknown) => e instanceof ValidationError && /FELIX_VETHMTU/.test(e.message));
    assert.throws(() => env({ CALICO_TS_VXLAN_MTU: '-1' }), ValidationError);
  });
});
