// Ingest with pricing on against pricing off, in one run (issue 20's target: >= 0.95).
//
// The same load against two servers, alternately (off, on, off, on by default, so a
// drift of the machine's load falls on both): bench/ingest's closed-loop generator
// (32 connections, 100-event batches, fresh ids), its event mix with the cost left out.
// "off" runs with TOKENLEDGER_PRICING=off: every event stays unknown. "on" runs with a
// price table covering every model of the mix: every event is priced in the decode
// workers. Each run is checked: every acknowledged event stored once, and for "on"
// the stored cost equals an independent recomputation (pricing/apply.ts's costOf,
// summed per template in bigint) with nothing unknown.
//
//   npx tsx bench/pricing.ts [--duration S] [--warmup S] [--rounds N] [--connections N] [--batch B]
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import os from 'node:os'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import { costOf } from '../src/pricing/apply.js'
import { parsePriceTable } from '../src/pricing/table.js'
import { formatCost } from '../src/money.js'
import { BatchFactory, TEMPLATE_COUNT, type BatchTotals } from './lib/events.js'
import { IngestLedger, type BodyFactory } from './lib/load.js'
import { getJson, settleLedger, startTokenledger } from './lib/server.js'
import { f2, int, log } from './lib/report.js'

const { values } = parseArgs({
  options: { duration: { type: 'string' }, warmup: { type: 'string' }, rounds: { type: 'string' }, connections: { type: 'string' }, batch: { type: 'string' } },
})
const durationS = Number(values.duration ?? 10)
const warmupS = Number(values.warmup ?? 3)
const rounds = Number(values.rounds ?? 2)
const connections = Number(values.connections ?? 32)
const batch = Number(values.batch ?? 100)

/** bench/lib/events.ts's models at its per-token prices (micro-units per token = units per million). */
const TABLE = {
  prices: [
    { provider: 'openai', model: 'gpt-4o-mini', per_million: { input: '0.15', cache_read: '0.075', output: '0.6' } },
    { provider: 'openai', model: 'o4-mini', per_million: { input: '1.1', cache_read: '0.275', output: '4.4' } },
    { provider: 'anthropic', model: 'claude-sonnet-4', per_million: { input: '3', cache_read: '0.3', output: '15' } },
    { provider: 'anthropic', model: 'claude-haiku-3.5', per_million: { input: '0.8', cache_read: '0.08', output: '4' } },
    { provider: 'google', model: 'gemini-2.5-flash', per_million: { input: '0.3', cache_read: '0.075', output: '2.5' } },
  ],
}

/** bench/ingest's bodies without their `cost` fields. */
class CostlessFactory implements BodyFactory {
  constructor(readonly inner: BatchFactory) {}
  get batchSize(): number {
    return this.inner.batchSize
  }
  templateOf(n: number): number {
    return this.inner.templateOf(n)
  }
  totalsOf(t: number): BatchTotals {
    return this.inner.totalsOf(t)
  }
  build(n: number, ts: number): string {
    return this.inner.build(n, ts).replace(/,"cost":"[0-9.]+"/g, '')
  }
}

interface Run {
  mode: 'off' | 'on'
  eventsPerS: number
  p50: number
  p99: number
  cpuUsPerEvent: number | undefined
}

async function runOne(mode: 'off' | 'on', round: number): Promise<Run> {
  const dataDir = await mkdtemp(join(os.tmpdir(), 'tokenledger-bench-pricing-'))
  try {
    if (mode === 'on') await writeFile(join(dataDir, 'prices.json'), JSON.stringify(TABLE))
    const server = await startTokenledger(`pricing-${mode}`, dataDir, { env: { TOKENLEDGER_PRICING: mode === 'on' ? 'missing' : 'off' } })
    try {
      const factory = new BatchFactory(`pr${mode}${round}${Date.now() % 100000}`, batch)
      const ledger = new IngestLedger(new CostlessFactory(factory), TEMPLATE_COUNT)
      if (warmupS > 0) await ledger.run(server.url, connections, warmupS)
      const cpu0 = server.cpuSeconds()
      const measured = await ledger.run(server.url, connections, durationS)
      const cpu1 = server.cpuSeconds()
      const res = measured.result
      const events = res['2xx'] * batch
      const totals = await settleLedger(server, ledger)
      // Every acknowledged event once, and (on) its cost exactly the table's.
      const u = await getJson<{ totals: { requests: number; cost: string | null; cost_priced: string | null; cost_missing: number } }>(`${server.url}/v1/usage?from=0`)
      if (totals === undefined) throw new Error('some batch was only partly stored')
      const stored = ledger.expectedStored
      if (u.totals.requests !== stored) throw new Error(`${mode}: ${u.totals.requests} events stored, ${stored} acknowledged`)
      if (mode === 'off' && u.totals.cost_missing !== stored) throw new Error(`off: ${u.totals.cost_missing} unknown of ${stored}`)
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
      const run: Run = { mode, eventsPerS: events / res.duration, p50: res.latency.p50, p99: res.latency.p99, cpuUsPerEvent }
      log(`[round ${round} pricing ${mode}] ${int(run.eventsPerS)} events/s, p50 ${run.p50} ms, p99 ${run.p99} ms, server CPU ${cpuUsPerEvent === undefined ? '?' : f2(cpuUsPerEvent)} µs/event; ${int(stored)} stored, checked`)
      return run
    } finally {
      await server.stop()
    }
  } finally {
    await rm(dataDir, { recursive: true, force: true })
  }
}

log(`bench/pricing: ${rounds} rounds of off then on, ${warmupS} s warm-up + ${durationS} s each, ${connections} connections, ${batch}-event batches, load ${os.loadavg().map((l) => l.toFixed(2)).join(' ')}`)
const runs: Run[] = []
for (let r = 1; r <= rounds; r++) for (const mode of ['off', 'on'] as const) runs.push(await runOne(mode, r))
const mean = (mode: 'off' | 'on', k: 'eventsPerS' | 'cpuUsPerEvent') => {
  const xs = runs.filter((x) => x.mode === mode).map((x) => x[k] ?? NaN)
  return xs.reduce((a, b) => a + b, 0) / xs.length
}
const ratio = mean('on', 'eventsPerS') / mean('off', 'eventsPerS')
log(`pricing on / off: ${f2(ratio)} of the events/s (target >= 0.95); server CPU ${f2(mean('on', 'cpuUsPerEvent'))} vs ${f2(mean('off', 'cpuUsPerEvent'))} µs/event`)
log(`load at the end ${os.loadavg().map((l) => l.toFixed(2)).join(' ')}`)
