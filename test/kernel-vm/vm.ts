/**
 * The kernel lane's host side: assembles a small initramfs (busybox, node, ip, bird, iperf3 and the
 * libraries `ldd` lists, the cached kernel modules, the built app with only the npm packages it
 * imports), boots Debian's kernel on it with qemu in software emulation (TCG), and returns the guest's
 * `CALICO-TS-VM {...}` console lines. qemu is killed by PID on timeout and when this process exits;
 * the staging directory and the initramfs are temporary and always removed. Only the kernel and its
 * modules are cached (scripts/kernel-lane-deps.sh, build/kernel-lane/).
 */
import { spawn, execFile } from 'node:child_process';
import { copyFileSync, createWriteStream, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync, chmodSync, cpSync, lstatSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

const execFileP = promisify(execFile);
/** The compiled tree this file is part of (dist/, or wherever tsc wrote it). */
const DIST = fileURLToPath(new URL('../../', import.meta.url));
/** The repository: the nearest directory above the compiled tree with a package.json. */
export const REPO = ((): string => {
  for (let dir = dirname(DIST); dir !== dirname(dir); dir = dirname(dir)) if (existsSync(join(dir, 'package.json'))) return dir;
  throw new Error(`no package.json above ${DIST}`);
})();
const MARK = 'CALICO-TS-VM ';

/** Runs scripts/kernel-lane-deps.sh: installs qemu/cpio/kmod if missing, fetches the kernel once; returns its cache dir. */
export async function prepareKernel(): Promise<string> {
  const { stdout } = await execFileP(join(REPO, 'scripts/kernel-lane-deps.sh'), [], { cwd: REPO, timeout: 900_000, maxBuffer: 16 << 20 });
  const dir = stdout.trim().split('\n').pop() ?? '';
  return dir.startsWith('/') ? dir : join(REPO, dir);
}

async function which(bin: string): Promise<string> {
  for (const d of ['/usr/local/sbin', '/usr/local/bin', '/usr/sbin', '/usr/bin', '/sbin', '/bin']) {
    if (existsSync(join(d, bin))) return join(d, bin);
  }
  throw new Error(`${bin} is not installed`);
}

/** The shared libraries a binary needs, as `ldd` lists them (absolute paths). */
async function libraries(binary: string): Promise<string[]> {
  const { stdout } = await execFileP('ldd', [binary]);
  return [...stdout.matchAll(/(\/[^\s]+) \(0x/g)].map((m) => m[1] as string);
}

/** Copies a file to the same absolute path under `stage` (symlinks resolved: the content is copied). */
function stageFile(stage: string, path: string, as = path): void {
  const target = join(stage, as);
  mkdirSync(dirname(target), { recursive: true });
  if (!existsSync(target)) copyFileSync(path, target);
}

/** The npm packages `names` need (flat node_modules), by their package.json dependencies. */
function packageClosure(names: string[]): string[] {
  const seen = new Set<string>();
  const visit = (name: string): void => {
    if (seen.has(name)) return;
    const pkg = join(REPO, 'node_modules', name, 'package.json');
    if (!existsSync(pkg)) return; // optional dependency not installed
    seen.add(name);
    const { dependencies = {} } = JSON.parse(readFileSync(pkg, 'utf8')) as { dependencies?: Record<string, string> };
    Object.keys(dependencies).forEach(visit);
  };
  names.forEach(visit);
  return [...seen];
}

/** Every path under dir (directories first), relative, for cpio. */
function listTree(dir: string, base = dir): string[] {
  const out: string[] = [];
  for (const name of readdirSync(dir)) {
    const full = join(dir, name);
    out.push(relative(base, full));
    const st = lstatSync(full);
    if (st.isDirectory()) out.push(...listTree(full, base));
  }
  return out;
}

const INIT = `#!/bin/sh
# calico-ts kernel lane: mount the basics, load veth (ipip is left to the node's own modprobe), run the guest.
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs dev /dev
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /tmp
exec 0</dev/console 1>/dev/console 2>&1
# Files unpacked from the initramfs can still count as open for writing (the kernel closes them
# lazily), and exec'ing them then fails with ETXTBSY: rewrite the binaries once, closed for sure.
for f in /usr/bin/node /usr/sbin/ip /bin/ip /usr/sbin/bird /usr/bin/iperf3 /usr/bin/nsenter; do
  [ -f "$f" ] && cp "$f" "$f.new" && mv "$f.new" "$f"
done
insmod /lib/modules/$(uname -r)/kernel/drivers/net/veth.ko
ip link set lo up
export PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/tmp
echo "CALICO-TS-VM {\\"step\\":\\"booted\\"}"
cd /app && node dist/test/kernel-vm/guest.js
poweroff -f
`;

/** Builds the initramfs (newc cpio, uncompressed: the guest unpacks it fastest) into `out`. */
export async function buildInitramfs(kernelDir: string, out: string): Promise<void> {
  const stage = mkdtempSync(join(tmpdir(), 'calico-ts-vm-stage-'));
  try {
    for (const d of ['proc', 'sys', 'dev', 'run', 'tmp', 'bin', 'sbin', 'usr/bin', 'usr/sbin', 'app/dist/test/kernel-vm']) mkdirSync(join(stage, d), { recursive: true });
    const binaries = await Promise.all(['node', 'ip', 'bird', 'iperf3', 'nsenter'].map(which));
    for (const bin of binaries) {
      stageFile(stage, bin);
      for (const lib of await libraries(bin)) stageFile(stage, lib);
    }
    stageFile(stage, '/bin/busybox', '/bin/busybox');
    const real = new Set(binaries.map((b) => b.split('/').pop()));
    const { stdout: applets } = await execFileP('/bin/busybox', ['--list']);
    for (const applet of applets.split('\n').filter(Boolean)) {
      if (real.has(applet) || existsSync(join(stage, 'bin', applet))) continue;
      symlinkSync('busybox', join(stage, 'bin', applet));
    }
    cpSync(join(kernelDir, 'lib'), join(stage, 'lib'), { recursive: true });
    // The app: the compiled plugin, the guest, and the npm packages the plugin's imports reach.
    writeFileSync(join(stage, 'app/package.json'), JSON.stringify({ type: 'module' }));
    cpSync(join(DIST, 'plugin'), join(stage, 'app/dist/plugin'), { recursive: true });
    copyFileSync(join(DIST, 'test/kernel-vm/guest.js'), join(stage, 'app/dist/test/kernel-vm/guest.js'));
    for (const pkg of packageClosure(['pino'])) cpSync(join(REPO, 'node_modules', pkg), join(stage, 'app/node_modules', pkg), { recursive: true });
    writeFileSync(join(stage, 'init'), INIT);
    chmodSync(join(stage, 'init'), 0o755);
    await execFileP('mknod', ['-m', '600', join(stage, 'dev/console'), 'c', '5', '1']);
    await new Promise<void>((resolve, reject) => {
      const cpio = spawn('cpio', ['-o', '-H', 'newc', '--quiet'], { cwd: stage, stdio: ['pipe', 'pipe', 'pipe'] });
      let stderr = '';
      cpio.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
      cpio.stdout.pipe(createWriteStream(out));
      cpio.on('error', reject);
      cpio.on('exit', (code) => (code === 0 ? resolve() : reject(new Error(`cpio failed (${code}): ${stderr}`))));
      cpio.stdin.end(listTree(stage).join('\n') + '\n');
    });
  } finally {
    rmSync(stage, { recursive: true, force: true });
  }
}

export interface VmRun {
  /** Parsed `CALICO-TS-VM {...}` lines, in order. */
  steps: Record<string, unknown>[];
  console: string;
  exitCode: number | null;
  timedOut: boolean;
  /** qemu start → guest's "booted" line, and → exit. */
  bootMs: number | undefined;
  totalMs: number;
}

/** Boots the kernel on a fresh initramfs, waits for the guest to power off (or the timeout), cleans up. */
export async function runIpipVm(kernelDir: string, options: { timeoutMs?: number; cmdline?: string[]; log?: (s: string) => void } = {}): Promise<VmRun> {
  const work = mkdtempSync(join(tmpdir(), 'calico-ts-vm-'));
  const initrd = join(work, 'initrd.cpio');
  let pid: number | undefined;
  const killQemu = (): void => {
    if (pid === undefined) return;
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // already gone
    }
  };
  process.once('exit', killQemu);
  try {
    await buildInitramfs(kernelDir, initrd);
    const started = Date.now();
    const args = [
      '-accel', 'tcg', // software emulation: the lane must not depend on KVM
      '-m', '1536', '-smp', '1',
      '-nodefaults', '-display', 'none', '-serial', 'stdio', '-no-reboot',
      '-kernel', join(kernelDir, 'vmlinuz'),
      '-initrd', initrd,
      '-append', ['console=ttyS0', 'panic=-1', 'quiet', ...(options.cmdline ?? [])].join(' '),
    ];
    const qemu = spawn('qemu-system-x86_64', args, { stdio: ['ignore', 'pipe', 'pipe'] });
    pid = qemu.pid;
    let text = '';
    let bootMs: number | undefined;
    const steps: Record<string, unknown>[] = [];
    let partial = '';
    qemu.stdout.on('data', (d: Buffer) => {
      const chunk = d.toString();
      text += chunk;
      partial += chunk;
      const lines = partial.split('\n');
      partial = lines.pop() ?? '';
      for (const line of lines) {
        const i = line.indexOf(MARK);
        if (i < 0) continue;
        try {
          const step = JSON.parse(line.slice(i + MARK.length).trim()) as Record<string, unknown>;
          if (step.step === 'booted') bootMs = Date.now() - started;
          steps.push(step);
          options.log?.(`vm: ${JSON.stringify(step)}`);
        } catch {
          // a console line cut by kernel messages; the full console is kept for the report
        }
      }
    });
    qemu.stderr.on('data', (d: Buffer) => (text += d.toString()));
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      killQemu();
    }, options.timeoutMs ?? 600_000);
    const exitCode = await new Promise<number | null>((resolve) => qemu.once('exit', (code) => resolve(code)));
    clearTimeout(timer);
    pid = undefined;
    return { steps, console: text, exitCode, timedOut, bootMs, totalMs: Date.now() - started };
  } finally {
    killQemu();
    process.removeListener('exit', killQemu);
    rmSync(work, { recursive: true, force: true });
  }
}
