// Proves ENOSPC driven deliberately into each step of the store, on a real small
// file system (a tmpfs the test mounts as root; skipped with a message elsewhere),
// with the free-disk floor off so nothing refuses before DuckDB or the file
// system does (issue 23, item 1). Before the step under test the disk is filled
// (a filler file leaves a chosen number of bytes; the store's test hooks stop
// right before the step), then:
// - ingest answers 200 only for events that are stored, 503 with Retry-After
//   otherwise, never 500; reads answer 200 or 503 TL_STORE_FAILED, never 500;
// - no temp or partial file is left behind in the data directory;
// - the store fails stop (writes 503 TL_STORE_FAILED) or retries cleanly;
// - once the space is freed and the store restarted on the same data directory,
//   every acknowledged event is there exactly once (re-posting every event sent
//   gives `duplicate` for each acknowledged one, and the totals count each event
//   once), verify finds no mismatch, and ingest works again.

import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { mkdirSync, readdirSync, readlinkSync, statSync } from 'node:fs'
import path from 'node:path'
import { test, type TestContext } from 'node:test'
import type { FastifyInstance } from 'fastify'
import { nodeFileSystem, type FileSystem } from '../src/store/fsops.js'
import type { StoreHooks } from '../src/store/options.js'
import { build, event, T0, totals, type BuildOptions, type Built } from './helper.js'
import { mountTmpfs, type SmallFs } from './support/small-fs.js'

const FS_MIB = 48

/** A batch of `n` events with a few KiB of incompressible detail each. */
function batch(n: number): Array<Record<string, unknown>> {
  return Array.from({ length: n }, (_, i) => event({ detail: { body: `${i}:${randomBytes(768).toString('base64')}` }, cost: '0.000001' }))
}

interface Ledger {
  fsys: SmallFs
  built: Built
  dataDir: string
  /** Events answered 200 (accepted). */
  acked: Array<Record<string, unknown>>
  /** Events answered 503: stored or not, the client would retry them. */
  refused: Array<Record<string, unknown>>
  /** Events the totals count that are not re-posted (expired raw events: their rollups stay). */
  expired: number
}

/** Mounts the small file system and builds the app on it; `hooks` get the file system (to fill it from inside a step). Null: skipped. */
async function setup(t: TestContext, env: Record<string, string> = {}, hooks?: (fsys: SmallFs) => StoreHooks, options?: BuildOptions): Promise<Ledger | null> {
  const fsys = mountTmpfs(t, FS_MIB)
  if (typeof fsys === 'string') {
    t.skip(fsys)
    return null
  }
  const dataDir = path.join(fsys.dir, 'data')
  mkdirSync(dataDir)
  const built = await build(t, { TOKENLEDGER_DATA_DIR: dataDir, TOKENLEDGER_MIN_FREE_DISK: '0', TOKENLEDGER_ROLLOVER_BYTES: '4MiB', TOKENLEDGER_RETENTION_INTERVAL: 'off', TOKENLEDGER_SEAL_RETRY: '10ms', TOKENLEDGER_SEAL_RETRY_MAX: '10ms', ...env }, hooks?.(fsys), options)
  return { fsys, built, dataDir, acked: [], refused: [], expired: 0 }
}

/** Posts `n` events: 200 with all accepted (acknowledged) or 503 with Retry-After (refused); never anything else. */
async function ingest(l: Ledger, n = 50): Promise<{ statusCode: number; code: string | null; body: string }> {
  const events = batch(n)
  const res = await l.built.app.inject({ method: 'POST', url: '/v1/events', payload: { events } })
  assert.notEqual(res.statusCode, 500, `ingest answered 500: ${res.body}`)
  if (res.statusCode === 200) {
    assert.equal(res.json().accepted, n, res.body)
    l.acked.push(...events)
    return { statusCode: 200, code: null, body: res.body }
  }
  assert.equal(res.statusCode, 503, res.body)
  assert.ok(res.headers['retry-after'], `a 503 says when to retry: ${res.body}`)
  l.refused.push(...events)
  return { statusCode: 503, code: res.json().code, body: res.body }
}

