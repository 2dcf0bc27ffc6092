// Proves: a reprice killed with SIGKILL at a random moment leaves every segment's raw
// events and its rollups in agreement (verify finds no mismatch after the restart, and
// no `.reprice` copy is left), and a reprice run to the end after the crashes leaves the
// window's totals equal to an independent recomputation: each event priced by the table
// in use (pricing/apply.ts's costOf, one event at a time) or its reported cost.
//
// Shape: a real server (child process) holds 12 archived segments of 1,500 events; a
// first reprice under table A measures how long one takes; then table B is installed
// and three reprices are each killed after a random fraction of that duration, the
// server restarted on the same data directory in between.
//
// Set CRASH_TEST_SEED to replay the kill delays of a failed run.
import test from 'node:test'
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { mkdtemp, readdir, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { setTimeout as delay } from 'node:timers/promises'
import { costOf } from '../src/pricing/apply.js'
import { parsePriceTable } from '../src/pricing/table.js'
import { formatCost } from '../src/money.js'
import { callJson as call, startChildServer, type ChildServer } from './support/child-server.js'
import { mulberry32 } from './support/random.js'

const segmentsWanted = 12
const eventsPerSegment = 1_500
const kills = 3
const testTimeoutMs = 240_000

const tableA = { prices: [{ provider: 'openai', model: 'gpt-4o-mini', per_million: { input: '0.15', output: '0.6' } }, { provider: 'openai', model: 'gpt-4o', per_million: { input: '2.5', output: '10' } }] }
const tableB = { prices: [{ provider: 'openai', model: 'gpt-4o-mini', per_million: { input: '0.17', cache_read: '0.01', output: '0.61' } }] }

interface Sent {
  event_id: string
  timestamp: number
  key_id: string
  provider: string
  model: string
  status_code: number
  input_tokens: number
  cache_read_tokens: number
  output_tokens: number
  cost?: string
}

function expected(events: readonly Sent[], table: unknown): { cost: string; missing: number } {
  const parsed = parsePriceTable(table)
  if (!parsed.ok) throw new Error('bad test table')
  let cost = 0n
  let missing = 0
  for (const e of events) {
    if (e.cost !== undefined) {
      const [w, f = ''] = e.cost.split('.')
      cost += BigInt(w!) * 10n ** 12n + BigInt(f.padEnd(12, '0'))
      continue
    }
    const entry = parsed.table.lookup(e.provider, e.model, e.timestamp * 1000)
    if (!entry) missing++
    else cost += costOf({ ...e, cache_write_tokens: 0, reasoning_tokens: 0 }, entry)!
  }
  return { cost: formatCost(cost), missing }
}

test('a reprice killed at random moments leaves events and rollups in agreement, and a full one equals the recomputation', { timeout: testTimeoutMs }, async (t) => {
  const seed = process.env.CRASH_TEST_SEED !== undefined ? Number(process.env.CRASH_TEST_SEED) : randomBytes(4).readUInt32LE(0)
  t.diagnostic(`seed ${seed} (set CRASH_TEST_SEED=${seed} to replay the kill delays)`)
  const rand = mulberry32(seed)
  const dataDir = await mkdtemp(path.join(tmpdir(), 'tl-reprice-crash-'))
  let server = await startChildServer({ dataDir })
  t.after(async () => {
    await server.kill().catch(() => undefined)
    await rm(dataDir, { recursive: true, force: true })
  })
  const startMs = Date.now() - 3 * 3_600_000
  const events: Sent[] = []
  for (let s = 0; s < segmentsWanted; s++) {
    const batch: Sent[] = []
    for (let i = 0; i < eventsPerSegment; i++) {
      const n = events.length + batch.length
      const input = 500 + Math.floor(rand() * 5000)
      batch.push({
        event_id: `rc-${seed}-${n}`,
        timestamp: startMs + n * 500,
        key_id: `k${n % 7}`,
        provider: 'openai',
        model: n % 4 === 0 ? 'gpt-4o' : 'gpt-4o-mini',
        status_code: n % 17 === 0 ? 500 : 200,
        input_tokens: input,
        cache_read_tokens: Math.floor(rand() * input),
        output_tokens: Math.floor(rand() * 800),
        ...(n % 9 === 0 ? { cost: `0.00${n % 97}` } : {}),
      })
    }
    const res = await call(server, 'POST', '/v1/events', { events: batch })
    assert.equal(res.status, 200, JSON.stringify(res.json))
    assert.equal(res.json.accepted, eventsPerSegment)
    events.push(...batch)
    assert.equal((await call(server, 'POST', '/v1/admin/rollover')).status, 200)
  }
  const window = `from=${startMs - 60_000}&to=${Date.now() + 60_000}`
  const totals = async () => {
    const v = await call(server, 'GET', `/v1/admin/verify?${window}`)
    assert.equal(v.status, 200, JSON.stringify(v.json))
    assert.equal(v.json.mismatch_count, 0, `verify after a crash: ${JSON.stringify(v.json.mismatches)}\n${server.logTail()}`)
    const u = await call(server, 'GET', `/v1/usage?${window}`)
    return { cost: u.json.totals.cost as string, missing: u.json.totals.cost_missing as number, requests: u.json.totals.requests as number }
  }

  assert.equal((await call(server, 'PUT', '/v1/admin/prices', tableA)).status, 200)
  const began = Date.now()
  const first = await call(server, 'POST', `/v1/admin/reprice?${window}`)
  assert.equal(first.status, 200, JSON.stringify(first.json))
  const fullMs = Date.now() - began
  assert.ok(first.json.segments_rewritten >= segmentsWanted, JSON.stringify(first.json))
  assert.deepEqual(await totals(), { ...expected(events, tableA), requests: events.length })

  assert.equal((await call(server, 'PUT', '/v1/admin/prices', tableB)).status, 200)
  for (let k = 0; k < kills; k++) {
    const running = call(server, 'POST', `/v1/admin/reprice?${window}`).catch(() => null)
    const killMs = Math.floor(fullMs * (0.1 + 0.8 * rand()))
    await delay(killMs) // the deliberate random moment of the crash, not a synchronization
    assert.equal((await server.kill()).signal, 'SIGKILL')
    await running
    server = await startChildServer({ dataDir })
    const now = await totals()
    assert.equal(now.requests, events.length, `kill ${k} after ${killMs} ms: no event lost or doubled`)
    t.diagnostic(`kill ${k} after ${killMs} of ~${fullMs} ms: consistent, cost ${now.cost}`)
    assert.deepEqual((await readdir(path.join(dataDir, 'archive'))).filter((f) => f.includes('.reprice')), [], 'no reprice copy left')
  }
  const last = await call(server, 'POST', `/v1/admin/reprice?${window}`)
  assert.equal(last.status, 200, JSON.stringify(last.json))
  assert.deepEqual(await totals(), { ...expected(events, tableB), requests: events.length }, 'the window equals the recomputation under table B')
  await server.stop()
})
