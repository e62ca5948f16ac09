import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
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
    // scripts/deps.sh installs systemd; this guard only matters for a hand-run test on a bare machine.
    if (!analyze) return t.skip('systemd-analyze is not installed');
    // verify checks that ExecStart's program exists: point it at this checkout's built CLI, since
    // /usr/local/bin/calico-ts exists only after `make install`.
    const dir = mkdtempSync(join(tmpdir(), 'calico-ts-unit-'));
    try {
      const copy = join(dir, 'calico-ts.service');
      writeFileSync(copy, unit.replaceAll('/usr/local/bin/calico-ts', fileURLToPath(repoFile('dist/plugin/cli/main.js'))));
      await execFileP('systemd-analyze', ['verify', copy]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
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

describe('packaging: managed plugin config.json', () => {
  interface PluginConfig {
    entrypoint: string[];
    interface: { types: string[]; socket: string };
    network: { type: string };
    linux: { capabilities: string[] };
    mounts: { name: string; source: string; destination: string; type: string; options: string[]; settable?: string[] }[];
    env: { name: string; value: string; settable: string[] }[];
  }
  const config = JSON.parse(readFileSync(repoFile('config.json'), 'utf8')) as PluginConfig;

  it('declares both drivers on calico-ts.sock, host networking and the capabilities the dataplane needs', () => {
    assert.deepEqual(config.interface, { types: ['docker.networkdriver/1.0', 'docker.ipamdriver/1.0'], socket: 'calico-ts.sock' });
    assert.equal(config.network.type, 'host');
    for (const cap of ['CAP_NET_ADMIN', 'CAP_SYS_ADMIN']) assert.ok(config.linux.capabilities.includes(cap), cap);
    assert.deepEqual(config.entrypoint.slice(-2), ['node', 'run']);
  });

  it('its environment is a valid node configuration whose paths match the mounts; the user-facing settings are settable', () => {
    const env = Object.fromEntries(config.env.map((e) => [e.name, e.value]));
    const c = loadConfig({ ...env, NODENAME: 'n1' });
    assert.equal(c.socketPath, `/run/docker/plugins/${config.interface.socket}`);
    assert.equal(c.driverName, 'calico-ts:latest');
    const dest = (name: string) => config.mounts.find((m) => m.name === name)?.destination;
    assert.equal(`unix://${dest('docker-socket')}`, env.DOCKER_HOST);
    assert.ok(c.runDir.startsWith(`${dest('host-run')}/`));
    assert.equal(c.sysctlRoot, dest('proc-sys'));
    const settable = config.env.filter((e) => e.settable.includes('value')).map((e) => e.name);
    for (const name of ['ETCD_ENDPOINTS', 'NODENAME', 'IP', 'AS', 'LOG_LEVEL', 'CALICO_TS_VETH_MTU']) assert.ok(settable.includes(name), name);
  });
});
