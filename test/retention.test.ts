// Proves retention: it shares the write gate with appends (the seam test, both
// ways round), the Rust original's lost-events bug cannot happen (its scenario
// under concurrent appends), the schedule and the three windows follow an
// injected clock, details expire before events and rollups outlive events,
// expired rows are invisible before any run deletes them, a query in flight
// keeps its segment's file until it finishes, and a deletion cut short by a
// crash is finished at start-up. No test sleeps to make time pass: the clock is
// a ManualClock, and the only waits are bounded races that prove something
// does *not* finish while another holds the gate.

import assert from 'node:assert/strict'
import { existsSync } from 'node:fs'
import { copyFile } from 'node:fs/promises'
import path from 'node:path'
import { test } from 'node:test'
import fc from 'fast-check'
import type { FastifyInstance } from 'fastify'
import { encodeEvents } from '../src/ingest/batch.js'
import { validateEvent } from '../src/ingest/event.js'
import { IdIndex } from '../src/store/idindex.js'
import { detailsFileName, segmentFileName } from '../src/store/layout.js'
import type { RetentionReport } from '../src/store/reports.js'
import type { SealStep } from '../src/store/tiers.js'
import type { StoreHooks } from '../src/store/options.js'
import { build, event, filesIn, latch, post, rollover, segments, T0, totals } from './helper.js'

const HOUR = 3_600_000
const DAY = 24 * HOUR
const RUNS = Math.max(1, Math.floor(Number(process.env.FUZZ_RUNS ?? 200) / 4))

/** Hooks that park the first seal before `step` until the test opens the latch. */
function parkFirstSeal(at: SealStep): { hooks: StoreHooks; parked: ReturnType<typeof latch> } {
  let park = true
  const parked = latch()
  const hooks: StoreHooks = {
    beforeSealStep: async (step) => {
      if (step !== at || !park) return
      park = false
      parked.reached()
      await parked.opened
    },
  }
  return { hooks, parked }
}

/** Hooks that, once armed, park retention's next rollover swap (holding the gate) until the test opens the latch. */
function parkRetentionSwap(): { hooks: StoreHooks; parked: ReturnType<typeof latch>; arm: () => void } {
  let park = false
  const parked = latch()
  const hooks: StoreHooks = {
    onRolloverHoldingGate: async (reason) => {
      if (!park || reason !== 'retention') return
      park = false
      parked.reached()
      await parked.opened
    },
  }
  return { hooks, parked, arm: () => (park = true) }
}

/** Resolves to 'done' if `p` settles within `ms`, else 'still waiting' (for proving that something waits). */
async function within(p: Promise<unknown>, ms: number): Promise<'done' | 'still waiting'> {
  let timer: NodeJS.Timeout | undefined
  const timeout = new Promise<'still waiting'>((resolve) => (timer = setTimeout(() => resolve('still waiting'), ms)))
  try {
    return await Promise.race([p.then(() => 'done' as const, () => 'done' as const), timeout])
  } finally {
    clearTimeout(timer)
  }
}

async function runRetention(app: FastifyInstance): Promise<RetentionReport> {
  const res = await app.inject({ method: 'POST', url: '/v1/admin/retention' })
  assert.equal(res.statusCode, 200, res.body)
  return res.json() as RetentionReport
}

async function getEvent(app: FastifyInstance, id: unknown) {
  const res = await app.inject({ url: `/v1/events/${encodeURIComponent(String(id))}` })
  return { status: res.statusCode, body: res.json() as Record<string, unknown> }
}

function activeOf(segs: Awaited<ReturnType<typeof segments>>) {
  const a = segs.filter((s) => s.state === 'active')
  assert.equal(a.length, 1, 'exactly one active segment')
  return a[0]!
}

