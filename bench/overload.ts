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
import { execFile } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { mkdtemp, rm } from 'node:fs/promises'
import http from 'node:http'
import os from 'node:os'
import { join } from 'node:path'
import { monitorEventLoopDelay } from 'node:perf_hooks'
import { createInterface } from 'node:readline'
import { parseArgs } from 'node:util'
import { Worker } from 'node:worker_threads'
import { startServer, type RunningServer, type StopReport } from './lib/child.js'
import { BATCH_EVENTS_MAX, BatchFactory, KEY_COUNT, TEMPLATE_COUNT } from './lib/events.js'
import { IngestLedger, type PhaseResult } from './lib/load.js'
import { f1, fail, failures, int, log, mib, percentile, warn, warnings } from './lib/report.js'
import { tokenledgerSpec } from './lib/server.js'
import { numberOption, rssMiB, runMain } from './lib/cli.js'

const serverStartTimeoutMs = 120_000
const queryTimeoutMs = 30_000
/** Pause between one query client's calls (a dashboard, not a tight loop). */
const queryPauseMs = 200
const healthzTimeoutMs = 2_000
/** Most /healthz probes outstanding at once (2 s worth at the default interval). */
const healthzOutstandingMax = 40
const samplerIntervalMs = 1_000
const statusTimeoutMs = 2_000
/** Width of one row of the over-time table. */
const timelineStepS = 5
/** After the load stops: most time to wait for the server's queue to empty. */
const settleMaxMs = 180_000
const settlePollMs = 250
const exportTimeoutMs = 900_000
/** Slack around the run for the export and totals window. */
const windowSlackMs = 3_600_000
const samplesMax = 5
/** Upper bound of --inflight (each is a socket of this process). */
const inflightMax = 8_192
const sampleCharsMax = 300
const BUCKET_15M_MS = 900_000
const HOUR_MS = 3_600_000

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

// ---------------------------------------------------------------------------- helpers

/** Epoch ms with sub-ms resolution, comparable across worker threads. */
const nowAbsMs = (): number => performance.timeOrigin + performance.now()
const pct = (part: number, whole: number): string => (whole === 0 ? 'n/a' : `${((100 * part) / whole).toFixed(1)}%`)
const ms1 = (n: number): string => (Number.isFinite(n) ? n.toFixed(1) : 'n/a')
const clip = (text: string): string => (text.length > sampleCharsMax ? `${text.slice(0, sampleCharsMax)}…` : text)
const median = (xs: number[]): number => percentile(xs, 50)
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms))


/** TcpExt ListenOverflows of this network namespace (every listener, not only the server's), if readable. */
function listenOverflows(): number | undefined {
  try {
    const lines = readFileSync('/proc/net/netstat', 'utf8').split('\n').filter((l) => l.startsWith('TcpExt:'))
    const names = lines[0]?.split(/\s+/) ?? []
    const values = lines[1]?.split(/\s+/) ?? []
    const i = names.indexOf('ListenOverflows')
    return i > 0 && values[i] !== undefined ? Number(values[i]) : undefined
  } catch {
    return undefined
  }
}

/**
 * The server's listening socket from `ss` (netlink, filtered in the kernel, run
 * asynchronously): connections waiting to be accepted and the backlog bound. Not
 * /proc/net/tcp: with thousands of client sockets and TIME_WAITs it is megabytes to
 * read and split on the generator's thread every second.
 */
function acceptQueue(port: number): Promise<{ waiting: number; backlog: number } | undefined> {
  return new Promise((resolve) => {
    execFile('ss', ['-ltnH', `sport = :${port}`], { timeout: 2_000 }, (err, stdout) => {
      // State Recv-Q Send-Q Local Peer; for a listener Recv-Q is the accept queue, Send-Q its bound.
      const f = err === null ? stdout.trim().split(/\s+/) : []
      const waiting = Number(f[1])
      const backlog = Number(f[2])
      resolve(f[0] === 'LISTEN' && Number.isInteger(waiting) && Number.isInteger(backlog) ? { waiting, backlog } : undefined)
    })
  })
}

function addCount(rec: Record<string, number>, key: string, n = 1): void {
  rec[key] = (rec[key] ?? 0) + n
}

