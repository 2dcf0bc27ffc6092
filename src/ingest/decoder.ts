// Where request bodies are decoded (decode.ts): on ingest worker threads, so
// that the event loop only receives bodies, dedupes and answers, or on the
// event loop itself when no worker is configured (TOKENLEDGER_INGEST_WORKERS=0).
//
// Why: parsing, validating, fingerprinting and encoding cost ~10 µs an event,
// and on the event loop they were what bounded ingest (bench/ingest.ts: the
// loop at 100% while a core stood half idle).
//
// Invariants:
// - A job is answered exactly once: with its result, with the error decode
//   threw (a service error keeps its code and status), or, when its worker
//   dies, with an internal error; the dead worker is replaced.
// - A worker that cannot start (it exits before saying it is ready) is not
//   replaced: its jobs, and every later one, are decoded on the event loop,
//   and the failure is logged. Ingest slows down; it never stops.
// - The bytes of bodies being decoded are bounded (`maxPendingBytes`): past
//   the bound a request is refused with QueueFull (503, Retry-After) before
//   anything is copied to a worker.
// - Each worker's heap is bounded (resourceLimits): a body that would need
//   more kills that worker, fails its jobs and spares the process.
// - Prices: a new table is posted to every worker before any job that names
//   its version (a port delivers in order), and a worker refuses a job naming
//   a version it does not hold; so a body decoded after setPrices returns is
//   priced by the new table, never by a mix.

import { Worker, type WorkerOptions } from 'node:worker_threads'
import { Errors } from '../errors.js'
import { decodeRequest, type BodyFormat, type DecodedRequest, type DecodeOptions } from './decode.js'
import { parsePriceTable, type PriceTable } from '../pricing/table.js'

export interface DecodeJob {
  id: number
  raw: Uint8Array
  format: BodyFormat
  opts: DecodeOptions
}

/** What the event loop posts to a worker: a body to decode, or the price table to use from now on. */
export type WorkerMessage = DecodeJob | { prices: string | null }

/** What a worker is started with. */
export interface WorkerData {
  /** Its OS thread name (at most 15 bytes, Linux's bound). */
  threadName: string
}

export type DecodeReply =
  | { ready: true }
  | { id: number; ok: true; value: DecodedRequest }
  | { id: number; ok: false; error: { name: string; message: string; code: string | null; statusCode: number | null; stack: string | null } }

export interface Decoder {
  /** Worker threads decoding (0: the event loop decodes). */
  readonly workers: number
  decode(raw: Uint8Array, format: BodyFormat, opts: DecodeOptions): Promise<DecodedRequest>
  /** The price table bodies decoded from now on are priced by (null: none). */
  setPrices(table: PriceTable | null): void
  /** Stops the workers; jobs still running are answered with an error. */
  close(): Promise<void>
}

export interface DecoderOptions {
  workers: number
  maxPendingBytes: number
  /** The largest body a worker decodes: its heap bound grows with it. */
  maxBodyBytes: number
  logger: { error(obj: object, msg: string): void }
  /** The module a worker runs (tests: one that fails on purpose); default worker.ts / worker.js. */
  workerModule?: URL
}

export function createDecoder(opts: DecoderOptions): Decoder {
  return opts.workers === 0 ? new InlineDecoder() : new WorkerDecoder(opts)
}

class InlineDecoder implements Decoder {
  readonly workers = 0
  private prices: PriceTable | null = null
  async decode(raw: Uint8Array, format: BodyFormat, opts: DecodeOptions): Promise<DecodedRequest> {
    return decodeRequest(raw, format, opts, this.prices)
  }
  setPrices(table: PriceTable | null): void {
    this.prices = table
  }
  async close(): Promise<void> {}
}

interface Job {
  raw: Uint8Array
  format: BodyFormat
  opts: DecodeOptions
  resolve(value: DecodedRequest): void
  reject(err: Error): void
}

interface Slot {
  worker: Worker
  jobs: Map<number, Job>
  ready: boolean
}

const MIB = 1024 * 1024

/** The worker module beside this one: worker.js once built, worker.ts when running from source under tsx. */
const WORKER_MODULE = new URL(import.meta.url.endsWith('.ts') ? './worker.ts' : './worker.js', import.meta.url)

/** A worker thread running `module`. */
function startWorker(module: URL, options: WorkerOptions): Worker {
  if (!module.pathname.endsWith('.ts')) return new Worker(module, options)
  // From source (tests, `tsx src/server.ts`): Node 20 does not run the parent's
  // --import in a worker, so the worker registers tsx itself before loading.
  const tsx = import.meta.resolve('tsx/esm/api')
  return new Worker(`import(${JSON.stringify(tsx)}).then((m) => { m.register(); return import(${JSON.stringify(module.href)}) })`, { ...options, eval: true })
}

class WorkerDecoder implements Decoder {
  readonly workers: number
  private readonly slots: Slot[] = []
  private nextId = 1
  private pendingBytes = 0
  private closed = false
  /** Decodes on the event loop what no worker can (none started). */
  private readonly inline = new InlineDecoder()
  private prices: PriceTable | null = null

  constructor(private readonly opts: DecoderOptions) {
    this.workers = opts.workers
    for (let i = 0; i < opts.workers; i++) this.slots.push(this.spawn(i))
  }

