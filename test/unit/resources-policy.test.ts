import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { parse as parseYaml } from 'yaml';
import { deleteByName, getResources, parseResourceText, writeResources, type Verb } from '../../plugin/cli/crud.js';
import { effectiveLabels, parseRule } from '../../plugin/cli/resources-policy.js';
import { kindByName } from '../../plugin/cli/resources.js';
import { parseLabelList, selectorCommand } from '../../plugin/cli/selector-command.js';
import { MemoryDatastore } from '../../plugin/datastore/memory.js';
import { keys, type Profile, type WorkloadEndpoint } from '../../plugin/datastore/model.js';
import { NotFoundError, ValidationError } from '../../plugin/lib/errors.js';

const V3 = 'apiVersion: projectcalico.org/v3';

const gnp = (name: string, spec: string) => `${V3}\nkind: GlobalNetworkPolicy\nmetadata: {name: ${name}}\nspec:\n${spec}`;
const rule = (r: string) => gnp('p', `  ingress:\n  - ${r}`);

const DB_FROM_WEB = gnp(
  'db-from-web',
  `  order: 100
  selector: role == 'db'
  types: [Ingress]
  ingress:
  - action: Allow
    protocol: TCP
    source: {selector: role == 'web'}
    destination: {ports: [5432]}
`,
);

async function snapshot(store: MemoryDatastore) {
  return JSON.stringify((await store.list(keys.root)).items.map((i) => [i.key.path, i.value]));
}

async function apply(store: MemoryDatastore, text: string, verb: Verb = 'apply') {
  return writeResources(store, verb, parseResourceText(text, 'f'));
}

/** Asserts a ValidationError matching `message`, and that the store did not change. */
async function rejects(store: MemoryDatastore, text: string, message: RegExp, verb: Verb = 'apply') {
  const before = await snapshot(store);
  await assert.rejects(
    async () => apply(store, text, verb),
    (err: unknown) => {
      assert.ok(err instanceof ValidationError, `${String(err)}\n--- for ---\n${text}`);
      assert.match(err.message, message, text);
      return true;
    },
  );
  assert.equal(await snapshot(store), before, `store changed by: ${text}`);
}

function endpoint(node: string, id: string, extra: Partial<WorkloadEndpoint> = {}): WorkloadEndpoint {
  return {
    node,
    endpointId: id,
    networkId: 'n1',
    containerId: `c0ffee${id}`,
    interfaceName: `cali${id.slice(0, 11)}`,
    ipNetworks: ['192.168.0.1/32'],
    mac: 'ee:ee:ee:ee:ee:ee',
    mtu: 1500,
    labels: {},
    profiles: ['net1'],
    createdAt: 1,
    ...extra,
  };
}