const countsText = (rec: Record<string, number>): string =>
  Object.keys(rec).length === 0
    ? 'none'
    : Object.entries(rec)
        .sort((a, b) => b[1] - a[1])
        .map(([k, n]) => `${k}×${n}`)
        .join(', ')

interface Answer {
  status: number
  headers: http.IncomingHttpHeaders
  body: string
}

/** A request that got no HTTP answer: the client's own timeout, or the connection failed. */
class NoAnswer extends Error {
  constructor(
    readonly kind: 'timeout' | 'socket',
    message: string,
  ) {
    super(message)
  }
}

interface Call {
  agent: http.Agent | false
  base: URL
  method: 'GET' | 'POST'
  path: string
  headers: Record<string, string>
  body?: string
  timeoutMs: number
}

/** One HTTP request, its whole answer read; rejects with NoAnswer (never hangs past timeoutMs). */
function httpCall(c: Call): Promise<Answer> {
  return new Promise((resolve, reject) => {
    let settled = false
    let timedOut = false
    const finish = (fn: () => void): void => {
      if (settled) return
      settled = true
      clearTimeout(timer)
      fn()
    }
    const headers = c.body === undefined ? c.headers : { ...c.headers, 'content-length': String(Buffer.byteLength(c.body)) }
    const req = http.request({ host: c.base.hostname, port: c.base.port, method: c.method, path: c.path, headers, agent: c.agent })
    const timer = setTimeout(() => {
      timedOut = true
      req.destroy(new Error(`no answer within ${c.timeoutMs} ms`))
    }, c.timeoutMs)
    const noAnswer = (err: unknown): void => finish(() => reject(new NoAnswer(timedOut ? 'timeout' : 'socket', err instanceof Error ? err.message : String(err))))
    req.on('error', noAnswer)
    req.on('response', (res) => {
      const chunks: Buffer[] = []
      res.on('data', (chunk: Buffer) => chunks.push(chunk))
      res.on('error', noAnswer)
      res.on('end', () => finish(() => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks).toString('utf8') })))
      res.on('close', () => {
        if (!res.complete) noAnswer(new Error('connection closed mid-answer'))
      })
    })
    req.end(c.body)
  })
}

/** A Uint8Array indexed by event number that grows as needed. */
class ByteArray {
  private a = new Uint8Array(1 << 16)
  length = 0
  get(n: number): number {
    return n < this.a.length ? this.a[n]! : 0
  }
  set(n: number, v: number): void {
    if (n >= this.a.length) {
      let size = this.a.length
      while (size <= n) size *= 2
      const b = new Uint8Array(size)
      b.set(this.a)
      this.a = b
    }
    this.a[n] = v
    if (n >= this.length) this.length = n + 1
  }
  /** Saturates at 255. */
  increment(n: number): void {
    this.set(n, Math.min(255, this.get(n) + 1))
  }
}

// ---------------------------------------------------------------------------- ingest under overload

/** What the bench knows about one event of the overload phase, by what its request got. */
const S = {
  unsent: 0,
  onWire: 1,
  accepted: 2,
  duplicate: 3,
  /** In a 2xx answer, but its result says conflict or rejected. */
  refused: 4,
  /** In a 2xx answer that could not be read. */
  unreadable2xx: 5,
  s503: 6,
  s429: 7,
  otherStatus: 8,
  timeout: 9,
  socketError: 10,
} as const
const STATE_NAMES = ['unsent', 'on the wire', 'accepted', 'duplicate', 'refused in a 2xx', 'unreadable 2xx', '503', '429', 'other status', 'client timeout', 'socket error']
const isAcked = (s: number): boolean => s === S.accepted || s === S.duplicate

interface IngestAnswerBody {
  accepted?: unknown
  duplicates?: unknown
  conflicts?: unknown
  rejected?: unknown
  results?: unknown
}

/** Per-second counters of the overload phase (by answer time, since the load started). */
interface Second {
  sent: number
  ok: number
  s503: number
  s429: number
  other: number
  timeouts: number
  socketErrors: number
  ackedEvents: number
}

const newSecond = (): Second => ({ sent: 0, ok: 0, s503: 0, s429: 0, other: 0, timeouts: 0, socketErrors: 0, ackedEvents: 0 })

