// Closed-loop load with autocannon, plus the bookkeeping that lets the bench check
// exactly-once ingest afterwards.
//
// Each connection sends one request at a time (no pipelining); each request is a fresh
// batch built in `setupRequest`. autocannon keeps one context object per request (it
// resets the context before building the next one), so the batch number travels from
// `setupRequest` to `onResponse` through it.
//
// The ledger keeps every batch that was sent and not yet answered. When autocannon stops
// (end of a phase) or reconnects after a timeout, the request on the wire is dropped
// without an answer: the server may or may not have committed it. Those batches stay
// "in flight" and are resent verbatim afterwards (`resendInFlight`): a correct server
// answers `duplicate` for what it had stored and `accepted` for the rest, so the number
// of events it must hold is exactly known.
//
// `startOpenLoop` is the other shape of load: batches sent on a fixed schedule
// whatever the answers do (open loop, as gateways send), each latency measured from the
// batch's scheduled time, so a stalled server shows as latency rather than as fewer
// requests (no coordinated omission). Its unanswered batches join the same ledger.
import autocannon from 'autocannon'
import type { BatchTotals } from './events.js'

const requestTimeoutS = 10
const resendTimeoutMs = 30_000
const samplesMax = 5
const sampleCharsMax = 300
/** Open loop: most batches on the wire at once; past it a due batch is not sent (and counted). */
const openLoopOutstandingMax = 1_000
/** Open loop: how long stop() waits for the batches still on the wire. */
const openLoopDrainMs = 30_000

interface BatchContext {
  batchNo?: number
}

export interface IngestAnswer {
  accepted: number
  duplicates: number
  conflicts: number
  rejected: number
}

/** Counters for one load phase (warm-up or measured). */
export interface PhaseStats {
  responses2xx: number
  eventsAccepted: number
  /** 2xx answers whose `accepted` was not the batch size (fresh ids: it must be). */
  mismatches: number
  mismatchSamples: string[]
  non2xxByStatus: Record<string, number>
  non2xxSamples: string[]
  /** Time spent building bodies in setupRequest, to show the generator is not the limit. */
  buildMs: number
  built: number
}

export interface PhaseResult {
  stats: PhaseStats
  result: autocannon.Result
  /** CPU (user + system) the load generator used during the phase, in seconds. */
  generatorCpuS: number
}

/** What one open-loop phase sent and how it was answered. */
export interface OpenLoopResult {
  stats: PhaseStats
  durationS: number
  /** Batches due by the schedule. */
  scheduled: number
  /** Due batches not sent because openLoopOutstandingMax were on the wire. */
  skipped: number
  /** Batches without an answer (timeout or network error): left in flight for resendInFlight. */
  unanswered: number
  /** Per answered batch: ms from its scheduled time to its answer, and its scheduled time (ms since the start). */
  latenciesMs: number[]
  scheduledAtMs: number[]
  /** Largest delay between a batch's scheduled time and its send (the generator's own lag). */
  sendLagMsMax: number
  /** Batch numbers answered 2xx with every event accepted: their ids are stored. */
  ackedBatchNos: number[]
}

export interface OpenLoop {
  /** Batch numbers fully accepted so far (live: grows while the loop runs). */
  ackedBatchNos(): readonly number[]
  /** Stops scheduling, waits (bounded) for the batches on the wire, returns the figures. */
  stop(): Promise<OpenLoopResult>
}

export interface ResendReport {
  batches: number
  accepted: number
  duplicates: number
  /** Problems: non-2xx, conflicts, rejected, or accepted + duplicates ≠ batch size. */
  failures: string[]
}

function newPhaseStats(): PhaseStats {
  return {
    responses2xx: 0,
    eventsAccepted: 0,
    mismatches: 0,
    mismatchSamples: [],
    non2xxByStatus: {},
    non2xxSamples: [],
    buildMs: 0,
    built: 0,
  }
}

