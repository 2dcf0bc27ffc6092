// Backup benchmark (not a test): what POST /v1/admin/backup costs on a large store
// while ingest runs, and whether the copy is right. Figures with a baseline measured
// in the same run:
//
//   1. a store of --events (default 2 million) in --segments files (default 100) is
//      written into pending/ (bench/lib/bigstore.ts) and the server seals it;
//   2. baseline: an open loop of --rate events/s (100-event batches, fresh ids) for
//      --phase s: batch latency from its scheduled time, p50/p99/max;
//   3. the same loop again, with a backup into a new directory started --delay s in:
//      the backup's duration, how long seals and retention waited (maintenance_held_ms),
//      bytes linked or copied, and the latency of the batches scheduled while it ran,
//      as a ratio to the baseline's p99 (the write gate is never taken: target ≤ 2);
//   4. a second server on the copy: its request count lies between the generated events
//      plus the events acknowledged before the backup began and plus every event
//      acknowledged (a failure otherwise), and GET /v1/admin/verify over the store's
//      30 days finds no mismatch.
//
// Run:   npm run bench:backup                     (2 M events; a few minutes on 2 cores)
//        npm run bench:backup -- --events 200000  (a quick look)
// Flags: --events N (2000000) --segments N (100) --rate N (2000) --phase S (15) --delay S (3) --threads N (2) --keep
// Exit:  0 ok (targets missed are warnings), 1 a correctness failure, 2 setup.

import { randomBytes } from 'node:crypto'
import { mkdtemp, rm } from 'node:fs/promises'
import os from 'node:os'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import type { RunningServer } from './lib/child.js'
import { writePendingSegments, type BigStoreSpec } from './lib/bigstore.js'
import { runMain } from './lib/cli.js'
import { BatchFactory, TEMPLATE_COUNT } from './lib/events.js'
import { IngestLedger, type OpenLoopResult } from './lib/load.js'
import { f1, fail, failures, int, integerFlags, log, mib, percentile, warn, warnings } from './lib/report.js'
import { getJson, settleLedger, startTokenledger, waitSealed } from './lib/server.js'
import { sumsOf, sumsOfFiles } from './lib/sums.js'
import { segmentPath } from '../src/store/layout.js'

const DAY_MS = 86_400_000
const BUCKET_MS = 15 * 60_000
const BATCH = 100
/** The backup's effect on ingest: p99 of batches scheduled during it over the baseline's p99. */
const LATENCY_RATIO_TARGET = 2

const { values: argv } = parseArgs({
  options: {
    events: { type: 'string' },
    segments: { type: 'string' },
    rate: { type: 'string' },
    phase: { type: 'string' },
    delay: { type: 'string' },
    threads: { type: 'string' },
    keep: { type: 'boolean' },
  },
})
const num = integerFlags('bench:backup', argv)
const opts = {
  events: num('events', 2_000_000, 1_000, 1_000_000_000),
  segments: num('segments', 100, 1, 10_000),
  rate: num('rate', 2_000, 100, 1_000_000),
  phaseS: num('phase', 15, 5, 3_600),
  delayS: num('delay', 3, 0, 3_600),
  threads: num('threads', 2, 1, 64),
  keep: argv.keep === true,
}

interface BackupAnswer {
  segments: Array<{ how: string; bytes: number }>
  bytes: number
  maintenance_held_ms: number
  duration_ms: number
}

const latencyLine = (label: string, xs: number[]): string =>
  `${label}: ${int(xs.length)} batches, p50 ${f1(percentile(xs, 50))} ms, p99 ${f1(percentile(xs, 99))} ms, max ${f1(Math.max(...xs))} ms`

