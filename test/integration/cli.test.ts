import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { after, before, describe, it } from 'node:test';
import { EtcdDatastore } from '../../plugin/datastore/etcd.js';
import { Ipam } from '../../plugin/ipam/ipam.js';
import { CLI } from '../helpers/calico-node.js';
import { startEtcd, type EtcdHandle } from '../helpers/etcd.js';

const execFileP = promisify(execFile);

describe('calico-ts CLI against a real etcd', () => {
  let etcd: EtcdHandle;
  const cli = (args: string[], env: Record<string, string> = {}) =>
    execFileP(process.execPath, [CLI, ...args], { env: { PATH: process.env.PATH ?? '', ETCD_ENDPOINTS: etcd.endpoint, ...env } });
  before(async () => {
    etcd = await startEtcd();
  });
  after(async () => {
    await etcd?.stop();
  });

  it('version prints the package version, the commit and the Node.js version', async () => {
    const out = (await cli(['version'])).stdout;
    assert.match(out, /^calico-ts \d+\.\d+\.\d+\ncommit: +([0-9a-f]{7,40}(-dirty)?|unknown)\nnode: +v\d+\.\d+\.\d+\n$/);
    assert.ok(out.includes(process.version));
  });

  it('node checksystem probes the real kernel and tools: required checks pass here, nothing is left behind', async () => {
    const links = async () => (await execFileP('ip', ['-o', 'link', 'show'])).stdout;
    const { stdout } = await cli(['node', 'checksystem'], { DOCKER_HOST: 'unix:///nonexistent/docker.sock' });
    for (const name of ['iproute2', 'veth', 'ipset', 'iptables', 'bird', 'etcd']) assert.match(stdout, new RegExp(`^  PASS  ${name} `, 'm'), stdout);
    assert.match(stdout, /^  (PASS|WARN)  vxlan /m);
    assert.match(stdout, /^  (PASS|WARN)  ipip /m, 'ipip is optional (this kernel has none)');
    assert.match(stdout, /^  PASS  iptables +iptables \d[\d.]*, backend (nft|legacy)/m);
    assert.match(stdout, /^  WARN  docker +optional: Docker API not reachable on \/nonexistent\/docker\.sock/m);
    assert.match(stdout, /^All required checks passed/m);
    // Probes ran in throwaway namespaces: no chk* device in ours.
    assert.doesNotMatch(await links(), /: chk/);
  });

  it('node checksystem exits 1 and names what is missing when a required piece fails; BIRD not needed without BGP', async () => {
    await assert.rejects(
      cli(['node', 'checksystem'], { ETCD_ENDPOINTS: 'http://127.0.0.1:1', CALICO_NETWORKING_BACKEND: 'none' }),
      (err: { code: number; stdout: string }) => {
        assert.equal(err.code, 1);
        assert.match(err.stdout, /^  FAIL  etcd +.*127\.0\.0\.1:1/m);
        assert.match(err.stdout, /^  PASS  bird +not needed \(CALICO_NETWORKING_BACKEND=none\)/m);
        assert.match(err.stdout, /^1 required check\(s\) failed: etcd\./m);
        return true;
      },
    );
  });

  it('ipam show lists pools, blocks per host and addresses with owners', async () => {
    const store = new EtcdDatastore({ endpoints: [etcd.endpoint] });
    const ipam = new Ipam(store, { node: 'host-x' });
    await ipam.ensureDefaultPool();
    const ip = await ipam.autoAssign('192.168.0.0/16');
    await ipam.bind(ip, 'feedface0123456789');
    await store.close();
    const out = (await cli(['ipam', 'show'])).stdout;
    assert.match(out, /default-ipv4-ippool\s+192\.168\.0\.0\/16\s+26\s+false/);
    assert.match(out, /host-x\s+192\.168\.\d+\.\d+\/26\s+1\/64/);
    assert.match(out, new RegExp(`${ip.replace(/\./g, '\\.')}\\s+host-x\\s+\\S+\\s+endpoint feedface0123`));
  });

  it('node status says clearly when the node is not running', async () => {
    await assert.rejects(cli(['node', 'status'], { CALICO_TS_RUN_DIR: '/nonexistent/calico-ts' }), (err: { code: number; stderr: string }) => {
      assert.equal(err.code, 1);
      assert.match(err.stderr, /^error: Calico-ts process is not running/);
      return true;
    });
  });

  it('node status says clearly when the node runs but BIRD does not answer', async () => {
    const runDir = mkdtempSync(join(tmpdir(), 'calico-ts-status-'));
    try {
      // A live pid (this test's) stands in for the node; no BIRD control socket exists.
      writeFileSync(join(runDir, 'status.json'), JSON.stringify({ pid: process.pid }));
      writeFileSync(join(runDir, 'bgp-sessions.json'), JSON.stringify([{ protocolName: 'Mesh_10_0_0_2', peerIP: '10.0.0.2', asNumber: 64512, type: 'node-to-node mesh', routeReflectorClient: false, passive: false }]));
      await assert.rejects(cli(['node', 'status'], { CALICO_TS_RUN_DIR: runDir }), (err: { code: number; stderr: string }) => {
        assert.equal(err.code, 1);
        assert.match(err.stderr, /^error: BIRD is not running or not answering on .*bird\.ctl/);
        return true;
      });
      // Without BGP sessions (no IP, or CALICO_NETWORKING_BACKEND=none) it says BGP is off.
      rmSync(join(runDir, 'bgp-sessions.json'));
      assert.match((await cli(['node', 'status'], { CALICO_TS_RUN_DIR: runDir })).stdout, /^Calico-ts process is running\.\n\nBGP is not running on this node/);
    } finally {
      rmSync(runDir, { recursive: true, force: true });
    }
  });

  it('get nodes -o wide lists registered nodes', async () => {
    const out = (await cli(['get', 'nodes', '-o', 'wide'])).stdout;
    assert.match(out, /^NAME\s+ASN\s+IPV4\s+RRCLUSTERID\s+LABELS\n/);
  });

  it('errors are one clear line and exit 1', async () => {
    await assert.rejects(cli(['ipam', 'show'], { ETCD_ENDPOINTS: 'not a url' }), (err: { code: number; stderr: string }) => {
      assert.equal(err.code, 1);
      assert.match(err.stderr, /^error: ETCD_ENDPOINTS: "not a url" is not a URL/);
      return true;
    });
    await assert.rejects(cli(['no-such-verb']), (err: { code: number }) => err.code === 1);
  });
});
