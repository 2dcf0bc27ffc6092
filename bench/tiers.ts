// Tiers benchmark (not a test): what a large, tiered store costs ingest, and what
// rollover and start-up cost. Every figure is printed with a baseline measured in the
// same run (these machines are noisy):
//
//   1. empty store: closed-loop ingest (autocannon, fresh ids), the baseline events/s.
//   2. same server, POST /v1/admin/rollover every --rollover-every ms while the load runs:
//      how long each rollover held the write gate (max, p99) and the ingest p99 against
//      phase 1's.
//   3. a large store (--events, default 20 million, in --segments files) is written
//      straight into pending/ with DuckDB SQL (bench/lib/bigstore.ts; its rows carry the
//      fingerprints the server computes, which the bench checks first). The server
//      starts on it as after a crash: records the segments, rebuilds the dedupe index
//      from every id, seals them in the background. Reported: start-up time, index
//      bytes and events, RSS, seal time.
//   4. ingest on the large store with fresh ids: events/s as a ratio of phase 1.
//   5. replays of stored events (every one must come back `duplicate`): events/s, i.e.
//      the exact-probe cost of a dedupe-index hit in an archived segment.
//   6. GET /v1/usage over everything equals the generated sums (read back from the files
//      by a separate DuckDB) plus what was acknowledged (requests, errors, tokens, exact
//      cost); over sealed segments it is answered from the catalog's rollups.
//   7. restart with every segment archived: time to ready (the dedupe index loads its
//      persisted id runs, it replays no history), the dedupe index's resident bytes per
//      retained event, the process RSS above the empty server's per retained event (an
//      upper bound of the index's resident cost), and the replay check's latency for ids
//      of the oldest segment (one event a request) against a fresh event's.
//   8. archive bytes per event against the same rows as zstd Parquet (DuckDB COPY).
//
// Run:   npm run bench:tiers                       (20 M events; ~10 min on 2 cores)
//        npm run bench:tiers -- --events 2000000   (a quick look)
// Flags: --events N (20000000) --segments N (events / 500000) --duration S (10)
//        --warmup S (2) --connections N (32) --batch B (100) --replay N (100000)
//        --rollover-every MS (500) --threads N (2) --keep (keep the data directory)
// Output: a report, and as the last line one JSON summary.
// Exit:   0 ok, 1 a correctness failure (lost, double-counted or wrong answers), 2 setup.
import { randomBytes } from 'node:crypto'
import { mkdtemp, readdir, rm, stat } from 'node:fs/promises'
import { readFileSync } from 'node:fs'
import os from 'node:os'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import { DuckDBInstance } from '@duckdb/node-api'
import type { RunningServer } from './lib/child.js'
import { toScaled12 } from './lib/decimal.js'
import { BatchFactory, TEMPLATE_COUNT } from './lib/events.js'
import { IngestLedger } from './lib/load.js'
import { checkFingerprints, computeRows, EXACT_FINGERPRINT_STRIDE, rowsOfSegment, writePendingSegments, type BigStoreSpec } from './lib/bigstore.js'
import { f1, f2, fail, failures, int, integerFlags, loadFlags, loadOptions, log, percentile, phaseLine, type PhaseFigures } from './lib/report.js'
import { getJson, httpTimeoutMs, settleLedger, startTokenledger, waitSealed, type ServerStatus } from './lib/server.js'
import { plusAcked, sumsOfFiles, zero, type Sums } from './lib/sums.js'
import { indexDir, segmentPath, tierDir } from '../src/store/layout.js'
import { nodeFileSystem, type FileSystem } from '../src/store/fsops.js'
import { hashId64 } from '../src/store/idindex.js'
import { IdRuns } from '../src/store/idruns.js'
import { runMain } from './lib/cli.js'

const parquetSampleSegments = 4

