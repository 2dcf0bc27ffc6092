// The storage floor for bench/ingest.ts: what tokenledger's own pieces cost with no
// HTTP, no dedupe and no other work beside them, on the same machine in the same run.
// Run as a child process of the bench (so nothing else shares its threads), it
// measures, one after the other:
//   1. decode: the bench's request bodies through decodeRequest (parse, validate,
//      fingerprint, encode: what an ingest worker does), on one thread;
//   2. append: those decoded batches written by Segment.appendCommitted (the group
//      commit's INSERT and COMMIT, with its fsync'd WAL and DuckDB's checkpoints) into a
//      fresh segment with the server's default DuckDB settings, in groups of
//      --group events, one after the other, the way the single writer commits.
// Each runs for --duration seconds after a short warm-up. The bench divides these rates
// by the parse-only ceiling: since every acknowledged event passes through both, the
// end-to-end ratio can only exceed the append's ratio by overlapping the writer with
// itself, which one writer connection does not do.
//
// Prints one JSON line: {"event":"floor","decode_events_per_s",…,"append_events_per_s",…}.
// Environment: BENCH_FLOOR_DURATION (s, default 5), BENCH_FLOOR_GROUP (events, default
// 1000), BENCH_FLOOR_BATCH (events per body, default 100), BENCH_FLOOR_COST (what the
// events' cost is: `reported`, the default, as bench/ingest sends them; `none`, the cost
// left out and nothing priced; `priced`, the cost left out and every event priced from
// bench/lib/prices.ts's table: bench/pricing.ts's three arms, without HTTP), and
// BENCH_FLOOR_SHAPE (`native`, the default, or `otlp`: the events with what the OTLP door
// stores, 54-character ids and its two tags; bench/ingest's otlp-content).
import { mkdtemp, rm } from 'node:fs/promises'
import os from 'node:os'
import { join } from 'node:path'
import { BatchFactory } from './lib/events.js'
import { BENCH_PRICES, CostlessFactory } from './lib/prices.js'
import { parsePriceTable } from '../src/pricing/table.js'
import { decodeRequest, type DecodeOptions } from '../src/ingest/decode.js'
import type { EventBatch } from '../src/ingest/batch.js'
import { loadConfig } from '../src/config.js'
import { WriteGate } from '../src/store/gate.js'
import { Segment } from '../src/store/segment.js'
import { EVENT_COLUMNS } from '../src/store/schema.js'

const durationS = Number(process.env['BENCH_FLOOR_DURATION'] ?? '5')
const groupEvents = Number(process.env['BENCH_FLOOR_GROUP'] ?? '1000')
const batch = Number(process.env['BENCH_FLOOR_BATCH'] ?? '100')
const costMode = process.env['BENCH_FLOOR_COST'] ?? 'reported'
const shape = process.env['BENCH_FLOOR_SHAPE'] ?? 'native'
const warmupS = 1
/** Distinct bodies built up front; their decoded batches are what the append phase writes, round and round. */
const bodyPool = 2_000

if (shape !== 'native' && shape !== 'otlp') {
  process.stderr.write('store-floor: BENCH_FLOOR_SHAPE is native or otlp\n')
  process.exit(2)
}
if (!['reported', 'none', 'priced'].includes(costMode)) {
  process.stderr.write('store-floor: BENCH_FLOOR_COST is one of reported, none, priced\n')
  process.exit(2)
}
if (!(durationS > 0 && durationS <= 600) || !(groupEvents >= batch && groupEvents <= 100_000) || !(batch >= 1 && batch <= 10_000)) {
  process.stderr.write('store-floor: BENCH_FLOOR_DURATION in (0, 600], BENCH_FLOOR_BATCH in 1..10000, BENCH_FLOOR_GROUP in BATCH..100000\n')
  process.exit(2)
}

