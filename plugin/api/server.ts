/**
 * The plugin's HTTP surface: Docker's plugin protocol over a unix socket. This is the one place where
 * errors become `{"Err": ...}` (HTTP 500): handlers throw typed CalicoErrors and return plain bodies.
 */
import { chmodSync, existsSync, mkdirSync, unlinkSync } from 'node:fs';
import { dirname } from 'node:path';
import type { Server } from 'node:http';
import express, { type NextFunction, type Request, type Response } from 'express';
import { BadRequestError, asCalicoError } from '../lib/errors.js';
import type { Logger } from '../lib/log.js';
import type { IpamDriver } from './ipam-driver.js';
import type { NetworkDriver } from './network-driver.js';
import { asBody, type Body } from './protocol.js';

export interface PluginHandlers {
  network: NetworkDriver;
  ipam: IpamDriver;
  log: Logger;
}

type Handler = (body: Body) => Body | Promise<Body>;

export function routes({ network, ipam }: PluginHandlers): Record<string, Handler> {
  return {
    '/Plugin.Activate': () => ({ Implements: ['NetworkDriver', 'IpamDriver'] }),
    '/NetworkDriver.GetCapabilities': () => network.getCapabilities(),
    '/NetworkDriver.CreateNetwork': (b) => network.createNetwork(b),
    '/NetworkDriver.DeleteNetwork': (b) => network.deleteNetwork(b),
    '/NetworkDriver.CreateEndpoint': (b) => network.createEndpoint(b),
    '/NetworkDriver.EndpointOperInfo': (b) => network.endpointOperInfo(b),
    '/NetworkDriver.DeleteEndpoint': (b) => network.deleteEndpoint(b),
    '/NetworkDriver.Join': (b) => network.join(b),
    '/NetworkDriver.Leave': (b) => network.leave(b),
    '/NetworkDriver.DiscoverNew': () => network.discover(),
    '/NetworkDriver.DiscoverDelete': () => network.discover(),
    '/NetworkDriver.ProgramExternalConnectivity': (b) => network.programExternalConnectivity(b),
    '/NetworkDriver.RevokeExternalConnectivity': (b) => network.programExternalConnectivity(b),
    '/IpamDriver.GetCapabilities': () => ipam.getCapabilities(),
    '/IpamDriver.GetDefaultAddressSpaces': () => ipam.getDefaultAddressSpaces(),
    '/IpamDriver.RequestPool': (b) => ipam.requestPool(b),
    '/IpamDriver.ReleasePool': (b) => ipam.releasePool(b),
    '/IpamDriver.RequestAddress': (b) => ipam.requestAddress(b),
    '/IpamDriver.ReleaseAddress': (b) => ipam.releaseAddress(b),
  };
}

export function createApp(handlers: PluginHandlers): express.Express {
  const app = express();
  const log = handlers.log;
  app.disable('x-powered-by');
  // Docker sends application/vnd.docker.plugins.v1.x+json (or nothing): parse every body as JSON.
  // Every Docker call, answered or failed, logged once with its latency (debug: one line per call).
  app.use((req: Request, res: Response, next: NextFunction) => {
    const started = performance.now();
    res.once('finish', () => log.debug('docker call', { path: req.path, status: res.statusCode, ms: +(performance.now() - started).toFixed(2) }));
    next();
  });
  app.use(express.json({ type: () => true, limit: '1mb', strict: false }));
  for (const [path, handler] of Object.entries(routes(handlers))) {
    app.post(path, async (req: Request, res: Response, next: NextFunction) => {
      try {
        const reply = await handler(asBody(req.body ?? {}));
        res.type('application/vnd.docker.plugins.v1+json').json(reply);
      } catch (err) {
        next(err);
      }
    });
  }
  app.use((req: Request, res: Response) => {
    res.status(404).json({ Err: `unknown plugin call ${req.method} ${req.path}` });
  });
  // The single place errors are turned into Docker's {"Err": ...}.
  app.use((err: unknown, req: Request, res: Response, _next: NextFunction) => {
    const parseFailure = (err as { type?: string }).type === 'entity.parse.failed';
    const error = parseFailure ? new BadRequestError(`request body is not valid JSON: ${(err as Error).message}`) : asCalicoError(err);
    log.warn('docker call failed', { path: req.path, code: error.code, error: error.message });
    res.status(error.httpStatus).type('application/vnd.docker.plugins.v1+json').json({ Err: error.message });
  });
  return app;
}

/** Listens on a unix socket (mode 0660), replacing a stale socket file from a previous run. */
export async function listenOnSocket(app: express.Express, socketPath: string): Promise<Server> {
  mkdirSync(dirname(socketPath), { recursive: true });
  if (existsSync(socketPath)) unlinkSync(socketPath);
  const server = await new Promise<Server>((resolve, reject) => {
    const s = app.listen(socketPath, () => resolve(s));
    s.once('error', reject);
  });
  chmodSync(socketPath, 0o660);
  return server;
}
