/**
 * Structured logging: pino, one JSON object per line on stderr (stdout belongs to CLI output),
 * filtered by LOG_LEVEL (debug|info|warn|error|silent, default info). Callers see only the small
 * Logger interface below, so the backend stays swappable and unit tests can capture lines.
 *
 * Line shape: {"level":"info","time":"<ISO 8601>", ...bindings, ...fields, "msg":"..."}.
 */
import { pino, stdTimeFunctions, type DestinationStream, type Logger as PinoLogger } from 'pino';
import { ValidationError } from './errors.js';

export const LOG_LEVELS = ['debug', 'info', 'warn', 'error', 'silent'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

export interface Logger {
  debug(msg: string, fields?: Record<string, unknown>): void;
  info(msg: string, fields?: Record<string, unknown>): void;
  warn(msg: string, fields?: Record<string, unknown>): void;
  error(msg: string, fields?: Record<string, unknown>): void;
  child(fields: Record<string, unknown>): Logger;
}

/** LOG_LEVEL's value: unset or empty = info; anything unknown is an error naming the choices. */
export function parseLogLevel(value: string | undefined): LogLevel {
  const v = (value || 'info').toLowerCase();
  if ((LOG_LEVELS as readonly string[]).includes(v)) return v as LogLevel;
  throw new ValidationError('LOG_LEVEL', `${JSON.stringify(value)} must be one of ${LOG_LEVELS.join(', ')}`);
}

/** Errors anywhere in the fields print as {message, code}: JSON.stringify would print `{}`. */
function plainErrors(fields: Record<string, unknown>): Record<string, unknown> {
  let out = fields;
  for (const [k, v] of Object.entries(fields)) {
    if (v instanceof Error) {
      if (out === fields) out = { ...fields };
      out[k] = { message: v.message, code: (v as { code?: unknown }).code };
    }
  }
  return out;
}

function wrap(p: PinoLogger): Logger {
  return {
    debug: (m, f) => p.debug(plainErrors(f ?? {}), m),
    info: (m, f) => p.info(plainErrors(f ?? {}), m),
    warn: (m, f) => p.warn(plainErrors(f ?? {}), m),
    error: (m, f) => p.error(plainErrors(f ?? {}), m),
    child: (f) => wrap(p.child(plainErrors(f))),
  };
}

/**
 * A logger at `level` with `base` fields on every line. `sink` receives each line without its
 * newline (tests); the default writes synchronously to stderr, so nothing is lost on process.exit.
 */
export function createLogger(level: LogLevel = parseLogLevel(process.env.LOG_LEVEL), base: Record<string, unknown> = {}, sink?: (line: string) => void): Logger {
  const destination: DestinationStream = sink ? { write: (line: string) => sink(line.replace(/\n$/, '')) } : pino.destination({ dest: 2, sync: true });
  return wrap(
    pino(
      {
        level,
        base: plainErrors(base),
        timestamp: stdTimeFunctions.isoTime,
        formatters: { level: (label) => ({ level: label }) },
        // plainErrors already shaped errors; pino's own `err` serializer would add type and stack.
        serializers: { err: (v: unknown) => v },
      },
      destination,
    ),
  );
}

export const silentLogger: Logger = createLogger('silent', {}, () => {});
