// @ts-check
// The dashboard page: reads the view from the URL's hash, asks the public query
// API for it (totals and groups, the two series, a page of events, status),
// and renders what comes back. Every number shown is one the API gave (costs
// as its decimal strings); "other" in the chart is computed exactly (chart.js).
// Text from the service is set with textContent, never parsed as HTML.

import { ApiError, getFile, getJson, getToken, setToken } from './api.js'
import { drawChart, formatValue, layersOf } from './chart.js'
import { DIMENSIONS, FILTERS, bucketOf, browserZone, formatHash, msToWall, parseHash, wallToMs, windowOf, zonedIso } from './state.js'

/** @typedef {import('./state.js').ViewState} ViewState */

/** Groups listed in the table. */
const GROUPS_LISTED = 50
/** How often the status strip is refreshed while the page is open. */
const STATUS_EVERY_MS = 30_000

/**
 * @param {string} id
 * @returns {HTMLElement}
 */
function $(id) {
  const el = document.getElementById(id)
  if (!el) throw new Error(`the page has no #${id}`)
  return el
}

/**
 * The page's element `id`, checked to be of `kind`.
 * @template {HTMLElement} T
 * @param {string} id
 * @param {new () => T} kind
 * @returns {T}
 */
function typed(id, kind) {
  const el = $(id)
  if (!(el instanceof kind)) throw new Error(`#${id} is not a ${kind.name}`)
  return el
}
/** @param {string} id */
const inputEl = (id) => typed(id, HTMLInputElement)
/** @param {string} id */
const selectEl = (id) => typed(id, HTMLSelectElement)
/** @param {string} id */
const buttonEl = (id) => typed(id, HTMLButtonElement)
/** @param {string} id */
const dialogEl = (id) => typed(id, HTMLDialogElement)
/** @param {string} id */
const progressEl = (id) => typed(id, HTMLProgressElement)

/**
 * A new element with text (never HTML) and attributes.
 * @param {string} tag
 * @param {Record<string, string>} [attrs]
 * @param {(Node | string)[]} [children]
 */
function h(tag, attrs = {}, children = []) {
  const el = document.createElement(tag)
  for (const [k, v] of Object.entries(attrs)) {
    if (k === 'text') el.textContent = v
    else if (k === 'class') el.className = v
    else el.setAttribute(k, v)
  }
  el.append(...children)
  return el
}

const nf = new Intl.NumberFormat()
/** @param {number} n */
const count = (n) => nf.format(n)
/** @param {number} errors @param {number} requests */
const rate = (errors, requests) => (requests === 0 ? '–' : `${((errors / requests) * 100).toFixed(errors === 0 || errors === requests ? 0 : 2)}%`)

/**
 * The page's working state. Event pages: `pages[i]` is the cursor page i+1 was asked with (null: the newest),
 * `pageIndex` the one shown, `next` its next_cursor; `eventsSeq` drops answers to clicks since superseded.
 * @type {{ state: ViewState, generation: number, abort: AbortController | null, chart: any, pages: (string | null)[], pageIndex: number, next: string | null, eventsSeq: number, pageSize: number }}
 */
const page = { state: parseHash(location.hash).state, generation: 0, abort: null, chart: null, pages: [null], pageIndex: 0, next: null, eventsSeq: 0, pageSize: 25 }

// ---- the view in the address bar -------------------------------------------

/** @param {Partial<ViewState>} change */
function navigate(change) {
  const next = { ...page.state, ...change }
  const hash = formatHash(next)
  if (hash === location.hash) applyHash()
  else location.hash = hash // → hashchange → applyHash
}

function applyHash() {
  const { state, notes } = parseHash(location.hash)
  page.state = state
  renderControls()
  if (notes.length > 0) notice(`Some of this link's settings were not understood and are left out: ${notes.join('; ')}.`, 'warn')
  else notice(null)
  void load()
}

/** The filters of the view as query parameters (with the window). */
function viewParams() {
  const s = page.state
  const { fromMs, toMs } = windowOf(s, Date.now())
  const q = new URLSearchParams({ from: new Date(fromMs).toISOString(), to: new Date(toMs).toISOString() })
  for (const [name, values] of Object.entries(s.filters)) for (const v of values) q.append(name, v)
  return { q, fromMs, toMs }
}

