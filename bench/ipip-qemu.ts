/**
 * Benchmark: IPIP throughput in the kernel lane (this machine's kernel has no ipip module, so the only
 * IPIP path here is inside the qemu VM of test/kernel-vm). Container→container iperf3 over the product's
 * IPIP path (the node's tunl0 code, its workload dataplane, BIRD's tunl0 routes) against the same path
 * built by hand with `ip` in the same VM, alternated A B B A after a warm-up.
 *
 *   node dist/bench/ipip-qemu.js [--rounds 6] [--seconds 3] [--out BENCHMARKS.md]
 *
 * The VM is software-emulated (TCG, one vCPU): absolute numbers mean nothing, and run-to-run noise is
 * large; only the ratio of the two paths, measured side by side in one VM, is meaningful. The result
 * replaces this script's section of the output file.
 */
import { cpus, release } from 'node:os';
import { parseArgs } from 'node:util';
import { prepareKernel, runIpipVm } from '../test/kernel-vm/vm.js';
import { intOption, loadavg, writeSection } from './report.js';

const BEGIN = '<!-- bench/ipip-qemu.ts: begin (generated, do not edit by hand) -->';
const END = '<!-- bench/ipip-qemu.ts: end -->';
const HEADER = '# calico-ts benchmarks\n';
const TARGET = 0.97;

const { values } = parseArgs({
  options: { rounds: { type: 'string', default: '6' }, seconds: { type: 'string', default: '3' }, out: { type: 'string', default: 'BENCHMARKS.md' } },
});
const rounds = intOption('rounds', values.rounds, 1);
const seconds = intOption('seconds', values.seconds, 1);
const gbit = (bps: number) => (bps / 1e9).toFixed(2);

const kernelDir = await prepareKernel();
const loadBefore = loadavg();
const run = await runIpipVm(kernelDir, {
  timeoutMs: 900_000,
  cmdline: ['CALICO_TS_VM_IPERF=1', `CALICO_TS_VM_IPERF_SECONDS=${seconds}`, `CALICO_TS_VM_IPERF_ROUNDS=${rounds}`],
  log: (s) => process.stderr.write(`${s}\n`),
});
const result = run.steps.find((s) => s.step === 'iperf') as { productBps: number[]; handBps: number[]; ratio: number } | undefined;
const kernel = String(run.steps.find((s) => s.step === 'start')?.kernel ?? '?');
if (!result) {
  process.stderr.write(`no iperf result from the VM; console tail:\n${run.console.slice(-3000)}\n`);
  process.exit(1);
}

const section = [
  BEGIN,
  '## IPIP in the qemu kernel lane (`bench/ipip-qemu.ts`)',
  '',
  `Run ${new Date().toISOString()} on ${cpus().length} × ${cpus()[0]?.model ?? '?'} (host kernel ${release()}, load ${loadBefore}),`,
  `guest: Debian ${kernel} under qemu TCG (software emulation, 1 vCPU, no KVM).`,
  '',
  'Container→container iperf3 (TCP, ' + `${seconds} s per run, ${rounds} rounds A B B A after one warm-up pair) over IPIP, inside one VM:`,
  '**calico-ts** = tunl0 programmed by the node\'s IPIP executor, the workload veth by its dataplane, routes',
  '`via <host> dev tunl0 onlink` by BIRD 2 with the rendered import filter (BIRD running); **hand-built** = the',
  'same objects made with `ip` commands in two more host namespaces (no BIRD).',
  '',
  '| path | runs (Gbit/s) |',
  '|---|---|',
  `| calico-ts | ${result.productBps.map(gbit).join(', ')} |`,
  `| hand-built | ${result.handBps.map(gbit).join(', ')} |`,
  '',
  `**Ratio calico-ts / hand-built (medians): ${result.ratio.toFixed(2)}×** (target ≥ ${TARGET}×).`,
  '',
  'Read with care: under software emulation the absolute numbers say nothing about real hardware, and single',
  'runs of either path vary by a factor of 3 or more (TCG translation, the shared 2-core host), so the ratio is',
  'only good to about ±20 %: it shows the product adds no systematic cost, not a precise figure. The kernel',
  'objects of both paths are the same (test/kernel-vm asserts the routes and tunl0 state). The host→host ratio',
  'is not given: IPIP only exists inside the VM, where an emulated host→host number means as little.',
  `VM run: boot ${run.bootMs ?? '?'} ms, total ${run.totalMs} ms.`,
  END,
].join('\n');
await writeSection(values.out, section, { begin: BEGIN, end: END, header: HEADER });
process.stdout.write(`${section}\n`);
