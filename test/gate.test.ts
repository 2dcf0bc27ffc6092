// Proves the write gate is the only way to write a segment (gate.ts, segment.ts):
// - at the type level, a hand-made capability does not type-check (the
//   expect-error directives below make `tsc`, run by `npm test`, fail if it ever did);
// - at run time, a capability kept past its release, or one naming another
//   segment (the state after a rollover: the Rust original's bug), is refused and
//   nothing is written;
// - the guarded segment changes only under the gate (swap);
// - and pins (pins.ts), the one scheme for live segments and attached files,
//   release their waiter only when the last reader lets go.

import assert from 'node:assert/strict'
import { mkdtemp, rm } from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import { test, type TestContext } from 'node:test'
import { encodeEvents } from '../src/ingest/batch.js'
import { validateEvent } from '../src/ingest/event.js'
import { WriteGate, type GateHeld } from '../src/store/gate.js'
import { Pins } from '../src/store/pins.js'
import { Segment } from '../src/store/segment.js'
import { event, T0 } from './helper.js'

const noListener = { held: () => undefined, timedOut: () => undefined }

async function openSegment(t: TestContext, name: string): Promise<Segment> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'tl-gate-'))
  const seg = await Segment.open(path.join(dir, name), { memoryBytes: 128 * 1024 * 1024, threads: 1, readConnections: 1, nowMs: T0 })
  t.after(async () => {
    await seg.close().catch(() => undefined)
    await rm(dir, { recursive: true, force: true })
  })
  return seg
}

function batch(id: string) {
  const res = validateEvent(event({ event_id: id }), { nowMs: T0, eventRetentionMs: 30 * 86_400_000, maxFutureSkewMs: 300_000 })
  if (!res.ok) throw new Error(JSON.stringify(res.errors))
  return encodeEvents([{ index: 0, event: res.event }])
}

async function count(seg: Segment): Promise<number> {
  return seg.read(async (conn) => Number((await conn.runAndReadAll('SELECT count(*) FROM events')).getRows()[0]![0]))
}

test('a capability cannot be made outside the gate (type level)', async (t) => {
  const seg = await openSegment(t, 'a.duckdb')
  const forged = { segment: seg, grants: () => true, revoke: () => undefined }
  // @ts-expect-error a plain object is not a GateHeld: the class carries a #private field and is not exported
  await assert.rejects(seg.appendCommitted(forged, [batch('forged')]))
  // @ts-expect-error nor is nothing at all
  await assert.rejects(seg.appendCommitted(undefined, [batch('none')]))
  assert.equal(await count(seg), 0, 'nothing was written')
})

test('a capability kept past the gate is refused, and one naming another segment too', async (t) => {
  const first = await openSegment(t, 'first.duckdb')
  const second = await openSegment(t, 'second.duckdb')
  const gate = new WriteGate(first, 1_000, noListener)
  let kept: GateHeld<Segment> | null = null
  await gate.run('append', async (held) => {
    await held.segment.appendCommitted(held, [batch('under-gate')])
    kept = held
  })
  assert.equal(await count(first), 1)
  assert.throws(() => kept!.segment, /after the write gate was released/)
  await assert.rejects(first.appendCommitted(kept!, [batch('after-release')]), /without the write gate/)

  // A rollover points the gate at a fresh segment; a holder from before cannot write to either.
  await gate.run('rollover', async (held) => gate.swap(held, second))
  await gate.run('append', async (held) => {
    assert.equal(held.segment, second)
    await assert.rejects(first.appendCommitted(held, [batch('stale')]), /without the write gate/)
    await held.segment.appendCommitted(held, [batch('fresh')])
  })
  assert.equal(await count(first), 1, 'the rolled-over segment took nothing more')
  assert.equal(await count(second), 1)
})

test('the guarded segment changes only under the gate', async (t) => {
  const first = await openSegment(t, 'x.duckdb')
  const second = await openSegment(t, 'y.duckdb')
  const gate = new WriteGate(first, 1_000, noListener)
  let kept: GateHeld<Segment> | null = null
  await gate.run('other', async (held) => {
    kept = held
  })
  assert.throws(() => gate.swap(kept!, second), /only under the write gate/)
  await gate.run('append', async (held) => assert.equal(held.segment, first, 'still the first'))
})

test('pins release their waiter only once the last reader lets go, never before', async () => {
  const pins = new Pins()
  let released = false
  await pins.released() // none held: at once
  pins.pin()
  pins.pin()
  const waiting = pins.released().then(() => (released = true))
  pins.unpin()
  await new Promise((resolve) => setImmediate(resolve))
  assert.equal(released, false, 'one reader still holds it')
  pins.unpin()
  await waiting
  assert.equal(released, true)
  assert.throws(() => pins.unpin(), /unpin without a pin/)
})
