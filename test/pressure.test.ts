// Proves backpressure and fail-stop: each overload signal turns ingest into 503
// with Retry-After and /readyz unready, before anything is lost, and clears
// when the condition does:
// - free disk below TOKENLEDGER_MIN_FREE_DISK (the reading injected through the
//   store's file-system seam), which also refuses Parquet exports;
// - a seal backlog past TOKENLEDGER_MAX_PENDING_SEGMENTS;
// - process pressure: past the query thresholds queries are shed while ingest,
//   health and metrics are served; past the ingest thresholds ingest is too;
// - per-token rate limits (429, off by default, never on health; unknown tokens
//   refused before the limiter and never counted);
// - a write failure that invalidates DuckDB: fail-stop, reads still served (or
//   503 TL_STORE_FAILED, never 500), nothing acknowledged lost across a restart;
// - Node's own bounds on request heads (431) and slow heads (408).

import assert from 'node:assert/strict'
import { createServer } from 'node:http'
import { connect } from 'node:net'
import { once } from 'node:events'
import { test } from 'node:test'
import { setTimeout as delay } from 'node:timers/promises'
import type { FastifyInstance, InjectOptions } from 'fastify'
import { chargedBytes } from '../src/plugins/pressure.js'
import { describeError, Errors } from '../src/errors.js'
import { readFailure } from '../src/store/failstop.js'
import { nodeFileSystem, type FileSystem } from '../src/store/fsops.js'
import { build, event, post, totals } from './helper.js'

const GiB = 1024 ** 3

/** The real file system, with a free-space reading the test sets. */
function fakeDisk(freeBytes: number): FileSystem & { free: number } {
  return { ...nodeFileSystem, free: freeBytes, async freeBytes() { return this.free } }
}

async function ready(app: FastifyInstance) {
  const res = await app.inject({ url: '/readyz' })
  return { status: res.statusCode, reasons: (res.json() as { reasons: string[] }).reasons }
}

function assertOverloaded(res: { status: number; headers: Record<string, unknown>; body: unknown }, reason: RegExp): void {
  assert.equal(res.status, 503)
  assert.equal(res.headers['retry-after'], '1')
  const body = res.body as { code: string; message: string }
  assert.equal(body.code, 'TL_OVERLOADED')
  assert.match(body.message, reason)
}

/** Waits (bounded) for under-pressure's first sample, taken once a second. */
async function sampled(app: FastifyInstance): Promise<void> {
  for (let i = 0; i < 60 && app.memoryUsage().heapUsed === 0; i++) await delay(50)
  assert.ok(app.memoryUsage().heapUsed > 0, 'under-pressure took a sample')
}

test('free disk below the floor: ingest 503 + Retry-After, unready, Parquet export refused; queries served; recovers', async (t) => {
  const disk = fakeDisk(10 * GiB)
  const { app } = await build(t, { TOKENLEDGER_MIN_FREE_DISK: '1GiB' }, undefined, { fs: disk })
  const kept = event()
  assert.equal((await post(app, [kept])).body.accepted, 1)

  disk.free = GiB - 1
  await app.store.sampleDisk()
  assertOverloaded(await post(app, [event()]), /free disk 1024 MiB is below the floor of 1024 MiB \(TOKENLEDGER_MIN_FREE_DISK\)/)
  const r = await ready(app)
  assert.equal(r.status, 503)
  assert.ok(r.reasons.some((x) => /TOKENLEDGER_MIN_FREE_DISK/.test(x)), r.reasons.join())
  assert.equal((await app.inject({ url: '/healthz' })).statusCode, 200, 'alive all the same')
  assert.equal((await app.inject({ url: `/v1/events/${String(kept.event_id)}` })).statusCode, 200, 'reads go on')
  const parquet = await app.inject({ url: '/v1/export?format=parquet' })
  assert.equal(parquet.statusCode, 503)
  assert.match(parquet.json().message, /Parquet export needs scratch space/)
  assert.equal((await app.inject({ url: '/v1/export?format=ndjson' })).statusCode, 200, 'streamed exports write nothing to disk')

  disk.free = 2 * GiB
  await app.store.sampleDisk()
  assert.equal((await post(app, [event()])).body.accepted, 1)
  assert.equal((await ready(app)).status, 200)
})

