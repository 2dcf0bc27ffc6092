// Retention benchmark (not a test): what a retention run costs, alone and under ingest,
// and whether billing totals survive it. Every figure is printed with a baseline
// measured in the same run (these machines are noisy):
//
//   1. a store of --events (default 4 million) in --segments files (default 100) is
//      written straight into pending/ (bench/lib/bigstore.ts), timestamps spanning
//      [now - 45 d, now - 1 h). Segment 1 (the oldest slice) is then moved into active/
//      under the next free id: the server starts with an active segment whose rows have
//      all expired. The sums of the generated files are read back by a separate DuckDB.
//   2. the server starts with TOKENLEDGER_EVENT_RETENTION=30d and the scheduler off
//      (TOKENLEDGER_RETENTION_INTERVAL=off: only POST /v1/admin/retention runs it) and
//      seals the pending segments.
//   3. quiet retention: GET /v1/usage over an aligned window holding everything (must
//      equal the generated sums), POST /v1/admin/retention, and the report: duration,
//      write-gate hold (target < 50 ms), the active segment's fate (expected
//      `rolled_over`), segments, events, bytes and index entries removed. After the
//      rolled-over segment is sealed, a second run must delete it. Checked: the segments
//      deleted are exactly the archived ones whose max_timestamp (GET /v1/admin/segments
//      just before the run) is before the report's event cutoff, their files are gone,
//      and the aligned-window totals are unchanged (rollups outlive raw events).
//   4. restart with TOKENLEDGER_EVENT_RETENTION=15d: another share of the segments has
//      expired (still no scheduler).
//   5. baseline: closed-loop ingest of fresh events (autocannon, as bench/tiers.ts) for
//      --duration s after a --warmup, while /healthz is polled every 50 ms: events/s,
//      ingest p99, the worst 500 ms of acknowledged events/s, healthz max and p99.
//   6. the same load again, with one POST /v1/admin/retention 500 ms into the measured
//      phase: the run's figures, ingest events/s over the phase and over the run's own
//      interval, p99 and healthz against phase 5. Checked: every acknowledged event of
//      both phases is counted (lost = 0, as bench/tiers.ts checks), the deleted set as
//      in 3, and the old data's aligned-window totals unchanged by the deletion.
//   7. the data directory is removed (unless --keep).
//
// The /healthz poller runs in the bench's process beside autocannon, so its latencies
// include the bench's own event-loop delays; both phases carry the same bias.
//
// Run:   npm run bench:retention                        (4 M events; a few minutes on 2 cores)
//        npm run bench:retention -- --events 400000 --segments 20 --duration 5   (a quick look)
//        BENCH_SERVER_ENTRY=dist runs the built server (npm run build first).
// Flags: --events N (4000000) --segments N (100) --duration S (10) --warmup S (2)
//        --connections N (32) --batch B (100) --threads N (2) --keep (keep the data directory)
// Output: a report, and as the last line one JSON summary.
// Exit:   0 ok, 1 a correctness failure (totals changed, lost events, wrong segments
//         deleted, a retention error), 2 setup.
import { randomBytes } from 'node:crypto'
import { existsSync } from 'node:fs'
import { mkdir, mkdtemp, readdir, rename, rm, stat } from 'node:fs/promises'
import os from 'node:os'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import type { RunningServer } from './lib/child.js'
import { BatchFactory, TEMPLATE_COUNT } from './lib/events.js'
import { IngestLedger } from './lib/load.js'
import { writePendingSegments, type BigStoreSpec } from './lib/bigstore.js'
import { f1, f2, fail, failures, int, integerFlags, loadFlags, loadOptions, log, mib, percentile, phaseLine, type PhaseFigures, warn, warnings } from './lib/report.js'
import { getJson, settleLedger, startTokenledger, waitSealed, type ServerStatus } from './lib/server.js'
import { plusAcked, sumsDiff, sumsOf, sumsOfFiles, type Sums } from './lib/sums.js'
import { detailsPath, segmentPath } from '../src/store/layout.js'
import { BUCKET_US } from '../src/store/catalog.js'
import { parseTimestamp } from '../src/ingest/timestamp.js'
import type { RetentionReport } from '../src/store/reports.js'
import { runMain } from './lib/cli.js'

