// Proves: an acknowledged event is never lost and never stored twice, even when the server
// process is SIGKILLed while several clients post.
//
// Shape (Kafka's validate_delivery / Jepsen's total-queue checker): clients post batches of
// unique events to a real child server; after a random 0.8–2 s the child is SIGKILLed. A 200
// marks every event of its batch acknowledged; a reset, refused connection or 503 marks the
// batch unacknowledged. The server restarts on the same data directory; every
// unacknowledged batch is re-sent byte for byte (each event must come back accepted or
// duplicate, never conflict or rejected) and a sample of acknowledged batches is re-sent
// (all must be duplicates). Then the stored totals must equal the sums over the distinct
// events sent (count, tokens, exact cost), and every acknowledged id (or a random sample
// of 2000 when there are more than 5000) must read back with the values it was posted with.
// Two kill/restart cycles run on one data directory.
//
// Set CRASH_TEST_SEED to replay the kill delays and samples of a failed run.
import test, { type TestContext } from 'node:test'
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { setTimeout as delay } from 'node:timers/promises'
import { startChildServer, type ChildServer } from './support/child-server.js'
import { mulberry32 } from './support/random.js'

const clientCount = 4
const batchEvents = 50
const cycleCount = 2
const killDelayMsMin = 800
const killDelayMsMax = 2_000
const batchesPerClientPerCycleMax = 5_000 // bound on a client's loop; the kill ends it far sooner
const requestTimeoutMs = 15_000
const ackedResendSampleBatches = 20
const resendConcurrency = 4
const resend503AttemptsMax = 20
const retryAfterMsMax = 1_000
const readBackAllMax = 5_000
const readBackSample = 2_000
const readBackConcurrency = 16
const timestampSpreadMs = 3_600_000 // events are spread over the hour before the run started
const costScale = 10n ** 12n // costs carry 12 fractional digits
const testTimeoutMs = 120_000

// ---------------------------------------------------------------------------------------
// Deterministic randomness (seeded) for kill delays and samples.

function sample<T>(items: readonly T[], count: number, rand: () => number): T[] {
  const copy = items.slice()
  const n = Math.min(count, copy.length)
  for (let i = 0; i < n; i++) {
    const j = i + Math.floor(rand() * (copy.length - i))
    const picked = copy[j] as T
    copy[j] = copy[i] as T
    copy[i] = picked
  }
  return copy.slice(0, n)
}

// ---------------------------------------------------------------------------------------
// Exact decimals.

function formatScaled(scaled: bigint): string {
  const s = scaled.toString().padStart(13, '0')
  return `${s.slice(0, -12)}.${s.slice(-12)}`
}

/** Parses a non-negative decimal string into an integer scaled by 10^12 (exactly). */
function parseScaled(value: unknown, what: string): bigint {
  assert.equal(typeof value, 'string', `${what} must be a decimal string, got ${JSON.stringify(value)}`)
  const m = /^(\d+)(?:\.(\d+))?$/.exec(value as string)
  assert.ok(m, `${what} is not a plain decimal: ${JSON.stringify(value)}`)
  const whole = m[1] as string
  const frac = m[2] ?? ''
  assert.ok(/^0*$/.test(frac.slice(12)), `${what} has non-zero digits beyond 12 decimals: ${value as string}`)
  return BigInt(whole) * costScale + BigInt(frac.slice(0, 12).padEnd(12, '0'))
}

// ---------------------------------------------------------------------------------------
// The events and batches this run sends.

interface SentEvent {
  event_id: string
  timestamp: number
  key_id: string
  team_id: string
  provider: string
  model: string
  status_code: number
  input_tokens: number
  output_tokens: number
  cost: string
}

interface Batch {
  readonly seq: number
  readonly client: number
  readonly cycle: number
  readonly events: readonly SentEvent[]
  /** Serialized once, so a re-send is byte-identical. */
  readonly body: string
  acked: boolean
}

class Ledger {
  readonly batches: Batch[] = []
  private eventSeq = 0
  constructor(
    readonly runPrefix: string,
    readonly baseMs: number,
  ) {}