test('the disk is sampled on its own timer and after commits, not only on demand', async (t) => {
  const disk = fakeDisk(10 * GiB)
  let reads = 0
  const counting: FileSystem = { ...disk, freeBytes: async () => (reads++, disk.free) }
  const { app } = await build(t, {}, undefined, { fs: counting })
  const before = reads
  assert.equal((await post(app, [event()])).body.accepted, 1)
  for (let i = 0; i < 40 && reads === before; i++) await delay(25)
  assert.ok(reads > before, 'a commit (or the 1 s timer) read free space again')
})

test('a seal backlog past TOKENLEDGER_MAX_PENDING_SEGMENTS refuses ingest until sealing catches up', async (t) => {
  let release!: () => void
  const parked = new Promise<void>((resolve) => (release = resolve))
  const { app } = await build(t, { TOKENLEDGER_MAX_PENDING_SEGMENTS: '1' }, { beforeSealStep: () => parked })
  for (let i = 0; i < 2; i++) {
    assert.equal((await post(app, [event()])).body.accepted, 1)
    assert.equal((await app.store.rollover('admin')).rolled, true)
  }
  assertOverloaded(await post(app, [event()]), /2 segments wait to be sealed, more than 1 \(TOKENLEDGER_MAX_PENDING_SEGMENTS\)/)
  assert.equal((await ready(app)).status, 503)
  release()
  await app.store.settle()
  assert.equal((await post(app, [event()])).body.accepted, 1)
  assert.equal((await ready(app)).status, 200)
})

test('process pressure: queries are shed first, ingest only past its own thresholds; health and metrics always served', async (t) => {
  // Thresholds below any real heap, set directly (the environment refuses values this small).
  const { app } = await build(t, {}, undefined, { configure: (c) => void (c.queryPressure.heapUsedBytes = 1) })
  await sampled(app)
  assertOverloaded(
    await app.inject({ url: '/v1/usage' }).then((r) => ({ status: r.statusCode, headers: r.headers, body: r.json() })),
    /heap \d+ MiB is past 0 MiB/,
  )
  assert.equal((await app.inject({ url: '/v1/export?format=csv' })).statusCode, 503)
  assert.equal((await post(app, [event()])).body.accepted, 1, 'ingest is below its own thresholds')
  assert.equal((await app.inject({ url: '/healthz' })).statusCode, 200)
  assert.equal((await app.inject({ url: '/metrics' })).statusCode, 200)
  assert.equal((await ready(app)).status, 200, 'shedding queries does not make the node unready')

  app.config.ingestPressure.heapUsedBytes = 1
  assertOverloaded(await post(app, [event()]), /heap \d+ MiB is past 0 MiB/)
  const r = await ready(app)
  assert.equal(r.status, 503)
  assert.ok(r.reasons.some((x) => /heap/.test(x)), r.reasons.join())
  assert.equal((await app.inject({ url: '/healthz' })).statusCode, 200)
})

test('rate limit per token: 429 with Retry-After past the limit, other tokens unaffected, health never limited', async (t) => {
  const a = 'a'.repeat(40)
  const b = 'b'.repeat(40)
  const { app } = await build(t, { TOKENLEDGER_RATE_LIMIT: '3', TOKENLEDGER_RATE_LIMIT_WINDOW: '1m', TOKENLEDGER_QUERY_TOKENS: `${a},${b}` })
  const usage = (token: string) => app.inject({ url: '/v1/usage', headers: { authorization: `Bearer ${token}` } })
  for (let i = 0; i < 3; i++) {
    const counted = await usage(a)
    assert.equal(counted.statusCode, 200)
    assert.equal(counted.headers['x-ratelimit-remaining'], String(2 - i), 'a known token is counted')
  }
  const limited = await usage(a)
  assert.equal(limited.statusCode, 429)
  assert.equal(limited.json().code, 'TL_RATE_LIMITED')
  assert.ok(Number(limited.headers['retry-after']) > 0)
  assert.equal((await usage(b)).statusCode, 200, 'another token has its own budget')
  for (let i = 0; i < 10; i++) assert.equal((await app.inject({ url: '/healthz' })).statusCode, 200)
  // Unknown tokens are refused before the limiter: past the limit they are still 401 (never 429),
  // carry no rate-limit headers, and use up no one's budget (not a token's, not the address's).
  for (let i = 0; i < 10; i++) {
    const unknown = await usage(`${'c'.repeat(39)}${i}`)
    assert.equal(unknown.statusCode, 401, 'an unknown token is refused')
    assert.equal(unknown.headers['x-ratelimit-remaining'], undefined, 'an unknown token is not counted')
    assert.equal(unknown.headers['x-ratelimit-limit'], undefined, 'an unknown token is not counted')
  }
  const stillB = await usage(b)
  assert.equal(stillB.statusCode, 200)
  assert.equal(stillB.headers['x-ratelimit-remaining'], '1', "b's budget: 3, less its 2 requests; the 10 unknown ones took none of it")
})

