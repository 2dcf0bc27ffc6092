// Soak (not a test): days of steady load, compressed. tokenledger runs as a child
// process and gets, for --minutes (default 20):
// - ingest at half of its capacity (an open loop of 100-event batches; capacity is
//   measured first with a closed loop of --capacity-seconds, long enough to include
//   the rollovers and seals and the query mix the soak has, or given with --rate;
//   a short closed loop on a fresh store overstates what the store sustains once
//   it seals a segment every few seconds), events timestamped
//   so that each expires TTL minutes after it is sent: retention has work to do;
// - a dashboard query mix (usage by model, an hourly time series, a page of
//   events, dimensions) every --query-every seconds;
// - retention every minute and rollovers every minute (TOKENLEDGER_RETENTION_INTERVAL,
//   TOKENLEDGER_ROLLOVER_AGE).
// Each minute it samples the server's RSS and open file descriptors (/proc), its
// JS heap and DuckDB memory (/metrics), its segment counts (/v1/status), and the
// ingest and query latencies of that minute (p50, p99), then prints the table and
// the least-squares slope of each column per minute, also as % of its mean:
// flat within noise is the target. Any non-2xx ingest answer, partial batch or
// failed query is reported and makes the exit code 1.
//
// Run:   npm run bench:soak -- --minutes 20
// Flags: --minutes M (20)  --rate EVENTS_PER_S (measured: half of capacity)
//        --query-every S (2)  --ttl MIN (3)  --capacity-seconds S (60)
// A 24 h run: --minutes 1440 (holds the bench lock as long).
// Exit:  0 done, 1 an ingest answer was not 2xx or a query failed, 2 bad flags.

import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises'
import os from 'node:os'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import { BatchFactory, TEMPLATE_COUNT } from './lib/events.js'
import { IngestLedger, type BodyFactory } from './lib/load.js'
import { f1, f2, int, log, percentile } from './lib/report.js'
import { getJson, startTokenledger, type ServerStatus } from './lib/server.js'

const { values } = parseArgs({
  options: {
    minutes: { type: 'string', default: '20' },
    rate: { type: 'string' },
    'query-every': { type: 'string', default: '2' },
    ttl: { type: 'string', default: '3' },
    'capacity-seconds': { type: 'string', default: '60' },
  },
})
const minutes = Number(values.minutes)
const queryEveryS = Number(values['query-every'])
const ttlMin = Number(values.ttl)
const capacityS = Number(values['capacity-seconds'])
if (!(minutes >= 1 && minutes <= 10_080) || !(queryEveryS > 0) || !(ttlMin >= 1) || !(capacityS >= 2)) {
  log('bad flags: --minutes 1..10080, --query-every > 0, --ttl >= 1, --capacity-seconds >= 2')
  process.exit(2)
}

const RETENTION_MS = 3_600_000 // the smallest TOKENLEDGER_EVENT_RETENTION
const dataDir = await mkdtemp(join(os.tmpdir(), 'tl-soak-'))
const server = await startTokenledger('soak', dataDir, {
  env: {
    TOKENLEDGER_EVENT_RETENTION: '1h',
    TOKENLEDGER_RETENTION_INTERVAL: '1m',
    TOKENLEDGER_ROLLOVER_AGE: '1m',
    TOKENLEDGER_MAX_FUTURE_SKEW: '5m',
  },
})
log(`tokenledger soak: pid ${server.pid} at ${server.url}, data ${dataDir}, ${minutes} min, events expire ${ttlMin} min after they are sent`)

const factory = new BatchFactory(`soak${process.pid}`, 100)
// Timestamps: old enough that each event leaves the 1 h window ttl minutes after it was sent.
const backdated: BodyFactory = {
  batchSize: factory.batchSize,
  templateOf: (n) => factory.templateOf(n),
  totalsOf: (t) => factory.totalsOf(t),
  build: (n, nowMs) => factory.build(n, nowMs - RETENTION_MS + ttlMin * 60_000),
}
const ledger = new IngestLedger(backdated, TEMPLATE_COUNT)

