// Proves the per-query time bound: a read that runs past TOKENLEDGER_QUERY_TIMEOUT
// is interrupted inside DuckDB (on the closed-file pool and on a live segment's
// read connection) and fails with TL_QUERY_TIMEOUT (503); the connections it
// used go back to their pools working, so the next query answers normally.

import assert from 'node:assert/strict'
import { test } from 'node:test'
import { build, event, post, totals } from './helper.js'

/** A DuckDB statement that would run for minutes. */
const ENDLESS = 'SELECT count(*) FROM range(1000000000000) t(i) WHERE i % 7 = 3'

test('a read past its time bound is interrupted and answered TL_QUERY_TIMEOUT; its connections stay usable', async (t) => {
  const { app } = await build(t, { TOKENLEDGER_QUERY_TIMEOUT: '300ms' })
  assert.equal((await post(app, [event()])).body.accepted, 1)
  for (const where of ['files', 'live'] as const) {
    const started = performance.now()
    await assert.rejects(
      app.store.snapshot(async (snap) => {
        if (where === 'files') return snap.files((conn) => conn.run(ENDLESS))
        const live = snap.parts.find((p) => p.alias === null)!
        return live.live((conn) => conn.run(ENDLESS))
      }),
      (err: Error & { code?: string; statusCode?: number }) => {
        assert.equal(err.code, 'TL_QUERY_TIMEOUT', String(err))
        assert.equal(err.statusCode, 503)
        assert.match(err.message, /300 ms/)
        return true
      },
    )
    // Interrupted, not waited out (the statement alone would take minutes).
    assert.ok(performance.now() - started < 20_000, `${where}: took ${performance.now() - started} ms`)
    // Every pooled connection still answers (the pools are small: each is reused).
    for (let i = 0; i < 4; i++) assert.equal((await totals(app)).requests, 1)
  }
  // A read that stays inside its bound is untouched.
  const n = await app.store.snapshot((snap) => snap.files(async (conn) => (await conn.runAndReadAll('SELECT 41 + 1 AS n')).getRows()[0]![0]))
  assert.equal(n, 42)
})
