// Proves the store's write-path invariants on a real DuckDB file: group commit
// coalesces concurrent requests; the gate serializes every writer and revokes
// a writer once released; a full queue answers 503 + Retry-After without
// storing anything; a failed commit stores nothing and is reported; shutdown
// commits and answers everything queued before closing.

import assert from 'node:assert/strict'
import { mkdtemp, rm } from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import { test, type TestContext } from 'node:test'
import { pino } from 'pino'
import { ManualClock } from '../src/clock.js'
import { encodeEvents } from '../src/ingest/batch.js'
import { validateEvent } from '../src/ingest/event.js'
import type { StoreHooks } from '../src/store/options.js'
import type { AppendRequest } from '../src/store/outcomes.js'
import { Store } from '../src/store/store.js'
import { build, event, latch, post, T0, totals } from './helper.js'


async function openStore(t: TestContext, hooks?: StoreHooks, dir?: string, over: Partial<Parameters<typeof Store.open>[0]> = {}) {
  const dataDir = dir ?? (await mkdtemp(path.join(os.tmpdir(), 'tl-store-')))
  const store = await Store.open({
    dataDir,
    clock: new ManualClock(T0),
    logger: pino({ level: 'silent' }),
    maxQueueEvents: 10_000,
    maxQueueBytes: 64 * 1024 * 1024,
    maxCommitEvents: 50_000,
    gateWaitMs: 5_000,
    maxConcurrentQueries: 2,
    duckdbMemoryBytes: 256 * 1024 * 1024,
    duckdbThreads: 1,
    hooks,
    ...over,
  })
  if (!dir) {
    t.after(async () => {
      await store.close().catch(() => undefined)
      await rm(dataDir, { recursive: true, force: true })
    })
  }
  return { store, dataDir }
}

function request(n: number, over: Record<string, unknown> = {}): AppendRequest {
  const events = Array.from({ length: n }, (_, index) => {
    const res = validateEvent(event(over), { nowMs: T0, eventRetentionMs: 30 * 86_400_000, maxFutureSkewMs: 300_000 })
    if (!res.ok) throw new Error(JSON.stringify(res.errors))
    return { index, event: res.event }
  })
  return { events: encodeEvents(events), rejected: [], atomic: false, bytes: n * 512 }
}

test('concurrent appends are coalesced into few transactions (group commit)', async (t) => {
  const gate = latch()
  let parked = false
  const { store } = await openStore(t, {
    onCommitHoldingGate: async () => {
      if (parked) return
      parked = true
      gate.reached()
      await gate.opened
    },
  })
  const first = store.append(request(1))
  await gate.arrived // commit #1 holds the gate; the next 20 requests queue behind it
  const rest = Array.from({ length: 20 }, () => store.append(request(5)))
  assert.equal(store.stats().queuedRequests, 20)
  gate.open()
  const outcomes = await Promise.all([first, ...rest])
  assert.equal(outcomes.reduce((n, o) => n + o.accepted, 0), 101)
  assert.equal(store.stats().commits, 2, 'the 20 queued requests went into one transaction')
})

test('the writer handed out under the gate is revoked once the gate is released', async (t) => {
  const { store } = await openStore(t)
  let leaked: { segment: unknown } | undefined
  await store.withGate(async (w) => {
    assert.ok(store.gateHeld())
    assert.ok(w.segment)
    leaked = w
  })
  assert.equal(store.gateHeld(), false)
  assert.throws(() => leaked!.segment, /after the write gate was released/)
})

test('an append parked holding the gate makes every other gate user wait', async (t) => {
  const gate = latch()
  const { store } = await openStore(t, {
    onCommitHoldingGate: async () => {
      gate.reached()
      await gate.opened
    },
  })
  const append = store.append(request(3))
  await gate.arrived
  let otherRan = false
  const other = store.withGate(async () => {
    otherRan = true
  })
  // Let every queued microtask and I/O callback run: the other user must still wait.
  await new Promise((resolve) => setImmediate(resolve))
  assert.equal(otherRan, false)
  gate.open()
  await append
  await other
  assert.equal(otherRan, true)
})