// The dashboard's queries, in turn.
const queries = [
  () => `/v1/usage?from=${Date.now() - RETENTION_MS}&to=${Date.now()}&group_by=model`,
  () => `/v1/usage/timeseries?from=${Date.now() - RETENTION_MS}&to=${Date.now()}&bucket=1h&tz=Europe/Berlin`,
  () => `/v1/events?from=${Date.now() - RETENTION_MS}&to=${Date.now()}&limit=50`,
  () => `/v1/usage/dimensions?from=${Date.now() - RETENTION_MS}&to=${Date.now()}`,
]
const queryLatencies: Array<{ atMs: number; ms: number }> = []
let queryFailures = 0
let q = 0
let t0 = performance.now()
const queryTimer = setInterval(() => {
  const url = queries[q++ % queries.length]!()
  const start = performance.now()
  fetch(`${server.url}${url}`, { signal: AbortSignal.timeout(60_000) })
    .then(async (r) => {
      await r.arrayBuffer()
      if (r.status !== 200 && r.status !== 503) queryFailures++
      queryLatencies.push({ atMs: start - t0, ms: performance.now() - start })
    })
    .catch(() => queryFailures++)
}, queryEveryS * 1000)

let rate = values.rate === undefined ? 0 : Number(values.rate)
if (!(rate > 0)) {
  // With the query mix running (it started above), over a window with rollovers and seals.
  const before = await getJson<ServerStatus>(`${server.url}/v1/status`)
  const closed = await ledger.run(server.url, 32, capacityS)
  const after = await getJson<ServerStatus>(`${server.url}/v1/status`)
  const capacity = closed.stats.eventsAccepted / capacityS
  rate = Math.max(100, Math.round(capacity / 2))
  log(`capacity (closed loop, 32 connections, ${capacityS} s, with the query mix, ${after.rollovers - before.rollovers} rollovers and ${after.sealing.sealed - before.sealing.sealed} seals in it): ${int(capacity)} events/s; soaking at half: ${int(rate)} events/s`)
  const refused = Object.entries(closed.stats.non2xxByStatus)
  if (refused.length > 0) log(`  (the closed loop was refused ${JSON.stringify(refused)}: it is a closed loop at capacity, not counted against the soak)`)
} else log(`soaking at ${int(rate)} events/s (given)`)
// The soak's minutes start now.
queryLatencies.length = 0
queryFailures = 0
t0 = performance.now()

const loop = ledger.startOpenLoop(server.url, rate)

interface Row {
  minute: number
  rssMiB: number
  heapMiB: number
  fds: number
  duckdbMiB: number
  active: number
  pending: number
  archived: number
  rows: number
  deleted: number
}
const rows: Row[] = []

async function sample(minute: number): Promise<Row> {
  const statusText = await readFile(`/proc/${server.pid}/status`, 'utf8')
  const rssKiB = Number(/VmRSS:\s+(\d+)/.exec(statusText)?.[1] ?? 'NaN')
  const fds = (await readdir(`/proc/${server.pid}/fd`)).length
  const metrics = await (await fetch(`${server.url}/metrics`)).text()
  const metric = (re: RegExp) => [...metrics.matchAll(re)].reduce((n, m) => n + Number(m[1]), 0)
  const st = await getJson<ServerStatus>(`${server.url}/v1/status`)
  return {
    minute,
    rssMiB: rssKiB / 1024,
    heapMiB: metric(/^nodejs_heap_size_used_bytes (\S+)$/gm) / 2 ** 20,
    fds,
    duckdbMiB: metric(/^tokenledger_duckdb_memory_bytes\{[^}]*\} (\S+)$/gm) / 2 ** 20,
    active: st.tiers.active,
    pending: st.tiers.pending,
    archived: st.tiers.archived,
    rows: st.tiers.rows,
    deleted: st.retention.segments_deleted,
  }
}

for (let m = 1; m <= minutes; m++) {
  await new Promise((r) => setTimeout(r, t0 + m * 60_000 - performance.now()))
  const row = await sample(m)
  rows.push(row)
  log(`minute ${m}: RSS ${f1(row.rssMiB)} MiB, heap ${f1(row.heapMiB)} MiB, fds ${row.fds}, DuckDB ${f1(row.duckdbMiB)} MiB, segments ${row.active}/${row.pending}/${row.archived}, rows ${int(row.rows)}, retention deleted ${row.deleted} segments`)
}
clearInterval(queryTimer)
const result = await loop.stop()
const final = await getJson<ServerStatus>(`${server.url}/v1/status`)
await server.stop()
await rm(dataDir, { recursive: true, force: true })

