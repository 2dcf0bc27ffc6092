// An ingest worker (as src/ingest/worker.ts) that exits when a body is exactly
// "die": for decoder.test.ts, to prove a worker's death fails only its own jobs.
import { parentPort } from 'node:worker_threads'
import { answerJob, type DecodeJob } from '../../src/ingest/decoder.js'

const port = parentPort!
port.on('message', (job: DecodeJob) => {
  if (Buffer.from(job.raw).toString('utf8') === 'die') process.exit(3)
  port.postMessage(answerJob(job))
})
port.postMessage({ ready: true })
