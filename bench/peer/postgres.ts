// The PostgreSQL peer of bench/ingest.ts: the usage service LiteLLM and Lago users run
// today, as plainly as it is usually written. A Fastify server whose POST /v1/events
// validates the batch with a JSON schema (Fastify's compiled validator) and writes it
// with one multi-row `INSERT … ON CONFLICT (event_id) DO NOTHING` per request through a
// `pg` pool, answering after PostgreSQL's commit (synchronous_commit on, fsync on: the
// cluster is bench/peer/pg-server.ts's). The table has a unique event id and two
// indexes (time; key and time), as a dashboard over it needs. What the INSERT did not
// write was already there: the answer counts it as a duplicate (the peer does not tell
// a conflicting resend from an identical one; tokenledger does).
//
// GET /v1/usage answers the totals in tokenledger's shape (requests, errors, token sums,
// the exact cost sum as NUMERIC text), so the bench checks the peer as it checks
// tokenledger: every acknowledged event stored once, exact sums.
//
// A child process of the bench; prints one JSON line with `"event":"listening"` and its
// URL on stdout. Environment: BENCH_PG_SOCKET (the cluster's socket folder), BENCH_PG_PORT,
// BENCH_PG_USER, BENCH_PG_DATABASE, BENCH_PG_POOL (pool size, 16), BENCH_PEER_PORT (0).
import Fastify from 'fastify'
import pg from 'pg'

const bodyLimitBytes = 8 * 1024 * 1024
const batchMax = 10_000

const env = (name: string, fallback?: string): string => {
  const v = process.env[name] ?? fallback
  if (v === undefined) throw new Error(`${name} must be set`)
  return v
}

const pool = new pg.Pool({
  host: env('BENCH_PG_SOCKET'),
  port: Number(env('BENCH_PG_PORT', '5432')),
  user: env('BENCH_PG_USER'),
  database: env('BENCH_PG_DATABASE', 'postgres'),
  max: Number(env('BENCH_PG_POOL', '16')),
})

await pool.query(`CREATE TABLE IF NOT EXISTS usage_events (
  event_id text PRIMARY KEY,
  ts timestamptz NOT NULL,
  key_id text NOT NULL,
  provider text NOT NULL,
  model text NOT NULL,
  status_code smallint NOT NULL,
  input_tokens bigint NOT NULL,
  output_tokens bigint NOT NULL,
  cache_read_tokens bigint NOT NULL DEFAULT 0,
  cache_write_tokens bigint NOT NULL DEFAULT 0,
  reasoning_tokens bigint NOT NULL DEFAULT 0,
  cost numeric(38,12),
  currency text NOT NULL DEFAULT 'USD',
  team_id text,
  user_id text,
  customer_id text,
  endpoint text,
  latency_ms integer,
  ttft_ms integer,
  stream boolean,
  tags jsonb
)`)
await pool.query('CREATE INDEX IF NOT EXISTS usage_events_ts ON usage_events (ts)')
await pool.query('CREATE INDEX IF NOT EXISTS usage_events_key_ts ON usage_events (key_id, ts)')

const str = (max: number) => ({ type: 'string', minLength: 1, maxLength: max }) as const
const count = { type: 'integer', minimum: 0 } as const
const eventSchema = {
  type: 'object',
  additionalProperties: false,
  required: ['event_id', 'timestamp', 'key_id', 'provider', 'model', 'status_code', 'input_tokens', 'output_tokens'],
  properties: {
    event_id: str(128),
    timestamp: { type: 'integer', minimum: 0 },
    key_id: str(128),
    provider: str(64),
    model: str(128),
    status_code: { type: 'integer', minimum: 100, maximum: 599 },
    input_tokens: count,
    output_tokens: count,
    cache_read_tokens: count,
    cache_write_tokens: count,
    reasoning_tokens: count,
    cost: { type: 'string', pattern: '^\\d{1,26}(\\.\\d{1,12})?$' },
    currency: { type: 'string', pattern: '^[A-Z]{3}$' },
    team_id: str(128),
    user_id: str(128),
    customer_id: str(128),
    endpoint: { type: 'string', maxLength: 256 },
    latency_ms: count,
    ttft_ms: count,
    stream: { type: 'boolean' },
    tags: { type: 'object', additionalProperties: { type: 'string' } },
  },
} as const
const bodySchema = { type: 'object', required: ['events'], properties: { events: { type: 'array', minItems: 1, maxItems: batchMax, items: eventSchema } } } as const

