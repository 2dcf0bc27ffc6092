// Proves that segments written before the event schema grew stay readable:
// an archive and a pending file whose `events` table lacks columns added
// since (here: reasoning_tokens, ttft_ms, stream, tags, customer_id) are
// attached at start-up, read through a projection that gives the missing
// columns their null/default value, answer every read route (event by id,
// lists, totals, time series, exports), and the pending one is sealed into an
// archive of the current schema. A file lacking a column every version has is
// refused loudly rather than read wrong.

import assert from 'node:assert/strict'
import { copyFile, readdir } from 'node:fs/promises'
import path from 'node:path'
import { test } from 'node:test'
import { DuckDBInstance } from '@duckdb/node-api'
import { build, event, post, rollover, segments, T0 } from './helper.js'
import { EVENT_COLUMNS, eventsRelation } from '../src/store/schema.js'

/** Columns the "previous schema" did not have yet. */
const ADDED_SINCE = ['reasoning_tokens', 'ttft_ms', 'stream', 'tags', 'customer_id']

async function withDb(file: string, fn: (run: (sql: string) => Promise<void>) => Promise<void>): Promise<void> {
  const db = await DuckDBInstance.create(file)
  const conn = await db.connect()
  try {
    await fn(async (sql) => {
      await conn.run(sql)
    })
    await conn.run('CHECKPOINT')
  } finally {
    conn.closeSync()
    db.closeSync()
  }
}

test('an archive and a pending file of the previous schema answer every read route; missing columns read as null/default', async (t) => {
  const built = await build(t)
  const full = { reasoning_tokens: 7, ttft_ms: 120, stream: true, tags: { env: 'prod' }, customer_id: 'cust_1', team_id: 'team_1', detail: { prompt: 'hi' } }
  const old = [0, 1, 2].map((i) => event({ timestamp: T0 - (50 - i) * 60_000, ...full }))
  assert.equal((await post(built.app, old)).body.accepted, 3)
  await rollover(built.app)
  await built.app.store.settle()
  const archived = (await segments(built.app)).find((s) => s.state === 'archived')!
  assert.ok(archived, 'one archived segment')
  const current = event({ timestamp: T0 - 10 * 60_000, ...full })
  assert.equal((await post(built.app, [current])).body.accepted, 1)
  await built.app.close()

  // The archive loses the columns added since; a pending file of the same shape holds events with new ids.
  const archive = path.join(built.dataDir, 'archive', (await readdir(path.join(built.dataDir, 'archive'))).find((f) => /^seg-\d+\.duckdb$/.test(f))!)
  const pending = path.join(built.dataDir, 'pending', 'seg-000000001000.duckdb')
  await copyFile(archive, pending)
  await withDb(pending, async (run) => {
    await run(`UPDATE events SET event_id = 'old-' || event_id, ts = ts + INTERVAL 5 MINUTE`)
    await run(`CREATE TABLE IF NOT EXISTS event_details (event_id VARCHAR NOT NULL, ts TIMESTAMP NOT NULL, detail VARCHAR NOT NULL)`) // archives keep details apart
    await run(`UPDATE events SET has_detail = false`)
    for (const c of ADDED_SINCE) await run(`ALTER TABLE events DROP COLUMN ${c}`)
  })
  await withDb(archive, async (run) => {
    for (const c of ADDED_SINCE) await run(`ALTER TABLE events DROP COLUMN ${c}`)
  })

  const app = await built.restart()
  await app.store.settle() // the pending file is sealed (through the projection) into a current archive
  const states = (await segments(app)).map((s) => [s.id, s.state])
  assert.ok(states.some(([id, state]) => id === 1000 && state === 'archived'), JSON.stringify(states))

  for (const [id, shifted] of [...old.map((e) => [String(e.event_id), 0] as const), ...old.map((e) => [`old-${String(e.event_id)}`, 5] as const)]) {
    const res = await app.inject({ url: `/v1/events/${id}` })
    assert.equal(res.statusCode, 200, `${id}: ${res.body}`)
    const got = res.json() as Record<string, unknown>
    assert.deepEqual(
      { reasoning_tokens: got.reasoning_tokens, ttft_ms: got.ttft_ms, stream: got.stream, tags: got.tags, customer_id: got.customer_id },
      { reasoning_tokens: 0, ttft_ms: null, stream: null, tags: null, customer_id: null },
      id,
    )
    // Columns the old schema had are intact.
    const source = old.find((e) => id.endsWith(String(e.event_id)))!
    assert.equal(got.team_id, 'team_1')
    assert.equal(got.input_tokens, source.input_tokens)
    assert.equal(Date.parse(String(got.timestamp)), Number(source.timestamp) + shifted * 60_000)
  }
  const current2 = (await app.inject({ url: `/v1/events/${String(current.event_id)}` })).json() as Record<string, unknown>
  assert.equal(current2.reasoning_tokens, 7)
  assert.deepEqual(current2.tags, { env: 'prod' })

  const list = (await app.inject({ url: `/v1/events?from=${T0 - 3_600_000}&to=${T0}&limit=100` })).json() as { events: unknown[] }
  assert.equal(list.events.length, 7)
  // Unaligned edges read raw rows of the old archive; the aligned middle its rollups.
  const usage = await app.inject({ url: `/v1/usage?from=${T0 - 3_600_000 + 1234}&to=${T0}&group_by=customer_id` })
  assert.equal(usage.statusCode, 200, usage.body)
  assert.equal((usage.json() as { totals: { requests: number } }).totals.requests, 7)
  const series = await app.inject({ url: `/v1/usage/timeseries?from=${T0 - 3_600_000 + 1234}&to=${T0}&bucket=15m&tz=Asia/Kolkata` })
  assert.equal(series.statusCode, 200, series.body)
  for (const format of ['csv', 'ndjson', 'parquet']) {
    const res = await app.inject({ url: `/v1/export?from=${T0 - 3_600_000}&to=${T0}&format=${format}` })
    assert.equal(res.statusCode, 200, `${format}: ${res.body}`)
    if (format === 'ndjson') assert.equal(res.body.trim().split('\n').length, 7)
  }
})