/** @param {URLSearchParams} base @param {Record<string, string | string[]>} more */
function withParams(base, more) {
  const q = new URLSearchParams(base)
  for (const [k, v] of Object.entries(more)) for (const one of Array.isArray(v) ? v : [v]) q.append(k, one)
  return q
}

// ---- controls ----------------------------------------------------------------

function fillZones() {
  const select = selectEl('tz')
  /** @type {string[]} */
  let zones = []
  try {
    zones = /** @type {any} */ (Intl).supportedValuesOf('timeZone')
  } catch {
    zones = []
  }
  const mine = browserZone()
  const all = [...new Set(['UTC', mine, ...zones])].sort()
  select.replaceChildren(...all.map((z) => h('option', { value: z, text: z === mine ? `${z} (browser)` : z })))
}

function renderControls() {
  const s = page.state
  for (const radio of document.querySelectorAll('input[name="window"]')) {
    const r = /** @type {HTMLInputElement} */ (radio)
    r.checked = r.value === s.window
  }
  const custom = $('custom-window')
  custom.hidden = s.window !== 'custom'
  const { fromMs, toMs } = windowOf(s, Date.now())
  inputEl('custom-from').value = msToWall(fromMs, s.tz)
  inputEl('custom-to').value = msToWall(toMs, s.tz)
  const tz = selectEl('tz')
  if (![...tz.options].some((o) => o.value === s.tz)) tz.append(h('option', { value: s.tz, text: s.tz }))
  tz.value = s.tz
  selectEl('bucket').value = s.bucket
  selectEl('measure').value = s.measure
  selectEl('by').value = s.by
  const top = selectEl('top')
  if (![...top.options].some((o) => o.value === String(s.top))) top.append(h('option', { value: String(s.top), text: String(s.top) }))
  top.value = String(s.top)
  $('groups-by').textContent = s.by
  for (const th of document.querySelectorAll('#groups th[data-sort]')) {
    const cell = /** @type {HTMLElement} */ (th)
    if (cell.dataset.sort === s.sort) cell.setAttribute('aria-sort', 'descending')
    else cell.removeAttribute('aria-sort')
  }
  renderChips()
}

function renderChips() {
  const chips = $('chips')
  /** @type {HTMLElement[]} */
  const items = []
  for (const [name, values] of Object.entries(page.state.filters)) {
    for (const v of values) {
      const button = h('button', { type: 'button', class: 'chip', 'aria-label': `Remove filter ${name}: ${v}`, 'data-filter': name, 'data-value': v }, [
        h('span', { class: 'chip-name', text: `${name}:` }),
        ` ${v} `,
        h('span', { class: 'chip-x', 'aria-hidden': 'true', text: '×' }),
      ])
      button.addEventListener('click', () => removeFilter(name, v))
      items.push(h('li', {}, [button]))
    }
  }
  if (items.length > 1) {
    const clear = h('button', { type: 'button', class: 'chip chip-clear', text: 'Clear all filters' })
    clear.addEventListener('click', () => navigate({ filters: {} }))
    items.push(h('li', {}, [clear]))
  }
  if (items.length === 0) items.push(h('li', { class: 'muted chips-none', text: 'No filters: every event in the window.' }))
  chips.replaceChildren(...items)
}

/** @param {string} name @param {string} value */
function addFilter(name, value) {
  const current = page.state.filters[name] ?? []
  if (current.includes(value)) return
  navigate({ filters: { ...page.state.filters, [name]: [...current, value] } })
}

/** @param {string} name @param {string} value */
function removeFilter(name, value) {
  const rest = (page.state.filters[name] ?? []).filter((v) => v !== value)
  const filters = { ...page.state.filters }
  if (rest.length === 0) delete filters[name]
  else filters[name] = rest
  navigate({ filters })
}

