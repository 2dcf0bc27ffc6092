// Proves: for OTLP/HTTP exports, an acknowledged span is never lost and never
// stored twice when the server process is SIGKILLed while exporters send.
//
// Shape (test/crash.test.ts's, for the OTLP door): clients post GenAI spans made
// by the OTel SDK and encoded by its own protobuf serializer (what the proto
// exporter sends), like an exporter: each export serialized once so a retry is
// byte-identical. After a random 0.8-1.6 s the child server is SIGKILLed. A 200
// without partial_success acknowledges every span of its export; a reset or a
// refused connection leaves it unacknowledged. The server restarts on the same
// data directory and every unacknowledged export is retried as an exporter
// would (each must come back 200 without partial_success: accepted or a
// duplicate, never a conflict), and a sample of acknowledged ones too. Then
// /v1/usage must equal the sums over the distinct spans sent (count, tokens,
// exact cost) and a sample of span ids must read back.
//
// Set CRASH_TEST_SEED to replay the kill delay and samples of a failed run.
import test from 'node:test'
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { setTimeout as delay } from 'node:timers/promises'
import { ProtobufTraceSerializer } from '@opentelemetry/otlp-transformer'
import { resourceFromAttributes } from '@opentelemetry/resources'
import { BasicTracerProvider, InMemorySpanExporter, SimpleSpanProcessor } from '@opentelemetry/sdk-trace-base'
import { startChildServer, type ChildServer } from './support/child-server.js'
import { mulberry32 } from './support/random.js'

const clientCount = 3
const spansPerExport = 25
const killDelayMsMin = 800
const killDelayMsMax = 1_600
const exportsPerClientMax = 5_000 // bound on a client's loop; the kill ends it far sooner
const requestTimeoutMs = 15_000
const retryAttemptsMax = 20
const retryAfterMsMax = 1_000
const ackedResendSample = 10
const readBackSample = 200
const costScale = 10n ** 12n
const testTimeoutMs = 120_000

interface Export {
  body: Uint8Array
  ids: string[]
  inputTokens: number
  cost: bigint
  acked: boolean
}

/** Exports of fresh GenAI spans, made and serialized by the OTel SDK. */
class Exports {
  readonly all: Export[] = []
  private n = 0
  private readonly memory = new InMemorySpanExporter()
  private readonly tracer = new BasicTracerProvider({ resource: resourceFromAttributes({ 'service.name': 'crash-gateway' }), spanProcessors: [new SimpleSpanProcessor(this.memory)] }).getTracer('crash')
  constructor(private readonly baseMs: number) {}

  make(): Export {
    this.memory.reset()
    let inputTokens = 0
    let cost = 0n
    for (let i = 0; i < spansPerExport; i++) {
      const n = ++this.n // distinct per span: input_tokens = n makes sums checkable
      const scaled = (BigInt(n) * 982_451_653n) % (10n * costScale)
      const end = this.baseMs - ((n * 7919) % 3_600_000)
      const span = this.tracer.startSpan('chat', {
        startTime: end - 250,
        attributes: {
          'gen_ai.provider.name': ['openai', 'anthropic'][n % 2]!,
          'gen_ai.response.model': `model-${n % 4}`,
          'gen_ai.usage.input_tokens': n,
          'gen_ai.usage.output_tokens': n % 100,
          'tokenledger.cost': `${scaled / costScale}.${(scaled % costScale).toString().padStart(12, '0')}`,
        },
      })
      span.end(end)
      inputTokens += n
      cost += scaled
    }
    const spans = this.memory.getFinishedSpans()
    const e: Export = { body: ProtobufTraceSerializer.serializeRequest(spans)!, ids: spans.map((s) => `otel:${s.spanContext().traceId}:${s.spanContext().spanId}`), inputTokens, cost, acked: false }
    this.all.push(e)
    return e
  }
}

type Outcome = { kind: 'ok'; rejected: number; message: string } | { kind: 'retry'; afterMs: number } | { kind: 'network'; error: string } | { kind: 'unexpected'; text: string }

async function send(url: string, e: Export): Promise<Outcome> {
  let res: Response
  let body: Uint8Array
  try {
    res = await fetch(`${url}/v1/traces`, { method: 'POST', headers: { 'content-type': 'application/x-protobuf' }, body: e.body, signal: AbortSignal.timeout(requestTimeoutMs) })
    body = new Uint8Array(await res.arrayBuffer()) // a body cut off mid-way is not an acknowledgement
  } catch (err) {
    return { kind: 'network', error: String(err) }
  }
  if (res.status === 200) {
    const answer = ProtobufTraceSerializer.deserializeResponse(body)
    return { kind: 'ok', rejected: Number(answer.partialSuccess?.rejectedSpans ?? 0), message: answer.partialSuccess?.errorMessage ?? '' }
  }
  if ([429, 502, 503, 504].includes(res.status)) {
    const seconds = Number(res.headers.get('retry-after'))
    return { kind: 'retry', afterMs: Number.isFinite(seconds) && seconds > 0 ? Math.min(seconds * 1000, retryAfterMsMax) : 100 }
  }
  return { kind: 'unexpected', text: `HTTP ${res.status}: ${Buffer.from(body).toString('latin1').slice(0, 300)}` }
}

