#!/usr/bin/env node
/**
 * The `calico-ts` command. Errors print their message (which says what to do) and exit 1.
 */
import { readFileSync } from 'node:fs';
import { Command } from 'commander';
import { EtcdDatastore } from '../datastore/etcd.js';
import { keys } from '../datastore/model.js';
import { CalicoError } from '../lib/errors.js';
import { createLogger } from '../lib/log.js';
import { loadConfig } from '../node/config.js';
import { NodeAgent } from '../node/agent.js';
import { ipamShow } from './ipam-show.js';
import { nodeStatus } from './node-status.js';
import { ExecFileRunner } from '../lib/exec.js';
import { deleteByName, getResources, parseResourceText, writeResources, type OutputFormat } from './crud.js';
import { ValidationError } from '../lib/errors.js';
import { selectorCommand } from './selector-command.js';
import { formatVersion, versionInfo } from './version.js';
import { checkSystem } from './checksystem.js';
import { addFloatingIp, listFloatingIps, removeFloatingIp } from './floating-ip.js';

function readInput(file: string): string {
  try {
    return readFileSync(file === '-' ? 0 : file, 'utf8');
  } catch (err) {
    throw new ValidationError(file, `cannot read: ${err instanceof Error ? err.message : String(err)}`);
  }
}


async function withStore<T>(fn: (store: EtcdDatastore) => Promise<T>): Promise<T> {
  const store = new EtcdDatastore({ ...loadConfig().etcd, dialTimeoutMs: 3_000 });
  try {
    return await fn(store);
  } finally {
    await store.close();
  }
}

/** Reads one key with a deadline: the etcd client would otherwise retry for a long time. */
async function pingEtcd(endpoints: string[]): Promise<string> {
  const started = performance.now();
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`etcd at ${endpoints.join(',')} did not answer within 5 s; check ETCD_ENDPOINTS and that etcd runs`)), 5_000);
  });
  try {
    await Promise.race([withStore((s) => s.get(keys.pool('default-ipv4-ippool'))), deadline]);
  } finally {
    clearTimeout(timer);
  }
  return `${endpoints.join(',')} answers (${(performance.now() - started).toFixed(0)} ms)`;
}

