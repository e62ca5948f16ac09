// Import a busybox image into a daemon without any registry: a root filesystem made of the host's
// static /bin/busybox and its applet symlinks, tarred and fed to `docker import`.

import { spawn } from 'node:child_process';
import { chmod, copyFile, mkdir, mkdtemp, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { run, RunError, type RunOptions, type RunResult } from './proc.js';

export const BUSYBOX_IMAGE = 'local/busybox';

/** Anything with a docker(args) method, e.g. a DockerdHandle. */
export interface DockerClient {
  docker(args: readonly string[], opts?: RunOptions): Promise<RunResult>;
}

export interface EnsureBusyboxOptions {
  /** Default "local/busybox". */
  image?: string;
  /** Default "/bin/busybox" (Debian busybox-static). */
  busybox?: string;
}

export interface EnsureBusyboxResult {
  image: string;
  /** False when the image was already there. */
  imported: boolean;
  ms: number;
}

/** Applets the tests rely on: fail early if this busybox lacks one. */
const REQUIRED = ['sh', 'ping', 'sleep', 'true', 'ip', 'ifconfig', 'wget', 'nc', 'cat', 'echo', 'hostname'];

/** Build the root filesystem in a new temp dir; the caller removes it. */
async function buildRootfs(busybox: string): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'busybox-rootfs-'));
  try {
    for (const d of ['bin', 'sbin', 'usr/bin', 'usr/sbin', 'etc', 'root', 'var', 'proc', 'sys', 'dev']) {
      await mkdir(join(dir, d), { recursive: true });
    }
    await mkdir(join(dir, 'tmp'));
    await chmod(join(dir, 'tmp'), 0o1777);
    await copyFile(busybox, join(dir, 'bin/busybox'));
    await chmod(join(dir, 'bin/busybox'), 0o755);
    // "bin/sh", "usr/bin/wget", "sbin/ifconfig", ...
    const list = (await run([busybox, '--list-full'])).stdout.split('\n').map((l) => l.trim()).filter(Boolean);
    const names = new Set(list.map((p) => p.split('/').pop()));
    const missing = REQUIRED.filter((a) => !names.has(a));
    if (missing.length) throw new Error(`${busybox} lacks applets: ${missing.join(', ')}`);
    for (const rel of list) {
      if (rel === 'bin/busybox' || rel.startsWith('/') || rel.includes('..')) continue;
      const link = join(dir, rel);
      await mkdir(dirname(link), { recursive: true });
      await symlink('/bin/busybox', link).catch((err: NodeJS.ErrnoException) => {
        if (err.code !== 'EEXIST') throw err;
      });
    }
    await writeFile(join(dir, 'etc/passwd'), 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n');
    await writeFile(join(dir, 'etc/group'), 'root:x:0:\nnogroup:x:65534:\n');
    return dir;
  } catch (err) {
    await rm(dir, { recursive: true, force: true });
    throw err;
  }
}

/** `tar -C dir -c . | docker import - image`, piped in Node (no shell). */
async function importDir(client: DockerClient, dir: string, image: string): Promise<void> {
  const tar = spawn('tar', ['-C', dir, '--numeric-owner', '--owner=0', '--group=0', '-c', '.'], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let tarErr = '';
  tar.stderr.setEncoding('utf8').on('data', (c: string) => (tarErr += c));
  const tarDone = new Promise<void>((resolve, reject) => {
    tar.once('error', reject);
    tar.once('close', (code, sig) =>
      code === 0 ? resolve() : reject(new RunError(['tar', '-c', dir], code, sig, '', tarErr, `exit code ${code ?? sig}`)),
    );
  });
  const imported = client.docker(['import', '--change', 'CMD ["sh"]', '-', image], { input: tar.stdout, timeoutMs: 60_000 });
  const [t, d] = await Promise.allSettled([tarDone, imported]);
  // docker's error first: when it fails, tar only sees a broken pipe.
  if (d.status === 'rejected') throw d.reason;
  if (t.status === 'rejected') throw t.reason;
}

/** Import `local/busybox` into the daemon unless it is already there. */
export async function ensureBusyboxImage(client: DockerClient, opts: EnsureBusyboxOptions = {}): Promise<EnsureBusyboxResult> {
  const image = opts.image ?? BUSYBOX_IMAGE;
  const t0 = performance.now();
  try {
    await client.docker(['image', 'inspect', '--format', '{{.Id}}', image]);
    return { image, imported: false, ms: performance.now() - t0 };
  } catch (err) {
    if (!(err instanceof RunError) || !/no such image/i.test(err.stderr)) throw err;
  }
  const dir = await buildRootfs(opts.busybox ?? '/bin/busybox');
  try {
    await importDir(client, dir, image);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
  return { image, imported: true, ms: performance.now() - t0 };
}