describe('GlobalNetworkPolicy', () => {
  it('applies the issue example, stores canonical selectors and prints table, wide and yaml', async () => {
    const store = new MemoryDatastore();
    assert.equal(await apply(store, DB_FROM_WEB), "Successfully applied 1 'GlobalNetworkPolicy' resource(s)");
    const stored = (await store.get(keys.globalNetworkPolicy('db-from-web')))?.value;
    assert.deepEqual(stored, {
      kind: 'GlobalNetworkPolicy',
      name: 'db-from-web',
      order: 100,
      selector: 'role == "db"',
      types: ['Ingress'],
      ingress: [{ action: 'Allow', protocol: 'TCP', source: { selector: 'role == "web"' }, destination: { ports: [5432] } }],
      egress: [],
    });
    assert.match(await getResources(store, 'globalnetworkpolicies', [], 'table'), /^NAME\s+ORDER\s+SELECTOR\ndb-from-web\s+100\s+role == "db"$/);
    assert.match(await getResources(store, 'gnp', [], 'wide'), /^NAME\s+ORDER\s+SELECTOR\s+TYPES\ndb-from-web\s+100\s+role == "db"\s+Ingress$/);
    const yaml = await getResources(store, 'globalnetworkpolicy', ['db-from-web'], 'yaml');
    const doc = parseYaml(yaml) as { kind: string; spec: { selector: string } };
    assert.equal(doc.kind, 'GlobalNetworkPolicy');
    assert.equal(doc.spec.selector, 'role == "db"');
    // What get prints applies back unchanged.
    const before = await snapshot(store);
    await apply(store, yaml);
    assert.equal((await snapshot(store)).replace(/"revision":\d+/g, ''), before.replace(/"revision":\d+/g, ''));
  });

  it('defaults selector and types as Calico does', async () => {
    const store = new MemoryDatastore();
    const types = async (name: string, spec: string) => {
      await apply(store, gnp(name, spec));
      return (await store.get(keys.globalNetworkPolicy(name)))?.value;
    };
    const none = await types('none', '  {}');
    assert.equal(none?.selector, 'all()');
    assert.deepEqual(none?.types, ['Ingress']);
    assert.equal(none?.order, undefined);
    assert.deepEqual((await types('in', '  ingress: [{action: Deny}]'))?.types, ['Ingress']);
    assert.deepEqual((await types('out', '  egress: [{action: Allow}]'))?.types, ['Egress']);
    assert.deepEqual((await types('both', '  egress: [{action: Allow}]\n  ingress: [{action: Pass}]'))?.types, ['Ingress', 'Egress']);
    assert.deepEqual((await types('explicit', '  types: [Egress, Ingress]'))?.types, ['Ingress', 'Egress']);
    assert.equal((await types('float', '  order: 2.5'))?.order, 2.5);
  });

  it('create, replace and delete follow the shared verbs', async () => {
    const store = new MemoryDatastore();
    await assert.rejects(apply(store, DB_FROM_WEB, 'replace'), NotFoundError);
    await apply(store, DB_FROM_WEB, 'create');
    await assert.rejects(apply(store, DB_FROM_WEB, 'create'), /GlobalNetworkPolicy "db-from-web" already exists/);
    await apply(store, DB_FROM_WEB.replace('order: 100', 'order: 50'), 'replace');
    assert.equal((await store.get(keys.globalNetworkPolicy('db-from-web')))?.value.order, 50);
    assert.equal(await deleteByName(store, 'gnp', ['db-from-web']), "Successfully deleted 1 'GlobalNetworkPolicy' resource(s)");
    await assert.rejects(deleteByName(store, 'gnp', ['db-from-web']), /GlobalNetworkPolicy "db-from-web" does not exist/);
  });
});

