// The price table: what a million tokens of each class cost per provider and
// model, from a date on. Parsed strictly (every error names the entry and the
// field as a JSON pointer), compiled once into lookups the ingest path runs
// per event (apply.ts), identified by the hash of its canonical form.
//
// Invariants:
// - A table is immutable once compiled; replacing it means compiling another
//   (a bad one is refused whole and the table in use is kept).
// - `version` is a function of the content alone (sha-256 of the canonical
//   JSON): the same prices are the same version on every node and after every
//   restart; any edit is another version.
// - Prices are exact decimals (at most PRICE_SCALE fractional digits), kept
//   as scaled bigints; no floating point touches them.
// - An entry prices its exact `model` and, with a `model_pattern`, every
//   model the pattern matches (dated versions). Lookup: an exact model name
//   wins over a pattern; among patterns the most specific (most literal
//   characters) wins, then the earlier entry. Within the winning name or
//   pattern, the entry in effect at the event's time is the one with the
//   latest effective_from not after it; none = no price.
// - A pattern is a glob: `*` matches any run of characters, `?` exactly one.
//   Matching is iterative and linear in the model name (no regular
//   expressions from the table reach the hot path).

import { hash } from 'node:crypto'
import { parseTimestamp } from '../ingest/timestamp.js'

/** Fractional digits a price may have, and the scale prices are kept at. */
export const PRICE_SCALE = 12
const PRICE_FACTOR = 10n ** BigInt(PRICE_SCALE)
/** A price per million tokens (or per request) must be below 10^9. */
const MAX_PRICE_WHOLE_DIGITS = 9
/** Most entries in one table. */
export const MAX_PRICE_ENTRIES = 10_000
/** Most distinct (provider, model) pairs whose lookup is remembered. */
const MAX_CACHED_LOOKUPS = 16_384

/** The token classes an entry prices, per million tokens. */
export const PRICE_CLASSES = ['input', 'cache_read', 'cache_write', 'output', 'reasoning'] as const
export type PriceClass = (typeof PRICE_CLASSES)[number]

/** One entry as written in the table (decimal strings). */
export interface PriceEntryInput {
  provider: string
  model: string
  model_pattern?: string
  effective_from?: string
  currency?: string
  per_million: { input: string; output: string; cache_read?: string; cache_write?: string; reasoning?: string }
  per_request?: string
  source?: string
}

export interface PriceTableInput {
  currency?: string
  prices: PriceEntryInput[]
}

/** One entry, compiled: every class resolved (defaults applied), scaled by 10^PRICE_SCALE. */
export interface PriceEntry {
  /** How answers and stored events name the entry: "openai/gpt-4o@2024-05-13T00:00:00.000Z". */
  name: string
  provider: string
  /** The exact model name the entry prices. */
  model: string
  /** A glob the entry also prices (dated versions: "gpt-4o-????-??-??"), or null. */
  pattern: string | null
  effectiveFromUs: number
  currency: string
  /** Per million tokens, scaled by 10^PRICE_SCALE: input, cache_read, cache_write, output, reasoning. */
  perMillion: readonly [bigint, bigint, bigint, bigint, bigint]
  /** Per successful request (status < 400), scaled by 10^PRICE_SCALE. */
  perRequest: bigint
  /** The same prices as safe-integer Numbers, for apply.ts's fast path (null: some price is too large for it). */
  perToken: PerToken | null
}

/**
 * Each per-million price p split as p = whole x 10^6 + rest: `whole` is the
 * price of one token in units of the cost's 10^-12, `rest` (< 10^6) what is
 * left per million tokens. Numbers, every one a safe integer.
 */
export interface PerToken {
  whole: readonly [number, number, number, number, number]
  rest: readonly [number, number, number, number, number]
  perRequest: number
}

const MILLION = 1_000_000n
const SAFE = BigInt(Number.MAX_SAFE_INTEGER)

