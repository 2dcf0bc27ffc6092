// Proves GET /v1/export: over events spread across active, pending and archived
// segments, CSV, NDJSON and Parquet each hold exactly the matching events,
// oldest first by (timestamp, event_id), in the fixed column order, with exact
// costs and values that need quoting intact (CSV read back by an RFC 4180
// parser here, Parquet read back by a separate DuckDB); the ascending walk an
// export streams sees every pre-existing event once while a writer backfills;
// the size bound is a 400 before the first byte; bad parameters are 400s.

import assert from 'node:assert/strict'
import { rm, writeFile } from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import { test } from 'node:test'
import { DuckDBInstance } from '@duckdb/node-api'
import type { FastifyInstance } from 'fastify'
import { build, event, post, rollover, T0 } from './helper.js'
import { EXPORT_COLUMNS, EXPORT_PAGE, walkEvents } from '../src/query/export.js'
import { pageEvents, decodeCursor } from '../src/query/list.js'

const MIN = 60_000

/** RFC 4180: fields separated by commas, records by CRLF, quoted fields may hold anything (quotes doubled). */
function parseCsv(text: string): string[][] {
  const records: string[][] = []
  let record: string[] = []
  let field = ''
  let i = 0
  let quoted = false
  while (i < text.length) {
    const c = text[i]!
    if (quoted) {
      if (c === '"' && text[i + 1] === '"') {
        field += '"'
        i += 2
      } else if (c === '"') {
        quoted = false
        i++
      } else {
        field += c
        i++
      }
    } else if (c === '"' && field === '') {
      quoted = true
      i++
    } else if (c === ',') {
      record.push(field)
      field = ''
      i++
    } else if (c === '\r' && text[i + 1] === '\n') {
      record.push(field)
      records.push(record)
      record = []
      field = ''
      i += 2
    } else {
      assert.ok(c !== '"' && c !== '\n' && c !== '\r', `unquoted ${JSON.stringify(c)} at ${i}`)
      field += c
      i++
    }
  }
  assert.equal(field, '', 'the last record ends with CRLF')
  assert.equal(record.length, 0)
  return records
}

/** A workload over every tier with values that need quoting; returns the events oldest first. */
async function workload(app: FastifyInstance) {
  const events: Array<Record<string, unknown>> = []
  // Event strings may not hold control characters (ingest refuses them), so no raw line breaks reach a CSV field.
  const tricky = ['plain', 'comma, inside', 'quote "inside"', '"starts quoted', '=SUM(A1)', 'ünïcödé ✓', '']
  for (let i = 0; i < 30; i++) {
    const e = event({
      timestamp: T0 - (30 - Math.floor(i / 2)) * MIN, // pairs share a timestamp: ties by event_id
      key_id: i % 3 === 0 ? 'key_b' : 'key_a',
      status_code: i % 5 === 0 ? 500 : 200,
      endpoint: tricky[i % tricky.length],
      tags: i % 4 === 0 ? { note: tricky[(i + 1) % tricky.length]!, team: 'x' } : undefined,
      cost: i % 6 === 0 ? undefined : `0.${String(i).padStart(3, '0')}000000001`,
      latency_ms: i % 2 === 0 ? 100 + i : undefined,
      stream: i % 3 === 1 ? true : undefined,
      detail: { big: 'x'.repeat(100) },
    })
    const res = await post(app, [e])
    assert.equal(res.body.accepted, 1, JSON.stringify(res.body))
    events.push(e)
    if (i === 9 || i === 19) await rollover(app)
    if (i === 9) await app.store.settle() // first third archived, second pending (sealing may race: either tier)
  }
  return events
}

const byTsThenId = (a: Record<string, unknown>, b: Record<string, unknown>) =>
  Number(a.timestamp) - Number(b.timestamp) || (String(a.event_id) < String(b.event_id) ? -1 : String(a.event_id) > String(b.event_id) ? 1 : 0)

const WINDOW = `from=${T0 - 3_600_000}&to=${T0}`