describe('rule validation', () => {
  it('accepts every rule field and stores the canonical form', () => {
    assert.deepEqual(
      parseRule(
        {
          action: 'Deny',
          ipVersion: 4,
          protocol: '17',
          notProtocol: 'UDPLite',
          source: { nets: ['10.0.0.5/24', '10.1.2.3'], notNets: ['10.0.0.128/25'], selector: "a in {'y','x'}", notSelector: '!has(b)', ports: ['53', '1000:2000', 0], notPorts: [65535] },
          destination: {},
        },
        'r',
      ),
      {
        action: 'Deny',
        ipVersion: 4,
        protocol: 17,
        notProtocol: 'UDPLite',
        source: { nets: ['10.0.0.0/24', '10.1.2.3/32'], notNets: ['10.0.0.128/25'], selector: 'a in {"x", "y"}', notSelector: '!has(b)', ports: [53, '1000:2000', 0], notPorts: [65535] },
      },
    );
    assert.deepEqual(parseRule({ action: 'Allow', protocol: 'ICMPv6', icmp: { type: 128, code: 0 }, notICMP: { type: 1 } }, 'r'), {
      action: 'Allow',
      protocol: 'ICMPv6',
      icmp: { type: 128, code: 0 },
      notICMP: { type: 1 },
    });
    assert.deepEqual(parseRule({ action: 'Log', destination: { nets: ['fd00::1/64'] } }, 'r').destination, { nets: ['fd00::/64'] });
    for (const p of ['TCP', 'UDP', 'ICMP', 'ICMPv6', 'SCTP', 'UDPLite', 1, 255]) assert.equal(parseRule({ action: 'Allow', protocol: p }, 'r').protocol, p);
    for (const p of ['TCP', 'UDP', 'SCTP', 'UDPLite', 6, 17, 132, 136]) parseRule({ action: 'Allow', protocol: p, destination: { ports: [80] } }, 'r');
  });

  it('rejects each class of mistake with a field-level message and writes nothing', async () => {
    const store = new MemoryDatastore();
    await apply(store, DB_FROM_WEB);
    const P = 'f\\.spec\\.ingress\\[0\\]';
    const cases: [string, RegExp][] = [
      // action
      [rule('{protocol: TCP}'), new RegExp(`${P}\\.action: is required: Allow, Deny, Log or Pass`)],
      [rule('{action: allow}'), new RegExp(`${P}\\.action: must be Allow, Deny, Log or Pass$`)],
      // protocol
      [rule('{action: Allow, protocol: HTTP}'), new RegExp(`${P}\\.protocol: must be TCP, UDP, ICMP, ICMPv6, SCTP, UDPLite or a number 1-255$`)],
      [rule('{action: Allow, protocol: tcp}'), /protocol: must be TCP, .* \(names are case-sensitive: TCP\)/],
      [rule('{action: Allow, protocol: 256}'), /protocol: must be TCP, UDP/],
      [rule('{action: Allow, protocol: 0}'), /protocol: must be TCP, UDP/],
      [rule('{action: Allow, notProtocol: [6]}'), new RegExp(`${P}\\.notProtocol: must be TCP`)],
      // ipVersion
      [rule('{action: Allow, ipVersion: 5}'), new RegExp(`${P}\\.ipVersion: must be 4 or 6`)],
      [rule('{action: Allow, protocol: ICMP, ipVersion: 6}'), /ipVersion: must be 4 with protocol ICMP/],
      [rule('{action: Allow, ipVersion: 4, source: {nets: [fd00::/64]}}'), new RegExp(`${P}\\.source\\.nets\\[0\\]: is an IPv6 CIDR but the rule is IPv4-only`)],
      [rule('{action: Allow, source: {nets: [10.0.0.0/8]}, destination: {nets: [fd00::/8]}}'), new RegExp(`${P}: mixes IPv4 and IPv6 CIDRs`)],
      // ports
      [rule('{action: Allow, protocol: TCP, destination: {ports: [http]}}'), new RegExp(`${P}\\.destination\\.ports\\[0\\]: "http" is a named port; named ports are not supported`)],
      [rule('{action: Allow, protocol: TCP, destination: {ports: [70000]}}'), /ports\[0\]: must be a port number 0-65535 or a range like 8000:8080/],
      [rule('{action: Allow, protocol: TCP, destination: {ports: [-1]}}'), /ports\[0\]: must be a port number/],
      [rule('{action: Allow, protocol: TCP, destination: {ports: ["90:80"]}}'), /ports\[0\]: range 90:80 is backwards/],
      [rule('{action: Allow, protocol: TCP, destination: {ports: ["1:70000"]}}'), /ports\[0\]: ports must be from 0 to 65535/],
      [rule('{action: Allow, destination: {ports: [80]}}'), new RegExp(`${P}\\.destination\\.ports: require ${P}\\.protocol to be TCP, UDP, SCTP or UDPLite`)],
      [rule('{action: Allow, protocol: ICMP, source: {notPorts: [80]}}'), /source\.notPorts: require .* to be TCP, UDP, SCTP or UDPLite/],
      [rule('{action: Allow, protocol: TCP, destination: {ports: 80}}'), /destination\.ports: must be a list/],
      // nets
      [rule('{action: Allow, source: {nets: [10.0.0.0/33]}}'), new RegExp(`${P}\\.source\\.nets\\[0\\]: "10\\.0\\.0\\.0/33": prefix length must be at most 32`)],
      [rule('{action: Allow, source: {notNets: [not-a-net]}}'), /source\.notNets\[0\]: "not-a-net" is not an IP address/],
      // selectors
      [rule("{action: Allow, source: {selector: role == }}"), new RegExp(`${P}\\.source\\.selector: .*at position 7`)],
      [rule('{action: Allow, destination: {notSelector: "has("}}'), /destination\.notSelector: .*at position/],
      // icmp
      [rule('{action: Allow, protocol: ICMP, icmp: {type: 255}}'), /icmp\.type: must be an integer from 0 to 254/],
      [rule('{action: Allow, protocol: ICMP, icmp: {type: 8, code: 256}}'), /icmp\.code: must be an integer from 0 to 255/],
      [rule('{action: Allow, protocol: ICMP, icmp: {code: 0}}'), new RegExp(`${P}\\.icmp\\.code: requires type`)],
      [rule('{action: Allow, protocol: TCP, icmp: {type: 8}}'), new RegExp(`${P}\\.icmp: requires ${P}\\.protocol to be ICMP or ICMPv6`)],
      [rule('{action: Allow, protocol: ICMP, notICMP: {type: 8, typo: 1}}'), /notICMP\.typo: unknown field \(allowed: type, code\)/],
      // unknown fields
      [rule('{action: Allow, http: {methods: [GET]}}'), new RegExp(`${P}\\.http: unknown field`)],
      [rule('{action: Allow, source: {namespaceSelector: all()}}'), /source\.namespaceSelector: unknown field/],
      [rule('{action: Allow, source: {tag: web}}'), /source\.tag: unknown field/],
      // shapes
      [gnp('p', '  ingress: {action: Allow}'), /f\.spec\.ingress: must be a list/],
      [gnp('p', '  ingress: [Allow]'), /f\.spec\.ingress\[0\]: must be a mapping/],
    ];
    for (const [text, message] of cases) await rejects(store, text, message);
  });

  it('validates policy fields', async () => {
    const store = new MemoryDatastore();
    const cases: [string, RegExp][] = [
      [gnp('p', '  order: first'), /f\.spec\.order: must be a number/],
      [gnp('p', '  selector: "a == "'), /f\.spec\.selector: .*at position/],
      [gnp('p', '  types: [ingress]'), /f\.spec\.types\[0\]: must be Ingress or Egress/],
      [gnp('p', '  types: [Ingress, Ingress]'), /f\.spec\.types: lists a type twice/],
      [gnp('p', '  types: [Egress]\n  ingress: [{action: Allow}]'), /f\.spec\.ingress: has rules but f\.spec\.types does not include Ingress/],
      [gnp('p', '  types: [Ingress]\n  egress: [{action: Allow}]'), /f\.spec\.egress: has rules but .* does not include Egress/],
      [gnp('p', '  doNotTrack: true'), /f\.spec\.doNotTrack: unknown field \(allowed: order, selector, types, ingress, egress\)/],
      [gnp('Bad_Name', '  {}'), /f\.metadata\.name: is required: lower-case letters/],
    ];
    for (const [text, message] of cases) await rejects(store, text, message);
  });

  it('one invalid document among valid ones writes nothing; a resource given twice is refused', async () => {
    const store = new MemoryDatastore();
    const profile = `${V3}\nkind: Profile\nmetadata: {name: web}\nspec: {labelsToApply: {role: web}}`;
    await rejects(store, `${profile}\n---\n${DB_FROM_WEB}\n---\n${rule('{action: Allow, protocol: HTTP}')}`, /f\[2\]\.spec\.ingress\[0\]\.protocol: must be TCP/);
    await rejects(store, `${DB_FROM_WEB}\n---\n${DB_FROM_WEB}`, /f\[1\]: GlobalNetworkPolicy "db-from-web" is also given at f\[0\]/);
    assert.equal(await snapshot(store), '[]');
  });
});

