// What a read is told once the store has stopped itself (fail-stop): DuckDB
// invalidates a database after a failed WAL write or checkpoint, and every
// later query on it fails with "database has been invalidated". Such a read
// is answered 503 TL_STORE_FAILED with Retry-After (another node, or this one
// after a restart, can answer it), never 500; what is still readable (sealed
// archives, a segment that was not written) keeps being served.

import { Errors, isServiceError } from '../errors.js'

const INVALIDATED_RE = /invalidated|FATAL Error/i

/** The error a read that failed with `err` throws: the fail-stop refusal when the store is failed or DuckDB says it is invalid; else `err`. */
export function readFailure(err: unknown, failure: string | null): unknown {
  if (isServiceError(err)) return err
  const e = err as { message?: unknown } | null
  const message = typeof e?.message === 'string' ? e.message : String(err)
  if (failure !== null || INVALIDATED_RE.test(message)) return new Errors.StoreFailedRead()
  return err
}