test('rate limiting is off by default', async (t) => {
  const { app } = await build(t)
  for (let i = 0; i < 120; i++) assert.equal((await app.inject({ url: '/healthz' })).statusCode, 200)
  const res = await app.inject({ url: '/v1/usage' })
  assert.equal(res.statusCode, 200)
  assert.equal(res.headers['x-ratelimit-limit'], undefined)
})

test('fail-stop: a write that invalidates DuckDB stops all writes, turns the node unready, keeps serving reads, and after a restart every acknowledged event is there once', async (t) => {
  let fault: Error | null = null
  const built = await build(t, {}, { faultOnWrite: async () => { if (fault) throw fault } })
  const { app } = built
  const acked = [event(), event()]
  assert.equal((await post(app, acked)).body.accepted, 2)

  fault = new Error('FATAL Error: Failed to commit: could not write to WAL: No space left on device. The database has been invalidated because of a previous fatal error.')
  const failedEvents = [event()]
  const failed = { ...(await post(app, failedEvents)), sent: failedEvents }
  assert.equal(failed.status, 503)
  assert.equal((failed.body as unknown as { code: string }).code, 'TL_STORE_FAILED')
  fault = null // even once the fault is gone, the store does not trust itself again
  const afterEvents = [event()]
  const after = { ...(await post(app, afterEvents)), sent: afterEvents }
  assert.equal(after.status, 503)
  assert.equal((after.body as unknown as { code: string }).code, 'TL_STORE_FAILED')
  const r = await ready(app)
  assert.equal(r.status, 503)
  assert.ok(r.reasons.some((x) => /store failed: .*invalidated/.test(x)), r.reasons.join())
  assert.equal((await app.inject({ method: 'POST', url: '/v1/admin/rollover' })).statusCode, 503, 'no rollover either')
  for (const e of acked) assert.equal((await app.inject({ url: `/v1/events/${String(e.event_id)}` })).statusCode, 200, 'acknowledged events still readable')
  assert.equal((await totals(app)).requests, 2, 'reads keep serving what was acknowledged, and nothing of the refused posts')

  // Restarted (the operator's way out of fail-stop): every acknowledged event is there once, nothing refused was stored, writes are taken again.
  const again = await built.restart()
  assert.equal((await ready(again)).status, 200)
  assert.equal((await totals(again)).requests, 2)
  for (const e of acked) assert.equal((await again.inject({ url: `/v1/events/${String(e.event_id)}` })).statusCode, 200)
  const replay = await post(again, acked)
  assert.equal(replay.body.duplicates, 2, 'acknowledged events are stored, once')
  assert.equal((await post(again, [failed.sent, after.sent].flat())).body.accepted, 2, 'the refused events were never stored')
  assert.equal((await totals(again)).requests, 4)
})

test('a write failure that does not invalidate the database fails that commit only', async (t) => {
  let fault: Error | null = new Error('Conversion Error: something about one value')
  const { app } = await build(t, {}, { faultOnWrite: async () => { if (fault) throw fault } })
  assert.equal((await post(app, [event()])).status, 503)
  fault = null
  assert.equal((await post(app, [event()])).body.accepted, 1)
  assert.equal((await ready(app)).status, 200)
})

