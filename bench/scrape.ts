// Scrape benchmark (not a test): what GET /metrics and GET /v1/status cost on a store
// of many segments, against GET /healthz measured in the same run (the baseline: the
// cost of one Fastify request through app.inject, nothing else). Also the DuckDB memory
// measurement alone (a query on each instance through the store's read path), which a
// scrape makes at most every 5 s.
//
//   1. --segments files (--events in all) are written straight into pending/ with DuckDB
//      SQL (bench/lib/bigstore.ts), the app is built on them in-process and they are
//      sealed (archived), as a long-running node would have them.
//   2. --requests sequential requests of each kind, timed one by one.
//
// Run:   npx tsx bench/scrape.ts                     (720 segments, ~1 min on 2 cores)
//        npx tsx bench/scrape.ts --segments 5000
// Flags: --segments N (720) --events N (segments * 200) --requests N (300)
// Output: a report, and as the last line one JSON summary. Exit: 0 ok, 1 a failure.
import { mkdtemp, rm } from 'node:fs/promises'
import os from 'node:os'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import { pino } from 'pino'
import { buildApp } from '../src/app.js'
import { loadConfig } from '../src/config.js'
import { writePendingSegments } from './lib/bigstore.js'
import { f2, fail, failures, int, integerFlags, log, percentile } from './lib/report.js'

const { values: argv } = parseArgs({ options: { segments: { type: 'string' }, events: { type: 'string' }, requests: { type: 'string' } }, strict: true })
const num = integerFlags('bench/scrape', argv)
const segments = num('segments', 720, 1, 100_000)
const events = num('events', segments * 200, segments, 1_000_000_000)
const requests = num('requests', 300, 10, 100_000)

const dataDir = await mkdtemp(join(os.tmpdir(), 'tl-bench-scrape-'))
try {
  const nowMs = Date.now()
  let t0 = performance.now()
  await writePendingSegments(dataDir, { events, segments, seed: `s${process.pid}`, startMs: nowMs - 6 * 86_400_000, endMs: nowMs - 3_600_000, threads: 2 })
  log(`wrote ${int(segments)} pending segments, ${int(events)} events: ${f2((performance.now() - t0) / 1000)} s`)

  t0 = performance.now()
  const app = await buildApp({ config: loadConfig({ TOKENLEDGER_DATA_DIR: dataDir, TOKENLEDGER_RETENTION_INTERVAL: 'off' }) }, pino({ level: 'warn' }))
  for (let i = 0; i < 10_000 && app.store.segmentList().some((s) => s.state === 'pending'); i++) {
    await app.store.settle()
    await app.store.tick()
  }
  const archived = app.store.segmentList().filter((s) => s.state === 'archived').length
  log(`opened and sealed: ${int(archived)} archived segments, ${f2((performance.now() - t0) / 1000)} s`)
  if (archived !== segments) fail(`${archived} of ${segments} segments archived`)

  const time = async (label: string, run: () => Promise<unknown>): Promise<{ label: string; meanMs: number; p99Ms: number }> => {
    for (let i = 0; i < 10; i++) await run() // warm-up
    const ms: number[] = []
    for (let i = 0; i < requests; i++) {
      const start = performance.now()
      await run()
      ms.push(performance.now() - start)
    }
    return { label, meanMs: ms.reduce((a, b) => a + b, 0) / ms.length, p99Ms: percentile(ms, 99) }
  }
  const get = (url: string) => async () => {
    const res = await app.inject({ url })
    if (res.statusCode !== 200) throw new Error(`${url} answered ${res.statusCode}`)
    return res
  }
  const baseline = await time('GET /healthz', get('/healthz'))
  const results = [
    baseline,
    await time('GET /metrics', get('/metrics')),
    await time('GET /v1/status', get('/v1/status')),
    await time('DuckDB memory read (every 5 s at most)', () => app.store.duckdbMemory(2_000)),
  ]
  const metricsBody = (await app.inject({ url: '/metrics' })).body
  const statusBody = (await app.inject({ url: '/v1/status' })).body
  const series = metricsBody.split('\n').filter((l) => l !== '' && !l.startsWith('#')).length
  for (const r of results) log(`${r.label.padEnd(42)} mean ${f2(r.meanMs).padStart(8)} ms   p99 ${f2(r.p99Ms).padStart(8)} ms   ${f2(r.meanMs / baseline.meanMs).padStart(7)}x healthz`)
  log(`/metrics: ${int(metricsBody.length)} bytes, ${int(series)} series; /v1/status: ${int(statusBody.length)} bytes`)
  await app.close()
  log(JSON.stringify({ segments, events, requests, series, metricsBytes: metricsBody.length, statusBytes: statusBody.length, results, failures }))
} finally {
  await rm(dataDir, { recursive: true, force: true })
}
process.exit(failures.length > 0 ? 1 : 0)