interface OverloadIngest {
  scheduled: number
  sent: number
  /** Due batches not sent because --inflight requests were on the wire. */
  notSent: number
  answers2xx: number
  answers503: number
  answers429: number
  otherByStatus: Record<string, number>
  timeouts: number
  socketErrors: number
  socketErrorSamples: string[]
  otherSamples: string[]
  retryAfterMissing503: number
  retryAfterMissing429: number
  codes503: Record<string, number>
  ackedEvents: number
  duplicateEvents: number
  refusedEvents: number
  refusedSamples: string[]
  unreadable2xx: number
  /** 2xx answers whose counts do not match their results or the batch size. */
  inconsistent2xx: number
  inconsistentSamples: string[]
  latency2xxMs: number[]
  latency503Ms: number[]
  /** [answer second, latency] of 2xx answers, for the over-time table. */
  latency2xxAt: [number, number][]
  seconds: Second[]
  maxOnWire: number
  sendLagMsMax: number
  durationS: number
  /** Ms from the end of scheduling until the last request settled. */
  drainMs: number
}

class OverloadGenerator {
  readonly states = new ByteArray()
  readonly r: OverloadIngest = {
    scheduled: 0,
    sent: 0,
    notSent: 0,
    answers2xx: 0,
    answers503: 0,
    answers429: 0,
    otherByStatus: {},
    timeouts: 0,
    socketErrors: 0,
    socketErrorSamples: [],
    otherSamples: [],
    retryAfterMissing503: 0,
    retryAfterMissing429: 0,
    codes503: {},
    ackedEvents: 0,
    duplicateEvents: 0,
    refusedEvents: 0,
    refusedSamples: [],
    unreadable2xx: 0,
    inconsistent2xx: 0,
    inconsistentSamples: [],
    latency2xxMs: [],
    latency503Ms: [],
    latency2xxAt: [],
    seconds: [],
    maxOnWire: 0,
    sendLagMsMax: 0,
    durationS: 0,
    drainMs: 0,
  }
  private onWire = new Set<Promise<void>>()
  private stopped = false
  private timer: NodeJS.Timeout | undefined
  private t0Abs = 0
  private readonly agent: http.Agent

  constructor(
    private readonly factory: BatchFactory,
    private readonly base: URL,
    private readonly headers: Record<string, string>,
    private readonly eventsPerS: number,
    private readonly timeoutMs: number,
    private readonly inflightMax: number,
  ) {
    // Sockets enough for every request allowed on the wire: nothing queues in the client.
    this.agent = new http.Agent({ keepAlive: true, maxSockets: inflightMax, maxFreeSockets: inflightMax })
  }

  private secondIndex(atAbs: number): number {
    return Math.max(0, Math.floor((atAbs - this.t0Abs) / 1000))
  }

  private second(atAbs: number): Second {
    const i = this.secondIndex(atAbs)
    while (this.r.seconds.length <= i) this.r.seconds.push(newSecond())
    return this.r.seconds[i]!
  }

  start(t0Abs: number): void {
    this.t0Abs = t0Abs
    const intervalMs = (this.factory.batchSize * 1000) / this.eventsPerS
    const tick = (): void => {
      const nowMs = nowAbsMs() - this.t0Abs
      while (!this.stopped && this.r.scheduled * intervalMs <= nowMs) {
        const dueMs = this.r.scheduled * intervalMs
        this.r.scheduled++
        if (this.onWire.size >= this.inflightMax) this.r.notSent++
        else this.send(dueMs)
      }
      if (!this.stopped) this.timer = setTimeout(tick, Math.max(0, this.r.scheduled * intervalMs - (nowAbsMs() - this.t0Abs)))
    }
    tick()
  }

  private send(dueMs: number): void {
    const r = this.r
    const batchNo = r.sent++
    const B = this.factory.batchSize
    const first = batchNo * B
    for (let j = 0; j < B; j++) this.states.set(first + j, S.onWire)
    const body = this.factory.build(batchNo, Date.now())
    const sentAbs = nowAbsMs()
    r.sendLagMsMax = Math.max(r.sendLagMsMax, sentAbs - (this.t0Abs + dueMs))
    this.second(sentAbs).sent++
    const p = httpCall({ agent: this.agent, base: this.base, method: 'POST', path: '/v1/events', headers: this.headers, body, timeoutMs: this.timeoutMs }).then(
      (a) => this.book(batchNo, a, nowAbsMs() - (this.t0Abs + dueMs)),
      (err: unknown) => {
        const kind = err instanceof NoAnswer ? err.kind : 'socket'
        const sec = this.second(nowAbsMs())
        if (kind === 'timeout') {
          r.timeouts++
          sec.timeouts++
        } else {
          r.socketErrors++
          sec.socketErrors++
          if (r.socketErrorSamples.length < samplesMax) r.socketErrorSamples.push(clip(String(err instanceof Error ? err.message : err)))
        }
        this.setBatch(batchNo, kind === 'timeout' ? S.timeout : S.socketError)
      },
    )
    this.onWire.add(p)
    r.maxOnWire = Math.max(r.maxOnWire, this.onWire.size)
    void p.finally(() => this.onWire.delete(p))
  }