describe('Profile', () => {
  it('round-trips rules and labelsToApply; names may be Docker network names', async () => {
    const store = new MemoryDatastore();
    const text = `${V3}
kind: Profile
metadata: {name: My_Net.1}
spec:
  labelsToApply: {calico-ts/network: My_Net.1, role: web}
  ingress:
  - action: Allow
    source: {selector: calico-ts/network == 'My_Net.1'}
  egress:
  - action: Allow
`;
    assert.equal(await apply(store, text), "Successfully applied 1 'Profile' resource(s)");
    const stored = (await store.get(keys.profile('My_Net.1')))?.value;
    assert.deepEqual(stored, {
      name: 'My_Net.1',
      ingress: [{ action: 'Allow', source: { selector: 'calico-ts/network == "My_Net.1"' } }],
      egress: [{ action: 'Allow' }],
      labelsToApply: { 'calico-ts/network': 'My_Net.1', role: 'web' },
    });
    assert.match(await getResources(store, 'profiles', [], 'table'), /^NAME\s+LABELS\nMy_Net\.1\s+calico-ts\/network=My_Net\.1,role=web$/);
    assert.match(await getResources(store, 'pro', [], 'wide'), /^NAME\s+LABELS\s+INGRESS\s+EGRESS\nMy_Net\.1\s+\S+\s+1\s+1$/);
    const doc = JSON.parse(await getResources(store, 'profile', ['My_Net.1'], 'json')) as { kind: string; spec: Record<string, unknown> };
    assert.equal(doc.kind, 'Profile');
    assert.deepEqual(Object.keys(doc.spec), ['ingress', 'egress', 'labelsToApply']);
    assert.equal(await deleteByName(store, 'profile', ['My_Net.1']), "Successfully deleted 1 'Profile' resource(s)");
  });

  it('validates labelsToApply, rules and fields', async () => {
    const store = new MemoryDatastore();
    const pro = (spec: string, name = 'p') => `${V3}\nkind: Profile\nmetadata: {name: ${name}}\nspec: ${spec}`;
    const cases: [string, RegExp][] = [
      [pro('{labelsToApply: {"bad key!": x}}'), /f\.spec\.labelsToApply\.bad key!: is not a valid label key/],
      [pro('{labelsToApply: {role: "has space"}}'), /f\.spec\.labelsToApply\.role: must be a label value/],
      [pro('{labelsToApply: [role]}'), /f\.spec\.labelsToApply: must be a map/],
      [pro('{egress: [{action: Allow, protocol: FTP}]}'), /f\.spec\.egress\[0\]\.protocol: must be TCP, UDP, ICMP, ICMPv6, SCTP, UDPLite or a number 1-255/],
      [pro('{selector: all()}'), /f\.spec\.selector: unknown field \(allowed: ingress, egress, labelsToApply\)/],
      [pro('{}', '"x; rm -rf /"'), /f\.metadata\.name: is required: letters, digits, _ - and \. \(a Docker network name\)/],
    ];
    for (const [text, message] of cases) await rejects(store, text, message);
  });
});