test('the seam: an append holding the gate makes retention wait, and retention holding the gate makes an append wait', async (t) => {
  // Teeth: with the rollover's swap run outside the gate (store.ts doRollover
  // calling its body directly instead of through withGate), both halves fail:
  // retention finishes while the append is parked, and the parked append then
  // writes into a segment retention closed. Checked by hand when this was written.
  let parkAppend = false
  let parkRetention = false
  const append = latch()
  const retentionAtGate = latch()
  const retentionHolding = latch()
  const hooks: StoreHooks = {
    onCommitHoldingGate: async () => {
      if (!parkAppend) return
      parkAppend = false
      append.reached()
      await append.opened
    },
    beforeRolloverGate: async (reason) => {
      if (reason === 'retention') retentionAtGate.reached()
    },
    onRolloverHoldingGate: async (reason) => {
      if (reason !== 'retention' || !parkRetention) return
      parkRetention = false
      retentionHolding.reached()
      await retentionHolding.opened
    },
  }
  const { app, clock, dataDir } = await build(t, {}, hooks)

  // The active segment holds only events that will have expired: a backfill.
  const backfill = Array.from({ length: 5 }, () => event({ timestamp: T0 - 29 * DAY }))
  assert.equal((await post(app, backfill)).body.accepted, 5)
  clock.advance(2 * DAY)
  const expiredSegment = activeOf(await segments(app)).id

  // 1. An append holds the gate; retention, wanting to roll the expired segment over, must wait for it.
  parkAppend = true
  const current = event({ timestamp: clock.nowMs() - 60_000 })
  const appending = post(app, [current])
  await append.arrived
  const retention = app.store.retention('admin')
  await retentionAtGate.arrived
  assert.equal(await within(retention, 300), 'still waiting', 'retention completed while an append held the gate')
  assert.ok(app.store.gateHeld())
  append.open()
  assert.equal((await appending).body.accepted, 1)
  const first = await retention
  // The append landed first, so the segment is no longer wholly expired: retention, deciding under the gate, keeps it.
  assert.equal(first.active.action, 'kept')
  assert.equal(activeOf(await segments(app)).id, expiredSegment)
  assert.equal((await getEvent(app, current.event_id)).status, 200)

  // 2. Now a wholly expired active segment again; retention holds the gate; an append must wait for it.
  await rollover(app)
  await app.store.settle()
  const backfill2 = Array.from({ length: 3 }, () => event({ timestamp: clock.nowMs() - 29 * DAY }))
  assert.equal((await post(app, backfill2)).body.accepted, 3)
  clock.advance(2 * DAY)
  const expired2 = activeOf(await segments(app)).id
  parkRetention = true
  const retention2 = app.store.retention('admin')
  await retentionHolding.arrived
  const late = event({ timestamp: clock.nowMs() - 1000 })
  const appending2 = post(app, [late])
  assert.equal(await within(appending2, 300), 'still waiting', 'an append completed while retention held the gate')
  retentionHolding.open()
  const second = await retention2
  assert.equal((await appending2).body.accepted, 1)
  assert.deepEqual(second.active, { action: 'rolled_over', segment_id: expired2, expired_events: 3 })
  assert.ok(second.gate_held_ms > 0 && second.gate_held_ms < 1000, `gate held ${second.gate_held_ms} ms: the parked swap, nothing else`)
  const after = await segments(app)
  const active = activeOf(after)
  assert.notEqual(active.id, expired2, 'later appends land in the fresh active segment')
  assert.equal(active.row_count, 1)
  assert.equal((await getEvent(app, late.event_id)).status, 200)
  for (const e of backfill2) assert.equal((await getEvent(app, e.event_id)).status, 404, 'expired events are invisible')

  // Once sealed, the next run deletes the rolled-over segment and its file.
  await app.store.settle()
  const third = await runRetention(app)
  assert.ok(third.segments_deleted.includes(expired2), JSON.stringify(third))
  await app.store.settle()
  assert.ok(!(await segments(app)).some((s) => s.id === expired2))
  assert.ok(!(await filesIn(dataDir)).archive.includes(segmentFileName(expired2)))
})

