// Proves bearer-token auth: each scope on each route group (401 without or with a
// wrong token, 403 with a token of another scope, served with its own scope or
// admin), malformed and oversized Authorization headers, that an unauthenticated
// body is never parsed, that every route of the app is in the table below (so a
// new route cannot ship without a decided scope), and secure defaults: a public
// host without tokens is refused at start-up, by the real server process too.

import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'
import { rm } from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import { spawn } from 'node:child_process'
import { once } from 'node:events'
import { test } from 'node:test'
import { gzipSync } from 'node:zlib'
import fc from 'fast-check'
import { ConfigError, isLoopbackHost, loadConfig } from '../src/config.js'
import { allows, TokenTable } from '../src/plugins/auth.js'
import { build, event, T0 } from './helper.js'
import { repoRoot } from './support/child-server.js'

const TOKENS = {
  ingest: 'i'.repeat(32) + '-ingest',
  query: 'q'.repeat(32) + '-query',
  metrics: 'm'.repeat(32) + '-metrics',
  admin: 'a'.repeat(32) + '-admin',
}
const AUTH_ENV = {
  TOKENLEDGER_INGEST_TOKENS: TOKENS.ingest,
  TOKENLEDGER_QUERY_TOKENS: TOKENS.query,
  TOKENLEDGER_METRICS_TOKENS: TOKENS.metrics,
  TOKENLEDGER_ADMIN_TOKENS: TOKENS.admin,
}

type Scope = 'open' | keyof typeof TOKENS
interface RouteCase {
  method: 'GET' | 'POST' | 'PUT'
  url: string
  scope: Scope
  /** A body the route takes (the other doors in), with its content type. */
  body?: { type: string; payload: string }
}

const CLOUD_EVENT = {
  specversion: '1.0', id: 'auth-ce-1', source: 'auth-test', type: 'prompt', subject: 'customer-1', time: new Date(T0 - 60_000).toISOString(),
  data: { key_id: 'key_a', provider: 'openai', model: 'gpt-4o-mini', input_tokens: 10, output_tokens: 2 },
}

// Written from the issue, not read from the code: what each route must require.
/** Where the admin's call of POST /v1/admin/backup writes its copy (removed after the test). */
const BACKUP_DIR = path.join(os.tmpdir(), `tl-auth-backup-${process.pid}-${Date.now()}`)

const ROUTES: RouteCase[] = [
  { method: 'GET', url: '/healthz', scope: 'open' },
  { method: 'GET', url: '/readyz', scope: 'open' },
  { method: 'GET', url: '/openapi.json', scope: 'open' },
  { method: 'GET', url: '/openapi.yaml', scope: 'open' },
  { method: 'GET', url: '/docs', scope: 'open' },
  { method: 'POST', url: '/v1/events', scope: 'ingest' },
  { method: 'POST', url: '/api/v1/events', scope: 'ingest', body: { type: 'application/cloudevents+json', payload: JSON.stringify(CLOUD_EVENT) } },
  { method: 'POST', url: '/v1/traces', scope: 'ingest', body: { type: 'application/json', payload: '{"resourceSpans":[]}' } },
  { method: 'POST', url: '/v1/integrations/litellm', scope: 'ingest', body: { type: 'application/json', payload: readFileSync(new URL('./fixtures/litellm/success-openai.json', import.meta.url), 'utf8') } },
  { method: 'GET', url: '/v1/events', scope: 'query' },
  { method: 'GET', url: '/v1/events/evt-1', scope: 'query' },
  { method: 'GET', url: '/v1/usage', scope: 'query' },
  { method: 'GET', url: '/v1/usage/timeseries?bucket=1d', scope: 'query' },
  { method: 'GET', url: '/v1/usage/dimensions', scope: 'query' },
  { method: 'GET', url: '/v1/export?format=ndjson', scope: 'query' },
  { method: 'GET', url: '/v1/admin/segments', scope: 'admin' },
  { method: 'POST', url: '/v1/admin/rollover', scope: 'admin' },
  { method: 'POST', url: '/v1/admin/retention', scope: 'admin' },
  { method: 'GET', url: '/v1/admin/verify', scope: 'admin' },
  { method: 'POST', url: '/v1/admin/backup', scope: 'admin', body: { type: 'application/json', payload: JSON.stringify({ dir: BACKUP_DIR }) } },
  { method: 'GET', url: '/v1/admin/prices', scope: 'admin' },
  { method: 'PUT', url: '/v1/admin/prices', scope: 'admin', body: { type: 'application/json', payload: JSON.stringify({ prices: [] }) } },
  { method: 'POST', url: `/v1/admin/reprice?from=${T0 - 86_400_000}`, scope: 'admin' },
  { method: 'GET', url: '/v1/status', scope: 'admin' },
  { method: 'GET', url: '/metrics', scope: 'metrics' },
]

