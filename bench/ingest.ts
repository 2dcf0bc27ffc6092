// Ingest benchmark (not a test): how many events per second tokenledger's durable ingest
// (POST /v1/events → validation → group commit → DuckDB commit with fsync'd WAL → 200)
// sustains, as a ratio of what a parse-only Fastify endpoint sustains on the same
// machine under the same load, in the same run. Machines are noisy; the ratio is the
// figure to track (target ≥ 0.3, long term ≥ 0.5).
//
// Both servers run as child processes (the load generator must not share their event
// loop) and get the same closed-loop load: autocannon, N connections, each request a
// POST of a B-event `{"events":[…]}` batch with fresh event ids. Each target gets a
// warm-up that is not counted, then the measured phase.
//
// For tokenledger the bench also checks exactly-once ingest: every 2xx answer must say
// `accepted == B`; batches left unanswered when a phase stops are resent verbatim (each
// must come back as accepted or duplicate, never conflict); then `GET /v1/usage` totals
// must equal what was acknowledged (requests, errors, tokens, and the exact cost sum).
// Any mismatch is printed loudly and the exit code is 1.
//
// The OTLP door (target `otlp`): the same events as OTLP/HTTP protobuf exports to
// POST /v1/traces, one GenAI span per event (bench/lib/otlp.ts), against a fresh
// tokenledger in the same run, checked the same way (every export answered without
// partial_success, then exact totals); its events/s are reported as a ratio of the
// native route's (target ≥ 0.7), and their server CPU per event as the same ratio
// inverted (less sensitive to what else the machine runs meanwhile). The OTLP door
// stores more per event than the native bench events carry (54-character
// otel:<trace>:<span> ids, two tags from the mapping), and DuckDB's share grows with
// it: target `otlp-content` posts to the native route events with exactly that stored
// content (bench/lib/events.ts, StoredShape 'otlp'), so OTLP / otlp-content is the
// door's own cost (decode, answer) on the same stored rows.
//
// The server runs from source under tsx unless BENCH_SERVER_ENTRY=dist (npm run
// build first), which runs what ships: tsx's transform (esbuild's keepNames wrappers
// on nested functions, among others) costs the OTLP reader's loops more than JSON's.
//
// Run:   npm run bench:ingest -- --duration 10
// Flags (env in brackets): --duration S [BENCH_DURATION] measured seconds per target, 10
//                          --warmup S [BENCH_WARMUP] uncounted seconds before it, 2
//                          --connections N [BENCH_CONNECTIONS] 32
//                          --batch B [BENCH_BATCH] events per request, 100
//                          --order parse,tokenledger,otlp [BENCH_ORDER] which targets, in order (also otlp-content)
//                          --floor S [BENCH_FLOOR] seconds per phase of the storage floor, 5 (0: skip)
//                          --tail S [BENCH_TAIL] seconds of the open-loop tail phase, 0 (skip); needs tokenledger in --order
//                          --tail-rate N [BENCH_TAIL_RATE] its events/s instead of half of tokenledger's peak (--order none: the tail alone)
//                          BENCH_TAIL_ROLLOVER_AGE the tail server's TOKENLEDGER_ROLLOVER_AGE, 4s
// Then the storage floor (bench/store-floor.ts, a child process): tokenledger's decode
// (parse, validate, fingerprint, encode) and its group-commit append into DuckDB, each
// alone on one thread with no HTTP, as events/s and as ratios of the same parse-only
// ceiling. Every acknowledged event goes through both, so they bound what the end-to-end
// ratio can reach on this machine with one writer.
// Each server target's CPU in the measured phase is also told per thread (/proc): the
// event loop (main), each ingest worker (they name their threads tl-ingest-N) and the
// rest together (DuckDB's threads, libuv's pool, V8's helpers), as % of a core and as
// µs per event: where a door's cost lies, without a profiler's own cost.
// The PostgreSQL peer (target `peer`, bench/peer/postgres.ts on a throwaway cluster from
// bench/peer/pg-server.ts): the Fastify + PostgreSQL service users run today (one
// multi-row INSERT … ON CONFLICT DO NOTHING per request, synchronous commit, a unique id
// and two indexes), under the same load with the same events, checked the same way
// (its GET /v1/usage sums what it stored). Its server CPU includes PostgreSQL's own
// processes. The ratios tokenledger / peer (events/s; CPU per event) are the figures
// issue 25 sets (≥ 3×, ≤ 12 µs of server CPU per event).
// The tail (--tail S, 0 skips it): a fresh tokenledger under an open-loop load at half of
// the peak measured above, with rollovers and seals inside the window (bench/lib/tail.ts);
// target p99 < 25 ms.
// Output: a human-readable report, and as the last line one JSON summary.
// Exit:   0 ok, 1 a correctness mismatch in tokenledger, 2 bad flags or a server failed.
import { randomBytes } from 'node:crypto'
import { mkdtemp, rm } from 'node:fs/promises'
import os from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'
import { childEnv, startServer, threadCpuDelta, type LogStats, type RunningServer, type StopReport } from './lib/child.js'
import { scaled12ToString, toScaled12 } from './lib/decimal.js'
import { BATCH_EVENTS_MAX, BatchFactory, TEMPLATE_COUNT, type BatchTotals } from './lib/events.js'
import { IngestLedger, type PhaseResult, type ResendReport } from './lib/load.js'
import { runTail, type TailReport } from './lib/tail.js'
import { startPgCluster, type PgCluster } from './peer/pg-server.js'
import { OTLP_DOOR, OtlpBatchFactory } from './lib/otlp.js'
import { int, log } from './lib/report.js'
import { BENCH_SERVER_ENV_KEYS, getJson, repoRoot, tokenledgerSpec, type ServerStatus } from './lib/server.js'
import { UsageError, numberOption } from './lib/cli.js'