/** Files whose names say they are temporary or partial (a seal's copy, an id run being written). */
function tempFiles(dir: string): string[] {
  const out: string[] = []
  for (const e of readdirSync(dir, { withFileTypes: true, recursive: true })) {
    if (e.isFile() && /\.tmp(\.wal)?$/.test(e.name)) out.push(path.join(e.parentPath, e.name))
  }
  return out
}

/** Files under `dir` this process holds open (from /proc/self/fd). */
function openFilesUnder(dir: string): string[] {
  const out: string[] = []
  for (const fd of readdirSync('/proc/self/fd')) {
    try {
      const target = readlinkSync(`/proc/self/fd/${fd}`)
      if (target.startsWith(`${dir}/`)) out.push(target)
    } catch {
      // closed while listing
    }
  }
  return out.sort()
}

/** The active/ directory's segment files. */
function activeFiles(dataDir: string): string[] {
  return readdirSync(path.join(dataDir, 'active')).filter((n) => n.endsWith('.duckdb')).sort()
}

async function failed(app: FastifyInstance): Promise<boolean> {
  return /^tokenledger_store_failed 1$/m.test((await app.inject({ url: '/metrics' })).body)
}

/** Reads on the faulted store: served, or refused as the fail-stop, never a 500. */
async function readsAnswer(l: Ledger): Promise<void> {
  const app = l.built.app
  const id = l.acked[0]?.event_id ?? 'none'
  for (const url of [`/v1/usage?from=0&to=${T0 + 3_600_000}`, `/v1/events?from=0&to=${T0 + 3_600_000}&limit=5`, `/v1/events/${id}`, '/v1/admin/segments', '/readyz']) {
    const res = await app.inject({ url })
    const ok = res.statusCode === 200 || (res.statusCode === 503 && (url === '/readyz' || res.json().code === 'TL_STORE_FAILED'))
    assert.ok(ok, `${url}: ${res.statusCode} ${res.body}`)
  }
}

/**
 * Frees the space, restarts the store on the same data dir and proves every
 * acknowledged event is there exactly once: re-posting everything sent gives a
 * duplicate for each acknowledged event (a refused one may have been stored
 * too: then it is a duplicate, else accepted now), the totals count each event
 * once, verify finds nothing, and ingest takes new events.
 */
async function restartAndCheck(l: Ledger): Promise<void> {
  // A seal started by the last rollover writes its .tmp copy in the background: wait
  // for it (and any other background work) so only a file left behind is counted.
  await l.built.app.store.settle()
  assert.deepEqual(tempFiles(l.dataDir), [], 'no temp file left behind')
  await l.built.stop()
  assert.deepEqual(openFilesUnder(l.dataDir), [], 'closing the store closed every file it had open (each segment, failed or not)')
  l.fsys.unfill()
  const app = await l.built.restart()
  await app.store.settle()
  assert.deepEqual(tempFiles(l.dataDir), [], 'no temp file after the restart either')
  const sent = [...l.acked, ...l.refused]
  const ackedIds = new Set(l.acked.map((e) => e.event_id as string))
  let duplicates = 0
  for (let i = 0; i < sent.length; i += 500) {
    const chunk = sent.slice(i, i + 500)
    const res = await app.inject({ method: 'POST', url: '/v1/events', payload: { events: chunk } })
    assert.equal(res.statusCode, 200, res.body)
    const body = res.json() as { accepted: number; duplicates: number; conflicts: number; results: Array<{ event_id: string; status: string }> }
    assert.equal(body.conflicts, 0, res.body)
    duplicates += body.duplicates
    const dupIds = new Set(body.results.filter((r) => r.status === 'duplicate').map((r) => r.event_id))
    for (const e of chunk) if (ackedIds.has(e.event_id as string)) assert.ok(dupIds.has(e.event_id as string), `acknowledged ${String(e.event_id)} is stored`)
  }
  assert.ok(duplicates >= l.acked.length, `${duplicates} duplicates for ${l.acked.length} acknowledged`)
  assert.equal((await totals(app)).requests, sent.length + l.expired, 'every event sent is stored (or, expired, counted) once now')
  const verify = await app.inject({ url: `/v1/admin/verify?from=${T0 - 86_400_000}&to=${T0 + 86_400_000}` })
  assert.equal(verify.statusCode, 200, verify.body)
  assert.equal(verify.json().mismatch_count, 0, verify.body)
  const fresh = batch(5)
  const after = await app.inject({ method: 'POST', url: '/v1/events', payload: { events: fresh } })
  assert.equal(after.json().accepted, 5, after.body)
  l.acked.push(...l.refused, ...fresh)
  l.refused = []
}