/** Sends raw bytes to a listening app and resolves with the first response line (or '' when closed without one). */
async function raw(port: number, send: (socket: import('node:net').Socket) => Promise<void>): Promise<string> {
  const socket = connect(port, '127.0.0.1')
  await once(socket, 'connect')
  let data = ''
  socket.on('data', (b: Buffer) => (data += b.toString()))
  const closed = once(socket, 'close')
  await send(socket).catch(() => undefined)
  await Promise.race([closed, delay(10_000)])
  socket.destroy()
  return data.split('\r\n')[0] ?? ''
}

test('request heads: past TOKENLEDGER_MAX_HEADER_BYTES is 431; a head dribbled past the request timeout is cut off', async (t) => {
  const { app } = await build(t, { TOKENLEDGER_MAX_HEADER_BYTES: '4KiB', TOKENLEDGER_REQUEST_TIMEOUT: '1s' })
  await app.listen({ host: '127.0.0.1', port: 0 })
  const { port } = app.server.address() as { port: number }
  const big = await raw(port, async (s) => {
    s.write(`GET /healthz HTTP/1.1\r\nHost: x\r\nX-Pad: ${'p'.repeat(8 * 1024)}\r\n\r\n`)
  })
  assert.match(big, /^HTTP\/1\.1 431/)
  const ok = await raw(port, async (s) => {
    s.write(`GET /healthz HTTP/1.1\r\nHost: x\r\nX-Pad: ${'p'.repeat(1024)}\r\nConnection: close\r\n\r\n`)
  })
  assert.match(ok, /^HTTP\/1\.1 200/)
  const started = Date.now()
  const slow = await raw(port, async (s) => {
    s.write('GET /healthz HTTP/1.1\r\nHost: x\r\n')
    for (let i = 0; i < 40 && !s.destroyed; i++) {
      await delay(100)
      s.write('X-Slow: 1\r\n')
    }
  })
  assert.ok(Date.now() - started < 3900, `cut off after ${Date.now() - started} ms, before the client finished`)
  assert.ok(slow === '' || /^HTTP\/1\.1 408/.test(slow), slow)
})

test('connections past TOKENLEDGER_MAX_CONNECTIONS are closed at once; held ones keep working', async (t) => {
  const { app } = await build(t, { TOKENLEDGER_MAX_CONNECTIONS: '2' })
  await app.listen({ host: '127.0.0.1', port: 0 })
  const { port } = app.server.address() as { port: number }
  const held = [connect(port, '127.0.0.1'), connect(port, '127.0.0.1')]
  t.after(() => held.forEach((s) => s.destroy())) // (the app's own close also drops sockets that never sent a request)
  await Promise.all(held.map((s) => once(s, 'connect')))
  // The server must have accepted both before the third arrives (bounded poll of its count).
  const count = () => new Promise<number>((resolve, reject) => app.server.getConnections((err, n) => (err ? reject(err) : resolve(n))))
  for (let i = 0; i < 100 && (await count()) < 2; i++) await delay(10)
  assert.equal(await count(), 2)
  const third = await raw(port, async (s) => {
    s.write('GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n')
  })
  assert.equal(third, '', 'the third connection was closed without an answer')
  held[0]!.write('GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n')
  const [answer] = (await once(held[0]!, 'data')) as [Buffer]
  assert.match(answer.toString(), /^HTTP\/1\.1 200/)
})

test('ingest admission by bytes: requests are charged their Content-Length (the largest body when compressed or unsized); past TOKENLEDGER_MAX_INGEST_INFLIGHT_BYTES 503, past the per-client bytes 429; the bytes return to 0', async (t) => {
  assert.equal(chargedBytes({ 'content-length': '1234' }, 16_384), 1234)
  assert.equal(chargedBytes({ 'content-length': '99999999' }, 16_384), 16_384, 'never more than the largest body')
  assert.equal(chargedBytes({}, 16_384), 16_384, 'no length (chunked): the largest body')
  assert.equal(chargedBytes({ 'content-length': '100', 'content-encoding': 'gzip' }, 16_384), 16_384, 'compressed: it may inflate to the limit')
  let release!: () => void
  const parked = new Promise<void>((resolve) => (release = resolve))
  const env = { TOKENLEDGER_MAX_BODY_BYTES: '16KiB', TOKENLEDGER_MAX_INGEST_INFLIGHT_BYTES: '36KiB', TOKENLEDGER_MAX_INGEST_INFLIGHT_BYTES_PER_CLIENT: '24KiB' }
  const { app } = await build(t, env, { onCommitHoldingGate: () => parked })
  // A failed assertion must not leave commits parked (the app's close would wait for them).
  try {
    await bytesAdmission(app, release)
  } finally {
    release()
  }
})