describe('NetworkPolicy', () => {
  const np = (name: string, ns?: string, spec = '  selector: all()') =>
    `${V3}\nkind: NetworkPolicy\nmetadata: {name: ${name}${ns ? `, namespace: ${ns}` : ''}}\nspec:\n${spec}`;

  it('lives in a namespace (default "default"); get, delete and tables honour it', async () => {
    const store = new MemoryDatastore();
    await apply(store, `${np('allow', undefined, '  order: 10\n  ingress: [{action: Allow}]')}\n---\n${np('allow', 'prod')}\n---\n${np('deny', 'prod')}`);
    const def = (await store.get(keys.networkPolicy('default', 'allow')))?.value;
    assert.equal(def?.namespace, 'default');
    assert.equal(def?.kind, 'NetworkPolicy');
    assert.equal(def?.order, 10);
    assert.ok(await store.get(keys.networkPolicy('prod', 'allow')));
    assert.match(await getResources(store, 'networkpolicies', [], 'table'), /^NAME\s+ORDER\s+SELECTOR\nallow\s+10\s+all\(\)$/);
    assert.match(await getResources(store, 'np', [], 'table', { namespace: 'prod' }), /^NAME\s+ORDER\s+SELECTOR\nallow\s+all\(\)\ndeny\s+all\(\)$/);
    assert.match(await getResources(store, 'netpol', [], 'wide', { allNamespaces: true }), /^NAMESPACE\s+NAME\s+ORDER\s+SELECTOR\s+TYPES\ndefault\s+allow\s+10\s+all\(\)\s+Ingress\nprod\s+allow/);
    const yaml = parseYaml(await getResources(store, 'networkpolicy', ['deny'], 'yaml', { namespace: 'prod' })) as { metadata: Record<string, string> };
    assert.deepEqual(yaml.metadata, { name: 'deny', namespace: 'prod' });
    await assert.rejects(getResources(store, 'np', ['deny'], 'yaml'), /NetworkPolicy "default\/deny" does not exist/);
    await assert.rejects(getResources(store, 'np', [], 'table', { namespace: 'Bad NS' }), /--namespace: must be a namespace name/);
    assert.equal(await deleteByName(store, 'np', ['deny'], { namespace: 'prod' }), "Successfully deleted 1 'NetworkPolicy' resource(s)");
    await assert.rejects(deleteByName(store, 'np', ['deny'], { namespace: 'prod' }), /NetworkPolicy "prod\/deny" does not exist/);
    await rejects(store, np('x', 'UPPER'), /f\.metadata\.namespace: must be a namespace name/);
    await rejects(store, `${np('allow', 'prod')}\n---\n${np('allow', 'prod')}`, /NetworkPolicy "prod\/allow" is also given/);
  });
});