/** Retries as an exporter does (OTLP's retryable codes, Retry-After), bounded; anything else fails the test. */
async function sendUntilAnswered(url: string, e: Export): Promise<{ rejected: number; message: string }> {
  for (let attempt = 0; attempt < retryAttemptsMax; attempt++) {
    const out = await send(url, e)
    if (out.kind === 'ok') return out
    if (out.kind !== 'retry') assert.fail(`retry of an export: ${JSON.stringify(out)}`)
    await delay(out.afterMs) // the back-off the server asked for (Retry-After), bounded
  }
  assert.fail(`an export was still refused after ${retryAttemptsMax} attempts`)
}

test('no acknowledged OTLP span is lost or stored twice across SIGKILL and restart', { timeout: testTimeoutMs }, async (t) => {
  const seed = process.env.CRASH_TEST_SEED !== undefined ? Number(process.env.CRASH_TEST_SEED) : randomBytes(4).readUInt32LE(0)
  t.diagnostic(`seed ${seed} (set CRASH_TEST_SEED=${seed} to replay)`)
  const rand = mulberry32(seed)
  const dataDir = await mkdtemp(path.join(tmpdir(), 'tokenledger-otlp-crash-'))
  let server: ChildServer | undefined
  t.after(async () => {
    try {
      await server?.stop()
    } finally {
      await rm(dataDir, { recursive: true, force: true, maxRetries: 3 })
    }
  })
  const baseMs = Date.now()
  const exports = new Exports(baseMs)
  server = await startChildServer({ dataDir })
  const anomalies: string[] = []
  let killed = false
  const client = async (): Promise<void> => {
    for (let i = 0; i < exportsPerClientMax; i++) {
      const e = exports.make()
      const out = await send(server!.url, e)
      if (out.kind === 'ok') {
        if (out.rejected !== 0) anomalies.push(`fresh export had rejected spans: ${out.message}`)
        e.acked = true
      } else if (out.kind === 'network') {
        if (!killed) anomalies.push(`network error before the kill: ${out.error}`)
        return
      } else if (out.kind === 'unexpected') {
        anomalies.push(out.text)
        return
      }
    }
  }
  const clients = Array.from({ length: clientCount }, client)
  const killDelayMs = killDelayMsMin + Math.floor(rand() * (killDelayMsMax - killDelayMsMin))
  await delay(killDelayMs) // the deliberate random moment of the crash, not a synchronization
  killed = true
  assert.equal((await server.kill()).signal, 'SIGKILL')
  await Promise.all(clients)
  assert.deepEqual(anomalies, [])
  const acked = exports.all.filter((e) => e.acked)
  assert.ok(acked.length > 0, `no export was acknowledged in ${killDelayMs} ms: the test proves nothing`)

  server = undefined
  server = await startChildServer({ dataDir })
  const unacked = exports.all.filter((e) => !e.acked)
  const sample = acked.slice().sort(() => rand() - 0.5).slice(0, ackedResendSample)
  for (const e of [...unacked, ...sample]) {
    const answer = await sendUntilAnswered(server.url, e)
    assert.equal(answer.rejected, 0, `a retried export must be stored or a duplicate, never a conflict: ${answer.message}`)
  }

  const sent = exports.all
  const usage = await (await fetch(`${server.url}/v1/usage?from=${baseMs - 3_600_000}&to=${baseMs + 1}`)).json() as { totals: Record<string, unknown> }
  const expectedCost = sent.reduce((s, e) => s + e.cost, 0n)
  const where = `${sent.length} exports (${acked.length} acknowledged before the kill, ${unacked.length} retried after it)`
  assert.equal(usage.totals.requests, sent.length * spansPerExport, `${where}: stored spans != distinct spans sent (lost if fewer, doubled if more)`)
  assert.equal(usage.totals.input_tokens, sent.reduce((s, e) => s + e.inputTokens, 0), `${where}: input_tokens`)
  assert.equal(usage.totals.cost, `${expectedCost / costScale}.${(expectedCost % costScale).toString().padStart(12, '0')}`.replace(/\.?0+$/, ''), `${where}: exact cost`)
  const ids = acked.flatMap((e) => e.ids).sort(() => rand() - 0.5).slice(0, readBackSample)
  for (const id of ids) assert.equal((await fetch(`${server.url}/v1/events/${id}`)).status, 200, `acknowledged span ${id} is lost`)
  t.diagnostic(`killed after ${killDelayMs} ms; ${where}; ${ids.length} acknowledged ids read back`)
})