function bearer(token: string) {
  return { authorization: `Bearer ${token}` }
}

test('every route: 401 without a token or with a wrong one, 403 with another scope, served with its scope or admin', async (t) => {
  const { app } = await build(t, AUTH_ENV)
  t.after(() => rm(BACKUP_DIR, { recursive: true, force: true }))
  const seeded = await app.inject({ method: 'POST', url: '/v1/events', payload: [event({ event_id: 'evt-1' })], headers: bearer(TOKENS.admin) })
  assert.equal(seeded.json().accepted, 1)
  const call = (r: RouteCase, headers: Record<string, string>) =>
    app.inject({
      method: r.method,
      url: r.url,
      headers: r.body ? { ...headers, 'content-type': r.body.type } : headers,
      ...(r.body ? { payload: r.body.payload } : r.method === 'POST' && r.url === '/v1/events' ? { payload: [event()] } : {}),
    })
  for (const r of ROUTES) {
    const what = `${r.method} ${r.url}`
    const anonymous = await call(r, {})
    if (r.scope === 'open') {
      assert.ok(anonymous.statusCode < 400, `${what} is open, got ${anonymous.statusCode}`)
      continue
    }
    assert.equal(anonymous.statusCode, 401, `${what} without a token`)
    // The other doors answer refusals in their own formats (problem+json, OTLP's Status): status and header are checked for all.
    if (!r.body) assert.equal(anonymous.json().code, 'TL_UNAUTHORIZED')
    assert.match(String(anonymous.headers['www-authenticate']), /^Bearer realm="tokenledger"/)
    const wrong = await call(r, bearer('z'.repeat(40)))
    assert.equal(wrong.statusCode, 401, `${what} with an unknown token`)
    assert.match(String(wrong.headers['www-authenticate']), /error="invalid_token"/)
    for (const [scope, token] of Object.entries(TOKENS) as Array<[keyof typeof TOKENS, string]>) {
      const res = await call(r, bearer(token))
      if (scope === r.scope || scope === 'admin') {
        assert.ok(res.statusCode < 400, `${what} with the ${scope} token: ${res.statusCode} ${res.body.slice(0, 200)}`)
      } else {
        assert.equal(res.statusCode, 403, `${what} with the ${scope} token`)
        if (!r.body) {
          assert.equal(res.json().code, 'TL_FORBIDDEN')
          assert.match(res.json().message, new RegExp(`needs a token with the ${r.scope} scope`))
        }
        assert.match(String(res.headers['www-authenticate']), new RegExp(`error="insufficient_scope", scope="${r.scope}"`))
      }
    }
  }
})

test('the table above covers every route the app serves', async (t) => {
  const { app } = await build(t, AUTH_ENV)
  const doc = (await app.inject({ url: '/openapi.json' })).json() as { paths: Record<string, Record<string, unknown>> }
  const known = new Set(ROUTES.map((r) => `${r.method} ${r.url.split('?')[0]!.replace('/evt-1', '/{event_id}')}`))
  for (const [p, methods] of Object.entries(doc.paths)) {
    for (const m of Object.keys(methods)) assert.ok(known.has(`${m.toUpperCase()} ${p}`), `${m.toUpperCase()} ${p} has no row in the auth table`)
  }
  for (const r of ROUTES) assert.ok(app.hasRoute({ method: r.method, url: r.url.split('?')[0]!.replace('/evt-1', '/:event_id') }), `${r.method} ${r.url} exists`)
})

