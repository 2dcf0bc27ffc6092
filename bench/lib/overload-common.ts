// Small pieces bench/overload.ts and its modules (overload-*.ts, healthz.ts) share: an
// epoch clock comparable across worker threads, number and sample formats, per-key
// counts, a growing byte array indexed by event number, and the run's bearer tokens.
import { percentile } from './report.js'

/** Most samples of one kind a report quotes. */
export const samplesMax = 5
const sampleCharsMax = 300

/** Epoch ms with sub-ms resolution, comparable across worker threads. */
export const nowAbsMs = (): number => performance.timeOrigin + performance.now()
export const pct = (part: number, whole: number): string => (whole === 0 ? 'n/a' : `${((100 * part) / whole).toFixed(1)}%`)
export const ms1 = (n: number): string => (Number.isFinite(n) ? n.toFixed(1) : 'n/a')
export const clip = (text: string): string => (text.length > sampleCharsMax ? `${text.slice(0, sampleCharsMax)}…` : text)
export const median = (xs: number[]): number => percentile(xs, 50)
export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms))

export function addCount(rec: Record<string, number>, key: string, n = 1): void {
  rec[key] = (rec[key] ?? 0) + n
}

export const countsText = (rec: Record<string, number>): string =>
  Object.keys(rec).length === 0
    ? 'none'
    : Object.entries(rec)
        .sort((a, b) => b[1] - a[1])
        .map(([k, n]) => `${k}×${n}`)
        .join(', ')

/** A Uint8Array indexed by event number that grows as needed. */
export class ByteArray {
  private a = new Uint8Array(1 << 16)
  length = 0
  get(n: number): number {
    return n < this.a.length ? this.a[n]! : 0
  }
  set(n: number, v: number): void {
    if (n >= this.a.length) {
      let size = this.a.length
      while (size <= n) size *= 2
      const b = new Uint8Array(size)
      b.set(this.a)
      this.a = b
    }
    this.a[n] = v
    if (n >= this.length) this.length = n + 1
  }
  /** Saturates at 255. */
  increment(n: number): void {
    this.set(n, Math.min(255, this.get(n) + 1))
  }
}

export interface Tokens {
  ingest: string
  query: string
  admin: string
}

export const bearer = (token: string): Record<string, string> => ({ authorization: `Bearer ${token}` })
