import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import request from 'supertest';
import { createApp } from '../../plugin/api/server.js';
import type { IpamDriver } from '../../plugin/api/ipam-driver.js';
import type { NetworkDriver } from '../../plugin/api/network-driver.js';
import { NotFoundError, ValidationError } from '../../plugin/lib/errors.js';
import { createLogger, parseLogLevel } from '../../plugin/lib/log.js';
import { loadConfig } from '../../plugin/node/config.js';

function capture(level: Parameters<typeof createLogger>[0], base: Record<string, unknown> = {}) {
  const lines: string[] = [];
  const log = createLogger(level, base, (l) => lines.push(l));
  const records = () => lines.map((l) => JSON.parse(l) as Record<string, unknown>);
  return { log, lines, records };
}

describe('logging (pino)', () => {
  it('writes one JSON object per line with level label, ISO time, bindings, fields and msg', () => {
    const { log, lines, records } = capture('info', { node: 'n1' });
    log.child({ component: 'bird' }).info('BGP configuration applied', { peers: ['10.0.0.2'] });
    assert.equal(lines.length, 1);
    assert.ok(!lines[0]!.endsWith('\n'));
    const r = records()[0]!;
    assert.equal(r.level, 'info');
    assert.equal(r.msg, 'BGP configuration applied');
    assert.equal(r.node, 'n1');
    assert.equal(r.component, 'bird');
    assert.deepEqual(r.peers, ['10.0.0.2']);
    assert.ok(!Number.isNaN(Date.parse(String(r.time))) && String(r.time).includes('T'));
    assert.equal(r.pid, undefined, 'no pid/hostname noise');
  });

  it('filters by level; silent prints nothing', () => {
    const warn = capture('warn');
    warn.log.debug('d');
    warn.log.info('i');
    warn.log.warn('w');
    warn.log.error('e');
    assert.deepEqual(warn.records().map((r) => r.level), ['warn', 'error']);
    const silent = capture('silent');
    silent.log.error('nothing');
    assert.equal(silent.lines.length, 0);
  });

  it('prints errors in fields as message and code', () => {
    const { log, records } = capture('debug');
    log.warn('failed', { err: new NotFoundError('pool', 'p1'), other: 1 });
    assert.deepEqual(records()[0]!.err, { message: 'pool "p1" does not exist', code: 'NOT_FOUND' });
  });

  it('LOG_LEVEL: default info, case-insensitive, unknown values rejected with the choices', () => {
    assert.equal(parseLogLevel(undefined), 'info');
    assert.equal(parseLogLevel(''), 'info');
    assert.equal(parseLogLevel('DEBUG'), 'debug');
    assert.throws(() => parseLogLevel('verbose'), (e: unknown) => e instanceof ValidationError && /LOG_LEVEL.*debug, info, warn, error, silent/.test(e.message));
    assert.throws(() => loadConfig({ LOG_LEVEL: 'loud', NODENAME: 'n1' }), ValidationError);
    assert.equal(loadConfig({ LOG_LEVEL: 'warn', NODENAME: 'n1' }).logLevel, 'warn');
  });

  it('logs every Docker call once at debug with path, status and latency, failures too', async () => {
    const { log, records } = capture('debug');
    const network = { getCapabilities: () => ({ Scope: 'local' }) } as unknown as NetworkDriver;
    const ipam = {
      requestPool: () => {
        throw new ValidationError('Pool', 'bad');
      },
    } as unknown as IpamDriver;
    const app = createApp({ network, ipam, log });
    await request(app).post('/NetworkDriver.GetCapabilities').send('{}').expect(200);
    await request(app).post('/IpamDriver.RequestPool').send('{}').expect(500);
    const calls = records().filter((r) => r.msg === 'docker call');
    assert.deepEqual(calls.map((c) => [c.level, c.path, c.status]), [
      ['debug', '/NetworkDriver.GetCapabilities', 200],
      ['debug', '/IpamDriver.RequestPool', 500],
    ]);
    for (const c of calls) assert.ok(typeof c.ms === 'number' && c.ms >= 0);
    assert.ok(records().some((r) => r.level === 'warn' && r.msg === 'docker call failed' && r.code === 'VALIDATION'));
  });
});
