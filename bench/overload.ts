// Overload benchmark (not a test): what tokenledger does when gateways send more than
// it can commit. The promise under test: overload degrades loudly (503 + Retry-After),
// never by losing or double-counting an acknowledged event, and the process stays live
// (/healthz answers) with bounded memory.
//
// One server child on a fresh data directory, with ingest/query/admin bearer tokens in
// its environment (ignored until auth lands; every request carries the right one):
//   [1] capacity: closed loop like bench:ingest (autocannon, N connections, B-event
//       batches, a warm-up, then the measured phase). Its events/s is the baseline of
//       this run; batches left unanswered at its end are resent once, after the phase.
//   [2] overload: open loop at factor × capacity (default 2×) for the load duration:
//       a fresh batch on a fixed schedule whatever the answers do, nothing retried, each
//       request bounded by a client timeout, at most --inflight on the wire (a due
//       batch past that is not sent, and counted). Meanwhile: query clients (usage
//       totals, a time series, event pages) one call at a time each; two /healthz
//       probers in a worker thread each (their own event loops: the generator's lag does
//       not count against the server) every --healthz-ms: one opening a new connection
//       per probe, as a load balancer's check does, one on a kept-alive connection (the
//       two apart tell a slow accept from a busy event loop); the child's RSS, CPU and
//       queue depth (GET /v1/status) every second.
//   [3] settle and verify: wait for the server's queue to empty, then export every
//       event (GET /v1/export?format=ndjson over a window holding them all) and compare
//       ids: every event a 2xx answer acknowledged (accepted or duplicate, per the
//       answer's `results`) must be exported exactly once. Events stored without an
//       acknowledgement are reported by what their request got (a client timeout may
//       have committed: allowed; a 503 must have stored nothing).
//
// Run:   npm run bench:overload -- --duration 60
// Flags (env in brackets):
//   --duration S [BENCH_DURATION]             overload phase seconds, 60
//   --capacity-duration S [BENCH_CAPACITY_DURATION]  measured capacity seconds, 10
//   --warmup S [BENCH_WARMUP]                 uncounted capacity warm-up seconds, 2
//   --connections N [BENCH_CONNECTIONS]       capacity phase connections, 32
//   --batch B [BENCH_BATCH]                   events per request, 100
//   --factor F [BENCH_FACTOR]                 offered rate ÷ measured capacity, 2
//   --rate R [BENCH_RATE]                     offered events/s instead of factor × capacity
//   --timeout-ms T [BENCH_TIMEOUT_MS]         client timeout per ingest request, 10000
//   --inflight N [BENCH_INFLIGHT]             most ingest requests on the wire; default: what the
//                                             rate can have outstanding within the client timeout
//                                             (+10%, at most 8192), so the bound only guards the generator
//   --query-clients N [BENCH_QUERY_CLIENTS]   concurrent query clients, 3
//   --healthz-ms T [BENCH_HEALTHZ_MS]         /healthz probe interval, 50
// BENCH_SERVER_ENTRY=dist runs the compiled server (npm run build first), as the other benches.
// Output: a human-readable report, and as the last line one JSON summary.
// Exit:   0 ok; 1 a correctness failure (an acked event lost or stored twice, a stored
//         event whose request was answered 503 or refused, the capacity phase's events
//         not stored exactly, the server died); 2 bad flags or set-up failure.
// Parts: bench/lib/overload-ingest.ts (the open-loop generator), healthz.ts and
// healthz-worker.ts (the probers), overload-watch.ts (query clients, the sampler),
// overload-export.ts (the export check); this file holds the phases and the report.
import { randomBytes } from 'node:crypto'
import { mkdtemp, rm } from 'node:fs/promises'
import http from 'node:http'
import os from 'node:os'
import { join } from 'node:path'
import { monitorEventLoopDelay } from 'node:perf_hooks'
import { parseArgs } from 'node:util'
import { startServer, type RunningServer, type StopReport } from './lib/child.js'
import { BATCH_EVENTS_MAX, BatchFactory, TEMPLATE_COUNT } from './lib/events.js'
import { healthzText, healthzTimeoutMs, HealthzProber } from './lib/healthz.js'
import { httpCall } from './lib/http-call.js'
import { IngestLedger, type PhaseResult } from './lib/load.js'
import { bearer, countsText, median, ms1, nowAbsMs, pct, samplesMax, sleep, type Tokens } from './lib/overload-common.js'
import { exportIds, exportProgressLines, type ExportCheck } from './lib/overload-export.js'
import { isAcked, OverloadGenerator, S, STATE_NAMES, type Second } from './lib/overload-ingest.js'
import { listenOverflows, QueryClients, queryKinds, queryPauseMs, queryTimeoutMs, Sampler, samplerIntervalMs, StatusReader, type StatusAnswer } from './lib/overload-watch.js'
import { f1, fail, failures, int, log, mib, percentile, warn, warnings } from './lib/report.js'
import { tokenledgerSpec } from './lib/server.js'
import { numberOption, rssMiB, runMain } from './lib/cli.js'