  private setBatch(batchNo: number, state: number): void {
    const B = this.factory.batchSize
    for (let j = 0; j < B; j++) this.states.set(batchNo * B + j, state)
  }

  /** Books one answer: which of the batch's events it acknowledged. */
  private book(batchNo: number, a: Answer, latencyMs: number): void {
    const r = this.r
    const atAbs = nowAbsMs()
    const sec = this.second(atAbs)
    const B = this.factory.batchSize
    if (a.status >= 200 && a.status <= 299) {
      r.answers2xx++
      sec.ok++
      r.latency2xxMs.push(latencyMs)
      r.latency2xxAt.push([this.secondIndex(atAbs), latencyMs])
      let parsed: IngestAnswerBody | undefined
      try {
        parsed = JSON.parse(a.body) as IngestAnswerBody
      } catch {
        parsed = undefined
      }
      const results = parsed?.results
      if (parsed === undefined || !Array.isArray(results) || typeof parsed.accepted !== 'number') {
        r.unreadable2xx++
        this.setBatch(batchNo, S.unreadable2xx)
        if (r.inconsistentSamples.length < samplesMax) r.inconsistentSamples.push(`unreadable ${a.status}: ${clip(a.body)}`)
        return
      }
      // Every event not listed in `results` was accepted; listed ones say what they are.
      this.setBatch(batchNo, S.accepted)
      const seen = { duplicate: 0, conflict: 0, rejected: 0 }
      let bad = false
      for (const item of results as unknown[]) {
        const it = item as { index?: unknown; status?: unknown }
        const index = it.index
        const status = it.status
        if (typeof index !== 'number' || !Number.isInteger(index) || index < 0 || index >= B || (status !== 'duplicate' && status !== 'conflict' && status !== 'rejected')) {
          bad = true
          continue
        }
        seen[status]++
        this.states.set(batchNo * B + index, status === 'duplicate' ? S.duplicate : S.refused)
        if (status !== 'duplicate' && r.refusedSamples.length < samplesMax) r.refusedSamples.push(clip(JSON.stringify(item)))
      }
      const accepted = B - seen.duplicate - seen.conflict - seen.rejected
      if (bad || parsed.accepted !== accepted || parsed.duplicates !== seen.duplicate || parsed.conflicts !== seen.conflict || parsed.rejected !== seen.rejected) {
        r.inconsistent2xx++
        if (r.inconsistentSamples.length < samplesMax) r.inconsistentSamples.push(`batch ${batchNo}: ${clip(a.body)}`)
      }
      r.ackedEvents += accepted + seen.duplicate
      r.duplicateEvents += seen.duplicate
      r.refusedEvents += seen.conflict + seen.rejected
      sec.ackedEvents += accepted + seen.duplicate
      return
    }
    const hasRetryAfter = typeof a.headers['retry-after'] === 'string' && /^\s*(\d+|[A-Za-z]{3},.+GMT)\s*$/.test(a.headers['retry-after'])
    if (a.status === 503) {
      r.answers503++
      sec.s503++
      r.latency503Ms.push(latencyMs)
      if (!hasRetryAfter) r.retryAfterMissing503++
      let code = 'unreadable body'
      try {
        code = String((JSON.parse(a.body) as { code?: unknown }).code)
      } catch {
        // counted under 'unreadable body'
      }
      addCount(r.codes503, code)
      this.setBatch(batchNo, S.s503)
      return
    }
    if (a.status === 429) {
      r.answers429++
      sec.s429++
      if (!hasRetryAfter) r.retryAfterMissing429++
      this.setBatch(batchNo, S.s429)
      return
    }
    addCount(r.otherByStatus, String(a.status))
    sec.other++
    if (r.otherSamples.length < samplesMax) r.otherSamples.push(`${a.status} ${clip(a.body)}`)
    this.setBatch(batchNo, S.otherStatus)
  }