const DAY_MS = 86_400_000
/** A retention run deletes files and rewrites the index: allow it more than a query. */
const retentionTimeoutMs = 1_800_000
/** The generated rows span [now - spanStartAgoMs, now - spanEndAgoMs). */
const spanStartAgoMs = 45 * DAY_MS
const spanEndAgoMs = 3_600_000
/** Event windows of the two servers: the first expires a third of the span, the second two thirds. */
const firstRetention = '30d'
const secondRetention = '15d'
const bucketMs = BUCKET_US / 1000
/** The write-gate hold a retention run should stay under. */
const gateTargetMs = 50
const healthzEveryMs = 50
const healthzTimeoutMs = 30_000
/** Acknowledged-event counter samples, for the worst window (a stall shows there). */
const rateSampleEveryMs = 100
const stallWindowMs = 500
/** Into the measured phase before the retention POST, so the load is at its steady rate. */
const retentionDelayMs = 500
/** Deleted files may wait for a reader; how long the bench waits for them to go. */
const filesGoneWaitMs = 30_000
const sealPollMs = 250

const { values: argv } = parseArgs({
  options: {
    events: { type: 'string' },
    segments: { type: 'string' },
    ...loadFlags,
    threads: { type: 'string' },
    keep: { type: 'boolean' },
  },
  strict: true,
})

const num = integerFlags('bench:retention', argv)

const opts = {
  events: num('events', 4_000_000, 10_000, 200_000_000),
  // At least 3: one becomes the expired active segment, and each window must cut between the rest.
  segments: num('segments', 100, 3, 10_000),
  ...loadOptions(num),
  threads: num('threads', 2, 1, 64),
}

const floorBucketMs = (ms: number): number => Math.floor(ms / bucketMs) * bucketMs
const ceilBucketMs = (ms: number): number => Math.ceil(ms / bucketMs) * bucketMs

/** A server with the given event window and the retention scheduler off (only POST /v1/admin/retention runs it). */
async function start(name: string, dataDir: string, eventRetention: string): Promise<RunningServer> {
  return startTokenledger(name, dataDir, { env: { TOKENLEDGER_RETENTION_INTERVAL: 'off', TOKENLEDGER_EVENT_RETENTION: eventRetention } })
}

interface SegmentOut {
  id: number
  state: 'active' | 'pending' | 'archived'
  row_count: number
  min_timestamp: string | null
  max_timestamp: string | null
  bytes: number | null
}

type Totals = Record<string, unknown>

/** Bytes of every file under `dir`. */
async function dirBytes(dir: string): Promise<number> {
  let n = 0
  for (const e of await readdir(dir, { withFileTypes: true, recursive: true })) {
    if (!e.isFile()) continue
    const s = await stat(join(e.parentPath, e.name)).catch(() => undefined)
    n += s?.size ?? 0
  }
  return n
}

// ---------------------------------------------------------------------- totals

/** An aligned window [fromMs, toMs): both ends on 15-minute boundaries. */
interface Window {
  fromMs: number
  toMs: number
}

const windowText = (w: Window): string => `[${new Date(w.fromMs).toISOString()}, ${new Date(w.toMs).toISOString()})`

async function usage(server: RunningServer, w: Window): Promise<{ totals: Totals; sums: Sums; ms: number }> {
  const t0 = performance.now()
  const body = await getJson<{ totals: Totals }>(`${server.url}/v1/usage?from=${w.fromMs}&to=${w.toMs}`)
  const ms = performance.now() - t0
  const sums = sumsOf(body.totals)
  if (sums === undefined) throw new Error(`GET /v1/usage: totals not in the expected shape: ${JSON.stringify(body.totals).slice(0, 300)}`)
  return { totals: body.totals, sums, ms }
}