interface Event {
  event_id: string
  timestamp: number
  key_id: string
  provider: string
  model: string
  status_code: number
  input_tokens: number
  output_tokens: number
  cache_read_tokens?: number
  cache_write_tokens?: number
  reasoning_tokens?: number
  cost?: string
  currency?: string
  team_id?: string
  user_id?: string
  customer_id?: string
  endpoint?: string
  latency_ms?: number
  ttft_ms?: number
  stream?: boolean
  tags?: Record<string, string>
}

const COLUMNS = [
  'event_id', 'ts', 'key_id', 'provider', 'model', 'status_code', 'input_tokens', 'output_tokens', 'cache_read_tokens', 'cache_write_tokens',
  'reasoning_tokens', 'cost', 'currency', 'team_id', 'user_id', 'customer_id', 'endpoint', 'latency_ms', 'ttft_ms', 'stream', 'tags',
] as const

/** `($1,…,$21),($22,…)`: built once per batch size. */
const placeholderCache = new Map<number, string>()
function placeholders(rows: number): string {
  let text = placeholderCache.get(rows)
  if (text === undefined) {
    const parts: string[] = []
    for (let r = 0; r < rows; r++) parts.push(`(${COLUMNS.map((_, c) => `$${r * COLUMNS.length + c + 1}`).join(',')})`)
    text = parts.join(',')
    placeholderCache.set(rows, text)
  }
  return text
}

const app = Fastify({ logger: false, bodyLimit: bodyLimitBytes })

app.get('/readyz', async () => {
  await pool.query('SELECT 1')
  return { status: 'ready' }
})

app.post('/v1/events', { schema: { body: bodySchema } }, async (request) => {
  const events = (request.body as { events: Event[] }).events
  const values: unknown[] = []
  for (const e of events) {
    values.push(
      e.event_id, new Date(e.timestamp), e.key_id, e.provider, e.model, e.status_code, e.input_tokens, e.output_tokens,
      e.cache_read_tokens ?? 0, e.cache_write_tokens ?? 0, e.reasoning_tokens ?? 0, e.cost ?? null, e.currency ?? 'USD',
      e.team_id ?? null, e.user_id ?? null, e.customer_id ?? null, e.endpoint ?? null, e.latency_ms ?? null, e.ttft_ms ?? null,
      e.stream ?? null, e.tags === undefined ? null : JSON.stringify(e.tags),
    )
  }
  const res = await pool.query(`INSERT INTO usage_events (${COLUMNS.join(',')}) VALUES ${placeholders(events.length)} ON CONFLICT (event_id) DO NOTHING`, values)
  const accepted = res.rowCount ?? 0
  return { accepted, duplicates: events.length - accepted, conflicts: 0, rejected: 0, results: [] }
})

app.get('/v1/usage', async () => {
  const r = await pool.query<Record<string, string>>(`SELECT count(*)::text AS requests,
      count(*) FILTER (WHERE status_code >= 400)::text AS errors,
      coalesce(sum(input_tokens), 0)::text AS input_tokens,
      coalesce(sum(output_tokens), 0)::text AS output_tokens,
      coalesce(sum(cache_read_tokens), 0)::text AS cache_read_tokens,
      coalesce(sum(reasoning_tokens), 0)::text AS reasoning_tokens,
      coalesce(sum(cost), 0)::text AS cost
    FROM usage_events`)
  return { totals: r.rows[0] ?? {} }
})

const url = await app.listen({ port: Number(process.env['BENCH_PEER_PORT'] ?? '0'), host: '127.0.0.1' })
process.stdout.write(`${JSON.stringify({ level: 30, event: 'listening', url })}\n`)

for (const signal of ['SIGTERM', 'SIGINT'] as const) {
  process.once(signal, () => {
    app
      .close()
      .then(() => pool.end())
      .then(
        () => process.exit(0),
        () => process.exit(1),
      )
  })
}
