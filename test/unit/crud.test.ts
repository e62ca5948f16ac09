import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { deleteByName, getResources, parseResourceText, writeResources } from '../../plugin/cli/crud.js';
import { MemoryDatastore } from '../../plugin/datastore/memory.js';
import { keys } from '../../plugin/datastore/model.js';
import { AlreadyExistsError, NotFoundError, ValidationError } from '../../plugin/lib/errors.js';

const pool = (name: string, cidr: string, extra = '') => `apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {name: ${name}}
spec:
  cidr: ${cidr}
${extra}`;

async function snapshot(store: MemoryDatastore) {
  return JSON.stringify((await store.list(keys.root)).items.map((i) => [i.key.path, i.value]));
}

describe('resource CLI verbs', () => {
  it('apply creates then updates; get prints table, wide, yaml and json', async () => {
    const store = new MemoryDatastore();
    const docs = parseResourceText(`${pool('p1', '10.10.0.0/16')}---\n${pool('p2', '10.20.0.0/16', '  blockSize: 28\n  natOutgoing: true')}`, 'pools.yaml');
    assert.equal(await writeResources(store, 'apply', docs), "Successfully applied 2 'IPPool' resource(s)");
    await writeResources(store, 'apply', parseResourceText(pool('p1', '10.10.0.0/16', '  disabled: true'), 'f'));
    assert.equal((await store.get(keys.pool('p1')))?.value.disabled, true);
    const table = await getResources(store, 'ippools', [], 'table');
    assert.match(table, /^NAME\s+CIDR\s+SELECTOR\np1\s+10\.10\.0\.0\/16\s+all\(\)\np2/);
    assert.match(await getResources(store, 'ippool', ['p2'], 'wide'), /p2\s+10\.20\.0\.0\/16\s+true\s+Never\s+Never\s+false\s+28/);
    assert.match(await getResources(store, 'pools', ['p2'], 'yaml'), /kind: IPPool\nmetadata:\n {2}name: p2/);
    const list = JSON.parse(await getResources(store, 'ippools', [], 'json')) as { kind: string; items: unknown[] };
    assert.equal(list.kind, 'IPPoolList');
    assert.equal(list.items.length, 2);
  });

  it('create fails if present, replace if absent, delete of a missing one says so', async () => {
    const store = new MemoryDatastore();
    const docs = parseResourceText(pool('p1', '10.10.0.0/16'), 'f');
    await assert.rejects(writeResources(store, 'replace', docs), NotFoundError);
    await writeResources(store, 'create', docs);
    await assert.rejects(writeResources(store, 'create', docs), AlreadyExistsError);
    assert.equal(await deleteByName(store, 'ippool', ['p1']), "Successfully deleted 1 'IPPool' resource(s)");
    await assert.rejects(deleteByName(store, 'ippool', ['p1']), /IPPool "p1" does not exist/);
  });

  it('one invalid document writes nothing, with a field-level message', async () => {
    const store = new MemoryDatastore();
    const before = await snapshot(store);
    const cases: [string, RegExp][] = [
      [`${pool('ok', '10.1.0.0/16')}---\n${pool('bad', '10.2.0.0/16', '  ipipMode: Sometimes')}`, /f\[1\]\.spec\.ipipMode: must be one of Never, Always, CrossSubnet/],
      [pool('bad', '10.2.0.0/33'), /spec\.cidr/],
      [pool('bad', '10.2.0.0/16', '  blockSize: 8'), /spec\.blockSize: must be an integer from 20 to 32/],
      [pool('bad', '10.2.0.0/16', '  nodeSelector: "a == "'), /spec\.nodeSelector/],
      [pool('bad', '10.2.0.0/16', '  colour: blue'), /spec\.colour: unknown field/],
      [pool('x; rm -rf /', '10.2.0.0/16'), /metadata\.name/],
      ['kind: [unclosed', /not valid YAML or JSON/],
      ['apiVersion: v1\nkind: IPPool\nmetadata: {name: a}\nspec: {cidr: 10.0.0.0/8}', /apiVersion: must be projectcalico\.org\/v3; calico v1 documents/],
      ['apiVersion: projectcalico.org/v3\nkind: Gadget\nmetadata: {name: a}', /kind: "Gadget" is not a supported kind/],
      ['apiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata: {name: a}\nspec: {peerIP: 10.0.0.1}', /spec\.asNumber: is required with peerIP/],
      ['apiVersion: projectcalico.org/v3\nkind: BGPConfiguration\nmetadata: {name: other}\nspec: {}', /only the cluster-wide BGPConfiguration named "default"/],
      ['apiVersion: projectcalico.org/v3\nkind: Node\nmetadata: {name: ghost}\nspec: {}', /not registered/],
    ];
    for (const [text, message] of cases) {
      await assert.rejects(async () => writeResources(store, 'apply', parseResourceText(text, 'f')), (err: unknown) => {
        assert.ok(err instanceof ValidationError, String(err));
        assert.match(err.message, message);
        return true;
      });
      assert.equal(await snapshot(store), before, text);
    }
  });

  it('accepts JSON, a List, BGP resources and node labels', async () => {
    const store = new MemoryDatastore();
    await store.put(keys.node('n1'), { name: 'n1', ipv4Address: '10.0.0.11/24', asNumber: null, routeReflectorClusterId: null, labels: {}, startedAt: 1 });
    const json = JSON.stringify({
      kind: 'List',
      items: [
        { apiVersion: 'projectcalico.org/v3', kind: 'BGPConfiguration', metadata: { name: 'default' }, spec: { nodeToNodeMeshEnabled: false, asNumber: 64513 } },
        { apiVersion: 'projectcalico.org/v3', kind: 'BGPPeer', metadata: { name: 'to-rr' }, spec: { nodeSelector: 'all()', peerSelector: "route-reflector == 'true'" } },
        { apiVersion: 'projectcalico.org/v3', kind: 'Node', metadata: { name: 'n1', labels: { 'route-reflector': 'true' } }, spec: { bgp: { routeReflectorClusterID: '224.0.0.1' } } },
      ],
    });
    assert.match(await writeResources(store, 'apply', parseResourceText(json, 'list.json')), /1 'BGPConfiguration'.*\n.*1 'BGPPeer'.*\n.*1 'Node'/);
    assert.equal((await store.get(keys.bgpPeer('to-rr')))?.value.peerSelector, 'route-reflector == "true"');
    const node = (await store.get(keys.node('n1')))?.value;
    assert.equal(node?.routeReflectorClusterId, '224.0.0.1');
    assert.deepEqual(node?.labels, { 'route-reflector': 'true' });
    assert.equal(node?.ipv4Address, '10.0.0.11/24', 'fields the user did not give are kept');
    assert.match(await getResources(store, 'nodes', [], 'wide'), /n1\s+\(64512\)\s+10\.0\.0\.11\/24\s+224\.0\.0\.1\s+route-reflector=true/);
    await assert.rejects(deleteByName(store, 'node', ['n1']), /cannot be deleted/);
  });

  it('a node shows its VXLAN tunnel, and get -o yaml | apply round-trips without touching it', async () => {
    const store = new MemoryDatastore();
    const rec = { name: 'n1', ipv4Address: '10.0.0.11/24', asNumber: null, routeReflectorClusterId: null, labels: {}, startedAt: 1, ipv4VXLANTunnelAddr: '192.168.3.0', vxlanTunnelMACAddr: '66:01:02:03:04:05' };
    await store.put(keys.node('n1'), rec);
    const yaml = await getResources(store, 'node', ['n1'], 'yaml');
    assert.match(yaml, /ipv4VXLANTunnelAddr: 192\.168\.3\.0/);
    assert.match(yaml, /vxlanTunnelMACAddr: 66:01:02:03:04:05/);
    await writeResources(store, 'apply', parseResourceText(yaml.replace('ipv4VXLANTunnelAddr: 192.168.3.0', 'ipv4VXLANTunnelAddr: 10.9.9.9'), 'n.yaml'));
    assert.equal((await store.get(keys.node('n1')))?.value.ipv4VXLANTunnelAddr, '192.168.3.0', 'the node owns its tunnel fields');
  });
});