function wireControls() {
  for (const radio of document.querySelectorAll('input[name="window"]')) {
    radio.addEventListener('change', (e) => {
      const value = /** @type {HTMLInputElement} */ (e.target).value
      if (value === 'custom') {
        // Start from the window shown now; the form applies the change.
        $('custom-window').hidden = false
        inputEl('custom-from').focus()
      } else navigate({ window: /** @type {any} */ (value), from: null, to: null })
    })
  }
  $('custom-window').addEventListener('submit', (e) => {
    e.preventDefault()
    const tz = page.state.tz
    const fromMs = wallToMs(inputEl('custom-from').value, tz)
    const toMs = wallToMs(inputEl('custom-to').value, tz)
    if (fromMs === null || toMs === null || fromMs >= toMs) {
      notice('The custom window needs a start before its end.', 'error')
      return
    }
    navigate({ window: 'custom', from: zonedIso(fromMs, tz), to: zonedIso(toMs, tz) })
  })
  $('tz').addEventListener('change', (e) => {
    const tz = /** @type {HTMLSelectElement} */ (e.target).value
    const s = page.state
    // A custom window keeps its instants; written in the new zone's offsets.
    if (s.window === 'custom' && s.from && s.to) navigate({ tz, from: zonedIso(Date.parse(s.from), tz), to: zonedIso(Date.parse(s.to), tz) })
    else navigate({ tz })
  })
  for (const id of ['bucket', 'measure', 'by']) {
    $(id).addEventListener('change', (e) => navigate({ [id]: /** @type {HTMLSelectElement} */ (e.target).value }))
  }
  $('top').addEventListener('change', (e) => navigate({ top: Number(/** @type {HTMLSelectElement} */ (e.target).value) }))
  for (const th of document.querySelectorAll('#groups th[data-sort] button')) {
    th.addEventListener('click', () => navigate({ sort: /** @type {any} */ (/** @type {HTMLElement} */ (th.parentElement).dataset.sort) }))
  }
  $('add-filter').addEventListener('submit', (e) => {
    e.preventDefault()
    const dim = selectEl('filter-dim').value
    const input = inputEl('filter-value')
    const value = input.value.trim()
    if (dim === 'status' && !/^(ok|error|[1-5]\d\d)$/.test(value)) {
      notice('A status filter is ok, error, or a status code such as 429.', 'error')
      return
    }
    if (value.length === 0) return
    input.value = ''
    addFilter(dim, value)
  })
  $('filter-value').addEventListener('focus', () => void loadFilterValues())
  $('filter-dim').addEventListener('change', () => void loadFilterValues())
  $('page-size').addEventListener('change', (e) => {
    page.pageSize = Number(/** @type {HTMLSelectElement} */ (e.target).value)
    resetPages()
    void loadEvents().catch(onEventsError)
  })
  $('page-older').addEventListener('click', () => {
    if (page.next === null) return
    page.pages = [...page.pages.slice(0, page.pageIndex + 1), page.next]
    page.pageIndex++
    void loadEvents().catch(onEventsError)
  })
  $('page-newer').addEventListener('click', () => {
    page.pageIndex = Math.max(0, page.pageIndex - 1)
    void loadEvents().catch(onEventsError)
  })
  $('page-newest').addEventListener('click', () => {
    page.pageIndex = 0
    void loadEvents().catch(onEventsError)
  })
  for (const button of document.querySelectorAll('[data-export]')) {
    button.addEventListener('click', () => void exportView(/** @type {HTMLElement} */ (button).dataset.export ?? 'csv', /** @type {HTMLButtonElement} */ (button)))
  }
  $('detail-close').addEventListener('click', closeDetail)
  document.addEventListener('keydown', (e) => {
    if (e.key === 'Escape' && !$('detail').hidden) closeDetail()
  })
  $('token-form').addEventListener('submit', (e) => {
    e.preventDefault()
    const input = inputEl('token-input')
    setToken(input.value)
    input.value = ''
    dialogEl('token-dialog').close()
    $('forget-token').hidden = getToken() === null
    void load()
  })
  $('forget-token').addEventListener('click', () => {
    setToken(null)
    $('forget-token').hidden = true
    void load()
  })
  window.addEventListener('hashchange', applyHash)
}

// ---- messages and progress ---------------------------------------------------

/** @param {string | null} text @param {'error' | 'warn' | 'info'} [kind] */
function notice(text, kind = 'info') {
  const el = $('notice')
  el.hidden = text === null
  el.className = `notice notice-${kind}`
  el.textContent = text ?? ''
}

