// Pricing one event from the price table (table.ts), exactly.
//
// The rule, written once (README "Prices" says the same):
//   uncached input = input_tokens - cache_read_tokens - cache_write_tokens
//   plain output   = output_tokens - reasoning_tokens
//   exact cost     = (uncached input x input + cache_read x cache_read price
//                     + cache_write x cache_write price + plain output x output
//                     + reasoning x reasoning price) / 1,000,000
//                    + per_request (only when status_code < 400)
//   stored cost    = the exact cost rounded once, half to even, to the cost's
//                    12 fractional digits.
// All of it in bigint: prices are scaled by 10^12, so the sum of tokens x price
// is in units of 10^-18 (per million tokens) and one division by 10^6 with
// half-even rounding gives the cost scaled by 10^12 (money.ts).
//
// Invariants:
// - The event's fingerprint is computed before pricing, from what the client
//   sent: a replay after a price change is the same event (duplicate), never
//   a conflict, and stored prices never leak into the idempotency check.
// - `missing` (the default) prices only events that carry no cost: the
//   gateway's reported cost wins. `always` prices every event its table
//   covers and keeps the reported figure in reported_cost. `off` prices none.
// - A priced cost is in the entry's currency; an event whose reported cost is
//   in another currency is never re-priced across currencies.

import { COST_SCALE, MAX_COST_INTEGER_DIGITS } from '../money.js'
import type { UsageEvent } from '../ingest/event.js'
import type { PerToken, PriceEntry, PriceTable } from './table.js'

export type PricingMode = 'off' | 'missing' | 'always'
export const PRICING_MODES: readonly PricingMode[] = ['off', 'missing', 'always']

const MILLION = 1_000_000n
const HALF_MILLION = 500_000n
const MAX_COST_SCALED = 10n ** BigInt(MAX_COST_INTEGER_DIGITS + COST_SCALE)

type Tokens = Pick<UsageEvent, 'input_tokens' | 'cache_read_tokens' | 'cache_write_tokens' | 'output_tokens' | 'reasoning_tokens' | 'status_code'>

/** The cost of `e`'s tokens under `entry`, scaled by 10^12 (half-even), or null when it is not below 10^15. */
export function costOf(e: Tokens, entry: PriceEntry): bigint | null {
  const fast = entry.perToken === null ? null : costAsNumber(e, entry.perToken)
  return fast === null ? costAsBigint(e, entry) : BigInt(fast)
}

/**
 * The rule of costOf in Number arithmetic, exact or null (then costAsBigint
 * answers). Every term is a product of two non-negative safe integers and
 * every sum is of non-negative terms, so each intermediate is at most its
 * final sum: when the sums are safe integers (checked), every step was exact
 * (doubles hold every integer up to 2^53, and rounding is monotonic, so an
 * exact sum past it never reads as one below). The cost bound (10^15, so
 * 10^27 scaled) is far above 2^53: a safe result is always below it.
 */
export function costAsNumber(e: Tokens, p: PerToken): number | null {
  const uncached = e.input_tokens - e.cache_read_tokens - e.cache_write_tokens
  const plain = e.output_tokens - e.reasoning_tokens
  if (uncached < 0 || plain < 0 || e.cache_read_tokens < 0 || e.cache_write_tokens < 0 || e.reasoning_tokens < 0) return null
  const w = p.whole
  const r = p.rest
  const whole = uncached * w[0] + e.cache_read_tokens * w[1] + e.cache_write_tokens * w[2] + plain * w[3] + e.reasoning_tokens * w[4]
  const rest = uncached * r[0] + e.cache_read_tokens * r[1] + e.cache_write_tokens * r[2] + plain * r[3] + e.reasoning_tokens * r[4]
  if (whole > Number.MAX_SAFE_INTEGER || rest > Number.MAX_SAFE_INTEGER) return null
  // % of safe integers is exact, and so is dividing an exact multiple of 10^6 by it.
  const remainder = rest % 1_000_000
  let q = whole + (rest - remainder) / 1_000_000
  if (remainder > 500_000 || (remainder === 500_000 && q % 2 === 1)) q += 1
  if (e.status_code < 400) q += p.perRequest
  return q <= Number.MAX_SAFE_INTEGER ? q : null
}

/** The rule of costOf in bigint arithmetic: any size. */
export function costAsBigint(e: Tokens, entry: PriceEntry): bigint | null {
  const [pIn, pRead, pWrite, pOut, pReason] = entry.perMillion
  let sum = 0n
  const uncached = e.input_tokens - e.cache_read_tokens - e.cache_write_tokens
  if (uncached !== 0) sum += BigInt(uncached) * pIn
  if (e.cache_read_tokens !== 0) sum += BigInt(e.cache_read_tokens) * pRead
  if (e.cache_write_tokens !== 0) sum += BigInt(e.cache_write_tokens) * pWrite
  const plain = e.output_tokens - e.reasoning_tokens
  if (plain !== 0) sum += BigInt(plain) * pOut
  if (e.reasoning_tokens !== 0) sum += BigInt(e.reasoning_tokens) * pReason
  let q = sum / MILLION
  const r = sum - q * MILLION
  if (r > HALF_MILLION || (r === HALF_MILLION && (q & 1n) === 1n)) q += 1n
  if (e.status_code < 400) q += entry.perRequest
  return q < MAX_COST_SCALED ? q : null
}

/** What pricing reads of an event and sets on it. */
export type Priceable = Pick<
  UsageEvent,
  'provider' | 'model' | 'ts_us' | 'status_code' | 'input_tokens' | 'output_tokens' | 'cache_read_tokens' | 'cache_write_tokens' | 'reasoning_tokens' | 'currency' | 'cost' | 'reported_cost' | 'cost_origin' | 'price_ref'
>

/** What pricing did to one event. */
export type PriceResult = 'priced' | 'kept' | 'unpriced' | 'too_large'

/**
 * Prices `e` in place under `mode`: sets cost, cost_origin and price_ref when
 * the table prices it (currency too, for an event that carried no cost).
 * 'too_large': the priced cost is not below 10^15, the event is left as it was.
 */
export function applyPrice(e: Priceable, table: PriceTable | null, mode: PricingMode): PriceResult {
  if (table === null || mode === 'off') return e.cost === null ? 'unpriced' : 'kept'
  if (e.reported_cost !== null && mode === 'missing') return 'kept'
  const entry = table.lookup(e.provider, e.model, e.ts_us)
  if (entry === null) return e.reported_cost === null ? 'unpriced' : 'kept'
  if (e.reported_cost !== null && entry.currency !== e.currency) return 'kept'
  const cost = costOf(e, entry)
  if (cost === null) return 'too_large'
  e.cost = cost
  e.currency = entry.currency
  e.cost_origin = 'priced'
  // The version alone (16 characters): the entry follows from it by the lookup rule. The
  // entry's name in every row measured +3 µs an event of DuckDB append (bench/pricing.ts).
  e.price_ref = table.version
  return 'priced'
}
