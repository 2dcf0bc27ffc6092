// The tail phase of bench/ingest.ts: tokenledger's ingest latency under an open-loop
// load at a fixed rate (half of the peak the closed-loop phase measured), while the
// store rolls its active segment over and seals the pending one inside the measured
// window. Open loop (bench/lib/load.ts startOpenLoop): batches leave on a schedule
// whatever the answers do and each latency counts from the batch's scheduled time, so
// a stall of the commit loop shows as latency, not as fewer requests.
//
// The server gets TOKENLEDGER_ROLLOVER_AGE (default 4 s) so that rollovers (and the
// seals that follow) fall inside the window at any rate; the phase reads
// /v1/status before and after and says how many happened (none is a failure of the
// phase: the figure would not be the one the issue asks for). The slowest answers
// are told with their scheduled time, and per second the worst latency, so a stall
// can be matched to a rollover or a seal.
import { mkdtemp, rm } from 'node:fs/promises'
import os from 'node:os'
import { join } from 'node:path'
import type { RunningServer } from './child.js'
import { startServer } from './child.js'
import { BatchFactory, TEMPLATE_COUNT } from './events.js'
import { IngestLedger } from './load.js'
import { f1, int, log, percentile } from './report.js'
import { getJson, tokenledgerSpec, type ServerStatus } from './server.js'

export interface TailOptions {
  runId: string
  /** Events per second of the open loop. */
  eventsPerS: number
  batch: number
  warmupS: number
  durationS: number
  rolloverAge: string
  startTimeoutMs: number
  /** Checks what the server stored against what it acknowledged (and resends what was unanswered). */
  verify: (server: RunningServer, ledger: IngestLedger) => Promise<{ ok: boolean }>
}

export interface TailReport {
  eventsPerS: number
  scheduled: number
  answered: number
  skipped: number
  unanswered: number
  non2xx: number
  p50Ms: number
  p99Ms: number
  maxMs: number
  sendLagMsMax: number
  rollovers: number
  sealed: number
  serverCpuUsPerEvent: number | undefined
  verified: boolean
  /** Rollovers and seals happened inside the measured window. */
  windowOk: boolean
}

export async function runTail(o: TailOptions): Promise<TailReport> {
  const label = 'tail'
  const dataDir = await mkdtemp(join(os.tmpdir(), 'tokenledger-bench-tail-'))
  try {
    const server = await startServer(
      tokenledgerSpec(label, dataDir, {
        env: { TOKENLEDGER_ROLLOVER_AGE: o.rolloverAge },
        nodeArgs: (process.env.BENCH_SERVER_NODE_ARGS ?? '').split(' ').filter(Boolean),
        startTimeoutMs: o.startTimeoutMs,
      }),
    )
    try {
      const ledger = new IngestLedger(new BatchFactory(`${o.runId}l`, o.batch), TEMPLATE_COUNT)
      if (o.warmupS > 0) {
        const w = ledger.startOpenLoop(server.url, o.eventsPerS)
        await new Promise((r) => setTimeout(r, o.warmupS * 1000))
        await w.stop()
      }
      const st0 = await getJson<ServerStatus>(`${server.url}/v1/status`)
      const cpu0 = server.cpuSeconds()
      const loop = ledger.startOpenLoop(server.url, o.eventsPerS)
      await new Promise((r) => setTimeout(r, o.durationS * 1000))
      const res = await loop.stop()
      const cpu1 = server.cpuSeconds()
      const st1 = await getJson<ServerStatus>(`${server.url}/v1/status`)
      const rollovers = st1.rollovers - st0.rollovers
      const sealed = st1.sealing.sealed - st0.sealing.sealed
      const lat = res.latenciesMs
      const non2xx = Object.values(res.stats.non2xxByStatus).reduce((a, b) => a + b, 0)
      const evps = (res.stats.eventsAccepted) / res.durationS
      const report: TailReport = {
        eventsPerS: evps,
        scheduled: res.scheduled,
        answered: lat.length,
        skipped: res.skipped,
        unanswered: res.unanswered,
        non2xx,
        p50Ms: percentile(lat, 50),
        p99Ms: percentile(lat, 99),
        maxMs: lat.length === 0 ? NaN : Math.max(...lat),
        sendLagMsMax: res.sendLagMsMax,
        rollovers,
        sealed,
        serverCpuUsPerEvent: cpu0 === undefined || cpu1 === undefined || res.stats.eventsAccepted === 0 ? undefined : ((cpu1 - cpu0) * 1e6) / res.stats.eventsAccepted,
        verified: false,
        windowOk: rollovers >= 1 && sealed >= 1,
      }
      log(
        `[${label}] open loop ${int(o.eventsPerS)} events/s for ${o.durationS} s (rollover age ${o.rolloverAge}): ${int(evps)} events/s acknowledged, ` +
          `${int(report.answered)} of ${int(res.scheduled)} batches answered, skipped ${res.skipped}, unanswered ${res.unanswered}, non-2xx ${non2xx}`,
      )
      log(`[${label}] latency from the scheduled time: p50 ${f1(report.p50Ms)} ms, p99 ${f1(report.p99Ms)} ms, max ${f1(report.maxMs)} ms (generator send lag max ${f1(res.sendLagMsMax)} ms)`)
      log(`[${label}] inside the window: ${rollovers} rollovers, ${sealed} seals ${report.windowOk ? '(ok)' : '(PROBLEM: the window must hold a rollover and a seal)'}`)
      if (report.serverCpuUsPerEvent !== undefined) log(`[${label}] server CPU ${f1(report.serverCpuUsPerEvent)} µs per acknowledged event`)
      // Per second: the worst latency of the batches scheduled in it (where the stalls are).
      const worst = new Map<number, number>()
      res.scheduledAtMs.forEach((at, i) => {
        const s = Math.floor(at / 1000)
        worst.set(s, Math.max(worst.get(s) ?? 0, lat[i] ?? 0))
      })
      log(`[${label}] worst latency per second of schedule (ms): ${[...worst].sort((a, b) => a[0] - b[0]).map(([s, ms]) => `${s}:${Math.round(ms)}`).join(' ')}`)
      const v = await o.verify(server, ledger)
      report.verified = v.ok
      return report
    } finally {
      await server.stop()
    }
  } finally {
    await rm(dataDir, { recursive: true, force: true })
  }
}
