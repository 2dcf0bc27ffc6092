// Proves the observability surface: /metrics counts every ingest outcome
// exactly as the answers told the clients, its commit and gate histograms
// count every group commit (and how many requests each coalesced), HTTP
// latency is labelled by route template so no request can mint a label value,
// sealing trouble shows as a backlog with its age and errors; /v1/status
// summarises the configuration from an allow-list (token counts, never
// tokens); the log has one line per request with its request id, and neither
// an Authorization header nor an event's fields.

import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { mkdtemp, readFile, rm } from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import { Writable } from 'node:stream'
import { test, type TestContext } from 'node:test'
import type { FastifyInstance } from 'fastify'
import { pino } from 'pino'
import { buildApp } from '../src/app.js'
import { ManualClock } from '../src/clock.js'
import { loadConfig, type Config } from '../src/config.js'
import { encodeEvents } from '../src/ingest/batch.js'
import { validateEvent } from '../src/ingest/event.js'
import type { AppendRequest } from '../src/store/outcomes.js'
import { build, event, latch, post, rollover, T0 } from './helper.js'

interface Sample {
  name: string
  labels: Record<string, string>
  value: number
}

/** Parses the Prometheus text format (samples only). */
function parse(text: string): Sample[] {
  const samples: Sample[] = []
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue
    const m = /^([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)$/.exec(line)
    assert.ok(m, `not a sample line: ${line}`)
    const labels: Record<string, string> = {}
    for (const l of (m[2] ?? '').matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) labels[l[1]!] = l[2]!
    samples.push({ name: m[1]!, labels, value: Number(m[3]) })
  }
  return samples
}

async function scrape(app: FastifyInstance, headers: Record<string, string> = {}): Promise<Sample[]> {
  const res = await app.inject({ url: '/metrics', headers })
  assert.equal(res.statusCode, 200, res.body)
  assert.match(String(res.headers['content-type']), /^text\/plain; version=0\.0\.4/)
  return parse(res.body)
}

/** The value of the one sample with exactly these labels. */
function value(samples: Sample[], name: string, labels: Record<string, string> = {}): number {
  const want = JSON.stringify(Object.entries(labels).sort())
  const found = samples.filter((s) => s.name === name && JSON.stringify(Object.entries(s.labels).sort()) === want)
  assert.equal(found.length, 1, `${name}${JSON.stringify(labels)}: ${found.length} samples`)
  return found[0]!.value
}

function labelValues(samples: Sample[], name: string, label: string): string[] {
  return [...new Set(samples.filter((s) => s.name === name).map((s) => s.labels[label]!))].sort()
}

/** An AppendRequest of `n` fresh valid events (for driving the store directly). */
function request(n: number): AppendRequest {
  const events = Array.from({ length: n }, (_, index) => {
    const res = validateEvent(event(), { nowMs: T0, eventRetentionMs: 30 * 86_400_000, maxFutureSkewMs: 300_000 })
    if (!res.ok) throw new Error(JSON.stringify(res.errors))
    return { index, event: res.event }
  })
  return { events: encodeEvents(events), rejected: [], atomic: false, bytes: n * 512 }
}

const TOKEN_SCOPES = ['ingest', 'query', 'admin', 'metrics'] as const
type Tokens = Record<(typeof TOKEN_SCOPES)[number], string[]>

/**
 * The app with bearer tokens configured (fresh random values, two per scope,
 * through the TOKENLEDGER_*_TOKENS variables) and a logger at info writing into `lines`.
 */
async function buildWithTokens(t: TestContext, extra: Record<string, unknown> = {}) {
  const tokens = Object.fromEntries(TOKEN_SCOPES.map((s) => [s, [randomBytes(32).toString('hex'), randomBytes(32).toString('hex')]])) as Tokens
  const dataDir = await mkdtemp(path.join(os.tmpdir(), 'tl-obs-'))
  const env: Record<string, string> = { TOKENLEDGER_DATA_DIR: dataDir }
  for (const scope of TOKEN_SCOPES) env[`TOKENLEDGER_${scope.toUpperCase()}_TOKENS`] = tokens[scope].join(',')
  const loaded = loadConfig(env)
  const config = { ...loaded, ...extra } as Config
  const lines: string[] = []
  const stream = new Writable({
    write(chunk: Buffer, _encoding, done) {
      lines.push(...String(chunk).split('\n').filter((l) => l !== ''))
      done()
    },
  })
  const app = await buildApp({ config, clock: new ManualClock(T0) }, pino({ level: 'info' }, stream))
  t.after(async () => {
    await app.close()
    await rm(dataDir, { recursive: true, force: true })
  })
  const bearer = (scope: keyof Tokens) => ({ authorization: `Bearer ${tokens[scope][0]}` })
  return { app, tokens, lines, bearer }
}

