// Proves POST /v1/admin/backup: taken while ingest goes on (the write gate never
// held), a second server started on the copy serves every event acknowledged
// before the backup began, once, with totals equal to its own events; archives
// are hard-linked, live segments copied by DuckDB, a pending file kept pending
// (and sealed by the restored server). Bad targets are refused with the reason.
import assert from 'node:assert/strict'
import { existsSync } from 'node:fs'
import { mkdir, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import { test } from 'node:test'
import type { FastifyInstance } from 'fastify'
import type { BackupReport } from '../src/store/reports.js'
import { segmentPath } from '../src/store/layout.js'
import { build, event, post, rollover, T0 } from './helper.js'

async function newDir(t: Parameters<typeof build>[0]): Promise<string> {
  const parent = await mkdtemp(path.join(os.tmpdir(), 'tl-backup-'))
  t.after(() => rm(parent, { recursive: true, force: true }))
  return path.join(parent, 'copy')
}

async function exportIds(app: FastifyInstance): Promise<string[]> {
  const res = await app.inject({ url: `/v1/export?format=ndjson&from=0&to=${T0 + 3_600_000}` })
  assert.equal(res.statusCode, 200, res.body)
  return res.body.split('\n').filter((l) => l.length > 0).map((l) => (JSON.parse(l) as { event_id: string }).event_id)
}

test('a backup under load: the copy serves every event acknowledged before it began, once', async (t) => {
  // Segment 2's seal fails until the test lets it: the copy holds an archive, a pending file and the live segment.
  let sealTwo = false
  const { app, dataDir } = await build(t, { TOKENLEDGER_SEAL_RETRY: '50ms', TOKENLEDGER_SEAL_RETRY_MAX: '50ms' }, {
    beforeSealStep: async (_step, id) => {
      if (id === 2 && !sealTwo) throw new Error('seal parked by the test')
    },
  })
  const acked: string[] = []
  const postBatch = async (n: number) => {
    const events = Array.from({ length: n }, (_, i) => event({ input_tokens: 10 + i, cost: `0.00${i % 10}1` }))
    const res = await post(app, { events })
    assert.equal(res.status, 200, JSON.stringify(res.body))
    return events.map((e) => String(e.event_id))
  }
  acked.push(...(await postBatch(40)))
  await rollover(app)
  acked.push(...(await postBatch(30)))
  await rollover(app)
  await app.store.settle()
  acked.push(...(await postBatch(25)))
  assert.deepEqual(app.store.segmentList().map((s) => s.state), ['archived', 'pending', 'active'])

  // Ingest goes on while the backup runs; what was acknowledged before it began must be in it.
  const before = [...acked]
  let stop = false
  const during: string[] = []
  const load = (async () => {
    while (!stop) during.push(...(await postBatch(5)))
  })()
  const dir = await newDir(t)
  const res = await app.inject({ method: 'POST', url: '/v1/admin/backup', payload: { dir } })
  stop = true
  await load
  assert.equal(res.statusCode, 200, res.body)
  const report = res.json() as BackupReport
  assert.equal(report.gate_held_ms, 0)
  assert.deepEqual(report.segments.map((s) => [s.id, s.state, s.how]), [
    [1, 'archived', 'linked'],
    [2, 'pending', 'linked'],
    [3, 'active', 'snapshot'],
  ])
  assert.equal((await stat(segmentPath(dir, 'archive', 1))).ino, (await stat(segmentPath(dataDir, 'archive', 1))).ino, 'the archive is a hard link')
  assert.ok(existsSync(path.join(dir, 'backup.json')))
  assert.deepEqual(JSON.parse(await readFile(path.join(dir, 'backup.json'), 'utf8')), report)
  assert.ok(during.length > 0, 'ingest went on during the backup')

  // A second server on the copy.
  sealTwo = true
  const copy = await build(t, { TOKENLEDGER_DATA_DIR: dir })
  const ids = await exportIds(copy.app)
  assert.equal(new Set(ids).size, ids.length, 'no event twice')
  const present = new Set(ids)
  for (const id of before) assert.ok(present.has(id), `${id} acknowledged before the backup is in it`)
  for (const id of ids) assert.ok(before.includes(id) || during.includes(id), `${id} was acknowledged`)
  const usage = (await copy.app.inject({ url: `/v1/usage?from=0&to=${T0 + 3_600_000}` })).json() as { totals: { requests: number } }
  assert.equal(usage.totals.requests, ids.length, 'totals count exactly the copy\'s events')
  // The copy is a store like any other: its pending segment is sealed, and it takes new events.
  await copy.app.store.settle()
  assert.ok(copy.app.store.segmentList().every((s) => s.state !== 'pending'), JSON.stringify(copy.app.store.segmentList()))
  assert.equal((await post(copy.app, { events: [event()] })).status, 200)
  const verify = await copy.app.inject({ url: `/v1/admin/verify?from=${T0 - 86_400_000}&to=${T0 + 86_400_000}` })
  assert.equal(verify.json().mismatch_count, 0, verify.body)
})

test('bad backup targets are refused with the reason, and nothing is written', async (t) => {
  const { app, dataDir } = await build(t)
  assert.equal((await post(app, { events: [event()] })).status, 200)
  const cases: Array<[unknown, RegExp]> = [
    [{ dir: 'relative/dir' }, /\/dir: must be an absolute path/],
    [{ dir: path.join(dataDir, 'inside') }, /\/dir: must be outside the data directory/],
    [{ dir: path.dirname(dataDir) }, /\/dir: must be outside the data directory/],
    [{ dir: '/nonexistent-parent-tl/x' }, /\/dir: its parent directory \/nonexistent-parent-tl does not exist/],
    [{}, /dir/],
    [{ dir: '/tmp/x', extra: 1 }, /extra|additional/],
  ]
  for (const [payload, message] of cases) {
    const res = await app.inject({ method: 'POST', url: '/v1/admin/backup', payload: payload as object })
    assert.equal(res.statusCode, 400, `${JSON.stringify(payload)}: ${res.body}`)
    assert.match(res.json().message, message)
  }
  assert.equal(existsSync(path.join(dataDir, 'inside')), false)
  const full = await newDir(t)
  await mkdir(full)
  await writeFile(path.join(full, 'something'), 'x')
  const res = await app.inject({ method: 'POST', url: '/v1/admin/backup', payload: { dir: full } })
  assert.equal(res.statusCode, 400)
  assert.match(res.json().message, /exists and is not empty/)
})

test('a backup carries the price table in use and every past version: the copy prices as the original did and explains old price refs', async (t) => {
  const { app } = await build(t)
  const put = async (price: string) => {
    const res = await app.inject({ method: 'PUT', url: '/v1/admin/prices', headers: { 'content-type': 'application/json' }, payload: JSON.stringify({ prices: [{ provider: 'openai', model: 'gpt-4o-mini', per_million: { input: price, output: '1' } }] }) })
    assert.equal(res.statusCode, 200, res.body)
    return res.json().version as string
  }
  const v1 = await put('2')
  const first = event({ cost: undefined, model: 'gpt-4o-mini', input_tokens: 1_000_000, output_tokens: 0 })
  assert.equal((await post(app, { events: [first] })).status, 200)
  const v2 = await put('3')

  const dir = await newDir(t)
  const res = await app.inject({ method: 'POST', url: '/v1/admin/backup', payload: { dir } })
  assert.equal(res.statusCode, 200, res.body)
  const report = res.json() as BackupReport
  assert.deepEqual(report.prices, { version: v2, history: 2 })
  assert.ok(existsSync(path.join(dir, 'backup.json')))

  const copy = await build(t, { TOKENLEDGER_DATA_DIR: dir })
  assert.equal((await copy.app.inject({ url: '/v1/admin/prices' })).json().version, v2, 'the copy starts on the table in use')
  const old = await copy.app.inject({ url: `/v1/admin/prices?version=${v1}` })
  assert.equal(old.statusCode, 200, 'the version that priced the first event is still readable in the copy')
  const stored = (await copy.app.inject({ url: `/v1/events/${first.event_id}` })).json()
  assert.deepEqual([stored.cost, stored.price_ref], ['2', v1])
  const second = event({ cost: undefined, model: 'gpt-4o-mini', input_tokens: 1_000_000, output_tokens: 0 })
  assert.equal((await post(copy.app, { events: [second] })).status, 200)
  const priced = (await copy.app.inject({ url: `/v1/events/${second.event_id}` })).json()
  assert.deepEqual([priced.cost, priced.price_ref], ['3', v2], 'an event posted to the copy is priced by the copied table')
})

test('a backup without a price table says so and writes no prices file', async (t) => {
  const { app } = await build(t)
  const dir = await newDir(t)
  const res = await app.inject({ method: 'POST', url: '/v1/admin/backup', payload: { dir } })
  assert.equal(res.statusCode, 200, res.body)
  assert.deepEqual((res.json() as BackupReport).prices, { version: null, history: 0 })
  assert.equal(existsSync(path.join(dir, 'prices.json')), false)
})
