import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { CommandRunner } from '../../plugin/lib/exec.js';
import { ValidationError } from '../../plugin/lib/errors.js';
import { detectIPv4 } from '../../plugin/node/autodetect.js';

/** Answers `ip -json` queries from canned kernel state. */
function kernel(addrs: [string, string, number][], defaultDev?: string, routeGet?: string): CommandRunner {
  return {
    async run(argv) {
      const cmd = argv.join(' ');
      if (cmd === 'ip -json -4 addr show') {
        const byIf = new Map<string, { family: string; local: string; prefixlen: number; scope: string }[]>();
        for (const [ifname, local, prefixlen] of addrs) {
          byIf.set(ifname, [...(byIf.get(ifname) ?? []), { family: 'inet', local, prefixlen, scope: ifname === 'lo' ? 'host' : 'global' }]);
        }
        return { stdout: JSON.stringify([...byIf].map(([ifname, addr_info]) => ({ ifname, addr_info }))), stderr: '' };
      }
      if (cmd === 'ip -json -4 route show default') return { stdout: JSON.stringify(defaultDev ? [{ dst: 'default', dev: defaultDev }] : []), stderr: '' };
      if (cmd.startsWith('ip -json -4 route get')) return { stdout: JSON.stringify([{ prefsrc: routeGet }]), stderr: '' };
      throw new Error(`unexpected ${cmd}`);
    },
  };
}

const addrs: [string, string, number][] = [
  ['lo', '127.0.0.1', 8],
  ['docker0', '172.17.0.1', 16],
  ['eth0', '10.0.0.11', 24],
  ['eth1', '10.1.0.11', 24],
];

describe('IPv4 autodetection', () => {
  it('IP wins, with the prefix found on the interface', async () => {
    assert.equal(await detectIPv4(kernel(addrs), { IP: '10.1.0.11' }), '10.1.0.11/24');
    assert.equal(await detectIPv4(kernel(addrs), { IP: '192.0.2.1' }), '192.0.2.1/32');
    await assert.rejects(detectIPv4(kernel(addrs), { IP: 'fd00::1' }), ValidationError);
    await assert.rejects(detectIPv4(kernel(addrs), { IP: '10.0.0.300' }), ValidationError);
  });
  it('first-found: the default-route interface, else the first non-excluded one', async () => {
    assert.equal(await detectIPv4(kernel(addrs, 'eth1'), {}), '10.1.0.11/24');
    assert.equal(await detectIPv4(kernel(addrs), {}), '10.0.0.11/24');
    assert.equal(await detectIPv4(kernel([['lo', '127.0.0.1', 8]]), {}), null);
  });
  it('interface=<regex> and can-reach=<address>', async () => {
    assert.equal(await detectIPv4(kernel(addrs), { IP_AUTODETECTION_METHOD: 'interface=eth1' }), '10.1.0.11/24');
    assert.equal(await detectIPv4(kernel(addrs), { IP_AUTODETECTION_METHOD: 'interface=eth.*' }), '10.0.0.11/24');
    assert.equal(await detectIPv4(kernel(addrs, undefined, '10.1.0.11'), { IP_AUTODETECTION_METHOD: 'can-reach=10.1.0.99' }), '10.1.0.11/24');
  });
  it('rejects unknown methods and bad input', async () => {
    await assert.rejects(detectIPv4(kernel(addrs), { IP_AUTODETECTION_METHOD: 'magic' }), /first-found, interface=<regex>, can-reach=<address>/);
    await assert.rejects(detectIPv4(kernel(addrs), { IP_AUTODETECTION_METHOD: 'interface=(' }), ValidationError);
    await assert.rejects(detectIPv4(kernel(addrs), { IP_AUTODETECTION_METHOD: 'can-reach=x; reboot' }), ValidationError);
  });
});