const { values: argv } = parseArgs({
  options: {
    events: { type: 'string' },
    segments: { type: 'string' },
    ...loadFlags,
    replay: { type: 'string' },
    'rollover-every': { type: 'string' },
    threads: { type: 'string' },
    keep: { type: 'boolean' },
  },
  strict: true,
})

const num = integerFlags('bench:tiers', argv)

const opts = {
  events: num('events', 20_000_000, 10_000, 200_000_000),
  ...loadOptions(num),
  replay: num('replay', 100_000, 1_000, 10_000_000),
  rolloverEveryMs: num('rollover-every', 500, 50, 60_000),
  threads: num('threads', 2, 1, 64),
}
const segments = num('segments', Math.max(1, Math.round(opts.events / 500_000)), 1, 10_000)

function rssMiB(pid: number): number | undefined {
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))
    return m ? Number(m[1]) / 1024 : undefined
  } catch {
    return undefined
  }
}

// ---------------------------------------------------------------------- money and sums

async function checkUsage(server: RunningServer, want: Sums, label: string): Promise<void> {
  const t0 = performance.now()
  const body = await getJson<{ totals: Record<string, unknown> }>(`${server.url}/v1/usage?from=0&to=${Date.now() + 3_600_000}`)
  const ms = performance.now() - t0
  const got = body.totals
  const pairs: [string, bigint, unknown][] = [
    ['requests', want.requests, got['requests']],
    ['errors', want.errors, got['errors']],
    ['input_tokens', want.input, got['input_tokens']],
    ['output_tokens', want.output, got['output_tokens']],
    ['cache_read_tokens', want.cacheRead, got['cache_read_tokens']],
    ['reasoning_tokens', want.reasoning, got['reasoning_tokens']],
  ]
  const bad = pairs.filter(([, w, g]) => BigInt(String(g)) !== w).map(([k, w, g]) => `${k} ${String(g)} ≠ ${w}`)
  if (toScaled12(got['cost']) !== want.cost) bad.push(`cost ${String(got['cost'])} ≠ ${want.cost} × 10^-12`)
  if (bad.length > 0) fail(`${label}: GET /v1/usage differs from generated + acknowledged: ${bad.join('; ')}`)
  else log(`  ${label}: GET /v1/usage = generated + acknowledged (${int(Number(want.requests))} requests, exact cost), answered in ${int(ms)} ms`)
}

/** Resends unanswered batches and returns the acknowledged sums (fails if some batch was partly stored). */
async function ackedSums(server: RunningServer, ledger: IngestLedger): Promise<Sums> {
  const t = await settleLedger(server, ledger)
  return t === undefined ? zero() : plusAcked(zero(), t)
}

// ---------------------------------------------------------------------- phases

async function rolloverPhase(server: RunningServer, ledger: IngestLedger): Promise<{ gate: number[]; durations: number[]; load: PhaseFigures }> {
  const gate: number[] = []
  const durations: number[] = []
  let stop = false
  const roller = (async () => {
    while (!stop) {
      await new Promise((r) => setTimeout(r, opts.rolloverEveryMs))
      if (stop) break
      const r = await getJson<{ rolled: boolean; gate_held_ms: number; duration_ms: number }>(`${server.url}/v1/admin/rollover`, { method: 'POST' })
      if (r.rolled) {
        gate.push(r.gate_held_ms)
        durations.push(r.duration_ms)
      }
    }
  })()
  const res = await ledger.run(server.url, opts.connections, opts.durationS)
  stop = true
  await roller
  return { gate, durations, load: phaseLine(`ingest with a rollover every ${opts.rolloverEveryMs} ms`, res, opts.batch) }
}

/**
 * Sends stored events again; every one must come back `duplicate`. With `until`, the
 * workers cycle through the batches until it returns true (a replay storm running
 * beside other load), with `workers` connections.
 */