  makeBatch(client: number, cycle: number): Batch {
    const events: SentEvent[] = []
    for (let i = 0; i < batchEvents; i++) {
      const n = ++this.eventSeq // distinct per event: input_tokens = n makes sums checkable
      events.push({
        event_id: `${this.runPrefix}-${n}`,
        timestamp: this.baseMs - ((n * 7919) % timestampSpreadMs),
        key_id: `crash-key-${client}`,
        team_id: `crash-team-${client % 2}`,
        provider: ['openai', 'anthropic', 'google'][n % 3] as string,
        model: `model-${n % 5}`,
        status_code: n % 17 === 0 ? 500 : 200,
        input_tokens: n,
        output_tokens: (n * 31) % 1000,
        cost: formatScaled((BigInt(n) * 982_451_653n) % (10n * costScale)),
      })
    }
    const batch: Batch = {
      seq: this.batches.length,
      client,
      cycle,
      events,
      body: JSON.stringify({ events }),
      acked: false,
    }
    this.batches.push(batch)
    return batch
  }

  expectedTotals() {
    let requests = 0
    let errors = 0
    let inputTokens = 0n
    let outputTokens = 0n
    let cost = 0n
    for (const b of this.batches) {
      for (const e of b.events) {
        requests++
        if (e.status_code >= 400) errors++
        inputTokens += BigInt(e.input_tokens)
        outputTokens += BigInt(e.output_tokens)
        cost += parseScaled(e.cost, 'sent cost')
      }
    }
    return { requests, errors, inputTokens, outputTokens, cost }
  }
}

// ---------------------------------------------------------------------------------------
// HTTP.

interface IngestResult {
  index: number
  event_id: string
  status: string
  errors?: unknown[]
}
interface IngestAnswer {
  accepted: number
  duplicates: number
  conflicts: number
  rejected: number
  results: IngestResult[]
}

type PostOutcome =
  | { kind: 'ok'; answer: IngestAnswer }
  | { kind: 'unavailable'; retryAfterMs: number; text: string }
  | { kind: 'network'; error: string }
  | { kind: 'timeout'; error: string }
  | { kind: 'unexpected'; status: number; text: string }

async function postBatch(url: string, batch: Batch): Promise<PostOutcome> {
  let res: Response
  let text: string
  try {
    res = await fetch(`${url}/v1/events`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: batch.body,
      signal: AbortSignal.timeout(requestTimeoutMs),
    })
    text = await res.text() // a body cut off mid-way is not an acknowledgement
  } catch (err) {
    const e = err as Error
    if (e.name === 'TimeoutError') return { kind: 'timeout', error: String(e) }
    const cause = (e as { cause?: unknown }).cause
    return { kind: 'network', error: `${String(e)}${cause ? ` (cause: ${String(cause)})` : ''}` }
  }
  if (res.status === 200) {
    let answer: IngestAnswer
    try {
      answer = JSON.parse(text) as IngestAnswer
    } catch {
      return { kind: 'unexpected', status: 200, text: `unparsable body: ${text.slice(0, 500)}` }
    }
    return { kind: 'ok', answer }
  }
  if (res.status === 503) {
    const seconds = Number(res.headers.get('retry-after'))
    const retryAfterMs = Number.isFinite(seconds) && seconds > 0 ? Math.min(seconds * 1000, retryAfterMsMax) : 100
    return { kind: 'unavailable', retryAfterMs, text: text.slice(0, 500) }
  }
  return { kind: 'unexpected', status: res.status, text: text.slice(0, 500) }
}

async function getJson(url: string): Promise<{ status: number; body: unknown; text: string }> {
  const res = await fetch(url, { signal: AbortSignal.timeout(requestTimeoutMs) })
  const text = await res.text()
  let body: unknown
  try {
    body = JSON.parse(text)
  } catch {
    body = undefined
  }
  return { status: res.status, body, text }
}

/** Runs `fn` over `items` with at most `concurrency` in flight. */
async function forEachLimited<T>(items: readonly T[], concurrency: number, fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0
  const worker = async (): Promise<void> => {
    while (next < items.length) {
      const item = items[next++] as T
      await fn(item)
    }
  }
  await Promise.all(Array.from({ length: Math.min(concurrency, items.length) }, worker))
}

// ---------------------------------------------------------------------------------------
// The phases.

interface LoadStats {
  acked: number
  unacked: number
  unavailable: number
  anomalies: string[]
}

