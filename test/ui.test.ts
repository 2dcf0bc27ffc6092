// Proves the dashboard page (GET /) in a real headless Chromium against a real
// server listening on 127.0.0.1 with a known workload: the page loads under its
// strict CSP with no console error and no request to any other origin; its
// totals tiles equal /v1/usage's answer (cost as the exact decimal string); the
// chart draws the top N + "other" series over Europe/Berlin's daily buckets
// across 2026-10-25 (a 25-hour day), with "other" exactly the rest; clicking a
// group filters the whole page (and the chip removes the filter); the event
// pager walks every event of the view exactly once, newest first, and a row
// opens its detail; an export downloads what /v1/export gives; bad views and
// empty windows say so; with auth on, the page and its assets load without a
// token, the prompt takes a query token (sessionStorage only, never in a URL),
// refuses a bad one with a clear message, and an unready service says why.
// Screenshots of the main views go to .tmp/ui-screens/ (gitignored).

// (The functions passed to page.evaluate run in the browser: this file is type-checked with
// the DOM library by test/tsconfig.browser.json, and left out of the root project.)

import assert from 'node:assert/strict'
import { existsSync } from 'node:fs'
import { mkdir, readFile } from 'node:fs/promises'
import path from 'node:path'
import { test, type TestContext } from 'node:test'
import type { FastifyInstance } from 'fastify'
import { chromium, type Browser, type BrowserContext, type Page } from 'playwright-core'
import { CONTENT_SECURITY_POLICY } from '../routes/ui.js'
import { nodeFileSystem } from '../src/store/fsops.js'
import { build, T0 } from './helper.js'
import { repoRoot } from './support/child-server.js'

/** Debian's chromium package; TOKENLEDGER_CHROMIUM points elsewhere (any Chromium or Chrome). */
const CHROMIUM = process.env.TOKENLEDGER_CHROMIUM ?? '/usr/bin/chromium'
const SCREENS = path.join(repoRoot, '.tmp', 'ui-screens')
/** The suite's clock (2026-11-24) is 30 days past the DST change: keep raw events that long and more. */
const ENV = { TOKENLEDGER_EVENT_RETENTION: '60d', TOKENLEDGER_DETAIL_RETENTION: '60d', TOKENLEDGER_RETENTION_INTERVAL: 'off' }
/** A bound on every wait for the page: a broken page fails in seconds, not at the runner's timeout. */
const WAIT_MS = 15_000
const HOUR = 3_600_000

if (!existsSync(CHROMIUM)) {
  throw new Error(
    `no Chromium at ${CHROMIUM}: the dashboard tests drive a real browser. Install it with \`apt-get install -y chromium\` ` +
      '(.ci/run does this on a fresh machine), or set TOKENLEDGER_CHROMIUM to a Chromium or Chrome binary.',
  )
}

// ---- the workload ------------------------------------------------------------------

const MODELS = ['gpt-4o', 'claude-sonnet', 'gemini-pro', 'llama-70b', 'mistral-large'] as const
/** Costs per model: small exact fractions a float sum would get wrong. */
const COSTS: Record<(typeof MODELS)[number], string> = {
  'gpt-4o': '1.100000000001',
  'claude-sonnet': '0.7',
  'gemini-pro': '0.3',
  'llama-70b': '0.000000000003',
  'mistral-large': '0.2',
}
/** Instants across Berlin's 2026-10-25 (clocks go back at 01:00 UTC): the day's first and last local hours, and the days around it. */
const DST_TIMES = ['2026-10-23T10:00:00Z', '2026-10-24T21:30:00Z', '2026-10-24T22:30:00Z', '2026-10-25T00:30:00Z', '2026-10-25T01:30:00Z', '2026-10-25T22:30:00Z', '2026-10-25T23:30:00Z', '2026-10-26T12:00:00Z', '2026-10-27T22:59:00Z']
const DST_VIEW = { from: '2026-10-23T00:00:00+02:00', to: '2026-10-28T00:00:00+01:00' }
const DST_DAYS = ['2026-10-23T00:00:00+02:00', '2026-10-24T00:00:00+02:00', '2026-10-25T00:00:00+02:00', '2026-10-26T00:00:00+01:00', '2026-10-27T00:00:00+01:00']