const parseOnlyServerPath = fileURLToPath(new URL('./parse-only-server.ts', import.meta.url))
const peerServerPath = fileURLToPath(new URL('./peer/postgres.ts', import.meta.url))

/** Issue 25: tokenledger against the PostgreSQL peer. */
const peerRatioTarget = 3
const cpuUsPerEventTarget = 12
const tailP99TargetMs = 25

const ratioTarget = 0.3
const ratioTargetLongTerm = 0.5
/** OTLP protobuf ingest against native ingest, events/s. */
const otlpRatioTarget = 0.7
const serverStartTimeoutMs = 120_000
const usageTimeoutMs = 60_000
const connectionsMax = 1_024
const durationSMax = 3_600

/** Server variables the bench sets itself; any other inherited TOKENLEDGER_* is reported. */
const benchOwnedEnv = new Set<string>(BENCH_SERVER_ENV_KEYS)

type TargetName = 'parse' | 'peer' | 'tokenledger' | 'otlp' | 'otlp-content'
const targetLabels: Record<TargetName, string> = { parse: 'parse-only', peer: 'postgres-peer', tokenledger: 'tokenledger', otlp: 'tokenledger-otlp', 'otlp-content': 'tokenledger-otlp-content' }
const TARGETS = Object.keys(targetLabels) as TargetName[]

interface Options {
  durationS: number
  warmupS: number
  connections: number
  batch: number
  order: TargetName[]
  /** Seconds per phase of the storage floor (0: not measured). */
  floorS: number
  /** Seconds of the open-loop tail phase (0: not measured). */
  tailS: number
  /** Events/s of the tail phase; 0: half of tokenledger's measured peak. */
  tailRate: number
}



