/**
 * `calico-ts version`: the package version, the git commit it was built from, and the Node.js
 * running it. The commit comes from dist/build-info.json (written by `make build`, so a managed
 * plugin's rootfs knows it without git), else from git when run from a checkout, else "unknown".
 */
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

export interface VersionInfo {
  version: string;
  commit: string | undefined;
  node: string;
}

export function formatVersion(info: VersionInfo): string {
  return [`calico-ts ${info.version}`, `commit:  ${info.commit ?? 'unknown'}`, `node:    ${info.node}`].join('\n');
}

/** The repository (or plugin app) root: dist/plugin/cli/ → ../../../ */
const ROOT = new URL('../../../', import.meta.url);

export function packageVersion(): string {
  return (JSON.parse(readFileSync(new URL('package.json', ROOT), 'utf8')) as { version: string }).version;
}

function buildCommit(): string | undefined {
  const file = new URL('dist/build-info.json', ROOT);
  if (existsSync(file)) {
    const commit = (JSON.parse(readFileSync(file, 'utf8')) as { commit?: unknown }).commit;
    if (typeof commit === 'string' && commit) return commit;
  }
  try {
    const cwd = fileURLToPath(ROOT);
    const commit = execFileSync('git', ['-C', cwd, 'rev-parse', '--short=12', 'HEAD'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'], timeout: 5_000 }).trim();
    const dirty = execFileSync('git', ['-C', cwd, 'status', '--porcelain', '--untracked-files=no'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'], timeout: 5_000 }).trim();
    return commit + (dirty ? '-dirty' : '');
  } catch {
    return undefined;
  }
}

export function versionInfo(): VersionInfo {
  return { version: packageVersion(), commit: buildCommit(), node: process.version };
}