  /** Stops scheduling and waits for every request on the wire (each is bounded by the client timeout). */
  async stop(): Promise<void> {
    this.stopped = true
    if (this.timer !== undefined) clearTimeout(this.timer)
    this.r.durationS = (nowAbsMs() - this.t0Abs) / 1000
    const d0 = nowAbsMs()
    await Promise.allSettled([...this.onWire])
    this.r.drainMs = nowAbsMs() - d0
    this.agent.destroy()
  }
}

// ---------------------------------------------------------------------------- /healthz prober (worker thread)

// Plain JavaScript on purpose: it runs in its own thread (own event loop, so the load
// generator's lag does not count against the server) without tsx. Two modes:
// - new connection per probe, as a load balancer's check makes; a probe unanswered
//   within timeoutMs is a failure and its socket is destroyed (its latency is then
//   censored at timeoutMs);
// - keepAlive: one kept-alive connection, probes queued on it in order; none is
//   destroyed, so every latency is the real one (a stall shows in full), and a probe
//   answered later than timeoutMs is a failure.
// Both schedule probes open loop from the worker's clock; latency is from the scheduled
// time. Posts [scheduledAbsMs, latencyMs, ok, status] quadruples (status 0 = no answer)
// every second, and once more when told to stop.
const HEALTHZ_WORKER = `
const { parentPort, workerData } = require('node:worker_threads')
const http = require('node:http')
const { url, intervalMs, timeoutMs, outstandingMax, keepAlive } = workerData
const base = new URL(url)
const agent = keepAlive ? new http.Agent({ keepAlive: true, maxSockets: 1 }) : false
const now = () => performance.timeOrigin + performance.now()
const t0 = now()
let n = 0, outstanding = 0, skipped = 0, stopped = false, timer
let out = []
const flush = () => { if (out.length > 0) { parentPort.postMessage({ results: out, skipped }); out = [] } }
const probe = (due) => new Promise((resolve) => {
  outstanding++
  let recorded = false, closed = false
  const record = (ok, status) => { if (recorded) return; recorded = true; const ms = now() - due; out.push(due, ms, ok && ms <= timeoutMs ? 1 : 0, status) }
  const close = () => { if (closed) return; closed = true; clearTimeout(t); outstanding--; resolve() }
  const req = http.request({ host: base.hostname, port: base.port, path: '/healthz', method: 'GET', agent })
  const t = keepAlive ? undefined : setTimeout(() => { record(false, 0); req.destroy(new Error('timeout')) }, timeoutMs)
  req.on('error', () => { record(false, 0); close() })
  req.on('response', (res) => {
    res.resume()
    res.on('end', () => { record(res.statusCode === 200, res.statusCode); close() })
    res.on('error', () => { record(false, 0); close() })
  })
  req.end()
})
const pending = new Set()
const tick = () => {
  while (!stopped && t0 + n * intervalMs <= now()) {
    const due = t0 + n * intervalMs
    n++
    if (outstanding >= outstandingMax) { skipped++; continue }
    const p = probe(due)
    pending.add(p)
    p.then(() => pending.delete(p))
  }
  if (!stopped) timer = setTimeout(tick, Math.max(0, t0 + n * intervalMs - now()))
}
const flusher = setInterval(flush, 1000)
parentPort.on('message', async (m) => {
  if (m !== 'stop') return
  stopped = true
  clearTimeout(timer)
  await Promise.race([Promise.allSettled([...pending]), new Promise((r) => setTimeout(r, timeoutMs + 1000))])
  clearInterval(flusher)
  flush()
  parentPort.postMessage({ done: true, skipped, unanswered: pending.size })
  parentPort.close()
})
tick()
`

interface HealthzProbe {
  atAbs: number
  latencyMs: number
  ok: boolean
  status: number
}

class HealthzProber {
  readonly probes: HealthzProbe[] = []
  skipped = 0
  private readonly worker: Worker
  private readonly finished: Promise<void>