test("the original bug's scenario: retention rolls an expired active segment while current events stream in; every acknowledged event stays", async (t) => {
  // A backfill leaves the active segment's newest row past the cutoff; then
  // current events are appended by several clients at the very moment
  // retention reaches for the gate, over several rounds (so both orders happen).
  const inflight: Array<Promise<void>> = []
  const acked: string[] = []
  let appFor: FastifyInstance | null = null
  let fireAt = false
  let clockNow = () => T0
  const hooks: StoreHooks = {
    beforeRolloverGate: async (reason) => {
      if (reason !== 'retention' || !fireAt || appFor === null) return
      const app = appFor
      for (let c = 0; c < 4; c++) {
        inflight.push(
          (async () => {
            for (let b = 0; b < 5; b++) {
              const batch = Array.from({ length: 20 }, () => event({ timestamp: clockNow() - 30_000 }))
              const res = await post(app, batch)
              assert.equal(res.status, 200, JSON.stringify(res.body))
              assert.equal(res.body.accepted, 20)
              for (const e of batch) acked.push(String(e.event_id))
            }
          })(),
        )
      }
    },
  }
  const { app, clock, dataDir } = await build(t, {}, hooks)
  appFor = app
  clockNow = () => clock.nowMs()
  const expiredIds: string[] = []
  const rolled: number[] = []
  for (let round = 0; round < 4; round++) {
    // Start from an empty active segment (a round whose segment retention kept left current events in it).
    if (activeOf(await segments(app)).row_count > 0) await rollover(app)
    const backfill = Array.from({ length: 50 }, () => event({ timestamp: clock.nowMs() - 29 * DAY - round * 60_000 }))
    assert.equal((await post(app, backfill)).body.accepted, 50)
    expiredIds.push(...backfill.map((e) => String(e.event_id)))
    clock.advance(2 * DAY)
    const refused = await post(app, [event({ timestamp: clock.nowMs() - 31 * DAY })])
    assert.equal(refused.body.rejected, 1, 'an event older than the window is refused at ingest')
    fireAt = true
    const report = await app.store.retention('admin')
    fireAt = false
    await Promise.all(inflight.splice(0))
    assert.deepEqual(report.errors, [])
    if (report.active.action === 'rolled_over') rolled.push(report.active.segment_id)
  }
  assert.ok(rolled.length > 0, 'the scenario rolled an expired active segment over at least once')
  await app.store.settle()

  // Every acknowledged current event is stored exactly once and readable.
  const now = clock.nowMs()
  const res = await app.inject({ url: `/v1/usage?from=${now - 10 * DAY}&to=${now + 60_000}` })
  assert.equal(res.json().totals.requests, acked.length, 'all acknowledged current events are counted, once')
  for (const id of acked.filter((_, i) => i % 17 === 0)) assert.equal((await getEvent(app, id)).status, 200, id)
  // Later appends land in the live active segment.
  const before = activeOf(await segments(app))
  const later = event({ timestamp: now - 1000 })
  assert.equal((await post(app, [later])).body.accepted, 1)
  const afterSegs = await segments(app)
  assert.equal(activeOf(afterSegs).id, before.id)
  assert.equal(activeOf(afterSegs).row_count, before.row_count + 1)
  // The expired events are gone from every read, and the rolled-over segments from disk.
  for (const id of expiredIds.filter((_, i) => i % 7 === 0)) assert.equal((await getEvent(app, id)).status, 404, id)
  await runRetention(app)
  await app.store.settle()
  const archive = (await filesIn(dataDir)).archive
  for (const id of rolled) assert.ok(!archive.includes(segmentFileName(id)), `segment ${id} deleted`)
  // Billing totals for the backfilled window still count the expired events (rollups outlive them)
  // wherever they were sealed; a mixed segment not yet sealed counts them from raw rows.
  const old = await app.inject({ url: `/v1/usage?from=${T0 - 40 * DAY - (T0 % (15 * 60_000))}&to=${now - 20 * DAY - (now % (15 * 60_000))}` })
  assert.equal(old.statusCode, 200, old.body)
  assert.equal(old.json().totals.requests, expiredIds.length)
})

test('the schedule follows the injected clock: first run a minute after start, then every interval, never two at once', async (t) => {
  const { hooks, parked, arm } = parkRetentionSwap()
  const { app, clock } = await build(t, { TOKENLEDGER_RETENTION_INTERVAL: '1h', TOKENLEDGER_ROLLOVER_AGE: '7d' }, hooks)
  const store = app.store
  assert.equal(store.nextRetentionAtMs(), T0 + 60_000)
  await store.tick()
  assert.equal(store.stats().retentionRuns, 0)
  clock.advance(60_000)
  await store.tick()
  assert.equal(store.stats().retentionRuns, 1)
  assert.equal(store.stats().lastRetention?.trigger, 'schedule')
  assert.equal(store.nextRetentionAtMs(), T0 + 60_000 + HOUR)
  clock.advance(HOUR - 1)
  await store.tick()
  assert.equal(store.stats().retentionRuns, 1)
  clock.advance(1)
  await store.tick()
  assert.equal(store.stats().retentionRuns, 2)

  // A run in flight (parked holding the gate) is shared by the admin call and not doubled by the schedule.
  await post(app, [event({ timestamp: clock.nowMs() - 29 * DAY })])
  clock.advance(2 * DAY)
  arm()
  const scheduled = store.tick()
  await parked.arrived
  const admin = store.retention('admin')
  const again = store.tick()
  parked.open()
  await Promise.all([scheduled, again])
  const report = await admin
  assert.equal(report.trigger, 'schedule', 'the admin call shared the scheduled run')
  assert.equal(report.active.action, 'rolled_over')
  assert.equal(store.stats().retentionRuns, 3)
  const status = (await app.inject({ url: '/v1/status' })).json()
  assert.equal(status.retention.runs, 3)
  assert.equal(status.retention.last_report.active.action, 'rolled_over')
  assert.equal(status.retention.interval_s, 3600)
  const metrics = await app.inject({ url: '/metrics' })
  assert.equal(metrics.statusCode, 200)
  assert.match(String(metrics.headers['content-type']), /^text\/plain/)
  assert.match(metrics.body, /^tokenledger_retention_runs_total 3$/m)
  assert.match(metrics.body, /^tokenledger_retention_last_gate_held_seconds \d/m)
})