describe('WorkloadEndpoint', () => {
  async function seeded() {
    const store = new MemoryDatastore();
    const profile = (name: string, labelsToApply: Record<string, string>): Profile => ({ name, ingress: [], egress: [], labelsToApply });
    await store.put(keys.profile('net1'), profile('net1', { 'calico-ts/network': 'net1', role: 'from-profile' }));
    await store.put(keys.profile('net2'), profile('net2', { 'calico-ts/network': 'net2' }));
    await store.put(keys.endpoint('host-a', 'aaaa1111222233334444'), endpoint('host-a', 'aaaa1111222233334444', { labels: { role: 'db' } }));
    await store.put(keys.endpoint('host-a', 'aaaa5555'), endpoint('host-a', 'aaaa5555', { ipNetworks: ['192.168.0.2/32'] }));
    await store.put(keys.endpoint('host-b', 'bbbb1111'), endpoint('host-b', 'bbbb1111', { profiles: ['net2'], labels: { role: 'web' }, containerId: null }));
    return store;
  }

  it('lists over all nodes with its columns, by id or unique prefix', async () => {
    const store = await seeded();
    const table = await getResources(store, 'workloadendpoints', [], 'table');
    assert.match(table, /^NAME\s+NODE\s+WORKLOAD\s+NETWORKS\s+INTERFACE\s+PROFILES\n/);
    assert.match(table, /\naaaa11112222\s+host-a\s+c0ffeeaaaa11\s+192\.168\.0\.1\/32\s+caliaaaa1111222\s+net1\n/);
    assert.match(table, /\nbbbb1111\s+host-b\s+192\.168\.0\.1\/32\s+calibbbb1111\s+net2$/);
    assert.match(await getResources(store, 'wep', ['bbbb'], 'wide'), /^NAME\s+NODE\s+WORKLOAD\s+NETWORKS\s+INTERFACE\s+PROFILES\s+MAC\s+LABELS\s+FLOATING IPS\nbbbb1111.*ee:ee:ee:ee:ee:ee\s+role=web$/);
    const doc = parseYaml(await getResources(store, 'workloadendpoint', ['aaaa1111'], 'yaml')) as { kind: string; metadata: unknown; spec: Record<string, unknown> };
    assert.equal(doc.kind, 'WorkloadEndpoint');
    assert.deepEqual(doc.metadata, { name: 'aaaa1111222233334444', namespace: 'default', labels: { role: 'db' } });
    assert.equal(doc.spec.node, 'host-a');
    assert.deepEqual(doc.spec.ipNetworks, ['192.168.0.1/32']);
    await assert.rejects(getResources(store, 'wep', ['aaaa'], 'table'), /aaaa: matches 2 WorkloadEndpoints \(aaaa1111222233334444, aaaa5555\); give more of the name/);
    await assert.rejects(getResources(store, 'wep', ['cccc'], 'table'), /WorkloadEndpoint "cccc" does not exist/);
  });

  it('--selector matches profile labelsToApply overlaid by the endpoint labels', async () => {
    const store = await seeded();
    const names = async (selector: string) =>
      (JSON.parse(await getResources(store, 'weps', [], 'json', { selector })) as { items: { metadata: { name: string } }[] }).items.map((i) => i.metadata.name);
    assert.deepEqual(await names("role == 'db'"), ['aaaa1111222233334444']);
    assert.deepEqual(await names("role == 'from-profile'"), ['aaaa5555'], 'own labels win over the profile');
    assert.deepEqual(await names("calico-ts/network == 'net1'"), ['aaaa1111222233334444', 'aaaa5555']);
    assert.deepEqual(await names("calico-ts/network == 'net2' && role == 'web'"), ['bbbb1111']);
    assert.deepEqual(await names('all()'), ['aaaa1111222233334444', 'aaaa5555', 'bbbb1111']);
    assert.deepEqual(await names("role == 'nobody'"), []);
    // A profile's labels are read at get time: changing them changes the match.
    await store.put(keys.profile('net2'), { name: 'net2', ingress: [], egress: [], labelsToApply: { tier: 'front' } });
    assert.deepEqual(await names('has(tier)'), ['bbbb1111']);
    assert.match(await getResources(store, 'wep', [], 'table', { selector: 'has(tier)' }), /^NAME.*\nbbbb1111\s/);
    await assert.rejects(getResources(store, 'wep', [], 'table', { selector: 'role ==' }), /--selector: .*at position 7/);
    await assert.rejects(getResources(store, 'gnp', [], 'table', { selector: 'all()' }), /--selector: filters only nodes and workloadendpoints, not globalnetworkpolicies/);
  });

  it('is read-only: apply, create, replace and delete are refused and change nothing', async () => {
    const store = await seeded();
    const wep = `${V3}\nkind: WorkloadEndpoint\nmetadata: {name: aaaa5555}\nspec: {node: host-a}`;
    for (const verb of ['apply', 'create', 'replace', 'delete'] as const) {
      await rejects(store, wep, /f: WorkloadEndpoint resources are read-only: the calico-ts node creates and removes them/, verb);
    }
    await rejects(store, `${DB_FROM_WEB}\n---\n${wep}`, /f\[1\]: WorkloadEndpoint resources are read-only/);
    await assert.rejects(deleteByName(store, 'wep', ['aaaa5555']), /WorkloadEndpoint resources are read-only/);
    assert.ok(await store.get(keys.endpoint('host-a', 'aaaa5555')));
  });

  it('effectiveLabels ignores missing profiles and lets later profiles override earlier ones', () => {
    const profiles = new Map<string, Profile>([
      ['a', { name: 'a', ingress: [], egress: [], labelsToApply: { x: 'a', y: 'a' } }],
      ['b', { name: 'b', ingress: [], egress: [], labelsToApply: { y: 'b' } }],
    ]);
    assert.deepEqual(effectiveLabels(endpoint('n', 'e', { profiles: ['a', 'gone', 'b'], labels: { z: 'own' } }), profiles), { x: 'a', y: 'b', z: 'own' });
  });
});

