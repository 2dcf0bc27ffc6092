// Proves the disk filling up, for real (issue 23, item 1): the store runs on a
// small tmpfs that the test mounts (root only, as CI and the dev machines run;
// skipped with a message elsewhere).
// - With the free-disk floor on, ingest is refused with 503 + Retry-After
//   before ENOSPC: the store never fails, and every acknowledged event is there.
// - With the floor off, ENOSPC in a commit (or the checkpoint or rollover it
//   triggers) leads to a 503 (fail-stop or a clean retry), never a 500 and
//   never an acknowledged event lost; reads answer 200 or 503 TL_STORE_FAILED,
//   never 500; after space is freed and the process restarted, every
//   acknowledged event is there exactly once.
// - A statfs that fails or hangs makes the free-disk reading unknown (ingest
//   refused while the floor is on), never a frozen stale value or a stuck sampler.

import assert from 'node:assert/strict'
import { mkdirSync } from 'node:fs'
import path from 'node:path'
import { test } from 'node:test'
import { DISK_READ_TIMEOUT_MS } from '../src/store/disk.js'
import { nodeFileSystem, type FileSystem } from '../src/store/fsops.js'
import { build, event, T0, totals } from './helper.js'
import { mountTmpfs } from './support/small-fs.js'

/** A batch of `n` events with a few KiB of detail each, so the disk fills in a few hundred commits. */
function batch(n: number): Array<Record<string, unknown>> {
  return Array.from({ length: n }, (_, i) => event({ detail: { body: `${i}:`.padEnd(3000, 'x') }, cost: '0.000001' }))
}

const MAX_COMMITS = 2000

test('disk full with the floor on: ingest is refused 503 + Retry-After before ENOSPC, nothing acknowledged is lost', { timeout: 300_000 }, async (t) => {
  const fsys = mountTmpfs(t, 48)
  if (typeof fsys === 'string') return t.skip(fsys)
  const dataDir = path.join(fsys.dir, 'data')
  mkdirSync(dataDir)
  const built = await build(t, { TOKENLEDGER_DATA_DIR: dataDir, TOKENLEDGER_MIN_FREE_DISK: '16MiB', TOKENLEDGER_ROLLOVER_BYTES: '8MiB' })
  const { app } = built
  const acked: string[] = []
  let refused: { statusCode: number; headers: Record<string, unknown>; body: string } | null = null
  for (let i = 0; i < MAX_COMMITS && refused === null; i++) {
    const events = batch(100)
    const res = await app.inject({ method: 'POST', url: '/v1/events', payload: { events } })
    if (res.statusCode === 200) {
      assert.equal(res.json().accepted, 100, res.body)
      for (const e of events) acked.push(e.event_id as string)
    } else refused = res
  }
  assert.ok(refused, `the floor refused ingest within ${MAX_COMMITS} commits`)
  assert.equal(refused.statusCode, 503, refused.body)
  assert.equal(refused.headers['retry-after'], '1')
  assert.match(refused.body, /free disk .* below the floor/)
  const metrics = (await app.inject({ url: '/metrics' })).body
  assert.match(metrics, /^tokenledger_store_failed 0$/m, 'the store never hit ENOSPC (no fail-stop)')
  assert.ok(acked.length > 0)
  assert.equal((await totals(app)).requests, acked.length)
})