async function bytesAdmission(app: FastifyInstance, release: () => void): Promise<void> {
  // inject() starts a request only once it is awaited or then'd: these run in the background.
  const send = (o: InjectOptions) => app.inject(o).then((r) => r)
  const sized = (n: number, id: string) => JSON.stringify({ events: [event({ event_id: id, detail: { pad: 'x'.repeat(n) } })] })
  const big = sized(13_000, 'big-a')
  const first = send({ method: 'POST', url: '/v1/events', payload: big, headers: { 'content-type': 'application/json' } })
  for (let i = 0; i < 100 && app.ingestInflightBytes() === 0; i++) await delay(5)
  assert.equal(app.ingestInflightBytes(), Buffer.byteLength(big))
  // The same client again: 2 × 13 KB is past its 24 KiB.
  const mine = await app.inject({ method: 'POST', url: '/v1/events', payload: sized(13_000, 'big-b'), headers: { 'content-type': 'application/json' } })
  assert.equal(mine.statusCode, 429, mine.body)
  assert.match(mine.json().message, /body bytes in flight and \d+ more asked, at most 24576 \(TOKENLEDGER_MAX_INGEST_INFLIGHT_BYTES_PER_CLIENT\)/)
  // Another client fits once (26 KB of 36 KiB), a third 13 KB does not.
  const second = send({ method: 'POST', url: '/v1/events', remoteAddress: '127.0.0.7', payload: sized(13_000, 'big-c'), headers: { 'content-type': 'application/json' } })
  for (let i = 0; i < 100 && app.ingestInflight() < 2; i++) await delay(5)
  const third = await app.inject({ method: 'POST', url: '/v1/events', remoteAddress: '127.0.0.8', payload: sized(13_000, 'big-d'), headers: { 'content-type': 'application/json' } })
  assert.equal(third.statusCode, 503, third.body)
  assert.equal(third.headers['retry-after'], '1')
  assert.match(third.json().message, /body bytes in flight and \d+ more asked, at most 36864 \(TOKENLEDGER_MAX_INGEST_INFLIGHT_BYTES\)/)
  // A small batch still fits beside them: the count of requests is not what bounds memory.
  const small = send({ method: 'POST', url: '/v1/events', remoteAddress: '127.0.0.8', payload: sized(10, 'small'), headers: { 'content-type': 'application/json' } })
  for (let i = 0; i < 100 && app.ingestInflight() < 3; i++) await delay(5)
  assert.equal(app.ingestInflight(), 3)
  release()
  for (const r of [first, second, small]) assert.equal((await r).json().accepted, 1)
  for (let i = 0; i < 100 && app.ingestInflightBytes() > 0; i++) await delay(5)
  assert.equal(app.ingestInflightBytes(), 0)
  assert.equal(app.ingestInflight(), 0)
}

