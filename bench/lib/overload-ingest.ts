// The open-loop ingest generator of bench/overload.ts's overload phase: a fresh batch on
// a fixed schedule whatever the answers do, nothing retried, each request bounded by the
// client timeout, at most `inflightMax` on the wire. It books what each event's request
// got (its state, by event number) and per-second counters for the over-time table.
import http from 'node:http'
import type { BatchFactory } from './events.js'
import { httpCall, NoAnswer, type Answer } from './http-call.js'
import { addCount, ByteArray, clip, nowAbsMs, samplesMax } from './overload-common.js'

/** What the bench knows about one event of the overload phase, by what its request got. */
export const S = {
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
export const STATE_NAMES = ['unsent', 'on the wire', 'accepted', 'duplicate', 'refused in a 2xx', 'unreadable 2xx', '503', '429', 'other status', 'client timeout', 'socket error']
export const isAcked = (s: number): boolean => s === S.accepted || s === S.duplicate

interface IngestAnswerBody {
  accepted?: unknown
  duplicates?: unknown
  conflicts?: unknown
  rejected?: unknown
  results?: unknown
}

/** Per-second counters of the overload phase (by answer time, since the load started). */
export interface Second {
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

export interface OverloadIngest {
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

export class OverloadGenerator {
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
