// JSON reader micro-benchmark (not a test): the ingest bench's request bodies
// (bench/lib/events.ts, 100 events each) parsed by secure-json-parse (the
// reader before src/ingest/json.ts; JSON.parse underneath) and by readJson,
// UTF-8 check included for readJson, on this one thread; and the whole decode
// (decodeRequest: parse, validate, fingerprint, encode). Prints MB/s and
// events/s for each and the ratio readJson / secure-json-parse.
//
// Run: npx tsx bench/json-parse.ts [seconds per phase, default 3]
import sjson from 'secure-json-parse'
import { decodeRequest } from '../src/ingest/decode.js'
import { readJson, utf8Text } from '../src/ingest/json.js'
import { BatchFactory } from './lib/events.js'

const seconds = Number(process.argv[2] ?? '3')
const batch = 100
const factory = new BatchFactory(`json${process.pid}`, batch)
const nowMs = Date.now()
const bodies = Array.from({ length: 64 }, (_, i) => Buffer.from(factory.build(i, nowMs)))
const bytes = bodies.reduce((n, b) => n + b.length, 0) / bodies.length
const opts = { limits: { nowMs, eventRetentionMs: 30 * 86_400_000, maxFutureSkewMs: 300_000 }, maxEvents: 10_000 }

function run(name: string, step: (body: Buffer) => void): number {
  for (let i = 0; i < 2000; i++) step(bodies[i % bodies.length]!)
  let n = 0
  const t0 = performance.now()
  const end = t0 + seconds * 1000
  while (performance.now() < end) for (let k = 0; k < 16; k++) step(bodies[n++ % bodies.length]!)
  const s = (performance.now() - t0) / 1000
  const perS = n / s
  console.log(`${name.padEnd(34)} ${((perS * bytes) / 1e6).toFixed(1).padStart(7)} MB/s  ${Math.round(perS * batch).toLocaleString('en').padStart(10)} events/s`)
  return perS
}

console.log(`bodies: ${bodies.length} of ~${Math.round(bytes)} bytes, ${batch} events each; ${seconds} s per phase`)
const before = run('secure-json-parse (toString+parse)', (b) => void sjson.parse(b.toString('utf8'), undefined, { protoAction: 'error', constructorAction: 'error' }))
const after = run('readJson (isUtf8+toString+read)', (b) => {
  const t = utf8Text(b)
  if (t.ok) readJson(t.text, { maxDepth: 64, exactNumbers: true })
})
console.log(`ratio readJson / secure-json-parse = ${(after / before).toFixed(2)}`)
run('decodeRequest (whole decode)', (b) => void decodeRequest(b, 'json', opts))
