#!/usr/bin/env node
/**
 * The `calico-ts` command. Errors print their message (which says what to do) and exit 1.
 */
import { readFileSync } from 'node:fs';
import { Command } from 'commander';
import { EtcdDatastore } from '../datastore/etcd.js';
import { CalicoError } from '../lib/errors.js';
import { createLogger } from '../lib/log.js';
import { loadConfig } from '../node/config.js';
import { NodeAgent } from '../node/agent.js';
import { ipamShow } from './ipam-show.js';

export const VERSION: string = (
  JSON.parse(readFileSync(new URL('../../../package.json', import.meta.url), 'utf8')) as { version: string }
).version;

async function withStore<T>(fn: (store: EtcdDatastore) => Promise<T>): Promise<T> {
  const store = new EtcdDatastore({ ...loadConfig().etcd, dialTimeoutMs: 3_000 });
  try {
    return await fn(store);
  } finally {
    await store.close();
  }
}

export function buildProgram(): Command {
  const program = new Command('calico-ts').description('Calico-style layer-3 networking for Docker').showHelpAfterError();
  program
    .command('version')
    .description('print the calico-ts version')
    .action(() => {
      process.stdout.write(`calico-ts ${VERSION}\n`);
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
