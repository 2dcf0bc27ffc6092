// Proves that slow uploaders lose their own slots, not everyone else's
// (issue 23, item 3), with real sockets trickling bytes at a listening app:
// - one client (here: one address, auth off) holds at most
//   TOKENLEDGER_MAX_INGEST_INFLIGHT_PER_CLIENT (set here to half of a global
//   bound of 32, the sizes this attack was found with) ingest requests; past it 429
//   TL_CLIENT_BUSY with Retry-After at once, so 32 bodies at 1 byte/s no
//   longer fill the global TOKENLEDGER_MAX_INGEST_INFLIGHT of 32;
// - another client's ingest is accepted meanwhile;
// - a body slower than TOKENLEDGER_MIN_BODY_RATE after the grace is cut off
//   with 408 TL_SLOW_BODY and its connection closed, nothing stored, and its
//   slot given back; a body at a decent rate is not;
// - with auth on, a client is its token wherever it connects from: one token
//   trickling from four addresses holds one share of the slots, not four.

import assert from 'node:assert/strict'
import { once } from 'node:events'
import { connect, type Socket } from 'node:net'
import { PassThrough } from 'node:stream'
import { test } from 'node:test'
import { setTimeout as delay } from 'node:timers/promises'
import { rateGuard } from '../src/plugins/uploads.js'
import { build, event } from './helper.js'

interface Slow {
  socket: Socket
  /** What the server has sent so far. */
  received(): string
  /** Resolves with everything the server sent, once it closes the connection (or after 15 s). */
  answer: Promise<string>
  stop(): void
}

/** A POST /v1/events from `localAddress` whose body (`body`) is sent one byte every `everyMs` (with `token` as its bearer token). */
async function trickle(port: number, localAddress: string, body: string, everyMs: number, token?: string): Promise<Slow> {
  const socket = connect({ port, host: '127.0.0.1', localAddress })
  await once(socket, 'connect')
  let data = ''
  socket.on('data', (b: Buffer) => (data += b.toString()))
  socket.on('error', () => undefined)
  const auth = token === undefined ? '' : `Authorization: Bearer ${token}\r\n`
  socket.write(`POST /v1/events HTTP/1.1\r\nHost: x\r\n${auth}Content-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n`)
  let stopped = false
  void (async () => {
    for (let i = 0; i < body.length && !stopped && !socket.destroyed; i++) {
      socket.write(body[i]!)
      await delay(everyMs)
    }
  })()
  const answer = Promise.race([once(socket, 'close'), delay(15_000)]).then(() => data)
  return {
    socket,
    received: () => data,
    answer,
    stop() {
      stopped = true
      socket.destroy()
    },
  }
}

test('32 bodies at 10 bytes/s from one client: 16 (half the slots) are held then cut off with 408, 16 refused 429 at once, other clients ingest', async (t) => {
  const { app } = await build(t, { TOKENLEDGER_MIN_BODY_RATE: '1KiB', TOKENLEDGER_BODY_RATE_GRACE: '1s', TOKENLEDGER_MAX_INGEST_INFLIGHT: '32', TOKENLEDGER_MAX_INGEST_INFLIGHT_PER_CLIENT: '16' })
  await app.listen({ host: '127.0.0.1', port: 0 })
  const { port } = app.server.address() as { port: number }
  const body = JSON.stringify({ events: [event({ event_id: 'slow-body' })] })
  const slow: Slow[] = []
  t.after(() => slow.forEach((s) => s.stop()))
  const started = Date.now()
  for (let i = 0; i < 32; i++) slow.push(await trickle(port, '127.0.0.2', body, 100))

  // Another gateway (another address) is served while they trickle.
  const other = await fetch(`http://127.0.0.1:${port}/v1/events`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ events: [event({ event_id: 'fast-body' })] }) })
  assert.equal(other.status, 200, await other.clone().text())
  assert.equal(((await other.json()) as { accepted: number }).accepted, 1)

  const answers = await Promise.all(slow.map((s) => s.answer))
  const tookMs = Date.now() - started
  const lines = answers.map((a) => a.split('\r\n')[0])
  const busy = answers.filter((a) => /^HTTP\/1\.1 429/.test(a))
  const cut = answers.filter((a) => /^HTTP\/1\.1 408/.test(a))
  assert.equal(busy.length, 16, lines.join(' | '))
  assert.equal(cut.length, 16, lines.join(' | '))
  for (const a of busy) {
    assert.match(a, /retry-after: 1/i)
    assert.match(a, /TL_CLIENT_BUSY/)
  }
  for (const a of cut) assert.match(a, /TL_SLOW_BODY.*below the minimum of 1024/)
  // The body was 200+ bytes at 10 bytes/s (20+ s to send): cut off after the 1 s grace, well before.
  assert.ok(tookMs < 6_000, `the slow bodies were answered after ${tookMs} ms`)
  for (let i = 0; i < 100 && app.ingestInflight() > 0; i++) await delay(10)
  assert.equal(app.ingestInflight(), 0, 'every slot is given back')
  assert.equal((await app.inject({ url: '/v1/events/slow-body' })).statusCode, 404, 'nothing of a cut-off body is stored')
})

