// A large store for the tiers bench, written straight into segment files with DuckDB SQL
// (20 million events through HTTP would take longer than the whole bench may).
//
// Every row is a pure function of its global number n (DuckDB's hash() of n, which is
// deterministic), so the bench can later compute any stored row again, in memory, and
// send it over HTTP: the server must then answer `duplicate`. The fingerprint column is
// computed in SQL exactly as src/ingest/event.ts computes it; `checkFingerprints` runs
// the server's own validator over a few rows and fails loudly if the two ever drift.
//
// The files follow SEGMENT_DDL / EVENT_COLUMNS (src/store/schema.ts) and are written to
// pending/: at start-up the store attaches them, records them in the catalog, indexes
// their ids and seals them in the background, as it would segments left by a crash.
// Segment k holds rows [k·R, (k+1)·R) and a time slice of the whole span, in arrival
// order with a little jitter (so sealing really sorts).
import { DuckDBInstance, listValue, type DuckDBConnection } from '@duckdb/node-api'
import { mkdir, stat } from 'node:fs/promises'
import { EVENT_COLUMNS, SCHEMA_VERSION, SEGMENT_DDL } from '../../src/store/schema.js'
import { segmentPath, tierDir } from '../../src/store/layout.js'
import { validateEvent } from '../../src/ingest/event.js'

/** Most rows computed in memory in one call (replay sets). */
const rowsPerComputeMax = 1_000_000
/** Rows checked against the server's validator. */
const fingerprintChecks = 200
/** Rows whose number is a multiple of this carry the exact fingerprint (see rowsSql). */
export const EXACT_FINGERPRINT_STRIDE = 16

export interface BigStoreSpec {
  /** Total events across all segments. */
  events: number
  segments: number
  /** Distinguishes the ids of one run from another's. */
  seed: string
  /** The stored rows' timestamps span [startMs, endMs). */
  startMs: number
  endMs: number
  /** DuckDB threads used to write. */
  threads: number
}

export interface GeneratedSegment {
  id: number
  rows: number
  bytes: number
}

/** One generated event, ready to be sent as JSON (nulls are left out). */
export type EventJson = Record<string, string | number | boolean>

const PROVIDERS = ['openai', 'openai', 'anthropic', 'anthropic', 'google']
const MODELS = ['gpt-4o-mini', 'o4-mini', 'claude-sonnet-4', 'claude-haiku-3.5', 'gemini-2.5-flash']
const IN_MICROS_PER_TOKEN = [0.15, 1.1, 3, 0.8, 0.3]
const OUT_MICROS_PER_TOKEN = [0.6, 4.4, 15, 4, 2.5]
const REASONS = [false, true, true, false, true]

const sqlList = (items: readonly (string | number | boolean)[]): string =>
  `[${items.map((v) => (typeof v === 'string' ? `'${v}'` : String(v))).join(', ')}]`

const rowsPerSegment = (spec: BigStoreSpec): number => Math.ceil(spec.events / spec.segments)

/**
 * The rows numbered by `source` (a relation with a BIGINT column n), every EVENT_COLUMN
 * plus ts_ms and cost_micros (for JSON). Built step by step so later columns can use
 * earlier ones; nothing here depends on which segment a row lands in.
 */