/** `perMillion` and `perRequest` as PerToken, or null when a part is not a safe integer. */
export function perToken(perMillion: readonly [bigint, bigint, bigint, bigint, bigint], perRequest: bigint): PerToken | null {
  if (perRequest > SAFE || perMillion.some((p) => p / MILLION > SAFE)) return null
  const [w0, w1, w2, w3, w4] = perMillion.map((p) => Number(p / MILLION)) as [number, number, number, number, number]
  const [r0, r1, r2, r3, r4] = perMillion.map((p) => Number(p % MILLION)) as [number, number, number, number, number]
  return { whole: [w0, w1, w2, w3, w4], rest: [r0, r1, r2, r3, r4], perRequest: Number(perRequest) }
}

export interface PriceFieldError {
  field: string
  message: string
}

export type ParsedTable = { ok: true; table: PriceTable } | { ok: false; errors: PriceFieldError[] }

/** Entries of one name (exact model or pattern), latest effective_from first. */
interface Timeline {
  entries: PriceEntry[]
}

interface PatternLine extends Timeline {
  provider: string
  glob: string
  literal: number
  order: number
}

export class PriceTable {
  /** Exact (provider, model) → timeline. */
  private readonly exact = new Map<string, Timeline>()
  private readonly patterns: PatternLine[] = []
  /**
   * provider → model → the timeline that prices it (null: none), filled on
   * first lookup. Two levels, so a lookup hashes the event's own strings (V8
   * keeps a string's hash) instead of building a key per event.
   */
  private readonly resolved = new Map<string, Map<string, Timeline | null>>()
  private resolvedCount = 0

  constructor(
    /** sha-256 of the canonical table, first 16 hex digits. */
    readonly version: string,
    /** The table as accepted, canonical JSON (what GET returns and the history keeps). */
    readonly canonical: string,
    readonly entries: readonly PriceEntry[],
  ) {
    const byName = new Map<string, Timeline & { glob: string | null; provider: string; order: number }>()
    const add = (key: string, e: PriceEntry, glob: string | null, order: number): void => {
      let line = byName.get(key)
      if (!line) byName.set(key, (line = { entries: [], glob, provider: e.provider, order }))
      line.entries.push(e)
    }
    entries.forEach((e, order) => {
      add(`x\x1f${e.provider}\x1f${e.model}`, e, null, order)
      if (e.pattern !== null) add(`p\x1f${e.provider}\x1f${e.pattern}`, e, e.pattern, order)
    })
    for (const line of byName.values()) {
      line.entries.sort((a, b) => b.effectiveFromUs - a.effectiveFromUs)
      if (line.glob !== null) this.patterns.push({ entries: line.entries, provider: line.provider, glob: line.glob, literal: line.glob.replace(/[*?]/g, '').length, order: line.order })
      else this.exact.set(`${line.provider}\x1f${line.entries[0]!.model}`, { entries: line.entries })
    }
    this.patterns.sort((a, b) => b.literal - a.literal || a.order - b.order)
  }

  /** The entry pricing `model` of `provider` at `tsUs`, or null. */
  lookup(provider: string, model: string, tsUs: number): PriceEntry | null {
    let models = this.resolved.get(provider)
    let line = models?.get(model)
    if (line === undefined) {
      line = this.exact.get(`${provider}\x1f${model}`) ?? this.patterns.find((p) => p.provider === provider && globMatch(p.glob, model)) ?? null
      if (this.resolvedCount < MAX_CACHED_LOOKUPS) {
        if (models === undefined) this.resolved.set(provider, (models = new Map()))
        models.set(model, line)
        this.resolvedCount++
      }
    }
    if (line === null) return null
    for (const e of line.entries) if (e.effectiveFromUs <= tsUs) return e
    return null
  }
}

/** True when `glob` (`*`: any run, `?`: one character) matches the whole of `text`. Linear-time two-pointer walk. */
export function globMatch(glob: string, text: string): boolean {
  let g = 0
  let t = 0
  let star = -1
  let mark = 0
  while (t < text.length) {
    if (g < glob.length && (glob[g] === '?' || (glob[g] !== '*' && glob[g] === text[t]))) {
      g++
      t++
    } else if (g < glob.length && glob[g] === '*') {
      star = g++
      mark = t
    } else if (star !== -1) {
      g = star + 1
      t = ++mark
    } else {
      return false
    }
  }
  while (g < glob.length && glob[g] === '*') g++
  return g === glob.length
}

