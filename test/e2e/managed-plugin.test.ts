/**
 * The managed plugin end to end: `make plugin`'s build (scripts/build-plugin.sh) installed with
 * `docker plugin create/set/enable` on host1 of a two-host testbed; host2 runs the legacy socket node.
 * Both share one etcd and BGP; containers on either host reach each other.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { join } from 'node:path';
import { CLI } from '../helpers/calico-node.js';
import { buildManagedPlugin, PLUGIN_NAME } from '../helpers/managed-plugin.js';
import { Cleanup, waitFor } from '../helpers/proc.js';
import { startTestbed, type Testbed, type TestbedHost } from '../helpers/testbed.js';

describe('managed plugin (docker plugin create) beside a legacy-socket node', { timeout: 900_000 }, () => {
  const cleanup = new Cleanup();
  let t: Testbed;
  let managed: TestbedHost;
  let legacy: TestbedHost;
  const ipOf = (host: TestbedHost, name: string) => host.docker('inspect', '-f', '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}', name);
  const ping = (host: TestbedHost, from: string, ip: string) => host.docker('exec', from, 'ping', '-c1', '-W2', ip);
  const pluginEnv = async () => JSON.parse(await managed.docker('plugin', 'inspect', '-f', '{{json .Settings.Env}}', PLUGIN_NAME)) as string[];

  before(async () => {
    const buildDir = await buildManagedPlugin();
    t = await startTestbed({ hosts: 2, name: 'mp', managedPlugin: { buildDir, hosts: ['host1'] } });
    cleanup.add('testbed', () => t.stop());
    [managed, legacy] = [t.host('host1'), t.host('host2')];
  });
  after(async () => {
    if (process.exitCode) for (const host of t?.hosts ?? []) process.stderr.write(`--- ${host.name}\n${host.node?.log().slice(-4000) ?? ''}\n`);
    await cleanup.run();
  });

  it('installs as calico-ts:latest with both interfaces, host networking and our settings', async () => {
    const ls = await managed.docker('plugin', 'ls', '--format', '{{.Name}} {{.Enabled}}');
    assert.equal(ls, `${PLUGIN_NAME} true`);
    const config = JSON.parse(await managed.docker('plugin', 'inspect', '-f', '{{json .Config}}', PLUGIN_NAME)) as {
      Interface: { Types: string[] };
      Network: { Type: string };
      Linux: { Capabilities: string[] };
    };
    assert.deepEqual(config.Interface.Types, ['docker.networkdriver/1.0', 'docker.ipamdriver/1.0']);
    assert.equal(config.Network.Type, 'host');
    assert.ok(config.Linux.Capabilities.includes('CAP_NET_ADMIN'));
    assert.ok((await pluginEnv()).includes('NODENAME=host1'));
  });

  it('a network created with the managed plugin reaches the legacy host; containers on both ping each other', async () => {
    await managed.docker('network', 'create', '-d', PLUGIN_NAME, '--ipam-driver', PLUGIN_NAME, 'net1');
    // The legacy host's node copies it under its own driver name.
    await waitFor(async () => (await legacy.docker('network', 'ls', '--format', '{{.Name}} {{.Driver}}')).includes('net1 calico-ts'), 20_000, 'net1 on host2');
    await managed.docker('run', '-d', '--net', 'net1', '--name', 'm1', 'local/busybox', 'sleep', '900');
    await legacy.docker('run', '-d', '--net', 'net1', '--name', 'l1', 'local/busybox', 'sleep', '900');
    const [m1, l1] = [await ipOf(managed, 'm1'), await ipOf(legacy, 'l1')];
    assert.match(m1, /^192\.168\.\d+\.\d+$/);
    // Routes come over BGP between the plugin's BIRD and the legacy node's BIRD.
    await waitFor(async () => (await ping(legacy, 'l1', m1).then(() => true, () => false)), 20_000, 'l1 → m1');
    await ping(managed, 'm1', l1);
    // The plugin keeps its run dir in the host's /run: node status works from the host.
    const status = await managed.exec([process.execPath, CLI, 'node', 'status'], { env: { PATH: process.env.PATH ?? '', CALICO_TS_RUN_DIR: join(managed.dockerd.runDir, 'calico-ts') } });
    assert.match(status.stdout, /Calico-ts process is running/);
    assert.match(status.stdout, new RegExp(`${legacy.ip.replace(/\./g, '\\.')}.*Established`));
    // A network created on the legacy host appears on the managed host, under calico-ts:latest.
    await legacy.docker('network', 'create', '-d', 'calico-ts', '--ipam-driver', 'calico-ts', 'net2');
    await waitFor(async () => (await managed.docker('network', 'ls', '--format', '{{.Name}} {{.Driver}}')).includes(`net2 ${PLUGIN_NAME}`), 20_000, 'net2 on host1');
  });

  it('disable -f / enable keeps containers and their addresses; new containers get new addresses', async () => {
    const m1 = await ipOf(managed, 'm1');
    await managed.node!.stop(); // docker plugin disable -f
    assert.equal(await managed.docker('plugin', 'inspect', '-f', '{{.Enabled}}', PLUGIN_NAME), 'false');
    // The container, its veth and its route stay while the plugin is off (BIRD stops with it, so
    // the other host loses the route until the plugin is back: no BGP graceful restart).
    assert.match((await managed.exec(['ip', 'route', 'show', `${m1}/32`])).stdout, /dev cali\w+ proto 80 scope link/);
    await managed.docker('exec', 'm1', 'ping', '-c1', '-W2', managed.ip);
    await managed.node!.restart(); // docker plugin enable
    assert.equal(await ipOf(managed, 'm1'), m1);
    await waitFor(async () => (await ping(legacy, 'l1', m1).then(() => true, () => false)), 30_000, 'l1 → m1 after enable');
    await managed.docker('run', '-d', '--net', 'net1', '--name', 'm2', 'local/busybox', 'sleep', '900');
    const m2 = await ipOf(managed, 'm2');
    assert.notEqual(m2, m1);
    await waitFor(async () => (await ping(legacy, 'l1', m2).then(() => true, () => false)), 20_000, 'l1 → m2');
    await ping(managed, 'm2', m1);
  });

  it('docker plugin set changes the configuration (while disabled); the node runs with it after enable', async () => {
    await managed.node!.stop();
    await managed.docker('plugin', 'set', PLUGIN_NAME, 'LOG_LEVEL=warn', 'CALICO_TS_VETH_MTU=1400');
    assert.ok((await pluginEnv()).includes('LOG_LEVEL=warn'));
    const before = managed.node!.log().length;
    await managed.node!.restart();
    await managed.docker('run', '-d', '--net', 'net1', '--name', 'm3', 'local/busybox', 'sleep', '900');
    // The new veth MTU applies to the new container; the debug lines of Docker calls stopped.
    assert.match(await managed.docker('exec', 'm3', 'cat', '/sys/class/net/eth0/mtu'), /^1400$/);
    const after = managed.node!.log().slice(before);
    assert.doesNotMatch(after, /docker call/);
    await ping(managed, 'm3', await ipOf(managed, 'm1'));
  });
});