async function main(): Promise<number> {
  const runId = randomBytes(4).toString('hex')
  const root = await mkdtemp(join(os.tmpdir(), 'tl-bench-backup-'))
  const dataDir = join(root, 'data')
  const copyDir = join(root, 'copy')
  let server: RunningServer | null = null
  let copy: RunningServer | null = null
  try {
    const now = Date.now()
    const spec: BigStoreSpec = { events: opts.events, segments: opts.segments, seed: `b${runId}`, startMs: now - 29.5 * DAY_MS, endMs: now - 60_000, threads: opts.threads }
    log(`[1] a store of ${int(opts.events)} events in ${opts.segments} segments`)
    const written = await writePendingSegments(dataDir, spec)
    const generated = await sumsOfFiles(written.map((s) => segmentPath(dataDir, 'pending', s.id)), opts.threads)
    server = await startTokenledger('backup', dataDir, { env: { TOKENLEDGER_RETENTION_INTERVAL: 'off' } })
    const sealed = await waitSealed(server)
    log(`  sealed in ${f1(sealed.ms / 1000)} s`)
    const ledger = new IngestLedger(new BatchFactory(`${runId}b`, BATCH), TEMPLATE_COUNT)

    log(`\n[2] ingest alone: ${int(opts.rate)} events/s for ${opts.phaseS} s`)
    let loop = ledger.startOpenLoop(server.url, opts.rate)
    await new Promise((r) => setTimeout(r, opts.phaseS * 1000))
    const alone: OpenLoopResult = await loop.stop()
    log(`  ${latencyLine('latency', alone.latenciesMs)}`)

    log(`\n[3] the same, with a backup ${opts.delayS} s in`)
    const t0 = performance.now()
    loop = ledger.startOpenLoop(server.url, opts.rate)
    await new Promise((r) => setTimeout(r, opts.delayS * 1000))
    const ackedBefore = loop.ackedBatchNos().length
    const startedMs = performance.now() - t0
    const answer = await getJson<BackupAnswer>(`${server.url}/v1/admin/backup`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ dir: copyDir }) }, 3_600_000)
    const endedMs = performance.now() - t0
    const rest = opts.phaseS * 1000 - endedMs
    if (rest > 0) await new Promise((r) => setTimeout(r, rest))
    const loaded = await loop.stop()
    const during = loaded.latenciesMs.filter((_, i) => loaded.scheduledAtMs[i]! >= startedMs && loaded.scheduledAtMs[i]! <= endedMs)
    const how = new Map<string, number>()
    for (const s of answer.segments) how.set(s.how, (how.get(s.how) ?? 0) + 1)
    log(`  backup: ${f1(answer.duration_ms)} ms, seals and retention waited ${f1(answer.maintenance_held_ms)} ms, ${mib(answer.bytes)} (${[...how].map(([k, n]) => `${n} ${k}`).join(', ')})`)
    log(`  ${latencyLine('latency of batches scheduled during the backup', during)}`)
    log(`  ${latencyLine('latency of the whole phase', loaded.latenciesMs)}`)
    const ratio = percentile(during, 99) / percentile(alone.latenciesMs, 99)
    log(`  ratio p99 during backup / p99 alone = ${ratio.toFixed(2)} (target ≤ ${LATENCY_RATIO_TARGET})`)
    if (!(ratio <= LATENCY_RATIO_TARGET)) warn(`ingest p99 during the backup is ${ratio.toFixed(2)}× the baseline's`)
    const acked = await settleLedger(server, ledger)
    await server.stop()
    server = null

    log('\n[4] a second server on the copy')
    copy = await startTokenledger('copy', copyDir, { env: { TOKENLEDGER_RETENTION_INTERVAL: 'off' } })
    await waitSealed(copy)
    const to = Date.now() + 60_000
    const from = Math.floor((to - 30 * DAY_MS) / BUCKET_MS) * BUCKET_MS
    const usage = await getJson<{ totals: Record<string, unknown> }>(`${copy.url}/v1/usage?from=${from}&to=${to}`)
    const got = sumsOf(usage.totals)
    const before = BigInt(alone.ackedBatchNos.length + ackedBefore) * BigInt(BATCH)
    const all = acked ? BigInt(acked.events) : before
    const extra = got ? got.requests - generated.requests : -1n
    log(`  requests in the copy: ${got?.requests} = generated ${generated.requests} + ${extra} ingested (acknowledged before the backup: ${before}, in all: ${all})`)
    if (got === undefined || extra < before || extra > all) fail(`the copy holds ${extra} ingested events; it must hold between ${before} and ${all}`)
    const verify = await getJson<{ mismatch_count: number; segments_checked: number }>(`${copy.url}/v1/admin/verify?from=${to - 31 * DAY_MS + 60_000}&to=${to}`, undefined, 3_600_000)
    log(`  verify on the copy: ${verify.segments_checked} segments, ${verify.mismatch_count} mismatches`)
    if (verify.mismatch_count !== 0) fail(`verify found ${verify.mismatch_count} mismatches in the copy`)
    log(
      JSON.stringify({
        bench: 'backup',
        events: opts.events,
        segments: opts.segments,
        backup_ms: answer.duration_ms,
        maintenance_held_ms: answer.maintenance_held_ms,
        bytes: answer.bytes,
        how: Object.fromEntries(how),
        p99_alone_ms: percentile(alone.latenciesMs, 99),
        p99_during_ms: percentile(during, 99),
        ratio,
        warnings: warnings.length,
        failures: failures.length,
      }),
    )
    return failures.length > 0 ? 1 : 0
  } finally {
    await server?.stop()
    await copy?.stop()
    if (!opts.keep) await rm(root, { recursive: true, force: true })
    else log(`kept ${root}`)
  }
}

runMain('bench:backup', main)
