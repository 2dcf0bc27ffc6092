// @ts-check
// Exact arithmetic on the API's decimal cost strings ("0.000342", at most 12
// fractional digits, never negative as sent): values are BigInts scaled by
// 10^12, so "other = total − top N" is exact. Nothing here goes through a
// floating-point number, except toNumber(), which only sizes the chart's bars.

const SCALE_DIGITS = 12
const SCALE = 10n ** BigInt(SCALE_DIGITS)
const DECIMAL = /^(-?)(\d+)(?:\.(\d{1,12}))?$/

/**
 * "1.25" → 1250000000000n. Throws on anything that is not a plain decimal of at most 12 fractional digits.
 * @param {string} text
 * @returns {bigint}
 */
export function parseDecimal(text) {
  const m = DECIMAL.exec(text)
  if (!m) throw new Error(`not an exact decimal: ${JSON.stringify(text).slice(0, 40)}`)
  const scaled = BigInt(m[2] ?? '0') * SCALE + BigInt((m[3] ?? '').padEnd(SCALE_DIGITS, '0'))
  return m[1] === '-' ? -scaled : scaled
}

/**
 * 1250000000000n → "1.25": the shortest exact decimal, as the API writes its own.
 * @param {bigint} scaled
 * @returns {string}
 */
export function formatDecimal(scaled) {
  const sign = scaled < 0n ? '-' : ''
  const abs = scaled < 0n ? -scaled : scaled
  const whole = abs / SCALE
  const frac = (abs % SCALE).toString().padStart(SCALE_DIGITS, '0').replace(/0+$/, '')
  return `${sign}${whole}${frac ? `.${frac}` : ''}`
}

/**
 * A scaled value as a Number of whole units: for the chart's geometry only, never shown as money.
 * @param {bigint} scaled
 * @returns {number}
 */
export function toNumber(scaled) {
  return Number(scaled) / Number(SCALE)
}
