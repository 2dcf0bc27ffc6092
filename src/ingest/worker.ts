// An ingest worker thread: decodes request bodies (decode.ts) for the event
// loop, one at a time, and posts back each result or the error's code, status
// and message (answerJob); keeps the price table the event loop last posted. Started and replaced by decoder.ts.

import { parentPort } from 'node:worker_threads'
import { answerJob, compilePosted, type DecodeReply, type WorkerMessage } from './decoder.js'
import type { PriceTable } from '../pricing/table.js'

if (!parentPort) throw new Error('ingest worker: not started as a worker thread')
const port = parentPort
let prices: PriceTable | null = null

port.on('message', (msg: WorkerMessage) => {
  if ('prices' in msg) prices = compilePosted(msg.prices)
  else port.postMessage(answerJob(msg, prices))
})
port.postMessage({ ready: true } satisfies DecodeReply)