describe('Calico v1 documents', () => {
  const v1Profile = `- apiVersion: v1
  kind: profile
  metadata:
    name: database
    labels:
      role: database
  spec:
    ingress:
    - action: allow
      protocol: tcp
      source:
        selector: role == 'frontend'
      destination:
        ports:
        -  3306
    - action: deny
      source:
        net: 10.0.20.0/24
    egress:
    - action: allow
`;
  const v1Policy = `apiVersion: v1
kind: policy
metadata:
  name: allow-tcp-6379
spec:
  selector: role == 'database'
  order: 100
  types: [ingress]
  ingress:
  - action: next-tier
    protocol: udp
    notProtocol: 6
    source:
      notNet: 10.9.0.0/16
`;

  it('converts a v1 profile and policy where the meaning is unchanged, and says so', async () => {
    const store = new MemoryDatastore();
    const out = await apply(store, `${v1Profile}- ${v1Policy.replace(/\n/g, '\n  ').trimEnd()}\n`);
    assert.equal(
      out,
      [
        'Note: f[0]: converted the Calico v1 profile "database" to a projectcalico.org/v3 Profile',
        'Note: f[1]: converted the Calico v1 policy "allow-tcp-6379" to a projectcalico.org/v3 GlobalNetworkPolicy',
        "Successfully applied 1 'Profile' resource(s)",
        "Successfully applied 1 'GlobalNetworkPolicy' resource(s)",
      ].join('\n'),
    );
    assert.deepEqual((await store.get(keys.profile('database')))?.value, {
      name: 'database',
      ingress: [
        { action: 'Allow', protocol: 'TCP', source: { selector: 'role == "frontend"' }, destination: { ports: [3306] } },
        { action: 'Deny', source: { nets: ['10.0.20.0/24'] } },
      ],
      egress: [{ action: 'Allow' }],
      labelsToApply: { role: 'database' },
    });
    assert.deepEqual((await store.get(keys.globalNetworkPolicy('allow-tcp-6379')))?.value, {
      kind: 'GlobalNetworkPolicy',
      name: 'allow-tcp-6379',
      order: 100,
      selector: 'role == "database"',
      types: ['Ingress'],
      ingress: [{ action: 'Pass', protocol: 'UDP', notProtocol: 6, source: { notNets: ['10.9.0.0/16'] } }],
      egress: [],
    });
    // delete -f works on the same v1 file.
    assert.match(await apply(store, v1Policy, 'delete'), /Successfully deleted 1 'GlobalNetworkPolicy'/);
  });

  it('rejects what cannot be converted, printing the v3 form to use instead', async () => {
    const store = new MemoryDatastore();
    const tagged = `apiVersion: v1
kind: profile
metadata:
  name: web
  tags: [web]
spec:
  ingress:
  - action: allow
    source: {tag: web, selector: "env == 'prod'"}
`;
    const before = await snapshot(store);
    await assert.rejects(
      async () => apply(store, tagged),
      (err: unknown) => {
        assert.ok(err instanceof ValidationError);
        assert.match(err.message, /^f: a Calico v1 profile cannot be converted to projectcalico\.org\/v3 without changing its meaning:/);
        assert.match(err.message, /f\.metadata\.tags: v3 has no tags/);
        assert.match(err.message, /f\.spec\.ingress\[0\]\.source\.tag: v3 has no tags; the equivalent selects a label, has\(web\)/);
        const suggested = parseYaml(err.message.slice(err.message.indexOf('apiVersion:'))) as Record<string, unknown>;
        assert.deepEqual(suggested, {
          apiVersion: 'projectcalico.org/v3',
          kind: 'Profile',
          metadata: { name: 'web' },
          spec: { labelsToApply: { web: '' }, ingress: [{ action: 'Allow', source: { selector: '(env == "prod" && has(web))' } }] },
        });
        return true;
      },
    );
    assert.equal(await snapshot(store), before);
    // The suggested document applies as it is.
    await apply(store, `apiVersion: projectcalico.org/v3\nkind: Profile\nmetadata: {name: web}\nspec: {labelsToApply: {web: ""}, ingress: [{action: Allow, source: {selector: '(env == "prod" && has(web))'}}]}`);

    await rejects(store, `${v1Policy}  doNotTrack: true\n`, /spec\.doNotTrack: is not supported by calico-ts[\s\S]*kind: GlobalNetworkPolicy/);
    // Converted, then invalid: the field message, and the v3 form it was found in.
    await rejects(store, v1Policy.replace('10.9.0.0/16', '10.9.0.0/40'), /f\.spec\.ingress\[0\]\.source\.notNets\[0\]: "10\.9\.0\.0\/40": prefix length[\s\S]*in the projectcalico\.org\/v3 form of a Calico v1 document:\napiVersion: projectcalico\.org\/v3\nkind: GlobalNetworkPolicy/);
    // Other v1 kinds keep the plain message.
    await rejects(store, 'apiVersion: v1\nkind: ipPool\nmetadata: {cidr: 10.0.0.0/8}', /kind: "ipPool" is not a supported kind/);
  });
});