/** Checks the window's totals against `want`; returns what the server answered. */
async function checkUsage(server: RunningServer, w: Window, want: Sums, label: string): Promise<Sums> {
  const got = await usage(server, w)
  const bad = sumsDiff(want, got.sums)
  if (bad.length > 0) fail(`${label}: GET /v1/usage over ${windowText(w)} differs: ${bad.join('; ')}`)
  else log(`  ${label}: GET /v1/usage ${windowText(w)} = expected (${int(Number(want.requests))} requests, tokens, exact cost), answered in ${int(got.ms)} ms`)
  return got.sums
}

// ---------------------------------------------------------------------- load, health and rate

interface HealthStats {
  requests: number
  failures: number
  p50: number
  p99: number
  max: number
}

/** GETs /healthz every healthzEveryMs (one at a time: a stalled answer shows as its latency) until stopped. */
function pollHealth(url: string): { stop: () => Promise<HealthStats> } {
  const latencies: number[] = []
  let failed = 0
  let stopping = false
  const loop = (async () => {
    while (!stopping) {
      const t0 = performance.now()
      try {
        const res = await fetch(`${url}/healthz`, { signal: AbortSignal.timeout(healthzTimeoutMs) })
        await res.text()
        if (res.status !== 200) failed++
      } catch {
        failed++
      }
      const ms = performance.now() - t0
      latencies.push(ms)
      if (ms < healthzEveryMs) await new Promise((r) => setTimeout(r, healthzEveryMs - ms))
    }
  })()
  return {
    stop: async () => {
      stopping = true
      await loop
      return { requests: latencies.length, failures: failed, p50: percentile(latencies, 50), p99: percentile(latencies, 99), max: Math.max(...latencies) }
    },
  }
}

/** Samples the ledger's acknowledged-event count; `worst` is the lowest rate over any stallWindowMs. */
function sampleAcked(ledger: IngestLedger): { stop: () => { worstEventsPerS: number; at: number; longestGapMs: number } } {
  const samples: [number, number][] = []
  const t0 = performance.now()
  const take = (): void => void samples.push([performance.now() - t0, ledger.expectedStored])
  take()
  const timer = setInterval(take, rateSampleEveryMs)
  return {
    stop: () => {
      clearInterval(timer)
      // Windows that start while connections open, or end as the load stops, are not stalls.
      const last = samples.at(-1)?.[0] ?? 0
      let worst = Infinity
      let at = NaN
      for (let i = 0, j = 0; i < samples.length; i++) {
        const [ti, vi] = samples[i]!
        if (ti < stallWindowMs) continue
        while (j < samples.length && samples[j]![0] - ti < stallWindowMs) j++
        if (j >= samples.length || samples[j]![0] > last - rateSampleEveryMs) break
        const [tj, vj] = samples[j]!
        const rate = ((vj - vi) * 1000) / (tj - ti)
        if (rate < worst) {
          worst = rate
          at = ti
        }
      }
      // The longest time the count stood still (no batch acknowledged), at the sampling resolution.
      let longestGapMs = 0
      let since = samples[0]?.[0] ?? 0
      for (let i = 1; i < samples.length; i++) {
        const [t, v] = samples[i]!
        if (v !== samples[i - 1]![1]) since = t
        else if (since >= stallWindowMs && t <= last - rateSampleEveryMs) longestGapMs = Math.max(longestGapMs, t - since)
      }
      return { worstEventsPerS: worst, at, longestGapMs }
    },
  }
}

interface LoadFigures extends PhaseFigures {
  worstEventsPerS: number
  worstAtS: number
  longestGapMs: number
  health: HealthStats
}