test('every ingest outcome is counted exactly as the answers told the clients', async (t) => {
  const { app } = await build(t)
  const a = event()
  const b = event()
  const first = await post(app, [a, a, { ...a, input_tokens: 999 }, { ...event(), input_tokens: -1 }, b])
  assert.deepEqual([first.status, first.body.accepted, first.body.duplicates, first.body.conflicts, first.body.rejected], [200, 2, 1, 1, 1])
  // Atomic and refused: the conflict is counted, the acceptable event is `refused` (not stored).
  const refused = await post(app, [event(), { ...b, model: 'other' }], '?atomic=true')
  assert.deepEqual([refused.status, refused.body.accepted, refused.body.conflicts], [422, 0, 1])
  // Atomic, refused before the store (a validation reject): one rejected, two refused.
  const early = await post(app, [event(), event(), { ...event(), status_code: 99 }], '?atomic=true')
  assert.deepEqual([early.status, early.body.rejected], [422, 1])

  const m = await scrape(app)
  const outcomes = Object.fromEntries(['accepted', 'duplicate', 'conflict', 'rejected', 'refused'].map((o) => [o, value(m, 'tokenledger_ingest_events_total', { source: 'native', outcome: o })]))
  assert.deepEqual(outcomes, { accepted: 2, duplicate: 1, conflict: 2, rejected: 2, refused: 3 })
  assert.equal(value(m, 'tokenledger_ingest_batch_events_count'), 3)
  assert.equal(value(m, 'tokenledger_ingest_batch_events_sum'), 5 + 2 + 3)
  assert.equal(value(m, 'tokenledger_ingest_batch_events_bucket', { le: '2' }), 1)
  assert.equal(value(m, 'tokenledger_ingest_batch_events_bucket', { le: '5' }), 3)
  assert.equal(value(m, 'tokenledger_ingest_committed_events_total'), 2, 'only the accepted events were written')
})

test('outcomes are counted by the store as it answers, per door, whatever route (or none) asked', async (t) => {
  const { app } = await build(t)
  // Straight into the store, no HTTP reply to read: counted under its source.
  const first = await app.store.append({ ...request(3), source: 'otlp' })
  const again = await app.store.append({ ...request(2), source: 'litellm' })
  assert.deepEqual([first.accepted, again.accepted], [3, 2])
  const m = await scrape(app)
  assert.equal(value(m, 'tokenledger_ingest_events_total', { source: 'otlp', outcome: 'accepted' }), 3)
  assert.equal(value(m, 'tokenledger_ingest_events_total', { source: 'litellm', outcome: 'accepted' }), 2)
  assert.equal(value(m, 'tokenledger_ingest_events_total', { source: 'native', outcome: 'accepted' }), 0)
  assert.deepEqual(labelValues(m, 'tokenledger_ingest_events_total', 'source'), ['litellm', 'native', 'openmeter', 'otlp'])
})