test('shutdown during a retention run: the run stops after its step in flight, close completes, nothing is lost', async (t) => {
  const { hooks, parked, arm } = parkRetentionSwap()
  const built = await build(t, {}, hooks)
  const { clock } = built
  const old = Array.from({ length: 4 }, () => event({ timestamp: T0 - 29 * DAY }))
  await post(built.app, old)
  clock.advance(2 * DAY)
  arm()
  const run = built.app.store.retention('admin')
  await parked.arrived
  const closing = built.app.close()
  parked.open()
  const report = await run
  await closing
  assert.equal(report.active.action, 'rolled_over', 'the step in flight finished')
  assert.ok(report.errors.some((e) => /skipped, shutting down/.test(e)), JSON.stringify(report.errors))
  // Restarted, the rolled-over segment is sealed and the next run deletes it; nothing current was lost.
  const app = await built.restart()
  const current = event({ timestamp: clock.nowMs() - 1000 })
  assert.equal((await post(app, [current])).body.accepted, 1)
  await app.store.settle()
  const next = await runRetention(app)
  assert.deepEqual(next.segments_deleted, [report.active.segment_id])
  assert.equal((await getEvent(app, current.event_id)).status, 200)
})

test('details expire before events: invisible at the detail cutoff, their file deleted by the next run; the events stay', async (t) => {
  const built = await build(t, { TOKENLEDGER_DETAIL_RETENTION: '7d' })
  const { app, clock, dataDir } = built
  const batch = Array.from({ length: 10 }, (_, i) => event({ timestamp: T0 - HOUR + i * 1000, detail: { prompt: `p${i}` } }))
  await post(app, batch)
  const sealed = (await rollover(app)).segment_id!
  await app.store.settle()
  assert.ok((await filesIn(dataDir)).archive.includes(detailsFileName(sealed)), 'sealed details live in their own file')
  assert.deepEqual((await getEvent(app, batch[3]!.event_id)).body.detail, { prompt: 'p3' })
  // A pending (unsealed) segment's details obey the cutoff too.
  const pendingBatch = [event({ timestamp: T0 - HOUR, detail: { prompt: 'pending' } })]
  await post(app, pendingBatch)
  const expectTotals = await totals(app)

  clock.advance(7 * DAY)
  // Past the detail cutoff: the details are hidden at once, before any run.
  const hidden = await getEvent(app, batch[3]!.event_id)
  assert.equal(hidden.status, 200)
  assert.equal(hidden.body.detail, null)
  assert.equal((await getEvent(app, pendingBatch[0]!.event_id)).body.detail, null, 'live segment detail hidden')
  const report = await runRetention(app)
  assert.deepEqual(report.details_expired, [sealed])
  assert.equal(report.detail_rows_expired, 10)
  assert.deepEqual(report.segments_deleted, [])
  assert.ok(!(await filesIn(dataDir)).archive.includes(detailsFileName(sealed)), 'the detail file is deleted')
  assert.ok((await filesIn(dataDir)).archive.includes(segmentFileName(sealed)), 'the events file stays')
  assert.equal((await getEvent(app, batch[3]!.event_id)).body.input_tokens, 100)
  const res = await app.inject({ url: `/v1/usage?from=0&to=${T0 + HOUR}` })
  assert.deepEqual(res.json().totals, expectTotals)

  // A seal after the detail cutoff keeps no detail file at all; a restart keeps every decision.
  const rolled = (await rollover(app)).segment_id!
  await app.store.settle()
  assert.ok(!(await filesIn(dataDir)).archive.includes(detailsFileName(rolled)))
  const restarted = await built.restart()
  assert.equal((await getEvent(restarted, batch[3]!.event_id)).body.detail, null)
  assert.equal((await getEvent(restarted, pendingBatch[0]!.event_id)).body.detail, null)
  const details = new Map((await restarted.store.catalog.list()).map((r) => [r.id, r.details]))
  assert.equal(details.get(sealed), 'expired')
  assert.equal(details.get(rolled), 'none')
  assert.deepEqual((await filesIn(dataDir)).orphaned, [])
})