/** One measured load phase with the health poller and the rate sampler; `during` runs beside it. */
async function measuredLoad<T>(label: string, server: RunningServer, ledger: IngestLedger, during: () => Promise<T>): Promise<{ load: LoadFigures; extra: T }> {
  const st0 = await getJson<ServerStatus>(`${server.url}/v1/status`)
  const health = pollHealth(server.url)
  const rate = sampleAcked(ledger)
  const side = during()
  const res = await ledger.run(server.url, opts.connections, opts.durationS)
  const worst = rate.stop()
  const extra = await side
  const h = await health.stop()
  const line = phaseLine(label, res, opts.batch, 2)
  const st1 = await getJson<ServerStatus>(`${server.url}/v1/status`)
  // Rollovers and seals inside a phase cost ingest too: shown so a ratio can be read.
  log(`  during the phase: ${st1.rollovers - st0.rollovers} rollovers, ${st1.sealing.sealed - st0.sealing.sealed} seals; load generator CPU ${f1(res.generatorCpuS)} s`)
  log(
    `  worst ${stallWindowMs} ms: ${int(worst.worstEventsPerS)} events/s (at ${f1(worst.at / 1000)} s), longest with no batch acknowledged ~${int(worst.longestGapMs)} ms; ` +
      `/healthz every ${healthzEveryMs} ms: ${h.requests} answers, p50 ${f1(h.p50)} ms, p99 ${f1(h.p99)} ms, max ${f1(h.max)} ms, failures ${h.failures}`,
  )
  if (h.failures > 0) fail(`${label}: ${h.failures} /healthz requests failed`)
  return { load: { ...line, worstEventsPerS: worst.worstEventsPerS, worstAtS: worst.at / 1000, longestGapMs: worst.longestGapMs, health: h }, extra }
}

// ---------------------------------------------------------------------- retention

interface RetentionResult {
  report: RetentionReport
  /** Client-side interval of the POST, ms since the bench's performance clock origin. */
  t0: number
  t1: number
  /** Events the ledger had acknowledged at t0 and t1. */
  acked0: number
  acked1: number
}

/** Ids as `[1, 2, 3]`, or `[first..last]` (with the count) when there are many. */
function idList(ids: readonly number[]): string {
  return ids.length <= 8 ? `[${ids.join(', ')}]` : `[${ids[0]}..${ids.at(-1)}]`
}

function usOf(text: string): number {
  const p = parseTimestamp(text)
  if (!p.ok) throw new Error(`not a timestamp: ${text}`)
  return p.us
}

/**
 * POSTs /v1/admin/retention and checks the report against the segment list taken just
 * before: the deleted set is exactly the archived segments whose newest event is
 * before the event cutoff, with their row counts, and their files are gone.
 */
