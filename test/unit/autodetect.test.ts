import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { CommandRunner } from '../../plugin/lib/exec.js';
import { ValidationError } from '../../plugin/lib/errors.js';
import { detectIPv4, detectIPv6 } from '../../plugin/node/autodetect.js';

/** Answers `ip -json -4` (or -6) queries from canned kernel state; IPv6 fe80:: addresses have scope link. */
function kernel(addrs: [string, string, number][], defaultDev?: string, routeGet?: string, family: 4 | 6 = 4): CommandRunner {
  return {
    async run(argv) {
      const cmd = argv.join(' ');
      if (cmd === `ip -json -${family} addr show`) {
        const byIf = new Map<string, { family: string; local: string; prefixlen: number; scope: string }[]>();
        for (const [ifname, local, prefixlen] of addrs) {
          const scope = ifname === 'lo' ? 'host' : local.startsWith('fe80:') ? 'link' : 'global';
          byIf.set(ifname, [...(byIf.get(ifname) ?? []), { family: family === 4 ? 'inet' : 'inet6', local, prefixlen, scope }]);
        }
        return { stdout: JSON.stringify([...byIf].map(([ifname, addr_info]) => ({ ifname, addr_info }))), stderr: '' };
      }
      if (cmd === `ip -json -${family} route show default`) return { stdout: JSON.stringify(defaultDev ? [{ dst: 'default', dev: defaultDev }] : []), stderr: '' };
      if (cmd.startsWith(`ip -json -${family} route get`)) return { stdout: JSON.stringify([{ prefsrc: routeGet }]), stderr: '' };
      throw new Error(`unexpected ${cmd}`);
    },
  };
}
const kernel6 = (addrs: [string, string, number][], defaultDev?: string, routeGet?: string): CommandRunner => kernel(addrs, defaultDev, routeGet, 6);

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

describe('IPv6 autodetection (IP6, IP6_AUTODETECTION_METHOD)', () => {
  const addrs6: [string, string, number][] = [
    ['lo', '::1', 128],
    ['eth0', 'fe80::1', 64],
    ['eth0', 'fd00:99::11', 64],
    ['eth1', 'fd00:98::11', 64],
  ];
  it('IP6 wins (none = off); first-found skips link-local; interface= and can-reach= as for IPv4', async () => {
    assert.equal(await detectIPv6(kernel6(addrs6), { IP6: 'fd00:98::11' }), 'fd00:98::11/64');
    assert.equal(await detectIPv6(kernel6(addrs6), { IP6: 'fd00:1::1' }), 'fd00:1::1/128');
    assert.equal(await detectIPv6(kernel6(addrs6), { IP6: 'none' }), null);
    await assert.rejects(detectIPv6(kernel6(addrs6), { IP6: '10.0.0.1' }), /IP6: 10\.0\.0\.1 is not an IPv6 address/);
    assert.equal(await detectIPv6(kernel6(addrs6), {}), 'fd00:99::11/64');
    assert.equal(await detectIPv6(kernel6(addrs6, 'eth1'), {}), 'fd00:98::11/64');
    assert.equal(await detectIPv6(kernel6([['eth0', 'fe80::1', 64]]), {}), null);
    assert.equal(await detectIPv6(kernel6(addrs6), { IP6_AUTODETECTION_METHOD: 'interface=eth1' }), 'fd00:98::11/64');
    assert.equal(await detectIPv6(kernel6(addrs6, undefined, 'fd00:98::11'), { IP6_AUTODETECTION_METHOD: 'can-reach=fd00:98::99' }), 'fd00:98::11/64');
    await assert.rejects(detectIPv6(kernel6(addrs6), { IP6_AUTODETECTION_METHOD: 'can-reach=10.0.0.1' }), ValidationError);
    await assert.rejects(detectIPv6(kernel6(addrs6), { IP6_AUTODETECTION_METHOD: 'magic' }), /IP6_AUTODETECTION_METHOD/);
  });
});
