import assert from 'node:assert/strict';
import { beforeEach, describe, it } from 'node:test';
import sinon from 'sinon';
import request from 'supertest';
import { IpamDriver } from '../../plugin/api/ipam-driver.js';
import { NetworkDriver } from '../../plugin/api/network-driver.js';
import { createApp } from '../../plugin/api/server.js';
import { MemoryDatastore } from '../../plugin/datastore/memory.js';
import { keys } from '../../plugin/datastore/model.js';
import type { Dataplane } from '../../plugin/dataplane/types.js';
import { DEFAULT_IPV4_POOL, Ipam } from '../../plugin/ipam/ipam.js';
import { silentLogger } from '../../plugin/lib/log.js';

const NET = 'a'.repeat(64);
const EP = 'b1c2d3e4f5a6'.padEnd(64, '0');

function fakeDataplane() {
  return {
    ensureBase: sinon.stub().resolves(),
    ensureEndpoint: sinon.stub().resolves(),
    removeEndpoint: sinon.stub().resolves(),
    reconcile: sinon.stub().resolves({ changes: [] }),
  } satisfies Dataplane;
}

async function setup() {
  const store = new MemoryDatastore();
  await store.put(keys.pool(DEFAULT_IPV4_POOL.name), DEFAULT_IPV4_POOL);
  const ipam = new Ipam(store, { node: 'n1' });
  const dataplane = fakeDataplane();
  const created: string[] = [];
  const network = new NetworkDriver({
    store,
    ipam,
    dataplane,
    node: 'n1',
    log: silentLogger,
    defaultMtu: 0,
    onNetworkCreated: (id) => created.push(id),
  });
  const app = createApp({ network, ipam: new IpamDriver(ipam), log: silentLogger });
  const post = (path: string, body: unknown) => request(app).post(path).set('Content-Type', 'application/vnd.docker.plugins.v1.2+json').send(JSON.stringify(body));
  /** Full snapshot of the store, to prove failed calls change nothing. */
  const snapshot = async () => JSON.stringify((await store.list(keys.root)).items.map((i) => [i.key.path, i.value]));
  return { store, ipam, dataplane, app, post, snapshot, created };
}

async function createNetwork(post: Awaited<ReturnType<typeof setup>>['post'], pool = '') {
  const p = await post('/IpamDriver.RequestPool', { AddressSpace: 'CalicoLocalAddressSpace', Pool: pool, Options: {}, V6: false });
  assert.equal(p.status, 200, JSON.stringify(p.body));
  const gw = await post('/IpamDriver.RequestAddress', { PoolID: p.body.PoolID, Address: '', Options: { RequestAddressType: 'com.docker.network.gateway' } });
  assert.equal(gw.status, 200);
  const n = await post('/NetworkDriver.CreateNetwork', {
    NetworkID: NET,
    Options: { 'com.docker.network.enable_ipv4': true, 'com.docker.network.enable_ipv6': false, 'com.docker.network.generic': { 'com.docker.network.driver.mtu': '1400', 'some.unknown': 'x' } },
    IPv4Data: [{ AddressSpace: 'CalicoLocalAddressSpace', Pool: p.body.Pool, Gateway: gw.body.Address, AuxAddresses: null }],
    IPv6Data: [],
  });
  assert.equal(n.status, 200, JSON.stringify(n.body));
  return p.body.PoolID as string;
}