test('disk full with the floor off: fail-stop or clean retry, reads 503 not 500, every acknowledged event there once after a restart', { timeout: 300_000 }, async (t) => {
  const fsys = mountTmpfs(t, 40)
  if (typeof fsys === 'string') return t.skip(fsys)
  const dataDir = path.join(fsys.dir, 'data')
  mkdirSync(dataDir)
  const built = await build(t, { TOKENLEDGER_DATA_DIR: dataDir, TOKENLEDGER_MIN_FREE_DISK: '0', TOKENLEDGER_ROLLOVER_BYTES: '8MiB' })
  const acked: string[] = []
  const refused: Array<Record<string, unknown>> = []
  const answers = new Map<number, number>()
  const messages = new Set<string>()
  let failures = 0
  for (let i = 0; i < MAX_COMMITS && failures < 5; i++) {
    const events = batch(100)
    const res = await built.app.inject({ method: 'POST', url: '/v1/events', payload: { events } })
    answers.set(res.statusCode, (answers.get(res.statusCode) ?? 0) + 1)
    assert.notEqual(res.statusCode, 500, `ingest answered 500 on a full disk: ${res.body}`)
    if (res.statusCode === 200) {
      assert.equal(res.json().accepted, 100, res.body)
      for (const e of events) acked.push(e.event_id as string)
    } else {
      assert.equal(res.statusCode, 503, res.body)
      assert.ok(res.headers['retry-after'], 'a refusal says when to retry')
      refused.push(...events)
      messages.add(res.json().message)
      failures++
    }
  }
  assert.ok(failures > 0, `the disk filled within ${MAX_COMMITS} commits (answers: ${JSON.stringify([...answers])})`)
  assert.match((await built.app.inject({ url: '/metrics' })).body, /^tokenledger_store_failed 1$/m, 'ENOSPC in a commit is a fail-stop')
  // A commit that failed says its request may be stored; the fail-stop refuses later
  // writes before they reach DuckDB, and says nothing of them was. No other answer.
  for (const m of messages) assert.match(m, /may or may not be stored|nothing from this request was stored/)
  // Reads after the fault: served, or refused as the fail-stop, never a 500.
  for (const url of [`/v1/usage?from=0&to=${T0 + 3_600_000}`, `/v1/events?from=0&to=${T0 + 3_600_000}&limit=5`, `/v1/events/${acked[0]}`]) {
    const res = await built.app.inject({ url })
    assert.ok(res.statusCode === 200 || (res.statusCode === 503 && res.json().code === 'TL_STORE_FAILED'), `${url}: ${res.statusCode} ${res.body}`)
  }
  // Space freed, process restarted: everything acknowledged is there, once.
  fsys.resize(512)
  const app = await built.restart()
  // A refused batch whose commit failed may be stored too (DuckDB can fail a commit
  // whose WAL record is complete, and start-up replays it): the answer said so.
  const stored = Number((await totals(app)).requests)
  assert.ok(stored >= acked.length && stored <= acked.length + refused.length, `${stored} stored: ${acked.length} acknowledged, ${refused.length} refused`)
  for (const id of [acked[0]!, acked[Math.floor(acked.length / 2)]!, acked.at(-1)!]) {
    assert.equal((await app.inject({ url: `/v1/events/${id}` })).statusCode, 200, id)
  }
  // Retrying what was refused, with the same ids, stores each event once: what the
  // failed commit did store answers duplicate, the rest is accepted.
  const retry = await app.inject({ method: 'POST', url: '/v1/events', payload: { events: refused } })
  assert.equal(retry.statusCode, 200, retry.body)
  assert.equal(retry.json().conflicts, 0, retry.body)
  assert.equal(retry.json().duplicates, stored - acked.length, retry.body)
  assert.equal((await totals(app)).requests, acked.length + refused.length, 'every event sent is stored once after the retry')
  // And it takes ingest again.
  const res = await app.inject({ method: 'POST', url: '/v1/events', payload: { events: batch(10) } })
  assert.equal(res.json().accepted, 10, res.body)
})

test('a statfs that fails or hangs does not freeze the disk reading: free disk unknown, ingest refused while the floor is on, back when it answers', { timeout: 60_000 }, async (t) => {
  let mode: 'ok' | 'fail' | 'hang' = 'fail'
  const fs: FileSystem = {
    ...nodeFileSystem,
    async freeBytes(dir) {
      if (mode === 'fail') throw new Error('EIO: i/o error, statfs')
      if (mode === 'hang') return new Promise<number>(() => undefined)
      return nodeFileSystem.freeBytes(dir)
    },
  }
  const { app } = await build(t, { TOKENLEDGER_MIN_FREE_DISK: '1MiB' }, undefined, { fs })
  await app.store.sampleDisk()
  const refused = await app.inject({ method: 'POST', url: '/v1/events', payload: { events: [event()] } })
  assert.equal(refused.statusCode, 503, refused.body)
  assert.equal(refused.headers['retry-after'], '1')
  assert.match(refused.json().message, /free disk unknown \(statfs failed: EIO/)
  assert.match((await app.inject({ url: '/readyz' })).body, /free disk unknown/)

  mode = 'ok'
  await app.store.sampleDisk()
  assert.equal((await app.inject({ method: 'POST', url: '/v1/events', payload: { events: [event()] } })).json().accepted, 1)

  // A hung statfs: the sample gives up after its bound, the reading is unknown, and later samples are not stuck behind it.
  mode = 'hang'
  const t0 = performance.now()
  await app.store.sampleDisk()
  assert.ok(performance.now() - t0 < DISK_READ_TIMEOUT_MS + 2_000, 'the sample was bounded')
  assert.match((await app.inject({ url: '/readyz' })).body, /free disk unknown \(statfs did not answer/)
  await app.store.sampleDisk()
  assert.match((await app.inject({ url: '/readyz' })).body, /statfs has not answered for \d+ ms/, 'no second call joins the hung one')
})