function readOptions(): Options {
  const { values } = parseArgs({
    options: {
      duration: { type: 'string' },
      warmup: { type: 'string' },
      connections: { type: 'string' },
      batch: { type: 'string' },
      order: { type: 'string' },
      floor: { type: 'string' },
      tail: { type: 'string' },
      'tail-rate': { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
    strict: true,
  })
  if (values.help === true) {
    process.stdout.write('usage: npm run bench:ingest -- [--duration S] [--warmup S] [--connections N] [--batch B] [--order parse,peer,tokenledger,otlp,otlp-content] [--floor S] [--tail S]\n')
    process.exit(0)
  }
  const orderRaw = values.order ?? process.env['BENCH_ORDER'] ?? 'parse,tokenledger,otlp'
  const order: TargetName[] = []
  for (const part of orderRaw === 'none' ? [] : orderRaw.split(',').map((s) => s.trim())) {
    const name = TARGETS.find((t) => t === (part === 'parse-only' ? 'parse' : part))
    if (name === undefined) throw new UsageError(`--order: unknown target "${part}" (${TARGETS.join(', ')})`)
    if (order.includes(name)) throw new UsageError(`--order: "${name}" given twice`)
    order.push(name)
  }
  return {
    durationS: numberOption('duration', values.duration, 'BENCH_DURATION', 10, 1, durationSMax, false),
    warmupS: numberOption('warmup', values.warmup, 'BENCH_WARMUP', 2, 0, durationSMax, false),
    connections: numberOption('connections', values.connections, 'BENCH_CONNECTIONS', 32, 1, connectionsMax, true),
    batch: numberOption('batch', values.batch, 'BENCH_BATCH', 100, 1, BATCH_EVENTS_MAX, true),
    order,
    floorS: numberOption('floor', values.floor, 'BENCH_FLOOR', 5, 0, durationSMax, false),
    tailS: numberOption('tail', values.tail, 'BENCH_TAIL', 0, 0, durationSMax, false),
    tailRate: numberOption('tail-rate', values['tail-rate'], 'BENCH_TAIL_RATE', 0, 0, 10_000_000, true),
  }
}

// ---------------------------------------------------------------------------- output

const fixed = (n: number, digits: number): string => n.toFixed(digits)

// ---------------------------------------------------------------------------- checks

interface Check {
  what: string
  expected: string
  actual: string
  ok: boolean
}

interface VerifyReport {
  resend: ResendReport
  acknowledgedEvents: number
  usageRequests: string
  checks: Check[]
  problems: string[]
  ok: boolean
}

function toBigInt(v: unknown): bigint | undefined {
  if (typeof v === 'number' && Number.isSafeInteger(v)) return BigInt(v)
  if (typeof v === 'string' && /^\d+$/.test(v)) return BigInt(v)
  return undefined
}

async function verifyStored(server: RunningServer, ledger: IngestLedger): Promise<VerifyReport> {
  const resend = await ledger.resendInFlight(server.url)
  const problems = resend.failures.map((f) => `resend: ${f}`)
  const acknowledgedEvents = ledger.expectedStored
  const checks: Check[] = []

  const toMs = Date.now() + 3_600_000
  const res = await fetch(`${server.url}/v1/usage?from=0&to=${toMs}`, { signal: AbortSignal.timeout(usageTimeoutMs) })
  const text = await res.text()
  let totals: Record<string, unknown> | undefined
  if (res.status === 200) {
    const parsed = JSON.parse(text) as { totals?: unknown }
    if (parsed.totals !== null && typeof parsed.totals === 'object') totals = parsed.totals as Record<string, unknown>
  }
  if (totals === undefined) {
    problems.push(`GET /v1/usage answered ${res.status} without totals: ${text.slice(0, 300)}`)
    return { resend, acknowledgedEvents, usageRequests: 'n/a', checks, problems, ok: false }
  }

  const usageRequests = toBigInt(totals['requests'])
  checks.push({
    what: 'totals.requests',
    expected: String(acknowledgedEvents),
    actual: String(totals['requests']),
    ok: usageRequests === BigInt(acknowledgedEvents),
  })

  const expected: BatchTotals | undefined = ledger.expectedTotals()
  if (expected === undefined) {
    problems.push('some batches were only partly stored: token and cost sums not checked')
  } else {
    const intChecks: [string, bigint][] = [
      ['errors', BigInt(expected.errors)],
      ['input_tokens', expected.inputTokens],
      ['output_tokens', expected.outputTokens],
      ['cache_read_tokens', expected.cacheReadTokens],
      ['reasoning_tokens', expected.reasoningTokens],
    ]
    for (const [field, want] of intChecks) {
      checks.push({ what: `totals.${field}`, expected: String(want), actual: String(totals[field]), ok: toBigInt(totals[field]) === want })
    }
    const wantCost = expected.costMicros * 10n ** 6n
    checks.push({
      what: 'totals.cost',
      expected: scaled12ToString(wantCost),
      actual: String(totals['cost']),
      ok: toScaled12(totals['cost']) === wantCost,
    })
  }
  const ok = problems.length === 0 && checks.every((c) => c.ok)
  return { resend, acknowledgedEvents, usageRequests: String(totals['requests']), checks, problems, ok }
}

// ---------------------------------------------------------------------------- targets

interface TargetReport {
  name: TargetName
  label: string
  listeningMs: number
  readyMs: number
  measured: PhaseResult
  eventsPerS: number
  requestsPerS: number
  serverCpuPct: number | undefined
  /** The server's CPU in the measured phase by thread (main, each ingest worker, the rest), as % of one core. */
  serverThreads: Array<{ name: string; cpuPct: number }> | undefined
  generatorCpuPct: number
  buildUsPerRequest: number
  crashed: boolean
  logs: LogStats
  stop: StopReport
  verify: VerifyReport | undefined
  /** Mean events per group commit in the measured phase (tokenledger only). */
  meanCommitEvents: number | undefined
}

function printPhase(label: string, phase: string, r: PhaseResult, batch: number): void {
  const res = r.result
  const s = r.stats
  const evps = (res['2xx'] * batch) / res.duration
  log(
    `[${label}] ${phase}: ${int(evps)} events/s, ${int(res['2xx'] / res.duration)} req/s, ` +
      `p50 ${res.latency.p50} ms, p99 ${res.latency.p99} ms, non-2xx ${res.non2xx}, errors ${res.errors} ` +
      `(timeouts ${res.timeouts}), accepted≠batch ${s.mismatches}`,
  )
  const statuses = Object.entries(s.non2xxByStatus)
  if (statuses.length > 0) log(`[${label}]   non-2xx by status: ${statuses.map(([k, v]) => `${k}×${v}`).join(', ')}`)
  for (const sample of s.non2xxSamples) log(`[${label}]   non-2xx sample: ${sample}`)
  for (const sample of s.mismatchSamples) log(`[${label}]   MISMATCH sample: ${sample}`)
}

async function runTarget(name: TargetName, opts: Options, runId: string): Promise<TargetReport> {
  const label = targetLabels[name]
  const dataDir = name !== 'parse' && name !== 'peer' ? await mkdtemp(join(os.tmpdir(), 'tokenledger-bench-')) : undefined
  let cluster: PgCluster | undefined
  try {
    if (name === 'peer') {
      cluster = startPgCluster(log)
      log(`[${label}] PostgreSQL postmaster pid ${cluster.postmasterPid}, socket in ${cluster.socketDir}`)
    }
    const spec =
      cluster !== undefined
        ? {
            name: label,
            cwd: repoRoot,
            args: ['--import', 'tsx', peerServerPath],
            env: childEnv({ BENCH_PG_SOCKET: cluster.socketDir, BENCH_PG_PORT: String(cluster.port), BENCH_PG_USER: cluster.user, BENCH_PG_DATABASE: cluster.database }),
            startTimeoutMs: serverStartTimeoutMs,
          }
        : dataDir === undefined
        ? { name: label, cwd: repoRoot, args: ['--import', 'tsx', parseOnlyServerPath], env: childEnv({}), startTimeoutMs: serverStartTimeoutMs }
        : // BENCH_SERVER_NODE_ARGS (e.g. "--cpu-prof --cpu-prof-dir=/tmp/prof") profiles the server.
          // BENCH_SERVER_ENTRY=dist runs the compiled server (npm run build first): exact line numbers in profiles.
          tokenledgerSpec(label, dataDir, {
            nodeArgs: (process.env.BENCH_SERVER_NODE_ARGS ?? '').split(' ').filter(Boolean),
            startTimeoutMs: serverStartTimeoutMs,
          })
    if (dataDir !== undefined) {
      const inherited = Object.keys(process.env).filter((k) => k.startsWith('TOKENLEDGER_') && !benchOwnedEnv.has(k))
      if (inherited.length > 0) log(`[${label}] inherited server env: ${inherited.join(', ')}`)
    }

    const node = await startServer(spec)
    const pgCpu = cluster?.cpuSeconds
    // The peer's server is its node process and PostgreSQL's processes together.
    const server: RunningServer =
      pgCpu === undefined
        ? node
        : {
            ...node,
            cpuSeconds: () => {
              const a = node.cpuSeconds()
              const b = pgCpu()
              return a === undefined || b === undefined ? undefined : a + b
            },
            threadCpuSeconds: () => {
              const t = node.threadCpuSeconds()
              const b = pgCpu()
              return t === undefined || b === undefined ? undefined : [...t, { tid: -1, name: 'postgres', cpuS: b }]
            },
          }
    log(`[${label}] pid ${server.pid} at ${server.url}: listening after ${int(server.listeningMs)} ms, /readyz 200 after ${int(server.readyMs)} ms`)

    const events = new BatchFactory(`${runId}${name === 'parse' ? 'p' : name === 'peer' ? 'g' : name === 'otlp' ? 'o' : name === 'otlp-content' ? 'c' : 't'}`, opts.batch, name === 'otlp-content' ? 'otlp' : 'native')
    const ledger = name === 'otlp' ? new IngestLedger(new OtlpBatchFactory(events, TEMPLATE_COUNT), TEMPLATE_COUNT, {}, OTLP_DOOR) : new IngestLedger(events, TEMPLATE_COUNT)
    let stop: StopReport | undefined
    try {
      if (opts.warmupS > 0) printPhase(label, `warm-up ${opts.warmupS} s`, await ledger.run(server.url, opts.connections, opts.warmupS), opts.batch)
      const commitsOf = async () => (name !== 'parse' && name !== 'peer' ? (await getJson<ServerStatus>(`${server.url}/v1/status`)).ingest : undefined)
      const before = await commitsOf()
      const cpu0 = server.cpuSeconds()
      const threads0 = server.threadCpuSeconds()
      const measured = await ledger.run(server.url, opts.connections, opts.durationS)
      const cpu1 = server.cpuSeconds()
      const threads1 = server.threadCpuSeconds()
      printPhase(label, `measured ${opts.durationS} s`, measured, opts.batch)
      const after = await commitsOf()
      let meanCommitEvents: number | undefined
      if (before && after) {
        const commits = after.commits - before.commits
        meanCommitEvents = (after.committed_events - before.committed_events) / Math.max(1, commits)
        log(`[${label}] group commits ${int(commits)}, ${int(meanCommitEvents)} events each on average`)
      }
      const crashed = server.exited()

      let verify: VerifyReport | undefined
      if (name !== 'parse' && !crashed) {
        verify = await verifyStored(server, ledger)
      } else {
        ledger.dropInFlight()
      }
      stop = await server.stop()

      const res = measured.result
      const builtN = Math.max(1, measured.stats.built)
      return {
        name,
        label,
        listeningMs: server.listeningMs,
        readyMs: server.readyMs,
        measured,
        eventsPerS: (res['2xx'] * opts.batch) / res.duration,
        requestsPerS: res['2xx'] / res.duration,
        serverCpuPct: cpu0 === undefined || cpu1 === undefined ? undefined : ((cpu1 - cpu0) / res.duration) * 100,
        serverThreads:
          threads0 === undefined || threads1 === undefined
            ? undefined
            : threadCpuDelta(server.pid, threads0, threads1).map((t) => ({ name: t.name, cpuPct: (t.cpuS / res.duration) * 100 })),
        generatorCpuPct: (measured.generatorCpuS / res.duration) * 100,
        buildUsPerRequest: (measured.stats.buildMs * 1000) / builtN,
        crashed,
        logs: server.logs,
        stop,
        verify,
        meanCommitEvents,
      }
    } finally {
      if (stop === undefined) await server.stop()
    }
  } finally {
    cluster?.stop()
    if (dataDir !== undefined) await rm(dataDir, { recursive: true, force: true })
  }
}

// ---------------------------------------------------------------------------- storage floor

const storeFloorPath = fileURLToPath(new URL('./store-floor.ts', import.meta.url))
const floorTimeoutMs = 120_000

interface FloorReport {
  group_events: number
  decode_events_per_s: number
  decode_cpu_us_per_event: number
  append_events_per_s: number
  append_cpu_us_per_event: number
}

/** Runs bench/store-floor.ts as a child (nothing else shares its threads) and returns its figures. */
async function runFloor(opts: Options, groupEvents: number): Promise<FloorReport> {
  const { execFile } = await import('node:child_process')
  const env = childEnv({
    BENCH_FLOOR_DURATION: String(opts.floorS),
    BENCH_FLOOR_GROUP: String(Math.max(opts.batch, Math.round(groupEvents))),
    BENCH_FLOOR_BATCH: String(opts.batch),
  })
  const stdout = await new Promise<string>((resolve, reject) => {
    execFile(process.execPath, ['--import', 'tsx', storeFloorPath], { cwd: repoRoot, env, timeout: floorTimeoutMs + opts.floorS * 4000, maxBuffer: 1024 * 1024 }, (err, out, errOut) => {
      if (err) reject(new Error(`store floor failed: ${err.message} ${String(errOut).slice(0, 500)}`))
      else resolve(String(out))
    })
  })
  const line = stdout.split('\n').find((l) => l.includes('"event":"floor"'))
  if (line === undefined) throw new Error(`store floor printed no figures: ${stdout.slice(0, 500)}`)
  return JSON.parse(line) as FloorReport
}

// ---------------------------------------------------------------------------- report

function printVerify(v: VerifyReport, label: string): void {
  log(
    `[${label}] resent ${v.resend.batches} unanswered batches: accepted ${v.resend.accepted}, ` +
      `duplicates ${v.resend.duplicates}, failures ${v.resend.failures.length}`,
  )
  for (const c of v.checks) {
    log(`[${label}] ${c.ok ? 'ok      ' : 'MISMATCH'} GET /v1/usage ${c.what} = ${c.actual}, acknowledged ${c.expected}`)
  }
  for (const p of v.problems) log(`[${label}] PROBLEM ${p}`)
  if (!v.ok) {
    log()
    log('!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!')
    log('!!! MISMATCH: what tokenledger stores differs from what it acknowledged      !!!')
    log('!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!')
  }
}

function printTable(reports: TargetReport[]): void {
  const header = ['target', 'events/s', 'req/s', 'p50 ms', 'p99 ms', 'non-2xx', 'errors', 'acc≠batch', 'server CPU', 'gen CPU']
  const rows = reports.map((r) => {
    const res = r.measured.result
    return [
      r.label,
      int(r.eventsPerS),
      int(r.requestsPerS),
      String(res.latency.p50),
      String(res.latency.p99),
      String(res.non2xx),
      String(res.errors),
      String(r.measured.stats.mismatches),
      r.serverCpuPct === undefined ? 'n/a' : `${fixed(r.serverCpuPct, 0)}%`,
      `${fixed(r.generatorCpuPct, 0)}%`,
    ]
  })
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((row) => (row[i] ?? '').length)))
  const fmt = (cells: string[]): string => cells.map((c, i) => (i === 0 ? c.padEnd(widths[i] ?? 0) : c.padStart(widths[i] ?? 0))).join('  ')
  log(fmt(header))
  for (const row of rows) log(fmt(row))
}