async function replayPhase(server: RunningServer, spec: BigStoreSpec, workers = opts.connections, until?: () => boolean): Promise<{ eventsPerS: number; p50: number; p99: number; duplicates: number }> {
  // Stored rows with an exact fingerprint, spread over every segment, in random order.
  const stride = EXACT_FINGERPRINT_STRIDE
  const exactRows = Math.floor(spec.events / stride)
  const count = Math.min(opts.replay, exactRows)
  const ns: number[] = []
  const step = exactRows / count
  for (let i = 0; i < count; i++) ns.push(Math.floor(i * step) * stride)
  for (let i = ns.length - 1; i > 0; i--) {
    const j = Math.floor(Math.random() * (i + 1))
    ;[ns[i], ns[j]] = [ns[j]!, ns[i]!]
  }
  const { events } = await computeRows(spec, ns)
  const bodies: string[] = []
  for (let i = 0; i < events.length; i += opts.batch) bodies.push(JSON.stringify({ events: events.slice(i, i + opts.batch) }))
  let next = 0
  let duplicates = 0
  const latencies: number[] = []
  const sent = new Array<number>(bodies.length).fill(0)
  const worker = async (): Promise<void> => {
    for (let i = next++; until ? !until() : i < bodies.length; i = next++) {
      if (until) i %= bodies.length
      sent[i]!++
      const t0 = performance.now()
      const res = await fetch(`${server.url}/v1/events`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: bodies[i], signal: AbortSignal.timeout(httpTimeoutMs) })
      const text = await res.text()
      latencies.push(performance.now() - t0)
      const a = res.status === 200 ? (JSON.parse(text) as { accepted: number; duplicates: number; conflicts: number; rejected: number }) : undefined
      if (a === undefined || a.accepted !== 0 || a.conflicts !== 0 || a.rejected !== 0) {
        fail(`replay of stored events: expected all duplicates, got ${res.status} ${text.slice(0, 300)}`)
        continue
      }
      duplicates += a.duplicates
    }
  }
  const t0 = performance.now()
  await Promise.all(Array.from({ length: workers }, worker))
  const s = (performance.now() - t0) / 1000
  const sentEvents = sent.reduce((n, times, i) => n + times * Math.min(opts.batch, events.length - i * opts.batch), 0)
  if (duplicates !== sentEvents) fail(`replay: ${duplicates} duplicates for ${sentEvents} stored events sent`)
  return { eventsPerS: duplicates / s, p50: percentile(latencies, 50), p99: percentile(latencies, 99), duplicates }
}

/**
 * The replay check's latency for ids of the oldest segment (segment 1): one stored
 * event a request, one request at a time, each of which must come back `duplicate`;
 * and, interleaved, one fresh event a request (accepted) as the baseline.
 */
async function oldestReplayLatency(server: RunningServer, spec: BigStoreSpec, count = 500): Promise<{ replay: { p50: number; p99: number; max: number }; fresh: { p50: number; p99: number } }> {
  const [lo, hi] = rowsOfSegment(spec, 1)
  const stride = EXACT_FINGERPRINT_STRIDE
  const exact = Math.floor((hi - lo) / stride)
  const ns = Array.from({ length: Math.min(count, exact) }, (_, i) => lo + Math.floor((i * exact) / Math.min(count, exact)) * stride)
  const { events } = await computeRows(spec, ns)
  const fresh = await computeRows(spec, ns.map((_, i) => spec.events + 10_000_000 + i))
  const replayMs: number[] = []
  const freshMs: number[] = []
  const send = async (e: unknown, want: 'duplicates' | 'accepted', into: number[]): Promise<void> => {
    const t0 = performance.now()
    const res = await fetch(`${server.url}/v1/events`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ events: [e] }), signal: AbortSignal.timeout(httpTimeoutMs) })
    const text = await res.text()
    into.push(performance.now() - t0)
    if (res.status !== 200 || (JSON.parse(text) as Record<string, number>)[want] !== 1) fail(`oldest-segment check: expected ${want}, got ${res.status} ${text.slice(0, 300)}`)
  }
  for (let i = 0; i < events.length; i++) {
    await send(events[i], 'duplicates', replayMs)
    await send(fresh.events[i], 'accepted', freshMs)
  }
  return { replay: { p50: percentile(replayMs, 50), p99: percentile(replayMs, 99), max: Math.max(...replayMs) }, fresh: { p50: percentile(freshMs, 50), p99: percentile(freshMs, 99) } }
}