test('ENOSPC in a group commit (the WAL write): 503 TL_STORE_FAILED, fail-stop, nothing acknowledged lost', { timeout: 120_000 }, async (t) => {
  const l = await setup(t)
  if (!l) return
  for (let i = 0; i < 5; i++) assert.equal((await ingest(l)).statusCode, 200)
  l.fsys.fill(0)
  const res = await ingest(l)
  assert.equal(res.statusCode, 503, res.body)
  assert.equal(res.code, 'TL_STORE_FAILED', res.body)
  assert.ok(await failed(l.built.app), 'a failed WAL write is a fail-stop')
  assert.equal((await ingest(l, 1)).code, 'TL_STORE_FAILED', 'later writes are refused')
  await readsAnswer(l)
  await restartAndCheck(l)
})

/** GET /v1/admin/segments, as a list. */
async function segmentsOf(app: FastifyInstance): Promise<Array<{ id: number; state: string; row_count: number; seal?: { attempts: number; last_error: string | null } }>> {
  const res = await app.inject({ url: '/v1/admin/segments' })
  assert.equal(res.statusCode, 200, res.body)
  return res.json().segments
}

/** POST /v1/admin/rollover: 200, or 503 with a TL_ code and Retry-After; never 500. */
async function adminRollover(app: FastifyInstance): Promise<{ statusCode: number; code: string | null; body: string }> {
  const res = await app.inject({ method: 'POST', url: '/v1/admin/rollover' })
  assert.notEqual(res.statusCode, 500, `rollover answered 500: ${res.body}`)
  if (res.statusCode === 200) return { statusCode: 200, code: null, body: res.body }
  assert.equal(res.statusCode, 503, res.body)
  assert.ok(res.headers['retry-after'], `a 503 says when to retry: ${res.body}`)
  return { statusCode: 503, code: res.json().code, body: res.body }
}

test('ENOSPC in the automatic checkpoint inside a commit: 200 only if stored, else 503; nothing acknowledged lost', { timeout: 120_000 }, async (t) => {
  // The active segment checkpoints on its own once its WAL passes the rollover size
  // (SegmentOptions.checkpointBytes): a commit that carries the WAL over it checkpoints inside that commit.
  const l = await setup(t)
  if (!l) return
  const wal = () => {
    const f = activeFiles(l.dataDir)[0]!
    try {
      return readdirSync(path.join(l.dataDir, 'active')).includes(`${f}.wal`) ? statSync(path.join(l.dataDir, 'active', `${f}.wal`)).size : 0
    } catch {
      return 0
    }
  }
  while (wal() < 3 * 1024 * 1024) assert.equal((await ingest(l)).statusCode, 200)
  assert.equal(activeFiles(l.dataDir).length, 1, 'no rollover yet')
  const before = wal()
  // Room for the commit's WAL (~1.6 MiB), not for the checkpoint that follows it (the whole WAL's rows).
  l.fsys.fill(2 * 1024 * 1024 + 512 * 1024)
  const res = await ingest(l, 900)
  assert.ok(wal() >= before || res.statusCode === 503, 'the commit reached the WAL or was refused')
  await l.built.app.store.settle()
  await readsAnswer(l)
  // Whatever the answer, later writes are either refused as the fail-stop or stored.
  const next = await ingest(l, 1)
  if (next.statusCode === 503) assert.match(String(next.code), /TL_STORE_FAILED|TL_OVERLOADED/, next.body)
  await restartAndCheck(l)
})