function summaryOf(r: TargetReport): Record<string, unknown> {
  const res = r.measured.result
  return {
    events_per_s: Math.round(r.eventsPerS),
    requests_per_s: Math.round(r.requestsPerS),
    p50_ms: res.latency.p50,
    p99_ms: res.latency.p99,
    non2xx: res.non2xx,
    errors: res.errors,
    timeouts: res.timeouts,
    accepted_mismatches: r.measured.stats.mismatches,
    ready_ms: Math.round(r.readyMs),
    server_cpu_pct: r.serverCpuPct === undefined ? null : Math.round(r.serverCpuPct),
    server_cpu_us_per_event: r.serverCpuPct === undefined || r.eventsPerS <= 0 ? null : Number(fixed((r.serverCpuPct * 1e4) / r.eventsPerS, 1)),
    server_threads_cpu_pct: r.serverThreads === undefined ? null : Object.fromEntries(r.serverThreads.map((t) => [t.name, Math.round(t.cpuPct)])),
    generator_cpu_pct: Math.round(r.generatorCpuPct),
    warn_log_lines: r.logs.warnLines,
    error_log_lines: r.logs.errorLines + r.logs.stderrLines,
    stop_ms: Math.round(r.stop.stopMs),
    ...(r.verify === undefined
      ? {}
      : {
          acknowledged_events: r.verify.acknowledgedEvents,
          usage_requests: r.verify.usageRequests,
          verified: r.verify.ok,
        }),
  }
}