  decode(raw: Uint8Array, format: BodyFormat, opts: DecodeOptions): Promise<DecodedRequest> {
    if (this.closed) return Promise.reject(new Errors.Draining())
    if (this.slots.length === 0) return this.inline.decode(raw, format, opts)
    if (this.pendingBytes + raw.byteLength > this.opts.maxPendingBytes) return Promise.reject(new Errors.QueueFull())
    // The least busy worker gets a copy of the body (the job keeps the original,
    // to decode it here should the worker turn out unable to start).
    let slot = this.slots[0]!
    for (const s of this.slots) if (s.jobs.size < slot.jobs.size) slot = s
    const id = this.nextId++
    opts = { ...opts, pricesVersion: this.prices?.version ?? null }
    const copy = new Uint8Array(raw)
    return new Promise<DecodedRequest>((resolve, reject) => {
      this.pendingBytes += raw.byteLength
      slot.jobs.set(id, { raw, format, opts, resolve, reject })
      const job: DecodeJob = { id, raw: copy, format, opts }
      slot.worker.postMessage(job, [copy.buffer])
    })
  }

  setPrices(table: PriceTable | null): void {
    this.prices = table
    this.inline.setPrices(table)
    for (const slot of this.slots) slot.worker.postMessage({ prices: table?.canonical ?? null } satisfies WorkerMessage)
  }

  async close(): Promise<void> {
    if (this.closed) return
    this.closed = true
    await Promise.all(
      [...this.slots].map(async (slot) => {
        await slot.worker.terminate()
        this.failAll(slot, new Error('ingest worker stopped'))
      }),
    )
  }

  private spawn(i: number): Slot {
    const worker = startWorker(this.opts.workerModule ?? WORKER_MODULE, {
      name: `ingest-${i}`,
      workerData: { threadName: `tl-ingest-${i}` } satisfies WorkerData,
      resourceLimits: { maxOldGenerationSizeMb: Math.max(256, Math.ceil((32 * this.opts.maxBodyBytes) / MIB)) },
    })
    const slot: Slot = { worker, jobs: new Map(), ready: false }
    if (this.prices) worker.postMessage({ prices: this.prices.canonical } satisfies WorkerMessage)
    worker.on('message', (reply: DecodeReply) => {
      if ('ready' in reply) {
        slot.ready = true
        return
      }
      const job = slot.jobs.get(reply.id)
      if (!job) return
      slot.jobs.delete(reply.id)
      this.pendingBytes -= job.raw.byteLength
      if (reply.ok) job.resolve(reply.value)
      else job.reject(rebuildError(reply.error))
    })
    worker.on('error', (err) => this.opts.logger.error({ err, worker: i }, 'ingest worker failed'))
    worker.on('exit', (code) => {
      const index = this.slots.indexOf(slot)
      if (index !== -1) this.slots.splice(index, 1)
      if (this.closed) return this.failAll(slot, new Error('ingest worker stopped'))
      if (!slot.ready) {
        // It never started: nothing of a job caused this. Decode them here, and from now on.
        this.opts.logger.error({ worker: i, code }, 'ingest worker could not start; its bodies are decoded on the event loop')
        for (const job of slot.jobs.values()) {
          this.pendingBytes -= job.raw.byteLength
          this.inline.decode(job.raw, job.format, job.opts).then(job.resolve, job.reject)
        }
        slot.jobs.clear()
        return
      }
      this.failAll(slot, new Error(`ingest worker ${i} exited (code ${code})`))
      this.opts.logger.error({ worker: i, code }, 'ingest worker exited; starting another')
      this.slots.push(this.spawn(i))
    })
    return slot
  }

  private failAll(slot: Slot, err: Error): void {
    for (const job of slot.jobs.values()) {
      this.pendingBytes -= job.raw.byteLength
      job.reject(err)
    }
    slot.jobs.clear()
  }
}

/** A worker's price table, compiled from the canonical text the event loop posts (null: none). */
export function compilePosted(canonical: string | null): PriceTable | null {
  if (canonical === null) return null
  const res = parsePriceTable(JSON.parse(canonical))
  if (!res.ok) throw new Error(`ingest worker: the posted price table does not compile: ${JSON.stringify(res.errors.slice(0, 3))}`)
  return res.table
}

/** A worker's answer to a job: the decoded request, or what decode threw (code, status, message). */
export function answerJob(job: DecodeJob, prices: PriceTable | null = null): DecodeReply {
  try {
    const held = prices?.version ?? null
    if (job.opts.pricesVersion !== undefined && job.opts.pricesVersion !== held) {
      throw new Error(`invariant: the body names price table ${job.opts.pricesVersion}, this worker holds ${held}`)
    }
    return { id: job.id, ok: true, value: decodeRequest(job.raw, job.format, job.opts, prices) }
  } catch (err) {
    const e = err as Error & { code?: unknown; statusCode?: unknown }
    return {
      id: job.id,
      ok: false,
      error: { name: e.name, message: String(e.message), code: typeof e.code === 'string' ? e.code : null, statusCode: typeof e.statusCode === 'number' ? e.statusCode : null, stack: e.stack ?? null },
    }
  }
}

/** The worker's error as the event loop throws it: a service error keeps its code and status (400, 413). */
function rebuildError(e: Extract<DecodeReply, { ok: false }>['error']): Error {
  const err = new Error(e.message) as Error & { code?: string; statusCode?: number }
  err.name = e.name
  if (e.code !== null && e.code.startsWith('TL_')) {
    err.code = e.code
    if (e.statusCode !== null) err.statusCode = e.statusCode
  }
  if (e.stack !== null) err.stack = e.stack
  return err
}
