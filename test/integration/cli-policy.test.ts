import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { after, before, describe, it } from 'node:test';
import { parse as parseYaml } from 'yaml';
import { EtcdDatastore } from '../../plugin/datastore/etcd.js';
import { keys, type WorkloadEndpoint } from '../../plugin/datastore/model.js';
import { CLI } from '../helpers/calico-node.js';
import { startEtcd, type EtcdHandle } from '../helpers/etcd.js';

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs the real CLI binary, with optional standard input. */
function run(args: string[], env: Record<string, string>, input?: string): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CLI, ...args], { env: { PATH: process.env.PATH ?? '', ...env }, stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr }));
    child.stdin.end(input ?? '');
  });
}

const DB_FROM_WEB = `apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: db-from-web}
spec:
  order: 100
  selector: role == 'db'
  types: [Ingress]
  ingress:
  - action: Allow
    protocol: TCP
    source: {selector: role == 'web'}
    destination: {ports: [5432]}
`;

describe('calico-ts policy CLI against a real etcd', () => {
  let etcd: EtcdHandle;
  const cli = (args: string[], input?: string) => run(args, { ETCD_ENDPOINTS: etcd.endpoint }, input);
  before(async () => {
    etcd = await startEtcd();
  });
  after(async () => {
    await etcd?.stop();
  });

  it('apply -f -, get (table, wide, yaml) and delete a GlobalNetworkPolicy', async () => {
    const applied = await cli(['apply', '-f', '-'], DB_FROM_WEB);
    assert.equal(applied.stderr, '');
    assert.equal(applied.code, 0);
    assert.equal(applied.stdout, "Successfully applied 1 'GlobalNetworkPolicy' resource(s)\n");

    const table = await cli(['get', 'globalnetworkpolicies']);
    assert.equal(table.code, 0);
    assert.equal(table.stdout, 'NAME          ORDER   SELECTOR\ndb-from-web   100     role == "db"\n');
    const wide = await cli(['get', 'gnp', '-o', 'wide']);
    assert.match(wide.stdout, /^NAME\s+ORDER\s+SELECTOR\s+TYPES\ndb-from-web\s+100\s+role == "db"\s+Ingress\n$/);
    const yaml = await cli(['get', 'globalnetworkpolicy', 'db-from-web', '-o', 'yaml']);
    assert.deepEqual(parseYaml(yaml.stdout), {
      apiVersion: 'projectcalico.org/v3',
      kind: 'GlobalNetworkPolicy',
      metadata: { name: 'db-from-web' },
      spec: {
        order: 100,
        selector: 'role == "db"',
        types: ['Ingress'],
        ingress: [{ action: 'Allow', protocol: 'TCP', source: { selector: 'role == "web"' }, destination: { ports: [5432] } }],
        egress: [],
      },
    });

    // create of an existing one fails; an invalid document changes nothing.
    const again = await cli(['create', '-f', '-'], DB_FROM_WEB);
    assert.equal(again.code, 1);
    assert.match(again.stderr, /^error: GlobalNetworkPolicy "db-from-web" already exists/);
    const bad = await cli(['apply', '-f', '-'], `${DB_FROM_WEB.replace('order: 100', 'order: 1')}---\n${DB_FROM_WEB.replace('db-from-web', 'other').replace('TCP', 'HTTP')}`);
    assert.equal(bad.code, 1);
    assert.equal(bad.stdout, '');
    assert.equal(bad.stderr, 'error: -[1].spec.ingress[0].protocol: must be TCP, UDP, ICMP, ICMPv6, SCTP, UDPLite or a number 1-255\n');
    assert.equal((await cli(['get', 'gnp'])).stdout, table.stdout, 'nothing written');

    const deleted = await cli(['delete', 'globalnetworkpolicy', 'db-from-web']);
    assert.equal(deleted.code, 0);
    assert.equal(deleted.stdout, "Successfully deleted 1 'GlobalNetworkPolicy' resource(s)\n");
    const missing = await cli(['delete', 'gnp', 'db-from-web']);
    assert.equal(missing.code, 1);
    assert.equal(missing.stderr, 'error: GlobalNetworkPolicy "db-from-web" does not exist\n');
    assert.equal((await cli(['get', 'gnp'])).stdout, 'NAME   ORDER   SELECTOR\n');
  });

  it('converts a Calico v1 profile and lists workload endpoints by selector', async () => {
    const v1 = `apiVersion: v1
kind: profile
metadata:
  name: net1
  labels: {calico-ts/network: net1}
spec:
  ingress:
  - action: allow
    source: {selector: "calico-ts/network == 'net1'"}
  egress:
  - action: allow
`;
    const applied = await cli(['apply', '-f', '-'], v1);
    assert.equal(applied.code, 0, applied.stderr);
    assert.equal(applied.stdout, `Note: -: converted the Calico v1 profile "net1" to a projectcalico.org/v3 Profile\nSuccessfully applied 1 'Profile' resource(s)\n`);
    const profiles = await cli(['get', 'profiles']);
    assert.match(profiles.stdout, /^NAME\s+LABELS\nnet1\s+calico-ts\/network=net1\n$/, profiles.stderr);

    const store = new EtcdDatastore({ endpoints: [etcd.endpoint] });
    const ep = (node: string, id: string, labels: Record<string, string>): WorkloadEndpoint => ({
      node,
      endpointId: id,
      networkId: 'n',
      containerId: `${id}cafe`,
      interfaceName: `cali${id.slice(0, 8)}`,
      ipNetworks: [`192.168.${node === 'h1' ? 1 : 2}.5/32`],
      mac: null,
      mtu: 1500,
      labels,
      profiles: ['net1'],
      createdAt: 1,
    });
    await store.put(keys.endpoint('h1', 'e1aaaaaaaaaaaaaa'), ep('h1', 'e1aaaaaaaaaaaaaa', { role: 'db' }));
    await store.put(keys.endpoint('h2', 'e2bbbbbbbbbbbbbb'), ep('h2', 'e2bbbbbbbbbbbbbb', { role: 'web' }));
    await store.close();

    const all = await cli(['get', 'workloadendpoints']);
    assert.match(all.stdout, /^NAME\s+NODE\s+WORKLOAD\s+NETWORKS\s+INTERFACE\s+PROFILES\ne1aaaaaaaaaa\s+h1\s+e1aaaaaaaaaa\s+192\.168\.1\.5\/32\s+calie1aaaaaa\s+net1\ne2bbbbbbbbbb\s+h2/);
    const dbs = await cli(['get', 'workloadendpoints', '--selector', "role == 'db' && calico-ts/network == 'net1'"]);
    assert.equal(dbs.code, 0);
    assert.equal(dbs.stdout.trim().split('\n').length, 2);
    assert.match(dbs.stdout, /\ne1aaaaaaaaaa\s+h1\s/);
    const badSel = await cli(['get', 'wep', '--selector', 'role =']);
    assert.equal(badSel.code, 1);
    assert.match(badSel.stderr, /^error: --selector: .*at position/);
    const refuse = await cli(['delete', 'workloadendpoint', 'e1aaaaaaaaaaaaaa']);
    assert.equal(refuse.code, 1);
    assert.match(refuse.stderr, /WorkloadEndpoint resources are read-only/);
  });
});