test('a file without a column every schema version has is refused, naming the column', () => {
  const present = ['event_id', 'ts', 'provider', 'model']
  assert.throws(() => eventsRelation('"x".events', present), /has no column key_id, which every schema version has/)
  const all = ['event_id', 'ts', 'key_id', 'provider', 'model', 'status_code', 'input_tokens', 'output_tokens', 'fingerprint']
  const relation = eventsRelation('"x".events', all)
  assert.match(relation, /0::BIGINT AS reasoning_tokens/)
  assert.match(relation, /NULL::VARCHAR AS tags/)
  // Every column present but in another order (a table grown by ADD COLUMN): still projected, so positional copies stay right.
  const current = EVENT_COLUMNS.map((c) => c.name)
  assert.equal(eventsRelation('"x".events', current), '"x".events')
  const reordered = [...current.filter((c) => c !== 'tags'), 'tags']
  assert.match(eventsRelation('"x".events', reordered), /^\(SELECT event_id, ts, .* FROM "x".events\)$/)
})

test('an active segment of the previous schema (an upgrade restart) is moved to pending and sealed; a fresh one takes appends', async (t) => {
  const built = await build(t)
  const e = event({ reasoning_tokens: 3, tags: { a: 'b' } })
  assert.equal((await post(built.app, [e])).body.accepted, 1)
  await built.app.close()
  const activeDir = path.join(built.dataDir, 'active')
  const [file] = (await readdir(activeDir)).filter((f) => f.endsWith('.duckdb'))
  await withDb(path.join(activeDir, file!), async (run) => {
    for (const c of ADDED_SINCE) await run(`ALTER TABLE events DROP COLUMN ${c}`)
  })
  const app = await built.restart()
  const got = (await app.inject({ url: `/v1/events/${String(e.event_id)}` })).json() as Record<string, unknown>
  assert.equal(got.reasoning_tokens, 0)
  assert.equal(got.tags, null)
  const fresh = event({ reasoning_tokens: 5 })
  assert.equal((await post(app, [fresh, e])).body.accepted, 1, 'the replay of the old event is still a duplicate')
  await app.store.settle()
  const states = (await segments(app)).map((s) => s.state).sort()
  assert.deepEqual(states, ['active', 'archived'])
  assert.equal(((await app.inject({ url: `/v1/events/${String(fresh.event_id)}` })).json() as { reasoning_tokens: number }).reasoning_tokens, 5)
  assert.equal((await app.inject({ url: `/v1/usage?from=${T0 - 3_600_000}&to=${T0}` })).json().totals.requests, 2)
})
