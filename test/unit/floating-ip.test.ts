/**
 * Floating IPs outside the kernel: the Docker label, the `calico-ts floating-ip` verbs (validation and
 * what they store, on the in-memory datastore) and what BIRD is told to announce and accept.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { renderBirdConfig } from '../../plugin/bgp/render.js';
import { DEFAULT_BGP_CONFIG, type BgpInputs } from '../../plugin/bgp/types.js';
import { addFloatingIp, listFloatingIps, removeFloatingIp } from '../../plugin/cli/floating-ip.js';
import { MemoryDatastore } from '../../plugin/datastore/memory.js';
import { keys, type WorkloadEndpoint } from '../../plugin/datastore/model.js';
import { DEFAULT_IPV4_POOL } from '../../plugin/ipam/ipam.js';
import { NotFoundError, ValidationError } from '../../plugin/lib/errors.js';
import { FLOATING_IP_LABEL, floatingIpsFromDocker } from '../../plugin/node/docker-sync.js';

const EP_A = 'aa'.repeat(32);
const EP_B = 'bb'.repeat(32);
const endpoint = (id: string, node: string, ip: string, containerId: string): WorkloadEndpoint => ({
  node,
  endpointId: id,
  networkId: 'n1',
  containerId,
  interfaceName: `cali${id.slice(0, 11)}`,
  ipNetworks: [`${ip}/32`],
  mac: null,
  mtu: 1500,
  labels: {},
  profiles: [],
  createdAt: 0,
});

async function store(): Promise<MemoryDatastore> {
  const s = new MemoryDatastore();
  await s.create(keys.pool(DEFAULT_IPV4_POOL.name), DEFAULT_IPV4_POOL);
  await s.create(keys.pool('floating'), { ...DEFAULT_IPV4_POOL, name: 'floating', cidr: '172.16.9.0/24', disabled: true });
  await s.create(keys.block('172.16.9.0/26'), {
    cidr: '172.16.9.0/26',
    affinity: null,
    allocations: Array.from({ length: 64 }, (_, i) => (i === 5 ? { handle: 'h5', node: 'n1', since: 0 } : null)),
  });
  await s.create(keys.node('n1'), { name: 'n1', ipv4Address: '10.0.0.11/24', asNumber: null, routeReflectorClusterId: null, labels: {}, startedAt: 0 });
  await s.create(keys.endpoint('n1', EP_A), endpoint(EP_A, 'n1', '192.168.0.5', 'c0ffee'.repeat(10)));
  await s.create(keys.endpoint('n2', EP_B), endpoint(EP_B, 'n2', '192.168.1.7', 'beef'.repeat(16)));
  return s;
}
const snapshot = async (s: MemoryDatastore) => JSON.stringify((await s.list(keys.root)).items.map((i) => [i.key.path, i.value]));

describe('floating IP Docker label', () => {
  it('maps each external IP to the container IPv4', () => {
    assert.deepEqual(floatingIpsFromDocker({ [FLOATING_IP_LABEL]: '172.16.9.10, 172.16.9.11' }, ['fd00::5/128', '192.168.0.5/32']), {
      ipNATs: [
        { internalIP: '192.168.0.5', externalIP: '172.16.9.10' },
        { internalIP: '192.168.0.5', externalIP: '172.16.9.11' },
      ],
    });
    assert.deepEqual(floatingIpsFromDocker({ other: 'x' }, ['192.168.0.5/32']), {});
    assert.match(floatingIpsFromDocker({ [FLOATING_IP_LABEL]: '172.16.9.300' }, ['192.168.0.5/32']).problem ?? '', /give IPv4 addresses/);
    assert.match(floatingIpsFromDocker({ [FLOATING_IP_LABEL]: '172.16.9.3' }, ['fd00::5/128']).problem ?? '', /no IPv4 address/);
  });
});

describe('calico-ts floating-ip', () => {
  it('add by endpoint or container ID prefix, list, remove', async () => {
    const s = await store();
    assert.match(await addFloatingIp(s, 'aaaa', '172.16.9.10'), /172\.16\.9\.10 → 192\.168\.0\.5 set on endpoint aaaaaaaaaaaa \(node n1\)/);
    assert.match(await addFloatingIp(s, 'aaaa', '172.16.9.10'), /already set/);
    await addFloatingIp(s, 'beefbeef', '203.0.113.9');
    assert.deepEqual((await s.get(keys.endpoint('n1', EP_A)))?.value.ipNATs, [{ internalIP: '192.168.0.5', externalIP: '172.16.9.10' }]);
    const list = (await listFloatingIps(s)).split('\n');
    assert.match(list[0] ?? '', /^EXTERNAL IP\s+INTERNAL IP\s+NODE\s+ENDPOINT\s+WORKLOAD$/);
    assert.match(list[1] ?? '', /^172\.16\.9\.10\s+192\.168\.0\.5\s+n1\s+aaaaaaaaaaaa\s+c0ffeec0ffee$/);
    assert.match(list[2] ?? '', /^203\.0\.113\.9\s+192\.168\.1\.7\s+n2/);
    assert.match(await removeFloatingIp(s, EP_A), /172\.16\.9\.10 removed/);
    assert.equal((await s.get(keys.endpoint('n1', EP_A)))?.value.ipNATs, undefined);
    await assert.rejects(removeFloatingIp(s, EP_B, '203.0.113.10'), NotFoundError);
  });

  const refusals: [string, string[], RegExp][] = [
    ['not IPv4', ['aaaa', '300.1.1.1'], /not an IPv4 address/],
    ['inside an enabled pool', ['aaaa', '192.168.7.7'], /inside the enabled pool default-ipv4-ippool/],
    ['allocated in a (disabled) pool', ['aaaa', '172.16.9.5'], /is allocated \(to h5 on n1\)/],
    ['a node address', ['aaaa', '10.0.0.11'], /address of node n1/],
    ['an endpoint address', ['aaaa', '192.168.1.7'], /inside the enabled pool/],
    ['link-local', ['aaaa', '169.254.1.1'], /link-local/],
    ['loopback', ['aaaa', '127.0.0.1'], /loopback/],
    ['multicast', ['aaaa', '239.1.1.1'], /multicast/],
    ['an internal IP the endpoint lacks', ['aaaa', '172.16.9.10', '192.168.0.6'], /not an address of endpoint/],
    ['an unknown endpoint', ['cccc', '172.16.9.10'], /does not exist/],
    ['a non-hex name', ['my-container', '172.16.9.10'], /not an endpoint or container ID/],
  ];
  for (const [what, [name, ext, internal], re] of refusals) {
    it(`refuses ${what}, changing nothing`, async () => {
      const s = await store();
      const before = await snapshot(s);
      await assert.rejects(addFloatingIp(s, name as string, ext as string, internal), (e: unknown) => (e instanceof ValidationError || e instanceof NotFoundError) && re.test(e.message));
      assert.equal(await snapshot(s), before);
    });
  }

  it('refuses an external IP another endpoint already has', async () => {
    const s = await store();
    await addFloatingIp(s, 'bbbb', '172.16.9.10');
    await assert.rejects(addFloatingIp(s, 'aaaa', '172.16.9.10'), /already a floating IP of endpoint bbbbbbbbbbbb/);
  });
});

describe('BIRD configuration with floating IPs', () => {
  const inputs: BgpInputs = {
    self: { name: 'a', ipv4: '10.0.0.1', asNumber: 64512, labels: {} },
    nodes: [{ name: 'a', ipv4: '10.0.0.1', asNumber: 64512, labels: {} }],
    config: DEFAULT_BGP_CONFIG,
    peers: [],
    localBlocks: ['192.168.10.0/26'],
    pools: [{ cidr: '192.168.0.0/16', disabled: false }],
  };

  it('announces local ones as /32 blackholes and accepts every node\'s in the three filters', () => {
    const text = renderBirdConfig({ ...inputs, floatingIPs: { local: ['172.16.9.10'], all: ['203.0.113.9', '172.16.9.10'] } }, []);
    assert.match(text, /^define CALICO_FLOATING_IPS = \[ 172\.16\.9\.10\/32, 203\.0\.113\.9\/32 \];$/m);
    assert.equal(text.match(/^ {2}if net ~ CALICO_FLOATING_IPS then accept;$/gm)?.length, 3);
    assert.match(text, /^ {2}route 172\.16\.9\.10\/32 blackhole; # floating IP$/m);
    assert.doesNotMatch(text, /route 203\.0\.113\.9/);
  });

  it('without floating IPs the text is as before', () => {
    assert.equal(renderBirdConfig({ ...inputs, floatingIPs: { local: [], all: [] } }, []), renderBirdConfig(inputs, []));
    assert.doesNotMatch(renderBirdConfig(inputs, []), /FLOATING/);
  });
});