const ENTRY_FIELDS = new Set(['provider', 'model', 'model_pattern', 'effective_from', 'currency', 'per_million', 'per_request', 'source'])
const TABLE_FIELDS = new Set(['currency', 'prices', '$comment'])
const DECIMAL_RE = /^(\d+)(?:\.(\d+))?$/
const CURRENCY_RE = /^[A-Z]{3}$/
const NAME_RE = /^[\x21-\x7e](?:[\x20-\x7e]*[\x21-\x7e])?$/
const EPOCH_START = '1970-01-01T00:00:00.000Z'

/** Parses a price as a scaled bigint, or says why not. */
export function parsePrice(value: unknown): bigint | string {
  if (typeof value !== 'string') return `must be a decimal string like "2.50", got ${value === null ? 'null' : Array.isArray(value) ? 'array' : typeof value}`
  const m = DECIMAL_RE.exec(value)
  if (!m) return 'must be a plain decimal like "2.50" (digits, an optional point and fraction; no sign, exponent or spaces)'
  const whole = m[1]!.replace(/^0+(?=\d)/, '')
  const frac = m[2] ?? ''
  if (frac.length > PRICE_SCALE) return `must have at most ${PRICE_SCALE} fractional digits`
  if (whole.length > MAX_PRICE_WHOLE_DIGITS) return `must be below 10^${MAX_PRICE_WHOLE_DIGITS}`
  return BigInt(whole) * PRICE_FACTOR + BigInt(frac.padEnd(PRICE_SCALE, '0') || '0')
}

/** Formats a scaled price as its shortest decimal text. */
export function formatPrice(scaled: bigint): string {
  const digits = scaled.toString().padStart(PRICE_SCALE + 1, '0')
  const whole = digits.slice(0, -PRICE_SCALE)
  const frac = digits.slice(-PRICE_SCALE).replace(/0+$/, '')
  return frac ? `${whole}.${frac}` : whole
}

/**
 * Parses and compiles a price table, refusing it whole with every error
 * found (at most 100), each naming its JSON pointer ("/prices/3/per_million/input").
 */
