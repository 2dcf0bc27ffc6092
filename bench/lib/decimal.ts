// Exact decimal money for the benches: the server's cost strings as integers
// scaled by 10^12 (its DECIMAL(38,12)), so sums can be compared exactly.

/** A non-negative decimal (string or number) as an integer scaled by 10^12, or undefined when it is not one. */
export function toScaled12(v: unknown): bigint | undefined {
  const text = typeof v === 'number' ? String(v) : v
  if (typeof text !== 'string') return undefined
  const m = /^(\d+)(?:\.(\d{1,12}))?$/.exec(text)
  if (m === null || m[1] === undefined) return undefined
  return BigInt(m[1]) * 10n ** 12n + BigInt((m[2] ?? '').padEnd(12, '0'))
}

export function scaled12ToString(v: bigint): string {
  const frac = (v % 10n ** 12n).toString().padStart(12, '0').replace(/0+$/, '')
  return `${v / 10n ** 12n}${frac === '' ? '' : `.${frac}`}`
}