test('ingest admission: past TOKENLEDGER_MAX_INGEST_INFLIGHT a request is refused 503 before its body is read; the count returns to 0', async (t) => {
  let release!: () => void
  let parked = new Promise<void>((resolve) => (release = resolve))
  const { app } = await build(t, { TOKENLEDGER_MAX_INGEST_INFLIGHT: '2', TOKENLEDGER_MAX_INGEST_INFLIGHT_PER_CLIENT: '2' }, { onCommitHoldingGate: () => parked })
  const first = post(app, [event()])
  const second = post(app, [event()])
  for (let i = 0; i < 100 && app.ingestInflight() < 2; i++) await delay(5)
  assert.equal(app.ingestInflight(), 2)
  // A body that would be a 400 if it were read: the refusal comes first.
  const third = await app.inject({ method: 'POST', url: '/v1/events', payload: '{"events": [', headers: { 'content-type': 'application/json' } })
  assert.equal(third.statusCode, 503)
  assert.equal(third.headers['retry-after'], '1')
  assert.match(third.json().message, /2 ingest requests in flight, at most 2 \(TOKENLEDGER_MAX_INGEST_INFLIGHT\)/)
  assert.equal((await app.inject({ url: '/v1/usage' })).statusCode, 200, 'queries are not counted')
  release()
  parked = Promise.resolve()
  assert.equal((await first).body.accepted, 1)
  assert.equal((await second).body.accepted, 1)
  for (let i = 0; i < 100 && app.ingestInflight() > 0; i++) await delay(5)
  assert.equal(app.ingestInflight(), 0)
  for (let i = 0; i < 5; i++) assert.equal((await post(app, [event()])).body.accepted, 1)
  const refusedBadly = await app.inject({ method: 'POST', url: '/v1/events', payload: '{"events": [', headers: { 'content-type': 'application/json' } })
  assert.equal(refusedBadly.statusCode, 400, 'below the bound the body is read (and this one is malformed)')
  assert.equal(app.ingestInflight(), 0, 'answered requests, 2xx or 4xx, leave the count')
})

test('an oversized active segment whose size rollover failed is retried by the timer tick, and ingest comes back', async (t) => {
  let failRollover = true
  const { app } = await build(t, { TOKENLEDGER_ROLLOVER_BYTES: '64KiB', TOKENLEDGER_MAX_ACTIVE_BYTES: '256KiB' }, {
    beforeRolloverGate: async () => {
      if (failRollover) throw new Error('transient: EMFILE')
    },
  })
  let refused: { status: number; body: unknown } | null = null
  for (let i = 0; i < 2000 && refused === null; i++) {
    const res = await post(app, Array.from({ length: 50 }, () => event({ tags: { pad: 'x'.repeat(200) } })))
    if (res.status !== 200) refused = res
  }
  assert.ok(refused, 'ingest was refused once the active segment outgrew its bound')
  assert.match((refused.body as { message: string }).message, /TOKENLEDGER_MAX_ACTIVE_BYTES/)
  await app.store.settle()
  failRollover = false
  await app.store.tick() // no commit will come to measure the size again: the tick must
  await app.store.settle()
  assert.equal((await post(app, [event()])).body.accepted, 1)
  assert.equal((await ready(app)).status, 200)
})

test('a query stopped at its time bound is 503 TL_QUERY_TIMEOUT with Retry-After, not a 500', async (t) => {
  const { app } = await build(t)
  const { Errors } = await import('../src/errors.js')
  ;(app.store as unknown as { snapshot: () => Promise<never> }).snapshot = async () => {
    throw new Errors.QueryTimeout(30_000)
  }
  const res = await app.inject({ url: '/v1/usage' })
  assert.equal(res.statusCode, 503)
  assert.equal(res.json().code, 'TL_QUERY_TIMEOUT')
  assert.equal(res.headers['retry-after'], '1')
})

test('shutdown does not wait for connections that never sent a request', async (t) => {
  const { app } = await build(t, { TOKENLEDGER_REQUEST_TIMEOUT: '30s' })
  await app.listen({ host: '127.0.0.1', port: 0 })
  const { port } = app.server.address() as { port: number }
  const silent = connect(port, '127.0.0.1')
  silent.on('error', () => undefined)
  await once(silent, 'connect')
  const count = () => new Promise<number>((resolve, reject) => app.server.getConnections((err, n) => (err ? reject(err) : resolve(n))))
  for (let i = 0; i < 100 && (await count()) < 1; i++) await delay(10)
  const started = Date.now()
  await app.close()
  assert.ok(Date.now() - started < 5000, `close took ${Date.now() - started} ms (headersTimeout is 30 s)`)
})