interface Posted {
  event_id: string
  timestamp: string
  model: (typeof MODELS)[number]
  cost?: string
  [field: string]: unknown
}

/** 45 events in the DST days (model i gets 9 − 2i of them, so the ranking by cost is fixed) and 12 in the day before T0. */
function workload(): Posted[] {
  const out: Posted[] = []
  let n = 0
  MODELS.forEach((model, m) => {
    for (let i = 0; i < 9 - m; i++) {
      const ts = DST_TIMES[(i + m) % DST_TIMES.length]!
      n++
      out.push({
        event_id: `dst-${String(n).padStart(3, '0')}`,
        timestamp: new Date(Date.parse(ts) + n * 1000).toISOString(),
        key_id: `key_${'abc'[n % 3]}`,
        provider: m < 2 ? 'openai' : 'other-cloud',
        model,
        status_code: n % 7 === 0 ? 500 : n % 11 === 0 ? 429 : 200,
        input_tokens: 1000 + n,
        output_tokens: 100 + n,
        cache_read_tokens: n % 4 === 0 ? 500 : 0,
        reasoning_tokens: n % 5 === 0 ? 40 : 0,
        ...(n % 6 === 0 ? {} : { cost: COSTS[model] }),
        ...(n % 2 === 0 ? { team_id: 'search' } : {}),
        customer_id: `cust-${n % 4}`,
        detail: { prompt: `question ${n}`, finish_reason: 'stop' },
      })
    }
  })
  for (let i = 0; i < 12; i++) {
    out.push({
      event_id: `day-${String(i).padStart(3, '0')}`,
      timestamp: new Date(T0 - (i + 1) * HOUR - 17_000).toISOString(),
      key_id: i % 2 ? 'key_a' : 'key_b',
      provider: 'openai',
      model: MODELS[i % 3]!,
      status_code: i === 4 ? 503 : 200,
      input_tokens: 2000 + i,
      output_tokens: 300,
      cost: COSTS[MODELS[i % 3]!],
      team_id: 'billing',
    })
  }
  return out
}

const SCALE = 10n ** 12n
/** Exact decimal sum (BigInt scaled by 10^12), independent of the page's decimal.js. */
function sum(costs: string[]): string {
  const scaled = costs.reduce((acc, c) => {
    const [whole, frac = ''] = c.split('.')
    return acc + BigInt(whole!) * SCALE + BigInt(frac.padEnd(12, '0'))
  }, 0n)
  const frac = (scaled % SCALE).toString().padStart(12, '0').replace(/0+$/, '')
  return `${scaled / SCALE}${frac ? `.${frac}` : ''}`
}

// ---- the server and the browser ---------------------------------------------------

interface Server {
  app: FastifyInstance
  url: string
}

async function serve(t: TestContext, env: Record<string, string> = {}, options: Parameters<typeof build>[3] = {}): Promise<Server> {
  const built = await build(t, { ...ENV, ...env }, undefined, options)
  const url = await built.app.listen({ host: '127.0.0.1', port: 0 })
  return { app: built.app, url }
}

async function postAll(server: Server, events: Posted[], token?: string): Promise<void> {
  const res = await fetch(`${server.url}/v1/events`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...(token ? { authorization: `Bearer ${token}` } : {}) },
    body: JSON.stringify({ events }),
  })
  const body = (await res.json()) as { accepted: number }
  assert.equal(res.status, 200, JSON.stringify(body))
  assert.equal(body.accepted, events.length, JSON.stringify(body))
}

async function api<T = Record<string, unknown>>(server: Server, pathAndQuery: string, token?: string): Promise<T> {
  const res = await fetch(`${server.url}${pathAndQuery}`, { headers: token ? { authorization: `Bearer ${token}` } : {} })
  assert.equal(res.status, 200, `${pathAndQuery}: ${await res.clone().text()}`)
  return (await res.json()) as T
}

/** Everything the page did that a test may assert on: console errors, page errors, every request's URL. */
interface Watched {
  page: Page
  consoleErrors: string[]
  requests: string[]
}