  constructor(url: string, intervalMs: number, keepAlive: boolean) {
    this.worker = new Worker(HEALTHZ_WORKER, { eval: true, workerData: { url, intervalMs, timeoutMs: healthzTimeoutMs, outstandingMax: healthzOutstandingMax, keepAlive } })
    this.finished = new Promise((resolve, reject) => {
      this.worker.on('message', (m: { results?: number[]; skipped?: number; done?: boolean }) => {
        const xs = m.results ?? []
        for (let i = 0; i + 3 < xs.length; i += 4) this.probes.push({ atAbs: xs[i]!, latencyMs: xs[i + 1]!, ok: xs[i + 2] === 1, status: xs[i + 3]! })
        if (m.skipped !== undefined) this.skipped = m.skipped
        if (m.done === true) resolve()
      })
      this.worker.on('error', reject)
      this.worker.on('exit', () => resolve())
    })
  }

  async stop(): Promise<void> {
    this.worker.postMessage('stop')
    await Promise.race([this.finished, sleep(healthzTimeoutMs + 10_000)])
    await this.worker.terminate()
  }
}

/** `n probes: p50, p99, max; failures (timeouts, non-200); not sent`. */
function healthzText(p: HealthzProber): string {
  const lat = p.probes.map((x) => x.latencyMs)
  const failed = p.probes.filter((x) => !x.ok)
  const noAnswer = failed.filter((x) => x.status === 0).length
  const late = failed.filter((x) => x.status === 200).length
  return (
    `${int(p.probes.length)} probes: p50 ${ms1(percentile(lat, 50))} ms, p99 ${ms1(percentile(lat, 99))} ms, max ${ms1(lat.length > 0 ? Math.max(...lat) : NaN)} ms; ` +
    `failures ${failed.length} (${pct(failed.length, p.probes.length)}: no answer ${noAnswer}, 200 later than ${healthzTimeoutMs} ms ${late}, other status ${failed.length - noAnswer - late}); ` +
    `not sent (${healthzOutstandingMax} outstanding) ${p.skipped}`
  )
}

// ---------------------------------------------------------------------------- query clients

interface QueryKind {
  name: string
  path: (nowMs: number) => string
}

function queryKinds(runStartMs: number): QueryKind[] {
  const floor15 = (ms: number): number => Math.floor(ms / BUCKET_15M_MS) * BUCKET_15M_MS
  let keyNo = 0
  return [
    { name: 'usage totals by key', path: (now) => `/v1/usage?from=${floor15(runStartMs - HOUR_MS)}&to=${now + 60_000}&group_by=key_id` },
    { name: 'timeseries 15m by model', path: (now) => `/v1/usage/timeseries?bucket=15m&tz=UTC&group_by=model&from=${floor15(now - 6 * HOUR_MS)}&to=${floor15(now) + BUCKET_15M_MS}` },
    { name: 'newest events page', path: () => '/v1/events?limit=100' },
    { name: 'events page, one key', path: () => `/v1/events?limit=100&key_id=key_${keyNo++ % KEY_COUNT}` },
  ]
}

interface QueryFigures {
  latenciesMs: number[]
  statuses: Record<string, number>
  samples: string[]
}

class QueryClients {
  readonly figures = new Map<string, QueryFigures>()
  private stopped = false
  private readonly loops: Promise<void>[] = []
  private readonly agent = new http.Agent({ keepAlive: true })

  constructor(
    private readonly base: URL,
    private readonly headers: Record<string, string>,
    private readonly kinds: QueryKind[],
  ) {
    for (const k of kinds) this.figures.set(k.name, { latenciesMs: [], statuses: {}, samples: [] })
  }

  start(clients: number): void {
    for (let c = 0; c < clients; c++) this.loops.push(this.loop(c))
  }

  private async loop(client: number): Promise<void> {
    let i = client // clients start on different kinds
    while (!this.stopped) {
      const kind = this.kinds[i++ % this.kinds.length]!
      const f = this.figures.get(kind.name)!
      const t0 = performance.now()
      try {
        const a = await httpCall({ agent: this.agent, base: this.base, method: 'GET', path: kind.path(Date.now()), headers: this.headers, timeoutMs: queryTimeoutMs })
        f.latenciesMs.push(performance.now() - t0)
        addCount(f.statuses, String(a.status))
        if (a.status !== 200 && f.samples.length < samplesMax) f.samples.push(`${a.status} ${clip(a.body)}`)
      } catch (err) {
        addCount(f.statuses, err instanceof NoAnswer ? err.kind : 'error')
        if (f.samples.length < samplesMax) f.samples.push(clip(String(err)))
      }
      await sleep(queryPauseMs)
    }
  }