test('ENOSPC creating the fresh segment of a rollover: 503 TL_ROLLOVER_FAILED, the fresh file removed, the store keeps going and rolls over once space is back', { timeout: 120_000 }, async (t) => {
  const l = await setup(t)
  if (!l) return
  for (let i = 0; i < 5; i++) assert.equal((await ingest(l)).statusCode, 200)
  const before = readdirSync(path.join(l.dataDir, 'active')).sort()
  l.fsys.fill(0)
  const res = await adminRollover(l.built.app)
  assert.equal(res.statusCode, 503, res.body)
  assert.equal(res.code, 'TL_ROLLOVER_FAILED', res.body)
  assert.deepEqual(readdirSync(path.join(l.dataDir, 'active')).sort(), before, 'the fresh segment file (and any WAL of it) is removed')
  assert.equal(await failed(l.built.app), false, 'the active segment was never touched: no fail-stop')
  await readsAnswer(l)
  l.fsys.unfill()
  assert.equal((await ingest(l)).statusCode, 200, 'ingest goes on')
  const again = await adminRollover(l.built.app)
  assert.equal(again.statusCode, 200, again.body)
  assert.equal(JSON.parse(again.body).rolled, true)
  assert.equal((await ingest(l)).statusCode, 200)
  await restartAndCheck(l)
})

test('ENOSPC recording the fresh segment of a rollover in the catalog: 503 TL_ROLLOVER_FAILED, no fresh file left unless it became the active one, fail-stop or a clean retry', { timeout: 120_000 }, async (t) => {
  // The catalog's record is a few hundred bytes: on a full tmpfs it may still fit in
  // pages its WAL already holds, and then the ENOSPC comes at the retire checkpoint after the swap.
  let arm = false
  const l = await setup(t, {}, (fsys) => ({
    beforeRolloverRecord: async () => {
      if (arm) (arm = false), fsys.fill(0)
    },
  }))
  if (!l) return
  for (let i = 0; i < 5; i++) assert.equal((await ingest(l)).statusCode, 200)
  const before = readdirSync(path.join(l.dataDir, 'active')).sort()
  arm = true
  const res = await adminRollover(l.built.app)
  assert.equal(res.statusCode, 503, res.body)
  assert.equal(res.code, 'TL_ROLLOVER_FAILED', res.body)
  await readsAnswer(l)
  if (!(await failed(l.built.app))) {
    assert.deepEqual(readdirSync(path.join(l.dataDir, 'active')).sort(), before, 'the fresh segment file is removed')
    l.fsys.unfill()
    assert.equal((await ingest(l)).statusCode, 200, 'a clean retry: ingest goes on')
    assert.equal((await adminRollover(l.built.app)).statusCode, 200, 'and the rollover works once space is back')
  } else {
    assert.match(res.body, /retire step/, 'only a failure after the swap fails the store')
    assert.equal((await ingest(l, 1)).code, 'TL_STORE_FAILED')
  }
  await restartAndCheck(l)
})

test('ENOSPC at the swap and in the retire checkpoint of the old segment: 503, fail-stop, the old segment recovered at start-up', { timeout: 120_000 }, async (t) => {
  let arm: 'gate' | 'retire' | null = null
  const l = await setup(t, {}, (fsys) => ({
    beforeRolloverGate: async () => {
      if (arm === 'gate') (arm = null), fsys.fill(0)
    },
    beforeRetireClose: async () => {
      if (arm === 'retire') (arm = null), fsys.fill(0)
    },
  }))
  if (!l) return
  for (let i = 0; i < 5; i++) assert.equal((await ingest(l)).statusCode, 200)
  // The swap itself writes nothing; the retire checkpoint after it (the old segment's WAL into its file) does.
  arm = 'gate'
  const res = await adminRollover(l.built.app)
  assert.equal(res.statusCode, 503, res.body)
  assert.equal(res.code, 'TL_ROLLOVER_FAILED', res.body)
  assert.ok(await failed(l.built.app), 'a rolled-over segment that could not be checkpointed and moved is a fail-stop')
  assert.equal((await ingest(l, 1)).code, 'TL_STORE_FAILED')
  await readsAnswer(l)
  await restartAndCheck(l)
  // Once more, filled under retireLock right before the close.
  const app = l.built.app
  for (let i = 0; i < 3; i++) assert.equal((await ingest(l)).statusCode, 200)
  arm = 'retire'
  const res2 = await adminRollover(app)
  assert.equal(res2.statusCode, 503, res2.body)
  assert.ok(await failed(app))
  await readsAnswer(l)
  await restartAndCheck(l)
})

