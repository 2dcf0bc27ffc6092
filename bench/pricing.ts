// Ingest with pricing on against pricing off, in one run (issue 20's target: >= 0.95).
//
// The same load against three servers, alternately (off, reported, on, then again, so
// a drift of the machine's load falls on all): bench/ingest's closed-loop generator
// (32 connections, 100-event batches, fresh ids) and its event mix.
// - "off" (the baseline of the target): the mix with the cost left out, and
//   TOKENLEDGER_PRICING=off: every event stays unknown.
// - "reported" (shown beside it): the mix with its costs, pricing off: what a gateway
//   that reports costs pays. It stores a cost where "off" stores none.
// - "on": the costless mix with a price table covering every model: every event is
//   priced in the decode workers.
// Each run is checked: every acknowledged event stored once; for "reported" the stored
// cost equals the sum of the reported ones; for "on" it equals an independent
// recomputation (pricing/apply.ts's costOf, summed per template in bigint), nothing unknown.
//
//   npx tsx bench/pricing.ts [--duration S] [--warmup S] [--rounds N] [--connections N] [--batch B]
// BENCH_SERVER_ENTRY=dist (after npm run build) runs the server as it ships, not under tsx.
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import os from 'node:os'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import { costOf } from '../src/pricing/apply.js'
import { parsePriceTable } from '../src/pricing/table.js'
import { formatCost } from '../src/money.js'
import { BatchFactory, TEMPLATE_COUNT } from './lib/events.js'
import { BENCH_PRICES as TABLE, CostlessFactory } from './lib/prices.js'
import { IngestLedger, type BodyFactory } from './lib/load.js'
import { getJson, settleLedger, startTokenledger } from './lib/server.js'
import { threadCpuDelta } from './lib/child.js'
import { f2, int, log } from './lib/report.js'

const { values } = parseArgs({
  options: { duration: { type: 'string' }, warmup: { type: 'string' }, rounds: { type: 'string' }, connections: { type: 'string' }, batch: { type: 'string' } },
})
const durationS = Number(values.duration ?? 10)
const warmupS = Number(values.warmup ?? 3)
const rounds = Number(values.rounds ?? 2)
const connections = Number(values.connections ?? 32)
const batch = Number(values.batch ?? 100)

type Mode = 'off' | 'reported' | 'on'
const MODES: readonly Mode[] = ['off', 'reported', 'on']

interface Run {
  mode: Mode
  eventsPerS: number
  p50: number
  p99: number
  cpuUsPerEvent: number | undefined
  /** µs per event of the event loop, the ingest workers together, and the rest (DuckDB, libuv, V8). */
  threads: { loop: number; workers: number; other: number } | undefined
}

async function runOne(mode: Mode, round: number): Promise<Run> {
  const dataDir = await mkdtemp(join(os.tmpdir(), 'tokenledger-bench-pricing-'))
  try {
    if (mode === 'on') await writeFile(join(dataDir, 'prices.json'), JSON.stringify(TABLE))
    const server = await startTokenledger(`pricing-${mode}`, dataDir, { env: { TOKENLEDGER_PRICING: mode === 'on' ? 'missing' : 'off' } })
    try {
      const factory = new BatchFactory(`pr${mode}${round}${Date.now() % 100000}`, batch)
      const ledger = new IngestLedger(mode === 'reported' ? factory : new CostlessFactory(factory), TEMPLATE_COUNT)
      if (warmupS > 0) await ledger.run(server.url, connections, warmupS)
      const cpu0 = server.cpuSeconds()
      const threads0 = server.threadCpuSeconds()
      const measured = await ledger.run(server.url, connections, durationS)
      const cpu1 = server.cpuSeconds()
      const threads1 = server.threadCpuSeconds()
      const res = measured.result
      const events = res['2xx'] * batch
      const totals = await settleLedger(server, ledger)
      // Every acknowledged event once, and (on) its cost exactly the table's.
      const u = await getJson<{ totals: { requests: number; cost: string | null; cost_priced: string | null; cost_missing: number } }>(`${server.url}/v1/usage?from=0`)
      if (totals === undefined) throw new Error('some batch was only partly stored')
      const stored = ledger.expectedStored
      if (u.totals.requests !== stored) throw new Error(`${mode}: ${u.totals.requests} events stored, ${stored} acknowledged`)
      if (mode === 'off' && u.totals.cost_missing !== stored) throw new Error(`off: ${u.totals.cost_missing} unknown of ${stored}`)
      if (mode === 'reported') {
        const want = formatCost(totals.costMicros * 1_000_000n)
        if (u.totals.cost_missing !== 0 || u.totals.cost !== want || u.totals.cost_priced !== '0') {
          throw new Error(`reported: stored cost ${u.totals.cost} (priced ${u.totals.cost_priced}, unknown ${u.totals.cost_missing}), reported ${want}`)
        }
      }
      if (mode === 'on') {
        const parsed = parsePriceTable(TABLE)
        if (!parsed.ok) throw new Error('bad table')
        let want = 0n
        for (let t = 0; t < TEMPLATE_COUNT; t++) {
          let perBatch = 0n
          for (const e of factory.eventsOf(t)) {
            const entry = parsed.table.lookup(String(e.provider), String(e.model), 0)!
            perBatch += costOf({ input_tokens: Number(e.input_tokens), cache_read_tokens: Number(e.cache_read_tokens), cache_write_tokens: 0, output_tokens: Number(e.output_tokens), reasoning_tokens: Number(e.reasoning_tokens), status_code: Number(e.status_code) }, entry)!
          }
          want += perBatch * BigInt(ledger.fullBatchesByTemplate[t]!)
        }
        if (u.totals.cost_missing !== 0 || u.totals.cost !== formatCost(want) || u.totals.cost_priced !== u.totals.cost) {
          throw new Error(`on: stored cost ${u.totals.cost} (priced ${u.totals.cost_priced}, unknown ${u.totals.cost_missing}), recomputed ${formatCost(want)}`)
        }
      }
      const cpuUsPerEvent = cpu0 === undefined || cpu1 === undefined ? undefined : ((cpu1 - cpu0) * 1e6) / Math.max(1, events)
      let threads: Run['threads']
      if (threads0 !== undefined && threads1 !== undefined) {
        threads = { loop: 0, workers: 0, other: 0 }
        for (const t of threadCpuDelta(server.pid, threads0, threads1)) {
          const us = (t.cpuS * 1e6) / Math.max(1, events)
          if (t.name === 'main') threads.loop += us
          else if (t.name.startsWith('tl-ingest')) threads.workers += us
          else threads.other += us
        }
      }
      const run: Run = { mode, eventsPerS: events / res.duration, p50: res.latency.p50, p99: res.latency.p99, cpuUsPerEvent, threads }
      const split = threads === undefined ? '' : ` (loop ${f2(threads.loop)}, workers ${f2(threads.workers)}, other ${f2(threads.other)})`
      log(`[round ${round} pricing ${mode}] ${int(run.eventsPerS)} events/s, p50 ${run.p50} ms, p99 ${run.p99} ms, server CPU ${cpuUsPerEvent === undefined ? '?' : f2(cpuUsPerEvent)} µs/event${split}; ${int(stored)} stored, checked`)
      return run
    } finally {
      await server.stop()
    }
  } finally {
    await rm(dataDir, { recursive: true, force: true })
  }
}

