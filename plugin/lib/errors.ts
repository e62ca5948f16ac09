/**
 * The one catalogue of calico-ts errors. Every failure a user can see is one of these classes, each
 * with a stable `code`. The plugin API turns them into `{"Err": message}` in exactly one place
 * (api/errors-middleware.ts); the CLI prints `message` and exits non-zero.
 *
 * Messages are read verbatim by Docker users, so they say what to do, not just what went wrong.
 */

export type ErrorCode =
  | 'BAD_REQUEST'
  | 'VALIDATION'
  | 'NOT_FOUND'
  | 'ALREADY_EXISTS'
  | 'UPDATE_CONFLICT'
  | 'POOL_NOT_FOUND'
  | 'POOL_EXHAUSTED'
  | 'ADDRESS_IN_USE'
  | 'UNSUPPORTED'
  | 'DATASTORE'
  | 'COMMAND_FAILED'
  | 'INTERNAL';

export abstract class CalicoError extends Error {
  abstract readonly code: ErrorCode;
  /** HTTP status for the plugin API. libnetwork treats any non-200 as failure and reads `Err`. */
  readonly httpStatus: number = 500;
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
  }
}

/** The request itself is malformed: bad JSON, a missing field, a value of the wrong type. */
export class BadRequestError extends CalicoError {
  readonly code = 'BAD_REQUEST' as const;
}

/** A value is well-formed but not acceptable (invalid CIDR, name with shell characters, ...). */
export class ValidationError extends CalicoError {
  readonly code = 'VALIDATION' as const;
  constructor(
    readonly field: string,
    reason: string,
  ) {
    super(field ? `${field}: ${reason}` : reason);
  }
}

/** A resource that must exist does not. `kind` and `id` name it for the message. */
export class NotFoundError extends CalicoError {
  readonly code = 'NOT_FOUND' as const;
  constructor(
    readonly kind: string,
    readonly id: string,
    hint = '',
  ) {
    super(`${kind} ${JSON.stringify(id)} does not exist${hint ? `; ${hint}` : ''}`);
  }
}

export class AlreadyExistsError extends CalicoError {
  readonly code = 'ALREADY_EXISTS' as const;
  constructor(
    readonly kind: string,
    readonly id: string,
    hint = '',
  ) {
    super(`${kind} ${JSON.stringify(id)} already exists${hint ? `; ${hint}` : ''}`);
  }
}

/** A compare-and-swap lost against a concurrent writer. Retried by callers with bounded loops. */
export class UpdateConflictError extends CalicoError {
  readonly code = 'UPDATE_CONFLICT' as const;
  constructor(readonly key: string) {
    super(`concurrent update of ${key}; try again`);
  }
}

export class PoolNotFoundError extends CalicoError {
  readonly code = 'POOL_NOT_FOUND' as const;
}

export class PoolExhaustedError extends CalicoError {
  readonly code = 'POOL_EXHAUSTED' as const;
}

export class AddressInUseError extends CalicoError {
  readonly code = 'ADDRESS_IN_USE' as const;
}

/** A Docker option or feature calico-ts deliberately does not offer. */
export class UnsupportedError extends CalicoError {
  readonly code = 'UNSUPPORTED' as const;
}

export class DatastoreError extends CalicoError {
  readonly code = 'DATASTORE' as const;
}

/** A system command exited non-zero. Carries argv, exit code, signal and stderr (like execa). */
export class CommandFailedError extends CalicoError {
  readonly code = 'COMMAND_FAILED' as const;
  constructor(
    readonly argv: readonly string[],
    readonly exitCode: number | null,
    readonly signal: string | null,
    readonly stderr: string,
  ) {
    const how = signal ? `killed by ${signal}` : `exit code ${exitCode ?? '?'}`;
    super(`command failed (${how}): ${argv.join(' ')}${stderr.trim() ? `: ${stderr.trim()}` : ''}`);
  }
}

export class InternalError extends CalicoError {
  readonly code = 'INTERNAL' as const;
}

/** Every code, for the test that keeps this catalogue, the README and the classes in step. */
export const ERROR_CODES: readonly ErrorCode[] = [
  'BAD_REQUEST',
  'VALIDATION',
  'NOT_FOUND',
  'ALREADY_EXISTS',
  'UPDATE_CONFLICT',
  'POOL_NOT_FOUND',
  'POOL_EXHAUSTED',
  'ADDRESS_IN_USE',
  'UNSUPPORTED',
  'DATASTORE',
  'COMMAND_FAILED',
  'INTERNAL',
];

/** Normalise anything thrown into a CalicoError, keeping the original as `cause`. */
export function asCalicoError(err: unknown): CalicoError {
  if (err instanceof CalicoError) return err;
  const message = err instanceof Error ? err.message : String(err);
  return new InternalError(`internal error: ${message}`, { cause: err });
}