/** @param {unknown} err */
function explain(err) {
  if (!(err instanceof ApiError)) return `Something went wrong in the page: ${String(err)}`
  if (err.code === 'TL_QUERY_TOO_LARGE') return `This view asks too much of the service: ${err.message}. Narrow the window or the filters.`
  if (err.code === 'TL_BAD_QUERY' || err.code === 'TL_INVALID_REQUEST') return `The service refused this view: ${err.message}.`
  if (err.status === 503) return `The service cannot answer now (${err.code}): ${err.message}.`
  if (err.status === 429) return `Too many requests for this token: ${err.message}.`
  if (err.status === 0) return 'The service did not answer. Is it running?'
  return `The service answered ${err.status} (${err.code}): ${err.message}.`
}

/** Counts the calls of one load, for the progress bar. @param {number} total */
function progress(total) {
  const wrap = $('progress-wrap')
  const bar = progressEl('progress')
  let done = 0
  bar.max = total
  bar.value = 0
  $('progress-text').textContent = `Loading… 0 of ${total}`
  // Shown only when a load takes a noticeable time, so quick loads do not flicker.
  const timer = setTimeout(() => (wrap.hidden = false), 200)
  $('main').setAttribute('aria-busy', 'true')
  return {
    step() {
      done++
      bar.value = done
      $('progress-text').textContent = `Loading… ${done} of ${total}`
    },
    end() {
      clearTimeout(timer)
      wrap.hidden = true
      $('main').removeAttribute('aria-busy')
    },
  }
}

// ---- auth ----------------------------------------------------------------------

/** Opens the token prompt, saying why. @param {ApiError} err */
function askToken(err) {
  const had = getToken() !== null
  let reason = 'This service needs a bearer token with the query scope.'
  if (err.status === 401 && had) reason = `The token was refused (401): ${err.message}. Enter a valid query token.`
  if (err.status === 403) reason = `This token may not read usage (403): ${err.message}. Enter a token with the query scope.`
  if (err.status === 401 && had) setToken(null)
  $('token-reason').textContent = reason
  $('forget-token').hidden = getToken() === null
  notice(reason, 'error')
  const dialog = dialogEl('token-dialog')
  if (!dialog.open) dialog.showModal()
  inputEl('token-input').focus()
}

// ---- loading -------------------------------------------------------------------

async function load() {
  const gen = ++page.generation
  page.abort?.abort()
  const abort = new AbortController()
  page.abort = abort
  const s = page.state
  resetPages()
  const { q, fromMs, toMs } = viewParams()
  const bucket = bucketOf(s, toMs - fromMs)
  $('window-label').textContent = `${zonedIso(fromMs, s.tz).replace('T', ' ')} → ${zonedIso(toMs, s.tz).replace('T', ' ')} · ${s.tz} · ${bucket} buckets`
  const steps = progress(4)
  /** @template T @param {Promise<T>} p @returns {Promise<T>} */
  const counted = (p) => p.finally(() => gen === page.generation && steps.step())
  const usage = counted(getJson('/v1/usage', withParams(q, { group_by: s.by, order_by: s.sort, limit: String(GROUPS_LISTED) }), abort.signal))
  const series = { tz: s.tz, bucket }
  const grouped = counted(getJson('/v1/usage/timeseries', withParams(q, { ...series, group_by: s.by, order_by: s.measure, limit: String(s.top) }), abort.signal))
  const whole = counted(getJson('/v1/usage/timeseries', withParams(q, series), abort.signal))
  const events = counted(loadEvents(abort.signal))
  void loadStatus()
  const results = await Promise.allSettled([usage, grouped, whole, events])
  if (gen !== page.generation) return
  steps.end()
  const failures = results.flatMap((r) => (r.status === 'rejected' && !abort.signal.aborted ? [r.reason] : []))
  const auth = failures.find((e) => e instanceof ApiError && e.isAuth)
  if (auth) {
    askToken(auth)
    return
  }
  const [u, g, w] = results
  if (u.status === 'fulfilled') {
    renderTotals(u.value.totals)
    renderGroups(u.value)
  } else sectionError('groups-message', u.reason)
  if (g.status === 'fulfilled' && w.status === 'fulfilled' && u.status === 'fulfilled') renderChart(g.value, w.value, u.value.totals, toMs)
  else sectionError('chart-message', g.status === 'rejected' ? g.reason : w.status === 'rejected' ? w.reason : u.status === 'rejected' ? u.reason : null)
  if (failures.length > 0) notice(explain(failures[0]), 'error')
  document.body.dataset.loaded = String(gen)
}