test('ENOSPC in the live rollup refresh: the store fails stop (no half-working store), nothing acknowledged lost', { timeout: 120_000 }, async (t) => {
  let arm = false
  const l = await setup(t, {}, (fsys) => ({
    liveRollupEveryRows: 1,
    liveRollupEveryMs: 0,
    beforeLiveRollupRefresh: async () => {
      if (arm) (arm = false), fsys.fill(0)
    },
  }))
  if (!l) return
  for (let i = 0; i < 5; i++) assert.equal((await ingest(l)).statusCode, 200)
  await l.built.app.store.settle()
  arm = true
  // The refresh runs after this commit, off its path: the commit is stored and acknowledged.
  // One key per event, so the refresh writes thousands of rollup rows (more than a page of slack).
  const keyed = Array.from({ length: 3000 }, (_, i) => event({ key_id: `key-${i}-${'k'.repeat(100)}` }))
  const res0 = await l.built.app.inject({ method: 'POST', url: '/v1/events', payload: { events: keyed } })
  assert.equal(res0.statusCode, 200, res0.body)
  assert.equal(res0.json().accepted, keyed.length)
  l.acked.push(...keyed)
  await l.built.app.store.settle()
  assert.equal(arm, false, 'the refresh ran')
  // Failed as soon as the refresh did, not only once a later commit trips over the invalidated database.
  assert.ok(await failed(l.built.app), 'a refresh that hit ENOSPC on the active segment is a fail-stop')
  assert.equal((await l.built.app.inject({ url: '/readyz' })).statusCode, 503)
  const res = await ingest(l, 1)
  assert.equal(res.statusCode, 503, res.body)
  assert.equal(res.code, 'TL_STORE_FAILED', res.body)
  assert.ok(await failed(l.built.app), 'a refresh that hit ENOSPC on the active segment is a fail-stop')
  await readsAnswer(l)
  await restartAndCheck(l)
})

for (const step of ['copy', 'sync', 'validate', 'publish', 'record', 'index'] as const) {
  test(`ENOSPC at the seal's ${step} step: no temp file left, the segment stays pending (or sealed) and is sealed on a later attempt, never lost`, { timeout: 120_000 }, async (t) => {
    let arm = false
    const l = await setup(t, {}, (fsys) => ({
      beforeSealStep: async (s) => {
        if (arm && s === step) (arm = false), fsys.fill(0)
      },
      beforeIndexPart: async () => {
        if (arm && step === 'index') (arm = false), fsys.fill(0)
      },
    }))
    if (!l) return
    const app = l.built.app
    for (let i = 0; i < 5; i++) assert.equal((await ingest(l)).statusCode, 200)
    arm = true
    const res = await adminRollover(app)
    assert.equal(res.statusCode, 200, res.body)
    await app.store.settle()
    assert.equal(arm, false, `the seal reached its ${step} step`)
    assert.deepEqual(tempFiles(l.dataDir), [], 'no temp file left behind by the failed step')
    const rolled = (await segmentsOf(app)).find((s) => s.state !== 'active')!
    assert.ok(rolled.state === 'pending' || rolled.state === 'archived', JSON.stringify(rolled))
    if (rolled.state === 'pending') assert.ok(rolled.seal && rolled.seal.attempts >= 1 && rolled.seal.last_error, JSON.stringify(rolled))
    await readsAnswer(l)
    // Space back: the next attempt seals it (the store did not fail for a seal).
    assert.equal(await failed(app), false, 'a failed seal is retried, not a fail-stop')
    l.fsys.unfill()
    l.built.clock.advance(1_000)
    await app.store.tick()
    await app.store.settle()
    assert.deepEqual((await segmentsOf(app)).filter((s) => s.state === 'pending'), [], 'sealed on a later attempt')
    if (step === 'index') assert.ok(readdirSync(path.join(l.dataDir, 'index')).some((n) => /^run-\d+\.ids$/.test(n)), 'the id run is written on a later attempt')
    assert.equal((await ingest(l)).statusCode, 200)
    await restartAndCheck(l)
  })
}

