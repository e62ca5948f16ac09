import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ValidationError } from '../../plugin/lib/errors.js';
import { loadConfig } from '../../plugin/node/config.js';

describe('node configuration for the managed plugin', () => {
  it('CALICO_TS_DRIVER_NAME: calico-ts by default, a plugin reference when set, refused when malformed', () => {
    assert.equal(loadConfig({ NODENAME: 'n1' }).driverName, 'calico-ts');
    assert.equal(loadConfig({ NODENAME: 'n1', CALICO_TS_DRIVER_NAME: 'calico-ts:latest' }).driverName, 'calico-ts:latest');
    assert.equal(loadConfig({ NODENAME: 'n1', CALICO_TS_DRIVER_NAME: 'me/calico-ts:v1' }).driverName, 'me/calico-ts:v1');
    assert.throws(() => loadConfig({ NODENAME: 'n1', CALICO_TS_DRIVER_NAME: 'Bad Name' }), (e: unknown) => e instanceof ValidationError && /CALICO_TS_DRIVER_NAME/.test(e.message));
  });

  it('CALICO_TS_SYSCTL_ROOT: unset means sysctl(8); set means files under it', () => {
    assert.equal(loadConfig({ NODENAME: 'n1' }).sysctlRoot, undefined);
    assert.equal(loadConfig({ NODENAME: 'n1', CALICO_TS_SYSCTL_ROOT: '/host/proc/sys' }).sysctlRoot, '/host/proc/sys');
  });
});
