// Dashboard benchmark (not a test): what the page at GET / costs a browser on a big
// store. Figures, each beside a baseline measured in the same run:
//
//   1. a store of --events (default 10 million, as bench/query) in --segments files,
//      written straight into pending/ (bench/lib/bigstore.ts), timestamps spanning
//      [now - 29.5 d, now - 1 min); the server starts on it and the bench waits until
//      every segment is sealed, so archives answer from their rollups as in production.
//   2. page weight: the bytes of HTML, JS, CSS and the icon a first visit transfers
//      (encoded body sizes as Chromium received them), by file.
//   3. time to first chart in headless Chromium (--chromium, default /usr/bin/chromium),
//      for the 30-day view (daily buckets in Europe/Berlin, cost per model, top 5) and the
//      24-hour one (hourly): from navigation start to the first uPlot draw (the page's
//      `tokenledger:chart-drawn` User Timing mark), in a fresh browser context each time
//      (nothing cached), --loads times; the first load is reported apart (cold server).
//   4. the baseline: the same API calls the page makes for that view, made from Node at
//      once (as the page does), timed to the last answer; ratio = first chart / API calls.
//
// Run:   npm run bench:ui                        (10 M events; ~15 min on 2 cores)
//        npm run bench:ui -- --events 1000000    (a quicker look)
// Flags: --events N (10000000) --segments N (720, at most events / 1000) --loads N (5) --threads N (2)
//        --chromium PATH (/usr/bin/chromium, or TOKENLEDGER_CHROMIUM)
// Output: a report, and as the last line one JSON summary. Exit: 0 ok, 1 a failure, 2 setup.
import { randomBytes } from 'node:crypto'
import { mkdtemp, rm } from 'node:fs/promises'
import os from 'node:os'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import { chromium, type Browser } from 'playwright-core'
import type { RunningServer } from './lib/child.js'
import { runMain } from './lib/cli.js'
import { writePendingSegments, type BigStoreSpec } from './lib/bigstore.js'
import { f1, f2, fail, failures, int, log, percentile } from './lib/report.js'
import { getJson, startTokenledger, waitSealed } from './lib/server.js'

const { values } = parseArgs({
  options: { events: { type: 'string' }, segments: { type: 'string' }, loads: { type: 'string' }, threads: { type: 'string' }, chromium: { type: 'string' } },
})
const num = (name: keyof typeof values, fallback: number, min: number, max: number): number => {
  const raw = values[name]
  const v = raw === undefined ? fallback : Number(raw)
  if (!Number.isInteger(v) || v < min || v > max) {
    process.stderr.write(`bench/ui: --${name} must be an integer in ${min}..${max}, got "${String(raw)}"\n`)
    process.exit(2)
  }
  return v
}
const events = num('events', 10_000_000, 10_000, 200_000_000)
const segments = Math.min(num('segments', 720, 1, 100_000), Math.floor(events / 1000))
const loads = num('loads', 5, 2, 50)
const threads = num('threads', 2, 1, 64)
const chromiumPath = values.chromium ?? process.env.TOKENLEDGER_CHROMIUM ?? '/usr/bin/chromium'
const MIN = 60_000
const DAY = 24 * 60 * MIN
const QUARTER = 15 * MIN
/** Longest the page may take to draw its first chart before the load counts as a failure. */
const CHART_TIMEOUT_MS = 120_000

interface View {
  name: string
  hash: string
  /** The calls the page makes for this view (app.js load()), as paths with their query. */
  calls: (nowMs: number) => string[]
}

/** The page's preset windows end at the next quarter hour (ui/state.js windowOf). */
function windowQuery(spanMs: number, nowMs: number): string {
  const toMs = Math.ceil(nowMs / QUARTER) * QUARTER
  return `from=${new Date(toMs - spanMs).toISOString()}&to=${new Date(toMs).toISOString()}`
}

function viewOf(name: string, window: '30d' | '24h', spanMs: number, bucket: string): View {
  return {
    name,
    hash: `#${window === '24h' ? '' : `window=${window}&`}tz=Europe%2FBerlin`,
    calls: (nowMs) => {
      const w = windowQuery(spanMs, nowMs)
      return [
        `/v1/usage?${w}&group_by=model&order_by=cost&limit=50`,
        `/v1/usage/timeseries?${w}&tz=Europe%2FBerlin&bucket=${bucket}&group_by=model&order_by=cost&limit=5`,
        `/v1/usage/timeseries?${w}&tz=Europe%2FBerlin&bucket=${bucket}`,
        `/v1/events?${w}&limit=25`,
      ]
    },
  }
}

const VIEWS = [viewOf('30 days, daily', '30d', 30 * DAY, '1d'), viewOf('24 hours, hourly', '24h', DAY, '1h')]