/** @param {string} id @param {unknown} err */
function sectionError(id, err) {
  const el = $(id)
  el.hidden = false
  el.className = 'empty empty-error'
  el.textContent = explain(err)
  if (id === 'chart-message') {
    $('chart').replaceChildren()
    $('legend').replaceChildren()
  }
}

/** @param {any} t the UsageTotals of the window */
function renderTotals(t) {
  for (const tile of document.querySelectorAll('#tiles .tile')) {
    const el = /** @type {HTMLElement} */ (tile)
    const measure = el.dataset.measure ?? ''
    const value = /** @type {HTMLElement} */ (el.querySelector('.tile-value'))
    if (measure === 'cost') {
      // As the API wrote them: one exact string per currency, never re-summed here.
      const byCurrency = Object.entries(/** @type {Record<string, string>} */ (t.cost_by_currency))
      value.replaceChildren(...(byCurrency.length === 0 ? [h('span', { text: '–', title: 'no event in the window has a known cost' })] : byCurrency.map(([cur, amount]) => h('span', { class: 'money', 'data-currency': cur, text: `${amount} ${cur}` }))))
      value.dataset.value = t.cost ?? ''
      // The part tokenledger priced from its price table (the rest the gateways reported).
      const priced = Object.entries(/** @type {Record<string, string>} */ (t.cost_priced_by_currency ?? {})).map(([cur, amount]) => `${amount} ${cur}`).join(' + ')
      const note = /** @type {HTMLElement} */ (el.querySelector('.tile-note'))
      note.textContent = byCurrency.length === 0 ? '' : `of which priced by the price table: ${priced || '0'}`
      note.dataset.value = t.cost_priced ?? ''
    } else {
      value.textContent = count(t[measure])
      value.dataset.value = String(t[measure])
    }
  }
  $('error-rate').textContent = `${rate(t.errors, t.requests)} of requests`
}

/** @param {any} answer /v1/usage with group_by */
function renderGroups(answer) {
  const s = page.state
  const body = /** @type {HTMLTableSectionElement} */ (document.querySelector('#groups tbody'))
  const rows = /** @type {any[]} */ (answer.groups ?? []).map((g) => {
    const value = g.key[s.by]
    const t = g.totals
    const name =
      value === null
        ? h('span', { class: 'muted', text: '(none)', title: `events without a ${s.by}: there is no filter for "none"` })
        : h('button', { type: 'button', class: 'group-link', 'data-group': value, 'aria-label': `Filter the page by ${s.by} ${value}`, text: value })
    if (value !== null) name.addEventListener('click', () => addFilter(s.by, value))
    const cost = Object.entries(/** @type {Record<string, string>} */ (t.cost_by_currency)).map(([cur, amount]) => `${amount} ${cur}`).join(' + ') || '–'
    const priced = Object.entries(/** @type {Record<string, string>} */ (t.cost_priced_by_currency ?? {})).map(([cur, amount]) => `${amount} ${cur}`).join(' + ') || '–'
    return h('tr', {}, [
      h('th', { scope: 'row' }, [name]),
      h('td', { class: 'num', text: count(t.requests) }),
      h('td', { class: 'num', text: count(t.errors) }),
      h('td', { class: 'num', text: rate(t.errors, t.requests) }),
      h('td', { class: 'num', text: count(t.input_tokens) }),
      h('td', { class: 'num', text: count(t.output_tokens) }),
      h('td', { class: 'num', text: count(t.cache_read_tokens) }),
      h('td', { class: 'num', text: count(t.reasoning_tokens) }),
      h('td', { class: 'num money', text: cost }),
      h('td', { class: 'num money', text: priced }),
      h('td', { class: 'num', text: count(t.cost_missing) }),
    ])
  })
  body.replaceChildren(...rows)
  const total = answer.group_count ?? 0
  $('groups-count').textContent = total > rows.length ? `${rows.length} of ${count(total)} groups` : `${count(total)} group${total === 1 ? '' : 's'}`
  const message = $('groups-message')
  message.hidden = rows.length > 0
  message.className = 'empty'
  message.textContent = 'No events in this window and these filters.'
}