test('CSV and NDJSON hold exactly the matching events, oldest first, in the fixed column order, quoting intact', async (t) => {
  const { app } = await build(t)
  const events = await workload(app)
  const listed = (await app.inject({ url: `/v1/events?${WINDOW}&limit=1000` })).json() as { events: Array<Record<string, unknown>> }
  const stored = new Map(listed.events.map((e) => [String(e.event_id), e]))
  for (const filter of ['', '&key_id=key_b', '&status=error&key_id=key_a']) {
    const want = events
      .filter((e) => (filter.includes('key_b') ? e.key_id === 'key_b' : filter.includes('key_a') ? e.key_id === 'key_a' && Number(e.status_code) >= 400 : true))
      .sort(byTsThenId)
      .map((e) => stored.get(String(e.event_id))!)

    const csv = await app.inject({ url: `/v1/export?${WINDOW}${filter}&format=csv` })
    assert.equal(csv.statusCode, 200, csv.body)
    assert.equal(csv.headers['content-type'], 'text/csv; charset=utf-8')
    assert.match(String(csv.headers['content-disposition']), /^attachment; filename="tokenledger-events-\d{8}T\d{6}Z-\d{8}T\d{6}Z\.csv"$/)
    const [header, ...records] = parseCsv(csv.body)
    assert.deepEqual(header, [...EXPORT_COLUMNS])
    assert.equal(records.length, want.length)
    records.forEach((r, i) => {
      const e = want[i]!
      const expect = EXPORT_COLUMNS.map((c) => (e[c] === null || e[c] === undefined ? '' : typeof e[c] === 'object' ? JSON.stringify(e[c]) : String(e[c])))
      assert.deepEqual(r, expect, `csv row ${i}`)
    })

    const nd = await app.inject({ url: `/v1/export?${WINDOW}${filter}&format=ndjson` })
    assert.equal(nd.statusCode, 200, nd.body)
    assert.equal(nd.headers['content-type'], 'application/x-ndjson; charset=utf-8')
    const lines = nd.body.split('\n')
    assert.equal(lines.pop(), '', 'every line ends with a newline')
    assert.equal(lines.length, want.length)
    lines.forEach((line, i) => {
      const got = JSON.parse(line) as Record<string, unknown>
      assert.deepEqual(Object.keys(got), [...EXPORT_COLUMNS])
      assert.deepEqual(got, Object.fromEntries(EXPORT_COLUMNS.map((c) => [c, want[i]![c]])), `ndjson line ${i}`)
    })
  }
})

test('Parquet is written by DuckDB and reads back: same events, order, exact costs, UTC timestamps', async (t) => {
  const { app, dataDir } = await build(t)
  const events = await workload(app)
  const res = await app.inject({ url: `/v1/export?${WINDOW}&key_id=key_a&format=parquet` })
  assert.equal(res.statusCode, 200, res.body)
  assert.equal(res.headers['content-type'], 'application/vnd.apache.parquet')
  assert.equal(Number(res.headers['content-length']), res.rawPayload.length)
  const file = path.join(os.tmpdir(), `tl-export-${process.pid}.parquet`)
  t.after(() => rm(file, { force: true }))
  await writeFile(file, res.rawPayload)
  const db = await DuckDBInstance.create(':memory:')
  const conn = await db.connect()
  const cols = (await conn.runAndReadAll(`SELECT name FROM parquet_schema('${file}') WHERE name <> 'duckdb_schema'`)).getRows().map((r) => r[0])
  assert.deepEqual(cols, [...EXPORT_COLUMNS])
  const rows = (
    await conn.runAndReadAll(`SELECT event_id, epoch_ms("timestamp")::BIGINT, cost::VARCHAR, endpoint, tags, typeof("timestamp"), typeof(cost) FROM read_parquet('${file}')`)
  ).getRows()
  conn.closeSync()
  const want = events.filter((e) => e.key_id === 'key_a').sort(byTsThenId)
  assert.equal(rows.length, want.length)
  rows.forEach((r, i) => {
    const e = want[i]!
    assert.equal(r[0], e.event_id, `row ${i}`)
    assert.equal(Number(r[1]), e.timestamp)
    assert.equal(r[2] === null ? null : String(r[2]).replace(/\.?0+$/, ''), e.cost ?? null)
    assert.equal(r[3], e.endpoint)
    assert.deepEqual(r[4] === null ? undefined : JSON.parse(String(r[4])), e.tags)
    assert.equal(r[5], 'TIMESTAMP WITH TIME ZONE')
    assert.equal(r[6], 'DECIMAL(38,12)')
  })
  // Nothing is left behind in the exports directory.
  const { readdir } = await import('node:fs/promises')
  assert.deepEqual(await readdir(path.join(dataDir, 'exports')), [])
  // An empty window is a valid, empty Parquet file.
  const empty = await app.inject({ url: `/v1/export?from=${T0 - 10 * MIN}&to=${T0 - 9 * MIN}&key_id=nobody&format=parquet` })
  assert.equal(empty.statusCode, 200, empty.body)
  await writeFile(file, empty.rawPayload)
  const conn2 = await db.connect()
  assert.equal(Number((await conn2.runAndReadAll(`SELECT count(*) FROM read_parquet('${file}')`)).getRows()[0]![0]), 0)
  conn2.closeSync()
  db.closeSync()
})

