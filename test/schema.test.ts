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

test('segments of schema 2 (a stored cost_origin, reported_cost on every reported row) read as schema 3 does: same events, origins and totals', async (t) => {
  const built = await build(t, { TOKENLEDGER_PRICING: 'always' })
  let app = built.app
  const table = { prices: [{ provider: 'openai', model: 'gpt-4o-mini', per_million: { input: '0.15', output: '0.6' } }] }
  const put = await app.inject({ method: 'PUT', url: '/v1/admin/prices', headers: { 'content-type': 'application/json' }, payload: JSON.stringify(table) })
  assert.equal(put.statusCode, 200, put.body)
  const at = (i: number) => T0 - (50 - i) * 60_000
  const events = [
    event({ cost: undefined, model: 'gpt-4o-mini', input_tokens: 1_000_000, output_tokens: 100_000, timestamp: at(0) }), // priced from nothing
    event({ cost: '0.5', model: 'gpt-4o-mini', input_tokens: 1_000_000, output_tokens: 0, timestamp: at(1) }), // priced over a reported cost
    event({ cost: '0.25', model: 'llama-3', timestamp: at(2) }), // reported, no price
    event({ cost: undefined, model: 'llama-3', timestamp: at(3) }), // unknown
  ]
  assert.equal((await post(app, events)).body.accepted, 4)
  await rollover(app)
  await app.store.settle()
  const read = async (a: typeof app, prefix = '') => {
    const out: unknown[] = []
    for (const e of events) {
      const res = await a.inject({ url: `/v1/events/${prefix}${String(e.event_id)}` })
      assert.equal(res.statusCode, 200, res.body)
      const got = res.json() as Record<string, unknown>
      out.push([got.cost, got.cost_origin, got.reported_cost, got.price_ref === null ? null : 'v'])
    }
    return out
  }
  const expected = [
    ['0.21', 'priced', null, 'v'],
    ['0.15', 'priced', '0.5', 'v'],
    ['0.25', 'reported', '0.25', null],
    [null, null, null, null],
  ]
  assert.deepEqual(await read(app), expected)
  const usage = async (a: typeof app) => {
    const res = await a.inject({ url: `/v1/usage?from=${T0 - 3_600_000}&to=${T0}` })
    assert.equal(res.statusCode, 200, res.body)
    const { cost, cost_priced, cost_missing } = (res.json() as { totals: Record<string, unknown> }).totals
    return { cost, cost_priced, cost_missing }
  }
  const totals = await usage(app)
  assert.deepEqual(totals, { cost: '0.61', cost_priced: '0.36', cost_missing: 1 })
  await app.close()

  // Make the archive what schema 2 wrote: cost_origin stored, reported_cost = cost on every unpriced row; a pending copy of it with other ids.
  const archive = path.join(built.dataDir, 'archive', (await readdir(path.join(built.dataDir, 'archive'))).find((f) => /^seg-\d+\.duckdb$/.test(f))!)
  const schema2 = async (run: (sql: string) => Promise<void>) => {
    await run(`ALTER TABLE events ADD COLUMN cost_origin VARCHAR`)
    await run(`UPDATE events SET cost_origin = CASE WHEN price_ref IS NOT NULL THEN 'priced' WHEN cost IS NOT NULL THEN 'reported' END`)
    await run(`UPDATE events SET reported_cost = cost WHERE price_ref IS NULL`)
    await run(`UPDATE segment_meta SET value = '2' WHERE key = 'schema_version'`)
  }
  await withDb(archive, schema2)
  const pending = path.join(built.dataDir, 'pending', 'seg-000000001000.duckdb')
  await copyFile(archive, pending)
  await withDb(pending, async (run) => {
    await run(`UPDATE events SET event_id = 'old-' || event_id, ts = ts + INTERVAL 1 MINUTE`)
    await run(`CREATE TABLE IF NOT EXISTS event_details (event_id VARCHAR NOT NULL, ts TIMESTAMP NOT NULL, detail VARCHAR NOT NULL)`)
  })
  app = await built.restart()
  await app.store.settle() // the schema-2 pending file is sealed through the projection into a schema-3 archive
  assert.deepEqual(await read(app), expected, 'the schema-2 archive')
  assert.deepEqual(await read(app, 'old-'), expected, 'the schema-2 pending file, sealed into schema 3')
  assert.deepEqual(await usage(app), { cost: '1.22', cost_priced: '0.72', cost_missing: 2 })
  const verify = await app.inject({ url: `/v1/admin/verify?from=${T0 - 3_600_000}&to=${T0}` })
  assert.equal(verify.statusCode, 200, verify.body)
  assert.equal((verify.json() as { mismatch_count: number }).mismatch_count, 0, verify.body)
  const csv = await app.inject({ url: `/v1/export?from=${T0 - 3_600_000}&to=${T0}&format=ndjson` })
  const rows = csv.body.trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>)
  assert.equal(rows.length, 8)
  assert.deepEqual(rows.filter((r) => r.cost_origin === 'priced').length, 4)
  const parquet = await app.inject({ url: `/v1/export?from=${T0 - 3_600_000}&to=${T0}&format=parquet` })
  assert.equal(parquet.statusCode, 200, parquet.body)
})