/** One fresh-context page load: bytes by file and the time to the first chart. */
async function loadOnce(browser: Browser, url: string): Promise<{ chartMs: number; bytes: Map<string, number> }> {
  const context = await browser.newContext({ timezoneId: 'Europe/Berlin', locale: 'en-US', viewport: { width: 1360, height: 900 } })
  try {
    const page = await context.newPage()
    const bytes = new Map<string, number>()
    const pending: Promise<void>[] = []
    page.on('requestfinished', (r) => {
      const type = r.resourceType()
      if (type === 'document' || type === 'script' || type === 'stylesheet' || type === 'image') {
        pending.push(r.sizes().then((s) => void bytes.set(new URL(r.url()).pathname, s.responseBodySize)))
      }
    })
    const errors: string[] = []
    page.on('pageerror', (e) => errors.push(e.message))
    await page.goto(url)
    await page.waitForFunction(() => performance.getEntriesByName('tokenledger:chart-drawn').length > 0, undefined, { timeout: CHART_TIMEOUT_MS })
    const chartMs = await page.evaluate(() => performance.getEntriesByName('tokenledger:chart-drawn')[0]!.startTime)
    await Promise.all(pending)
    if (errors.length > 0) fail(`page errors: ${errors.join('; ')}`)
    return { chartMs, bytes }
  } finally {
    await context.close()
  }
}

/** The page's calls for a view, made at once from Node; ms to the last answer. */
async function apiOnce(server: RunningServer, view: View): Promise<number> {
  const t0 = performance.now()
  await Promise.all(view.calls(Date.now()).map((p) => getJson(`${server.url}${p}`)))
  return performance.now() - t0
}

const median = (xs: number[]): number => percentile(xs, 50)

async function main(): Promise<number> {
  log(`tokenledger dashboard bench: ${int(events)} events in ${segments} segments over 29.5 days; ${loads} loads per view; node ${process.version}, ${os.cpus().length} CPUs`)
  const summary: Record<string, unknown> = { events, segments, loads }
  const dataDir = await mkdtemp(join(os.tmpdir(), 'tokenledger-ui-'))
  let server: RunningServer | undefined
  let browser: Browser | undefined
  try {
    log(`\n[1] the store`)
    const now = Date.now()
    const spec: BigStoreSpec = { events, segments, seed: `ui${randomBytes(4).toString('hex')}`, startMs: now - 29.5 * DAY, endMs: now - MIN, threads }
    let t0 = performance.now()
    await writePendingSegments(dataDir, spec)
    log(`  generated in ${f1((performance.now() - t0) / 1000)} s`)
    server = await startTokenledger('ui', dataDir, { env: { TOKENLEDGER_RETENTION_INTERVAL: 'off' } })
    const sealed = await waitSealed(server)
    log(`  ready after ${f1(server.readyMs / 1000)} s, sealed ${sealed.status.tiers.archived} segments ${f1(sealed.ms / 1000)} s later (${int(sealed.status.tiers.rows)} rows)`)
    browser = await chromium.launch({ executablePath: chromiumPath, headless: true })
    log(`  Chromium ${browser.version()}`)

    for (const [i, view] of VIEWS.entries()) {
      log(`\n[${i + 2}] ${view.name}`)
      const chart: number[] = []
      const api: number[] = []
      let weight = new Map<string, number>()
      for (let n = 0; n < loads; n++) {
        // Alternated, so both meet the same server state (its answer cache warm after the first).
        const load = await loadOnce(browser, `${server.url}/${view.hash}`)
        chart.push(load.chartMs)
        weight = load.bytes
        api.push(await apiOnce(server, view))
      }
      if (i === 0) {
        const total = [...weight.values()].reduce((a, b) => a + b, 0)
        log(`  page weight: ${int(total)} bytes (${[...weight].map(([p, b]) => `${p} ${int(b)}`).join(', ')})`)
        summary.page_bytes = total
      }
      const warmChart = median(chart.slice(1))
      const warmApi = median(api.slice(1))
      log(`  first load (cold): first chart ${f1(chart[0]!)} ms; the page's API calls then ${f1(api[0]!)} ms`)
      log(`  later loads (median of ${loads - 1}): first chart ${f1(warmChart)} ms, the page's ${view.calls(0).length} API calls at once ${f1(warmApi)} ms: ratio ${f2(warmChart / warmApi)}`)
      summary[view.name.split(',')[0]!.replace(' ', '_')] = { first_chart_cold_ms: Number(f1(chart[0]!)), first_chart_ms: Number(f1(warmChart)), api_ms: Number(f1(warmApi)), ratio: Number(f2(warmChart / warmApi)) }
    }
  } finally {
    await browser?.close()
    await server?.stop()
    await rm(dataDir, { recursive: true, force: true })
  }
  log(`\n${JSON.stringify(summary)}`)
  return failures.length > 0 ? 1 : 0
}

runMain('bench/ui', main)