describe('calico-ts selector (no datastore)', () => {
  // An unreachable etcd: the command must not need one.
  const sel = (args: string[]) => run(['selector', ...args], { ETCD_ENDPOINTS: 'http://127.0.0.1:1' });

  it('prints the canonical form, then true/false with --labels; exit 0', async () => {
    assert.deepEqual(await sel(["role=='db'"]), { code: 0, stdout: 'role == "db"\n', stderr: '' });
    assert.deepEqual(await sel(["role in {'web','db'}", '--labels', 'role=db,tier=x']), { code: 0, stdout: 'role in {"db", "web"}\ntrue\n', stderr: '' });
    assert.deepEqual(await sel(['has(role)', '--labels', '']), { code: 0, stdout: 'has(role)\nfalse\n', stderr: '' });
    assert.deepEqual(await sel(["a == 'x=y'", '--labels=a=x=y']), { code: 0, stdout: 'a == "x=y"\ntrue\n', stderr: '' });
  });

  it('a selector that does not parse prints the error with its position; exit 1', async () => {
    const r = await sel(["role == 'db' &&"]);
    assert.equal(r.code, 1);
    assert.equal(r.stdout, '');
    assert.match(r.stderr, /^error: selector: .* at position 15: <end of selector>\n {2}role == 'db' &&\n {17}\^\n$/);
    const labels = await sel(['all()', '--labels', 'oops']);
    assert.equal(labels.code, 1);
    assert.match(labels.stderr, /--labels: "oops" is not key=value/);
  });
});
