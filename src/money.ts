// Exact money. Costs travel as decimal strings and live as scaled integers
// (bigint, 12 fractional digits), stored in DuckDB as DECIMAL(38,12), which is
// itself a 128-bit scaled integer. No floating point touches a cost.
//
// A cost sent as a JSON number is taken from the text of that number: the
// ingest JSON reader (src/ingest/json.ts) keeps a number of more than 15
// significant digits as its text (parseCostNumberText); one of 15 or fewer is
// exactly its shortest round-trip decimal form (what String(n) prints), so
// 0.1 means 0.1, never 0.1000000000000000055511151231257827.

export const COST_SCALE = 12
export const COST_WIDTH = 38
const SCALE_FACTOR = 10n ** BigInt(COST_SCALE)
/** Largest whole part a single event's cost may have (exclusive): 10^15. */
export const MAX_COST_INTEGER_DIGITS = 15

const DECIMAL_RE = /^(\d+)(?:\.(\d+))?$/

export type ParsedCost = { ok: true; scaled: bigint } | { ok: false; message: string }

/**
 * A cost sent as a JSON number, from the text of that number (never through a
 * double): 123456789012.123456 is exactly that. Exponents are shifted, not
 * computed: 1.5e-7 is 0.00000015.
 */
export function parseCostNumberText(text: string): ParsedCost {
  if (text.startsWith('-')) return { ok: false, message: 'must be >= 0' }
  return parseCostText(plainDecimal(text))
}

/** Parses a cost given as a decimal string or a JSON number into a scaled integer. */
export function parseCost(value: unknown): ParsedCost {
  let text: string
  if (typeof value === 'number') {
    if (!Number.isFinite(value)) return { ok: false, message: 'must be a finite number' }
    if (value < 0) return { ok: false, message: 'must be >= 0' }
    text = numberToPlainDecimal(value)
  } else if (typeof value === 'string') {
    if (value.length > 64) return { ok: false, message: 'must be a decimal string of at most 64 characters' }
    if (value.startsWith('-')) return { ok: false, message: 'must be >= 0' }
    text = value
  } else {
    return { ok: false, message: 'must be a decimal string or a number' }
  }
  return parseCostText(text)
}

function parseCostText(text: string): ParsedCost {
  const m = DECIMAL_RE.exec(text)
  if (!m) return { ok: false, message: 'must be a plain decimal like "0.0012" (digits, an optional point and fraction; no sign, exponent or spaces)' }
  const whole = m[1]!.replace(/^0+(?=\d)/, '')
  const frac = m[2] ?? ''
  if (frac.length > COST_SCALE) return { ok: false, message: `must have at most ${COST_SCALE} fractional digits` }
  if (whole.length > MAX_COST_INTEGER_DIGITS) return { ok: false, message: `must be below 10^${MAX_COST_INTEGER_DIGITS}` }
  return { ok: true, scaled: BigInt(whole) * SCALE_FACTOR + BigInt(frac.padEnd(COST_SCALE, '0') || '0') }
}

/** The scaled integer of a decimal text formatCost (or DuckDB's DECIMAL) wrote, sign included; no bounds (sums may pass a single cost's). */
export function scaledDecimal(text: string): bigint {
  const neg = text.startsWith('-')
  const [int, frac = ''] = (neg ? text.slice(1) : text).split('.')
  const v = BigInt(int!) * SCALE_FACTOR + BigInt((frac + '0'.repeat(COST_SCALE)).slice(0, COST_SCALE))
  return neg ? -v : v
}

/** Formats a scaled integer as the shortest exact decimal string: "0.3", "12", "0". */
export function formatCost(scaled: bigint): string {
  const fixed = formatCostFixed(scaled)
  const point = fixed.length - COST_SCALE - 1
  const frac = fixed.slice(point + 1).replace(/0+$/, '')
  return frac ? `${fixed.slice(0, point)}.${frac}` : fixed.slice(0, point)
}

/** Formats a scaled integer with all COST_SCALE fractional digits ("0.300000000000"), by string slicing alone (the ingest write path). */
export function formatCostFixed(scaled: bigint): string {
  const negative = scaled < 0n
  const digits = (negative ? -scaled : scaled).toString().padStart(COST_SCALE + 1, '0')
  return `${negative ? '-' : ''}${digits.slice(0, -COST_SCALE)}.${digits.slice(-COST_SCALE)}`
}

/**
 * A cost that arrives as a binary float computed by the sender (LiteLLM's
 * response_cost: 3e-06 * 41 is 0.00012299999999999998 there), as a decimal
 * string: its shortest round-trip digits (exactly what the sender's JSON
 * said), rounded half-to-even to COST_SCALE fractional digits. Digit
 * arithmetic only; null for a negative or non-finite number.
 */
export function floatCostText(n: number): string | null {
  if (!Number.isFinite(n) || n < 0) return null
  const text = numberToPlainDecimal(n)
  const point = text.indexOf('.')
  if (point === -1 || text.length - point - 1 <= COST_SCALE) return text
  const kept = BigInt(text.slice(0, point) + text.slice(point + 1, point + 1 + COST_SCALE))
  const rest = text.slice(point + 1 + COST_SCALE)
  const up = rest[0]! > '5' || (rest[0] === '5' && (/[1-9]/.test(rest.slice(1)) || kept % 2n === 1n))
  return formatCost(kept + (up ? 1n : 0n))
}

/** Writes a finite non-negative number without an exponent, using its shortest round-trip digits. */
export function numberToPlainDecimal(n: number): string {
  const s = String(n === 0 ? 0 : n) // -0 prints as "0"
  const m = /^(\d)(?:\.(\d+))?e([+-]\d+)$/.exec(s)
  if (!m) return s
  const digits = m[1]! + (m[2] ?? '')
  const exp = Number(m[3])
  if (exp < 0) return `0.${'0'.repeat(-exp - 1)}${digits}`
  return digits.padEnd(exp + 1, '0')
}

/**
 * The plain decimal (no exponent) a JSON number's text means, exactly:
 * "1.5e3" is "1500", "12e-2" is "0.12". Digit shifting only; a text that is
 * not a JSON number, or an exponent past 1000, is returned as it is.
 */
export function plainDecimal(text: string): string {
  const m = /^(-?)(\d+)(?:\.(\d+))?(?:[eE]([+-]?\d+))?$/.exec(text)
  if (!m) return text
  const [, sign, whole, frac = '', exp] = m
  if (exp === undefined) return text
  const shift = Number(exp)
  if (!Number.isSafeInteger(shift) || Math.abs(shift) > 1000) return text
  let all = whole! + frac
  let point = whole!.length + shift
  if (point <= 0) {
    all = '0'.repeat(1 - point) + all
    point = 1
  } else if (point > all.length) all = all.padEnd(point, '0')
  const intPart = all.slice(0, point).replace(/^0+(?=\d)/, '')
  const fracPart = all.slice(point)
  return `${sign}${intPart}${fracPart ? `.${fracPart}` : ''}`
}
