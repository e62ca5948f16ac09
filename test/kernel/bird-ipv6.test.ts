/**
 * IPv6 over the BGP sidecar with real BIRD 2: two hosts in throwaway namespaces (a fabric bridge,
 * `eth0` with 10.77.9.<n>/24 and fd00:77::<n>/64 in each) peer over IPv4 as calico-ts renders it; the
 * ipv6 channel carries each host's IPv6 blocks with its IPv6 address as next hop, and BIRD installs them
 * (`proto bird`) beside the IPv4 ones. after() stops both BIRDs and deletes namespaces and run dirs.
 * Needs root, iproute2 and bird2.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { BirdSupervisor } from '../../plugin/bgp/bird.js';
import { computePeerSessions } from '../../plugin/bgp/peers.js';
import { renderBirdConfig } from '../../plugin/bgp/render.js';
import { DEFAULT_BGP_CONFIG, type BgpInputs, type BgpNode } from '../../plugin/bgp/types.js';
import { ExecFileRunner } from '../../plugin/lib/exec.js';
import { createLogger } from '../../plugin/lib/log.js';
import { waitFor } from '../helpers/proc.js';

const isRoot = typeof process.getuid === 'function' && process.getuid() === 0;
const plain = new ExecFileRunner();
const sh = async (...argv: string[]): Promise<string> => (await plain.run(argv, { timeoutMs: 10_000 })).stdout;
const POOLS = [
  { cidr: '192.168.0.0/16', disabled: false },
  { cidr: 'fd00:1::/48', disabled: false },
];

interface Host {
  name: string;
  ns: string;
  node: BgpNode;
  blocks: string[];
  dir: string;
  sup: BirdSupervisor;
}

async function birdRoutes(ns: string, family: 4 | 6): Promise<{ dst: string; gateway?: string; dev?: string }[]> {
  const out = (await sh('ip', '-n', ns, `-${family}`, '-json', 'route', 'show', 'proto', 'bird')).trim();
  return out ? (JSON.parse(out) as { dst: string; gateway?: string }[]) : [];
}

describe('IPv6 blocks over the IPv4 BGP sessions (ipv6 channel), real BIRD 2', { skip: isRoot ? false : 'needs root (network namespaces) and bird2' }, () => {
  const fabric = `ctb6-${process.pid}-f`;
  const namespaces: string[] = [];
  const hosts: Host[] = [];

  before(async () => {
    await sh('ip', 'netns', 'add', fabric);
    namespaces.push(fabric);
    await sh('ip', '-n', fabric, 'link', 'add', 'br0', 'type', 'bridge');
    await sh('ip', '-n', fabric, 'link', 'set', 'br0', 'up');
    for (const [name, n, blocks] of [
      ['a', 1, ['192.168.10.0/26', 'fd00:1:0:a::/122']],
      ['b', 2, ['192.168.20.0/26', 'fd00:1:0:b::/122']],
    ] as const) {
      const ns = `ctb6-${process.pid}-${name}`;
      await sh('ip', 'netns', 'add', ns);
      namespaces.push(ns);
      await sh('ip', '-n', ns, 'link', 'set', 'lo', 'up');
      await sh('ip', '-n', fabric, 'link', 'add', `v${n}`, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', ns);
      await sh('ip', '-n', fabric, 'link', 'set', `v${n}`, 'master', 'br0', 'up');
      await sh('ip', '-n', ns, 'addr', 'add', `10.77.9.${n}/24`, 'dev', 'eth0');
      await sh('ip', '-n', ns, '-6', 'addr', 'add', `fd00:77::${n}/64`, 'dev', 'eth0', 'nodad');
      await sh('ip', '-n', ns, 'link', 'set', 'eth0', 'up');
      const dir = await mkdtemp(path.join(tmpdir(), `ct-bird6-${process.pid}-${name}-`));
      const sup = new BirdSupervisor({ runDir: dir, netnsPrefix: ['nsenter', `--net=/run/netns/${ns}`, '--'], log: createLogger('silent') });
      hosts.push({ name, ns, node: { name, ipv4: `10.77.9.${n}`, ipv6: `fd00:77::${n}`, asNumber: 64512, labels: {} }, blocks: [...blocks], dir, sup });
    }
  });

  after(async () => {
    for (const h of hosts) await h.sup.stop().catch(() => undefined);
    for (const ns of namespaces.reverse()) await sh('ip', 'netns', 'delete', ns).catch(() => undefined);
    for (const h of hosts) await rm(h.dir, { recursive: true, force: true });
  });

  it('each host installs the other IPv6 block via its IPv6 address, and the IPv4 block via its IPv4 one', async () => {
    const nodes = hosts.map((h) => h.node);
    for (const h of hosts) {
      const inputs: BgpInputs = { self: h.node, nodes, config: DEFAULT_BGP_CONFIG, peers: [], localBlocks: h.blocks, pools: POOLS };
      await h.sup.apply(renderBirdConfig(inputs, computePeerSessions(inputs, () => true), { controlSocket: h.sup.ctlPath }));
    }
    const [a, b] = hosts as [Host, Host];
    await waitFor(async () => (await birdRoutes(b.ns, 6)).some((r) => r.dst === 'fd00:1:0:a::/122' && r.gateway === 'fd00:77::1'), 20_000, 'B has A\'s IPv6 block via fd00:77::1');
    await waitFor(async () => (await birdRoutes(a.ns, 6)).some((r) => r.dst === 'fd00:1:0:b::/122' && r.gateway === 'fd00:77::2'), 20_000, 'A has B\'s IPv6 block via fd00:77::2');
    assert.ok((await birdRoutes(a.ns, 4)).some((r) => r.dst === '192.168.20.0/26' && r.gateway === '10.77.9.2'), 'IPv4 block too');
    // Only pool routes: the other host's own blackholes are not installed as blackholes, and nothing else.
    assert.deepEqual((await birdRoutes(a.ns, 6)).map((r) => r.dst), ['fd00:1:0:b::/122']);
  });

  it('a block released on A is withdrawn from B', async () => {
    const nodes = hosts.map((h) => h.node);
    const [a, b] = hosts as [Host, Host];
    const inputs: BgpInputs = { self: a.node, nodes, config: DEFAULT_BGP_CONFIG, peers: [], localBlocks: ['192.168.10.0/26'], pools: POOLS };
    await a.sup.apply(renderBirdConfig(inputs, computePeerSessions(inputs, () => true), { controlSocket: a.sup.ctlPath }));
    await waitFor(async () => (await birdRoutes(b.ns, 6)).length === 0, 20_000, 'IPv6 block withdrawn');
    assert.ok((await birdRoutes(b.ns, 4)).some((r) => r.dst === '192.168.10.0/26'));
  });
});