/**
 * Loads the store's id runs (what a start-up loads of the sealed tier's dedupe index)
 * in this process, with the server stopped or not (runs are read-only here), and
 * measures the RSS it adds: the resident cost of the index, measured, not computed.
 */
async function sealedIndexResident(dataDir: string, retained: ReadonlySet<number>): Promise<{ runs: number; entries: number; bytes: number; rssBytes: number; ms: number }> {
  const before = process.memoryUsage().rss
  const t0 = performance.now()
  const { runs } = await IdRuns.open(indexDir(dataDir), readOnlyFs, hashId64, retained)
  const ms = performance.now() - t0
  const rssBytes = process.memoryUsage().rss - before
  const st = runs.stats()
  runs.close()
  return { runs: st.runs, entries: st.entries, bytes: st.bytes, rssBytes, ms }
}

/** The file-system seam with every change refused: the bench must not touch the server's runs. */
const readOnlyFs: FileSystem = {
  ...nodeFileSystem,
  mkdirp: async () => undefined,
  rename: async () => {
    throw new Error('read-only')
  },
  remove: async (f) => {
    throw new Error(`read-only: would remove ${f}`)
  },
  syncDir: async () => undefined,
}

async function archiveVsParquet(dataDir: string): Promise<{ archiveBytesPerEvent: number; parquetBytesPerEvent: number; segments: number }> {
  const dir = tierDir(dataDir, 'archive')
  const names = (await readdir(dir)).filter((n) => n.endsWith('.duckdb')).sort().slice(0, parquetSampleSegments)
  const db = await DuckDBInstance.create(':memory:', { threads: String(opts.threads) })
  const conn = await db.connect()
  let rows = 0
  let archiveBytes = 0
  let parquetBytes = 0
  try {
    for (const [i, name] of names.entries()) {
      const path = join(dir, name)
      const out = join(dataDir, `sample-${i}.parquet`)
      await conn.run(`ATTACH '${path}' AS a${i} (READ_ONLY)`)
      const r = await conn.runAndReadAll(`SELECT count(*)::INTEGER FROM a${i}.events`)
      rows += r.getRows()[0]![0] as number
      // The same rows and columns (summary columns; detail is a separate table in both cases).
      await conn.run(`COPY (SELECT * FROM a${i}.events ORDER BY ts) TO '${out}' (FORMAT parquet, COMPRESSION zstd)`)
      await conn.run(`DETACH a${i}`)
      archiveBytes += (await stat(path)).size
      parquetBytes += (await stat(out)).size
      await rm(out)
    }
  } finally {
    conn.closeSync()
    db.closeSync()
  }
  return { archiveBytesPerEvent: archiveBytes / rows, parquetBytesPerEvent: parquetBytes / rows, segments: names.length }
}

// ---------------------------------------------------------------------- main