test('rollups outlive events: totals stay exact after the raw events are deleted, until the rollup window ends', async (t) => {
  const built = await build(t)
  const { clock, dataDir } = built
  const batch = Array.from({ length: 40 }, (_, i) => event({ timestamp: T0 - 2 * HOUR + i * 60_000, input_tokens: 1000 + i, cost: '0.125', status_code: i % 5 === 0 ? 500 : 200 }))
  await post(built.app, batch)
  const seg = (await rollover(built.app)).segment_id!
  await built.app.store.settle()
  const window = `from=${T0 - 3 * HOUR}&to=${T0}`
  const before = (await built.app.inject({ url: `/v1/usage?${window}` })).json().totals
  assert.equal(before.requests, 40)

  clock.advance(30 * DAY + HOUR)
  assert.equal((await getEvent(built.app, batch[0]!.event_id)).status, 404, 'expired events are invisible before any run')
  assert.deepEqual((await built.app.inject({ url: `/v1/usage?${window}` })).json().totals, before, 'totals before the run')
  const report = await runRetention(built.app)
  assert.deepEqual(report.segments_deleted, [seg])
  assert.equal(report.events_deleted, 40)
  assert.ok(report.bytes_freed > 0)
  assert.ok(!(await filesIn(dataDir)).archive.includes(segmentFileName(seg)))
  const metrics = (await built.app.inject({ url: '/metrics' })).body
  assert.match(metrics, /^tokenledger_retention_segments_deleted_total 1$/m)
  assert.match(metrics, /^tokenledger_retention_bytes_freed_total [1-9]\d*$/m)
  assert.deepEqual((await built.app.inject({ url: `/v1/usage?${window}` })).json().totals, before, 'totals after the run, from rollups')
  assert.deepEqual((await built.app.inject({ url: `/v1/usage?${window}&status=error` })).json().totals.requests, 8)
  const unaligned = await built.app.inject({ url: `/v1/usage?from=${T0 - 3 * HOUR + 1}&to=${T0}` })
  assert.equal(unaligned.statusCode, 400)
  assert.match(unaligned.json().message, /`from` is before the raw-event retention cutoff .*15-minute boundary/)
  // A client's own "last 30 days", computed a moment before the server's clock: answered from the cutoff on.
  const cutoffMs = clock.nowMs() - 30 * DAY
  const lastMonth = await built.app.inject({ url: `/v1/usage?from=${cutoffMs - 20}&to=${clock.nowMs()}` })
  assert.equal(lastMonth.statusCode, 200, lastMonth.body)
  assert.equal(lastMonth.json().from, new Date(cutoffMs).toISOString())
  const tooEarly = await built.app.inject({ url: `/v1/usage?from=${cutoffMs - 16 * 60_000}&to=${clock.nowMs()}` })
  assert.equal(tooEarly.statusCode, 400, 'more than 15 minutes before the cutoff, unaligned: refused')
  const unalignedTo = await built.app.inject({ url: `/v1/usage?from=${T0 - 3 * HOUR}&to=${T0 - 1}` })
  assert.equal(unalignedTo.statusCode, 400)
  assert.match(unalignedTo.json().message, /`to` is before/)

  // A restart keeps the deletion; the catalog keeps the deleted segment's row as a marker while its rollups remain.
  const app = await built.restart()
  assert.deepEqual((await app.inject({ url: `/v1/usage?${window}` })).json().totals, before)
  assert.equal((await post(app, [batch[0]])).body.rejected, 1, 'a replay of an expired event is refused, not stored again')
  await runRetention(app)
  assert.equal((await app.store.catalog.list()).find((r) => r.id === seg)?.state, 'deleted', 'kept as a marker while its rollups remain')

  clock.advance(370 * DAY)
  const late = await runRetention(app)
  assert.ok(late.rollup_rows_deleted > 0)
  assert.equal((await app.inject({ url: `/v1/usage?${window}` })).json().totals.requests, 0, 'past the rollup window nothing is counted')
  assert.ok(!(await app.store.catalog.list()).some((r) => r.id === seg), 'forgotten once its rollups are gone')
})

