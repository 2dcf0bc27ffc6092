// Synthetic usage events for the ingest benchmark, built fast enough that the load
// generator is never the bottleneck.
//
// A batch body is spliced from pre-rendered pieces: per template, every event is
// rendered once (all fields but event_id and timestamp); a request only concatenates
// those pieces with its fresh ids and the current timestamp. No JSON.stringify per
// request. Event ids are `bench-<runId>-<n>` with n = batchNo * batchSize + slot, so
// every batch number yields ids no other batch uses.
//
// Values are drawn from a seeded PRNG, so two runs send the same mix: key_id over 50
// values, model over 5, provider over 3, ~5% error statuses, costs as decimal strings
// with 6 fractional digits. Each template knows its exact totals, so the bench can check
// what the server sums against what it acknowledged.

import { createHash } from 'node:crypto'

/** Sums over one template's events, exact (bigint where a sum can grow large). */
export interface BatchTotals {
  events: number
  errors: number
  inputTokens: bigint
  outputTokens: bigint
  cacheReadTokens: bigint
  reasoningTokens: bigint
  /** Cost in micro-units of the currency (the events carry 6 fractional digits). */
  costMicros: bigint
}

export const KEY_COUNT = 50
export const TEAM_COUNT = 10
/** Distinct batch templates rotated by batch number; enough to mix dimensions. */
export const TEMPLATE_COUNT = 8
/** Upper bound on one batch (the server's default per-request event limit). */
export const BATCH_EVENTS_MAX = 10_000

const MID = '","timestamp":'

interface ModelSpec {
  provider: string
  model: string
  /** Price per token in micro-units; floats only here, the cost itself is an integer. */
  inputMicrosPerToken: number
  outputMicrosPerToken: number
  reasons: boolean
}

const MODELS: readonly ModelSpec[] = [
  { provider: 'openai', model: 'gpt-4o-mini', inputMicrosPerToken: 0.15, outputMicrosPerToken: 0.6, reasons: false },
  { provider: 'openai', model: 'o4-mini', inputMicrosPerToken: 1.1, outputMicrosPerToken: 4.4, reasons: true },
  { provider: 'anthropic', model: 'claude-sonnet-4', inputMicrosPerToken: 3, outputMicrosPerToken: 15, reasons: true },
  { provider: 'anthropic', model: 'claude-haiku-3.5', inputMicrosPerToken: 0.8, outputMicrosPerToken: 4, reasons: false },
  { provider: 'google', model: 'gemini-2.5-flash', inputMicrosPerToken: 0.3, outputMicrosPerToken: 2.5, reasons: true },
]

