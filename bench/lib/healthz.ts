// The /healthz probers of bench/overload.ts: each a worker thread (./healthz-worker.ts,
// its own event loop, so the load generator's lag does not count against the server)
// probing on a new connection per probe, or on one kept-alive connection. The messages
// between the two threads are typed here; the worker imports them as types only.
import { Worker, type WorkerOptions } from 'node:worker_threads'
import { int, percentile } from './report.js'
import { ms1, pct, sleep } from './overload-common.js'

export const healthzTimeoutMs = 2_000
/** Most /healthz probes outstanding at once (2 s worth at the default interval). */
export const healthzOutstandingMax = 40
/** Bound on the worker's start (it loads tsx first when run from source). */
const startTimeoutMs = 60_000
/** After `stop`: how long to wait for the worker's last results beyond the probe timeout. */
const stopGraceMs = 10_000

/** The worker's `workerData`. */
export interface HealthzWorkerData {
  url: string
  intervalMs: number
  timeoutMs: number
  outstandingMax: number
  keepAlive: boolean
}

export type HealthzToWorker = { kind: 'stop' }

export type HealthzFromWorker =
  | { kind: 'ready' }
  /** Flat [scheduledAbsMs, latencyMs, ok (1/0), status (0 = no answer)] quadruples; probes not sent so far. */
  | { kind: 'results'; results: number[]; skipped: number }
  | { kind: 'done'; skipped: number; unanswered: number }

/** The worker module beside this one: healthz-worker.js once built, healthz-worker.ts when running from source under tsx. */
const WORKER_MODULE = new URL(import.meta.url.endsWith('.ts') ? './healthz-worker.ts' : './healthz-worker.js', import.meta.url)

/** As src/ingest/decoder.ts starts its workers. */
function startWorker(module: URL, options: WorkerOptions): Worker {
  if (!module.pathname.endsWith('.ts')) return new Worker(module, options)
  // From source (`tsx bench/overload.ts`): Node 20 does not run the parent's --import in
  // a worker, so the worker registers tsx itself before loading.
  const tsx = import.meta.resolve('tsx/esm/api')
  return new Worker(`import(${JSON.stringify(tsx)}).then((m) => { m.register(); return import(${JSON.stringify(module.href)}) })`, { ...options, eval: true })
}

interface HealthzProbe {
  atAbs: number
  latencyMs: number
  ok: boolean
  status: number
}

export class HealthzProber {
  readonly probes: HealthzProbe[] = []
  skipped = 0
  private readonly worker: Worker
  private readonly ready: Promise<void>
  private readonly finished: Promise<void>

  /** Starts a prober and resolves once its worker runs (probing from then on). */
  static async start(url: string, intervalMs: number, keepAlive: boolean): Promise<HealthzProber> {
    const p = new HealthzProber(url, intervalMs, keepAlive)
    let timer: NodeJS.Timeout | undefined
    const timeout = new Promise<'timeout'>((resolve) => (timer = setTimeout(() => resolve('timeout'), startTimeoutMs)))
    const first = await Promise.race([p.ready.then(() => 'ready' as const), timeout]).finally(() => clearTimeout(timer))
    if (first === 'timeout') {
      await p.worker.terminate()
      throw new Error(`a /healthz prober did not start within ${startTimeoutMs} ms`)
    }
    return p
  }

  private constructor(url: string, intervalMs: number, keepAlive: boolean) {
    const workerData: HealthzWorkerData = { url, intervalMs, timeoutMs: healthzTimeoutMs, outstandingMax: healthzOutstandingMax, keepAlive }
    this.worker = startWorker(WORKER_MODULE, { name: keepAlive ? 'healthz-keepalive' : 'healthz', workerData })
    let onReady: () => void = () => undefined
    let onStartFailed: (err: Error) => void = () => undefined
    this.ready = new Promise((resolve, reject) => {
      onReady = resolve
      onStartFailed = reject
    })
    this.finished = new Promise((resolve, reject) => {
      this.worker.on('message', (m: HealthzFromWorker) => {
        if (m.kind === 'ready') return onReady()
        if (m.kind === 'results') {
          const xs = m.results
          for (let i = 0; i + 3 < xs.length; i += 4) this.probes.push({ atAbs: xs[i]!, latencyMs: xs[i + 1]!, ok: xs[i + 2] === 1, status: xs[i + 3]! })
        }
        this.skipped = m.skipped
        if (m.kind === 'done') resolve()
      })
      this.worker.on('error', (err) => {
        onStartFailed(err)
        reject(err)
      })
      this.worker.on('exit', (code) => {
        onStartFailed(new Error(`a /healthz prober exited (code ${code}) before it started`))
        resolve()
      })
    })
    // Rejections are read by start() and stop(); these keep an early one from going unhandled.
    this.ready.catch(() => undefined)
    this.finished.catch(() => undefined)
  }

  async stop(): Promise<void> {
    this.worker.postMessage({ kind: 'stop' } satisfies HealthzToWorker)
    await Promise.race([this.finished, sleep(healthzTimeoutMs + stopGraceMs)])
    await this.worker.terminate()
  }
}

/** `n probes: p50, p99, max; failures (timeouts, non-200); not sent`. */
export function healthzText(p: HealthzProber): string {
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
