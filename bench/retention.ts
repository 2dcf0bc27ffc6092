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
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'
import { DuckDBInstance } from '@duckdb/node-api'
import { childEnv, startServer, type RunningServer } from './lib/child.js'
import { toScaled12 } from './lib/decimal.js'
import { BatchFactory, TEMPLATE_COUNT, type BatchTotals } from './lib/events.js'
import { IngestLedger, type PhaseResult } from './lib/load.js'
import { writePendingSegments, type BigStoreSpec } from './lib/bigstore.js'
import { detailsPath, segmentPath } from '../src/store/layout.js'
import { BUCKET_US } from '../src/store/catalog.js'
import { parseTimestamp } from '../src/ingest/timestamp.js'
import type { RetentionReport } from '../src/store/retention.js'

const repoRoot = fileURLToPath(new URL('..', import.meta.url))
const DAY_MS = 86_400_000
const serverStartTimeoutMs = 1_800_000
const sealWaitMaxMs = 3_600_000
const httpTimeoutMs = 120_000
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
    duration: { type: 'string' },
    warmup: { type: 'string' },
    connections: { type: 'string' },
    batch: { type: 'string' },
    threads: { type: 'string' },
    keep: { type: 'boolean' },
  },
  strict: true,
})

function num(name: keyof typeof argv, fallback: number, min: number, max: number): number {
  const raw = argv[name]
  if (raw === undefined) return fallback
  const v = Number(raw)
  if (typeof raw !== 'string' || !Number.isInteger(v) || v < min || v > max) {
    process.stderr.write(`bench:retention: --${name} must be an integer in ${min}..${max}, got "${String(raw)}"\n`)
    process.exit(2)
  }
  return v
}

const opts = {
  events: num('events', 4_000_000, 10_000, 200_000_000),
  // At least 3: one becomes the expired active segment, and each window must cut between the rest.
  segments: num('segments', 100, 3, 10_000),
  durationS: num('duration', 10, 1, 3_600),
  warmupS: num('warmup', 2, 0, 600),
  connections: num('connections', 32, 1, 1_024),
  batch: num('batch', 100, 1, 10_000),
  threads: num('threads', 2, 1, 64),
}

const log = (line = ''): void => void process.stdout.write(`${line}\n`)
const int = (n: number): string => Math.round(n).toLocaleString('en-US')
const f1 = (n: number): string => n.toFixed(1)
const f2 = (n: number): string => n.toFixed(2)
const mib = (bytes: number): string => `${f1(bytes / 2 ** 20)} MiB`
const failures: string[] = []
const warnings: string[] = []
const fail = (what: string): void => {
  failures.push(what)
  log(`FAILURE: ${what}`)
}
const warn = (what: string): void => {
  warnings.push(what)
  log(`WARNING: ${what}`)
}

const floorBucketMs = (ms: number): number => Math.floor(ms / bucketMs) * bucketMs
const ceilBucketMs = (ms: number): number => Math.ceil(ms / bucketMs) * bucketMs

async function start(name: string, dataDir: string, eventRetention: string): Promise<RunningServer> {
  return startServer({
    name,
    cwd: repoRoot,
    args: process.env.BENCH_SERVER_ENTRY === 'dist' ? ['dist/src/server.js'] : ['--import', 'tsx', 'src/server.ts'],
    env: childEnv({
      TOKENLEDGER_DATA_DIR: dataDir,
      TOKENLEDGER_PORT: '0',
      TOKENLEDGER_HOST: '127.0.0.1',
      TOKENLEDGER_LOG_LEVEL: 'warn',
      TOKENLEDGER_RETENTION_INTERVAL: 'off',
      TOKENLEDGER_EVENT_RETENTION: eventRetention,
    }),
    startTimeoutMs: serverStartTimeoutMs,
  })
}

async function getJson<T>(url: string, init?: RequestInit, timeoutMs = httpTimeoutMs): Promise<T> {
  const res = await fetch(url, { ...init, signal: AbortSignal.timeout(timeoutMs) })
  const text = await res.text()
  if (res.status !== 200) throw new Error(`${init?.method ?? 'GET'} ${url}: ${res.status} ${text.slice(0, 300)}`)
  return JSON.parse(text) as T
}

