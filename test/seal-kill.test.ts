// Proves: a real SIGKILL at each point of a seal and of the dedupe index's persistence
// (before every seal step, between the seal's swap and its id run, right after the run's
// rename, right after a merge's rename with its inputs still on disk) loses no
// acknowledged event, stores none twice, and leaves the index exact: after every
// restart each acknowledged event replays as a duplicate and the same id with other
// content is a conflict, a sealed segment whose run was never written has it rebuilt,
// and the persisted runs hold each archived event once (a merge's leftover inputs are
// dropped, not counted twice). The in-process tests (tiers, dedupe-runs) throw at these
// points; this one kills the process there, so nothing (no finally, no close) runs.
//
// Shape: one data directory; per kill point, the kill-at server (test/support/
// kill-at-server.ts) starts on it (recovering what the last kill left), is sent fresh
// events and a replay of everything acknowledged so far, is armed, rolled over, and dies
// at that point of the seal that follows. A plain server then checks the end state.
import test from 'node:test'
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { mkdtemp, readdir, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { setTimeout as delay } from 'node:timers/promises'
import { SEAL_STEPS } from '../src/store/tiers.js'
import { callJson as call, startChildServer, type ChildServer } from './support/child-server.js'

const KILL_POINTS = [...SEAL_STEPS.map((s) => `seal:${s}`), 'index-part', 'run-rename:1', 'run-rename:2']
const eventsPerRound = 400
const testTimeoutMs = 240_000

/** An event as posted: what a replay sends again. */
type Sent = Record<string, unknown> & { event_id: string; input_tokens: number; cost: string }

async function segments(server: ChildServer): Promise<Array<{ id: number; state: string; row_count: number }>> {
  const res = await call(server, 'GET', '/v1/admin/segments')
  assert.equal(res.status, 200, JSON.stringify(res.json))
  return res.json.segments
}

/**
 * Polls `probe` (what the server does in the background: seals, purges) every 50 ms until
 * it answers `done`; fails after 30 s with `why` of its last answer and the log.
 */
async function until<T>(server: ChildServer, probe: () => Promise<T>, done: (v: T) => boolean, why: (v: T) => string): Promise<T> {
  const deadline = Date.now() + 30_000
  for (;;) {
    const v = await probe()
    if (done(v)) return v
    if (Date.now() > deadline) assert.fail(`${why(v)} after 30 s\n${server.logTail()}`)
    await delay(50) // bounded by the deadline above
  }
}

/** Waits (bounded) until the server has sealed every pending segment. */
function sealed(server: ChildServer): Promise<Array<{ id: number; state: string; row_count: number }>> {
  return until(server, () => segments(server), (segs) => !segs.some((s) => s.state === 'pending'), (segs) => `still pending: ${JSON.stringify(segs)}`)
}

/** Every event sent so far replays as a duplicate; each with other content is a conflict. */
async function replaysAreExact(server: ChildServer, acked: readonly Sent[], when: string): Promise<void> {
  for (let i = 0; i < acked.length; i += 1_000) {
    const chunk = acked.slice(i, i + 1_000)
    const res = await call(server, 'POST', '/v1/events', { events: chunk })
    assert.equal(res.status, 200, `${when}: ${JSON.stringify(res.json)}`)
    assert.equal(res.json.duplicates, chunk.length, `${when}: every acknowledged event is stored (once): ${JSON.stringify({ ...res.json, results: undefined })}`)
    const changed = chunk.filter((_, j) => j % 97 === 0).map((e) => ({ ...e, input_tokens: e.input_tokens + 1 }))
    const conflicting = await call(server, 'POST', '/v1/events', { events: changed })
    assert.equal(conflicting.status, 200, JSON.stringify(conflicting.json))
    assert.equal(conflicting.json.conflicts, changed.length, `${when}: the same id with other content is a conflict`)
  }
}

/** The server's log lines of one event. */
function logged(server: ChildServer, event: string): any[] {
  return server
    .logTail()
    .split('\n')
    .filter((l) => l.includes(`"event":"${event}"`))
    .map((l) => JSON.parse(l.slice(l.indexOf('{'))))
}

/**
 * Once every pending segment is sealed (and the live index purged of their ids), the
 * dedupe index names each stored event exactly once: a run rebuilt where a kill came
 * before it, no merge input left beside its output (counted twice).
 */
async function indexNamesEachOnce(server: ChildServer, segs: ReadonlyArray<{ row_count: number }>, after: string): Promise<void> {
  const stored = segs.reduce((n, s) => n + s.row_count, 0)
  const indexed = async () => {
    const status = await call(server, 'GET', '/v1/status')
    assert.equal(status.status, 200, JSON.stringify(status.json))
    return status.json.ingest.indexed_events as number
  }
  await until(server, indexed, (n) => n === stored, (n) => `after ${after}: the dedupe index names ${n} ids for ${stored} stored events`)
}

test('SIGKILL at every point of a seal and of its id run: nothing acknowledged lost or doubled, the index exact after each restart', { timeout: testTimeoutMs }, async (t) => {
  const seed = randomBytes(4).readUInt32LE(0)
  const dataDir = await mkdtemp(path.join(tmpdir(), 'tl-seal-kill-'))
  const armFile = path.join(dataDir, '..', `${path.basename(dataDir)}.arm`)
  const env = { TL_TEST_KILL_ARM: armFile, TOKENLEDGER_LOG_LEVEL: 'info' }
  const killAt = { env, args: ['--import', 'tsx', 'test/support/kill-at-server.ts'] }
  let server: ChildServer | null = null
  t.after(async () => {
    await server?.kill().catch(() => undefined)
    await rm(dataDir, { recursive: true, force: true })
    await rm(armFile, { force: true })
  })
  const startMs = Date.now() - 3_600_000
  const acked: Sent[] = []
  let previous: string | null = null
  for (const point of KILL_POINTS) {
    server = await startChildServer({ dataDir, ...killAt })
    await indexNamesEachOnce(server, await sealed(server), previous ?? 'the first start')
    if (previous === 'index-part') assert.equal(logged(server, 'dedupe_run_rebuilt').length, 1, 'a sealed segment killed before its run has it rebuilt at start')
    await replaysAreExact(server, acked, `after ${previous ?? 'the first start'}`)
    const fresh: Sent[] = Array.from({ length: eventsPerRound }, (_, i) => {
      const n = acked.length + i
      return { event_id: `sk-${seed}-${n}`, timestamp: startMs + n * 300, key_id: `k${n % 5}`, provider: 'openai', model: 'gpt-4o-mini', status_code: 200, input_tokens: 100 + (n % 900), output_tokens: n % 300, cost: `0.${String(n % 1000).padStart(3, '0')}` }
    })
    const res = await call(server, 'POST', '/v1/events', { events: fresh })
    assert.equal(res.status, 200, JSON.stringify(res.json))
    assert.equal(res.json.accepted, eventsPerRound)
    acked.push(...fresh)

    await writeFile(armFile, point)
    // The rollover answers after its swap; the seal (and the kill) follow in the background.
    const rolled = await call(server, 'POST', '/v1/admin/rollover').catch((err: Error) => ({ status: 0, json: err.message }))
    assert.ok(rolled.status === 200 || rolled.status === 0, JSON.stringify(rolled))
    const exit = await Promise.race([server.exited, delay(30_000).then(() => null)])
    assert.ok(exit, `the server did not reach ${point} within 30 s:\n${server.logTail()}`)
    assert.equal(exit.signal, 'SIGKILL', `killed at ${point}:\n${server.logTail()}`)
    const [killed] = logged(server, 'kill_at') as Array<{ point: string; runs: string[] }>
    assert.ok(killed, server.logTail())
    assert.equal(killed.point, point)
    if (point === 'run-rename:2') {
      // A merge's output renamed, both inputs still there: the case start-up must resolve.
      assert.ok(killed.runs.filter((n) => n.endsWith('.ids')).length >= 3, `the second rename was a merge's, with its inputs on disk: ${JSON.stringify(killed.runs)}`)
    }
    t.diagnostic(`killed at ${point} with ${acked.length} events acknowledged; index/: ${killed.runs.join(' ')}`)
    await rm(armFile, { force: true })
    server = null
    previous = point
  }

  // The end state, read by the plain server.
  server = await startChildServer({ dataDir, env: { TOKENLEDGER_LOG_LEVEL: 'info' } })
  const segs = await sealed(server)
  await indexNamesEachOnce(server, segs, `the last kill (${previous})`)
  assert.equal(segs.reduce((n, s) => n + s.row_count, 0), acked.length, `every acknowledged event stored once: ${JSON.stringify(segs)}`)
  await replaysAreExact(server, acked, 'at the end')
  const window = `from=${startMs - 60_000}&to=${Date.now() + 60_000}`
  const usage = await call(server, 'GET', `/v1/usage?${window}`)
  let milli = 0 // every cost is 0.xxx: summed exactly in thousandths
  for (const e of acked) milli += Number(e.cost.slice(2))
  const cost = `${Math.floor(milli / 1000)}.${String(milli % 1000).padStart(3, '0')}`.replace(/\.?0+$/, '')
  assert.deepEqual([usage.json.totals.requests, usage.json.totals.cost], [acked.length, cost], 'the totals count each event once, exactly')
  const verify = await call(server, 'GET', `/v1/admin/verify?${window}`)
  assert.equal(verify.status, 200, JSON.stringify(verify.json))
  assert.equal(verify.json.mismatch_count, 0, JSON.stringify(verify.json))
  const leftovers = [...(await readdir(path.join(dataDir, 'index'))), ...(await readdir(path.join(dataDir, 'archive')))].filter((n) => n.endsWith('.tmp') || n.endsWith('.tmp.wal'))
  assert.deepEqual(leftovers, [], 'no temp file left')
  await server.stop()
  server = null
})
