// An ingest worker thread: decodes request bodies (decode.ts) for the event
// loop, one at a time, and posts back each result or the error's code, status
// and message (answerJob); keeps the price table the event loop last posted. Started and replaced by decoder.ts.

import { writeFileSync } from 'node:fs'
import { parentPort, workerData } from 'node:worker_threads'
import { answerJob, compilePosted, type DecodeReply, type WorkerData, type WorkerMessage } from './decoder.js'
import type { PriceTable } from '../pricing/table.js'

if (!parentPort) throw new Error('ingest worker: not started as a worker thread')
const port = parentPort
let prices: PriceTable | null = null

// The thread takes its name (Linux), so that per-thread CPU readings (top -H,
// the ingest bench) tell the decode workers from the event loop and DuckDB's
// threads. Best effort: elsewhere, or refused, the thread keeps its name.
try {
  writeFileSync('/proc/thread-self/comm', (workerData as WorkerData | undefined)?.threadName ?? 'tl-ingest')
} catch {
  // not Linux, or /proc not mounted: nothing depends on the name
}

port.on('message', (msg: WorkerMessage) => {
  if ('prices' in msg) prices = compilePosted(msg.prices)
  else port.postMessage(answerJob(msg, prices))
})
port.postMessage({ ready: true } satisfies DecodeReply)