// The server's defaults for everything the floor touches (DuckDB memory, threads, limits).
const config = loadConfig({})
const nowMs = Date.now()
const decodeOpts: DecodeOptions = {
  limits: { nowMs, eventRetentionMs: config.eventRetentionMs, maxFutureSkewMs: config.maxFutureSkewMs },
  maxEvents: config.maxBatchEvents,
  pricing: costMode === 'priced' ? 'missing' : 'off',
}
const parsedPrices = parsePriceTable(BENCH_PRICES)
if (!parsedPrices.ok) throw new Error('store-floor: the bench price table is refused')
const prices = costMode === 'priced' ? parsedPrices.table : null
/** The encoded price_ref column: a null is U+001E (schema.ts). */
const priceRefColumn = EVENT_COLUMNS.findIndex((c) => c.name === 'price_ref')
const events = new BatchFactory(`floor${process.pid}`, batch, shape)
const factory = costMode === 'reported' ? events : new CostlessFactory(events)
let nextBatchNo = 0

const cpuUs = (): number => {
  const u = process.cpuUsage()
  return u.user + u.system
}

/** Runs `step` (returning the events it handled) for warm-up plus duration; the rate and CPU of the measured part. */
async function measure(step: () => number | Promise<number>): Promise<{ eventsPerS: number; cpuUsPerEvent: number }> {
  const warmEnd = performance.now() + warmupS * 1000
  while (performance.now() < warmEnd) await step()
  let events = 0
  const cpu0 = cpuUs()
  const t0 = performance.now()
  const end = t0 + durationS * 1000
  while (performance.now() < end) events += await step()
  const s = (performance.now() - t0) / 1000
  return { eventsPerS: events / s, cpuUsPerEvent: (cpuUs() - cpu0) / events }
}

// 1. Decode, on this one thread, of bodies built before the clock starts (building
// them is the load generator's cost, not the server's). Decoding is a pure function,
// so the same bodies can be decoded again and again.
const bodies = Array.from({ length: bodyPool }, () => factory.build(nextBatchNo++, nowMs))
const decoded: EventBatch[] = []
let bodyNo = 0
const decode = await measure(() => {
  const out = decodeRequest(bodies[bodyNo++ % bodies.length]!, 'json', decodeOpts, prices)
  if (costMode === 'priced' && out.batch.columns[priceRefColumn]!.includes('\x1e')) throw new Error('store-floor: an event was not priced')
  if (out.rejected.length > 0) throw new Error(`store-floor: the bench's events were rejected: ${JSON.stringify(out.rejected[0])}`)
  if (decoded.length < bodies.length) decoded.push(out.batch)
  return out.batch.ids.length
})

// 2. Append, in groups of groupEvents, into a fresh segment. Ids are only ever
// appended (no dedupe here), so reused batches cost what fresh ones do.
const dir = await mkdtemp(join(os.tmpdir(), 'tokenledger-floor-'))
let append: { eventsPerS: number; cpuUsPerEvent: number }
try {
  const seg = await Segment.open(join(dir, 'floor.duckdb'), {
    memoryBytes: Math.floor(config.duckdbMemoryBytes / 2),
    threads: config.duckdbThreads,
    readConnections: 1,
    checkpointBytes: config.rolloverBytes,
    nowMs,
  })
  // Appends go through a write gate, as in the store: the only way to write a segment.
  const gate = new WriteGate(seg, 60_000, { held: () => undefined, timedOut: () => undefined })
  try {
    const perGroup = Math.max(1, Math.round(groupEvents / batch))
    let cursor = 0
    append = await measure(async () => {
      const parts: EventBatch[] = []
      for (let i = 0; i < perGroup; i++) parts.push(decoded[cursor++ % decoded.length]!)
      await gate.run('append', (held) => held.segment.appendCommitted(held, parts))
      return parts.reduce((n, p) => n + p.ids.length, 0)
    })
  } finally {
    await seg.close()
  }
} finally {
  await rm(dir, { recursive: true, force: true })
}

process.stdout.write(
  `${JSON.stringify({
    event: 'floor',
    duration_s: durationS,
    group_events: groupEvents,
    cost: costMode,
    shape,
    decode_events_per_s: Math.round(decode.eventsPerS),
    decode_cpu_us_per_event: Number(decode.cpuUsPerEvent.toFixed(2)),
    append_events_per_s: Math.round(append.eventsPerS),
    append_cpu_us_per_event: Number(append.cpuUsPerEvent.toFixed(2)),
  })}\n`,
)