test('gate wait is bounded: a writer that cannot get the gate in time gets GateTimeout', async (t) => {
  const gate = latch()
  const { store } = await openStore(t, undefined, undefined, { gateWaitMs: 50 })
  const holder = store.withGate(async () => {
    gate.reached()
    await gate.opened
  })
  await gate.arrived
  await assert.rejects(store.append(request(2)), (err: Error & { code?: string }) => err.code === 'TL_GATE_TIMEOUT')
  gate.open()
  await holder
  assert.equal((await store.append(request(2))).accepted, 2, 'the store works again once the gate is free')
})

test('a full ingest queue answers 503 with Retry-After and stores nothing of that request', async (t) => {
  const gate = latch()
  let parkOnce = true
  const { app } = await build(t, { TOKENLEDGER_MAX_QUEUE_EVENTS: '10', TOKENLEDGER_MAX_BATCH_EVENTS: '10' }, {
    onCommitHoldingGate: async () => {
      if (!parkOnce) return
      parkOnce = false
      gate.reached()
      await gate.opened
    },
  })
  const first = post(app, [event()])
  await gate.arrived
  const queued = post(app, Array.from({ length: 8 }, () => event({ key_id: 'queued' })))
  await new Promise((resolve) => setImmediate(resolve))
  const refused = await app.inject({ method: 'POST', url: '/v1/events', payload: Array.from({ length: 5 }, () => event({ key_id: 'refused' })) })
  assert.equal(refused.statusCode, 503)
  assert.equal(refused.headers['retry-after'], '1')
  assert.equal(refused.json().code, 'TL_QUEUE_FULL')
  const notReady = await app.inject({ url: '/readyz' })
  assert.equal(notReady.statusCode, 200, 'a queue below its bound is still ready')
  gate.open()
  assert.equal((await first).body.accepted, 1)
  assert.equal((await queued).body.accepted, 8)
  assert.equal((await totals(app, 'key_id=refused')).requests, 0)
})

test('a failed commit answers 503, stores nothing and leaves ids free to retry', async (t) => {
  let fail = true
  const { app } = await build(t, {}, {
    onCommitHoldingGate: async () => {
      if (fail) throw new Error('simulated write failure')
    },
  })
  const batch = [event(), event()]
  const res = await app.inject({ method: 'POST', url: '/v1/events', payload: batch })
  assert.equal(res.statusCode, 503)
  assert.equal(res.json().code, 'TL_STORE_FAILED')
  assert.doesNotMatch(res.body, /simulated/, '5xx bodies carry no internals')
  fail = false
  const retry = await post(app, batch)
  assert.equal(retry.body.accepted, 2, 'nothing of the failed commit was indexed or stored')
  assert.equal((await totals(app)).requests, 2)
})

test('close drains: queued requests are committed and answered, later ones refused, data survives', async (t) => {
  const gate = latch()
  let park = true
  const dataDir = await mkdtemp(path.join(os.tmpdir(), 'tl-store-'))
  t.after(() => rm(dataDir, { recursive: true, force: true }))
  const { store } = await openStore(t, {
    onCommitHoldingGate: async () => {
      if (!park) return
      park = false
      gate.reached()
      await gate.opened
    },
  }, dataDir)
  const inFlight = store.append(request(4))
  await gate.arrived
  const queued = store.append(request(6))
  const closing = store.close()
  await assert.rejects(store.append(request(1)), (err: Error & { code?: string }) => err.code === 'TL_DRAINING')
  assert.equal(store.ready().ready, false)
  gate.open()
  assert.equal((await inFlight).accepted, 4)
  assert.equal((await queued).accepted, 6)
  await closing
  const { store: reopened } = await openStore(t, undefined, dataDir)
  assert.equal(reopened.stats().indexedEvents, 10)
  await reopened.close()
})
