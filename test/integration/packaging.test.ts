import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { promisify } from 'node:util';
import { describe, it } from 'node:test';
import { loadConfig } from '../../plugin/node/config.js';

const execFileP = promisify(execFile);
const repoFile = (p: string) => new URL(`../../../${p}`, import.meta.url);

describe('packaging: systemd unit', () => {
  it('systemd-analyze accepts the unit; it runs `calico-ts node run` with the env file', async (t) => {
    const unit = readFileSync(repoFile('packaging/calico-ts.service'), 'utf8');
    assert.match(unit, /^ExecStart=\/usr\/local\/bin\/calico-ts node run$/m);
    assert.match(unit, /^EnvironmentFile=-\/etc\/calico-ts\/calico-ts\.env$/m);
    const analyze = await execFileP('systemd-analyze', ['--version']).then(() => true, () => false);
    if (!analyze) return t.skip('systemd-analyze is not installed');
    await execFileP('systemd-analyze', ['verify', repoFile('packaging/calico-ts.service').pathname]);
  });

  it('the example env file names only variables the node reads, with values it accepts', () => {
    const text = readFileSync(repoFile('packaging/calico-ts.env'), 'utf8');
    const env: Record<string, string> = {};
    for (const m of text.matchAll(/^#?([A-Z_]+)=(.*)$/gm)) env[m[1]!] = m[2]!;
    assert.ok(Object.keys(env).length >= 5);
    const config = loadConfig({ ...env, NODENAME: env.NODENAME || 'n1' });
    assert.equal(config.logLevel, 'info');
    const source = readFileSync(repoFile('plugin/node/config.ts'), 'utf8');
    for (const name of Object.keys(env)) assert.ok(source.includes(`env.${name}`) || source.includes(`'${name}'`), `${name} is read by loadConfig`);
  });
});
