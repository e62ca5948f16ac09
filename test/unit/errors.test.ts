import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import * as errors from '../../plugin/lib/errors.js';

describe('error catalogue', () => {
  const instances: errors.CalicoError[] = [
    new errors.BadRequestError('x'),
    new errors.ValidationError('field', 'bad'),
    new errors.NotFoundError('network', 'n1'),
    new errors.AlreadyExistsError('pool', 'p'),
    new errors.UpdateConflictError('/k'),
    new errors.PoolNotFoundError('x'),
    new errors.PoolExhaustedError('x'),
    new errors.AddressInUseError('x'),
    new errors.UnsupportedError('x'),
    new errors.DatastoreError('x'),
    new errors.CommandFailedError(['ip', 'link'], 2, null, 'RTNETLINK answers: File exists\n'),
    new errors.InternalError('x'),
  ];

  it('has exactly one class per code, and every code is listed', () => {
    assert.deepEqual(instances.map((e) => e.code).sort(), [...errors.ERROR_CODES].sort());
    for (const e of instances) assert.equal(e.httpStatus, 500, e.code);
  });

  it('messages name the thing and say what to do', () => {
    assert.equal(new errors.ValidationError('subnet', 'is bad').message, 'subnet: is bad');
    assert.equal(new errors.NotFoundError('network', 'n1', 'recreate it').message, 'network "n1" does not exist; recreate it');
    const cmd = new errors.CommandFailedError(['ip', 'link'], 2, null, 'RTNETLINK answers: File exists\n');
    assert.equal(cmd.message, 'command failed (exit code 2): ip link: RTNETLINK answers: File exists');
    assert.deepEqual(cmd.argv, ['ip', 'link']);
  });

  it('wraps anything else as INTERNAL, keeping the cause', () => {
    const cause = new TypeError('boom');
    const wrapped = errors.asCalicoError(cause);
    assert.equal(wrapped.code, 'INTERNAL');
    assert.equal(wrapped.cause, cause);
    assert.equal(errors.asCalicoError(instances[0]), instances[0]);
  });

  it('the API maps errors to {"Err"} in exactly one place', () => {
    const server = readFileSync(new URL('../../../plugin/api/server.ts', import.meta.url), 'utf8');
    assert.equal(server.match(/Err:/g)?.length, 2, 'the error handler and the 404 handler');
    for (const f of ['network-driver.ts', 'ipam-driver.ts', 'protocol.ts']) {
      const src = readFileSync(new URL(`../../../plugin/api/${f}`, import.meta.url), 'utf8');
      assert.doesNotMatch(src, /Err\b/, f);
    }
  });
});