test('the commit and gate histograms count every group commit and how many requests it coalesced', async (t) => {
  const gate = latch()
  let parked = false
  const { app } = await build(t, {}, {
    onCommitHoldingGate: async () => {
      if (parked) return
      parked = true
      gate.reached()
      await gate.opened
    },
  })
  const first = app.store.append(request(1))
  await gate.arrived // commit 1 holds the gate; the next 8 requests queue behind it and commit as one
  const rest = Array.from({ length: 8 }, () => app.store.append(request(3)))
  assert.equal(app.store.stats().queuedRequests, 8)
  let m = await scrape(app)
  assert.equal(value(m, 'tokenledger_ingest_queued_requests'), 8)
  assert.equal(value(m, 'tokenledger_ingest_queued_events'), 24)
  assert.equal(value(m, 'tokenledger_ingest_queued_bytes'), 24 * 512)
  gate.open()
  await Promise.all([first, ...rest])

  m = await scrape(app)
  const commits = value(m, 'tokenledger_ingest_commits_total')
  assert.equal(commits, 2)
  assert.equal(value(m, 'tokenledger_ingest_commit_duration_seconds_count'), commits)
  assert.equal(value(m, 'tokenledger_ingest_commit_events_count'), commits)
  assert.equal(value(m, 'tokenledger_ingest_commit_events_sum'), 1 + 8 * 3)
  assert.equal(value(m, 'tokenledger_ingest_commit_requests_sum'), 1 + 8)
  assert.equal(value(m, 'tokenledger_ingest_commit_requests_bucket', { le: '4' }), 1, 'one commit of 1 request, one of 8')
  assert.equal(value(m, 'tokenledger_ingest_commit_requests_bucket', { le: '8' }), 2)
  assert.equal(value(m, 'tokenledger_gate_wait_seconds_count', { task: 'append' }), commits)
  assert.equal(value(m, 'tokenledger_gate_hold_seconds_count', { task: 'append' }), commits)
  assert.equal(value(m, 'tokenledger_ingest_queued_requests'), 0)

  // A rollover takes the gate too, under its own label.
  await rollover(app)
  m = await scrape(app)
  assert.equal(value(m, 'tokenledger_gate_hold_seconds_count', { task: 'rollover' }), 1)
  assert.equal(value(m, 'tokenledger_rollovers_total'), 1)
})

test('a wait for the write gate that gives up is counted', async (t) => {
  const gate = latch()
  const { app } = await build(t, { TOKENLEDGER_GATE_WAIT: '20ms' })
  const holder = app.store.withGate(async () => {
    gate.reached()
    await gate.opened
  })
  await gate.arrived
  await assert.rejects(app.store.append(request(2)), (err: Error & { code?: string }) => err.code === 'TL_GATE_TIMEOUT')
  gate.open()
  await holder
  const m = await scrape(app)
  assert.equal(value(m, 'tokenledger_gate_timeouts_total', { task: 'append' }), 1)
  assert.equal(value(m, 'tokenledger_gate_hold_seconds_count', { task: 'other' }), 1)
  assert.equal(value(m, 'tokenledger_ingest_commits_total'), 0)
})

test('HTTP latency and responses are labelled by route template; unknown paths share one label', async (t) => {
  const { app } = await build(t)
  await scrape(app) // its own route appears from the next scrape on
  assert.equal((await app.inject({ url: '/v1/events/abc' })).statusCode, 404)
  assert.equal((await app.inject({ url: '/v1/events/def' })).statusCode, 404)
  assert.equal((await app.inject({ url: `/no-such-path-${randomBytes(8).toString('hex')}` })).statusCode, 404)
  const before = await scrape(app)
  const routes = labelValues(before, 'tokenledger_http_request_duration_seconds_count', 'route')
  assert.deepEqual(routes, ['/metrics', '/v1/events/:event_id', 'unmatched'])
  assert.equal(value(before, 'tokenledger_http_request_duration_seconds_count', { method: 'GET', route: '/v1/events/:event_id' }), 2)
  assert.equal(value(before, 'tokenledger_http_responses_total', { method: 'GET', route: '/v1/events/:event_id', status_class: '4xx' }), 2)

  // More random paths and methods: counted, but no new label value.
  for (let i = 0; i < 5; i++) await app.inject({ url: `/x/${randomBytes(8).toString('hex')}?q=${i}` })
  await app.inject({ method: 'DELETE', url: '/v1/events' })
  const after = await scrape(app)
  assert.deepEqual(labelValues(after, 'tokenledger_http_request_duration_seconds_count', 'route'), routes)
  assert.equal(value(after, 'tokenledger_http_responses_total', { method: 'GET', route: 'unmatched', status_class: '4xx' }), 6)
  assert.equal(value(after, 'tokenledger_http_responses_total', { method: 'DELETE', route: 'unmatched', status_class: '4xx' }), 1)
  assert.equal(value(after, 'tokenledger_http_responses_total', { method: 'GET', route: '/metrics', status_class: '2xx' }), 2)
  assert.ok(!after.some((s) => Object.values(s.labels).some((v) => v.includes('abc') || v.startsWith('/x/'))), 'no raw URL became a label')
})

