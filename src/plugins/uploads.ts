// Slow uploaders as a named plugin: an ingest body must keep arriving at
// config.minBodyBytesPerSec (on the wire, averaged from its first byte's
// wait) once config.bodyGraceMs have passed, or it is cut off with
// 408 TL_SLOW_BODY and its connection closed. With the per-client in-flight
// bound (pressure.ts), a client holding bodies open at 1 byte/s loses its
// slots within the grace, instead of every other gateway losing theirs for as
// long as it likes (TOKENLEDGER_REQUEST_TIMEOUT bounds the whole request too).
//
// Invariant: nothing of a cut-off body reaches the decoder: the stream the
// body parser reads fails, so the request is answered before any parsing.

import { PassThrough, type Readable } from 'node:stream'
import fp from 'fastify-plugin'
import { Errors } from '../errors.js'

/** How often a body's rate is checked: a slow body is cut off at most this long after it falls behind. */
const CHECK_EVERY_MS = 250

/**
 * `payload` through a pass-through that fails with TL_SLOW_BODY when fewer
 * than `minBytesPerSec` × elapsed seconds have arrived after `graceMs`.
 * `onSlow` runs first (to close the connection after the answer). The guard
 * stops when the body has arrived, when `done` is called (the answer went out,
 * read or not: a 415 never reads its body), and never fails a stream nobody
 * reads. A check that runs late (the event loop was busy, so arrived bytes
 * may not be counted yet) judges nothing: the server's stall is not the
 * client's.
 */
export function rateGuard(payload: Readable, minBytesPerSec: number, graceMs: number, onSlow: () => void, nowMs: () => number = () => performance.now()): { body: Readable; done: () => void } {
  const out = new PassThrough()
  let bytes = 0
  const startedMs = nowMs()
  let checkedMs = startedMs
  payload.on('data', (chunk: Buffer) => (bytes += chunk.length))
  const timer = setInterval(() => {
    const now = nowMs()
    const late = now - checkedMs > 2 * CHECK_EVERY_MS
    checkedMs = now
    const elapsedMs = now - startedMs
    if (late || elapsedMs < graceMs || bytes >= (minBytesPerSec * elapsedMs) / 1000) return
    stop()
    if (out.readableFlowing !== true) return // nobody reads this body: nothing to fail
    onSlow()
    payload.unpipe(out)
    payload.pause()
    out.destroy(new Errors.SlowBody(Math.floor((bytes * 1000) / elapsedMs), minBytesPerSec))
  }, CHECK_EVERY_MS)
  timer.unref()
  const stop = () => clearInterval(timer)
  payload.once('end', stop)
  payload.once('close', stop)
  payload.once('error', (err) => {
    stop()
    if (out.readableFlowing === true) out.destroy(err)
  })
  out.once('close', stop)
  payload.pipe(out)
  return { body: out, done: stop }
}

export default fp(
  async (app) => {
    const { config } = app
    if (config.minBodyBytesPerSec === 0) return
    app.addHook('preParsing', async (request, reply, payload) => {
      if (request.routeOptions.config.scope !== 'ingest') return payload
      const guard = rateGuard(payload, config.minBodyBytesPerSec, config.bodyGraceMs, () => {
        reply.header('connection', 'close')
        request.log.warn({ principal: request.principal?.id, ip: request.ip }, 'ingest body too slow: cut off')
      })
      reply.raw.once('close', guard.done)
      return guard.body
    })
  },
  { name: 'tokenledger-uploads', dependencies: ['tokenledger-auth'] },
)
