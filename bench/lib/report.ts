// What the benches print, and how they read their integer flags: one log line at a
// time on stdout, number formats, the process-wide lists of correctness failures and
// warnings (each bench is its own process and reads them at the end for its exit code),
// percentiles, and the one-line summary of an autocannon load phase.
import type { PhaseResult } from './load.js'

export const log = (line = ''): void => void process.stdout.write(`${line}\n`)
export const int = (n: number): string => Math.round(n).toLocaleString('en-US')
export const f1 = (n: number): string => n.toFixed(1)
export const f2 = (n: number): string => n.toFixed(2)
export const mib = (bytes: number): string => `${f1(bytes / 2 ** 20)} MiB`

/** Correctness failures so far; a bench exits 1 when there are any. */
export const failures: string[] = []
/** Things worth a look that are not correctness failures. */
export const warnings: string[] = []

export const fail = (what: string): void => {
  failures.push(what)
  log(`FAILURE: ${what}`)
}

export const warn = (what: string): void => {
  warnings.push(what)
  log(`WARNING: ${what}`)
}

/**
 * The integer flag reader over `parseArgs` values: `num(name, fallback, min, max)` is
 * the flag's value, `fallback` when it is absent; anything else than an integer in
 * min..max is reported as `<bench>: --name must be …` and exits 2.
 */
export function integerFlags<V extends object>(bench: string, values: V): (name: keyof V & string, fallback: number, min: number, max: number) => number {
  return (name, fallback, min, max) => {
    const raw: unknown = values[name]
    if (raw === undefined) return fallback
    const v = Number(raw)
    if (typeof raw !== 'string' || !Number.isInteger(v) || v < min || v > max) {
      process.stderr.write(`${bench}: --${name} must be an integer in ${min}..${max}, got "${String(raw)}"\n`)
      process.exit(2)
    }
    return v
  }
}

/** The closed-loop load flags of the store benches (tiers, retention), for their parseArgs options. */
export const loadFlags = {
  duration: { type: 'string' },
  warmup: { type: 'string' },
  connections: { type: 'string' },
  batch: { type: 'string' },
} as const

/** Those flags' values: --duration S (10) --warmup S (2) --connections N (32) --batch B (100). */
export function loadOptions(num: (name: keyof typeof loadFlags, fallback: number, min: number, max: number) => number): { durationS: number; warmupS: number; connections: number; batch: number } {
  return {
    durationS: num('duration', 10, 1, 3_600),
    warmupS: num('warmup', 2, 0, 600),
    connections: num('connections', 32, 1, 1_024),
    batch: num('batch', 100, 1, 10_000),
  }
}

/** The nearest-rank p-th percentile of `xs` (NaN when empty). */
export const percentile = (xs: number[], p: number): number => {
  if (xs.length === 0) return NaN
  const s = [...xs].sort((a, b) => a - b)
  return s[Math.min(s.length - 1, Math.ceil((p / 100) * s.length) - 1)]!
}

export interface PhaseFigures {
  eventsPerS: number
  p50: number
  p99: number
  max: number
}

/**
 * Prints one load phase (events/s, latencies, non-2xx, errors, partly accepted batches)
 * and fails when a batch was not answered 2xx or not fully accepted; the failure names
 * the first `failSamples` non-2xx answers when that is above 0.
 */
export function phaseLine(label: string, r: PhaseResult, batch: number, failSamples = 0): PhaseFigures {
  const res = r.result
  const eventsPerS = (res['2xx'] * batch) / res.duration
  log(
    `  ${label}: ${int(eventsPerS)} events/s, p50 ${res.latency.p50} ms, p99 ${res.latency.p99} ms, max ${res.latency.max} ms, ` +
      `non-2xx ${res.non2xx}, errors ${res.errors}, accepted≠batch ${r.stats.mismatches}`,
  )
  if (res.non2xx > 0 || r.stats.mismatches > 0) {
    const samples = failSamples > 0 ? ` ${r.stats.non2xxSamples.slice(0, failSamples).join(' | ')}` : ''
    fail(`${label}: ${res.non2xx} non-2xx, ${r.stats.mismatches} batches not fully accepted ${JSON.stringify(r.stats.non2xxByStatus)}${samples}`)
  }
  return { eventsPerS, p50: res.latency.p50, p99: res.latency.p99, max: res.latency.max }
}
