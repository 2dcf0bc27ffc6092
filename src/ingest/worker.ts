// An ingest worker thread: decodes request bodies (decode.ts) for the event
// loop, one at a time, and posts back each result or the error's code, status
// and message (answerJob). Started and replaced by decoder.ts.

import { writeFileSync } from 'node:fs'
import { parentPort, workerData } from 'node:worker_threads'
import { answerJob, type DecodeJob, type DecodeReply, type WorkerData } from './decoder.js'

if (!parentPort) throw new Error('ingest worker: not started as a worker thread')
const port = parentPort

// The thread takes its name (Linux), so that per-thread CPU readings (top -H,
// the ingest bench) tell the decode workers from the event loop and DuckDB's
// threads. Best effort: elsewhere, or refused, the thread keeps its name.
try {
  writeFileSync('/proc/thread-self/comm', (workerData as WorkerData | undefined)?.threadName ?? 'tl-ingest')
} catch {
  // not Linux, or /proc not mounted: nothing depends on the name
}

port.on('message', (job: DecodeJob) => port.postMessage(answerJob(job)))
port.postMessage({ ready: true } satisfies DecodeReply)