describe('registry', () => {
  it('knows every kind by its names', () => {
    const expected: Record<string, string[]> = {
      Profile: ['profile', 'profiles', 'pro'],
      GlobalNetworkPolicy: ['globalnetworkpolicy', 'globalnetworkpolicies', 'gnp'],
      NetworkPolicy: ['networkpolicy', 'networkpolicies', 'netpol', 'np'],
      WorkloadEndpoint: ['workloadendpoint', 'workloadendpoints', 'wep'],
      IPPool: ['ippool', 'ippools', 'pool'],
      BGPPeer: ['bgppeer', 'bgppeers'],
      BGPConfiguration: ['bgpconfiguration'],
      Node: ['node', 'nodes'],
    };
    for (const [kind, names] of Object.entries(expected)) for (const n of [...names, kind, kind.toUpperCase()]) assert.equal(kindByName(n)?.kind, kind, n);
    assert.equal(kindByName('policy'), undefined);
  });

  it('get nodes --selector filters on node labels', async () => {
    const store = new MemoryDatastore();
    const node = (name: string, labels: Record<string, string>) =>
      store.put(keys.node(name), { name, ipv4Address: null, asNumber: null, routeReflectorClusterId: null, labels, startedAt: 1 });
    await node('n1', { 'route-reflector': 'true' });
    await node('n2', {});
    assert.equal(await getResources(store, 'nodes', [], 'table', { selector: 'has(route-reflector)' }), 'NAME\nn1');
    assert.equal(await getResources(store, 'nodes', [], 'table', { selector: '!has(route-reflector)' }), 'NAME\nn2');
  });
});

describe('calico-ts selector', () => {
  it('prints the canonical form, and true/false for labels', () => {
    assert.equal(selectorCommand("role=='db'"), 'role == "db"');
    assert.equal(selectorCommand(''), 'all()');
    assert.equal(selectorCommand("a in {'y','x'} && b == 'c'", 'a=x,b=c'), '(a in {"x", "y"} && b == "c")\ntrue');
    assert.equal(selectorCommand('has(a)', ''), 'has(a)\nfalse');
    assert.equal(selectorCommand('!has(a)', ''), '!has(a)\ntrue');
    assert.equal(selectorCommand("a == 'x=y'", 'a=x=y'), 'a == "x=y"\ntrue');
    assert.equal(selectorCommand("a == ''", 'a='), 'a == ""\ntrue');
  });

  it('a selector that does not parse throws with the position and a caret', () => {
    assert.throws(
      () => selectorCommand("role == 'db' &&"),
      (err: unknown) => {
        assert.ok(err instanceof ValidationError);
        assert.match(err.message, /^selector: .* at position 15: <end of selector>\n {2}role == 'db' &&\n {2} {15}\^$/);
        return true;
      },
    );
    assert.throws(() => selectorCommand('has(a)', 'novalue'), /--labels: "novalue" is not key=value/);
    assert.throws(() => selectorCommand('has(a)', '=v'), /--labels: "=v" is not key=value/);
  });

  it('parses label lists', () => {
    assert.deepEqual(parseLabelList(''), {});
    assert.deepEqual(parseLabelList('a=1,b=,c=x=y,'), { a: '1', b: '', c: 'x=y' });
    const proto = parseLabelList('__proto__=x');
    assert.equal(Object.getPrototypeOf(proto), Object.prototype);
    assert.deepEqual(Object.keys(proto), ['__proto__']);
  });
});
