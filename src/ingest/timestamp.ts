// Timestamps: RFC 3339 with an explicit offset, or integer epoch milliseconds.
// Stored as microseconds since the epoch (UTC); digits past the microsecond
// (RFC3339Nano from Go gateways) are truncated, never rounded up.

const RFC3339_RE = /^(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?(?:([Zz])|([+-])(\d{2}):(\d{2}))$/
/** 0001-01-01 .. 9999-12-31, in ms: anything outside is not a real event time. */
const MIN_MS = -62_135_596_800_000
const MAX_MS = 253_402_300_799_999

export type ParsedTimestamp = { ok: true; us: number } | { ok: false; message: string }

/**
 * A time another door has already read exactly (an OTLP span's end, to the
 * microsecond), handed to the validator as it is rather than as text to parse
 * again. No JSON body can hold one: the native contract is unchanged.
 */
export class EpochMicros {
  constructor(
    /** Milliseconds since the epoch, within MIN_MS..MAX_MS. */
    readonly ms: number,
    /** Microseconds within that millisecond, 0-999. */
    readonly subMs: number,
  ) {}
}

export function parseTimestamp(value: unknown): ParsedTimestamp {
  if (value instanceof EpochMicros) {
    if (!(value.ms >= MIN_MS && value.ms <= MAX_MS)) return { ok: false, message: 'out of range' }
    return { ok: true, us: value.ms * 1000 + value.subMs }
  }
  if (typeof value === 'number') {
    if (!Number.isSafeInteger(value)) return { ok: false, message: 'must be an RFC 3339 string or integer epoch milliseconds' }
    if (value < MIN_MS || value > MAX_MS) return { ok: false, message: 'epoch milliseconds out of range' }
    return { ok: true, us: value * 1000 }
  }
  if (typeof value !== 'string') return { ok: false, message: 'must be an RFC 3339 string or integer epoch milliseconds' }
  const m = value.length <= 40 ? RFC3339_RE.exec(value) : null
  if (!m) return { ok: false, message: 'must be RFC 3339 with an offset, e.g. 2026-11-24T13:05:00.123Z' }
  const [year, month, day, hour, minute, second] = [m[1], m[2], m[3], m[4], m[5], m[6]].map(Number) as [number, number, number, number, number, number]
  if (month < 1 || month > 12) return { ok: false, message: 'month must be 01-12' }
  const daysInMonth = new Date(Date.UTC(year, month, 0)).getUTCDate()
  if (day < 1 || day > daysInMonth) return { ok: false, message: `day must be 01-${daysInMonth} for that month` }
  if (hour > 23 || minute > 59 || second > 59) return { ok: false, message: 'time must be 00:00:00-23:59:59 (leap seconds are not accepted)' }
  let offsetMin = 0
  if (!m[8]) {
    const oh = Number(m[10])
    const om = Number(m[11])
    if (oh > 23 || om > 59) return { ok: false, message: 'offset must be between -23:59 and +23:59' }
    offsetMin = (m[9] === '-' ? -1 : 1) * (oh * 60 + om)
  }
  const utc = new Date(0)
  utc.setUTCFullYear(year, month - 1, day) // Date.UTC maps years 0-99 to 1900s
  utc.setUTCHours(hour, minute, second, 0)
  const ms = utc.getTime() - offsetMin * 60_000
  if (ms < MIN_MS || ms > MAX_MS) return { ok: false, message: 'out of range' }
  const fracUs = m[7] ? Number(m[7].padEnd(9, '0').slice(0, 6)) : 0
  return { ok: true, us: ms * 1000 + fracUs }
}

/** Formats microseconds as RFC 3339 UTC: milliseconds always, microseconds when present. */
export function formatTimestampUs(us: number): string {
  const ms = Math.floor(us / 1000)
  const subMs = us - ms * 1000
  const iso = new Date(ms).toISOString()
  return subMs === 0 ? iso : `${iso.slice(0, -1)}${String(subMs).padStart(3, '0')}Z`
}
