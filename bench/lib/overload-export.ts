// The check at the end of bench/overload.ts: stream GET /v1/export?format=ndjson over a
// window holding every event of the run and count each exported id by phase and event
// number (without parsing a line unless its id holds an escape), so the bench can say
// which acknowledged events are missing and which are stored twice.
import http from 'node:http'
import { createInterface } from 'node:readline'
import { ByteArray, clip, samplesMax } from './overload-common.js'

const exportTimeoutMs = 900_000

export interface ExportCheck {
  status: number
  lines: number
  ms: number
  bytes: number
  /** Ids not from this run's prefixes (a fresh data dir: must be 0). */
  foreign: number
  foreignSamples: string[]
  unparseable: number
  /** Exported ids (any prefix) that appear more than once, and the surplus copies. */
  duplicatedIds: number
  duplicateSamples: string[]
  /** Per phase: how many times each event number was exported. */
  seenCapacity: ByteArray
  seenOverload: ByteArray
  error: string | undefined
  /** Ms since the request when each further exportProgressLines lines had arrived. */
  progressMs: number[]
}

export const exportProgressLines = 100_000

const ID_HEAD = '{"event_id":"'

/** Streams GET /v1/export?format=ndjson and counts every id by phase and event number. */
export async function exportIds(base: URL, token: string, fromMs: number, toMs: number, capacityPrefix: string, overloadPrefix: string): Promise<ExportCheck> {
  const check: ExportCheck = {
    status: 0,
    lines: 0,
    ms: 0,
    bytes: 0,
    foreign: 0,
    foreignSamples: [],
    unparseable: 0,
    duplicatedIds: 0,
    duplicateSamples: [],
    seenCapacity: new ByteArray(),
    seenOverload: new ByteArray(),
    error: undefined,
    progressMs: [],
  }
  const foreignSeen = new Map<string, number>()
  const t0 = performance.now()
  const agent = new http.Agent({ keepAlive: false })
  try {
    await new Promise<void>((resolve, reject) => {
      const req = http.request({
        host: base.hostname,
        port: base.port,
        method: 'GET',
        path: `/v1/export?format=ndjson&from=${fromMs}&to=${toMs}`,
        headers: { authorization: `Bearer ${token}` },
        agent,
      })
      const timer = setTimeout(() => req.destroy(new Error(`export not finished within ${exportTimeoutMs} ms`)), exportTimeoutMs)
      req.on('error', (err) => {
        clearTimeout(timer)
        reject(err)
      })
      req.on('response', (res) => {
        check.status = res.statusCode ?? 0
        if (check.status !== 200) {
          let text = ''
          res.setEncoding('utf8')
          res.on('data', (c: string) => (text += c))
          res.on('end', () => {
            clearTimeout(timer)
            reject(new Error(`export answered ${check.status}: ${clip(text)}`))
          })
          return
        }
        res.on('data', (c: Buffer) => (check.bytes += c.length))
        const lines = createInterface({ input: res, crlfDelay: Infinity })
        lines.on('line', (line) => {
          if (line === '') return
          check.lines++
          if (check.lines % exportProgressLines === 0) check.progressMs.push(performance.now() - t0)
          // Every line starts with event_id (EXPORT_COLUMNS' first): read it without parsing
          // the whole line unless it holds an escape; anything else goes through JSON.parse.
          let id: unknown
          const end = line.startsWith(ID_HEAD) ? line.indexOf('"', ID_HEAD.length) : -1
          const fast = end > 0 ? line.slice(ID_HEAD.length, end) : undefined
          if (fast !== undefined && !fast.includes('\\')) id = fast
          else {
            try {
              id = (JSON.parse(line) as { event_id?: unknown }).event_id
            } catch {
              id = undefined
            }
          }
          if (typeof id !== 'string') {
            check.unparseable++
            return
          }
          const count = (seen: ByteArray, prefix: string): boolean => {
            if (!id.startsWith(prefix)) return false
            const n = Number(id.slice(prefix.length))
            if (!Number.isSafeInteger(n) || n < 0) return false
            seen.increment(n)
            if (seen.get(n) === 2) {
              check.duplicatedIds++
              if (check.duplicateSamples.length < samplesMax) check.duplicateSamples.push(id)
            }
            return true
          }
          if (count(check.seenOverload, overloadPrefix) || count(check.seenCapacity, capacityPrefix)) return
          check.foreign++
          if (check.foreignSamples.length < samplesMax) check.foreignSamples.push(id)
          const k = (foreignSeen.get(id) ?? 0) + 1
          foreignSeen.set(id, k)
          if (k === 2) check.duplicatedIds++
        })
        res.on('error', (err) => {
          clearTimeout(timer)
          reject(err)
        })
        res.on('close', () => {
          if (!res.complete) {
            clearTimeout(timer)
            reject(new Error('export broken off mid-stream'))
          }
        })
        lines.on('close', () => {
          clearTimeout(timer)
          resolve()
        })
      })
      req.end()
    })
  } catch (err) {
    check.error = err instanceof Error ? err.message : String(err)
  } finally {
    agent.destroy()
  }
  check.ms = performance.now() - t0
  return check
}