async function runRetention(label: string, server: RunningServer, dataDir: string, ledger?: IngestLedger): Promise<RetentionResult> {
  const { segments: before } = await getJson<{ segments: SegmentOut[] }>(`${server.url}/v1/admin/segments`)
  const acked0 = ledger?.expectedStored ?? 0
  const t0 = performance.now()
  const report = await getJson<RetentionReport>(`${server.url}/v1/admin/retention`, { method: 'POST' }, retentionTimeoutMs)
  const t1 = performance.now()
  const acked1 = ledger?.expectedStored ?? 0
  const r = report
  log(
    `  ${label}: duration ${f1(r.duration_ms)} ms (POST answered in ${f1(t1 - t0)} ms), gate held ${r.gate_held_ms.toFixed(3)} ms (target < ${gateTargetMs} ms); ` +
      `active segment ${r.active.segment_id}: ${r.active.action}${r.active.expired_events > 0 ? ` (${int(r.active.expired_events)} expired events)` : ''}${r.active.note ? ` [${r.active.note}]` : ''}`,
  )
  log(
    `    event cutoff ${r.cutoffs.events}; deleted ${r.segments_deleted.length} segments ${idList(r.segments_deleted)}, ${int(r.events_deleted)} events, ` +
      `${mib(r.bytes_freed)} freed (${r.files_deleted} files now, ${r.files_deferred} deferred), ${int(r.index_entries_removed)} index entries removed; ` +
      `details expired ${r.details_expired.length} (${int(r.detail_rows_expired)} rows), rollup rows deleted ${r.rollup_rows_deleted}, awaiting seal ${idList(r.awaiting_seal)}`,
  )
  for (const e of r.errors) fail(`${label}: the retention report has an error: ${e}`)
  if (r.gate_held_ms >= gateTargetMs) warn(`${label}: the write gate was held ${r.gate_held_ms} ms (target < ${gateTargetMs} ms)`)

  const cutoffUs = usOf(r.cutoffs.events)
  const want = before.filter((s) => s.state === 'archived' && (s.max_timestamp === null || usOf(s.max_timestamp) < cutoffUs))
  const wantIds = want.map((s) => s.id).sort((a, b) => a - b)
  const gotIds = [...r.segments_deleted].sort((a, b) => a - b)
  const missing = wantIds.filter((id) => !gotIds.includes(id))
  const extra = gotIds.filter((id) => !wantIds.includes(id))
  if (missing.length > 0 || extra.length > 0) {
    fail(`${label}: segments deleted ≠ archived segments with max_timestamp before the cutoff: not deleted ${idList(missing)}, deleted but not expected ${idList(extra)}`)
  } else {
    log(`    deleted set = the ${wantIds.length} archived segments whose max_timestamp was before the cutoff (of ${before.length} listed)`)
  }
  const wantEvents = want.reduce((n, s) => n + s.row_count, 0)
  if (missing.length === 0 && extra.length === 0 && r.events_deleted !== wantEvents) fail(`${label}: events_deleted ${r.events_deleted} ≠ ${wantEvents}, the listed row counts of the deleted segments`)
  const listedBytes = want.reduce((n, s) => n + (s.bytes ?? 0), 0)
  if (r.segments_deleted.length > 0) log(`    listed bytes of the deleted segments ${mib(listedBytes)} (bytes_freed also counts detail files; deferred files are not counted)`)

  // Their files leave the disk (deferred ones once the last reader is done).
  const paths = r.segments_deleted.flatMap((id) => [segmentPath(dataDir, 'archive', id), detailsPath(dataDir, id), segmentPath(dataDir, 'pending', id)])
  const g0 = performance.now()
  let left = paths.filter((p) => existsSync(p))
  while (left.length > 0 && performance.now() - g0 < filesGoneWaitMs) {
    await new Promise((res) => setTimeout(res, sealPollMs))
    left = paths.filter((p) => existsSync(p))
  }
  if (left.length > 0) fail(`${label}: ${left.length} files of deleted segments still exist after ${filesGoneWaitMs} ms, e.g. ${left[0]}`)
  return { report, t0, t1, acked0, acked1 }
}

/** Stops the server and prints what it logged at warn and above. */
async function stopServer(server: RunningServer): Promise<void> {
  const stop = await server.stop()
  const l = server.logs
  log(`  ${server.name} stopped in ${int(stop.stopMs)} ms${stop.forced ? ' (SIGKILL)' : ''}; it logged ${l.warnLines} warnings, ${l.errorLines} errors, ${l.stderrLines} stderr lines`)
  for (const s of l.samples) log(`    ${s}`)
  if (l.errorLines > 0) warn(`${server.name} logged ${l.errorLines} errors`)
}

// ---------------------------------------------------------------------- main

