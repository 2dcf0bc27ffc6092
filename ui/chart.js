// @ts-check
// The stacked time series: the top N groups and "other" per bucket, drawn as
// stacked bars with uPlot. Values stay exact (BigInt) until the last step:
// "other" is the total series minus the top N, in exact integers (cost scaled
// by 10^12); only bar heights become Numbers. The legend and the data table
// show the exact values, never a re-summed float.

import uPlot from './uplot.esm.js'
import { formatDecimal, parseDecimal, toNumber } from './decimal.js'

const PALETTE = ['#2f6fb0', '#e07b39', '#3a9a5b', '#b8475a', '#7d5fb2', '#c49a2c', '#2a9d9a', '#d16ba5', '#6b7f3a', '#8a5a44', '#4f6d8f', '#a83e8c', '#5e8c31', '#c0612b', '#3d5a9e', '#9b8b2e', '#6a3d9a', '#1b7f79', '#b15928', '#7f7f7f']
const OTHER_COLOR = '#a3abb5'

/**
 * @typedef {{ start: string, requests: number, errors: number, input_tokens: number, output_tokens: number,
 *   cost: string | null, cost_by_currency: Record<string, string> }} Point
 * @typedef {{ key: Record<string, string | null>, points: Point[] }} Series
 * @typedef {{ label: string, color: string, values: bigint[], total: bigint }} Layer
 */

/**
 * One point's measure, exactly: a count, or a cost in `currency` scaled by 10^12.
 * @param {Point} p
 * @param {string} measure
 * @param {string | null} currency
 * @returns {bigint}
 */
function valueOf(p, measure, currency) {
  if (measure !== 'cost') return BigInt(/** @type {number} */ (p[/** @type {'requests'} */ (measure)]))
  const text = currency === null ? null : (p.cost_by_currency[currency] ?? null)
  return text === null ? 0n : parseDecimal(text)
}

/**
 * @param {bigint} v
 * @param {string} measure
 */
export function formatValue(v, measure) {
  return measure === 'cost' ? formatDecimal(v) : new Intl.NumberFormat().format(v)
}

/**
 * The layers of the stack, largest group first and "other" last (only when more groups exist than are shown).
 * @param {Series[]} top the grouped answer's series (the N largest by the measure)
 * @param {number} seriesCount how many groups the window has
 * @param {Series | undefined} all the ungrouped answer's one series (the totals per bucket)
 * @param {string} by the grouping dimension
 * @param {string} measure
 * @param {string | null} currency
 * @returns {{ starts: string[], layers: Layer[], totals: bigint[] }}
 */
export function layersOf(top, seriesCount, all, by, measure, currency) {
  const starts = (all?.points ?? top[0]?.points ?? []).map((p) => p.start)
  const totals = (all?.points ?? []).map((p) => valueOf(p, measure, currency))
  /** @type {Layer[]} */
  const layers = top.map((s, i) => {
    const values = s.points.map((p) => valueOf(p, measure, currency))
    const label = s.key[by] ?? '(none)'
    return { label, color: PALETTE[i % PALETTE.length] ?? OTHER_COLOR, values, total: values.reduce((a, b) => a + b, 0n) }
  })
  if (seriesCount > top.length && all) {
    const values = totals.map((t, i) => layers.reduce((rest, l) => rest - (l.values[i] ?? 0n), t))
    layers.push({ label: 'other', color: OTHER_COLOR, values, total: values.reduce((a, b) => a + b, 0n) })
  }
  return { starts, layers, totals }
}

/** Most labels on the time axis when they are the buckets' own starts. */
const MAX_BUCKET_LABELS = 14

/**
 * Day, week and month buckets are labelled at their own starts (local midnight in `tz`, so a
 * 25-hour day's label sits where that day begins); shorter buckets keep uPlot's own time ticks.
 * @param {number[]} xs bucket starts, in seconds
 * @param {string} bucket
 * @param {string} tz
 * @returns {Partial<uPlot.Axis>}
 */