/**
 * @param {any} grouped the grouped time series
 * @param {any} whole the ungrouped one (totals per bucket)
 * @param {any} totals the window's totals
 * @param {number} toMs
 */
function renderChart(grouped, whole, totals, toMs) {
  const s = page.state
  const message = $('chart-message')
  const el = $('chart')
  // Cost: in the window's one currency, or the first when it mixes several (said so).
  const currencies = Object.keys(totals.cost_by_currency).sort()
  const currency = totals.currency ?? currencies[0] ?? null
  const { starts, layers, totals: perBucket } = layersOf(grouped.series, grouped.series_count, whole.series[0], s.by, s.measure, currency)
  page.chart?.destroy()
  page.chart = null
  if (totals.requests === 0) {
    message.hidden = false
    message.className = 'empty'
    message.textContent = 'No events in this window and these filters. Try a longer window or remove a filter.'
    el.replaceChildren()
    el.dataset.series = '0'
    el.dataset.buckets = String(starts.length)
    $('legend').replaceChildren()
    renderChartTable([], [], [])
    return
  }
  message.hidden = currencies.length <= 1 || s.measure !== 'cost'
  message.className = 'empty empty-warn'
  message.textContent = `This window has costs in ${currencies.join(', ')}; the chart shows ${currency} only (the totals show each).`
  const legendValues = () => layers.map((l) => l.total)
  renderLegend(layers, legendValues(), null)
  page.chart = drawChart(el, { starts, layers, toMs, tz: s.tz, bucket: grouped.bucket, measure: s.measure, currency }, (idx) => {
    renderLegend(layers, idx === null ? legendValues() : layers.map((l) => l.values[idx] ?? 0n), idx === null ? null : (starts[idx] ?? null))
  })
  $('chart-summary').textContent = `Stacked bars of ${s.measure} per ${s.by}, ${layers.length} series over ${starts.length} buckets; the table below the chart has every value.`
  renderChartTable(starts, layers, perBucket)
}

/**
 * @param {import('./chart.js').Layer[]} layers
 * @param {bigint[]} values
 * @param {string | null} at the hovered bucket's start, or null for the window
 */
function renderLegend(layers, values, at) {
  const measure = page.state.measure
  const items = layers.map((l, i) => {
    const swatch = h('span', { class: 'swatch', 'aria-hidden': 'true' })
    swatch.style.background = l.color // CSSOM, which the CSP allows (unlike a style attribute)
    return h('li', {}, [swatch, h('span', { class: 'legend-label', text: l.label }), h('span', { class: 'legend-value', text: formatValue(values[i] ?? 0n, measure) })])
  })
  items.unshift(h('li', { class: 'legend-at muted', text: at === null ? 'Whole window' : at.replace('T', ' ') }))
  $('legend').replaceChildren(...items)
}

/**
 * @param {string[]} starts
 * @param {import('./chart.js').Layer[]} layers
 * @param {bigint[]} perBucket
 */
function renderChartTable(starts, layers, perBucket) {
  const measure = page.state.measure
  const table = $('chart-table')
  const head = /** @type {HTMLElement} */ (table.querySelector('thead'))
  const body = /** @type {HTMLElement} */ (table.querySelector('tbody'))
  head.replaceChildren(h('tr', {}, [h('th', { scope: 'col', text: 'Bucket start' }), ...layers.map((l) => h('th', { scope: 'col', class: 'num', text: l.label })), h('th', { scope: 'col', class: 'num', text: 'Total' })]))
  body.replaceChildren(
    ...starts.map((start, i) =>
      h('tr', {}, [h('th', { scope: 'row', text: start }), ...layers.map((l) => h('td', { class: 'num', text: formatValue(l.values[i] ?? 0n, measure) })), h('td', { class: 'num', text: formatValue(perBucket[i] ?? 0n, measure) })]),
    ),
  )
}

// ---- events --------------------------------------------------------------------

function resetPages() {
  page.pages = [null]
  page.pageIndex = 0
  page.next = null
}

/** A pager click's failure: a refused token asks for one; anything else is shown by loadEvents. @param {unknown} err */
function onEventsError(err) {
  if (err instanceof ApiError && err.isAuth) askToken(err)
}

/**
 * Loads the event page `page.pageIndex` (newest first) and shows it.
 * @param {AbortSignal} [signal]
 */
