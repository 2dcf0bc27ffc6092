// A /healthz prober thread of bench/overload.ts (started by ./healthz.ts): its own event
// loop, so the load generator's lag does not count against the server. Two modes:
// - new connection per probe, as a load balancer's check makes; a probe unanswered
//   within timeoutMs is a failure and its socket is destroyed (its latency is then
//   censored at timeoutMs);
// - keepAlive: one kept-alive connection, probes queued on it in order; none is
//   destroyed, so every latency is the real one (a stall shows in full), and a probe
//   answered later than timeoutMs is a failure.
// Both schedule probes open loop from the worker's clock; latency is from the scheduled
// time. Posts `ready` once running, then [scheduledAbsMs, latencyMs, ok, status]
// quadruples (status 0 = no answer) every second, and once more when told to stop.
import http from 'node:http'
import { parentPort, workerData } from 'node:worker_threads'
import type { HealthzFromWorker, HealthzToWorker, HealthzWorkerData } from './healthz.js'

/** How often results are posted to the bench's thread. */
const flushIntervalMs = 1_000
/** After `stop`: extra wait beyond the probe timeout for the probes still out. */
const stopGraceMs = 1_000

if (!parentPort) throw new Error('healthz worker: not started as a worker thread')
const port = parentPort
const post = (m: HealthzFromWorker): void => port.postMessage(m)

const { url, intervalMs, timeoutMs, outstandingMax, keepAlive } = workerData as HealthzWorkerData
const base = new URL(url)
const agent = keepAlive ? new http.Agent({ keepAlive: true, maxSockets: 1 }) : false
const now = (): number => performance.timeOrigin + performance.now()
const t0 = now()
let n = 0
let outstanding = 0
let skipped = 0
let stopped = false
let timer: NodeJS.Timeout | undefined
let out: number[] = []

const flush = (): void => {
  if (out.length === 0) return
  post({ kind: 'results', results: out, skipped })
  out = []
}

const probe = (due: number): Promise<void> =>
  new Promise((resolve) => {
    outstanding++
    let recorded = false
    let closed = false
    const record = (ok: boolean, status: number): void => {
      if (recorded) return
      recorded = true
      const ms = now() - due
      out.push(due, ms, ok && ms <= timeoutMs ? 1 : 0, status)
    }
    const close = (): void => {
      if (closed) return
      closed = true
      clearTimeout(t)
      outstanding--
      resolve()
    }
    const req = http.request({ host: base.hostname, port: base.port, path: '/healthz', method: 'GET', agent })
    const t = keepAlive
      ? undefined
      : setTimeout(() => {
          record(false, 0)
          req.destroy(new Error('timeout'))
        }, timeoutMs)
    req.on('error', () => {
      record(false, 0)
      close()
    })
    req.on('response', (res) => {
      res.resume()
      res.on('end', () => {
        record(res.statusCode === 200, res.statusCode ?? 0)
        close()
      })
      res.on('error', () => {
        record(false, 0)
        close()
      })
    })
    req.end()
  })

const pending = new Set<Promise<void>>()
const tick = (): void => {
  while (!stopped && t0 + n * intervalMs <= now()) {
    const due = t0 + n * intervalMs
    n++
    if (outstanding >= outstandingMax) {
      skipped++
      continue
    }
    const p = probe(due)
    pending.add(p)
    void p.then(() => pending.delete(p))
  }
  if (!stopped) timer = setTimeout(tick, Math.max(0, t0 + n * intervalMs - now()))
}

const flusher = setInterval(flush, flushIntervalMs)
port.on('message', (m: HealthzToWorker) => {
  if (m.kind !== 'stop') return
  stopped = true
  clearTimeout(timer)
  void Promise.race([Promise.allSettled([...pending]), new Promise((r) => setTimeout(r, timeoutMs + stopGraceMs))]).then(() => {
    clearInterval(flusher)
    flush()
    post({ kind: 'done', skipped, unanswered: pending.size })
    port.close()
  })
})
post({ kind: 'ready' })
tick()