test('a query reading a segment keeps its file until it finishes; retention deletes it then', async (t) => {
  const { app, clock, dataDir } = await build(t)
  await post(app, Array.from({ length: 25 }, () => event({ timestamp: T0 - HOUR, detail: { x: 1 } })))
  const seg = (await rollover(app)).segment_id!
  await app.store.settle()

  // First the detail file: expired while a query reads it; a second run's sweep must not take it either.
  clock.advance(7 * DAY)
  const detailFile = path.join(dataDir, 'archive', detailsFileName(seg))
  await app.store.snapshot(async (snap) => {
    const part = snap.parts.find((p) => p.id === seg)
    assert.ok(part?.detailsAt?.alias)
    const first = await app.store.retention('admin')
    assert.deepEqual(first.details_expired, [seg])
    assert.equal(first.files_deferred, 1)
    const second = await app.store.retention('admin')
    assert.equal(second.files_deleted, 0, 'the sweep leaves a file a reader still pins')
    assert.ok(existsSync(detailFile))
    const res = await snap.files((conn) => conn.runAndReadAll(`SELECT count(*) FROM "${part.detailsAt!.alias}".event_details`))
    assert.equal(Number(res.getRows()[0]![0]), 25)
  })
  await app.store.settle()
  assert.ok(!existsSync(detailFile), 'the detail file is deleted once its reader let go')

  clock.advance(24 * DAY)
  const file = path.join(dataDir, 'archive', segmentFileName(seg))
  let report: RetentionReport | null = null
  const rows = await app.store.snapshot(async (snap) => {
    const part = snap.parts.find((p) => p.id === seg)
    assert.ok(part?.alias)
    report = await app.store.retention('admin')
    assert.deepEqual(report.segments_deleted, [seg])
    assert.equal(report.files_deferred, 1, 'the events file waits for this reader')
    assert.ok(existsSync(file), 'the file stays while the query reads it')
    const res = await snap.files((conn) => conn.runAndReadAll(`SELECT count(*) FROM "${part.alias}".events`))
    return Number(res.getRows()[0]![0])
  })
  assert.equal(rows, 25, 'the query finished on its pinned segment')
  await app.store.settle()
  assert.ok(!existsSync(file), 'deleted once the last reader let go')
  assert.equal(report!.errors.length, 0)
})

test('a seal publishing its files while retention sweeps: the sweep never takes them for orphans', async (t) => {
  const { hooks, parked } = parkFirstSeal('record')
  const { app, dataDir } = await build(t, {}, hooks)
  const batch = Array.from({ length: 6 }, () => event({ detail: { d: 1 } }))
  await post(app, batch)
  const seg = (await rollover(app)).segment_id!
  await parked.arrived
  // Published (renamed into archive/) but not yet recorded in the catalog.
  const published = await filesIn(dataDir)
  assert.ok(published.archive.includes(segmentFileName(seg)) && published.archive.includes(detailsFileName(seg)))
  const report = await runRetention(app)
  assert.equal(report.files_deleted, 0)
  assert.deepEqual(await filesIn(dataDir), published, 'nothing removed')
  parked.open()
  await app.store.settle()
  assert.deepEqual((await segments(app)).find((x) => x.id === seg)?.state, 'archived')
  assert.deepEqual((await getEvent(app, batch[2]!.event_id)).body.detail, { d: 1 })
})