async function open(context: BrowserContext, url: string): Promise<Watched> {
  const page = await context.newPage()
  const watched: Watched = { page, consoleErrors: [], requests: [] }
  page.on('console', (m) => {
    if (m.type() === 'error') watched.consoleErrors.push(m.text())
  })
  page.on('pageerror', (e) => watched.consoleErrors.push(`page error: ${e.message}`))
  page.on('request', (r) => watched.requests.push(r.url()))
  page.setDefaultTimeout(WAIT_MS)
  await page.clock.setFixedTime(T0) // the browser's "now" is the server's
  await page.goto(url)
  return watched
}

/** Waits for the page to finish the load it started after the hash last changed. */
async function settled(page: Page, after = 0): Promise<number> {
  const handle = await page.waitForFunction((n) => Number(document.body.dataset.loaded ?? 0) > n && !document.querySelector('main[aria-busy]'), after)
  await handle.dispose()
  return Number(await page.evaluate(() => document.body.dataset.loaded))
}

/** The tiles' exact values, as the page holds them. */
async function tiles(page: Page): Promise<Record<string, string>> {
  return page.evaluate(() => Object.fromEntries([...document.querySelectorAll<HTMLElement>('#tiles .tile')].map((t) => [t.dataset.measure!, t.querySelector<HTMLElement>('.tile-value')!.dataset.value ?? ''])))
}

function expectedTiles(totals: Record<string, unknown>): Record<string, string> {
  const out: Record<string, string> = {}
  for (const k of ['requests', 'errors', 'input_tokens', 'output_tokens', 'cache_read_tokens', 'cache_write_tokens', 'reasoning_tokens', 'cost_missing']) out[k] = String(totals[k])
  out.cost = String(totals.cost ?? '')
  return out
}

function assertOnlyOrigin(watched: Watched, origin: string): void {
  const foreign = watched.requests.filter((u) => new URL(u).origin !== origin && !u.startsWith('data:'))
  assert.deepEqual(foreign, [], 'the page asked no other origin')
}

async function screenshot(page: Page, name: string): Promise<void> {
  await mkdir(SCREENS, { recursive: true })
  await page.screenshot({ path: path.join(SCREENS, `${name}.png`), fullPage: true })
}

const query = (view: Record<string, string | string[]>) => {
  const q = new URLSearchParams()
  for (const [k, v] of Object.entries(view)) for (const one of Array.isArray(v) ? v : [v]) q.append(k, one)
  return q.toString()
}