test('malformed, oversized and near-miss Authorization headers are 401; the scheme is case-insensitive', async (t) => {
  const { app } = await build(t, AUTH_ENV)
  const usage = (authorization: string) => app.inject({ url: '/v1/usage', headers: { authorization } })
  for (const header of [
    `Basic ${Buffer.from(`user:${TOKENS.query}`).toString('base64')}`,
    'Bearer',
    'Bearer ',
    `Bearer ${TOKENS.query} extra`,
    `Bearer ${TOKENS.query.slice(0, -1)}`,
    `Bearer ${TOKENS.query}x`,
    `Bearer ${TOKENS.query.toUpperCase()}`,
    `Bearer ${TOKENS.query}${'x'.repeat(10_000)}`,
    `Bearer ${'q'.repeat(12_000)}`,
    TOKENS.query,
  ]) {
    const res = await usage(header)
    assert.equal(res.statusCode, 401, `"${header.slice(0, 60)}"`)
    assert.doesNotMatch(res.body, /qqqqqqqq/, 'no token echoed')
  }
  assert.equal((await usage(`bearer ${TOKENS.query}`)).statusCode, 200)
  assert.equal((await usage(`BEARER  ${TOKENS.query}`)).statusCode, 200)
})

test('arbitrary Authorization headers: never a 5xx, never served unless they carry a configured token', async (t) => {
  const { app } = await build(t, AUTH_ENV)
  const near = fc.oneof(
    fc.string({ maxLength: 300 }),
    fc.string({ unit: 'binary', maxLength: 100 }),
    fc.constantFrom(...Object.values(TOKENS)).chain((tok) =>
      fc.tuple(fc.constantFrom('Bearer ', 'bearer ', 'Bearer  ', 'Basic ', '', 'Bearer\t', 'Token '), fc.nat(tok.length), fc.string({ maxLength: 3 })).map(([scheme, cut, tail]) => `${scheme}${tok.slice(0, cut)}${tail}`),
    ),
  )
  await fc.assert(
    fc.asyncProperty(near, async (header) => {
      const valid = Object.values(TOKENS).some((tok) => new RegExp(`^bearer +${tok} *$`, 'i').test(header))
      let res
      try {
        res = await app.inject({ url: '/v1/usage', headers: { authorization: header } })
      } catch (err) {
        // Node refuses to send some characters in a header at all: nothing reached the server.
        if ((err as NodeJS.ErrnoException).code === 'ERR_INVALID_CHAR') return
        throw err
      }
      assert.ok(res.statusCode < 500, `${res.statusCode} for ${JSON.stringify(header)}`)
      if (!valid) assert.equal(res.statusCode, 401, JSON.stringify(header))
    }),
    { numRuns: 300 },
  )
})

test('an unauthenticated ingest body is refused before it is read: broken gzip gets 401, not 400', async (t) => {
  const { app } = await build(t, AUTH_ENV)
  const broken = gzipSync(JSON.stringify([event()])).subarray(0, 20)
  const res = await app.inject({ method: 'POST', url: '/v1/events', payload: broken, headers: { 'content-type': 'application/json', 'content-encoding': 'gzip' } })
  assert.equal(res.statusCode, 401)
  const authed = await app.inject({ method: 'POST', url: '/v1/events', payload: broken, headers: { 'content-type': 'application/json', 'content-encoding': 'gzip', ...bearer(TOKENS.ingest) } })
  assert.equal(authed.statusCode, 400, 'the same body with a token is parsed, and is malformed')
})

test('a token listed under two scopes holds both; an ingest token cannot read what it wrote', async (t) => {
  const both = 'b'.repeat(40)
  const { app } = await build(t, { TOKENLEDGER_INGEST_TOKENS: `${TOKENS.ingest},${both}`, TOKENLEDGER_QUERY_TOKENS: both })
  const e = event()
  assert.equal((await app.inject({ method: 'POST', url: '/v1/events', payload: [e], headers: bearer(TOKENS.ingest) })).statusCode, 200)
  assert.equal((await app.inject({ url: `/v1/events/${String(e.event_id)}`, headers: bearer(TOKENS.ingest) })).statusCode, 403)
  assert.equal((await app.inject({ method: 'POST', url: '/v1/events', payload: [event()], headers: bearer(both) })).statusCode, 200)
  assert.equal((await app.inject({ url: `/v1/events/${String(e.event_id)}`, headers: bearer(both) })).statusCode, 200)
  assert.equal((await app.inject({ url: '/v1/status', headers: bearer(both) })).statusCode, 403, 'no admin token configured: nobody is admin')
})

