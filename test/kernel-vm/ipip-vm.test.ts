/**
 * The kernel lane: IPIP proven on a kernel that has it. This machine's kernel has no ipip module, so the
 * test boots Debian's linux-image-amd64 under qemu (software emulation) on a small initramfs and runs
 * guest.ts there: the node's IPIP executor loads the module and programs tunl0 in two host namespaces,
 * the workload dataplane plugs a container into each, BIRD 2 runs with the configuration the node renders,
 * and a container on host A pings one on host B over tunl0. Results come back on the serial console.
 * Setup installs qemu/cpio/kmod if missing and caches the kernel in build/kernel-lane (scripts/kernel-lane-deps.sh).
 * Run with `make test-kernel` (about 1–2 minutes; boot alone is 15–40 s depending on the machine's load).
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { prepareKernel, runIpipVm, type VmRun } from './vm.js';

const isRoot = typeof process.getuid === 'function' && process.getuid() === 0;

describe('IPIP on a kernel that has it (qemu, Debian linux-image-amd64)', { skip: isRoot ? false : 'needs root (mknod, apt)' }, () => {
  let run: VmRun;
  const step = (name: string, host?: string): Record<string, unknown> => {
    const found = run.steps.find((s) => s.step === name && (host === undefined || s.host === host));
    assert.ok(found, `no "${name}" step from the VM${host ? ` for ${host}` : ''}; steps: ${JSON.stringify(run.steps)}\nconsole tail:\n${run.console.slice(-3000)}`);
    return found;
  };

  before(async () => {
    const kernelDir = await prepareKernel();
    run = await runIpipVm(kernelDir, { timeoutMs: 420_000 });
  });
  after(() => {
    if (run) console.log(`# kernel lane: qemu boot ${run.bootMs ?? '?'} ms, whole VM run ${run.totalMs} ms, exit ${String(run.exitCode)}${run.timedOut ? ' (timed out)' : ''}`);
  });

  it('the VM booted Debian\'s kernel and the guest finished', () => {
    assert.match(String(step('start').kernel), /-amd64$/);
    const failed = run.steps.find((s) => s.step === 'failed');
    assert.equal(failed, undefined, `guest failed: ${JSON.stringify(failed)}`);
    step('done');
    assert.equal(run.timedOut, false);
  });

  it('the node loads the ipip module itself when tunl0 is missing', () => {
    const m = step('module');
    assert.equal(m.tunl0Before, false);
    assert.deepEqual(m.availability, { available: true });
  });

  for (const [host, address] of [
    ['hosta', '10.77.1.0'],
    ['hostb', '10.77.2.0'],
  ] as const) {
    it(`${host}: tunl0 up with its tunnel address as a /32 and MTU underlay − 20; a second apply changes nothing`, () => {
      const t = step('tunl0', host);
      assert.deepEqual(t.tunl0, { up: true, mtu: 1480, addresses: [`${address}/32`] });
      assert.deepEqual(t.secondRunChanges, []);
    });
  }

  it('BIRD\'s import filter puts the other host\'s block via that host, dev tunl0, onlink', () => {
    assert.match(String(step('route', 'hosta').route), /^unicast 10\.77\.2\.0\/26 via 10\.0\.0\.2 dev tunl0 proto bird .*onlink/);
    assert.match(String(step('route', 'hostb').route), /^unicast 10\.77\.1\.0\/26 via 10\.0\.0\.1 dev tunl0 proto bird .*onlink/);
  });

  it('a container on host A pings a container on host B, through tunl0', () => {
    const p = step('ping');
    assert.equal(p.ok, true, JSON.stringify(p));
    assert.equal(p.tunnelPingOk, true);
    const counters = p.tunl0PacketsA as { tx: number; rx: number };
    assert.ok(counters.tx >= 3 && counters.rx >= 3, `tunl0 on host A carried the pings: ${JSON.stringify(counters)}`);
  });
});