// Latencies per minute.
const ingestByMinute = new Map<number, number[]>()
result.latenciesMs.forEach((ms, i) => {
  const m = Math.floor(result.scheduledAtMs[i]! / 60_000) + 1
  const list = ingestByMinute.get(m) ?? []
  list.push(ms)
  ingestByMinute.set(m, list)
})
const queryByMinute = new Map<number, number[]>()
for (const { atMs, ms } of queryLatencies) {
  if (atMs < 0) continue // sent during the capacity phase
  const m = Math.floor(atMs / 60_000) + 1
  const list = queryByMinute.get(m) ?? []
  list.push(ms)
  queryByMinute.set(m, list)
}

const columns: Array<[string, (r: Row) => number, (n: number) => string]> = [
  ['RSS MiB', (r) => r.rssMiB, f1],
  ['heap MiB', (r) => r.heapMiB, f1],
  ['fds', (r) => r.fds, int],
  ['DuckDB MiB', (r) => r.duckdbMiB, f1],
  ['active', (r) => r.active, int],
  ['pending', (r) => r.pending, int],
  ['archived', (r) => r.archived, int],
  ['ingest p50', (r) => percentile(ingestByMinute.get(r.minute) ?? [NaN], 50), f1],
  ['ingest p99', (r) => percentile(ingestByMinute.get(r.minute) ?? [NaN], 99), f1],
  ['query p50', (r) => percentile(queryByMinute.get(r.minute) ?? [NaN], 50), f1],
  ['query p99', (r) => percentile(queryByMinute.get(r.minute) ?? [NaN], 99), f1],
]
log()
log(['min', ...columns.map(([name]) => name)].map((c) => c.padStart(11)).join(''))
for (const r of rows) log([String(r.minute), ...columns.map(([, get, fmt]) => fmt(get(r)))].map((c) => c.padStart(11)).join(''))

/** Least-squares slope of ys over xs. */
function slope(xs: number[], ys: number[]): number {
  const n = xs.length
  const mx = xs.reduce((a, b) => a + b, 0) / n
  const my = ys.reduce((a, b) => a + b, 0) / n
  let num = 0
  let den = 0
  for (let i = 0; i < n; i++) {
    num += (xs[i]! - mx) * (ys[i]! - my)
    den += (xs[i]! - mx) ** 2
  }
  return den === 0 ? 0 : num / den
}
// The first minutes fill the store up to its steady state (events live ttl minutes); slopes are over the rest.
const steady = rows.filter((r) => r.minute > ttlMin + 2)
log()
if (steady.length < 3) log(`(too short for slopes: they are taken over minutes ${ttlMin + 3}.., once the store has reached its steady size)`)
else log(`slopes per minute over minutes ${ttlMin + 3}..${minutes} (after the store reached its steady size), and as % of the column's mean:`)
for (const [name, get] of columns) {
  if (steady.length < 3) break
  const ys = steady.map(get)
  const s = slope(steady.map((r) => r.minute), ys)
  const mean = ys.reduce((a, b) => a + b, 0) / ys.length
  log(`  ${name.padEnd(11)} ${f2(s).padStart(9)} /min   ${mean === 0 ? '-' : `${f2((100 * s) / mean)} %/min`}`)
}
const non2xx = Object.entries(result.stats.non2xxByStatus)
log()
log(`ingest: ${int(result.stats.eventsAccepted)} events acknowledged at ${int(result.stats.eventsAccepted / result.durationS)} events/s; scheduled ${int(result.scheduled)} batches, skipped ${result.skipped}, unanswered ${result.unanswered}, non-2xx ${JSON.stringify(non2xx)}`)
for (const sample of result.stats.non2xxSamples.slice(0, 3)) log(`  non-2xx sample: ${sample}`)
log(`queries: ${queryLatencies.length} answered, ${queryFailures} failed; retention runs ${final.retention.runs} (errors ${final.retention.errors}), ${final.retention.segments_deleted} segments deleted; rollovers ${final.rollovers}; sealed ${final.sealing.sealed}, seal failures ${final.sealing.failures}`)
log(`JSON ${JSON.stringify({ bench: 'soak', minutes, rate, rows, accepted: result.stats.eventsAccepted, non2xx: result.stats.non2xxByStatus, queryFailures })}`)
process.exit(non2xx.length > 0 || queryFailures > 0 || result.stats.mismatches > 0 ? 1 : 0)