/** Clients post until the server is killed; returns once all of them have stopped. */
async function loadAndKill(
  ledger: Ledger,
  server: ChildServer,
  cycle: number,
  killDelayMs: number,
): Promise<LoadStats> {
  const stats: LoadStats = { acked: 0, unacked: 0, unavailable: 0, anomalies: [] }
  let killed = false

  const client = async (ci: number): Promise<void> => {
    // No check of `killed` here: each client keeps posting until it sees the crash itself
    // (a reset in flight, or a refused connection).
    for (let i = 0; i < batchesPerClientPerCycleMax; i++) {
      const batch = ledger.makeBatch(ci, cycle)
      const out = await postBatch(server.url, batch)
      switch (out.kind) {
        case 'ok': {
          const a = out.answer
          if (a.accepted !== batch.events.length || a.duplicates !== 0 || a.conflicts !== 0 || a.rejected !== 0) {
            stats.anomalies.push(
              `cycle ${cycle} client ${ci} batch ${batch.seq}: fresh batch not fully accepted: ${JSON.stringify(a).slice(0, 500)}`,
            )
          }
          batch.acked = true
          stats.acked++
          break
        }
        case 'unavailable':
          stats.unavailable++
          stats.unacked++
          break // not stored; re-sent after the restart
        case 'network':
          stats.unacked++
          if (!killed) stats.anomalies.push(`cycle ${cycle} client ${ci} batch ${batch.seq}: network error before the kill: ${out.error}`)
          return
        case 'timeout':
          stats.unacked++
          stats.anomalies.push(`cycle ${cycle} client ${ci} batch ${batch.seq}: no answer within ${requestTimeoutMs} ms (hang)`)
          return
        case 'unexpected':
          stats.unacked++
          stats.anomalies.push(`cycle ${cycle} client ${ci} batch ${batch.seq}: HTTP ${out.status}: ${out.text}`)
          return
      }
    }
  }

  const clients = Array.from({ length: clientCount }, (_, ci) => client(ci))
  await delay(killDelayMs) // the deliberate random moment of the crash, not a synchronization
  killed = true
  const exit = await server.kill()
  if (exit.signal !== 'SIGKILL') {
    stats.anomalies.push(`cycle ${cycle}: server had already exited before the kill: ${JSON.stringify(exit)}`)
  }
  await Promise.all(clients) // each client stops at its first failed request (bounded by requestTimeoutMs)
  return stats
}

/** Posts with bounded retries on 503; anything but a 200 fails the test. */
async function postUntilAnswered(url: string, batch: Batch): Promise<IngestAnswer> {
  let last = ''
  for (let attempt = 0; attempt < resend503AttemptsMax; attempt++) {
    const out = await postBatch(url, batch)
    if (out.kind === 'ok') return out.answer
    if (out.kind !== 'unavailable') assert.fail(`re-send of batch ${batch.seq}: ${JSON.stringify(out)}`)
    last = out.text
    await delay(out.retryAfterMs) // back-off the server asked for (Retry-After), bounded
  }
  assert.fail(`re-send of batch ${batch.seq}: still 503 after ${resend503AttemptsMax} attempts: ${last}`)
}

interface ResendStats {
  unackedBatches: number
  unackedEventsAlreadyStored: number
  ackedBatchesResent: number
}

async function resend(ledger: Ledger, url: string, cycle: number, rand: () => number): Promise<ResendStats> {
  const unacked = ledger.batches.filter((b) => !b.acked)
  // Chosen before the unacknowledged ones become acknowledged below.
  const ackedSample = sample(
    ledger.batches.filter((b) => b.acked),
    ackedResendSampleBatches,
    rand,
  )
  let alreadyStored = 0

  await forEachLimited(unacked, resendConcurrency, async (batch) => {
    const a = await postUntilAnswered(url, batch)
    const where = `cycle ${cycle}: re-sent unacknowledged batch ${batch.seq}`
    assert.equal(a.conflicts, 0, `${where}: conflicts ${JSON.stringify(a.results).slice(0, 1000)}`)
    assert.equal(a.rejected, 0, `${where}: rejected ${JSON.stringify(a.results).slice(0, 1000)}`)
    assert.equal(a.accepted + a.duplicates, batch.events.length, `${where}: ${JSON.stringify(a).slice(0, 500)}`)
    assert.equal(a.results.length, a.duplicates, `${where}: results must list exactly the duplicates`)
    for (const r of a.results) {
      assert.equal(r.status, 'duplicate', `${where}: ${JSON.stringify(r)}`)
      assert.equal(r.event_id, batch.events[r.index]?.event_id, `${where}: result index/id mismatch ${JSON.stringify(r)}`)
    }
    alreadyStored += a.duplicates
    batch.acked = true
  })

  await forEachLimited(ackedSample, resendConcurrency, async (batch) => {
    const a = await postUntilAnswered(url, batch)
    const where = `cycle ${cycle}: re-sent acknowledged batch ${batch.seq} (from cycle ${batch.cycle})`
    assert.deepEqual(
      { accepted: a.accepted, duplicates: a.duplicates, conflicts: a.conflicts, rejected: a.rejected },
      { accepted: 0, duplicates: batch.events.length, conflicts: 0, rejected: 0 },
      `${where}: ${JSON.stringify(a).slice(0, 1000)}`,
    )
    assert.deepEqual(
      a.results.map((r) => [r.index, r.event_id, r.status]),
      batch.events.map((e, i) => [i, e.event_id, 'duplicate']),
      `${where}: results`,
    )
  })

  return { unackedBatches: unacked.length, unackedEventsAlreadyStored: alreadyStored, ackedBatchesResent: ackedSample.length }
}

