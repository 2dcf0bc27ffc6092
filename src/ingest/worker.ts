// An ingest worker thread: decodes request bodies (decode.ts) for the event
// loop, one at a time, and posts back each result or the error's code, status
// and message (answerJob). Started and replaced by decoder.ts.

import { parentPort } from 'node:worker_threads'
import { answerJob, type DecodeJob, type DecodeReply } from './decoder.js'

if (!parentPort) throw new Error('ingest worker: not started as a worker thread')
const port = parentPort

port.on('message', (job: DecodeJob) => port.postMessage(answerJob(job)))
port.postMessage({ ready: true } satisfies DecodeReply)