test('a replay validated before retention deleted its first copy is refused at commit, never stored twice', async (t) => {
  // The race: a replay passes validation (its timestamp still inside the window),
  // retention then deletes the segment holding the first copy (and drops it from
  // the dedupe index), and only then does the replay reach the commit. Without the
  // cutoff check under the gate it was accepted: the rollups and the new row both counted it.
  const { app, clock } = await build(t)
  const x = event({ timestamp: T0 - 30 * DAY + 10 * 60_000 })
  assert.equal((await post(app, [x])).body.accepted, 1)
  const seg = (await rollover(app)).segment_id!
  await app.store.settle()
  const window = `from=${T0 - 30 * DAY}&to=${T0}`
  const before = (await app.inject({ url: `/v1/usage?${window}` })).json().totals
  assert.equal(before.requests, 1)
  const validated = validateEvent(x, { nowMs: clock.nowMs(), eventRetentionMs: 30 * DAY, maxFutureSkewMs: 300_000 })
  assert.ok(validated.ok)
  clock.advance(15 * 60_000)
  assert.deepEqual((await runRetention(app)).segments_deleted, [seg])
  const outcome = await app.store.append({ events: encodeEvents([{ index: 0, event: validated.event }]), rejected: [], atomic: false, bytes: 1 })
  assert.equal(outcome.accepted, 0)
  assert.equal(outcome.rejected, 1)
  assert.equal(outcome.results[0]?.errors?.[0]?.field, '/timestamp')
  const atomic = await app.store.append({ events: encodeEvents([{ index: 0, event: validated.event }]), rejected: [], atomic: true, bytes: 1 })
  assert.equal(atomic.stored, false, 'an atomic request with an expired event stores nothing')
  await rollover(app)
  await app.store.settle()
  assert.deepEqual((await app.inject({ url: `/v1/usage?${window}` })).json().totals, before, 'counted once')
})

test('a stray copy of a deleted segment (a pending file a reader kept) is removed at start-up, never sealed and counted again', async (t) => {
  const { hooks, parked } = parkFirstSeal('copy')
  const built = await build(t, {}, hooks)
  const { clock, dataDir } = built
  await post(built.app, Array.from({ length: 5 }, () => event({ timestamp: T0 - HOUR })))
  const seg = (await rollover(built.app)).segment_id!
  await parked.arrived
  const pendingFile = path.join(dataDir, 'pending', segmentFileName(seg))
  const keep = path.join(dataDir, 'kept-copy.duckdb')
  await copyFile(pendingFile, keep)
  parked.open()
  await built.app.store.settle()
  const window = `from=${T0 - 2 * HOUR}&to=${T0}`
  const before = (await built.app.inject({ url: `/v1/usage?${window}` })).json().totals
  assert.equal(before.requests, 5)
  clock.advance(31 * DAY)
  assert.deepEqual((await runRetention(built.app)).segments_deleted, [seg])
  // The pending file comes back (as when a reader pinned it across the seal and a restart came first).
  await copyFile(keep, pendingFile)
  const app = await built.restart()
  await app.store.settle()
  assert.ok(!existsSync(pendingFile), 'start-up removed it')
  assert.ok(!(await segments(app)).some((x) => x.id === seg), 'not adopted again')
  assert.deepEqual((await app.inject({ url: `/v1/usage?${window}` })).json().totals, before, 'rollups counted once')
})

test('details in a pending (not yet sealed) file are hidden at the detail cutoff too', async (t) => {
  const { hooks, parked } = parkFirstSeal('copy')
  const { app, clock } = await build(t, {}, hooks)
  const e = event({ timestamp: T0 - HOUR, detail: { secret: 'prompt' } })
  await post(app, [e])
  await rollover(app)
  await parked.arrived
  assert.equal((await segments(app)).find((x) => x.state === 'pending')?.row_count, 1)
  assert.deepEqual((await getEvent(app, e.event_id)).body.detail, { secret: 'prompt' })
  clock.advance(7 * DAY)
  assert.equal((await getEvent(app, e.event_id)).body.detail, null)
  parked.open()
  await app.store.settle()
  assert.equal((await getEvent(app, e.event_id)).body.detail, null, 'and after sealing (no detail file kept)')
})

test('a crash after the catalog expired a detail file, before it was removed: start-up removes it', async (t) => {
  const built = await build(t)
  await post(built.app, [event({ timestamp: T0 - HOUR, detail: { a: 1 } })])
  const seg = (await rollover(built.app)).segment_id!
  await built.app.store.settle()
  await built.app.store.catalog.expireDetails(seg)
  const app = await built.restart()
  const files = await filesIn(built.dataDir)
  assert.ok(!files.archive.includes(detailsFileName(seg)))
  assert.ok(files.archive.includes(segmentFileName(seg)))
  assert.deepEqual(files.orphaned, [])
  assert.equal((await segments(app)).find((x) => x.id === seg)?.state, 'archived')
})