test('sealing trouble shows as a backlog with its age, failures and the last error', async (t) => {
  const { app, clock } = await build(t, {}, {
    beforeSealStep: async () => {
      throw new Error('disk on fire')
    },
  })
  assert.equal((await post(app, [event(), event()])).status, 200)
  const rolled = await rollover(app)
  await app.store.settle()
  clock.advance(90_000)

  const m = await scrape(app)
  assert.equal(value(m, 'tokenledger_seal_backlog_segments'), 1)
  assert.equal(value(m, 'tokenledger_segments', { state: 'pending' }), 1)
  assert.equal(value(m, 'tokenledger_seal_failing_segments'), 1)
  assert.equal(value(m, 'tokenledger_seal_oldest_pending_age_seconds'), 90)
  assert.ok(value(m, 'tokenledger_seal_failures_total') >= 1)
  assert.equal(value(m, 'tokenledger_seals_total'), 0)

  const status = await app.inject({ url: '/v1/status' })
  assert.equal(status.statusCode, 200, status.body)
  const sealing = (status.json() as { sealing: { backlog: number; oldest_pending_age_s: number; pending: Array<{ id: number; row_count: number; seal: { attempts: number; last_error: string } }> } }).sealing
  assert.equal(sealing.backlog, 1)
  assert.equal(sealing.oldest_pending_age_s, 90)
  assert.equal(sealing.pending.length, 1)
  assert.equal(sealing.pending[0]!.id, rolled.segment_id)
  assert.equal(sealing.pending[0]!.row_count, 2)
  assert.match(sealing.pending[0]!.seal.last_error, /disk on fire/)
})

test('DuckDB memory is measured per instance, at most every few seconds', async (t) => {
  const { app, clock } = await build(t)
  assert.equal((await post(app, [event()])).status, 200)
  let m = await scrape(app)
  assert.ok(value(m, 'tokenledger_duckdb_memory_bytes', { instance: 'live' }) > 0)
  assert.ok(value(m, 'tokenledger_duckdb_memory_bytes', { instance: 'files' }) > 0)
  assert.equal(value(m, 'tokenledger_duckdb_temporary_storage_bytes', { instance: 'live' }), 0)
  assert.equal(value(m, 'tokenledger_duckdb_memory_measured_timestamp_seconds'), T0 / 1000)
  assert.equal(value(m, 'tokenledger_duckdb_memory_reads_total', { result: 'ok' }), 1)
  m = await scrape(app)
  assert.equal(value(m, 'tokenledger_duckdb_memory_reads_total', { result: 'ok' }), 1, 'a scrape soon after reuses the figures')
  clock.advance(5_000)
  m = await scrape(app)
  assert.equal(value(m, 'tokenledger_duckdb_memory_reads_total', { result: 'ok' }), 2)
  assert.equal(value(m, 'tokenledger_duckdb_memory_measured_timestamp_seconds'), (T0 + 5_000) / 1000)
})

test('DuckDB memory is never queued behind queries: with every query slot busy the scrape skips it', async (t) => {
  const { app } = await build(t, { TOKENLEDGER_MAX_CONCURRENT_QUERIES: '1' })
  const busy = latch()
  const query = app.store.snapshot(async () => {
    busy.reached()
    await busy.opened
  })
  await busy.arrived
  const m = await scrape(app)
  assert.equal(value(m, 'tokenledger_duckdb_memory_reads_total', { result: 'busy' }), 1)
  assert.ok(!m.some((s) => s.name === 'tokenledger_duckdb_memory_bytes'), 'no figures yet: none shown rather than zeros')
  busy.open()
  await query
})