/** mulberry32: a tiny deterministic PRNG, good enough for a load mix. */
function prng(seed: number): () => number {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

function pick<T>(items: readonly T[], r: number): T {
  const item = items[Math.floor(r * items.length)]
  if (item === undefined) throw new Error('pick: empty list')
  return item
}

function intBetween(r: number, lo: number, hi: number): number {
  return lo + Math.floor(r * (hi - lo + 1))
}

function formatMicros(micros: number): string {
  return `${Math.floor(micros / 1_000_000)}.${String(micros % 1_000_000).padStart(6, '0')}`
}

interface Template {
  /** tails[j]: event j after its timestamp, up to and including the next event's `"event_id":"<prefix>`. */
  tails: string[]
  /** Event j's fields but event_id and timestamp (what other encodings of the same events are built from). */
  events: Array<Record<string, string | number>>
  totals: BatchTotals
}

/**
 * What the events are stored as: `native`, the bench's own short ids and no tags;
 * `otlp`, what the OTLP door stores for the same events sent as GenAI spans
 * (bench/lib/otlp.ts): ids of its length (`otel:` + 32 + `:` + 16 characters) and
 * its two tags (gen_ai.operation.name, resource service.name), so the native route
 * can be measured on the OTLP door's stored content.
 */
export type StoredShape = 'native' | 'otlp'
/** The tags the OTLP door stores for bench/lib/otlp.ts's spans. */
export const OTLP_DOOR_TAGS = { 'gen_ai.operation.name': 'chat', 'service.name': 'bench-gateway' } as const

function buildTemplate(seed: number, batchSize: number, idPrefix: string, shape: StoredShape = 'native'): Template {
  const rnd = prng(seed)
  const tails: string[] = []
  const events: Array<Record<string, string | number>> = []
  const totals: BatchTotals = {
    events: batchSize,
    errors: 0,
    inputTokens: 0n,
    outputTokens: 0n,
    cacheReadTokens: 0n,
    reasoningTokens: 0n,
    costMicros: 0n,
  }
  for (let j = 0; j < batchSize; j++) {
    const keyNo = intBetween(rnd(), 0, KEY_COUNT - 1)
    const spec = pick(MODELS, rnd())
    const statusRoll = rnd()
    const statusCode = statusRoll < 0.95 ? 200 : statusRoll < 0.98 ? 429 : 500
    const inputTokens = intBetween(rnd(), 20, 8_000)
    const cacheReadTokens = rnd() < 0.4 ? intBetween(rnd(), 0, Math.floor(inputTokens / 2)) : 0
    const outputTokens = statusCode === 200 ? intBetween(rnd(), 1, 2_000) : 0
    const reasoningTokens = spec.reasons ? intBetween(rnd(), 0, Math.floor(outputTokens / 3)) : 0
    const costMicros = Math.max(
      1,
      Math.round(inputTokens * spec.inputMicrosPerToken + outputTokens * spec.outputMicrosPerToken),
    )
    const fields = {
      key_id: `key_${keyNo}`,
      provider: spec.provider,
      model: spec.model,
      status_code: statusCode,
      input_tokens: inputTokens,
      output_tokens: outputTokens,
      cache_read_tokens: cacheReadTokens,
      reasoning_tokens: reasoningTokens,
      cost: formatMicros(costMicros),
      team_id: `team_${keyNo % TEAM_COUNT}`,
      latency_ms: intBetween(rnd(), 80, 20_000),
    }
    events.push(fields)
    const rest = JSON.stringify(shape === 'otlp' ? { ...fields, tags: OTLP_DOOR_TAGS } : fields)
    // `{"key_id":…}` → `,"key_id":…}` so it follows the timestamp.
    const eventTail = `,${rest.slice(1)}`
    tails.push(j < batchSize - 1 ? `${eventTail},{"event_id":"${idPrefix}` : `${eventTail}]}`)

    if (statusCode >= 400) totals.errors++
    totals.inputTokens += BigInt(inputTokens)
    totals.outputTokens += BigInt(outputTokens)
    totals.cacheReadTokens += BigInt(cacheReadTokens)
    totals.reasoningTokens += BigInt(reasoningTokens)
    totals.costMicros += BigInt(costMicros)
  }
  return { tails, events, totals }
}

/** Builds `{"events":[…]}` bodies with fresh event ids for each batch number. */
export class BatchFactory {
  readonly batchSize: number
  private readonly head: string
  private readonly templates: Template[] = []

  constructor(
    runId: string,
    batchSize: number,
    private readonly shape: StoredShape = 'native',
  ) {
    if (!Number.isSafeInteger(batchSize) || batchSize < 1 || batchSize > BATCH_EVENTS_MAX) {
      throw new RangeError(`batch size must be an integer in 1..${BATCH_EVENTS_MAX}, got ${batchSize}`)
    }
    if (!/^[A-Za-z0-9_-]{1,40}$/.test(runId)) throw new RangeError(`bad run id: ${runId}`)
    this.batchSize = batchSize
    // otlp: `otel:<16 hex of the run><n, 16 digits>:<n, 16 digits>`, written by build().
    const idPrefix = shape === 'otlp' ? `otel:${createHash('sha256').update(runId).digest('hex').slice(0, 16)}` : `bench-${runId}-`
    this.head = `{"events":[{"event_id":"${idPrefix}`
    for (let t = 0; t < TEMPLATE_COUNT; t++) this.templates.push(buildTemplate(0x5eed + t, batchSize, idPrefix, shape))
  }

  /** Which template batch `batchNo` uses. */
  templateOf(batchNo: number): number {
    return batchNo % TEMPLATE_COUNT
  }

  /** The events of `template` (fields but event_id and timestamp). */
  eventsOf(template: number): ReadonlyArray<Record<string, string | number>> {
    const t = this.templates[template]
    if (t === undefined) throw new RangeError(`no template ${template}`)
    return t.events
  }

  totalsOf(template: number): BatchTotals {
    const t = this.templates[template]
    if (t === undefined) throw new RangeError(`no template ${template}`)
    return t.totals
  }

  /** The JSON body of batch `batchNo`, every event stamped `timestampMs`. */
  build(batchNo: number, timestampMs: number): string {
    const t = this.templates[this.templateOf(batchNo)]
    if (t === undefined) throw new RangeError(`no template for batch ${batchNo}`)
    const base = batchNo * this.batchSize
    const ts = String(timestampMs)
    const tails = t.tails
    let body = this.head
    if (this.shape === 'otlp') {
      for (let j = 0; j < tails.length; j++) {
        const n = String(base + j).padStart(16, '0')
        body += n + ':' + n + MID + ts + tails[j]
      }
      return body
    }
    for (let j = 0; j < tails.length; j++) body += base + j + MID + ts + tails[j]
    return body
  }
}
