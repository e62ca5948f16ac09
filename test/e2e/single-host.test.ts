/**
 * One host, end to end, against a real dockerd in its own network namespace, a real etcd, and a real
 * `calico-ts node run`. Run twice: with the test dockerd managing iptables (FORWARD policy DROP) and without.
 */
import assert from 'node:assert/strict';
import { statSync } from 'node:fs';
import { request } from 'node:http';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, it } from 'node:test';
import { ensureBusyboxImage } from '../helpers/busybox-image.js';
import { startCalicoNode, type CalicoNodeHandle } from '../helpers/calico-node.js';
import { startDockerd, type DockerdHandle } from '../helpers/dockerd.js';
import { startEtcd, type EtcdHandle } from '../helpers/etcd.js';
import { Cleanup, run, waitFor } from '../helpers/proc.js';

const ETCD_DUMP = fileURLToPath(new URL('../helpers/etcd-dump.js', import.meta.url));
const HOST_ADDRESS = '10.99.0.1';

/** POSTs raw text to the plugin socket, as Docker would. */
function pluginCall(socketPath: string, path: string, body: string): Promise<{ status: number; json: Record<string, unknown> }> {
  return new Promise((resolve, reject) => {
    const req = request({ socketPath, path, method: 'POST', headers: { 'Content-Type': 'application/vnd.docker.plugins.v1.2+json' } }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (text += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, json: JSON.parse(text) as Record<string, unknown> }));
    });
    req.on('error', reject);
    req.end(body);
  });
}