test('with auth on, one token from four addresses holds one per-client share (8 of 32 bodies), the rest 429; another token ingests', async (t) => {
  const slowToken = 's'.repeat(40)
  const otherToken = 'o'.repeat(40)
  const { app } = await build(t, {
    TOKENLEDGER_INGEST_TOKENS: `${slowToken},${otherToken}`,
    TOKENLEDGER_MIN_BODY_RATE: '1KiB',
    TOKENLEDGER_BODY_RATE_GRACE: '1s',
    TOKENLEDGER_MAX_INGEST_INFLIGHT: '32',
    TOKENLEDGER_MAX_INGEST_INFLIGHT_PER_CLIENT: '8',
  })
  await app.listen({ host: '127.0.0.1', port: 0 })
  const { port } = app.server.address() as { port: number }
  const body = JSON.stringify({ events: [event({ event_id: 'slow-token-body' })] })
  const slow: Slow[] = []
  t.after(() => slow.forEach((s) => s.stop()))
  for (let i = 0; i < 32; i++) slow.push(await trickle(port, `127.0.0.${2 + (i % 4)}`, body, 100, slowToken))

  const other = await fetch(`http://127.0.0.1:${port}/v1/events`, { method: 'POST', headers: { 'content-type': 'application/json', authorization: `Bearer ${otherToken}` }, body: JSON.stringify({ events: [event({ event_id: 'other-token-body' })] }) })
  assert.equal(other.status, 200, await other.clone().text())

  const answers = await Promise.all(slow.map((s) => s.answer))
  const lines = answers.map((a) => a.split('\r\n')[0])
  assert.equal(answers.filter((a) => /^HTTP\/1\.1 429/.test(a)).length, 24, lines.join(' | '))
  assert.equal(answers.filter((a) => /^HTTP\/1\.1 408/.test(a)).length, 8, lines.join(' | '))
  for (let i = 0; i < 100 && app.ingestInflight() > 0; i++) await delay(10)
  assert.equal(app.ingestInflight(), 0, 'every slot is given back')
})

test('a body sent at a decent rate past the grace is taken', async (t) => {
  const { app } = await build(t, { TOKENLEDGER_MIN_BODY_RATE: '100', TOKENLEDGER_BODY_RATE_GRACE: '200ms' })
  await app.listen({ host: '127.0.0.1', port: 0 })
  const { port } = app.server.address() as { port: number }
  // About 250 bytes at 1 byte / 4 ms: 250 bytes/s for about a second, above the 100 bytes/s floor.
  const s = await trickle(port, '127.0.0.3', JSON.stringify({ events: [event({ event_id: 'steady-body' })] }), 4)
  t.after(() => s.stop())
  for (let i = 0; i < 1000 && !/\r\n\r\n\{/.test(s.received()); i++) await delay(10)
  assert.match(s.received(), /^HTTP\/1\.1 200/, s.received())
  assert.match(s.received(), /"accepted":1/)
  assert.equal((await app.inject({ url: '/v1/events/steady-body' })).statusCode, 200)
})

test('a body nobody reads (a 415, an answer sent early) is never failed by the guard: no uncaught error, no timer left', async () => {
  const source = new PassThrough()
  let slow = 0
  const guard = rateGuard(source, 1024, 100, () => slow++)
  source.write('x') // then nothing: far below the rate, but nobody reads guard.body either
  const uncaught: unknown[] = []
  const onUncaught = (err: unknown) => uncaught.push(err)
  process.on('uncaughtException', onUncaught)
  await delay(700)
  process.off('uncaughtException', onUncaught)
  assert.deepEqual(uncaught, [])
  assert.equal(slow, 0)
  assert.equal(guard.body.destroyed, false)
  guard.done()
  source.destroy()
})