async function main(): Promise<number> {
  const runId = randomBytes(4).toString('hex')
  log(
    `tokenledger retention bench: ${int(opts.events)} events in ${opts.segments} segments over ${spanStartAgoMs / DAY_MS} days; ` +
      `load ${opts.connections} connections × ${opts.batch}-event batches, ${opts.durationS} s phases; node ${process.version}, ${os.cpus().length} CPUs; ` +
      `server ${process.env.BENCH_SERVER_ENTRY === 'dist' ? 'dist' : 'tsx'}`,
  )
  const summary: Record<string, unknown> = { events: opts.events, segments: opts.segments }
  const dataDir = await mkdtemp(join(os.tmpdir(), 'tokenledger-retention-'))
  let server: RunningServer | undefined
  try {
    // 1. The store.
    log(`\n[1] ${int(opts.events)} events written into pending/, segment 1 moved to active/`)
    const now = Date.now()
    const spec: BigStoreSpec = { events: opts.events, segments: opts.segments, seed: `r${runId}`, startMs: now - spanStartAgoMs, endMs: now - spanEndAgoMs, threads: opts.threads }
    let t0 = performance.now()
    const written = await writePendingSegments(dataDir, spec)
    const genS = (performance.now() - t0) / 1000
    const genBytes = written.reduce((n, s) => n + s.bytes, 0)
    log(`  generated in ${f1(genS)} s (${int(opts.events / genS)} events/s), ${mib(genBytes)}`)
    t0 = performance.now()
    const generated = await sumsOfFiles(written.map((s) => segmentPath(dataDir, 'pending', s.id)), opts.threads)
    log(`  sums of the generated files read back in ${int(performance.now() - t0)} ms`)
    const lastId = written.at(-1)?.id
    if (lastId === undefined || written.length !== opts.segments) {
      log(`  expected ${opts.segments} segments, got ${written.length}`)
      return 2
    }
    const activeId = lastId + 1
    // The oldest slice becomes the active segment: at start-up the store takes the newest file in active/.
    await mkdir(join(dataDir, 'active'), { recursive: true })
    await rename(segmentPath(dataDir, 'pending', 1), segmentPath(dataDir, 'active', activeId))
    if (existsSync(`${segmentPath(dataDir, 'pending', 1)}.wal`)) await rename(`${segmentPath(dataDir, 'pending', 1)}.wal`, `${segmentPath(dataDir, 'active', activeId)}.wal`)
    log(`  pending/ segment 1 (${int(written[0]!.rows)} rows, the oldest) is now active/ segment ${activeId}`)
    // Everything old lies in [from, oldTo); `to` of the whole window moves with the clock.
    const oldWindow: Window = { fromMs: floorBucketMs(spec.startMs), toMs: ceilBucketMs(spec.endMs) }
    const fullWindow = (): Window => ({ fromMs: oldWindow.fromMs, toMs: ceilBucketMs(Date.now()) + bucketMs })

    // 2. Start and seal.
    log(`\n[2] server with TOKENLEDGER_EVENT_RETENTION=${firstRetention}, retention scheduler off`)
    server = await start('retention-30d', dataDir, firstRetention)
    const sealed = await waitSealed(server)
    log(
      `  listening after ${f1(server.listeningMs / 1000)} s; sealed ${sealed.status.tiers.archived} segments ${f1(sealed.ms / 1000)} s after ready; ` +
        `${int(sealed.status.tiers.rows)} rows, ${mib(sealed.status.tiers.bytes)} in segments, ${int(sealed.status.ingest.indexed_events)} ids indexed; data dir ${mib(await dirBytes(dataDir))}`,
    )
    Object.assign(summary, { generate_s: Number(genS.toFixed(1)), first_start_s: Number((server.listeningMs / 1000).toFixed(1)), seal_s: Number((sealed.ms / 1000).toFixed(1)) })

    // 3. Quiet retention.
    log('\n[3] retention with no load')
    const w3 = fullWindow()
    const before3 = await checkUsage(server, w3, generated, 'before')
    await checkUsage(server, oldWindow, generated, 'before, old-data window')
    const st3 = await getJson<ServerStatus>(`${server.url}/v1/status`)
    const du3 = await dirBytes(dataDir)
    const r1 = await runRetention('run 1', server, dataDir)
    if (r1.report.active.action !== 'rolled_over' || r1.report.active.segment_id !== activeId) {
      fail(`run 1: expected the expired active segment ${activeId} to be rolled over, got ${JSON.stringify(r1.report.active)}`)
    }
    const st3b = await getJson<ServerStatus>(`${server.url}/v1/status`)
    const du3b = await dirBytes(dataDir)
    log(
      `    status: indexed ids ${int(st3.ingest.indexed_events)} → ${int(st3b.ingest.indexed_events)}, index ${mib(st3.ingest.index_bytes)} → ${mib(st3b.ingest.index_bytes)}; ` +
        `data dir ${mib(du3)} → ${mib(du3b)}`,
    )
    if (r1.report.index_entries_removed !== r1.report.events_deleted) warn(`run 1: ${r1.report.index_entries_removed} index entries removed for ${r1.report.events_deleted} events deleted`)
    if (st3.ingest.indexed_events - st3b.ingest.indexed_events !== r1.report.index_entries_removed) {
      warn(`run 1: status indexed_events fell by ${st3.ingest.indexed_events - st3b.ingest.indexed_events}, the report says ${r1.report.index_entries_removed} entries removed`)
    }
    await checkUsage(server, w3, before3, 'after run 1')
    const resealed = await waitSealed(server)
    log(`  the rolled-over segment sealed ${f1(resealed.ms / 1000)} s after run 1`)
    await checkUsage(server, w3, before3, 'after it sealed')
    const r2 = await runRetention('run 2', server, dataDir)
    if (r1.report.active.action === 'rolled_over' && !r2.report.segments_deleted.includes(activeId)) {
      fail(`run 2: the rolled-over segment ${activeId} was not deleted (deleted [${r2.report.segments_deleted.join(', ')}])`)
    }
    if (r2.report.active.action !== 'kept') fail(`run 2: the active segment should have been kept, got ${JSON.stringify(r2.report.active)}`)
    await checkUsage(server, w3, before3, 'after run 2')
    const oldTotals = await checkUsage(server, oldWindow, before3, 'after run 2, old-data window')
    Object.assign(summary, {
      quiet_duration_ms: r1.report.duration_ms,
      quiet_gate_held_ms: r1.report.gate_held_ms,
      quiet_active_action: r1.report.active.action,
      quiet_segments_deleted: r1.report.segments_deleted.length,
      quiet_events_deleted: r1.report.events_deleted,
      quiet_bytes_freed: r1.report.bytes_freed,
      quiet_index_entries_removed: r1.report.index_entries_removed,
      second_duration_ms: r2.report.duration_ms,
      second_segments_deleted: r2.report.segments_deleted.length,
    })

    // 4. Restart with a shorter window.
    log(`\n[4] restart with TOKENLEDGER_EVENT_RETENTION=${secondRetention}`)
    await stopServer(server)
    server = undefined
    server = await start('retention-15d', dataDir, secondRetention)
    const st4 = (await waitSealed(server)).status
    log(`  listening after ${f1(server.listeningMs / 1000)} s: ${st4.tiers.archived} archived, ${int(st4.tiers.rows)} rows, ${int(st4.ingest.indexed_events)} ids indexed`)
    await checkUsage(server, oldWindow, oldTotals, 'after restart, old-data window')
    summary.restart_s = Number((server.listeningMs / 1000).toFixed(1))

    // 5. Baseline load.
    const ledger = new IngestLedger(new BatchFactory(`${runId}f`, opts.batch), TEMPLATE_COUNT)
    log('\n[5] baseline: ingest of fresh events, no retention')
    if (opts.warmupS > 0) await ledger.run(server.url, opts.connections, opts.warmupS)
    const base = (await measuredLoad('ingest', server, ledger, async () => undefined)).load

    // 6. Retention under load.
    log('\n[6] retention under the same load')
    if (opts.warmupS > 0) await ledger.run(server.url, opts.connections, opts.warmupS)
    const srv = server
    const du6 = await dirBytes(dataDir)
    const { load: under, extra: r3 } = await measuredLoad('ingest during retention', server, ledger, async () => {
      await new Promise((r) => setTimeout(r, retentionDelayMs))
      return runRetention('run 3', srv, dataDir, ledger)
    })
    const loadEndedAt = performance.now()
    const intervalS = (r3.t1 - r3.t0) / 1000
    const intervalRate = (r3.acked1 - r3.acked0) / intervalS
    log(
      `  ingest over the phase: ${int(under.eventsPerS)} events/s = ${f2(under.eventsPerS / base.eventsPerS)} of baseline; ` +
        `over the retention run's ${f1(intervalS * 1000)} ms: ${int(intervalRate)} events/s = ${f2(intervalRate / base.eventsPerS)} of baseline`,
    )
    if (r3.t1 > loadEndedAt - 100) warn(`run 3 outlasted the load phase (ended ${f1((r3.t1 - loadEndedAt) / 1000)} s after it): the interval rate covers the overlap only`)
    log(
      `  ingest p99 ${under.p99} ms vs ${base.p99} ms (${f2(under.p99 / base.p99)}×), max ${under.max} ms vs ${base.max} ms; ` +
        `worst ${stallWindowMs} ms ${int(under.worstEventsPerS)} vs ${int(base.worstEventsPerS)} events/s, longest ack gap ~${int(under.longestGapMs)} vs ~${int(base.longestGapMs)} ms; ` +
        `/healthz p99 ${f1(under.health.p99)} ms vs ${f1(base.health.p99)} ms, max ${f1(under.health.max)} ms vs ${f1(base.health.max)} ms`,
    )
    if (r3.report.segments_deleted.length === 0) warn('run 3 deleted nothing: the shorter window should have expired more segments')
    log(`  data dir ${mib(du6)} → ${mib(await dirBytes(dataDir))}`)

    log('  totals')
    const acked = await settleLedger(server, ledger, true)
    if (acked !== undefined) {
      const st = await getJson<ServerStatus>(`${server.url}/v1/status`)
      log(`  acknowledged ${int(acked.events)} fresh events in both phases (server: ${int(st.ingest.committed_events)} committed since start-up)`)
      await checkUsage(server, fullWindow(), plusAcked(oldTotals, acked), 'old data + every acknowledged event (lost = 0)')
    }
    await checkUsage(server, oldWindow, oldTotals, 'old-data window after run 3')
    Object.assign(summary, {
      base_events_per_s: Math.round(base.eventsPerS),
      base_p99_ms: base.p99,
      base_healthz_p99_ms: Number(base.health.p99.toFixed(1)),
      base_healthz_max_ms: Number(base.health.max.toFixed(1)),
      base_worst_window_events_per_s: Math.round(base.worstEventsPerS),
      base_longest_ack_gap_ms: Math.round(base.longestGapMs),
      load_duration_ms: r3.report.duration_ms,
      load_gate_held_ms: r3.report.gate_held_ms,
      load_segments_deleted: r3.report.segments_deleted.length,
      load_bytes_freed: r3.report.bytes_freed,
      load_events_per_s: Math.round(under.eventsPerS),
      load_over_base: Number((under.eventsPerS / base.eventsPerS).toFixed(3)),
      during_run_events_per_s: Math.round(intervalRate),
      during_run_over_base: Number((intervalRate / base.eventsPerS).toFixed(3)),
      load_p99_ms: under.p99,
      load_worst_window_events_per_s: Math.round(under.worstEventsPerS),
      load_longest_ack_gap_ms: Math.round(under.longestGapMs),
      load_healthz_p99_ms: Number(under.health.p99.toFixed(1)),
      load_healthz_max_ms: Number(under.health.max.toFixed(1)),
    })

    log()
    await stopServer(server)
    server = undefined
  } finally {
    if (server !== undefined) await server.stop()
    if (argv.keep === true) log(`\nkept ${dataDir}`)
    else await rm(dataDir, { recursive: true, force: true })
  }

  log()
  if (warnings.length > 0) log(`${warnings.length} warning(s): ${warnings.join('; ')}`)
  log(failures.length === 0 ? 'all correctness checks passed' : `${failures.length} CORRECTNESS FAILURE(S)`)
  log(JSON.stringify({ ...summary, warnings: warnings.length, failures: failures.length }))
  return failures.length === 0 ? 0 : 1
}

runMain('bench:retention', main)