async function main(): Promise<number> {
  let opts: Options
  try {
    opts = readOptions()
  } catch (err) {
    if (err instanceof UsageError || (err instanceof Error && 'code' in err && String(err.code).startsWith('ERR_PARSE_ARGS'))) {
      process.stderr.write(`bench:ingest: ${err.message}\n`)
      return 2
    }
    throw err
  }
  const runId = `${Date.now().toString(36)}${randomBytes(3).toString('hex')}`
  const cpus = os.cpus()
  log(`tokenledger ingest bench, run ${runId}`)
  log(
    `machine: ${cpus.length} CPUs (${cpus[0]?.model.trim() ?? 'unknown'}), ${fixed(os.totalmem() / 2 ** 30, 1)} GiB RAM, ` +
      `node ${process.version}, ${process.platform} ${process.arch}, load avg ${os.loadavg().map((l) => fixed(l, 2)).join(' ')}`,
  )
  log(
    `load: autocannon closed loop, ${opts.connections} connections, ${opts.batch} events per request (fresh ids), ` +
      `${opts.warmupS} s warm-up + ${opts.durationS} s measured per target, order ${opts.order.map((n) => targetLabels[n]).join(' → ')}`,
  )
  log()

  const reports: TargetReport[] = []
  for (const name of opts.order) {
    try {
      const report = await runTarget(name, opts, runId)
      reports.push(report)
      if (report.verify !== undefined) printVerify(report.verify, report.label)
      if (report.crashed) log(`[${report.label}] PROBLEM: the server exited during the run`)
      const l = report.logs
      if (l.warnLines + l.errorLines + l.stderrLines > 0) {
        log(`[${report.label}] server log: ${l.warnLines} warn, ${l.errorLines} error/fatal, ${l.stderrLines} stderr lines`)
        for (const s of l.samples) log(`[${report.label}]   ${s}`)
      }
      if (report.serverThreads !== undefined) {
        const evps = Math.max(1, report.eventsPerS)
        const parts = report.serverThreads.map((t) => `${t.name} ${fixed(t.cpuPct, 0)}% (${fixed((t.cpuPct * 1e4) / evps, 1)} µs/event)`)
        log(`[${report.label}] server CPU by thread, measured phase: ${parts.join(', ')}`)
      }
      log(
        `[${report.label}] stopped in ${int(report.stop.stopMs)} ms (code ${report.stop.code}, signal ${report.stop.signal}` +
          `${report.stop.forced ? ', SIGKILL needed' : ''}); body build ${fixed(report.buildUsPerRequest, 1)} µs/request`,
      )
      log()
    } catch (err) {
      process.stderr.write(`bench:ingest: ${targetLabels[name]} failed: ${err instanceof Error ? err.message : String(err)}\n`)
      return 2
    }
  }

  log('results (measured phase)')
  printTable(reports)
  log()

  const parse = reports.find((r) => r.name === 'parse')
  const ledger = reports.find((r) => r.name === 'tokenledger')
  const ratio = parse !== undefined && ledger !== undefined && parse.eventsPerS > 0 ? ledger.eventsPerS / parse.eventsPerS : undefined
  if (ratio !== undefined) {
    const verdict = ratio >= ratioTarget ? 'MET' : 'BELOW TARGET'
    const longTerm = ratio >= ratioTargetLongTerm ? 'met' : 'not yet'
    log(`ratio tokenledger / parse-only events/s = ${fixed(ratio, 3)}: target ≥ ${ratioTarget} ${verdict}; long-term ≥ ${ratioTargetLongTerm} ${longTerm}`)
  }
  const peer = reports.find((r) => r.name === 'peer')
  const cpuUs = (r: TargetReport | undefined): number | undefined => (r?.serverCpuPct === undefined || r.eventsPerS <= 0 ? undefined : (r.serverCpuPct * 1e4) / r.eventsPerS)
  for (const r of [parse, peer, ledger]) {
    if (r === undefined) continue
    const us = cpuUs(r)
    log(`${r.label.padEnd(14)} ${int(r.eventsPerS).padStart(8)} events/s  p50 ${r.measured.result.latency.p50} ms  p99 ${r.measured.result.latency.p99} ms  server CPU ${us === undefined ? 'n/a' : fixed(us, 1)} µs/event`)
  }
  const peerRatio = peer !== undefined && ledger !== undefined && peer.eventsPerS > 0 ? ledger.eventsPerS / peer.eventsPerS : undefined
  const ledgerCpu = cpuUs(ledger)
  const peerCpu = cpuUs(peer)
  const peerCpuRatio = ledgerCpu !== undefined && peerCpu !== undefined && ledgerCpu > 0 ? peerCpu / ledgerCpu : undefined
  if (peerRatio !== undefined) {
    log(`ratio tokenledger / postgres-peer events/s = ${fixed(peerRatio, 2)}×: target ≥ ${peerRatioTarget}× ${peerRatio >= peerRatioTarget ? 'MET' : 'BELOW TARGET'}`)
  }
  if (peerCpuRatio !== undefined && ledgerCpu !== undefined) {
    log(
      `server CPU per event: postgres-peer / tokenledger = ${fixed(peerCpuRatio, 2)}× (tokenledger ${fixed(ledgerCpu, 1)} µs/event: target ≤ ${cpuUsPerEventTarget} µs ` +
        `${ledgerCpu <= cpuUsPerEventTarget ? 'MET' : 'NOT MET'})`,
    )
  }
  let tail: TailReport | undefined
  if (opts.tailS > 0) {
    if (opts.tailRate === 0 && (ledger === undefined || ledger.eventsPerS <= 0)) {
      process.stderr.write('bench:ingest: --tail needs tokenledger in --order (its peak sets the rate)\n')
      return 2
    }
    log()
    try {
      tail = await runTail({
        runId,
        eventsPerS: opts.tailRate > 0 ? opts.tailRate : Math.round((ledger?.eventsPerS ?? 0) / 2),
        batch: opts.batch,
        warmupS: opts.warmupS,
        durationS: opts.tailS,
        rolloverAge: process.env['BENCH_TAIL_ROLLOVER_AGE'] ?? '4s',
        startTimeoutMs: serverStartTimeoutMs,
        verify: async (server, l) => {
          const v = await verifyStored(server, l)
          printVerify(v, 'tail')
          return v
        },
      })
    } catch (err) {
      process.stderr.write(`bench:ingest: tail failed: ${err instanceof Error ? err.message : String(err)}\n`)
      return 2
    }
    log(`tail p99 at half of peak = ${fixed(tail.p99Ms, 1)} ms: target < ${tailP99TargetMs} ms ${tail.p99Ms < tailP99TargetMs ? 'MET' : 'NOT MET'}${tail.windowOk ? '' : ' (no rollover and seal in the window: not the figure asked for)'}`)
  }
  const otlp = reports.find((r) => r.name === 'otlp')
  const otlpRatio = otlp !== undefined && ledger !== undefined && ledger.eventsPerS > 0 ? otlp.eventsPerS / ledger.eventsPerS : undefined
  if (otlpRatio !== undefined) {
    log(`ratio OTLP protobuf / native events/s = ${fixed(otlpRatio, 3)}: target ≥ ${otlpRatioTarget} ${otlpRatio >= otlpRatioTarget ? 'MET' : 'BELOW TARGET'}`)
  }
  const cpuPerEvent = (r: TargetReport | undefined): number | undefined => (r?.serverCpuPct === undefined || r.eventsPerS <= 0 ? undefined : (r.serverCpuPct * 1e4) / r.eventsPerS)
  const otlpCpu = cpuPerEvent(otlp)
  const otlpCpuRatio = otlpCpu !== undefined && cpuPerEvent(ledger) !== undefined ? cpuPerEvent(ledger)! / otlpCpu : undefined
  if (otlpCpuRatio !== undefined) log(`ratio native / OTLP server CPU µs per event = ${fixed(otlpCpuRatio, 3)} (what the events/s ratio would be on a machine shared by nothing else)`)
  const content = reports.find((r) => r.name === 'otlp-content')
  const contentRatio = otlp !== undefined && content !== undefined && content.eventsPerS > 0 ? otlp.eventsPerS / content.eventsPerS : undefined
  if (contentRatio !== undefined) {
    const contentCpu = cpuPerEvent(content)
    log(
      `ratio OTLP protobuf / native with the OTLP door's stored content events/s = ${fixed(contentRatio, 3)}` +
        `${contentCpu !== undefined && otlpCpu !== undefined ? `, server CPU ${fixed(contentCpu / otlpCpu, 3)}` : ''} (the door's own cost: decode and answer, same rows stored)`,
    )
  }
  let floor: FloorReport | undefined
  if (opts.floorS > 0) {
    try {
      floor = await runFloor(opts, ledger?.meanCommitEvents ?? 1000)
      const of = (evps: number): string => (parse !== undefined && parse.eventsPerS > 0 ? `, ${fixed(evps / parse.eventsPerS, 3)} of parse-only` : '')
      log()
      log(`storage floor (bench/store-floor.ts: no HTTP, no dedupe, one thread each, ${opts.floorS} s per phase)`)
      log(`  decode (parse, validate, fingerprint, encode): ${int(floor.decode_events_per_s)} events/s, ${fixed(floor.decode_cpu_us_per_event, 2)} µs CPU/event${of(floor.decode_events_per_s)}`)
      log(
        `  append (group commit into DuckDB, ${int(floor.group_events)} events a commit): ${int(floor.append_events_per_s)} events/s, ` +
          `${fixed(floor.append_cpu_us_per_event, 2)} µs CPU/event${of(floor.append_events_per_s)}`,
      )
      if (ledger !== undefined && ledger.eventsPerS > 0) {
        log(`  tokenledger end to end reached ${fixed(ledger.eventsPerS / floor.append_events_per_s, 2)} of the append floor`)
      }
    } catch (err) {
      process.stderr.write(`bench:ingest: ${err instanceof Error ? err.message : String(err)}\n`)
      return 2
    }
  }
  if (parse !== undefined && parse.generatorCpuPct > 90) {
    log(`note: the load generator used ${fixed(parse.generatorCpuPct, 0)}% of a core against parse-only; the ceiling may be generator-bound`)
  }

  const correct =
    reports.every((r) => !r.crashed && (r.verify === undefined || r.verify.ok) && (r.name === 'parse' || r.measured.stats.mismatches === 0)) &&
    (tail === undefined || (tail.verified && tail.windowOk))
  if (!correct) log('RESULT: MISMATCH or crash in tokenledger (see above)')

  const summary: Record<string, unknown> = {
    bench: 'ingest',
    run: runId,
    node: process.version,
    cpus: cpus.length,
    connections: opts.connections,
    batch: opts.batch,
    duration_s: opts.durationS,
    warmup_s: opts.warmupS,
    order: opts.order,
  }
  for (const r of reports) summary[r.name] = summaryOf(r)
  if (floor !== undefined) summary['floor'] = floor
  summary['ratio'] = ratio === undefined ? null : Number(fixed(ratio, 3))
  summary['target'] = ratioTarget
  summary['target_met'] = ratio === undefined ? null : ratio >= ratioTarget
  summary['otlp_ratio'] = otlpRatio === undefined ? null : Number(fixed(otlpRatio, 3))
  summary['otlp_target'] = otlpRatioTarget
  summary['otlp_target_met'] = otlpRatio === undefined ? null : otlpRatio >= otlpRatioTarget
  summary['otlp_cpu_ratio'] = otlpCpuRatio === undefined ? null : Number(fixed(otlpCpuRatio, 3))
  summary['otlp_content_ratio'] = contentRatio === undefined ? null : Number(fixed(contentRatio, 3))
  summary['long_term_target'] = ratioTargetLongTerm
  summary['peer_ratio'] = peerRatio === undefined ? null : Number(fixed(peerRatio, 3))
  summary['peer_cpu_ratio'] = peerCpuRatio === undefined ? null : Number(fixed(peerCpuRatio, 3))
  if (tail !== undefined) summary['tail'] = tail
  summary['correct'] = correct
  log(JSON.stringify(summary))
  return correct ? 0 : 1
}

process.exitCode = await main()