test('the ascending walk an export streams sees every pre-existing event exactly once while a writer backfills', async (t) => {
  const { app } = await build(t)
  const before = await workload(app)
  const filter = { fromUs: (T0 - 3_600_000) * 1000, toUs: T0 * 1000, dims: {}, status: [] }
  const seen: string[] = []
  let cursor: string | null = null
  let backfilled = 0
  do {
    const page = await pageEvents(app.store, filter, { limit: 4, cursor: cursor === null ? null : decodeCursor(cursor), source: 'all', order: 'asc' })
    seen.push(...page.events.map((e) => e.event_id))
    cursor = page.next_cursor
    // Backfill both behind the walk (must not appear) and ahead of it (may appear, once).
    const behind = event({ timestamp: T0 - 59 * MIN })
    const ahead = event({ timestamp: T0 - 1 * MIN })
    assert.equal((await post(app, [behind, ahead])).body.accepted, 2)
    backfilled++
    if (backfilled % 3 === 0) await rollover(app)
  } while (cursor !== null)
  assert.equal(new Set(seen).size, seen.length, 'no event twice')
  for (const e of before) assert.ok(seen.includes(String(e.event_id)), `missing ${String(e.event_id)}`)
  const order = seen.slice(0, before.length)
  assert.deepEqual(order, before.sort(byTsThenId).map((e) => String(e.event_id)))
})

test('the export bound is a 400 before the first byte; bad parameters are 400s naming them', async (t) => {
  const { app } = await build(t, { TOKENLEDGER_EXPORT_MAX_EVENTS: '3' })
  assert.equal((await post(app, [event(), event(), event(), event()])).body.accepted, 4)
  for (const format of ['csv', 'ndjson', 'parquet']) {
    const res = await app.inject({ url: `/v1/export?format=${format}` })
    assert.equal(res.statusCode, 400, res.body)
    assert.match((res.json() as { message: string }).message, /hold 4 events; an export may hold at most 3 \(TOKENLEDGER_EXPORT_MAX_EVENTS\)/)
  }
  const ok = await app.inject({ url: `/v1/export?format=ndjson&status=200&limit_ignored=1` })
  assert.equal(ok.statusCode, 400, 'unknown parameters are refused')
  assert.match((ok.json() as { message: string }).message, /limit_ignored/)
  for (const [q, re] of [
    ['format=xlsx', /format/],
    ['from=yesterday', /`from`/],
    ['status=teapot', /status/],
  ] as const) {
    const res = await app.inject({ url: `/v1/export?${q}` })
    assert.equal(res.statusCode, 400, `${q}: ${res.body}`)
    assert.match((res.json() as { message: string }).message, re, q)
  }
})

test('a streamed export that the retention cutoff overtakes is broken off, never cut short silently', async (t) => {
  const { app, clock } = await build(t, { TOKENLEDGER_EVENT_RETENTION: '1h', TOKENLEDGER_RETENTION_INTERVAL: 'off' })
  const events = Array.from({ length: EXPORT_PAGE + 10 }, (_, i) => event({ timestamp: T0 - 50 * MIN + Math.floor(i / 200) * MIN }))
  assert.equal((await post(app, events)).body.accepted, events.length)
  const filter = { fromUs: (T0 - 3_600_000) * 1000, toUs: T0 * 1000, dims: {}, status: [] }
  const walk = walkEvents(app.store, filter, 1_000_000)
  const first = await walk.next()
  assert.equal(first.done, false)
  assert.equal((first.value as unknown[]).length, EXPORT_PAGE)
  clock.advance(40 * MIN) // the cutoff is now 10 minutes past the last event sent
  await assert.rejects(walk.next(), /retention cutoff passed the events it had reached/)
})