/** Compares one stored event with what was posted; returns the differences. */
function diffEvent(sent: SentEvent, stored: Record<string, unknown>): string[] {
  const diffs: string[] = []
  for (const [field, value] of Object.entries(sent)) {
    const got = stored[field]
    if (field === 'cost') {
      // Decimal strings may come back normalized ("0.5" for "0.500000000000"): compare exactly as numbers.
      if (typeof got !== 'string' || !/^\d+(\.\d+)?$/.test(got) || parseScaled(got, 'cost') !== parseScaled(value, 'cost')) {
        diffs.push(`cost: sent ${value as string}, stored ${JSON.stringify(got)}`)
      }
    } else if (field === 'timestamp') {
      // Posted as epoch ms; accept it back as epoch ms or as RFC 3339 for the same instant.
      const gotMs = typeof got === 'string' ? Date.parse(got) : got
      if (gotMs !== value) diffs.push(`timestamp: sent ${value as number}, stored ${JSON.stringify(got)}`)
    } else if (got !== value) {
      diffs.push(`${field}: sent ${JSON.stringify(value)}, stored ${JSON.stringify(got)}`)
    }
  }
  return diffs
}

async function verify(ledger: Ledger, url: string, cycle: number, rand: () => number): Promise<{ readBack: number }> {
  assert.ok(
    ledger.batches.every((b) => b.acked),
    'every batch is acknowledged after the re-send',
  )

  // Read back every acknowledged id (or a sample) with its values.
  const ids = ledger.batches.flatMap((b) => b.events)
  const toRead = ids.length <= readBackAllMax ? ids : sample(ids, readBackSample, rand)
  const missing: string[] = []
  const wrong: string[] = []
  await forEachLimited(toRead, readBackConcurrency, async (sent) => {
    const { status, body, text } = await getJson(`${url}/v1/events/${encodeURIComponent(sent.event_id)}`)
    if (status === 404) {
      missing.push(sent.event_id)
      return
    }
    assert.equal(status, 200, `GET /v1/events/${sent.event_id}: ${text.slice(0, 500)}`)
    const diffs = diffEvent(sent, body as Record<string, unknown>)
    if (diffs.length > 0) wrong.push(`${sent.event_id}: ${diffs.join('; ')}`)
  })

  const expected = ledger.expectedTotals()
  const from = ledger.baseMs - timestampSpreadMs
  const to = ledger.baseMs + 1
  const usage = await getJson(`${url}/v1/usage?from=${from}&to=${to}`)
  assert.equal(usage.status, 200, `GET /v1/usage: ${usage.text.slice(0, 500)}`)
  const totals = (usage.body as { totals?: Record<string, unknown> }).totals
  assert.ok(totals, `GET /v1/usage has no totals: ${usage.text.slice(0, 500)}`)

  const where = `cycle ${cycle}, ${ledger.batches.length} batches, ${expected.requests} distinct events sent`
  assert.deepEqual(missing.slice(0, 50), [], `${where}: ${missing.length} of ${toRead.length} read-back ids are lost`)
  assert.deepEqual(wrong.slice(0, 50), [], `${where}: ${wrong.length} of ${toRead.length} read-back events differ`)
  assert.equal(totals.requests, expected.requests, `${where}: stored requests != distinct events sent (lost if fewer, duplicated if more)`)
  assert.equal(totals.errors, expected.errors, `${where}: errors`)
  assert.equal(typeof totals.input_tokens, 'number', 'input_tokens is a number')
  assert.equal(BigInt(totals.input_tokens as number), expected.inputTokens, `${where}: input_tokens sum`)
  assert.equal(BigInt(totals.output_tokens as number), expected.outputTokens, `${where}: output_tokens sum`)
  assert.equal(parseScaled(totals.cost, 'totals.cost'), expected.cost, `${where}: cost sum (expected ${formatScaled(expected.cost)}, got ${String(totals.cost)})`)
  assert.equal(totals.cost_missing, 0, `${where}: cost_missing`)
  assert.equal(totals.cache_read_tokens, 0, `${where}: cache_read_tokens`)
  assert.equal(totals.cache_write_tokens, 0, `${where}: cache_write_tokens`)
  assert.equal(totals.reasoning_tokens, 0, `${where}: reasoning_tokens`)
  return { readBack: toRead.length }
}