interface Status {
  ingest: { indexed_events: number; index_bytes: number; committed_events: number }
  tiers: { active: number; pending: number; archived: number; bytes: number; rows: number }
  rollovers: number
  retention: { runs: number; errors: number; segments_deleted: number; bytes_freed: number }
  sealing: { sealed: number; failures: number; backlog: number; failing: unknown[] }
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

const percentile = (xs: number[], p: number): number => {
  if (xs.length === 0) return NaN
  const s = [...xs].sort((a, b) => a - b)
  return s[Math.min(s.length - 1, Math.ceil((p / 100) * s.length) - 1)]!
}

async function waitSealed(server: RunningServer): Promise<{ ms: number; status: Status }> {
  const t0 = performance.now()
  for (;;) {
    const st = await getJson<Status>(`${server.url}/v1/status`)
    if (st.tiers.pending === 0 && st.sealing.backlog === 0) return { ms: performance.now() - t0, status: st }
    if (st.sealing.failing.length > 0) fail(`sealing is failing: ${JSON.stringify(st.sealing.failing).slice(0, 300)}`)
    if (performance.now() - t0 > sealWaitMaxMs) throw new Error('sealing did not finish within the bound')
    await new Promise((r) => setTimeout(r, sealPollMs))
  }
}

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

interface Sums {
  requests: bigint
  errors: bigint
  input: bigint
  output: bigint
  cacheRead: bigint
  cacheWrite: bigint
  reasoning: bigint
  /** cost × 10^12 */
  cost: bigint
  costMissing: bigint
}

const zero = (): Sums => ({ requests: 0n, errors: 0n, input: 0n, output: 0n, cacheRead: 0n, cacheWrite: 0n, reasoning: 0n, cost: 0n, costMissing: 0n })

/** `s` plus what the ledger acknowledged (its events carry no cache writes and always a cost). */
function plusAcked(s: Sums, t: BatchTotals): Sums {
  return {
    ...s,
    requests: s.requests + BigInt(t.events),
    errors: s.errors + BigInt(t.errors),
    input: s.input + t.inputTokens,
    output: s.output + t.outputTokens,
    cacheRead: s.cacheRead + t.cacheReadTokens,
    reasoning: s.reasoning + t.reasoningTokens,
    cost: s.cost + t.costMicros * 10n ** 6n,
  }
}

/** The server's totals as Sums, or undefined when a field is not an exact number. */
function sumsOf(t: Totals): Sums | undefined {
  const big = (k: string): bigint | undefined => (typeof t[k] === 'number' && Number.isSafeInteger(t[k]) ? BigInt(t[k]) : undefined)
  const cost = t['cost'] === null ? 0n : toScaled12(t['cost'])
  const s = {
    requests: big('requests'),
    errors: big('errors'),
    input: big('input_tokens'),
    output: big('output_tokens'),
    cacheRead: big('cache_read_tokens'),
    cacheWrite: big('cache_write_tokens'),
    reasoning: big('reasoning_tokens'),
    cost,
    costMissing: big('cost_missing'),
  }
  return Object.values(s).every((v) => v !== undefined) ? (s as Sums) : undefined
}

function sumsDiff(want: Sums, got: Sums): string[] {
  return (Object.keys(want) as (keyof Sums)[]).filter((k) => want[k] !== got[k]).map((k) => `${k} ${got[k]} ≠ ${want[k]}${k === 'cost' ? ' (× 10^-12)' : ''}`)
}

/** Sums over the generated files, read by a separate DuckDB (not the server's code). */
async function sumsOfFiles(paths: string[]): Promise<Sums> {
  const db = await DuckDBInstance.create(':memory:', { threads: String(opts.threads) })
  const conn = await db.connect()
  let s = zero()
  try {
    for (const [i, p] of paths.entries()) {
      await conn.run(`ATTACH '${p.replaceAll("'", "''")}' AS f${i} (READ_ONLY)`)
      const r = await conn.runAndReadAll(
        `SELECT count(*)::VARCHAR, count(*) FILTER (WHERE status_code >= 400)::VARCHAR, sum(input_tokens)::VARCHAR, sum(output_tokens)::VARCHAR,
                sum(cache_read_tokens)::VARCHAR, sum(cache_write_tokens)::VARCHAR, sum(reasoning_tokens)::VARCHAR, coalesce(sum(cost), 0)::VARCHAR,
                count(*) FILTER (WHERE cost IS NULL)::VARCHAR FROM f${i}.events`,
      )
      const [req, err, inp, out, cr, cw, rs, cost, missing] = r.getRows()[0] as string[]
      const scaledCost = toScaled12(cost)
      if (scaledCost === undefined) throw new Error(`${p}: cost sum is not a decimal: ${cost}`)
      s = {
        requests: s.requests + BigInt(req!),
        errors: s.errors + BigInt(err!),
        input: s.input + BigInt(inp!),
        output: s.output + BigInt(out!),
        cacheRead: s.cacheRead + BigInt(cr!),
        cacheWrite: s.cacheWrite + BigInt(cw!),
        reasoning: s.reasoning + BigInt(rs!),
        cost: s.cost + scaledCost,
        costMissing: s.costMissing + BigInt(missing!),
      }
      await conn.run(`DETACH f${i}`)
    }
  } finally {
    conn.closeSync()
    db.closeSync()
  }
  return s
}

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

interface LoadFigures {
  eventsPerS: number
  p50: number
  p99: number
  max: number
  worstEventsPerS: number
  worstAtS: number
  longestGapMs: number
  health: HealthStats
}

function phaseLine(label: string, r: PhaseResult): { eventsPerS: number; p50: number; p99: number; max: number } {
  const res = r.result
  const eventsPerS = (res['2xx'] * opts.batch) / res.duration
  log(
    `  ${label}: ${int(eventsPerS)} events/s, p50 ${res.latency.p50} ms, p99 ${res.latency.p99} ms, max ${res.latency.max} ms, ` +
      `non-2xx ${res.non2xx}, errors ${res.errors}, accepted≠batch ${r.stats.mismatches}`,
  )
  if (res.non2xx > 0 || r.stats.mismatches > 0) fail(`${label}: ${res.non2xx} non-2xx, ${r.stats.mismatches} batches not fully accepted ${JSON.stringify(r.stats.non2xxByStatus)} ${r.stats.non2xxSamples.slice(0, 2).join(' | ')}`)
  return { eventsPerS, p50: res.latency.p50, p99: res.latency.p99, max: res.latency.max }
}

/** One measured load phase with the health poller and the rate sampler; `during` runs beside it. */
async function measuredLoad<T>(label: string, server: RunningServer, ledger: IngestLedger, during: () => Promise<T>): Promise<{ load: LoadFigures; extra: T }> {
  const st0 = await getJson<Status>(`${server.url}/v1/status`)
  const health = pollHealth(server.url)
  const rate = sampleAcked(ledger)
  const side = during()
  const res = await ledger.run(server.url, opts.connections, opts.durationS)
  const worst = rate.stop()
  const extra = await side
  const h = await health.stop()
  const line = phaseLine(label, res)
  const st1 = await getJson<Status>(`${server.url}/v1/status`)
  // Rollovers and seals inside a phase cost ingest too: shown so a ratio can be read.
  log(`  during the phase: ${st1.rollovers - st0.rollovers} rollovers, ${st1.sealing.sealed - st0.sealing.sealed} seals; load generator CPU ${f1(res.generatorCpuS)} s`)
  log(
    `  worst ${stallWindowMs} ms: ${int(worst.worstEventsPerS)} events/s (at ${f1(worst.at / 1000)} s), longest with no batch acknowledged ~${int(worst.longestGapMs)} ms; ` +
      `/healthz every ${healthzEveryMs} ms: ${h.requests} answers, p50 ${f1(h.p50)} ms, p99 ${f1(h.p99)} ms, max ${f1(h.max)} ms, failures ${h.failures}`,
  )
  if (h.failures > 0) fail(`${label}: ${h.failures} /healthz requests failed`)
  return { load: { ...line, worstEventsPerS: worst.worstEventsPerS, worstAtS: worst.at / 1000, longestGapMs: worst.longestGapMs, health: h }, extra }
}

/** Resends unanswered batches and returns the acknowledged totals (fails if some batch was partly stored). */
async function settleLedger(server: RunningServer, ledger: IngestLedger): Promise<BatchTotals | undefined> {
  const resend = await ledger.resendInFlight(server.url)
  for (const f of resend.failures) fail(`resend: ${f}`)
  if (resend.batches > 0) log(`  resent ${resend.batches} unanswered batches: ${resend.accepted} accepted, ${resend.duplicates} duplicates`)
  const t = ledger.expectedTotals()
  if (t === undefined) fail('some batch was only partly stored')
  return t
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
    const generated = await sumsOfFiles(written.map((s) => segmentPath(dataDir, 'pending', s.id)))
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
    const st3 = await getJson<Status>(`${server.url}/v1/status`)
    const du3 = await dirBytes(dataDir)
    const r1 = await runRetention('run 1', server, dataDir)
    if (r1.report.active.action !== 'rolled_over' || r1.report.active.segment_id !== activeId) {
      fail(`run 1: expected the expired active segment ${activeId} to be rolled over, got ${JSON.stringify(r1.report.active)}`)
    }
    const st3b = await getJson<Status>(`${server.url}/v1/status`)
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
    const acked = await settleLedger(server, ledger)
    if (acked !== undefined) {
      const st = await getJson<Status>(`${server.url}/v1/status`)
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

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    process.stderr.write(`bench:retention: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`)
    process.exit(2)
  },
)