test('TokenTable: exact matches only, scopes unioned, admin allows everything', () => {
  const table = new TokenTable({ ingest: [TOKENS.ingest], query: [TOKENS.ingest, TOKENS.query], admin: [TOKENS.admin], metrics: [] })
  assert.deepEqual([...(table.lookup(TOKENS.ingest)?.scopes ?? [])].sort(), ['ingest', 'query'])
  assert.equal(table.lookup(TOKENS.ingest.slice(0, 31)), null)
  assert.equal(table.lookup(`${TOKENS.ingest} `), null)
  assert.equal(table.lookup(''), null)
  assert.match(table.lookup(TOKENS.admin)!.id, /^[0-9a-f]{12}$/)
  assert.ok(!table.lookup(TOKENS.admin)!.id.includes('aaaa'), 'the principal id is a hash, not a piece of the token')
  assert.ok(allows(new Set(['admin']), 'metrics') && allows(new Set(['admin']), 'ingest'))
  assert.ok(!allows(new Set(['metrics']), 'query') && !allows(new Set(['query']), 'admin'))
  assert.equal(new TokenTable({ ingest: [], query: [], admin: [], metrics: [] }).enabled, false)
})

test('secure by default: a public host needs tokens; bad tokens are refused without being echoed', () => {
  for (const host of ['127.0.0.1', '127.8.9.10', 'localhost', '::1', '[::1]']) {
    assert.ok(isLoopbackHost(host), host)
    assert.equal(loadConfig({ TOKENLEDGER_HOST: host }).host, host)
  }
  for (const host of ['0.0.0.0', '::', '10.0.0.5', 'ledger.internal', '128.0.0.1']) {
    assert.ok(!isLoopbackHost(host), host)
    assert.throws(
      () => loadConfig({ TOKENLEDGER_HOST: host }),
      (err: unknown) =>
        err instanceof ConfigError && /^TOKENLEDGER_HOST: .*no tokens are configured: set TOKENLEDGER_INGEST_TOKENS, TOKENLEDGER_QUERY_TOKENS and TOKENLEDGER_ADMIN_TOKENS/.test(err.message),
      host,
    )
    assert.equal(loadConfig({ TOKENLEDGER_HOST: host, TOKENLEDGER_ADMIN_TOKENS: TOKENS.admin }).host, host)
  }
  const secret = 'shortsecret123'
  const cases: Array<[Record<string, string>, RegExp]> = [
    [{ TOKENLEDGER_QUERY_TOKENS: secret }, /^TOKENLEDGER_QUERY_TOKENS: token 1 of 1 has 14 characters; tokens must have 32 to 256/],
    [{ TOKENLEDGER_INGEST_TOKENS: `${TOKENS.ingest},,${TOKENS.query}` }, /^TOKENLEDGER_INGEST_TOKENS: token 2 of 3 is empty/],
    [{ TOKENLEDGER_ADMIN_TOKENS: `${'a'.repeat(40)} ${secret}` }, /^TOKENLEDGER_ADMIN_TOKENS: token 1 of 1 has a character outside/],
    [{ TOKENLEDGER_METRICS_TOKENS: 'x'.repeat(257) }, /^TOKENLEDGER_METRICS_TOKENS: token 1 of 1 has 257 characters/],
  ]
  for (const [env, message] of cases) {
    assert.throws(
      () => loadConfig(env),
      (err: unknown) => err instanceof ConfigError && message.test(err.message) && !err.message.includes(secret) && !err.message.includes('aaaa'),
    )
  }
})

test('the real server exits non-zero on a public host without tokens, naming the variables', async () => {
  const child = spawn(process.execPath, ['--import', 'tsx', 'src/server.ts'], {
    cwd: repoRoot,
    env: { ...process.env, TOKENLEDGER_HOST: '0.0.0.0', TOKENLEDGER_PORT: '0', TOKENLEDGER_DATA_DIR: '/nonexistent/never-created' },
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  let stderr = ''
  child.stderr.on('data', (b: Buffer) => (stderr += b.toString()))
  const timer = setTimeout(() => child.kill('SIGKILL'), 30_000)
  const [code] = (await once(child, 'exit')) as [number | null]
  clearTimeout(timer)
  assert.equal(code, 2, stderr)
  assert.match(stderr, /invalid configuration: TOKENLEDGER_HOST: "0\.0\.0\.0" is reachable from other machines, and no tokens are configured/)
})
