// The one table of error codes and their HTTP statuses. Routes throw these;
// Fastify's error handler turns them into {statusCode, code, error, message}.
// 5xx messages never carry internals (the cause goes to the log only).

import createError from '@fastify/error'

export const Errors = {
  BadBody: createError<[string]>('TL_BAD_BODY', 'malformed body: %s', 400),
  BadQuery: createError<[string]>('TL_BAD_QUERY', 'invalid query: %s', 400),
  UnsupportedEncoding: createError<[string, string]>('TL_UNSUPPORTED_ENCODING', 'unsupported Content-Encoding "%s"; send gzip or identity (or none), with Content-Type %s', 415),
  UnsupportedMediaType: createError<[string, string]>('TL_UNSUPPORTED_MEDIA_TYPE', '%s; send Content-Type %s, with Content-Encoding gzip or identity (or none)', 415),
  TooManyEvents: createError<[number, number]>('TL_TOO_MANY_EVENTS', 'batch holds %d events; at most %d are allowed per request', 413),
  NotFound: createError<[string]>('TL_NOT_FOUND', '%s', 404),
  QueueFull: createError('TL_QUEUE_FULL', 'ingest queue is full; retry after the Retry-After delay', 503),
  GateTimeout: createError('TL_GATE_TIMEOUT', 'the store is busy; retry after the Retry-After delay', 503),
  Draining: createError('TL_DRAINING', 'the service is shutting down; retry on another instance', 503),
  StoreFailed: createError('TL_STORE_FAILED', 'the store cannot accept writes; nothing from this request was stored', 503),
  CommitFailed: createError('TL_STORE_FAILED', 'the commit holding this request failed; DuckDB may still have written it to its WAL, so it may or may not be stored: retry it with the same event ids once the service answers again (an event already stored is then a duplicate, never counted twice)', 503),
  StoreFailedRead: createError('TL_STORE_FAILED', 'the store stopped itself after a write failure (fail-stop) and cannot answer this read until it is restarted; nothing is lost', 503),
  QueryBusy: createError('TL_QUERY_BUSY', 'too many queries in flight; retry after the Retry-After delay', 503),
  QueryTooLarge: createError<[string]>('TL_QUERY_TOO_LARGE', 'query too large: %s', 400),
  Unauthorized: createError<[string]>('TL_UNAUTHORIZED', '%s', 401),
  Forbidden: createError<[string, string]>('TL_FORBIDDEN', 'this route needs a token with the %s scope; this token has: %s', 403),
  RateLimited: createError<[string]>('TL_RATE_LIMITED', 'rate limit exceeded for this token; retry in %s', 429),
  Overloaded: createError<[string]>('TL_OVERLOADED', 'the service is overloaded (%s); retry after the Retry-After delay', 503),
  BackupRunning: createError('TL_BACKUP_RUNNING', 'a backup is already running; wait for its answer before starting another', 409),
  RepriceRunning: createError('TL_REPRICE_RUNNING', 'a reprice is already running; wait for its answer before starting another', 409),
  RepriceBlocked: createError<[number, string]>('TL_REPRICE_BLOCKED', 'segment %d of the window is not sealed yet (%s); nothing was re-priced from it on: retry once it is sealed', 409),
  NoPrices: createError('TL_NO_PRICES', 'no price table is installed (PUT /v1/admin/prices), or TOKENLEDGER_PRICING is off: there is nothing to price from', 409),
  ClientBusy: createError<[string]>('TL_CLIENT_BUSY', 'this client has %s; retry after the Retry-After delay', 429),
  SlowBody: createError<[number, number]>('TL_SLOW_BODY', 'the body arrived at %d bytes/s, below the minimum of %d (TOKENLEDGER_MIN_BODY_RATE); nothing of it was stored', 408),
  RolloverFailed: createError<[string]>('TL_ROLLOVER_FAILED', 'the rollover failed at its %s step (see the server log); nothing acknowledged is lost: retry after the Retry-After delay', 503),
  QueryTimeout: createError<[number]>('TL_QUERY_TIMEOUT', 'the query was stopped after its time limit of %d ms; narrow the window or the filters', 503),
} as const

/** Errors that mean "not stored, try again": the reply carries Retry-After. */
export const RETRYABLE_CODES = new Set(['TL_QUEUE_FULL', 'TL_GATE_TIMEOUT', 'TL_DRAINING', 'TL_STORE_FAILED', 'TL_QUERY_BUSY', 'TL_OVERLOADED', 'TL_QUERY_TIMEOUT', 'TL_CLIENT_BUSY', 'TL_ROLLOVER_FAILED'])

/** An error of ours (a `TL_*` code): already what the client is to be told. */
export function isServiceError(err: unknown): boolean {
  const code = (err as { code?: unknown } | null)?.code
  return typeof code === 'string' && code.startsWith('TL_')
}

/** What the client is told about an error, whatever the body format it is written in (ours, problem+json, OTLP's Status). */
export interface ErrorAnswer {
  status: number
  code: string
  /** The status's reason phrase, e.g. "Bad Request". */
  title: string
  message: string
  /** Send Retry-After (the request was not stored; retrying later may succeed). */
  retryAfter: boolean
  /** A 5xx that is not one of ours: log it, tell the client nothing of it. */
  internal: boolean
}

/** The one reading of a thrown error as an answer: 5xx internals are never told. */
export function describeError(error: { statusCode?: number; code?: string; message: string; validation?: unknown }): ErrorAnswer {
  const status = error.statusCode && error.statusCode >= 400 && error.statusCode <= 599 ? error.statusCode : 500
  const retryable = error.code !== undefined && RETRYABLE_CODES.has(error.code)
  if (status >= 500 && !retryable) {
    return { status: 500, code: 'TL_INTERNAL', title: reasonPhrase(500), message: 'internal error; see the server log', retryAfter: false, internal: true }
  }
  const code = error.validation ? 'TL_INVALID_REQUEST' : (error.code ?? 'TL_ERROR')
  return { status, code, title: reasonPhrase(status), message: error.message, retryAfter: retryable || status === 503, internal: false }
}

export function reasonPhrase(status: number): string {
  const phrases: Record<number, string> = {
    400: 'Bad Request',
    401: 'Unauthorized',
    403: 'Forbidden',
    404: 'Not Found',
    408: 'Request Timeout',
    409: 'Conflict',
    413: 'Payload Too Large',
    415: 'Unsupported Media Type',
    422: 'Unprocessable Entity',
    429: 'Too Many Requests',
    500: 'Internal Server Error',
    503: 'Service Unavailable',
  }
  return phrases[status] ?? 'Error'
}