function calendarTicks(xs, bucket, tz) {
  if (bucket !== '1d' && bucket !== '1w' && bucket !== '1mo') return {}
  const every = Math.ceil(xs.length / MAX_BUCKET_LABELS)
  const shown = xs.filter((_x, i) => i % every === 0)
  const format = new Intl.DateTimeFormat(undefined, bucket === '1mo' ? { timeZone: tz, month: 'short', year: 'numeric' } : { timeZone: tz, month: 'short', day: 'numeric', weekday: bucket === '1d' ? 'short' : undefined })
  return { splits: () => shown, values: (_u, splits) => splits.map((x) => format.format(x * 1000)), grid: { show: false } }
}

/**
 * Draws (or redraws) the chart into `el`; returns the uPlot instance.
 * @param {HTMLElement} el
 * @param {{ starts: string[], layers: Layer[], toMs: number, tz: string, bucket: string, measure: string, currency: string | null }} view
 * @param {(index: number | null) => void} onHover the hovered bucket (null: none), for the legend
 * @returns {uPlot}
 */
export function drawChart(el, view, onHover) {
  const { starts, layers, measure } = view
  const xs = starts.map((s) => Date.parse(s) / 1000)
  const n = layers.length
  // Stacked bars: layer k is drawn at the height of layers 0..k summed (exactly, then as a Number).
  // uPlot draws series in order, so the tallest (the whole stack) goes first and each lower one over it.
  /** @type {number[][]} */
  const heights = []
  let running = xs.map(() => 0n)
  for (const layer of layers) {
    running = running.map((r, i) => r + (layer.values[i] ?? 0n))
    heights.push(running.map((v) => (measure === 'cost' ? toNumber(v) : Number(v))))
  }
  const order = layers.map((_, k) => n - 1 - k)
  const lastEnd = xs.length > 1 ? Math.max(view.toMs / 1000, (xs.at(-1) ?? 0) + ((xs.at(-1) ?? 0) - (xs.at(-2) ?? 0))) : view.toMs / 1000
  const bars = uPlot.paths.bars?.({ size: [0.9, Infinity], align: 1, gap: 1 })
  const compact = new Intl.NumberFormat(undefined, { notation: 'compact', maximumFractionDigits: 2 })
  /** @type {uPlot.Options} */
  const opts = {
    width: Math.max(320, el.clientWidth),
    height: 300,
    tzDate: (ts) => uPlot.tzDate(new Date(ts * 1000), view.tz),
    legend: { show: false },
    cursor: { drag: { x: false, y: false }, points: { show: false } },
    scales: { x: { time: true, range: () => [xs[0] ?? 0, lastEnd] }, y: { range: (_u, _min, max) => [0, max > 0 ? max * 1.08 : 1] } },
    axes: [
      { stroke: '#5b6470', grid: { stroke: '#eef0f3' }, ticks: { stroke: '#d5d9df' }, ...calendarTicks(xs, view.bucket, view.tz) },
      {
        stroke: '#5b6470',
        grid: { stroke: '#eef0f3' },
        ticks: { show: false },
        size: 64,
        label: measure === 'cost' ? (view.currency ?? 'cost') : undefined,
        values: (_u, splits) => splits.map((v) => compact.format(v)),
      },
    ],
    series: [{}, ...order.map((k) => ({ label: layers[k]?.label ?? '', stroke: layers[k]?.color, fill: layers[k]?.color, width: 0, paths: bars, points: { show: false } }))],
    hooks: {
      setCursor: [(u) => onHover(u.cursor.idx ?? null)],
      draw: [
        (u) => {
          // What the chart really drew, for people reading the DOM (and the browser tests).
          el.dataset.series = String(u.series.length - 1)
          el.dataset.buckets = String(u.data[0].length)
          // A User Timing mark (bench/ui.ts reads the first one: time to first chart).
          performance.mark('tokenledger:chart-drawn')
        },
      ],
    },
  }
  /** @type {uPlot.AlignedData} */
  const data = [xs, ...order.map((k) => heights[k] ?? [])]
  el.replaceChildren()
  return new uPlot(opts, data, el)
}