const serverStartTimeoutMs = 120_000
/** Width of one row of the over-time table. */
const timelineStepS = 5
/** After the load stops: most time to wait for the server's queue to empty. */
const settleMaxMs = 180_000
const settlePollMs = 250
/** Slack around the run for the export and totals window. */
const windowSlackMs = 3_600_000
/** Upper bound of --inflight (each is a socket of this process). */
const inflightMax = 8_192


// ---------------------------------------------------------------------------- options


interface Options {
  durationS: number
  capacityDurationS: number
  warmupS: number
  connections: number
  batch: number
  factor: number
  rate: number | undefined
  timeoutMs: number
  /** undefined: derived from the rate and the client timeout. */
  inflight: number | undefined
  queryClients: number
  healthzMs: number
}


function readOptions(): Options {
  const names = ['duration', 'capacity-duration', 'warmup', 'connections', 'batch', 'factor', 'rate', 'timeout-ms', 'inflight', 'query-clients', 'healthz-ms'] as const
  const { values } = parseArgs({
    options: { ...Object.fromEntries(names.map((n) => [n, { type: 'string' as const }])), help: { type: 'boolean', short: 'h' } },
    strict: true,
  })
  if (values.help === true) {
    process.stdout.write(`usage: npm run bench:overload -- ${names.map((n) => `[--${n} …]`).join(' ')}\n`)
    process.exit(0)
  }
  const v = values as Record<string, string | undefined>
  const rate = numberOption('rate', v['rate'], 'BENCH_RATE', 0, 0, 10_000_000, false)
  return {
    durationS: numberOption('duration', v['duration'], 'BENCH_DURATION', 60, 1, 3_600, false),
    capacityDurationS: numberOption('capacity-duration', v['capacity-duration'], 'BENCH_CAPACITY_DURATION', 10, 1, 600, false),
    warmupS: numberOption('warmup', v['warmup'], 'BENCH_WARMUP', 2, 0, 600, false),
    connections: numberOption('connections', v['connections'], 'BENCH_CONNECTIONS', 32, 1, 1_024, true),
    batch: numberOption('batch', v['batch'], 'BENCH_BATCH', 100, 1, BATCH_EVENTS_MAX, true),
    factor: numberOption('factor', v['factor'], 'BENCH_FACTOR', 2, 0.1, 100, false),
    rate: rate > 0 ? rate : undefined,
    timeoutMs: numberOption('timeout-ms', v['timeout-ms'], 'BENCH_TIMEOUT_MS', 10_000, 100, 600_000, true),
    inflight: ((n) => (n > 0 ? n : undefined))(numberOption('inflight', v['inflight'], 'BENCH_INFLIGHT', 0, 0, inflightMax, true)),
    queryClients: numberOption('query-clients', v['query-clients'], 'BENCH_QUERY_CLIENTS', 3, 0, 64, true),
    healthzMs: numberOption('healthz-ms', v['healthz-ms'], 'BENCH_HEALTHZ_MS', 50, 5, 10_000, true),
  }
}


function capacityLine(label: string, r: PhaseResult, batch: number): number {
  const res = r.result
  const eventsPerS = (res['2xx'] * batch) / res.duration
  log(
    `  ${label}: ${int(eventsPerS)} events/s (${int(res['2xx'] / res.duration)} req/s), p50 ${res.latency.p50} ms, p99 ${res.latency.p99} ms, max ${res.latency.max} ms, ` +
      `non-2xx ${res.non2xx}${res.non2xx > 0 ? ` (${countsText(r.stats.non2xxByStatus)})` : ''}, errors ${res.errors} (timeouts ${res.timeouts}), accepted≠batch ${r.stats.mismatches}, ` +
      `generator CPU ${int((100 * r.generatorCpuS) / res.duration)}%`,
  )
  for (const s of r.stats.non2xxSamples.slice(0, 2)) log(`    non-2xx sample: ${s}`)
  return eventsPerS
}

/** Waits until the server's queue is empty and its committed count stops moving. */
async function settle(status: StatusReader): Promise<{ ms: number; ok: boolean; last: StatusAnswer | undefined }> {
  const t0 = performance.now()
  let prev: number | undefined
  let last: StatusAnswer | undefined
  while (performance.now() - t0 < settleMaxMs) {
    last = await status.read(10_000)
    const q = last?.ingest?.queued_events
    const c = last?.ingest?.committed_events
    if (q === 0 && c !== undefined && c === prev) return { ms: performance.now() - t0, ok: true, last }
    prev = q === 0 ? c : undefined
    await sleep(settlePollMs)
  }
  return { ms: performance.now() - t0, ok: false, last }
}