function rowsSql(spec: BigStoreSpec, source: string): string {
  if (!/^[A-Za-z0-9_-]{1,40}$/.test(spec.seed)) throw new RangeError(`bad seed: ${spec.seed}`)
  const spanMs = spec.endMs - spec.startMs
  const msPerEvent = spanMs / spec.events
  // Arrival order with up to 5 s of jitter, kept inside the span.
  const jitterMs = Math.min(5_000, Math.floor(spanMs / 10))
  const b64url = (x: string, fn = 'sha256'): string => `substr(replace(replace(to_base64(unhex(${fn}(${x}))), '+', '-'), '/', '_'), 1, 22)`
  const nul = 'chr(30)'
  const orNul = (x: string): string => `coalesce((${x})::VARCHAR, ${nul})`
  const columns: Record<string, string> = {
    event_id: 'event_id',
    ts: 'make_timestamp(ts_ms * 1000)',
    key_id: 'key_id',
    provider: 'provider',
    model: 'model',
    status_code: 'status_code',
    input_tokens: 'input_tokens',
    output_tokens: 'output_tokens',
    cache_read_tokens: 'cache_read_tokens',
    cache_write_tokens: 'cache_write_tokens',
    reasoning_tokens: 'reasoning_tokens',
    // DECIMAL(18,0) × DECIMAL(7,6) is exact: cost_micros / 10^6 with no float in between.
    cost: `(cost_micros::DECIMAL(18,0) * 0.000001::DECIMAL(7,6))::DECIMAL(38,12)`,
    currency: 'currency',
    team_id: 'team_id',
    user_id: 'user_id',
    customer_id: 'customer_id',
    endpoint: 'endpoint',
    latency_ms: 'latency_ms',
    ttft_ms: 'ttft_ms',
    stream: 'stream',
    tags: 'NULL::VARCHAR',
    has_detail: 'false',
    // Reported costs, nothing priced (schema.ts: both follow from price_ref).
    reported_cost: 'NULL::DECIMAL(38,12)',
    price_ref: 'NULL::VARCHAR',
    // Exact only on every EXACT_FINGERPRINT_STRIDE-th row (the rows replays are drawn
    // from): the text src/ingest/event.ts hashes, fields joined by U+001F, null as
    // U+001E, the cost as its 10^-12-scaled integer. Building that text costs ~4 µs a row,
    // most of the generation time; the other rows get 22 base64url characters of an MD5,
    // the same length and entropy, so the files compress as real ones would.
    fingerprint: `CASE WHEN n % ${EXACT_FINGERPRINT_STRIDE} = 0 THEN ${b64url(
      [
        'event_id',
        '(ts_ms * 1000)::VARCHAR',
        'key_id',
        'provider',
        'model',
        'status_code::VARCHAR',
        'input_tokens::VARCHAR',
        'output_tokens::VARCHAR',
        'cache_read_tokens::VARCHAR',
        'cache_write_tokens::VARCHAR',
        'reasoning_tokens::VARCHAR',
        orNul('cost_micros * 1000000'),
        'currency',
        orNul('team_id'),
        orNul('user_id'),
        orNul('customer_id'),
        orNul('endpoint'),
        orNul('latency_ms'),
        orNul('ttft_ms'),
        orNul('stream'),
        nul,
        nul,
      ].join(' || chr(31) || '),
    )} ELSE ${b64url(`'${spec.seed}:fp:' || n::VARCHAR`, 'md5')} END`,
  }
  const missing = EVENT_COLUMNS.filter((c) => columns[c.name] === undefined).map((c) => c.name)
  const extra = Object.keys(columns).filter((name) => !EVENT_COLUMNS.some((c) => c.name === name))
  if (missing.length > 0 || extra.length > 0) {
    throw new Error(`bigstore.ts is out of date with EVENT_COLUMNS: missing ${missing.join(', ') || '-'}; unknown ${extra.join(', ') || '-'}`)
  }
  return `
    WITH h AS (
      SELECT n, hash(n) AS h1, hash(n + 1000000000000) AS h2 FROM ${source}
    ), a AS (
      SELECT n, h1, h2,
             (h1 % 50)::INTEGER AS k,
             ((h1 >> 6) % 5)::INTEGER + 1 AS m,
             ((h1 >> 9) % 100)::INTEGER AS sroll,
             20 + ((h1 >> 16) % 7981)::BIGINT AS input_tokens,
             ((h2 >> 45) % 2) = 1 AS stream,
             80 + ((h2 >> 24) % 19921)::INTEGER AS latency_ms
        FROM h
    ), b AS (
      SELECT *,
             CASE WHEN sroll < 95 THEN 200 WHEN sroll < 98 THEN 429 ELSE 500 END::SMALLINT AS status_code,
             ${sqlList(PROVIDERS)}[m] AS provider,
             ${sqlList(MODELS)}[m] AS model,
             CASE WHEN (h2 >> 40) % 10 < 4 THEN ((h2 >> 12) % (input_tokens // 2 + 1))::BIGINT ELSE 0::BIGINT END AS cache_read_tokens
        FROM a
    ), c AS (
      SELECT *,
             CASE WHEN status_code = 200 THEN 1 + ((h1 >> 29) % 2000)::BIGINT ELSE 0::BIGINT END AS output_tokens,
             CASE WHEN provider = 'anthropic' AND (h2 >> 50) % 10 = 0 THEN ((h2 >> 14) % (input_tokens - cache_read_tokens + 1))::BIGINT ELSE 0::BIGINT END AS cache_write_tokens
        FROM b
    ), d AS (
      SELECT *,
             CASE WHEN ${sqlList(REASONS)}[m] THEN ((h1 >> 41) % (output_tokens // 3 + 1))::BIGINT ELSE 0::BIGINT END AS reasoning_tokens,
             CASE WHEN h2 % 100 = 0 THEN NULL
                  ELSE greatest(1, round(input_tokens * ${sqlList(IN_MICROS_PER_TOKEN)}[m] + output_tokens * ${sqlList(OUT_MICROS_PER_TOKEN)}[m]))::BIGINT END AS cost_micros,
             'evt_' || substr(md5('${spec.seed}:' || n::VARCHAR), 1, 28) AS event_id,
             ${spec.startMs} + floor((n % ${spec.events}) * ${msPerEvent})::BIGINT
               + least(((h2 >> 30) % ${jitterMs + 1})::BIGINT, ${spec.endMs - 1} - (${spec.startMs} + floor((n % ${spec.events}) * ${msPerEvent})::BIGINT)) AS ts_ms,
             'key_' || k AS key_id,
             'USD' AS currency,
             'team_' || (k % 10) AS team_id,
             CASE WHEN (h2 >> 8) % 4 = 0 THEN NULL ELSE 'user_' || ((h2 >> 10) % 5000) END AS user_id,
             CASE WHEN k % 3 = 0 THEN NULL ELSE 'cust_' || (k % 20) END AS customer_id,
             CASE WHEN provider = 'anthropic' THEN '/v1/messages' ELSE '/v1/chat/completions' END AS endpoint,
             CASE WHEN stream THEN latency_ms // 4 ELSE NULL END AS ttft_ms
        FROM c
    )
    SELECT ${EVENT_COLUMNS.map((c) => `${columns[c.name]} AS ${c.name}`).join(', ')}, ts_ms, cost_micros
      FROM d`
}