  async stop(): Promise<void> {
    this.stopped = true
    await Promise.allSettled(this.loops)
    this.agent.destroy()
  }
}

// ---------------------------------------------------------------------------- RSS / CPU / queue sampler

interface Sample {
  atAbs: number
  rssMiB: number | undefined
  acceptWaiting: number | undefined
  backlog: number | undefined
  cpuS: number | undefined
  queuedEvents: number | undefined
  committedEvents: number | undefined
  rollovers: number | undefined
}

interface StatusAnswer {
  ingest?: { queued_events?: number; committed_events?: number }
  rollovers?: number
  tiers?: { active?: number; pending?: number; archived?: number }
  sealing?: { sealed?: number; backlog?: number; failures?: number }
}

/** GET /v1/status with the query token, or the admin token if the query token is refused (once auth lands). */
class StatusReader {
  private token: string
  constructor(
    private readonly base: URL,
    private readonly tokens: Tokens,
    private readonly agent: http.Agent,
  ) {
    this.token = tokens.query
  }

  async read(timeoutMs = statusTimeoutMs): Promise<StatusAnswer | undefined> {
    const get = (token: string): Promise<Answer> => httpCall({ agent: this.agent, base: this.base, method: 'GET', path: '/v1/status', headers: { authorization: `Bearer ${token}` }, timeoutMs })
    try {
      let a = await get(this.token)
      if ((a.status === 401 || a.status === 403) && this.token !== this.tokens.admin) {
        this.token = this.tokens.admin
        a = await get(this.token)
      }
      return a.status === 200 ? (JSON.parse(a.body) as StatusAnswer) : undefined
    } catch {
      return undefined
    }
  }
}

class Sampler {
  readonly samples: Sample[] = []
  private timer: NodeJS.Timeout | undefined
  private busy = false

  private readonly port: number

  constructor(
    private readonly server: RunningServer,
    private readonly status: StatusReader,
  ) {
    this.port = Number(new URL(server.url).port)
  }

  start(): void {
    const take = (): void => {
      if (this.busy) return // the previous /v1/status is still out: skip a beat rather than pile up
      this.busy = true
      const s: Sample = { atAbs: nowAbsMs(), rssMiB: rssMiB(this.server.pid), acceptWaiting: undefined, backlog: undefined, cpuS: this.server.cpuSeconds(), queuedEvents: undefined, committedEvents: undefined, rollovers: undefined }
      this.samples.push(s)
      void Promise.all([this.status.read(), acceptQueue(this.port)]).then(([st, q]) => {
        s.queuedEvents = st?.ingest?.queued_events
        s.committedEvents = st?.ingest?.committed_events
        s.rollovers = st?.rollovers
        s.acceptWaiting = q?.waiting
        s.backlog = q?.backlog
        this.busy = false
      })
    }
    take()
    this.timer = setInterval(take, samplerIntervalMs)
  }

  stop(): void {
    if (this.timer !== undefined) clearInterval(this.timer)
  }
}

// ---------------------------------------------------------------------------- export check

interface ExportCheck {
  status: number
  lines: number
  ms: number
  bytes: number
  /** Ids not from this run's prefixes (a fresh data dir: must be 0). */
  foreign: number
  foreignSamples: string[]
  unparseable: number
  /** Exported ids (any prefix) that appear more than once, and the surplus copies. */
  duplicatedIds: number
  duplicateSamples: string[]
  /** Per phase: how many times each event number was exported. */
  seenCapacity: ByteArray
  seenOverload: ByteArray
  error: string | undefined
  /** Ms since the request when each further exportProgressLines lines had arrived. */
  progressMs: number[]
}

const exportProgressLines = 100_000

const ID_HEAD = '{"event_id":"'