test('/v1/status: version, uptime, readiness, a configuration summary with token counts and no token', async (t) => {
  const secret = `not-for-status-${randomBytes(16).toString('hex')}`
  // A setting the summary does not know (as a future secret would be) must not appear.
  const { app, tokens, bearer } = await buildWithTokens(t, { futureSecret: secret })
  const res = await app.inject({ url: '/v1/status', headers: bearer('admin') })
  assert.equal(res.statusCode, 200, res.body)
  for (const token of Object.values(tokens).flat()) assert.ok(!res.body.includes(token), 'a token value is in /v1/status')
  assert.ok(!res.body.includes(secret), 'a setting outside the allow-list is in /v1/status')
  const body = res.json() as Record<string, any>
  assert.match(body.version, /^\d+\.\d+\.\d+/)
  assert.equal(body.started_at, new Date(T0).toISOString())
  assert.equal(body.uptime_s, 0)
  assert.deepEqual([body.ready, body.reasons], [true, []])
  assert.deepEqual(body.config.auth, { tokens: { ingest: 2, query: 2, admin: 2, metrics: 2 } })
  assert.equal(body.config.host, '127.0.0.1')
  assert.equal(body.config.limits.max_batch_events, 10_000)
  assert.equal(body.config.duckdb.memory_bytes, 2 * 1024 ** 3)
  assert.deepEqual(Object.keys(body).sort(), ['answer_cache', 'config', 'ingest', 'last_rollover', 'live_rollups', 'ready', 'reasons', 'retention', 'rollovers', 'sealing', 'started_at', 'tiers', 'uptime_s', 'version'])
  assert.equal(body.live_rollups, null, 'no query yet: no live rollups read into memory')
  assert.deepEqual(body.answer_cache, { hits: 0, misses: 0, entries: 0, rows: 0, generation: null }, 'no query asked yet')
  assert.equal(body.config.limits.query_cache_rows, 100_000)
  assert.deepEqual(body.tiers, { active: 1, pending: 0, archived: 0, bytes: 0, rows: 0, bytes_by_state: { active: 0, pending: 0, archived: 0 } })
  assert.deepEqual(body.sealing, { sealed: 0, failures: 0, backlog: 0, oldest_pending_age_s: 0, pending: [], failing: [] })
  assert.equal(body.retention.last_report, null)

  const report = await app.inject({ method: 'POST', url: '/v1/admin/retention', headers: bearer('admin') })
  assert.equal(report.statusCode, 200, report.body)
  const after = (await app.inject({ url: '/v1/status', headers: bearer('admin') })).json() as Record<string, any>
  assert.deepEqual(after.retention.last_report, report.json())
  assert.equal(after.retention.runs, 1)
})

test('the log: one line per request with its request id; no Authorization header and no event field at info', async (t) => {
  const { app, tokens, lines, bearer } = await buildWithTokens(t)
  const mark = `sentinel${randomBytes(6).toString('hex')}`
  const fields = {
    key_id: `key-${mark}`,
    model: `model-${mark}`,
    team_id: `team-${mark}`,
    endpoint: `/endpoint/${mark}`,
    tags: { [`tag-${mark}`]: `value-${mark}` },
    detail: { prompt: `prompt-${mark}` },
  }
  lines.length = 0 // start-up lines
  const answers = [
    await app.inject({ method: 'POST', url: '/v1/events', headers: bearer('ingest'), payload: [event(fields), { ...event(fields), input_tokens: -1 }] }),
    await app.inject({ method: 'POST', url: '/v1/events', headers: { ...bearer('ingest'), 'content-type': 'application/x-ndjson' }, payload: `${JSON.stringify(event(fields))}\n` }),
    await app.inject({ url: `/v1/usage?from=0&to=${T0}&key_id=other`, headers: bearer('query') }),
    await app.inject({ url: '/healthz', headers: { 'x-request-id': 'lb-probe-42' } }),
    await app.inject({ url: `/no-such-path`, headers: { authorization: `Bearer ${tokens.query[1]}` } }),
    await app.inject({ url: '/metrics', headers: bearer('metrics') }),
    await app.inject({ url: '/healthz', headers: { 'x-request-id': `forged id ${'x'.repeat(200)}` } }),
  ]
  assert.deepEqual(
    answers.map((a) => a.statusCode),
    [200, 200, 200, 200, 404, 200, 200],
  )
  await new Promise((resolve) => setImmediate(resolve)) // the last request's onResponse hooks (and its log line) run after its answer
  const entries = lines.map((l) => JSON.parse(l) as Record<string, unknown>)
  const requestLines = entries.filter((e) => e.msg === 'request')
  assert.equal(requestLines.length, answers.length, lines.join('\n'))
  const ids = requestLines.map((e) => e.reqId)
  assert.ok(ids.every((id) => typeof id === 'string' && id.length > 0))
  assert.equal(new Set(ids).size, answers.length, 'each request its own id')
  assert.ok(ids.includes('lb-probe-42'), 'a caller-supplied x-request-id is the request id')
  assert.ok(!ids.some((id) => String(id).includes('forged')), 'an x-request-id with spaces or past 128 characters is replaced')
  const principals = requestLines.map((e) => e.principal)
  assert.equal(principals.filter((p) => typeof p === 'string' && /^[0-9a-f]{12}$/.test(p)).length, 4, 'authenticated requests (two ingests, usage, metrics) name their token by digest prefix; a 404 checks no token')
  for (const id of ids) assert.equal(entries.filter((e) => e.reqId === id).length, 1, `request ${String(id)} logged more than one line`)
  assert.ok(requestLines.every((e) => e.level === 30 && typeof e.statusCode === 'number' && typeof e.ms === 'number'))

  const all = lines.join('\n')
  for (const token of Object.values(tokens).flat()) assert.ok(!all.includes(token), 'a token is in the log')
  assert.ok(!/authorization|bearer/i.test(all), 'an Authorization header is in the log')
  assert.ok(!all.includes(mark), 'an event field value is in the log')
})