function ident(name: string): string {
  return `"${name.replaceAll('"', '""')}"`
}

function sqlString(text: string): string {
  return `'${text.replaceAll("'", "''")}'`
}

/**
 * Writes pending/seg-<id>.duckdb for ids 1..segments, `spec.threads` segments at a time
 * (one connection each: a range() scan is single-threaded, so one INSERT would use one
 * core). The data dir must be new.
 */
export async function writePendingSegments(dataDir: string, spec: BigStoreSpec, onSegment?: (s: GeneratedSegment, ms: number) => void): Promise<GeneratedSegment[]> {
  await mkdir(tierDir(dataDir, 'pending'), { recursive: true })
  const db = await DuckDBInstance.create(':memory:', { threads: String(spec.threads), autoinstall_known_extensions: 'false', autoload_known_extensions: 'false' })
  const out: GeneratedSegment[] = []
  const columnList = EVENT_COLUMNS.map((c) => c.name).join(', ')
  let next = 1
  const writer = async (): Promise<void> => {
    const conn = await db.connect()
    try {
      while (next <= spec.segments) {
        const id = next++
        const t0 = performance.now()
        const [lo, hi] = rowsOfSegment(spec, id)
        const path = segmentPath(dataDir, 'pending', id)
        const alias = `gen_${id}`
        await conn.run(`ATTACH ${sqlString(path)} AS ${ident(alias)}`)
        try {
          for (const ddl of SEGMENT_DDL) await conn.run(ddl.replace('CREATE TABLE IF NOT EXISTS ', `CREATE TABLE IF NOT EXISTS ${ident(alias)}.`))
          await conn.run(`INSERT INTO ${ident(alias)}.segment_meta VALUES ('schema_version', '${SCHEMA_VERSION}'), ('created_ms', '${Date.now()}')`)
          await conn.run(`INSERT INTO ${ident(alias)}.events SELECT ${columnList} FROM (${rowsSql(spec, `(SELECT range AS n FROM range(${lo}, ${hi}))`)})`)
          await conn.run(`CHECKPOINT ${ident(alias)}`)
        } finally {
          await conn.run(`DETACH DATABASE IF EXISTS ${ident(alias)}`)
        }
        const s: GeneratedSegment = { id, rows: hi - lo, bytes: (await stat(path)).size }
        out.push(s)
        onSegment?.(s, performance.now() - t0)
      }
    } finally {
      conn.closeSync()
    }
  }
  try {
    await Promise.all(Array.from({ length: Math.max(1, Math.min(spec.threads, spec.segments)) }, writer))
  } finally {
    db.closeSync()
  }
  return out.sort((a, b) => a.id - b.id)
}