export function parsePriceTable(input: unknown): ParsedTable {
  const errors: PriceFieldError[] = []
  const fail = (field: string, message: string): void => {
    if (errors.length < 100) errors.push({ field, message })
  }
  if (typeof input !== 'object' || input === null || Array.isArray(input)) return { ok: false, errors: [{ field: '', message: 'must be an object {"prices":[...]}' }] }
  const top = input as Record<string, unknown>
  for (const k of Object.keys(top)) if (!TABLE_FIELDS.has(k)) fail(`/${k}`, 'unknown field')
  let defaultCurrency = 'USD'
  if (top.currency !== undefined) {
    if (typeof top.currency === 'string' && CURRENCY_RE.test(top.currency)) defaultCurrency = top.currency
    else fail('/currency', 'must be an ISO 4217 code of three capital letters, e.g. USD')
  }
  if (!Array.isArray(top.prices)) {
    fail('/prices', top.prices === undefined ? 'is required' : 'must be an array of price entries')
    return { ok: false, errors }
  }
  if (top.prices.length > MAX_PRICE_ENTRIES) {
    fail('/prices', `must have at most ${MAX_PRICE_ENTRIES} entries, got ${top.prices.length}`)
    return { ok: false, errors }
  }
  const entries: PriceEntry[] = []
  const canonical: PriceEntryInput[] = []
  const seen = new Map<string, number>()
  top.prices.forEach((raw, i) => {
    const at = `/prices/${i}`
    if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) return fail(at, 'must be an object')
    const e = raw as Record<string, unknown>
    const before = errors.length
    for (const k of Object.keys(e)) if (!ENTRY_FIELDS.has(k)) fail(`${at}/${k}`, 'unknown field')
    const name = (field: 'provider' | 'model', max: number): string | null => {
      const v = e[field]
      if (v === undefined || v === null) return fail(`${at}/${field}`, 'is required'), null
      if (typeof v !== 'string' || v.length < 1 || v.length > max || !NAME_RE.test(v)) return fail(`${at}/${field}`, `must be 1-${max} printable characters without leading or trailing spaces`), null
      return v
    }
    const provider = name('provider', 64)
    const model = name('model', 128)
    let glob: string | null = null
    if (e.model_pattern !== undefined) {
      const p = e.model_pattern
      if (typeof p !== 'string' || p.length < 1 || p.length > 128 || !NAME_RE.test(p)) fail(`${at}/model_pattern`, 'must be 1-128 printable characters')
      else if (!/[*?]/.test(p)) fail(`${at}/model_pattern`, 'must contain a wildcard (* or ?); an exact name belongs in model')
      else if (/^[*?]+$/.test(p)) fail(`${at}/model_pattern`, 'must contain at least one literal character (a pattern of wildcards alone would price every model)')
      else glob = p
    }
    let effectiveFromUs = 0
    if (e.effective_from !== undefined) {
      const res = typeof e.effective_from === 'string' ? parseTimestamp(e.effective_from) : null
      if (res === null || !res.ok) fail(`${at}/effective_from`, res === null ? 'must be an RFC 3339 timestamp string' : res.message)
      else effectiveFromUs = res.us
    }
    let currency = defaultCurrency
    if (e.currency !== undefined) {
      if (typeof e.currency === 'string' && CURRENCY_RE.test(e.currency)) currency = e.currency
      else fail(`${at}/currency`, 'must be an ISO 4217 code of three capital letters, e.g. USD')
    }
    const pm = e.per_million
    const prices: bigint[] = []
    const canonicalPm: Record<string, string> = {}
    if (typeof pm !== 'object' || pm === null || Array.isArray(pm)) {
      fail(`${at}/per_million`, pm === undefined ? 'is required' : 'must be an object of decimal strings per million tokens')
    } else {
      const m = pm as Record<string, unknown>
      for (const k of Object.keys(m)) if (!(PRICE_CLASSES as readonly string[]).includes(k)) fail(`${at}/per_million/${k}`, `unknown token class (one of ${PRICE_CLASSES.join(', ')})`)
      for (const cls of PRICE_CLASSES) {
        const v = m[cls]
        if (v === undefined) {
          if (cls === 'input' || cls === 'output') fail(`${at}/per_million/${cls}`, 'is required')
          continue
        }
        const p = parsePrice(v)
        if (typeof p === 'string') fail(`${at}/per_million/${cls}`, p)
        else {
          prices[PRICE_CLASSES.indexOf(cls)] = p
          canonicalPm[cls] = formatPrice(p)
        }
      }
    }
    let perRequest = 0n
    if (e.per_request !== undefined) {
      const p = parsePrice(e.per_request)
      if (typeof p === 'string') fail(`${at}/per_request`, p)
      else perRequest = p
    }
    if (e.source !== undefined && (typeof e.source !== 'string' || e.source.length > 1024)) fail(`${at}/source`, 'must be a string of at most 1024 characters')
    if (errors.length > before || provider === null || model === null) return
    const key = `${provider}\x1f${model}\x1f${effectiveFromUs}`
    const dup = seen.get(key)
    if (dup !== undefined) return fail(at, `prices the same provider and model from the same effective_from as /prices/${dup}`)
    seen.set(key, i)
    const [input, cacheRead, cacheWrite, output, reasoning] = prices
    const from = new Date(Math.floor(effectiveFromUs / 1000)).toISOString()
    const perMillion = [input!, cacheRead ?? input!, cacheWrite ?? input!, output!, reasoning ?? output!] as const
    entries.push({
      name: `${provider}/${model}@${from}`,
      provider,
      model,
      pattern: glob,
      effectiveFromUs,
      currency,
      perMillion,
      perRequest,
      perToken: perToken(perMillion, perRequest),
    })
    canonical.push({
      provider,
      model,
      ...(glob !== null ? { model_pattern: glob } : {}),
      effective_from: effectiveFromUs === 0 ? EPOCH_START : from,
      currency,
      per_million: canonicalPm as PriceEntryInput['per_million'],
      ...(perRequest !== 0n ? { per_request: formatPrice(perRequest) } : {}),
      ...(typeof e.source === 'string' ? { source: e.source } : {}),
    })
  })
  if (errors.length > 0) return { ok: false, errors }
  const text = JSON.stringify({ prices: canonical }, null, 2)
  const version = hash('sha256', text, 'hex').slice(0, 16)
  return { ok: true, table: new PriceTable(version, text, entries) }
}
