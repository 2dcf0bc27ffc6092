// Decode micro-benchmark (not a test): the bench's events through decodeRequest
// (what an ingest worker does to a body) as native JSON and as OTLP protobuf
// exports (bench/lib/otlp.ts: the same events, one GenAI span each), on one
// thread, no HTTP, no store. The two alternate in short rounds (the machine is
// shared and noisy: both see the same noise); prints events/s and CPU µs per
// event of each, their ratio, and the OTLP body's mapping step alone (mapOtlp:
// protobuf read and span mapping, before the validation both formats share).
//
// Run:  npx tsx bench/decode-otlp.ts [seconds per target, default 6]
import { loadConfig } from '../src/config.js'
import { decodeRequest, type DecodeOptions } from '../src/ingest/decode.js'
import { mapOtlp } from '../src/ingest/otlp.js'
import { BatchFactory, TEMPLATE_COUNT } from './lib/events.js'
import { OtlpBatchFactory } from './lib/otlp.js'
import { log } from './lib/report.js'

const durationS = Number(process.argv[2] ?? '6')
if (!(durationS > 0 && durationS <= 600)) throw new RangeError('seconds per target: (0, 600]')
const batch = 100
const pool = 400
const roundMs = 250
const config = loadConfig({})
const nowMs = Date.now()
const opts: DecodeOptions = {
  limits: { nowMs, eventRetentionMs: config.eventRetentionMs, maxFutureSkewMs: config.maxFutureSkewMs },
  maxEvents: config.maxBatchEvents,
  otlp: config.otlp,
}
const events = new BatchFactory(`dec${process.pid}`, batch)
const otlp = new OtlpBatchFactory(events, TEMPLATE_COUNT)
const json = Array.from({ length: pool }, (_, i) => events.build(i, nowMs))
const proto = Array.from({ length: pool }, (_, i) => otlp.build(i, nowMs))

const checked = (out: ReturnType<typeof decodeRequest>): number => {
  if (out.rejected.length > 0) throw new Error(`rejected: ${JSON.stringify(out.rejected[0])}`)
  return out.batch.ids.length
}
const targets = [
  { name: 'native JSON decodeRequest', step: (i: number) => checked(decodeRequest(json[i % pool]!, 'json', opts)) },
  { name: 'OTLP protobuf decodeRequest', step: (i: number) => checked(decodeRequest(proto[i % pool]!, 'otlp-proto', opts)) },
  { name: 'OTLP protobuf mapOtlp alone', step: (i: number) => mapOtlp(proto[i % pool]!, null, opts).records.length },
]
const totals = targets.map(() => ({ events: 0, ms: 0, cpuUs: 0 }))
const cpu = (): number => {
  const u = process.cpuUsage()
  return u.user + u.system
}
let i = 0
for (let warm = performance.now() + 1000; performance.now() < warm; ) for (const t of targets) t.step(i++)
for (let round = 0; round < (durationS * 1000) / roundMs; round++) {
  targets.forEach((t, k) => {
    const total = totals[k]!
    const c0 = cpu()
    const t0 = performance.now()
    const end = t0 + roundMs
    while (performance.now() < end) total.events += t.step(i++)
    total.ms += performance.now() - t0
    total.cpuUs += cpu() - c0
  })
}
const rate = totals.map((t) => t.events / (t.ms / 1000))
targets.forEach((t, k) => log(`${t.name}: ${Math.round(rate[k]!).toLocaleString('en-US')} events/s, ${(totals[k]!.cpuUs / totals[k]!.events).toFixed(2)} µs CPU/event`))
log(`ratio OTLP / native decode events/s = ${(rate[1]! / rate[0]!).toFixed(3)}`)