test('a deletion cut short by a crash (catalog decided, files still there) is finished at start-up', async (t) => {
  const built = await build(t)
  await post(built.app, [event({ timestamp: T0 - HOUR, detail: { a: 1 } })])
  const seg = (await rollover(built.app)).segment_id!
  await built.app.store.settle()
  await built.app.store.catalog.markDeleted([seg], T0)
  const app = await built.restart()
  const files = await filesIn(built.dataDir)
  assert.ok(!files.archive.includes(segmentFileName(seg)))
  assert.ok(!files.archive.includes(detailsFileName(seg)))
  assert.deepEqual(files.orphaned, [])
  assert.ok(!(await segments(app)).some((s) => s.id === seg))
})

test('the dedupe index purge near full load: clusters wrap around the table end, adds between chunks force resizes (property)', async () => {
  await fc.assert(
    fc.asyncProperty(fc.integer({ min: 0, max: 2 ** 31 }), fc.integer({ min: 1, max: 8 }), fc.integer({ min: 64, max: 4096 }), async (seed, segs, chunk) => {
      // 65 536 slots at ~0.74 load: long clusters, many wrapping past the end.
      const index = new IdIndex(16)
      const model = new Map<string, number>()
      const n = 48_000
      for (let i = 0; i < n; i++) {
        const id = `s${seed}-${i}`
        const seg = 1 + (i % segs)
        index.add(id, seg)
        model.set(id, seg)
      }
      const drop = new Set(Array.from({ length: segs }, (_, k) => k + 1).filter((k) => (seed >> k) & 1))
      for (const seg of drop) index.dropSegment(seg)
      let extra = 0
      await index.purgeDropped(async () => {
        // Enough adds to cross the load bound mid-purge now and then: a resize under the purge.
        for (let k = 0; k < 40 && extra < 4000; k++) {
          const id = `late-${seed}-${extra++}`
          index.add(id, 99)
          model.set(id, 99)
        }
      }, chunk)
      let live = 0
      for (const [id, seg] of model) {
        const found = index.candidates(id)
        if (drop.has(seg)) assert.ok(!found.includes(seg), `${id} of dropped segment ${seg} still found`)
        else {
          live++
          assert.ok(found.includes(seg), `${id} lost from segment ${seg}`)
        }
      }
      assert.equal(index.size, live)
    }),
    { numRuns: Math.max(3, Math.floor(RUNS / 5)) },
  )
})

test('the dedupe index drops deleted segments entry by entry while adds go on, and frees their slots (property)', async () => {
  await fc.assert(
    fc.asyncProperty(
      fc.array(fc.tuple(fc.integer({ min: 1, max: 6 }), fc.integer({ min: 0, max: 400 })), { minLength: 1, maxLength: 12 }),
      fc.subarray([1, 2, 3, 4, 5, 6]),
      fc.integer({ min: 256, max: 8192 }),
      async (adds, drop, chunk) => {
        const index = new IdIndex(16)
        const model = new Map<string, number>()
        let n = 0
        for (const [seg, count] of adds) {
          for (let i = 0; i < count; i++) {
            const id = `id-${n++}`
            index.add(id, seg)
            model.set(id, seg)
          }
        }
        for (const seg of drop) index.dropSegment(seg)
        // Adds to live segments between purge chunks, as commits would interleave.
        let extra = 0
        const removed = await index.purgeDropped(async () => {
          if (extra >= 50) return
          const id = `late-${extra++}`
          index.add(id, 7)
          model.set(id, 7)
        }, chunk)
        const dropped = [...model.values()].filter((s) => drop.includes(s)).length
        assert.equal(removed, dropped)
        for (const [id, seg] of model) {
          const found = index.candidates(id)
          if (drop.includes(seg)) assert.ok(!found.includes(seg), `${id} of dropped segment ${seg} still found`)
          else assert.ok(found.includes(seg), `${id} lost from segment ${seg}`)
        }
        assert.equal(index.size, model.size - dropped, 'every entry of a dropped segment is gone')
        // Freed slots are reused by new segments without resurrecting old entries.
        for (const seg of drop) index.add(`new-${seg}`, 100 + seg)
        for (const [id, seg] of model) if (drop.includes(seg)) assert.deepEqual(index.candidates(id).filter((s) => s >= 100), [])
      },
    ),
    { numRuns: RUNS },
  )
})
