// One explicit DuckDB transaction around a piece of work.

import type { DuckDBConnection } from '@duckdb/node-api'

/**
 * Runs `fn` between BEGIN and COMMIT on `conn`. When `fn` (or the COMMIT)
 * throws, the transaction is rolled back (a failing ROLLBACK is ignored: the
 * transaction is gone either way) and the error rethrown.
 */
export async function inTransaction<T>(conn: DuckDBConnection, fn: () => Promise<T>): Promise<T> {
  await conn.run('BEGIN TRANSACTION')
  try {
    const out = await fn()
    await conn.run('COMMIT')
    return out
  } catch (err) {
    await conn.run('ROLLBACK').catch(() => undefined)
    throw err
  }
}