export function buildProgram(): Command {
  const program = new Command('calico-ts').description('Calico-style layer-3 networking for Docker').showHelpAfterError();
  program
    .command('version')
    .description('print the calico-ts version, the git commit it was built from and the Node.js version')
    .action(() => {
      process.stdout.write(formatVersion(versionInfo()) + '\n');
    });

  const node = program.command('node').description('run or inspect the calico-ts node on this host');
  node
    .command('run')
    .description('run the node in the foreground (plugin socket, datastore sync, dataplane); configured by env vars')
    .action(async () => {
      const config = loadConfig();
      const log = createLogger(config.logLevel, { node: config.nodeName });
      const agent = new NodeAgent(config, { log });
      let stopping = false;
      const shutdown = (signal: string) => {
        if (stopping) return;
        stopping = true;
        log.info('stopping', { signal });
        agent.stop().then(
          () => process.exit(0),
          (err: unknown) => {
            log.error('stop failed', { error: String(err) });
            process.exit(1);
          },
        );
      };
      process.on('SIGTERM', () => shutdown('SIGTERM'));
      process.on('SIGINT', () => shutdown('SIGINT'));
      await agent.start();
    });

  for (const verb of ['apply', 'create', 'replace'] as const) {
    program
      .command(verb)
      .description(
        { apply: 'create or update resources', create: 'create resources (fails if one exists)', replace: 'update resources (fails if one is missing)' }[verb] +
          ' from YAML/JSON (IPPool, Profile, GlobalNetworkPolicy, NetworkPolicy, BGPPeer, BGPConfiguration, Node; Calico v1 profile/policy documents are converted)',
      )
      .requiredOption('-f, --filename <file>', "file to read, or '-' for standard input")
      .action(async (opts: { filename: string }) => {
        const docs = parseResourceText(readInput(opts.filename), opts.filename);
        process.stdout.write((await withStore((s) => writeResources(s, verb, docs))) + '\n');
      });
  }
  program
    .command('delete')
    .description('delete resources by kind and name, or those in a file')
    .argument('[kind]', 'resource kind, e.g. ippool, globalnetworkpolicy, bgppeer')
    .argument('[names...]', 'resource names')
    .option('-f, --filename <file>', "file to read, or '-' for standard input")
    .option('-n, --namespace <namespace>', 'namespace of a NetworkPolicy (default: default)')
    .action(async (kind: string | undefined, names: string[], opts: { filename?: string; namespace?: string }) => {
      let out: string;
      if (opts.filename) {
        const docs = parseResourceText(readInput(opts.filename), opts.filename);
        out = await withStore((s) => writeResources(s, 'delete', docs));
      } else {
        if (!kind || names.length === 0) throw new ValidationError('delete', 'name a kind and at least one resource, or pass -f <file>');
        out = await withStore((s) => deleteByName(s, kind, names, opts.namespace === undefined ? {} : { namespace: opts.namespace }));
      }
      process.stdout.write(out + '\n');
    });
  program
    .command('get')
    .description('list resources of a kind (all, or by name)')
    .argument('<kind>', 'ippools | profiles | globalnetworkpolicies | networkpolicies | bgppeers | bgpconfigurations | nodes | workloadendpoints')
    .argument('[names...]', 'resource names (workload endpoints: an ID or a unique prefix of one)')
    .option('-o, --output <format>', 'yaml | json | wide (default: a table)')
    .option('-n, --namespace <namespace>', 'namespace of NetworkPolicies (default: default)')
    .option('-A, --all-namespaces', 'NetworkPolicies of every namespace')
    .option('--selector <expr>', "only resources whose labels match this Calico selector (workloadendpoints, nodes), e.g. \"role == 'db'\"")
    .action(async (kind: string, names: string[], opts: { output?: string; namespace?: string; allNamespaces?: boolean; selector?: string }) => {
      const output = opts.output ?? 'table';
      if (!['table', 'wide', 'yaml', 'json'].includes(output)) throw new ValidationError('--output', 'must be yaml, json or wide');
      const options = {
        ...(opts.namespace !== undefined ? { namespace: opts.namespace } : {}),
        ...(opts.allNamespaces ? { allNamespaces: true } : {}),
        ...(opts.selector !== undefined ? { selector: opts.selector } : {}),
      };
      process.stdout.write((await withStore((s) => getResources(s, kind, names, output as OutputFormat, options))) + '\n');
    });

  program
    .command('selector')
    .description('print the canonical form of a Calico selector and, with --labels, whether it matches them (no datastore needed)')
    .argument('<expr>', "a selector, e.g. \"role == 'db' && !has(debug)\"")
    .option('--labels <list>', "labels to evaluate it against: k=v,k2=v2 (split on the first '='; '' is no labels)")
    .action((expr: string, opts: { labels?: string }) => {
      process.stdout.write(selectorCommand(expr, opts.labels) + '\n');
    });

  node
    .command('checksystem')
    .description('check that this host can run a node: iproute2, veth, VXLAN/IPIP, ipset, iptables backend, ip_forward, BIRD 2, etcd, Docker; exit code 1 when something required is missing')
    .action(async () => {
      const config = loadConfig();
      const report = await checkSystem({
        runner: new ExecFileRunner(),
        bgp: config.networkingBackend === 'bird',
        dockerSocket: config.dockerSocket,
        pingEtcd: () => pingEtcd(config.etcd.endpoints),
      });
      process.stdout.write(report.text + '\n');
      if (!report.ok) process.exitCode = 1;
    });

  node
    .command('status')
    .description("is the node running, and the state of each BGP session (BIRD's view)")
    .action(async () => {
      const runDir = process.env.CALICO_TS_RUN_DIR || '/run/calico-ts';
      // The record (tunnels, problems) is extra: without etcd the BGP part still prints.
      const readRecord = (name: string) => withStore(async (store) => (await store.get(keys.node(name)))?.value);
      process.stdout.write((await nodeStatus(runDir, new ExecFileRunner(), readRecord)) + '\n');
    });

  const fip = program
    .command('floating-ip')
    .description("a container's floating IPs: traffic to the external IP is DNATed to it, and the external IP is announced over BGP");
  fip
    .command('add')
    .description('map an external IPv4 address to an endpoint (its IPv4 address, or --internal-ip)')
    .argument('<endpoint>', 'endpoint ID or container ID (a unique prefix is enough)')
    .argument('<externalIP>', 'an IPv4 address outside the enabled pools, e.g. 172.16.9.10')
    .option('--internal-ip <ip>', "which of the endpoint's addresses (default: its IPv4 address)")
    .action(async (endpoint: string, externalIP: string, opts: { internalIp?: string }) => {
      process.stdout.write((await withStore((s) => addFloatingIp(s, endpoint, externalIP, opts.internalIp))) + '\n');
    });
  fip
    .command('remove')
    .description("remove one floating IP of an endpoint, or all of them")
    .argument('<endpoint>', 'endpoint ID or container ID (a unique prefix is enough)')
    .argument('[externalIP]', 'the floating IP to remove (default: all)')
    .action(async (endpoint: string, externalIP: string | undefined) => {
      process.stdout.write((await withStore((s) => removeFloatingIp(s, endpoint, externalIP))) + '\n');
    });
  fip
    .command('list')
    .description('every floating IP in the cluster')
    .action(async () => {
      process.stdout.write((await withStore(listFloatingIps)) + '\n');
    });

  const ipam = program.command('ipam').description('IP address management');
  ipam
    .command('show')
    .description('list pools, blocks per host and the addresses in use')
    .action(async () => {
      process.stdout.write((await withStore(ipamShow)) + '\n');
    });
  return program;
}

export async function main(argv: string[]): Promise<void> {
  try {
    await buildProgram().parseAsync(argv);
  } catch (err) {
    const message = err instanceof CalicoError ? err.message : err instanceof Error ? err.message : String(err);
    process.stderr.write(`error: ${message}\n`);
    process.exitCode = 1;
  }
}

await main(process.argv);