log(`bench/pricing: ${rounds} rounds of off, reported, on, ${warmupS} s warm-up + ${durationS} s each, ${connections} connections, ${batch}-event batches, load ${os.loadavg().map((l) => l.toFixed(2)).join(' ')}`)
const runs: Run[] = []
for (let r = 1; r <= rounds; r++) for (const mode of MODES) runs.push(await runOne(mode, r))
const mean = (mode: Mode, k: 'eventsPerS' | 'cpuUsPerEvent') => {
  const xs = runs.filter((x) => x.mode === mode).map((x) => x[k] ?? NaN)
  return xs.reduce((a, b) => a + b, 0) / xs.length
}
const ratio = mean('on', 'eventsPerS') / mean('off', 'eventsPerS')
// Each round's own ratio (its runs follow one another, so a drift of the machine falls on both
// less than across rounds), and their median: the figure to hold against the target on a noisy machine.
const perRound = Array.from({ length: rounds }, (_, i) => {
  const of = (mode: Mode) => runs.find((x) => x.mode === mode && runs.indexOf(x) >= i * MODES.length && runs.indexOf(x) < (i + 1) * MODES.length)!
  return of('on').eventsPerS / of('off').eventsPerS
})
const sorted = [...perRound].sort((a, b) => a - b)
const median = sorted.length % 2 === 1 ? sorted[(sorted.length - 1) / 2]! : (sorted[sorted.length / 2 - 1]! + sorted[sorted.length / 2]!) / 2
log(`pricing on / off per round: ${perRound.map(f2).join(', ')}; median ${f2(median)} (target >= 0.95: ${median >= 0.95 ? 'MET' : 'missed'})`)
log(`pricing on / off over all rounds: ${f2(ratio)} of the events/s; server CPU ${f2(mean('on', 'cpuUsPerEvent'))} vs ${f2(mean('off', 'cpuUsPerEvent'))} µs/event`)
log(`pricing on / reported: ${f2(mean('on', 'eventsPerS') / mean('reported', 'eventsPerS'))} of the events/s; server CPU ${f2(mean('on', 'cpuUsPerEvent'))} vs ${f2(mean('reported', 'cpuUsPerEvent'))} µs/event`)
const split = (mode: Mode, k: 'loop' | 'workers' | 'other') => {
  const xs = runs.filter((x) => x.mode === mode && x.threads !== undefined).map((x) => x.threads![k])
  return xs.length === 0 ? NaN : xs.reduce((a, b) => a + b, 0) / xs.length
}
for (const mode of MODES) log(`  ${mode}: loop ${f2(split(mode, 'loop'))}, workers ${f2(split(mode, 'workers'))}, other ${f2(split(mode, 'other'))} µs/event (mean)`)
log(`load at the end ${os.loadavg().map((l) => l.toFixed(2)).join(' ')}`)