async function main(): Promise<number> {
  let opts: Options
  try {
    opts = readOptions()
  } catch (err) {
    process.stderr.write(`bench:overload: ${err instanceof Error ? err.message : String(err)}\n`)
    return 2
  }
  const runId = randomBytes(4).toString('hex')
  const tokens: Tokens = { ingest: randomBytes(24).toString('hex'), query: randomBytes(24).toString('hex'), admin: randomBytes(24).toString('hex') }
  const runStartMs = Date.now()
  log(
    `tokenledger overload bench (run ${runId}): node ${process.version}, ${os.cpus().length} CPUs, load average ${os.loadavg().map((x) => x.toFixed(1)).join(' ')}; ` +
      `server ${process.env.BENCH_SERVER_ENTRY === 'dist' ? 'dist' : 'tsx'}; batches of ${opts.batch} events`,
  )

  const dataDir = await mkdtemp(join(os.tmpdir(), 'tokenledger-overload-'))
  let server: RunningServer | undefined
  const summary: Record<string, unknown> = { run: runId, batch: opts.batch, duration_s: opts.durationS }
  try {
    const spec = tokenledgerSpec('tokenledger', dataDir, {
      nodeArgs: (process.env.BENCH_SERVER_NODE_ARGS ?? '').split(' ').filter(Boolean),
      startTimeoutMs: serverStartTimeoutMs,
      env: { TOKENLEDGER_INGEST_TOKENS: tokens.ingest, TOKENLEDGER_QUERY_TOKENS: tokens.query, TOKENLEDGER_ADMIN_TOKENS: tokens.admin },
    })
    try {
      server = await startServer(spec)
    } catch (err) {
      process.stderr.write(`bench:overload: the server did not start: ${err instanceof Error ? err.message : String(err)}\n`)
      return 2
    }
    const base = new URL(server.url)
    const statusAgent = new http.Agent({ keepAlive: true, maxSockets: 2 })
    const status = new StatusReader(base, tokens, statusAgent)
    const rssStart = rssMiB(server.pid)
    log(`  server pid ${server.pid} at ${server.url}: ready after ${int(server.readyMs)} ms, RSS ${ms1(rssStart ?? NaN)} MiB; data dir ${dataDir}`)

    // [1] Capacity: the baseline of this run.
    log(`\n[1] capacity: closed loop, ${opts.connections} connections, warm-up ${opts.warmupS} s, measured ${opts.capacityDurationS} s`)
    const capacityRunId = `${runId}c`
    const capacityPrefix = `bench-${capacityRunId}-`
    const ledger = new IngestLedger(new BatchFactory(capacityRunId, opts.batch), TEMPLATE_COUNT, bearer(tokens.ingest))
    if (opts.warmupS > 0) capacityLine('warm-up', await ledger.run(server.url, opts.connections, opts.warmupS), opts.batch)
    const cap = await ledger.run(server.url, opts.connections, opts.capacityDurationS)
    const capacity = capacityLine('measured', cap, opts.batch)
    if (cap.result.non2xx > 0 || cap.stats.mismatches > 0) warn(`capacity phase: ${cap.result.non2xx} non-2xx, ${cap.stats.mismatches} batches not fully accepted: the baseline is not a clean one`)
    const resend = await ledger.resendInFlight(server.url)
    for (const f of resend.failures) fail(`capacity phase resend: ${f}`)
    log(`  resent ${resend.batches} batches left unanswered when the phase stopped: ${resend.accepted} events accepted, ${resend.duplicates} duplicates; the capacity phase must leave ${int(ledger.expectedStored)} events stored`)
    if (!(capacity > 0)) {
      fail('capacity phase acknowledged nothing: no baseline')
      return 1
    }

    // [2] Overload.
    const rate = opts.rate ?? capacity * opts.factor
    const inflight = opts.inflight ?? Math.min(inflightMax, Math.ceil((rate / opts.batch) * (opts.timeoutMs / 1000) * 1.1) + 16)
    const overloadRunId = `${runId}o`
    const overloadPrefix = `bench-${overloadRunId}-`
    log(
      `\n[2] overload: open loop at ${int(rate)} events/s = ${(rate / capacity).toFixed(2)} × capacity (${f1(rate / opts.batch)} req/s) for ${opts.durationS} s; ` +
        `client timeout ${opts.timeoutMs} ms, at most ${inflight} on the wire, nothing retried; ${opts.queryClients} query clients (${queryPauseMs} ms between calls); ` +
        `/healthz every ${opts.healthzMs} ms on a new connection and on a kept-alive one (timeout ${healthzTimeoutMs} ms); RSS, CPU and queue every ${samplerIntervalMs} ms`,
    )
    // The probers start first, and the load once they run: their threads load tsx before
    // probing, which must neither leave the start of the load unprobed nor count as the
    // generator's CPU.
    const [prober, proberKeepAlive] = await Promise.all([HealthzProber.start(server.url, opts.healthzMs, false), HealthzProber.start(server.url, opts.healthzMs, true)])
    const gen = new OverloadGenerator(new BatchFactory(overloadRunId, opts.batch), base, { ...bearer(tokens.ingest), 'content-type': 'application/json' }, rate, opts.timeoutMs, inflight)
    const queries = new QueryClients(base, bearer(tokens.query), queryKinds(runStartMs))
    const sampler = new Sampler(server, status)
    const eld = monitorEventLoopDelay({ resolution: 10 })
    const genCpu0 = process.cpuUsage()
    eld.enable()
    sampler.start()
    const overflows0 = listenOverflows()
    const loadT0Abs = nowAbsMs()
    const serverCpu0 = server.cpuSeconds()
    gen.start(loadT0Abs)
    queries.start(opts.queryClients)
    let crashedAtS: number | undefined
    const deadline = loadT0Abs + opts.durationS * 1000
    while (nowAbsMs() < deadline) {
      await sleep(Math.min(250, deadline - nowAbsMs()))
      if (server.exited() && crashedAtS === undefined) {
        crashedAtS = (nowAbsMs() - loadT0Abs) / 1000
        break
      }
    }
    await gen.stop()
    const overflows1 = listenOverflows()
    const serverCpu1 = server.cpuSeconds()
    await queries.stop()
    await Promise.all([prober.stop(), proberKeepAlive.stop()])
    eld.disable()
    const genCpu = process.cpuUsage(genCpu0)
    const r = gen.r
    log(`  load stopped after ${f1(r.durationS)} s; the last requests on the wire settled ${int(r.drainMs)} ms later`)

    // [3] Settle, then export and compare.
    log('\n[3] settle and verify')
    if (server.exited()) crashedAtS ??= (nowAbsMs() - loadT0Abs) / 1000
    let exp: ExportCheck | undefined
    let usageRequests: string | undefined
    const exportFromMs = runStartMs - windowSlackMs
    if (crashedAtS === undefined) {
      const st = await settle(status)
      log(
        `  server queue ${st.ok ? 'empty and commits stable' : 'NOT settled'} ${int(st.ms)} ms after the load stopped (committed events ${String(st.last?.ingest?.committed_events)}, queued ${String(st.last?.ingest?.queued_events)}; ` +
          `rollovers ${String(st.last?.rollovers)}, segments active/pending/archived ${String(st.last?.tiers?.active)}/${String(st.last?.tiers?.pending)}/${String(st.last?.tiers?.archived)}, seal failures ${String(st.last?.sealing?.failures)})`,
      )
      if (!st.ok) warn(`the server's queue did not settle within ${settleMaxMs} ms`)
      sampler.stop()
      const exportToMs = Date.now() + windowSlackMs
      const exportCpu0 = { server: server.cpuSeconds(), bench: process.cpuUsage() }
      exp = await exportIds(base, tokens.query, exportFromMs, exportToMs, capacityPrefix, overloadPrefix)
      const exportServerCpuS = exportCpu0.server === undefined ? undefined : (server.cpuSeconds() ?? NaN) - exportCpu0.server
      const exportBenchCpu = process.cpuUsage(exportCpu0.bench)
      // Lines per second over the first and the last few progress marks: a walk that slows as it goes shows here.
      const pm = exp.progressMs
      const k = Math.min(5, Math.floor(pm.length / 2))
      const rateOf = (a: number, b: number): string => (b > a ? int((exportProgressLines * 1000) / ((pm[b]! - pm[a]!) / (b - a))) : 'n/a')
      log(
        `  export: ${exp.status} in ${f1(exp.ms / 1000)} s, ${int(exp.lines)} lines, ${mib(exp.bytes)}; server CPU ${exportServerCpuS === undefined ? 'n/a' : `${f1(exportServerCpuS)} s`}, bench CPU ${f1((exportBenchCpu.user + exportBenchCpu.system) / 1e6)} s` +
          `${k > 0 ? `; ${rateOf(0, k)} lines/s over its first ${int(k * exportProgressLines)} lines after the first, ${rateOf(pm.length - 1 - k, pm.length - 1)} lines/s over the last ${int(k * exportProgressLines)} counted` : ''}` +
          `${exp.error !== undefined ? `; ERROR ${exp.error}` : ''}`,
      )
      if (exp.error !== undefined) fail(`export failed: ${exp.error}`)
      try {
        const a = await httpCall({ agent: statusAgent, base, method: 'GET', path: `/v1/usage?from=${exportFromMs}&to=${exportToMs}`, headers: bearer(tokens.query), timeoutMs: queryTimeoutMs })
        usageRequests = a.status === 200 ? String((JSON.parse(a.body) as { totals?: { requests?: unknown } }).totals?.requests) : `${a.status}`
      } catch (err) {
        usageRequests = String(err)
      }
    } else {
      sampler.stop()
      fail(`the server exited ${f1(crashedAtS)} s into the load phase: nothing can be verified\n${server.tail()}`)
    }
    const rssAfterSettle = rssMiB(server.pid)
    const stop: StopReport = await server.stop()
    const logs = server.logs
    server = undefined
    statusAgent.destroy()

    // ------------------------------------------------------------------------ the comparison
    const B = opts.batch
    const states = gen.states
    const byState = new Array<number>(STATE_NAMES.length).fill(0)
    const storedByState = new Array<number>(STATE_NAMES.length).fill(0)
    let lost = 0
    const lostSamples: string[] = []
    const total = r.sent * B
    for (let n = 0; n < total; n++) {
      const s = states.get(n)
      byState[s]!++
      const seen = exp?.seenOverload.get(n) ?? 0
      if (seen > 0) storedByState[s]!++
      if (exp !== undefined && isAcked(s) && seen === 0) {
        lost++
        if (lostSamples.length < samplesMax) lostSamples.push(`${overloadPrefix}${n} (${STATE_NAMES[s]})`)
      }
    }
    let strayOverload = 0
    if (exp !== undefined) for (let n = total; n < exp.seenOverload.length; n++) if (exp.seenOverload.get(n) > 0) strayOverload++
    let capacityStored = 0
    if (exp !== undefined) for (let n = 0; n < exp.seenCapacity.length; n++) if (exp.seenCapacity.get(n) > 0) capacityStored++
    const storedUnacked = (s: number): number => storedByState[s] ?? 0
    const stored503 = storedUnacked(S.s503) + storedUnacked(S.s429) + storedUnacked(S.otherStatus) + storedUnacked(S.refused)
    const storedNeverSent = storedUnacked(S.unsent) + storedUnacked(S.onWire) + strayOverload

    // ------------------------------------------------------------------------ the report
    const answered = r.answers2xx + r.answers503 + r.answers429 + Object.values(r.otherByStatus).reduce((a, b) => a + b, 0)
    const hz = prober.probes
    const hzLat = hz.map((p) => p.latencyMs)
    const hzFail = hz.filter((p) => !p.ok)
    const hzKa = proberKeepAlive.probes
    const hzKaLat = hzKa.map((p) => p.latencyMs)
    const rss = sampler.samples.map((s) => s.rssMiB).filter((x): x is number => x !== undefined)
    const loadS = r.durationS
    const achieved = r.ackedEvents / loadS

    log('\n[4] over time (5 s rows; requests by answer time; hz = /healthz on a new connection, hzKA on a kept-alive one; RSS, queued events and CPU at the row\'s last sample; accept q = most connections waiting in the listen backlog; rolls = segment rollovers so far)')
    log(`  ${'t s'.padStart(5)} ${'sent/s'.padStart(7)} ${'2xx/s'.padStart(6)} ${'503/s'.padStart(6)} ${'t/o'.padStart(5)} ${'other'.padStart(5)} ${'acked ev/s'.padStart(10)} ${'2xx p50 ms'.padStart(10)} ${'hz p99'.padStart(7)} ${'hz max'.padStart(7)} ${'hz fail'.padStart(7)} ${'hzKA p99'.padStart(8)} ${'queued ev'.padStart(9)} ${'accept q'.padStart(8)} ${'rolls'.padStart(5)} ${'RSS MiB'.padStart(8)} ${'srv CPU'.padStart(7)}`)
    const rows = Math.ceil(Math.max(r.seconds.length, Math.ceil(loadS)) / timelineStepS)
    let prevCpu: { atAbs: number; cpuS: number } | undefined =
      serverCpu0 === undefined ? undefined : { atAbs: loadT0Abs, cpuS: serverCpu0 }
    const rssTimeline: { t: number; rss: number | null; queued: number | null }[] = []
    for (let row = 0; row < rows; row++) {
      const s0 = row * timelineStepS
      const s1 = s0 + timelineStepS
      const secs = r.seconds.slice(s0, s1)
      const sum = (k: keyof Second): number => secs.reduce((a, s) => a + s[k], 0)
      const width = Math.max(1, secs.length)
      const lat = r.latency2xxAt.filter(([sec]) => sec >= s0 && sec < s1).map(([, l]) => l)
      const fromAbs = loadT0Abs + s0 * 1000
      const toAbs = loadT0Abs + s1 * 1000
      const hzRow = hz.filter((p) => p.atAbs >= fromAbs && p.atAbs < toAbs)
      const hzKaRow = hzKa.filter((p) => p.atAbs >= fromAbs && p.atAbs < toAbs).map((p) => p.latencyMs)
      const smp = sampler.samples.filter((p) => p.atAbs >= fromAbs && p.atAbs < toAbs)
      const lastSmp = smp[smp.length - 1]
      let cpu = 'n/a'
      if (lastSmp?.cpuS !== undefined && prevCpu !== undefined && lastSmp.atAbs > prevCpu.atAbs) {
        cpu = `${int((100 * (lastSmp.cpuS - prevCpu.cpuS)) / ((lastSmp.atAbs - prevCpu.atAbs) / 1000))}%`
      }
      if (lastSmp?.cpuS !== undefined) prevCpu = { atAbs: lastSmp.atAbs, cpuS: lastSmp.cpuS }
      rssTimeline.push({ t: s1, rss: lastSmp?.rssMiB === undefined ? null : Number(lastSmp.rssMiB.toFixed(1)), queued: lastSmp?.queuedEvents ?? null })
      log(
        `  ${String(s1).padStart(5)} ${int(sum('sent') / width).padStart(7)} ${int(sum('ok') / width).padStart(6)} ${int(sum('s503') / width).padStart(6)} ${String(sum('timeouts')).padStart(5)} ${String(sum('other') + sum('s429') + sum('socketErrors')).padStart(5)} ` +
          `${int(sum('ackedEvents') / width).padStart(10)} ${ms1(percentile(lat, 50)).padStart(10)} ${ms1(percentile(hzRow.map((p) => p.latencyMs), 99)).padStart(7)} ${ms1(hzRow.length > 0 ? Math.max(...hzRow.map((p) => p.latencyMs)) : NaN).padStart(7)} ${String(hzRow.filter((p) => !p.ok).length).padStart(7)} ${ms1(percentile(hzKaRow, 99)).padStart(8)} ` +
          `${(lastSmp?.queuedEvents === undefined ? 'n/a' : int(lastSmp.queuedEvents)).padStart(9)} ${(smp.some((p) => p.acceptWaiting !== undefined) ? String(Math.max(...smp.map((p) => p.acceptWaiting ?? 0))) : 'n/a').padStart(8)} ${String(lastSmp?.rollovers ?? 'n/a').padStart(5)} ${(lastSmp?.rssMiB === undefined ? 'n/a' : f1(lastSmp.rssMiB)).padStart(8)} ${cpu.padStart(7)}`,
      )
    }

    log('\n[5] report')
    log(`  capacity (baseline)   ${int(capacity)} events/s closed loop (${opts.connections} connections, ${opts.capacityDurationS} s)`)
    log(`  offered               ${int(rate)} events/s = ${(rate / capacity).toFixed(2)} × capacity; scheduled ${int(r.scheduled)} requests, sent ${int(r.sent)} (${int((r.sent * B) / loadS)} events/s), not sent (in-flight bound ${inflight}) ${int(r.notSent)} (${pct(r.notSent, r.scheduled)}); most on the wire ${r.maxOnWire}; generator send lag max ${ms1(r.sendLagMsMax)} ms`)
    log(`  achieved acks         ${int(achieved)} events/s = ${(achieved / capacity).toFixed(2)} × capacity (${int(r.ackedEvents)} events acknowledged in ${f1(loadS)} s + ${f1(r.drainMs / 1000)} s drain)`)
    log(
      `  ingest answers        of ${int(r.sent)} sent: 2xx ${int(r.answers2xx)} (${pct(r.answers2xx, r.sent)}), 503 ${int(r.answers503)} (${pct(r.answers503, r.sent)}), 429 ${int(r.answers429)} (${pct(r.answers429, r.sent)}), ` +
        `other ${int(answered - r.answers2xx - r.answers503 - r.answers429)} (${pct(answered - r.answers2xx - r.answers503 - r.answers429, r.sent)}${Object.keys(r.otherByStatus).length > 0 ? `: ${countsText(r.otherByStatus)}` : ''}), ` +
        `client timeouts ${int(r.timeouts)} (${pct(r.timeouts, r.sent)}), socket errors ${int(r.socketErrors)} (${pct(r.socketErrors, r.sent)})`,
    )
    log(`  503 codes             ${countsText(r.codes503)}; Retry-After missing on ${r.retryAfterMissing503} of ${r.answers503} 503s${r.answers429 > 0 ? ` and ${r.retryAfterMissing429} of ${r.answers429} 429s` : ''}`)
    log(`  ingest latency        2xx (from schedule) p50 ${ms1(percentile(r.latency2xxMs, 50))} ms, p99 ${ms1(percentile(r.latency2xxMs, 99))} ms, max ${ms1(r.latency2xxMs.length > 0 ? Math.max(...r.latency2xxMs) : NaN)} ms; 503 p50 ${ms1(percentile(r.latency503Ms, 50))} ms, p99 ${ms1(percentile(r.latency503Ms, 99))} ms, max ${ms1(r.latency503Ms.length > 0 ? Math.max(...r.latency503Ms) : NaN)} ms`)
    if (r.inconsistent2xx > 0 || r.unreadable2xx > 0) fail(`${r.inconsistent2xx} 2xx answers whose counts disagree with their results, ${r.unreadable2xx} unreadable: ${r.inconsistentSamples.join(' | ')}`)
    if (r.refusedEvents > 0) warn(`${r.refusedEvents} events refused (conflict/rejected) in 2xx answers: ${r.refusedSamples.join(' | ')}`)
    for (const s of r.otherSamples) log(`    other-status sample: ${s}`)
    for (const s of r.socketErrorSamples) log(`    socket-error sample: ${s}`)
    if (exp !== undefined) {
      log(`  acked events          ${int(r.ackedEvents)} (duplicates among them ${int(r.duplicateEvents)}); exported ${int(exp.lines)} events in all`)
      log(`  ACKED LOST            ${int(lost)}${lostSamples.length > 0 ? `: ${lostSamples.join(', ')}` : ''}`)
      log(`  DUPLICATES            ${int(exp.duplicatedIds)} ids exported more than once${exp.duplicateSamples.length > 0 ? `: ${exp.duplicateSamples.join(', ')}` : ''}`)
      log(
        `  unacked but stored    ${int(storedUnacked(S.timeout) + storedUnacked(S.socketError))} events whose request got no answer (client timeout ${int(storedUnacked(S.timeout))} of ${int(byState[S.timeout]!)}, socket error ${int(storedUnacked(S.socketError))} of ${int(byState[S.socketError]!)}): allowed; ` +
          `stored although answered 503/429/other or refused: ${int(stored503)} (503 ${int(storedUnacked(S.s503))}, 429 ${int(storedUnacked(S.s429))}, other ${int(storedUnacked(S.otherStatus))}, refused ${int(storedUnacked(S.refused))}); never sent ${int(storedNeverSent)}`,
      )
      log(`  capacity phase        ${int(capacityStored)} of its ids exported, ${int(ledger.expectedStored)} acknowledged (after the resend)`)
      log(`  export / totals       ${int(exp.lines)} exported, GET /v1/usage totals.requests ${String(usageRequests)}; foreign ids ${exp.foreign}, unreadable lines ${exp.unparseable}`)
      if (lost > 0) fail(`${lost} acknowledged events are not stored: ${lostSamples.join(', ')}`)
      if (exp.duplicatedIds > 0) fail(`${exp.duplicatedIds} event ids are stored more than once: ${exp.duplicateSamples.join(', ')}`)
      if (stored503 > 0) fail(`${stored503} events are stored although their request was answered 503/429/other or refused (a 503 says nothing was stored)`)
      if (storedNeverSent > 0) fail(`${storedNeverSent} events are stored that the bench never finished sending`)
      if (capacityStored !== ledger.expectedStored) fail(`capacity phase: ${capacityStored} of its events exported, ${ledger.expectedStored} acknowledged`)
      if (exp.foreign > 0 || exp.unparseable > 0) fail(`export holds ${exp.foreign} ids this run never sent (${exp.foreignSamples.join(', ')}) and ${exp.unparseable} unreadable lines`)
      if (usageRequests !== String(exp.lines)) warn(`GET /v1/usage totals.requests ${String(usageRequests)} ≠ ${exp.lines} exported events`)
    }
    log(`  /healthz new conn.    ${healthzText(prober)}`)
    log(`  /healthz kept-alive   ${healthzText(proberKeepAlive)}`)
    for (const [name, f] of queries.figures) {
      log(`  query                 ${name.padEnd(24)} ${String(f.latenciesMs.length).padStart(4)} answers: p50 ${ms1(percentile(f.latenciesMs, 50)).padStart(7)} ms, p95 ${ms1(percentile(f.latenciesMs, 95)).padStart(7)} ms, max ${ms1(f.latenciesMs.length > 0 ? Math.max(...f.latenciesMs) : NaN).padStart(7)} ms; statuses ${countsText(f.statuses)}`)
      for (const s of f.samples.slice(0, 2)) log(`                        sample: ${s}`)
    }
    log(`  server RSS            start ${ms1(rssStart ?? NaN)} MiB; during load min ${ms1(rss.length > 0 ? Math.min(...rss) : NaN)}, median ${ms1(median(rss))}, max ${ms1(rss.length > 0 ? Math.max(...rss) : NaN)} MiB (${rss.length} samples); after settle + export ${ms1(rssAfterSettle ?? NaN)} MiB`)
    log(`  RSS over time         ${rssTimeline.map((x) => `${x.t}s:${x.rss === null ? 'n/a' : Math.round(x.rss)}`).join(' ')} (MiB)`)
    log(`  server CPU            ${serverCpu0 === undefined || serverCpu1 === undefined ? 'n/a' : `${int((100 * (serverCpu1 - serverCpu0)) / loadS)}% over the load phase (${os.cpus().length} CPUs = ${os.cpus().length * 100}%)`}`)
    const acceptMax = Math.max(0, ...sampler.samples.map((x) => x.acceptWaiting ?? 0))
    log(
      `  listen backlog        most connections waiting to be accepted ${acceptMax} (the listen backlog: ${String(sampler.samples.find((x) => x.backlog !== undefined)?.backlog ?? 'n/a')}); ` +
        `TcpExt ListenOverflows during the load ${overflows0 === undefined || overflows1 === undefined ? 'n/a' : int(overflows1 - overflows0)} (namespace-wide: a full backlog drops SYNs, the client resends after 1 s, 3 s…)`,
    )
    log(`  server logs           ${logs.warnLines} warn, ${logs.errorLines} error, ${logs.stderrLines} stderr lines; stopped in ${int(stop.stopMs)} ms${stop.forced ? ' (SIGKILL)' : ''}, exit ${String(stop.code ?? stop.signal)}`)
    for (const s of logs.samples) log(`    ${s}`)
    log(`  generator             CPU ${int((100 * (genCpu.user + genCpu.system)) / 1e6 / loadS)}% over the load phase; event-loop delay p99 ${ms1(eld.percentile(99) / 1e6)} ms, max ${ms1(eld.max / 1e6)} ms; RSS ${f1(process.memoryUsage().rss / 2 ** 20)} MiB`)

    Object.assign(summary, {
      capacity_events_per_s: Math.round(capacity),
      offered_events_per_s: Math.round(rate),
      offered_over_capacity: Number((rate / capacity).toFixed(2)),
      acked_events_per_s: Math.round(achieved),
      acked_over_capacity: Number((achieved / capacity).toFixed(2)),
      requests_sent: r.sent,
      not_sent: r.notSent,
      share_2xx: Number((r.answers2xx / Math.max(1, r.sent)).toFixed(4)),
      share_503: Number((r.answers503 / Math.max(1, r.sent)).toFixed(4)),
      share_429: Number((r.answers429 / Math.max(1, r.sent)).toFixed(4)),
      share_other: Number(((answered - r.answers2xx - r.answers503 - r.answers429) / Math.max(1, r.sent)).toFixed(4)),
      share_timeout: Number((r.timeouts / Math.max(1, r.sent)).toFixed(4)),
      share_socket_error: Number((r.socketErrors / Math.max(1, r.sent)).toFixed(4)),
      retry_after_missing: r.retryAfterMissing503,
      acked_events: r.ackedEvents,
      acked_lost: exp === undefined ? null : lost,
      duplicates: exp?.duplicatedIds ?? null,
      unacked_stored: exp === undefined ? null : storedUnacked(S.timeout) + storedUnacked(S.socketError),
      stored_after_503: exp === undefined ? null : stored503,
      healthz_p50_ms: Number(ms1(percentile(hzLat, 50))),
      healthz_p99_ms: Number(ms1(percentile(hzLat, 99))),
      healthz_max_ms: Number(ms1(hzLat.length > 0 ? Math.max(...hzLat) : NaN)),
      healthz_failures: hzFail.length,
      healthz_keepalive_p99_ms: Number(ms1(percentile(hzKaLat, 99))),
      healthz_keepalive_max_ms: Number(ms1(hzKaLat.length > 0 ? Math.max(...hzKaLat) : NaN)),
      accept_queue_max: acceptMax,
      listen_overflows: overflows0 === undefined || overflows1 === undefined ? null : overflows1 - overflows0,
      healthz_keepalive_failures: hzKa.filter((p) => !p.ok).length,
      rss_mib: { min: rss.length > 0 ? Math.round(Math.min(...rss)) : null, median: Math.round(median(rss)), max: rss.length > 0 ? Math.round(Math.max(...rss)) : null },
      rss_timeline: rssTimeline,
      warn_log_lines: logs.warnLines,
      error_log_lines: logs.errorLines + logs.stderrLines,
    })
  } finally {
    if (server !== undefined) await server.stop()
    await rm(dataDir, { recursive: true, force: true })
  }

  log()
  if (warnings.length > 0) log(`${warnings.length} warning(s): ${warnings.join('; ')}`)
  log(failures.length === 0 ? 'no acknowledged event lost or duplicated' : `${failures.length} CORRECTNESS FAILURE(S)`)
  log(JSON.stringify({ ...summary, warnings: warnings.length, failures: failures.length }))
  return failures.length === 0 ? 0 : 1
}

runMain('bench:overload', main)