test("Node's default metrics keep their standard names (process_*, nodejs_*), so stock Node.js dashboards find them", async (t) => {
  const { app } = await build(t)
  const samples = await scrape(app)
  const names = new Set(samples.map((s) => s.name))
  for (const name of ['process_cpu_user_seconds_total', 'process_resident_memory_bytes', 'nodejs_heap_size_used_bytes', 'nodejs_eventloop_lag_seconds', 'nodejs_version_info']) {
    assert.ok(names.has(name), `${name} is scraped under its standard name`)
  }
  const standard = [...names].filter((n) => n.startsWith('process_') || n.startsWith('nodejs_'))
  assert.ok(standard.length >= 10, `Node's default metrics are there: ${standard.join(', ')}`)
  const renamed = standard.filter((n) => names.has(`tokenledger_${n}`))
  assert.deepEqual(renamed, [], 'no default metric is also (or instead) under the service prefix')
  assert.ok(!names.has('tokenledger_process_cpu_user_seconds_total'))
  // Everything else is the service's own and starts tokenledger_.
  const foreign = [...names].filter((n) => !n.startsWith('tokenledger_') && !n.startsWith('process_') && !n.startsWith('nodejs_'))
  assert.deepEqual(foreign, [])
})

test("every tokenledger_* metric a scrape shows is documented in the README's Observability section", async (t) => {
  // Proves no metric (query_cache_hits_total was one) is left out of the README's table.
  const { app } = await build(t)
  const res = await app.inject({ url: '/metrics' })
  const families = [...res.body.matchAll(/^# TYPE tokenledger_(\w+) /gm)].map((m) => m[1]!)
  assert.ok(families.length > 30, families.join(', '))
  const readme = await readFile(new URL('../README.md', import.meta.url), 'utf8')
  const section = readme.slice(readme.indexOf('## Observability'), readme.indexOf('\n## ', readme.indexOf('## Observability') + 1))
  const missing = families.filter((f) => !new RegExp(`\`(tokenledger_)?${f}[\`{]`).test(section))
  assert.deepEqual(missing, [], 'metrics the README does not document')
})

test('the log: secret-looking query parameters are redacted in the logged URL, the rest kept', async (t) => {
  const { app, tokens, lines, bearer } = await buildWithTokens(t)
  const secret = tokens.query[0]!
  lines.length = 0
  const urls = [
    `/v1/usage?from=0&to=${T0}&token=${secret}`,
    `/v1/usage?access_token=${secret}&from=0`,
    `/v1/events?api_key=${secret}&limit=5&key_id=key_a`,
    `/v1/events?API-KEY=${secret}&x=1`,
    `/no-such-path?password=${secret}&client_secret=${secret}&sig=${secret}`,
    `/healthz?apikey=${encodeURIComponent(secret)}`,
  ]
  for (const url of urls) await app.inject({ url, headers: bearer('query') })
  await new Promise((resolve) => setImmediate(resolve))
  const logged = lines.map((l) => JSON.parse(l) as Record<string, unknown>).filter((e) => e.msg === 'request').map((e) => String(e.url))
  assert.equal(logged.length, urls.length, lines.join('\n'))
  assert.ok(!lines.join('\n').includes(secret), `a secret query parameter is in the log:\n${logged.join('\n')}`)
  assert.equal(logged[0], `/v1/usage?from=0&to=${T0}&token=[REDACTED]`)
  assert.equal(logged[2], '/v1/events?api_key=[REDACTED]&limit=5&key_id=key_a', 'key_id (not a secret) is kept')
  assert.equal(logged[4], '/no-such-path?password=[REDACTED]&client_secret=[REDACTED]&sig=[REDACTED]')
})