test('reads waiting for a query slot are bounded: past 8 per slot a query is 503 TL_QUERY_BUSY at once', async (t) => {
  const { app } = await build(t, { TOKENLEDGER_MAX_CONCURRENT_QUERIES: '1' })
  let release!: () => void
  const gate = new Promise<void>((resolve) => (release = resolve))
  const holder = app.store.snapshot(() => gate)
  const waiting = Array.from({ length: 8 }, () => app.inject({ url: '/v1/usage' }))
  for (let i = 0; i < 200 && (app.store as unknown as { snapshots: { waiters: number } }).snapshots.waiters < 8; i++) await delay(5)
  const refused = await app.inject({ url: '/v1/usage' })
  assert.equal(refused.statusCode, 503)
  assert.equal(refused.json().code, 'TL_QUERY_BUSY')
  assert.equal(refused.headers['retry-after'], '1')
  release()
  await holder
  for (const res of await Promise.all(waiting)) assert.equal(res.statusCode, 200, 'the waiting ones are served')
})

test('503s from /readyz and from a draining app carry Retry-After; requests in flight when close() began are still answered', async (t) => {
  const disk = fakeDisk(10 * GiB)
  let release!: () => void
  let parked: Promise<void> | null = null
  const { app } = await build(t, { TOKENLEDGER_MIN_FREE_DISK: '1GiB' }, { onCommitHoldingGate: () => parked ?? Promise.resolve() }, { fs: disk })
  disk.free = 0.5 * GiB
  await app.store.sampleDisk()
  const unready = await app.inject({ url: '/readyz' })
  assert.equal(unready.statusCode, 503)
  assert.equal(unready.headers['retry-after'], '1')
  disk.free = 10 * GiB
  await app.store.sampleDisk()
  const readyNow = await app.inject({ url: '/readyz' })
  assert.equal(readyNow.statusCode, 200)
  assert.equal(readyNow.headers['retry-after'], undefined)

  // Shutdown, over real sockets: a POST is in flight (its commit parked) and another
  // client has sent half a request head when close() begins; the head is finished after.
  await app.listen({ host: '127.0.0.1', port: 0 })
  const { port } = app.server.address() as { port: number }
  parked = new Promise<void>((resolve) => (release = resolve))
  const inFlight = fetch(`http://127.0.0.1:${port}/v1/events`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ events: [event()] }) })
  for (let i = 0; i < 200 && app.ingestInflight() < 1; i++) await delay(5)
  assert.equal(app.ingestInflight(), 1)
  // A request that reaches the app once close() has begun (on a connection the
  // closing server no longer owns: a second listener in front of the same handler).
  const front = createServer((req, res) => app.routing(req, res))
  await new Promise<void>((resolve) => front.listen(0, '127.0.0.1', resolve))
  t.after(() => new Promise<void>((resolve) => front.close(() => resolve())))
  const frontPort = (front.address() as { port: number }).port
  const closed = app.close()
  await delay(50) // close() has begun: its preClose hooks ran at once
  const late = await fetch(`http://127.0.0.1:${frontPort}/v1/usage`)
  assert.equal(late.status, 503, await late.clone().text())
  assert.equal(late.headers.get('retry-after'), '1')
  assert.equal(late.headers.get('connection'), 'close')
  assert.equal(((await late.json()) as { code: string }).code, 'TL_DRAINING')
  release()
  const res = await inFlight
  assert.equal(res.status, 200)
  assert.equal(((await res.json()) as { accepted: number }).accepted, 1, 'the request in flight when close() began is committed and answered')
  await closed
})

test('a read that fails once the store is failed, or on an invalidated DuckDB, is answered 503 TL_STORE_FAILED with Retry-After, never 500', () => {
  const invalidated = new Error('FATAL Error: Failed: database has been invalidated because of a previous fatal error. The database must be restarted prior to being used again.')
  const other = new Error('Binder Error: something unrelated')
  for (const [err, failure, code] of [
    [invalidated, null, 'TL_STORE_FAILED'],
    [other, 'could not write to WAL', 'TL_STORE_FAILED'],
    [other, null, 'TL_INTERNAL'],
    [new Errors.QueryTimeout(10), 'x', 'TL_QUERY_TIMEOUT'],
  ] as const) {
    const answer = describeError(readFailure(err, failure) as Error)
    assert.equal(answer.code, code, `${err.message} (store failed: ${failure})`)
    if (code === 'TL_STORE_FAILED') {
      assert.equal(answer.status, 503)
      assert.equal(answer.retryAfter, true)
      assert.match(answer.message, /fail-stop/)
    }
  }
})