test("ENOSPC at the seal's rename (injected through the file-system seam: a tmpfs rename needs no space): no temp file left, sealed on a later attempt", { timeout: 120_000 }, async (t) => {
  // On a file system whose directory needs a new block (ext4, say) rename(2) can fail with ENOSPC.
  let arm = false
  const fs: FileSystem = {
    ...nodeFileSystem,
    async rename(from, to) {
      if (arm && from.endsWith('.duckdb.tmp')) {
        arm = false
        throw Object.assign(new Error(`ENOSPC: no space left on device, rename '${from}' -> '${to}'`), { code: 'ENOSPC' })
      }
      return nodeFileSystem.rename(from, to)
    },
  }
  const l = await setup(t, {}, undefined, { fs })
  if (!l) return
  const app = l.built.app
  for (let i = 0; i < 5; i++) assert.equal((await ingest(l)).statusCode, 200)
  arm = true
  assert.equal((await adminRollover(app)).statusCode, 200)
  await app.store.settle()
  assert.equal(arm, false, 'the rename was tried')
  assert.deepEqual(tempFiles(l.dataDir), [], 'no temp file left behind')
  const rolled = (await segmentsOf(app)).find((s) => s.state !== 'active')!
  assert.equal(rolled.state, 'pending', JSON.stringify(rolled))
  assert.match(String(rolled.seal?.last_error), /ENOSPC/)
  l.built.clock.advance(1_000)
  await app.store.tick()
  await app.store.settle()
  assert.deepEqual((await segmentsOf(app)).filter((s) => s.state === 'pending'), [], 'sealed on a later attempt')
  await restartAndCheck(l)
})

test('retention on a full disk: it deletes what expired or answers 503, never 500; nothing retained is lost', { timeout: 120_000 }, async (t) => {
  const l = await setup(t, { TOKENLEDGER_EVENT_RETENTION: '1h' })
  if (!l) return
  const app = l.built.app
  // Old events in an archive of their own, newer ones in the active segment.
  const old = Array.from({ length: 50 }, () => event({ timestamp: T0 - 50 * 60_000 }))
  const res = await app.inject({ method: 'POST', url: '/v1/events', payload: { events: old } })
  assert.equal(res.json().accepted, old.length, res.body)
  assert.equal((await adminRollover(app)).statusCode, 200)
  await app.store.settle()
  l.expired = old.length
  l.built.clock.advance(30 * 60_000)
  for (let i = 0; i < 3; i++) assert.equal((await ingest(l)).statusCode, 200)
  l.fsys.fill(0)
  const run = await app.inject({ method: 'POST', url: '/v1/admin/retention' })
  assert.notEqual(run.statusCode, 500, run.body)
  assert.ok(run.statusCode === 200 || (run.statusCode === 503 && run.headers['retry-after']), `${run.statusCode} ${run.body}`)
  // Deleting needs no space: the expired archive goes (its catalog rows in a transaction small enough to fit).
  if (run.statusCode === 200) assert.ok(run.json().segments_deleted.length >= 1, run.body)
  await readsAnswer(l)
  l.fsys.unfill()
  const again = await app.inject({ method: 'POST', url: '/v1/admin/retention' })
  assert.ok(again.statusCode === 200 || (again.statusCode === 503 && (await failed(app))), `${again.statusCode} ${again.body}`)
  await restartAndCheck(l)
  const after = await l.built.app.inject({ method: 'POST', url: '/v1/admin/retention' })
  assert.equal(after.statusCode, 200, after.body)
  assert.equal(l.built.app.store.segmentList().filter((s) => s.max_timestamp_us !== null && s.max_timestamp_us < (T0 - 40 * 60_000) * 1000).length, 0, 'the expired archive is gone once retention runs with space')
})