/** Streams GET /v1/export?format=ndjson and counts every id by phase and event number. */
async function exportIds(base: URL, token: string, fromMs: number, toMs: number, capacityPrefix: string, overloadPrefix: string): Promise<ExportCheck> {
  const check: ExportCheck = {
    status: 0,
    lines: 0,
    ms: 0,
    bytes: 0,
    foreign: 0,
    foreignSamples: [],
    unparseable: 0,
    duplicatedIds: 0,
    duplicateSamples: [],
    seenCapacity: new ByteArray(),
    seenOverload: new ByteArray(),
    error: undefined,
    progressMs: [],
  }
  const foreignSeen = new Map<string, number>()
  const t0 = performance.now()
  const agent = new http.Agent({ keepAlive: false })
  try {
    await new Promise<void>((resolve, reject) => {
      const req = http.request({
        host: base.hostname,
        port: base.port,
        method: 'GET',
        path: `/v1/export?format=ndjson&from=${fromMs}&to=${toMs}`,
        headers: { authorization: `Bearer ${token}` },
        agent,
      })
      const timer = setTimeout(() => req.destroy(new Error(`export not finished within ${exportTimeoutMs} ms`)), exportTimeoutMs)
      req.on('error', (err) => {
        clearTimeout(timer)
        reject(err)
      })
      req.on('response', (res) => {
        check.status = res.statusCode ?? 0
        if (check.status !== 200) {
          let text = ''
          res.setEncoding('utf8')
          res.on('data', (c: string) => (text += c))
          res.on('end', () => {
            clearTimeout(timer)
            reject(new Error(`export answered ${check.status}: ${clip(text)}`))
          })
          return
        }
        res.on('data', (c: Buffer) => (check.bytes += c.length))
        const lines = createInterface({ input: res, crlfDelay: Infinity })
        lines.on('line', (line) => {
          if (line === '') return
          check.lines++
          if (check.lines % exportProgressLines === 0) check.progressMs.push(performance.now() - t0)
          // Every line starts with event_id (EXPORT_COLUMNS' first): read it without parsing
          // the whole line unless it holds an escape; anything else goes through JSON.parse.
          let id: unknown
          const end = line.startsWith(ID_HEAD) ? line.indexOf('"', ID_HEAD.length) : -1
          const fast = end > 0 ? line.slice(ID_HEAD.length, end) : undefined
          if (fast !== undefined && !fast.includes('\\')) id = fast
          else {
            try {
              id = (JSON.parse(line) as { event_id?: unknown }).event_id
            } catch {
              id = undefined
            }
          }
          if (typeof id !== 'string') {
            check.unparseable++
            return
          }
          const count = (seen: ByteArray, prefix: string): boolean => {
            if (!id.startsWith(prefix)) return false
            const n = Number(id.slice(prefix.length))
            if (!Number.isSafeInteger(n) || n < 0) return false
            seen.increment(n)
            if (seen.get(n) === 2) {
              check.duplicatedIds++
              if (check.duplicateSamples.length < samplesMax) check.duplicateSamples.push(id)
            }
            return true
          }
          if (count(check.seenOverload, overloadPrefix) || count(check.seenCapacity, capacityPrefix)) return
          check.foreign++
          if (check.foreignSamples.length < samplesMax) check.foreignSamples.push(id)
          const k = (foreignSeen.get(id) ?? 0) + 1
          foreignSeen.set(id, k)
          if (k === 2) check.duplicatedIds++
        })
        res.on('error', (err) => {
          clearTimeout(timer)
          reject(err)
        })
        res.on('close', () => {
          if (!res.complete) {
            clearTimeout(timer)
            reject(new Error('export broken off mid-stream'))
          }
        })
        lines.on('close', () => {
          clearTimeout(timer)
          resolve()
        })
      })
      req.end()
    })
  } catch (err) {
    check.error = err instanceof Error ? err.message : String(err)
  } finally {
    agent.destroy()
  }
  check.ms = performance.now() - t0
  return check
}

// ---------------------------------------------------------------------------- main

interface Tokens {
  ingest: string
  query: string
  admin: string
}

const bearer = (token: string): Record<string, string> => ({ authorization: `Bearer ${token}` })

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
    const gen = new OverloadGenerator(new BatchFactory(overloadRunId, opts.batch), base, { ...bearer(tokens.ingest), 'content-type': 'application/json' }, rate, opts.timeoutMs, inflight)
    const queries = new QueryClients(base, bearer(tokens.query), queryKinds(runStartMs))
    const sampler = new Sampler(server, status)
    const eld = monitorEventLoopDelay({ resolution: 10 })
    const genCpu0 = process.cpuUsage()
    eld.enable()
    sampler.start()
    const prober = new HealthzProber(server.url, opts.healthzMs, false)
    const proberKeepAlive = new HealthzProber(server.url, opts.healthzMs, true)
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