for (const iptables of [false, true]) {
  describe(`single host, dockerd ${iptables ? 'managing' : 'not managing'} iptables`, { timeout: 300_000 }, () => {
    const cleanup = new Cleanup();
    let dockerd: DockerdHandle;
    let etcd: EtcdHandle;
    let node: CalicoNodeHandle;
    const ns = (argv: string[]) => run(['nsenter', `--net=/run/netns/${dockerd.netns}`, ...argv]);
    const docker = async (...args: string[]) => (await dockerd.docker(args, { timeoutMs: 60_000 })).stdout.trim();
    const ipOf = (name: string) => docker('inspect', '-f', '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}', name);
    const dump = async (): Promise<Record<string, unknown>> => JSON.parse((await ns([process.execPath, ETCD_DUMP, etcd.endpoint])).stdout) as Record<string, unknown>;

    before(async () => {
      dockerd = await startDockerd({ iptables });
      cleanup.add('dockerd', () => dockerd.stop());
      etcd = await startEtcd({ netns: dockerd.netns });
      cleanup.add('etcd', () => etcd.stop());
      if (iptables) {
        // Docker sets FORWARD policy DROP only when it enables ip_forward itself; make it certain, as on
        // a typical Docker host, so this variant proves cali-FORWARD carries the traffic.
        await ns(['iptables', '-P', 'FORWARD', 'DROP']);
      }
      // The host's own address, for "container pings its host".
      await ns(['ip', 'addr', 'add', `${HOST_ADDRESS}/32`, 'dev', 'lo']);
      node = await startCalicoNode({
        netns: dockerd.netns,
        nodeName: `e2e-${iptables ? 'ipt' : 'noipt'}`,
        etcdEndpoint: etcd.endpoint,
        pluginDir: dockerd.pluginDir,
        dockerSocket: dockerd.socketPath,
        runDir: join(dockerd.runDir, 'calico-ts'),
        env: { CALICO_TS_GC_INTERVAL_MS: '500', CALICO_TS_GC_GRACE_MS: '3000', CALICO_TS_GC_UNBOUND_GRACE_MS: '8000' },
      });
      cleanup.add('calico-ts node', () => node.stop());
      await ensureBusyboxImage(dockerd);
    });

    it('serves the plugin socket with mode 0660', () => {
      assert.equal(statSync(node.socketPath).mode & 0o777, 0o660);
    });

    after(async () => {
      if (process.exitCode) process.stderr.write(node?.log().slice(-4000) ?? '');
      await cleanup.run();
    });

    it('creates a network on the default pool with the 169.254.1.1 gateway', async () => {
      await docker('network', 'create', '--driver', 'calico-ts', '--ipam-driver', 'calico-ts', 'net1');
      const ipam = JSON.parse(await docker('network', 'inspect', '-f', '{{json .IPAM.Config}}', 'net1')) as { Subnet: string; Gateway: string }[];
      // 0.0.0.0/0: the default pool (Docker would otherwise loop, finding our routes overlapping it).
      assert.deepEqual(ipam, [{ Subnet: '0.0.0.0/0', Gateway: '169.254.1.1' }]);
      // The node learns the name asynchronously and creates the network's profile.
      await waitFor(async () => Object.keys(await dump()).some((k) => k.endsWith('/profiles/net1')), 10_000, 'profile net1');
    });

    it('two containers on net1 reach each other, and their host', async () => {
      await docker('run', '-d', '--net', 'net1', '--name', 'c1', '--label', 'org.projectcalico.label.role=db', '--label', 'other=x', 'local/busybox', 'sleep', '600');
      await docker('run', '-d', '--net', 'net1', '--name', 'c2', 'local/busybox', 'sleep', '600');
      const [ip1, ip2] = [await ipOf('c1'), await ipOf('c2')];
      assert.match(ip1, /^192\.168\./);
      assert.notEqual(ip1, ip2);
      const route = await docker('exec', 'c1', 'ip', 'route');
      assert.match(route, /default via 169\.254\.1\.1 dev eth0/);
      assert.match(await docker('exec', 'c1', 'ip', 'addr', 'show', 'eth0'), new RegExp(`inet ${ip1.replace(/\./g, '\\.')}/32`));
      if (iptables) assert.match((await ns(['iptables', '-S', 'FORWARD'])).stdout, /^-P FORWARD DROP/m);
      await docker('exec', 'c1', 'ping', '-c1', '-W2', ip2);
      await docker('exec', 'c2', 'ping', '-c1', '-W2', ip1);
      await docker('exec', 'c1', 'ping', '-c1', '-W2', HOST_ADDRESS);
      await ns(['ping', '-c1', '-W2', ip1]);
      // A fresh `docker run --rm` reaches c1 on its first ping (proxy_delay=0, routes in place before Join returns).
      await docker('run', '--rm', '--net', 'net1', 'local/busybox', 'ping', '-c1', '-W2', ip1);
    });

    it('a second network on the default pool can be created while containers (and their routes) exist', async () => {
      await docker('network', 'create', '--driver', 'calico-ts', '--ipam-driver', 'calico-ts', 'net3');
      await docker('network', 'rm', 'net3');
    });

    it("the endpoint gets the container's org.projectcalico.label.* labels and the network's profile", async () => {
      const id = await docker('inspect', '-f', '{{.Id}}', 'c1');
      await waitFor(async () => {
        const wep = Object.values(await dump()).find((v) => (v as { containerId?: string }).containerId === id) as { labels: Record<string, string>; profiles: string[] } | undefined;
        return wep && JSON.stringify(wep.labels) === '{"role":"db"}' && JSON.stringify(wep.profiles) === '["net1"]';
      }, 10_000, 'c1 endpoint labels');
    });

    it('docker rm frees the address and removes the veth and the route', async () => {
      const ip2 = await ipOf('c2');
      const links = (await ns(['ip', '-o', 'link', 'show'])).stdout;
      const cali = [...links.matchAll(/\d+: (cali[0-9a-f]{11})[@:]/g)].map((m) => m[1]);
      assert.equal(cali.length, 2, links);
      await docker('rm', '-f', 'c2');
      await waitFor(async () => !(await ns(['ip', 'route', 'show', `${ip2}/32`])).stdout.trim(), 5_000, 'route gone');
      await waitFor(async () => [...(await ns(['ip', '-o', 'link', 'show'])).stdout.matchAll(/\d+: (cali[0-9a-f]{11})[@:]/g)].length === 1, 5_000, 'veth of c2 gone');
      const blocks = Object.entries(await dump()).filter(([k]) => k.includes('/ipam/blocks/'));
      const used = blocks.flatMap(([, v]) => (v as { allocations: unknown[] }).allocations.filter(Boolean));
      assert.equal(used.length, 1, 'only c1 holds an address');
    });

    it('docker run --ip assigns the static address on a --subnet network', async () => {
      await docker('network', 'create', '--driver', 'calico-ts', '--ipam-driver', 'calico-ts', '--subnet', '192.168.200.0/24', 'net2');
      await docker('run', '-d', '--net', 'net2', '--ip', '192.168.200.10', '--name', 'fixed', 'local/busybox', 'sleep', '600');
      assert.equal(await ipOf('fixed'), '192.168.200.10');
      await ns(['ping', '-c1', '-W2', '192.168.200.10']);
      await assert.rejects(
        docker('run', '--rm', '--net', 'net2', '--ip', '192.168.200.10', 'local/busybox', 'true'),
        /already in use/,
      );
      await docker('rm', '-f', 'fixed');
    });

    it('20 containers started in parallel get 20 distinct addresses and all reach each other', async () => {
      const names = Array.from({ length: 20 }, (_, i) => `p${i}`);
      await Promise.all(names.map((n) => docker('run', '-d', '--net', 'net1', '--name', n, 'local/busybox', 'sleep', '600')));
      const ips = await Promise.all(names.map(ipOf));
      assert.equal(new Set(ips).size, 20, ips.join(' '));
      for (const n of names) {
        const script = `for ip in ${ips.join(' ')}; do ping -c1 -W1 $ip >/dev/null || echo FAIL $ip; done`;
        const out = await docker('exec', n, 'sh', '-c', script);
        assert.equal(out, '', `${n}: ${out}`);
      }
      await docker('rm', '-f', ...names);
    });

    it('bad requests get {"Err"} and leave etcd unchanged', async () => {
      const before = JSON.stringify(await dump());
      const cases: [string, string, RegExp][] = [
        ['/NetworkDriver.CreateNetwork', '{"NetworkID": ', /not valid JSON/],
        ['/NetworkDriver.CreateEndpoint', JSON.stringify({ NetworkID: 'f'.repeat(64), EndpointID: 'e'.repeat(64), Interface: { Address: '192.168.0.9/32' } }), /network "f+" does not exist/],
        ['/NetworkDriver.Join', JSON.stringify({ NetworkID: 'f'.repeat(64), EndpointID: 'e'.repeat(64), SandboxKey: '/x' }), /endpoint "e+" does not exist/],
        ['/IpamDriver.RequestPool', JSON.stringify({ Pool: '192.168.0.0/33' }), /prefix length/],
        ['/IpamDriver.RequestPool', JSON.stringify({ Pool: '10.9.0.0/24' }), /no calico-ts IP pool contains 10\.9\.0\.0\/24/],
        ['/NetworkDriver.CreateNetwork', JSON.stringify({ NetworkID: '$(reboot)', IPv4Data: [{ Pool: '192.168.0.0/16' }] }), /not a valid ID/],
      ];
      for (const [path, body, message] of cases) {
        const r = await pluginCall(node.socketPath, path, body);
        assert.equal(r.status, 500, path);
        assert.match(String(r.json.Err), message);
      }
      // And through Docker, the message reaches the user verbatim.
      await assert.rejects(
        docker('network', 'create', '--driver', 'calico-ts', '--ipam-driver', 'calico-ts', '--subnet', '10.9.0.0/24', 'bad'),
        /no calico-ts IP pool contains 10\.9\.0\.0\/24; create one with calico-ts apply/,
      );
      assert.equal(JSON.stringify(await dump()), before);
    });

    it('a killed node restarts into the right state: missing routes restored, stray veths removed', async () => {
      const ip1 = await ipOf('c1');
      await node.kill();
      await ns(['ip', 'route', 'del', `${ip1}/32`]);
      await ns(['ip', 'link', 'add', 'cali0000000dead', 'type', 'veth', 'peer', 'name', 'tmp0000000dead']);
      await node.restart();
      await waitFor(async () => (await ns(['ip', 'route', 'show', `${ip1}/32`])).stdout.includes('cali'), 5_000, 'route restored');
      await waitFor(async () => !(await ns(['ip', 'link', 'show'])).stdout.includes('cali0000000dead'), 5_000, 'stray veth removed');
      await docker('run', '--rm', '--net', 'net1', 'local/busybox', 'ping', '-c1', '-W2', ip1);
    });

    it('garbage-collects endpoints and addresses Docker no longer knows (e.g. cleaned while the node was down)', async () => {
      const netId = await docker('network', 'inspect', '-f', '{{.Id}}', 'net1');
      const ghost = 'dead0000beef'.padEnd(64, '1');
      const call = async (path: string, body: unknown) => {
        const r = await pluginCall(node.socketPath, path, JSON.stringify(body));
        assert.equal(r.status, 200, `${path}: ${JSON.stringify(r.json)}`);
        return r.json;
      };
      // An endpoint Docker started but then forgot, and an address it requested but never used.
      const a = String((await call('/IpamDriver.RequestAddress', { PoolID: '192.168.0.0/16', Address: '', Options: {} })).Address);
      await call('/NetworkDriver.CreateEndpoint', { NetworkID: netId, EndpointID: ghost, Interface: { Address: a } });
      await call('/NetworkDriver.Join', { NetworkID: netId, EndpointID: ghost, SandboxKey: '/x', Options: {} });
      const b = String((await call('/IpamDriver.RequestAddress', { PoolID: '192.168.0.0/16', Address: '', Options: {} })).Address);
      assert.match((await ns(['ip', 'link', 'show'])).stdout, /calidead0000bee/);
      const inUse = async () => JSON.stringify(await dump());
      await waitFor(async () => !(await ns(['ip', 'link', 'show'])).stdout.includes('calidead0000bee'), 15_000, 'ghost veth collected');
      await waitFor(async () => !(await inUse()).includes(ghost), 15_000, 'ghost endpoint and handle collected');
      // The never-bound address has its own, longer grace: still held, then released.
      assert.ok((await inUse()).includes('unbound:'), `address ${b} still reserved within its grace`);
      await waitFor(async () => !(await inUse()).includes('unbound:'), 20_000, `unbound address ${b} collected`);
      assert.ok(a !== b);
      // c1, which Docker still knows, is untouched.
      await docker('run', '--rm', '--net', 'net1', 'local/busybox', 'ping', '-c1', '-W2', await ipOf('c1'));
    });

    it('removing the containers and networks leaves nothing in etcd but the pool and the node', async () => {
      await docker('rm', '-f', 'c1');
      await docker('network', 'rm', 'net1', 'net2');
      // Empty blocks go back to the pool after the GC grace (3 s here).
      const kinds = async () => [...new Set(Object.keys(await dump()).map((k) => k.replace(/^\/calico-ts\/v1\//, '').split('/')[0]))].sort().join(',');
      await waitFor(async () => (await kinds()) === 'ippools,nodes', 15_000, 'only pools and nodes left in etcd').catch(async (err: Error) => {
        throw new Error(`${err.message}; left: ${JSON.stringify(await dump()).slice(0, 3000)}`);
      });
      const links = (await ns(['ip', '-o', 'link', 'show'])).stdout;
      assert.doesNotMatch(links, /cali[0-9a-f]/);
      // Blackholes of released blocks go with the next reconcile (debounced).
      await waitFor(async () => (await ns(['ip', 'route', 'show', 'proto', '80'])).stdout.replace(/.*169\.254\.1\.1.*\n?/, '').trim() === '', 5_000, 'no routes of ours left');
    });
  });
}