function clip(text: string): string {
  return text.length > sampleCharsMax ? `${text.slice(0, sampleCharsMax)}…` : text
}

/** What a ledger posts: bodies of fresh events per batch number, and their exact totals per template. */
export interface BodyFactory {
  readonly batchSize: number
  templateOf(batchNo: number): number
  totalsOf(template: number): BatchTotals
  build(batchNo: number, timestampMs: number): string | Buffer
}

/** Where a ledger posts and how it reads the answers: the native route by default. */
export interface Door {
  path: string
  contentType: string
  /** The per-event outcome counts of a 2xx answer body; undefined if unreadable. */
  parse(body: string, batchSize: number): IngestAnswer | undefined
}

export const NATIVE_DOOR: Door = { path: '/v1/events', contentType: 'application/json', parse: (body) => parseAnswer(body) }

function parseAnswer(body: string): IngestAnswer | undefined {
  try {
    const v = JSON.parse(body) as Partial<Record<keyof IngestAnswer, unknown>>
    const { accepted, duplicates, conflicts, rejected } = v
    if (
      typeof accepted !== 'number' ||
      typeof duplicates !== 'number' ||
      typeof conflicts !== 'number' ||
      typeof rejected !== 'number'
    ) {
      return undefined
    }
    return { accepted, duplicates, conflicts, rejected }
  } catch {
    return undefined
  }
}

/**
 * Everything one target was sent and what it acknowledged, across phases.
 * `expectedStored` is the number of events the server must hold once in-flight batches
 * have been resent; `fullBatchesByTemplate` lets the caller compute exact expected sums.
 */
export class IngestLedger {
  readonly factory: BodyFactory
  private nextBatchNo = 0
  private readonly inFlight = new Map<number, string | Buffer>()
  private phase: PhaseStats = newPhaseStats()
  expectedStored = 0
  /** Batches that ended up entirely stored, per template. */
  readonly fullBatchesByTemplate: number[]
  /** Batches acknowledged only in part (then exact sums cannot be predicted). */
  partialBatches = 0

  /** Sent with every request besides the content type (e.g. `authorization`). */
  private readonly headers: Record<string, string>

  constructor(
    factory: BodyFactory,
    templateCount: number,
    headers: Record<string, string> = {},
    private readonly door: Door = NATIVE_DOOR,
  ) {
    this.factory = factory
    this.fullBatchesByTemplate = new Array<number>(templateCount).fill(0)
    this.headers = { ...headers, 'content-type': door.contentType }
  }

  get inFlightCount(): number {
    return this.inFlight.size
  }

  /** Runs one closed-loop phase against `url` + the door's path. */
  async run(url: string, connections: number, durationS: number): Promise<PhaseResult> {
    const stats = newPhaseStats()
    this.phase = stats
    const cpu0 = process.cpuUsage()
    const result = await autocannon({
      url: `${url}${this.door.path}`,
      connections,
      pipelining: 1,
      duration: durationS,
      timeout: requestTimeoutS,
      method: 'POST',
      headers: this.headers,
      requests: [
        {
          method: 'POST',
          setupRequest: (request, context) => {
            const t0 = performance.now()
            const batchNo = this.nextBatchNo++
            const body = this.factory.build(batchNo, Date.now())
            this.inFlight.set(batchNo, body)
            ;(context as BatchContext).batchNo = batchNo
            request.body = body
            stats.buildMs += performance.now() - t0
            stats.built++
            return request
          },
          onResponse: (status, body, context) => {
            const batchNo = (context as BatchContext).batchNo
            if (batchNo === undefined) throw new Error('response without a batch number in its context')
            this.record(status, body, batchNo)
          },
        },
      ],
    })
    const cpu = process.cpuUsage(cpu0)
    return { stats, result, generatorCpuS: (cpu.user + cpu.system) / 1e6 }
  }