async function loadEvents(signal) {
  const seq = ++page.eventsSeq
  const { q } = viewParams()
  const params = withParams(q, { limit: String(page.pageSize) })
  const cursor = page.pages[page.pageIndex] ?? null
  if (cursor !== null) params.set('cursor', cursor)
  const message = $('events-message')
  let answer
  try {
    answer = await getJson('/v1/events', params, signal)
  } catch (err) {
    if (signal?.aborted) throw err
    if (err instanceof ApiError && err.isAuth) throw err
    message.hidden = false
    message.className = 'empty empty-error'
    message.textContent = explain(err)
    throw err
  }
  if (seq !== page.eventsSeq) return
  page.next = answer.next_cursor
  renderEvents(answer.events, page.pageIndex + 1, answer.next_cursor !== null)
}

/** @param {any[]} events @param {number} pageNo @param {boolean} more */
function renderEvents(events, pageNo, more) {
  const tz = page.state.tz
  const body = /** @type {HTMLElement} */ (document.querySelector('#events tbody'))
  body.replaceChildren(
    ...events.map((e) => {
      const open = h('button', { type: 'button', class: 'event-link', 'data-event': e.event_id, 'aria-label': `Show event ${e.event_id}`, text: e.event_id })
      open.addEventListener('click', () => void openDetail(e.event_id, open))
      return h('tr', { class: e.status_code >= 400 ? 'row-error' : '' }, [
        h('td', { class: 'nowrap', text: zonedIso(Date.parse(e.timestamp), tz).replace('T', ' ') }),
        h('td', {}, [open]),
        h('td', { text: e.key_id }),
        h('td', { text: e.model }),
        h('td', { text: e.provider }),
        h('td', { class: 'num status-code', text: String(e.status_code) }),
        h('td', { class: 'num', text: count(e.input_tokens) }),
        h('td', { class: 'num', text: count(e.output_tokens) }),
        h('td', e.cost_origin === 'priced' ? { class: 'num money priced', title: `priced by ${e.price_ref}`, text: `${e.cost} ${e.currency} (priced)` } : { class: 'num money', text: e.cost === null ? 'unknown' : `${e.cost} ${e.currency}` }),
      ])
    }),
  )
  const message = $('events-message')
  message.hidden = events.length > 0
  message.className = 'empty'
  message.textContent = 'No events in this window and these filters.'
  buttonEl('page-older').disabled = !more
  buttonEl('page-newer').disabled = pageNo <= 1
  buttonEl('page-newest').disabled = pageNo <= 1
  $('page-label').textContent = events.length === 0 ? '' : `Page ${pageNo}${more ? '' : ' (last)'}`
}

/** @type {HTMLElement | null} */
let detailOpener = null

/** @param {string} id @param {HTMLElement} opener */
async function openDetail(id, opener) {
  detailOpener = opener
  const panel = $('detail')
  const body = $('detail-body')
  panel.hidden = false
  $('detail-title').textContent = `Event ${id}`
  body.replaceChildren(h('p', { class: 'muted', text: 'Loading…' }))
  $('detail-close').focus()
  try {
    const e = await getJson(`/v1/events/${encodeURIComponent(id)}`)
    const { detail, tags, ...fields } = e
    const rows = Object.entries(fields).map(([k, v]) => [h('dt', { text: k }), h('dd', { class: k === 'cost' ? 'money' : '', text: v === null ? '—' : k === 'timestamp' ? `${v} (${zonedIso(Date.parse(String(v)), page.state.tz)})` : String(v) })]).flat()
    body.replaceChildren(
      h('dl', { class: 'fields' }, rows),
      h('h3', { text: 'Tags' }),
      tags ? h('pre', { class: 'json', text: JSON.stringify(tags, null, 2) }) : h('p', { class: 'muted', text: 'No tags.' }),
      h('h3', { text: 'Detail' }),
      detail ? h('pre', { class: 'json', id: 'detail-json', text: JSON.stringify(detail, null, 2) }) : h('p', { class: 'muted', text: detail === null ? 'No detail payload, or it is past the detail retention window.' : 'No detail payload.' }),
    )
  } catch (err) {
    if (err instanceof ApiError && err.isAuth) askToken(err)
    body.replaceChildren(h('p', { class: 'empty empty-error', text: explain(err) }))
  }
}