/**
 * Computes rows by number, in memory (nothing is written): stored ones (n < events) to
 * replay, or fresh ones (n ≥ events) that no file holds. Returns the JSON events and the
 * fingerprints SQL gave them.
 */
export async function computeRows(spec: BigStoreSpec, ns: readonly number[]): Promise<{ events: EventJson[]; fingerprints: string[] }> {
  const db = await DuckDBInstance.create(':memory:', { threads: String(spec.threads), autoinstall_known_extensions: 'false', autoload_known_extensions: 'false' })
  const conn = await db.connect()
  const events: EventJson[] = []
  const fingerprints: string[] = []
  try {
    for (let start = 0; start < ns.length; start += rowsPerComputeMax) {
      const part = ns.slice(start, start + rowsPerComputeMax)
      await computeInto(conn, spec, part, events, fingerprints)
    }
  } finally {
    conn.closeSync()
    db.closeSync()
  }
  return { events, fingerprints }
}

async function computeInto(conn: DuckDBConnection, spec: BigStoreSpec, ns: readonly number[], events: EventJson[], fingerprints: string[]): Promise<void> {
  const source = `(SELECT unnest($1::BIGINT[]) AS n)`
  const reader = await conn.runAndReadAll(`SELECT * FROM (${rowsSql(spec, source)})`, [listValue(ns.map((n) => BigInt(n)))])
  for (const r of reader.getRowObjectsJS()) {
    const e: EventJson = {}
    const put = (name: string, v: unknown): void => {
      if (v === null || v === undefined) return
      e[name] = typeof v === 'bigint' ? Number(v) : (v as string | number | boolean)
    }
    put('event_id', r['event_id'])
    put('timestamp', r['ts_ms'])
    for (const name of ['key_id', 'provider', 'model', 'status_code', 'input_tokens', 'output_tokens', 'cache_read_tokens', 'cache_write_tokens', 'reasoning_tokens']) put(name, r[name])
    const micros = r['cost_micros']
    if (micros !== null && micros !== undefined) {
      const m = BigInt(micros as bigint | number)
      e['cost'] = `${m / 1_000_000n}.${String(m % 1_000_000n).padStart(6, '0')}`
    }
    for (const name of ['currency', 'team_id', 'user_id', 'customer_id', 'endpoint', 'latency_ms', 'ttft_ms', 'stream']) put(name, r[name])
    events.push(e)
    fingerprints.push(String(r['fingerprint']))
  }
}

/**
 * Runs the server's validator over rows spread across the numbering and compares its
 * fingerprints with those written by SQL. Returns the mismatches (none, or the store
 * would answer `conflict` to every replay).
 */
export async function checkFingerprints(spec: BigStoreSpec): Promise<string[]> {
  const stride = EXACT_FINGERPRINT_STRIDE
  // Exact rows spread over the numbering, each with its neighbour (not exact: only validated),
  // and a few fresh rows past the stored ones.
  const ns: number[] = []
  for (let i = 0; i < fingerprintChecks; i++) {
    const n = Math.floor((i * (spec.events - 1)) / (fingerprintChecks - 1) / stride) * stride
    ns.push(n, n + 1, spec.events + i)
  }
  const { events, fingerprints } = await computeRows(spec, ns)
  const problems: string[] = []
  const limits = { nowMs: Date.now(), eventRetentionMs: 30 * 86_400_000, maxFutureSkewMs: 300_000 }
  events.forEach((e, i) => {
    const n = ns[i]!
    const res = validateEvent(e, limits)
    if (!res.ok) problems.push(`row ${n}: rejected by the validator: ${JSON.stringify(res.errors)}`)
    else if (n % stride === 0 && n < spec.events && res.event.fingerprint !== fingerprints[i]) problems.push(`row ${n}: SQL fingerprint ${fingerprints[i]} != server ${res.event.fingerprint}`)
  })
  return problems
}

export function segmentOfRow(spec: BigStoreSpec, n: number): number {
  return Math.floor(n / rowsPerSegment(spec)) + 1
}

export function rowsOfSegment(spec: BigStoreSpec, id: number): [number, number] {
  const per = rowsPerSegment(spec)
  const lo = (id - 1) * per
  return [lo, Math.min(spec.events, lo + per)]
}