  /**
   * Sends a fresh batch every batchSize / eventsPerS seconds to `url` + `/v1/events`
   * until stopped, without waiting for answers (each request has the same timeout as
   * `run`'s). A late timer sends every batch that fell due, so the rate holds.
   */
  startOpenLoop(url: string, eventsPerS: number): OpenLoop {
    if (!(eventsPerS > 0)) throw new RangeError(`events/s must be positive, got ${eventsPerS}`)
    const stats = newPhaseStats()
    this.phase = stats
    const intervalMs = (this.factory.batchSize * 1000) / eventsPerS
    const t0 = performance.now()
    const res: OpenLoopResult = { stats, durationS: 0, scheduled: 0, skipped: 0, unanswered: 0, latenciesMs: [], scheduledAtMs: [], sendLagMsMax: 0, ackedBatchNos: [] }
    const onWire = new Set<Promise<void>>()
    let stopped = false
    let timer: NodeJS.Timeout | undefined

    const send = (dueMs: number): void => {
      const batchNo = this.nextBatchNo++
      const body = this.factory.build(batchNo, Date.now())
      this.inFlight.set(batchNo, body)
      res.sendLagMsMax = Math.max(res.sendLagMsMax, performance.now() - (t0 + dueMs))
      const p = (async () => {
        try {
          const r = await fetch(`${url}${this.door.path}`, {
            method: 'POST',
            headers: this.headers,
            body,
            signal: AbortSignal.timeout(requestTimeoutS * 1000),
          })
          const text = await r.text()
          res.latenciesMs.push(performance.now() - (t0 + dueMs))
          res.scheduledAtMs.push(dueMs)
          if (this.record(r.status, text, batchNo)) res.ackedBatchNos.push(batchNo)
        } catch {
          res.unanswered++ // stays in flight: resendInFlight settles it
        }
      })()
      onWire.add(p)
      void p.finally(() => onWire.delete(p))
    }

    const tick = (): void => {
      const nowMs = performance.now() - t0
      while (!stopped && res.scheduled * intervalMs <= nowMs) {
        const dueMs = res.scheduled * intervalMs
        res.scheduled++
        if (onWire.size >= openLoopOutstandingMax) res.skipped++
        else send(dueMs)
      }
      if (!stopped) timer = setTimeout(tick, Math.max(0, res.scheduled * intervalMs - (performance.now() - t0)))
    }
    tick()

    return {
      ackedBatchNos: () => res.ackedBatchNos,
      stop: async () => {
        stopped = true
        if (timer !== undefined) clearTimeout(timer)
        res.durationS = (performance.now() - t0) / 1000
        await Promise.race([Promise.allSettled([...onWire]), new Promise((r) => setTimeout(r, openLoopDrainMs).unref())])
        return res
      },
    }
  }

  /** Books one answer; true when the whole batch was accepted. */
  private record(status: number, body: string, batchNo: number): boolean {
    this.inFlight.delete(batchNo)
    const stats = this.phase
    const batchSize = this.factory.batchSize
    if (status < 200 || status > 299) {
      stats.non2xxByStatus[status] = (stats.non2xxByStatus[status] ?? 0) + 1
      if (stats.non2xxSamples.length < samplesMax) stats.non2xxSamples.push(`${status} ${clip(body)}`)
      return false
    }
    stats.responses2xx++
    const answer = this.door.parse(body, batchSize)
    if (answer === undefined) {
      stats.mismatches++
      if (stats.mismatchSamples.length < samplesMax) stats.mismatchSamples.push(`unparseable 2xx body: ${clip(body)}`)
      return false
    }
    stats.eventsAccepted += answer.accepted
    this.expectedStored += answer.accepted
    if (answer.accepted === batchSize) {
      this.countFull(batchNo)
      return true
    }
    stats.mismatches++
    this.partialBatches++
    if (stats.mismatchSamples.length < samplesMax) {
      stats.mismatchSamples.push(`batch ${batchNo}: accepted ${answer.accepted} of ${batchSize}: ${clip(body)}`)
    }
    return false
  }