test('the dashboard page in headless Chromium', async (t) => {
  const browser: Browser = await chromium.launch({ executablePath: CHROMIUM, headless: true })
  t.after(() => browser.close())
  const context = await browser.newContext({ timezoneId: 'Europe/Berlin', locale: 'en-US', viewport: { width: 1360, height: 900 }, acceptDownloads: true })
  const server = await serve(t, { TOKENLEDGER_EXPORT_MAX_EVENTS: '1000' })
  const events = workload()
  await postAll(server, events)
  const origin = new URL(server.url).origin
  const dstHash = `#${query({ ...DST_VIEW, tz: 'Europe/Berlin', bucket: '1d', top: '3' })}`

  await t.test('GET / and its assets carry the strict CSP and come from the server itself', async () => {
    const res = await fetch(`${server.url}/`)
    assert.equal(res.status, 200)
    assert.match(res.headers.get('content-type') ?? '', /^text\/html/)
    assert.equal(res.headers.get('content-security-policy'), CONTENT_SECURITY_POLICY)
    for (const directive of ["script-src 'self'", "style-src 'self'", "connect-src 'self'", "frame-ancestors 'none'", "base-uri 'none'"]) assert.ok(CONTENT_SECURITY_POLICY.includes(directive), directive)
    const html = await res.text()
    assert.doesNotMatch(html, /<script(?![^>]*\bsrc=)[^>]*>/, 'no inline script')
    assert.doesNotMatch(html, /<style|\sstyle=/, 'no inline style')
    for (const asset of ['app.js', 'uplot.esm.js', 'app.css', 'uplot.min.css']) {
      const a = await fetch(`${server.url}/ui/${asset}`)
      assert.equal(a.status, 200, asset)
      assert.equal(a.headers.get('content-security-policy'), CONTENT_SECURITY_POLICY, asset)
    }
    assert.equal((await fetch(`${server.url}/ui/nothing.js`)).status, 404)
    assert.equal((await fetch(`${server.url}/ui/..%2Fpackage.json`)).status, 400, 'no path outside the allow-list')
    assert.equal((await fetch(`${server.url}/ui/tsconfig.json`)).status, 404, 'only page files are served')
    // The API reference keeps its own policy (set by @fastify/swagger-ui).
    assert.notEqual((await fetch(`${server.url}/docs/static/index.html`)).headers.get('content-security-policy'), CONTENT_SECURITY_POLICY)
  })

  await t.test('the default view (last 24 h in the browser zone) loads cleanly and its tiles equal /v1/usage', async () => {
    const w = await open(context, `${server.url}/`)
    await settled(w.page)
    assert.match(w.page.url(), /#tz=Europe%2FBerlin$/, 'the zone defaults to the browser\'s and is kept in the URL')
    const want = await api<{ totals: Record<string, unknown> }>(server, `/v1/usage?${query({ from: new Date(T0 - 24 * HOUR).toISOString(), to: new Date(T0).toISOString() })}`)
    assert.equal(want.totals.requests, 12)
    assert.deepEqual(await tiles(w.page), expectedTiles(want.totals))
    assert.equal(await w.page.locator('.tile[data-measure=cost] .money').textContent(), `${want.totals.cost} USD`, 'the cost as the API wrote it')
    assert.equal(await w.page.locator('.tile[data-measure=cost] .tile-note').textContent(), `of which priced by the price table: ${want.totals.cost_priced} USD`, 'the priced part as the API wrote it')
    await w.page.waitForSelector('#status-ready.status-ok')
    await w.page.waitForSelector('#status-retention')
    assert.deepEqual(w.consoleErrors, [])
    assertOnlyOrigin(w, origin)
    await screenshot(w.page, '1-last-24h')
    await w.page.close()
  })

  await t.test('Europe/Berlin daily buckets across 2026-10-25: top 3 + exact "other", tiles equal /v1/usage', async () => {
    const w = await open(context, `${server.url}/${dstHash}`)
    await settled(w.page)
    const want = await api<{ totals: Record<string, unknown> }>(server, `/v1/usage?${query(DST_VIEW)}`)
    assert.equal(want.totals.requests, 35)
    assert.deepEqual(await tiles(w.page), expectedTiles(want.totals))
    const inDst = events.filter((e) => e.event_id.startsWith('dst-'))
    assert.equal(want.totals.cost, sum(inDst.flatMap((e) => (e.cost ? [e.cost] : []))))

    const chart = w.page.locator('#chart')
    await w.page.waitForSelector('#chart[data-series] canvas')
    assert.equal(await chart.getAttribute('data-series'), '4', 'three models and "other"')
    assert.equal(await chart.getAttribute('data-buckets'), '5', 'five local days, one of them 25 hours long')
    const table = await w.page.evaluate(() => ({
      head: [...document.querySelectorAll('#chart-table thead th')].map((th) => th.textContent),
      rows: [...document.querySelectorAll('#chart-table tbody tr')].map((tr) => [...tr.children].map((c) => c.textContent)),
    }))
    assert.deepEqual(table.head, ['Bucket start', 'gpt-4o', 'claude-sonnet', 'gemini-pro', 'other', 'Total'])
    assert.deepEqual(table.rows.map((r) => r[0]), DST_DAYS)
    // Each bucket's cost per model, from the workload itself: "other" is llama-70b + mistral-large, exactly.
    const dayOf = (ts: string) => DST_DAYS.findLastIndex((d) => Date.parse(d) <= Date.parse(ts))
    DST_DAYS.forEach((_d, i) => {
      const costs = (models: readonly string[]) => sum(inDst.filter((e) => dayOf(e.timestamp) === i && models.includes(e.model) && e.cost).map((e) => e.cost!))
      assert.deepEqual(table.rows[i]!.slice(1), [costs(['gpt-4o']), costs(['claude-sonnet']), costs(['gemini-pro']), costs(['llama-70b', 'mistral-large']), costs(MODELS)], `bucket ${DST_DAYS[i]}`)
    })
    assert.deepEqual(w.consoleErrors, [])
    assertOnlyOrigin(w, origin)
    await screenshot(w.page, '2-berlin-dst-days')

    // The same view in requests: the same buckets, counted.
    await w.page.selectOption('#measure', 'requests')
    await settled(w.page, 1)
    assert.match(w.page.url(), /measure=requests/)
    const total = await w.page.evaluate(() => [...document.querySelectorAll('#chart-table tbody tr')].map((tr) => tr.lastElementChild!.textContent))
    assert.deepEqual(total.map(Number), DST_DAYS.map((_d, i) => inDst.filter((e) => dayOf(e.timestamp) === i).length))
    await w.page.close()
  })

  await t.test('clicking a group filters the whole page; removing its chip restores it', async () => {
    const w = await open(context, `${server.url}/${dstHash}`)
    let gen = await settled(w.page)
    await w.page.getByRole('button', { name: 'Filter the page by model claude-sonnet' }).click()
    gen = await settled(w.page, gen)
    assert.match(w.page.url(), /model=claude-sonnet/)
    const chip = w.page.getByRole('button', { name: 'Remove filter model: claude-sonnet' })
    await chip.waitFor()
    const want = await api<{ totals: Record<string, unknown> }>(server, `/v1/usage?${query({ ...DST_VIEW, model: 'claude-sonnet' })}`)
    assert.deepEqual(await tiles(w.page), expectedTiles(want.totals))
    assert.equal(await w.page.locator('#chart').getAttribute('data-series'), '1', 'one model left, no "other"')
    const models = await w.page.locator('#events tbody tr td:nth-child(4)').allTextContents()
    assert.ok(models.length > 0 && models.every((m) => m === 'claude-sonnet'), models.join())
    assert.deepEqual(await w.page.locator('#groups tbody th').allTextContents(), ['claude-sonnet'])
    await screenshot(w.page, '3-filtered-by-group')
    await chip.click()
    await settled(w.page, gen)
    assert.doesNotMatch(w.page.url(), /model=/)
    assert.equal((await tiles(w.page)).requests, '35')
    assert.deepEqual(w.consoleErrors, [])
    await w.page.close()
  })

  await t.test('the pager walks every event of the view once, newest first; a row opens its detail', async () => {
    const w = await open(context, `${server.url}/${dstHash}`)
    await settled(w.page)
    await w.page.selectOption('#page-size', '10')
    await w.page.waitForFunction(() => document.querySelectorAll('#events tbody tr').length === 10)
    const seen: string[] = []
    for (let pageNo = 1; ; pageNo++) {
      await w.page.waitForFunction((n) => document.getElementById('page-label')!.textContent!.startsWith(`Page ${n}`), pageNo)
      seen.push(...(await w.page.locator('#events button.event-link').evaluateAll((bs) => bs.map((b) => (b as HTMLElement).dataset.event!))))
      if (await w.page.locator('#page-older').isDisabled()) break
      assert.ok(pageNo < 10, 'the walk ends')
      await w.page.click('#page-older')
    }
    const want = events
      .filter((e) => e.event_id.startsWith('dst-') && Date.parse(e.timestamp) < Date.parse(DST_VIEW.to))
      .sort((a, b) => (a.timestamp === b.timestamp ? (a.event_id < b.event_id ? 1 : -1) : a.timestamp < b.timestamp ? 1 : -1))
      .map((e) => e.event_id)
    assert.deepEqual(seen, want, 'every event once, newest first')
    assert.equal(new Set(seen).size, seen.length)
    // And back: "Newer" shows the page before.
    await w.page.click('#page-newer')
    await w.page.waitForFunction(() => document.getElementById('page-label')!.textContent === 'Page 3')
    assert.equal(await w.page.locator('#events button.event-link').first().getAttribute('data-event'), seen[20])

    const id = seen[20]!
    await w.page.click(`button.event-link[data-event="${id}"]`)
    await w.page.waitForSelector('#detail-json')
    const shown = JSON.parse((await w.page.locator('#detail-json').textContent())!) as unknown
    assert.deepEqual(shown, events.find((e) => e.event_id === id)!.detail)
    assert.equal(await w.page.evaluate(() => document.activeElement?.id), 'detail-close', 'focus moves into the panel')
    await screenshot(w.page, '4-event-detail')
    await w.page.keyboard.press('Escape')
    await w.page.waitForSelector('#detail', { state: 'hidden' })
    assert.equal(await w.page.evaluate(() => (document.activeElement as HTMLElement | null)?.dataset.event), id, 'focus returns to the row')
    assert.deepEqual(w.consoleErrors, [])
    assertOnlyOrigin(w, origin)
    await w.page.close()
  })

  await t.test('the export buttons download what /v1/export gives for the view', async () => {
    const w = await open(context, `${server.url}/${dstHash}&model=gpt-4o`)
    await settled(w.page)
    for (const format of ['csv', 'ndjson', 'parquet'] as const) {
      const [download] = await Promise.all([w.page.waitForEvent('download'), w.page.click(`button[data-export=${format}]`)])
      const got = await readFile((await download.path())!)
      const want = Buffer.from(await (await fetch(`${server.url}/v1/export?${query({ from: new Date(Date.parse(DST_VIEW.from)).toISOString(), to: new Date(Date.parse(DST_VIEW.to)).toISOString(), model: 'gpt-4o', format })}`)).arrayBuffer())
      if (format === 'parquet') assert.equal(got.subarray(0, 4).toString(), 'PAR1')
      else assert.equal(got.toString(), want.toString(), format)
      assert.match(download.suggestedFilename(), new RegExp(`^tokenledger-events-.*\\.${format}$`))
    }
    assert.equal((await readFile((await (await Promise.all([w.page.waitForEvent('download'), w.page.click('button[data-export=csv]')]))[0].path())!, 'utf8')).split('\n').filter(Boolean).length, 1 + 9, 'a header and gpt-4o\'s nine events')
    assert.deepEqual(w.consoleErrors, [])
    assertOnlyOrigin(w, origin)
    await w.page.close()
  })

  await t.test('an empty window and a view too large for the service say so', async () => {
    const w = await open(context, `${server.url}/#${query({ from: '2026-11-01T00:00:00+01:00', to: '2026-11-02T00:00:00+01:00', tz: 'Europe/Berlin' })}`)
    const gen = await settled(w.page)
    await w.page.waitForSelector('#chart-message:has-text("No events in this window")')
    assert.equal(await w.page.locator('#events-message').textContent(), 'No events in this window and these filters.')
    assert.equal((await tiles(w.page)).requests, '0')
    await screenshot(w.page, '5-empty-window')
    // 15-minute buckets over 150 days: more buckets than one series may have.
    await w.page.evaluate(() => (location.hash = '#from=2026-06-01T00:00:00Z&to=2026-10-29T00:00:00Z&tz=UTC&bucket=15m'))
    await settled(w.page, gen)
    const notice = await w.page.locator('#notice').textContent()
    assert.match(notice ?? '', /refused this view: .*`bucket` 15m gives more than 10000 buckets/)
    assert.match((await w.page.locator('#chart-message').textContent()) ?? '', /bucket/)
    await screenshot(w.page, '6-query-refused')
    // The only console errors are the browser's own lines for the refused calls.
    assert.ok(w.consoleErrors.every((e) => /status of 400/.test(e)), w.consoleErrors.join('\n'))
    await w.page.close()
  })

  await t.test('with auth on: open page, token prompt, a bad token refused clearly, a good one used from sessionStorage only; unready says why', async (t2) => {
    const disk = { ...nodeFileSystem, freeBytes: async () => 1 } // below the 1 GiB floor: the service is unready
    const authed = await serve(t2, { TOKENLEDGER_INGEST_TOKENS: 'ingest-token-0001-aaaaaaaaaaaaaaaaaaaaaaaa', TOKENLEDGER_QUERY_TOKENS: 'query-token-0001-aaaaaaaaaaaaaaaaaaaaaaaaa', TOKENLEDGER_ADMIN_TOKENS: 'admin-token-0001-aaaaaaaaaaaaaaaaaaaaaaaaa' }, { fs: disk })
    const w = await open(context, `${authed.url}/${dstHash}`)
    const dialog = w.page.locator('#token-dialog')
    await dialog.waitFor({ state: 'visible' })
    assert.match((await w.page.locator('#token-reason').textContent()) ?? '', /needs a bearer token with the query scope/)
    await w.page.waitForSelector('#status-ready.status-bad')
    assert.match((await w.page.locator('#status-ready').textContent()) ?? '', /Not ready: .*disk/i)
    await screenshot(w.page, '7-token-prompt')

    await w.page.fill('#token-input', 'not-a-token')
    await w.page.press('#token-input', 'Enter')
    await w.page.waitForFunction(() => /refused \(401\)/.test(document.getElementById('token-reason')!.textContent!))
    assert.ok(await dialog.isVisible(), 'asked again')
    assert.equal(await w.page.evaluate(() => sessionStorage.length), 0, 'a refused token is not kept')
    await screenshot(w.page, '8-token-refused')

    await w.page.fill('#token-input', 'query-token-0001-aaaaaaaaaaaaaaaaaaaaaaaaa')
    await w.page.press('#token-input', 'Enter')
    await settled(w.page)
    assert.ok(!(await dialog.isVisible()), 'the prompt is gone')
    assert.equal((await tiles(w.page)).requests, '0', 'this store is empty')
    await w.page.waitForSelector('#status-tiers:has-text("admin token")')
    assert.equal(await w.page.evaluate(() => sessionStorage.getItem('tokenledger.query-token')), 'query-token-0001-aaaaaaaaaaaaaaaaaaaaaaaaa')
    assert.equal(await w.page.evaluate(() => localStorage.length), 0, 'nothing in localStorage')
    assert.ok(!w.requests.some((u) => u.includes('token-0001')), 'no token in any URL')
    assert.ok(!w.page.url().includes('token'), 'nor in the address bar')
    // The page and its assets loaded without a token; data calls were refused until one was given.
    assertOnlyOrigin(w, new URL(authed.url).origin)
    assert.ok(w.consoleErrors.every((e) => /status of (401|403|503)/.test(e)), w.consoleErrors.join('\n'))
    await screenshot(w.page, '9-auth-on-unready')
    await w.page.close()
  })
})

test('/docs works over plain HTTP under a real host name: its CSP does not upgrade requests to HTTPS', async (t) => {
  // A name that is not loopback (mapped to it inside Chromium only), so no browser exemption for localhost applies.
  const browser: Browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: ['--host-resolver-rules=MAP ledger.test 127.0.0.1'] })
  t.after(() => browser.close())
  const context = await browser.newContext()
  const server = await serve(t)
  const url = server.url.replace('127.0.0.1', 'ledger.test')
  const csp = (await fetch(`${server.url}/docs/static/index.html`)).headers.get('content-security-policy') ?? ''
  assert.ok(csp.includes("default-src 'self'"), csp)
  assert.ok(!csp.includes('upgrade-insecure-requests'), csp)
  const w = await open(context, `${url}/docs/`)
  await w.page.waitForSelector('.swagger-ui .info .title')
  assert.match((await w.page.locator('.swagger-ui .info .title').textContent()) ?? '', /tokenledger/)
  await w.page.waitForSelector('.opblock-tag-section')
  assert.ok(w.requests.every((r) => r.startsWith('http://ledger.test:') || r.startsWith('data:')), `every request stays on plain HTTP: ${w.requests.filter((r) => !r.startsWith('http://')).join(', ')}`)
  // swagger-ui applies one inline style its own CSP blocks (harmless, and not ours to change); nothing failed to load.
  assert.deepEqual(w.consoleErrors.filter((e) => !/Applying inline style violates/.test(e)), [])
})