describe('plugin API', () => {
  let t: Awaited<ReturnType<typeof setup>>;
  beforeEach(async () => {
    t = await setup();
  });

  it('activates both interfaces and reports capabilities', async () => {
    assert.deepEqual((await t.post('/Plugin.Activate', {})).body, { Implements: ['NetworkDriver', 'IpamDriver'] });
    assert.deepEqual((await t.post('/NetworkDriver.GetCapabilities', {})).body, { Scope: 'local', ConnectivityScope: 'global' });
    assert.equal((await t.post('/IpamDriver.GetDefaultAddressSpaces', {})).status, 200);
    assert.equal((await t.post('/IpamDriver.GetCapabilities', {})).body.RequiresMACAddress, false);
    const r = await request(t.app).post('/Plugin.Activate');
    assert.equal(r.status, 200, 'empty body is accepted');
  });

  it('runs the whole container lifecycle in Docker call order', async () => {
    const poolId = await createNetwork(t.post);
    assert.equal(poolId, '192.168.0.0/16');
    // Docker is told 0.0.0.0/0 for the default pool, so it does not loop on our own routes overlapping it.
    const again = await t.post('/IpamDriver.RequestPool', { AddressSpace: 'CalicoLocalAddressSpace', Pool: '', Options: {}, V6: false });
    assert.deepEqual(again.body, { PoolID: '192.168.0.0/16', Pool: '0.0.0.0/0', Data: {} });
    assert.equal((await t.store.get(keys.network(NET)))?.value.ipv4Pool, null);
    assert.deepEqual(t.created, [NET]);
    const addr = await t.post('/IpamDriver.RequestAddress', { PoolID: poolId, Address: '', Options: {} });
    assert.match(addr.body.Address, /^192\.168\.\d+\.\d+\/32$/);
    const ip = addr.body.Address.split('/')[0];
    const ce = await t.post('/NetworkDriver.CreateEndpoint', { NetworkID: NET, EndpointID: EP, Interface: { Address: addr.body.Address, MacAddress: '' }, Options: {} });
    assert.equal(ce.status, 200, JSON.stringify(ce.body));
    const wep = await t.store.get(keys.endpoint('n1', EP));
    assert.equal(wep?.value.interfaceName, 'calib1c2d3e4f5a');
    assert.equal(wep?.value.mtu, 1400);
    assert.deepEqual(wep?.value.ipNetworks, [`${ip}/32`]);
    assert.deepEqual((await t.store.get(keys.handle(EP)))?.value.addresses, [ip]);
    const join = await t.post('/NetworkDriver.Join', { NetworkID: NET, EndpointID: EP, SandboxKey: '/var/run/docker/netns/x', Options: {} });
    assert.deepEqual(join.body, {
      InterfaceName: { SrcName: 'tmpb1c2d3e4f5a', DstPrefix: 'eth' },
      Gateway: '169.254.1.1',
      StaticRoutes: [{ Destination: '169.254.1.1/32', RouteType: 1, NextHop: '' }],
      DisableGatewayService: true,
    });
    sinon.assert.calledWithMatch(t.dataplane.ensureEndpoint, { interfaceName: 'calib1c2d3e4f5a', peerName: 'tmpb1c2d3e4f5a', ipNetworks: [`${ip}/32`], mtu: 1400 });
    // Twice: idempotent.
    assert.equal((await t.post('/NetworkDriver.Join', { NetworkID: NET, EndpointID: EP, SandboxKey: 'x', Options: {} })).status, 200);
    assert.equal((await t.post('/NetworkDriver.ProgramExternalConnectivity', { NetworkID: NET, EndpointID: EP, Options: {} })).status, 200);
    assert.equal((await t.post('/NetworkDriver.EndpointOperInfo', { NetworkID: NET, EndpointID: EP })).body.Value.hostVeth, 'calib1c2d3e4f5a');
    for (const path of ['/NetworkDriver.RevokeExternalConnectivity', '/NetworkDriver.Leave', '/NetworkDriver.DeleteEndpoint', '/NetworkDriver.DeleteEndpoint']) {
      assert.equal((await t.post(path, { NetworkID: NET, EndpointID: EP })).status, 200, path);
    }
    sinon.assert.calledWith(t.dataplane.removeEndpoint, 'calib1c2d3e4f5a');
    for (let i = 0; i < 2; i++) assert.equal((await t.post('/IpamDriver.ReleaseAddress', { PoolID: poolId, Address: ip })).status, 200);
    assert.equal((await t.post('/IpamDriver.ReleaseAddress', { PoolID: poolId, Address: '169.254.1.1' })).status, 200);
    for (let i = 0; i < 2; i++) assert.equal((await t.post('/NetworkDriver.DeleteNetwork', { NetworkID: NET })).status, 200);
    assert.equal((await t.post('/IpamDriver.ReleasePool', { PoolID: poolId })).status, 200);
    // The emptied block stays with the host until the node's GC returns it to the pool.
    assert.equal((await t.ipam.releaseEmptyBlocks(0)).length, 1);
    const left = (await t.store.list(keys.root)).items.map((i) => i.key.path);
    assert.deepEqual(left, [keys.pool(DEFAULT_IPV4_POOL.name).path], 'only the pool remains');
  });

  it('static --ip and --subnet inside a pool work', async () => {
    const poolId = await createNetwork(t.post, '192.168.50.0/24');
    assert.equal(poolId, '192.168.50.0/24');
    const r = await t.post('/IpamDriver.RequestAddress', { PoolID: poolId, Address: '192.168.50.7', Options: {} });
    assert.equal(r.body.Address, '192.168.50.7/32');
    const again = await t.post('/IpamDriver.RequestAddress', { PoolID: poolId, Address: '192.168.50.7', Options: {} });
    assert.equal(again.status, 500);
    assert.match(again.body.Err, /already in use/);
  });

  it('IPv6: a dual-stack and a v6-only network get /128s and the link-local gateway', async () => {
    await t.store.put(keys.pool('v6'), { ...DEFAULT_IPV4_POOL, name: 'v6', cidr: 'fd00:1::/48', blockSize: 122 });
    const pool6 = await t.post('/IpamDriver.RequestPool', { Pool: '', Options: {}, V6: true });
    assert.deepEqual(pool6.body, { PoolID: 'fd00:1::/48', Pool: '::/0', Data: {} });
    const gw6 = await t.post('/IpamDriver.RequestAddress', { PoolID: 'fd00:1::/48', Address: '', Options: { RequestAddressType: 'com.docker.network.gateway' } });
    assert.equal(gw6.body.Address, 'fe80::ecee:eeff:feee:eeee/128');
    // v6-only (Docker >= 28 with --ipv4=false): no IPv4Data at all.
    const n = await t.post('/NetworkDriver.CreateNetwork', { NetworkID: NET, IPv4Data: [], IPv6Data: [{ Pool: '::/0', Gateway: gw6.body.Address }] });
    assert.equal(n.status, 200, JSON.stringify(n.body));
    assert.deepEqual([(await t.store.get(keys.network(NET)))?.value.ipv4Pool, (await t.store.get(keys.network(NET)))?.value.ipv6Pool], [null, null]);
    const a6 = await t.post('/IpamDriver.RequestAddress', { PoolID: 'fd00:1::/48', Address: '', Options: {} });
    assert.match(a6.body.Address, /^fd00:1:[0-9a-f:]+\/128$/);
    assert.equal((await t.post('/NetworkDriver.CreateEndpoint', { NetworkID: NET, EndpointID: EP, Interface: { AddressIPv6: a6.body.Address } })).status, 200);
    const join = await t.post('/NetworkDriver.Join', { NetworkID: NET, EndpointID: EP, SandboxKey: 'x', Options: {} });
    assert.deepEqual(join.body, {
      InterfaceName: { SrcName: 'tmpb1c2d3e4f5a', DstPrefix: 'eth' },
      GatewayIPv6: 'fe80::ecee:eeff:feee:eeee',
      StaticRoutes: [{ Destination: 'fe80::ecee:eeff:feee:eeee/128', RouteType: 1, NextHop: '' }],
      DisableGatewayService: true,
    });
    // Dual stack: both addresses bound to the endpoint, both gateways.
    const EP2 = 'c'.repeat(64);
    const a4 = await t.post('/IpamDriver.RequestAddress', { PoolID: '192.168.0.0/16', Address: '', Options: {} });
    const b6 = await t.post('/IpamDriver.RequestAddress', { PoolID: 'fd00:1::/48', Address: 'fd00:1::99', Options: {} });
    assert.equal(b6.body.Address, 'fd00:1::99/128');
    assert.equal((await t.post('/NetworkDriver.CreateEndpoint', { NetworkID: NET, EndpointID: EP2, Interface: { Address: a4.body.Address, AddressIPv6: b6.body.Address } })).status, 200);
    assert.deepEqual((await t.store.get(keys.endpoint('n1', EP2)))?.value.ipNetworks, [a4.body.Address, 'fd00:1::99/128']);
    assert.deepEqual((await t.store.get(keys.handle(EP2)))?.value.addresses, [a4.body.Address.split('/')[0], 'fd00:1::99']);
    const join2 = await t.post('/NetworkDriver.Join', { NetworkID: NET, EndpointID: EP2, SandboxKey: 'x', Options: {} });
    assert.equal(join2.body.Gateway, '169.254.1.1');
    assert.equal(join2.body.GatewayIPv6, 'fe80::ecee:eeff:feee:eeee');
    assert.equal(join2.body.StaticRoutes.length, 2);
    assert.equal((await t.post('/IpamDriver.ReleaseAddress', { PoolID: 'fd00:1::/48', Address: 'fe80::ecee:eeff:feee:eeee' })).status, 200);
  });

  const badRequests: [string, string, unknown, RegExp][] = [
    ['malformed JSON', '/NetworkDriver.CreateNetwork', '{"NetworkID": ', /not valid JSON/],
    ['JSON that is not an object', '/NetworkDriver.CreateNetwork', '[1,2]', /JSON object/],
    ['unknown network', '/NetworkDriver.CreateEndpoint', { NetworkID: 'f'.repeat(64), EndpointID: EP, Interface: { Address: '192.168.0.9/32' } }, /network "f+" does not exist/],
    ['unknown endpoint on Join', '/NetworkDriver.Join', { NetworkID: NET, EndpointID: 'e'.repeat(64), SandboxKey: 'x' }, /endpoint "e+" does not exist/],
    ['unknown endpoint on EndpointOperInfo', '/NetworkDriver.EndpointOperInfo', { NetworkID: NET, EndpointID: 'e'.repeat(64) }, /does not exist/],
    ['ID with shell characters', '/NetworkDriver.CreateNetwork', { NetworkID: 'x; rm -rf /', IPv4Data: [{ Pool: '192.168.0.0/16' }] }, /not a valid ID/],
    ['invalid CIDR', '/IpamDriver.RequestPool', { Pool: '192.168.300.0/24' }, /not an IP address|not a CIDR/],
    ['subnet outside every pool', '/IpamDriver.RequestPool', { Pool: '10.9.0.0/24' }, /no calico-ts IP pool contains 10\.9\.0\.0\/24; create one with calico-ts apply/],
    ['IPv6 pool when none exists', '/IpamDriver.RequestPool', { Pool: '', V6: true }, /no enabled calico-ts IPv6 pool exists; create one/],
    ['IPv4 subnet given as IPv6Data', '/NetworkDriver.CreateNetwork', { NetworkID: NET, IPv6Data: [{ Pool: '192.168.0.0/16' }] }, /is not an IPv6 subnet/],
    ['IPv6 address in Interface.Address', '/NetworkDriver.CreateEndpoint', { NetworkID: NET, EndpointID: EP, Interface: { Address: 'fd00::5/128' } }, /is not an IPv4 address/],
    ['--ip-range', '/IpamDriver.RequestPool', { Pool: '192.168.0.0/16', SubPool: '192.168.1.0/24' }, /--ip-range is not supported/],
    ['--gateway', '/IpamDriver.RequestAddress', { PoolID: '192.168.0.0/16', Address: '192.168.0.1', Options: { RequestAddressType: 'com.docker.network.gateway' } }, /--gateway is not supported/],
    ['--aux-address', '/NetworkDriver.CreateNetwork', { NetworkID: NET, IPv4Data: [{ Pool: '192.168.0.0/16', AuxAddresses: { a: '192.168.0.5' } }] }, /--aux-address is not supported/],
    ['--internal', '/NetworkDriver.CreateNetwork', { NetworkID: NET, Options: { 'com.docker.network.internal': true }, IPv4Data: [{ Pool: '192.168.0.0/16' }] }, /--internal is not supported/],
    ['bad MTU', '/NetworkDriver.CreateNetwork', { NetworkID: NET, Options: { 'com.docker.network.generic': { 'com.docker.network.driver.mtu': 'big' } }, IPv4Data: [{ Pool: '192.168.0.0/16' }] }, /not an MTU/],
    ['pool from another IPAM driver', '/NetworkDriver.CreateNetwork', { NetworkID: NET, IPv4Data: [{ Pool: '172.18.0.0/16' }] }, /--ipam-driver calico-ts/],
    ['address not from calico IPAM', '/NetworkDriver.CreateEndpoint', { NetworkID: NET, EndpointID: EP, Interface: { Address: '192.168.0.200/32' } }, /not assigned by calico-ts/],
  ];
  for (const [what, path, body, message] of badRequests) {
    it(`rejects ${what} with {"Err"} and changes nothing`, async () => {
      await createNetwork(t.post);
      const before = await t.snapshot();
      const r = await request(t.app).post(path).set('Content-Type', 'application/json').send(typeof body === 'string' ? body : JSON.stringify(body));
      assert.equal(r.status, 500);
      assert.match(r.body.Err, message);
      assert.deepEqual(Object.keys(r.body), ['Err']);
      assert.equal(await t.snapshot(), before);
    });
  }

  it('answers 404 for unknown paths', async () => {
    const r = await t.post('/NetworkDriver.Frobnicate', {});
    assert.equal(r.status, 404);
  });
});