function closeDetail() {
  $('detail').hidden = true
  detailOpener?.focus()
  detailOpener = null
}

// ---- filters' values, exports, status ---------------------------------------------

async function loadFilterValues() {
  const dim = selectEl('filter-dim').value
  const list = $('filter-values')
  if (dim === 'status') {
    list.replaceChildren(...['ok', 'error', '429', '500'].map((v) => h('option', { value: v })))
    return
  }
  try {
    const { q } = viewParams()
    const answer = await getJson('/v1/usage/dimensions', withParams(q, { limit: '100' }))
    list.replaceChildren(...(answer.dimensions[dim]?.values ?? []).map((/** @type {string} */ v) => h('option', { value: v })))
  } catch {
    list.replaceChildren() // suggestions only: a value can still be typed
  }
}

/** @param {string} format @param {HTMLButtonElement} button */
async function exportView(format, button) {
  const { q } = viewParams()
  button.disabled = true
  const label = button.textContent
  button.textContent = `${label}…`
  button.setAttribute('aria-busy', 'true')
  try {
    const { blob, name } = await getFile('/v1/export', withParams(q, { format }))
    const url = URL.createObjectURL(blob)
    const a = h('a', { href: url, download: name })
    document.body.append(a)
    a.click()
    a.remove()
    setTimeout(() => URL.revokeObjectURL(url), 60_000)
    notice(`Exported ${name} (${count(blob.size)} bytes).`, 'info')
  } catch (err) {
    if (err instanceof ApiError && err.isAuth) askToken(err)
    else notice(explain(err), 'error')
  } finally {
    button.disabled = false
    button.textContent = label
    button.removeAttribute('aria-busy')
  }
}

async function loadStatus() {
  const strip = $('status')
  /** @type {HTMLElement[]} */
  const items = []
  try {
    await getJson('/readyz')
    items.push(h('span', { class: 'status-item status-ok', id: 'status-ready', text: 'Ready' }))
  } catch (err) {
    const why = err instanceof ApiError ? err.message : 'no answer'
    items.push(h('span', { class: 'status-item status-bad', id: 'status-ready', text: `Not ready: ${why}` }))
  }
  try {
    const st = await getJson('/v1/status')
    const t = st.tiers
    items.push(h('span', { class: 'status-item', id: 'status-tiers', text: `Segments: ${t.active} active · ${t.pending} pending · ${t.archived} archived` }))
    const backlog = st.sealing.backlog
    items.push(h('span', { class: `status-item ${st.sealing.failing.length > 0 ? 'status-bad' : ''}`, id: 'status-sealing', text: `Sealing backlog: ${backlog}${backlog > 0 ? ` (oldest ${Math.round(st.sealing.oldest_pending_age_s)} s)` : ''}${st.sealing.failing.length > 0 ? `, ${st.sealing.failing.length} failing` : ''}` }))
    const last = st.retention.last_report
    items.push(h('span', { class: `status-item ${last && last.errors.length > 0 ? 'status-bad' : ''}`, id: 'status-retention', text: last ? `Last retention: ${zonedIso(Date.parse(last.started_at), page.state.tz).replace('T', ' ')}, ${last.segments_deleted.length} segments deleted${last.errors.length > 0 ? `, ${last.errors.length} errors` : ''}` : 'Retention: not run yet' }))
  } catch (err) {
    // /v1/status is an operator route (admin scope): a query token cannot read it, and that is fine here.
    const text = err instanceof ApiError && err.isAuth ? 'Segments, sealing and retention: an admin token shows them' : `Status: ${err instanceof ApiError ? err.message : 'no answer'}`
    items.push(h('span', { class: 'status-item muted', id: 'status-tiers', text }))
  }
  strip.replaceChildren(...items)
}

// ---- start ---------------------------------------------------------------------

fillZones()
// The dimension lists live once, in state.js.
selectEl('by').replaceChildren(...DIMENSIONS.map((d) => h('option', { value: d, text: d })))
selectEl('filter-dim').replaceChildren(...FILTERS.map((d) => h('option', { value: d, text: d })))
wireControls()
$('forget-token').hidden = getToken() === null
if (!location.hash) history.replaceState(null, '', formatHash(page.state))
applyHash()
window.setInterval(() => void loadStatus(), STATUS_EVERY_MS)