  private countFull(batchNo: number): void {
    const t = this.factory.templateOf(batchNo)
    this.fullBatchesByTemplate[t] = (this.fullBatchesByTemplate[t] ?? 0) + 1
  }

  /**
   * Resends, one at a time, every batch that got no answer, with its original body.
   * Each must come back 2xx with accepted + duplicates = batch size and no conflict.
   */
  async resendInFlight(url: string): Promise<ResendReport> {
    const report: ResendReport = { batches: 0, accepted: 0, duplicates: 0, failures: [] }
    const batchSize = this.factory.batchSize
    for (const [batchNo, body] of [...this.inFlight]) {
      report.batches++
      let status: number
      let text: string
      try {
        ;({ status, text } = await this.resend(url, body))
      } catch (err) {
        report.failures.push(`batch ${batchNo}: ${String(err)}`)
        continue
      }
      this.inFlight.delete(batchNo)
      const answer = status >= 200 && status <= 299 ? this.door.parse(text, batchSize) : undefined
      if (answer === undefined) {
        report.failures.push(`batch ${batchNo}: ${status} ${clip(text)}`)
        continue
      }
      report.accepted += answer.accepted
      report.duplicates += answer.duplicates
      this.expectedStored += answer.accepted + answer.duplicates
      if (answer.conflicts !== 0 || answer.rejected !== 0 || answer.accepted + answer.duplicates !== batchSize) {
        this.partialBatches++
        report.failures.push(`batch ${batchNo}: ${clip(text)}`)
      } else {
        this.countFull(batchNo)
      }
    }
    return report
  }

  /**
   * One resend, retried while the server answers 503 or 429 (which store nothing:
   * "retry after the Retry-After delay"), until resendTimeoutMs has passed. Right
   * after a phase stops the server is still finishing the requests whose connections
   * the generator dropped, and its ingest admission bound can refuse the first
   * resends; counting such a refusal as final would leave a batch that an earlier,
   * unanswered send had stored out of the ledger (seen as "stored +100").
   */
  private async resend(url: string, body: string | Buffer): Promise<{ status: number; text: string }> {
    const deadline = performance.now() + resendTimeoutMs
    for (;;) {
      const res = await fetch(`${url}${this.door.path}`, {
        method: 'POST',
        headers: this.headers,
        body,
        signal: AbortSignal.timeout(Math.max(1, Math.ceil(deadline - performance.now()))),
      })
      const text = await res.text()
      if ((res.status !== 503 && res.status !== 429) || performance.now() >= deadline) return { status: res.status, text }
      const retryAfterS = Number(res.headers.get('retry-after') ?? '1')
      const waitMs = Math.min(Math.max(Number.isFinite(retryAfterS) ? retryAfterS * 1000 : 1000, 50), deadline - performance.now())
      await new Promise((resolve) => setTimeout(resolve, waitMs))
    }
  }

  /** Forgets unanswered batches (for a target whose storage is not checked). */
  dropInFlight(): void {
    this.inFlight.clear()
  }

  /** Exact expected totals, or undefined when some batch was only partly stored. */
  expectedTotals(): BatchTotals | undefined {
    if (this.partialBatches > 0) return undefined
    const sum: BatchTotals = {
      events: 0,
      errors: 0,
      inputTokens: 0n,
      outputTokens: 0n,
      cacheReadTokens: 0n,
      reasoningTokens: 0n,
      costMicros: 0n,
    }
    this.fullBatchesByTemplate.forEach((count, template) => {
      const t = this.factory.totalsOf(template)
      const n = BigInt(count)
      sum.events += t.events * count
      sum.errors += t.errors * count
      sum.inputTokens += t.inputTokens * n
      sum.outputTokens += t.outputTokens * n
      sum.cacheReadTokens += t.cacheReadTokens * n
      sum.reasoningTokens += t.reasoningTokens * n
      sum.costMicros += t.costMicros * n
    })
    return sum
  }
}