// ---------------------------------------------------------------------------------------

interface CrashScenarioOptions {
  /** Extra server environment, e.g. { TOKENLEDGER_ROLLOVER_BYTES: '65536' } to force rollovers. */
  serverEnv?: Record<string, string>
  cycles?: number
  /** Assert that the runs really rolled segments over and sealed some. */
  expectTiers?: boolean
}

async function crashScenario(t: TestContext, opts: CrashScenarioOptions = {}): Promise<void> {
  const seed = process.env.CRASH_TEST_SEED !== undefined ? Number(process.env.CRASH_TEST_SEED) : randomBytes(4).readUInt32LE(0)
  t.diagnostic(`seed ${seed} (set CRASH_TEST_SEED=${seed} to replay kill delays and samples)`)
  const rand = mulberry32(seed)

  const dataDir = await mkdtemp(path.join(tmpdir(), 'tokenledger-crash-'))
  let server: ChildServer | undefined
  const logsOfDeadServers: string[] = []
  t.after(async () => {
    try {
      await server?.stop()
    } finally {
      await rm(dataDir, { recursive: true, force: true, maxRetries: 3 })
    }
  })

  const ledger = new Ledger(`crash-${Date.now().toString(36)}-${randomBytes(4).toString('hex')}`, Date.now())
  try {
    server = await startChildServer({ dataDir, env: opts.serverEnv })
    for (let cycle = 1; cycle <= (opts.cycles ?? cycleCount); cycle++) {
      const killDelayMs = killDelayMsMin + Math.floor(rand() * (killDelayMsMax - killDelayMsMin))
      const load = await loadAndKill(ledger, server, cycle, killDelayMs)
      logsOfDeadServers.push(server.logTail())
      assert.deepEqual(load.anomalies, [], `cycle ${cycle}: anomalies while posting`)
      assert.ok(load.acked > 0, `cycle ${cycle}: no batch was acknowledged in ${killDelayMs} ms, the test proves nothing`)

      server = undefined
      server = await startChildServer({ dataDir, env: opts.serverEnv })
      const re = await resend(ledger, server.url, cycle, rand)
      const check = await verify(ledger, server.url, cycle, rand)
      t.diagnostic(
        `cycle ${cycle}: killed after ${killDelayMs} ms; batches acked ${load.acked}, unacked ${load.unacked} ` +
          `(503: ${load.unavailable}); of the unacked events ${re.unackedEventsAlreadyStored} were already stored; ` +
          `${re.ackedBatchesResent} acked batches re-sent as duplicates; ${check.readBack} ids read back`,
      )
    }
    if (opts.expectTiers) {
      const res = await fetch(`${server.url}/v1/admin/segments`)
      const { segments } = (await res.json()) as { segments: Array<{ state: string }> }
      const archived = segments.filter((s) => s.state === 'archived').length
      t.diagnostic(`segments at the end: ${segments.length} (${archived} archived)`)
      assert.ok(archived >= 2, `expected several sealed segments, got ${JSON.stringify(segments.map((s) => s.state))}`)
    }
  } catch (err) {
    if (err instanceof Error) {
      const live = server ? `\n--- live server ---\n${server.logTail()}` : ''
      const dead = logsOfDeadServers.map((l, i) => `\n--- killed server ${i + 1} ---\n${l}`).join('')
      err.message += `\n(seed ${seed}, data dir ${dataDir})${dead}${live}`
    }
    throw err
  }
}

test('no acknowledged event is lost or stored twice across SIGKILL and restart', { timeout: testTimeoutMs }, async (t) => {
  await crashScenario(t)
})

test('the same holds with rollovers and sealing every few hundred milliseconds', { timeout: testTimeoutMs }, async (t) => {
  // 64 KiB segments and a 200 ms age: the kill lands mid-rollover or mid-seal often.
  await crashScenario(t, { serverEnv: { TOKENLEDGER_ROLLOVER_BYTES: '65536', TOKENLEDGER_ROLLOVER_AGE: '200ms', TOKENLEDGER_SEAL_RETRY: '50ms' }, expectTiers: true })
})
