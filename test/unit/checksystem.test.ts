import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { checkSystem, formatReport, parseBirdVersion, parseIptablesVersion, reason, systemChecks, toResult } from '../../plugin/cli/checksystem.js';
import type { CommandRunner } from '../../plugin/lib/exec.js';
import { CommandFailedError } from '../../plugin/lib/errors.js';

/** Answers from a table keyed by argv; anything else fails like a missing feature. */
function fakeRunner(answers: Record<string, { stdout?: string; stderr?: string } | Error>): CommandRunner & { calls: string[] } {
  const calls: string[] = [];
  return {
    calls,
    run: async (argv) => {
      const key = argv.join(' ');
      calls.push(key);
      const a = answers[key];
      if (a instanceof Error) throw a;
      if (!a) throw new CommandFailedError(argv, 2, null, 'Error: Unknown device type.');
      return { stdout: a.stdout ?? '', stderr: a.stderr ?? '' };
    },
  };
}

const healthy = {
  'ip -V': { stdout: 'ip utility, iproute2-6.1.0\n' },
  'unshare --net -- ip link add name chk0 type veth peer name chk1': {},
  'unshare --net -- ip link add name chkvx type vxlan id 1 dstport 4789': {},
  'ipset --version': { stdout: 'ipset v7.17, protocol version: 7\n' },
  'unshare --net -- ipset create chk hash:net': {},
  'iptables -V': { stdout: 'iptables v1.8.9 (nf_tables)\n' },
  'unshare --net -- iptables -w -n -L FORWARD': {},
  'iptables-restore --version': { stdout: 'iptables-restore v1.8.9 (nf_tables)\n' },
  'bird --version': { stderr: 'BIRD version 2.0.12\n' },
};

describe('node checksystem (pure part)', () => {
  it('reads the iptables backend and the BIRD version', () => {
    assert.deepEqual(parseIptablesVersion('iptables v1.8.9 (nf_tables)'), { version: '1.8.9', backend: 'nf_tables' });
    assert.deepEqual(parseIptablesVersion('iptables v1.8.7 (legacy)'), { version: '1.8.7', backend: 'legacy' });
    assert.deepEqual(parseIptablesVersion('iptables v1.6.1'), { version: '1.6.1', backend: 'legacy' });
    assert.equal(parseIptablesVersion('garbage'), undefined);
    assert.equal(parseBirdVersion('BIRD version 2.0.12'), '2.0.12');
    assert.equal(parseBirdVersion('bird: command not found'), undefined);
  });

  it('a failed required check fails, a failed optional one warns; the reason is the first stderr line', () => {
    const err = new CommandFailedError(['unshare', 'x'], 2, null, 'Error: Unknown device type.\nmore');
    assert.equal(reason(err), 'Error: Unknown device type.');
    assert.equal(reason(new CommandFailedError(['bird'], null, null, 'spawn bird ENOENT')), 'bird: command not found');
    assert.deepEqual(toResult({ name: 'veth', required: true }, { status: 'rejected', reason: err }), { name: 'veth', status: 'fail', detail: 'Error: Unknown device type.' });
    assert.deepEqual(toResult({ name: 'ipip', required: false }, { status: 'rejected', reason: err }), { name: 'ipip', status: 'warn', detail: 'optional: Error: Unknown device type.' });
    assert.deepEqual(toResult({ name: 'x', required: true }, { status: 'fulfilled', value: { status: 'warn', detail: 'hm' } }), { name: 'x', status: 'warn', detail: 'hm' });
  });

  it('report: aligned PASS/WARN/FAIL lines and a summary; ok only without failures', () => {
    const ok = formatReport([{ name: 'iproute2', status: 'pass', detail: 'ip 6.1' }, { name: 'ipip', status: 'warn', detail: 'optional: none' }], '6.1.0');
    assert.equal(ok.ok, true);
    assert.equal(ok.text, ['calico-ts system check (kernel 6.1.0)', '', '  PASS  iproute2  ip 6.1', '  WARN  ipip      optional: none', '', 'All required checks passed (1 warning(s): ipip).'].join('\n'));
    const bad = formatReport([{ name: 'etcd', status: 'fail', detail: 'no answer' }], 'k');
    assert.equal(bad.ok, false);
    assert.match(bad.text, /1 required check\(s\) failed: etcd\. Fix them/);
  });

  it('runs every probe; without ipip the host still passes, without ipset it fails; BIRD 1 is refused', async () => {
    const env = { pingEtcd: async () => 'answers', dockerSocket: '/nonexistent/docker.sock', bgp: false, procRoot: '/proc' };
    const good = await checkSystem({ ...env, runner: fakeRunner(healthy) });
    assert.equal(good.ok, true, good.text);
    assert.match(good.text, /WARN {2}ipip {8}optional: no IPIP in this kernel \(Error: Unknown device type\.\); ipipMode pools will not work, use vxlanMode/);
    const noIpset = { ...healthy } as Record<string, object>;
    delete noIpset['unshare --net -- ipset create chk hash:net'];
    const bad = await checkSystem({ ...env, runner: fakeRunner(noIpset as typeof healthy) });
    assert.equal(bad.ok, false);
    assert.match(bad.text, /FAIL {2}ipset/);
    const bird1 = systemChecks({ ...env, bgp: true, runner: fakeRunner({ 'bird --version': { stderr: 'BIRD version 1.6.8' } }) }).find((c) => c.name === 'bird')!;
    assert.equal(bird1.required, true);
    await assert.rejects(bird1.probe(), /BIRD 1\.6\.8 found; BIRD 2 is needed/);
  });
});