async function main(): Promise<number> {
  const runId = randomBytes(4).toString('hex')
  log(`tokenledger tiers bench: ${int(opts.events)} events in ${segments} segments; load ${opts.connections} connections × ${opts.batch}-event batches, ${opts.durationS} s phases; node ${process.version}, ${os.cpus().length} CPUs`)
  const summary: Record<string, unknown> = { events: opts.events, segments }

  // 1-2. Empty store.
  let emptyRssMiB = NaN
  const emptyDir = await mkdtemp(join(os.tmpdir(), 'tokenledger-tiers-empty-'))
  let base: PhaseFigures
  {
    log('\n[1] empty store')
    const server = await startTokenledger('empty', emptyDir)
    emptyRssMiB = rssMiB(server.pid) ?? NaN
    log(`  start-up: listening after ${int(server.listeningMs)} ms; idle RSS ${f1(emptyRssMiB)} MiB (the baseline of the resident bytes per event below)`)
    const ledger = new IngestLedger(new BatchFactory(`${runId}e`, opts.batch), TEMPLATE_COUNT)
    try {
      if (opts.warmupS > 0) await ledger.run(server.url, opts.connections, opts.warmupS)
      base = phaseLine('ingest, no rollover', await ledger.run(server.url, opts.connections, opts.durationS), opts.batch)
      log('\n[2] rollovers under load')
      const ro = await rolloverPhase(server, ledger)
      log(
        `  ${ro.gate.length} rollovers: gate held max ${Math.max(...ro.gate).toFixed(3)} ms, p99 ${percentile(ro.gate, 99).toFixed(3)} ms, median ${percentile(ro.gate, 50).toFixed(3)} ms; ` +
          `whole rollover median ${f1(percentile(ro.durations, 50))} ms; ingest p99 ${ro.load.p99} ms vs ${base.p99} ms without`,
      )
      const acked = await ackedSums(server, ledger)
      await checkUsage(server, acked, 'empty store after rollovers')
      Object.assign(summary, {
        empty_events_per_s: Math.round(base.eventsPerS),
        empty_p99_ms: base.p99,
        rollovers: ro.gate.length,
        rollover_gate_max_ms: Math.max(...ro.gate),
        rollover_gate_p99_ms: percentile(ro.gate, 99),
        rollover_ingest_p99_ms: ro.load.p99,
        rollover_events_per_s: Math.round(ro.load.eventsPerS),
      })
    } finally {
      await server.stop()
      await rm(emptyDir, { recursive: true, force: true })
    }
  }

  // 3. A large store.
  log(`\n[3] large store: ${int(opts.events)} events written into pending/`)
  const bigDir = await mkdtemp(join(os.tmpdir(), 'tokenledger-tiers-big-'))
  const now = Date.now()
  const spec: BigStoreSpec = { events: opts.events, segments, seed: `b${runId}`, startMs: now - 20 * 86_400_000, endMs: now - 3_600_000, threads: opts.threads }
  try {
    const problems = await checkFingerprints(spec)
    if (problems.length > 0) {
      for (const p of problems.slice(0, 5)) log(`  ${p}`)
      log('  the generator no longer computes the server\'s fingerprints: fix bench/lib/bigstore.ts')
      return 2
    }
    let t0 = performance.now()
    const written = await writePendingSegments(bigDir, spec)
    const genS = (performance.now() - t0) / 1000
    const pendingBytes = written.reduce((n, s) => n + s.bytes, 0)
    log(`  generated in ${f1(genS)} s (${int(opts.events / genS)} events/s), ${f1(pendingBytes / 2 ** 20)} MiB, ${f1(pendingBytes / opts.events)} bytes/event before sealing`)
    t0 = performance.now()
    const generated = await sumsOfFiles(written.map((s) => segmentPath(bigDir, 'pending', s.id)), opts.threads)
    log(`  sums of the generated files read back in ${int(performance.now() - t0)} ms`)

    let server = await startTokenledger('large', bigDir)
    let st = await getJson<ServerStatus>(`${server.url}/v1/status`)
    log(
      `  start-up over ${segments} pending segments: listening after ${f1(server.listeningMs / 1000)} s; ` +
        `dedupe index ${int(st.ingest.indexed_events)} ids in ${f1(st.ingest.index_bytes / 2 ** 20)} MiB (${f1(st.ingest.index_bytes / st.ingest.indexed_events)} B/id); RSS ${f1(rssMiB(server.pid) ?? NaN)} MiB`,
    )
    const sealed = await waitSealed(server)
    log(`  sealed ${sealed.status.tiers.archived} segments in ${f1(sealed.ms / 1000)} s after start-up (${int(opts.events / (sealed.ms / 1000))} events/s)`)
    Object.assign(summary, { generate_s: genS, first_start_s: server.listeningMs / 1000, index_bytes: st.ingest.index_bytes, seal_s: sealed.ms / 1000 })

    const ledger = new IngestLedger(new BatchFactory(`${runId}b`, opts.batch), TEMPLATE_COUNT)
    try {
      // 4. Ingest on the large store.
      log('\n[4] ingest on the large store (fresh ids)')
      if (opts.warmupS > 0) await ledger.run(server.url, opts.connections, opts.warmupS)
      const big = phaseLine('ingest', await ledger.run(server.url, opts.connections, opts.durationS), opts.batch)
      const ratio = big.eventsPerS / base.eventsPerS
      log(`  ratio large / empty: ${ratio.toFixed(2)} (p99 ${big.p99} ms vs ${base.p99} ms); server RSS ${f1(rssMiB(server.pid) ?? NaN)} MiB`)
      Object.assign(summary, { large_events_per_s: Math.round(big.eventsPerS), large_over_empty: Number(ratio.toFixed(3)), large_p99_ms: big.p99 })

      // 5. Replays.
      log(`\n[5] replays of ${int(Math.min(opts.replay, Math.floor(opts.events / EXACT_FINGERPRINT_STRIDE)))} stored events from every segment`)
      const rp = await replayPhase(server, spec)
      log(`  ${int(rp.eventsPerS)} duplicate events/s (${(rp.eventsPerS / big.eventsPerS).toFixed(2)} of fresh ingest), request p50 ${f1(rp.p50)} ms, p99 ${f1(rp.p99)} ms`)
      Object.assign(summary, { replay_events_per_s: Math.round(rp.eventsPerS), replay_over_fresh: Number((rp.eventsPerS / big.eventsPerS).toFixed(3)) })
      // Fresh ingest while 8 connections replay old events: probes of closed segments run
      // before the write gate, so fresh appends should barely notice.
      let storming = true
      const storm = replayPhase(server, spec, 8, () => !storming)
      const during = phaseLine('fresh ingest during a replay storm (8 connections)', await ledger.run(server.url, opts.connections, opts.durationS), opts.batch)
      storming = false
      const st5 = await storm
      log(`  fresh ingest during the storm: ${(during.eventsPerS / big.eventsPerS).toFixed(2)} of phase 4 (p99 ${during.p99} ms vs ${big.p99} ms); the storm answered ${int(st5.eventsPerS)} duplicate events/s`)
      Object.assign(summary, { storm_fresh_over_large: Number((during.eventsPerS / big.eventsPerS).toFixed(3)), storm_fresh_p99_ms: during.p99, storm_replay_events_per_s: Math.round(st5.eventsPerS) })

      // 6. Totals.
      log('\n[6] totals')
      const acked = await ackedSums(server, ledger)
      const want = { ...generated }
      for (const k of Object.keys(want) as (keyof Sums)[]) want[k] += acked[k]
      await checkUsage(server, want, 'large store')

      // 7. Restart.
      log('\n[7] restart with every segment archived')
      await server.stop()
      server = await startTokenledger('large-restart', bigDir)
      st = await getJson<ServerStatus>(`${server.url}/v1/status`)
      const rows = st.tiers.rows
      const rss = rssMiB(server.pid) ?? NaN
      const residentPerEvent = ((rss - emptyRssMiB) * 2 ** 20) / rows
      log(`  listening after ${f1(server.listeningMs / 1000)} s, ready (/readyz 200: the dedupe index loaded) after ${f1(server.readyMs / 1000)} s (${f1((server.readyMs * 1000) / rows)} µs per retained event): ${st.tiers.archived} archived, ${int(rows)} rows`)
      log(`  dedupe index: ${int(st.ingest.indexed_events)} ids, ${f1(st.ingest.index_bytes / 2 ** 20)} MiB resident structures (${f2(st.ingest.index_bytes / rows)} B per retained event); process RSS ${f1(rss)} MiB, ${f2(residentPerEvent)} B per retained event above the empty server's (${f1(emptyRssMiB)} MiB): an upper bound, DuckDB's attached archives included`)
      await checkUsage(server, want, 'after restart')
      // After the totals check: the fresh events this sends are not in `want`.
      const old = await oldestReplayLatency(server, spec)
      log(`  replay check of ids in the oldest segment (one event a request, sequential): p50 ${f2(old.replay.p50)} ms, p99 ${f2(old.replay.p99)} ms, max ${f2(old.replay.max)} ms; a fresh event the same way: p50 ${f2(old.fresh.p50)} ms, p99 ${f2(old.fresh.p99)} ms`)
      Object.assign(summary, {
        restart_s: server.readyMs / 1000,
        restart_listening_s: server.listeningMs / 1000,
        restart_rows: rows,
        index_bytes_per_event: Number((st.ingest.index_bytes / rows).toFixed(3)),
        rss_mib: Math.round(rss),
        empty_rss_mib: Math.round(emptyRssMiB),
        rss_bytes_per_event_over_empty: Number(residentPerEvent.toFixed(3)),
        oldest_replay_p50_ms: Number(old.replay.p50.toFixed(3)),
        oldest_replay_p99_ms: Number(old.replay.p99.toFixed(3)),
        fresh_single_p50_ms: Number(old.fresh.p50.toFixed(3)),
      })
      const sealed = await sealedIndexResident(bigDir, new Set(Array.from({ length: st.tiers.archived + st.tiers.active + st.tiers.pending + 64 }, (_, i) => i)))
      log(`  sealed tier's id runs loaded in this (bench) process: ${sealed.runs} runs, ${int(sealed.entries)} ids in ${f1(sealed.ms)} ms; their structures ${f2(sealed.bytes / sealed.entries)} B an id, RSS growth ${f2(sealed.rssBytes / sealed.entries)} B an id`)
      Object.assign(summary, { sealed_runs: sealed.runs, sealed_ids: sealed.entries, sealed_load_ms: Math.round(sealed.ms), sealed_bytes_per_id: Number((sealed.bytes / sealed.entries).toFixed(3)), sealed_rss_bytes_per_id: Number((sealed.rssBytes / sealed.entries).toFixed(3)) })
      const afterRestart = await replayPhase(server, { ...spec })
      log(`  replays after restart: ${int(afterRestart.duplicates)} duplicates`)
    } finally {
      await server.stop()
    }

    // 8. Sizes.
    log('\n[8] archive size')
    const sz = await archiveVsParquet(bigDir)
    log(`  over ${sz.segments} archives: ${f1(sz.archiveBytesPerEvent)} bytes/event sealed DuckDB vs ${f1(sz.parquetBytesPerEvent)} zstd Parquet (ratio ${(sz.archiveBytesPerEvent / sz.parquetBytesPerEvent).toFixed(2)})`)
    Object.assign(summary, { archive_bytes_per_event: Number(sz.archiveBytesPerEvent.toFixed(1)), parquet_bytes_per_event: Number(sz.parquetBytesPerEvent.toFixed(1)) })
  } finally {
    if (argv.keep === true) log(`\nkept ${bigDir}`)
    else await rm(bigDir, { recursive: true, force: true })
  }

  log()
  log(failures.length === 0 ? 'all correctness checks passed' : `${failures.length} CORRECTNESS FAILURE(S)`)
  log(JSON.stringify({ ...summary, failures: failures.length }))
  return failures.length === 0 ? 0 : 1
}

runMain('bench:tiers', main)
