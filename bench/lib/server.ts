// The tokenledger server as the benches run and query it: its child-process spec (tsx
// source, or the built dist/ with BENCH_SERVER_ENTRY=dist), JSON over HTTP with a
// bound, GET /v1/status and the wait for sealing to catch up, and settling an ingest
// ledger (resending what was left unanswered) before its totals are compared.
import { fileURLToPath } from 'node:url'
import { childEnv, startServer, type RunningServer, type ServerSpec } from './child.js'
import type { BatchTotals } from './events.js'
import type { IngestLedger } from './load.js'
import { fail, log } from './report.js'

/** The repository root, resolved from this file's location (bench/lib/ → ../..). */
export const repoRoot = fileURLToPath(new URL('../..', import.meta.url))

/** Start-up over a large store rebuilds the dedupe index from every id: allow for it. */
const largeStoreStartTimeoutMs = 1_800_000
/** The bound on one HTTP request of a bench (a query over a large store included). */
export const httpTimeoutMs = 120_000
const sealWaitMaxMs = 3_600_000
const sealPollMs = 250

/** Server variables every bench sets itself (a data directory, any free port, warn logs). */
export const BENCH_SERVER_ENV_KEYS = ['TOKENLEDGER_DATA_DIR', 'TOKENLEDGER_PORT', 'TOKENLEDGER_HOST', 'TOKENLEDGER_LOG_LEVEL', 'TOKENLEDGER_MAX_INGEST_INFLIGHT_PER_CLIENT'] as const

/**
 * The load generator is one address (and no token) standing in for a fleet of
 * gateways: the per-client in-flight bound, meant to keep one client from
 * holding every slot, would otherwise cap the whole fleet at one client's share.
 */
const FLEET_FROM_ONE_ADDRESS = '100000'

export interface TokenledgerOptions {
  /** More server variables, after the bench's own. */
  env?: Record<string, string>
  /** Node options before the entry point (e.g. profiling flags). */
  nodeArgs?: string[]
  startTimeoutMs?: number
}

/** The child-process spec of a tokenledger server on `dataDir`, on any free port of 127.0.0.1. */
export function tokenledgerSpec(name: string, dataDir: string, o: TokenledgerOptions = {}): ServerSpec {
  return {
    name,
    cwd: repoRoot,
    args: [...(o.nodeArgs ?? []), ...(process.env.BENCH_SERVER_ENTRY === 'dist' ? ['dist/src/server.js'] : ['--import', 'tsx', 'src/server.ts'])],
    env: childEnv({ TOKENLEDGER_DATA_DIR: dataDir, TOKENLEDGER_PORT: '0', TOKENLEDGER_HOST: '127.0.0.1', TOKENLEDGER_LOG_LEVEL: 'warn', TOKENLEDGER_MAX_INGEST_INFLIGHT_PER_CLIENT: FLEET_FROM_ONE_ADDRESS, ...o.env }),
    startTimeoutMs: o.startTimeoutMs ?? largeStoreStartTimeoutMs,
  }
}

/** Starts a tokenledger server on `dataDir` and waits until it is ready. */
export async function startTokenledger(name: string, dataDir: string, o: TokenledgerOptions = {}): Promise<RunningServer> {
  return startServer(tokenledgerSpec(name, dataDir, o))
}

/** The JSON answer of a request that must answer 200 (anything else throws). */
export async function getJson<T>(url: string, init?: RequestInit, timeoutMs = httpTimeoutMs): Promise<T> {
  const res = await fetch(url, { ...init, signal: AbortSignal.timeout(timeoutMs) })
  const text = await res.text()
  if (res.status !== 200) throw new Error(`${init?.method ?? 'GET'} ${url}: ${res.status} ${text.slice(0, 300)}`)
  return JSON.parse(text) as T
}

/** The parts of GET /v1/status the benches read. */
export interface ServerStatus {
  ingest: { indexed_events: number; index_bytes: number; commits: number; committed_events: number }
  tiers: { active: number; pending: number; archived: number; bytes: number; rows: number }
  rollovers: number
  retention: { runs: number; errors: number; segments_deleted: number; bytes_freed: number }
  sealing: { sealed: number; failures: number; backlog: number; failing: unknown[] }
  /** Absent on servers from before the answer cache. */
  answer_cache?: { hits: number; misses: number; entries: number; rows: number }
}

/** Polls /v1/status until nothing is pending or waiting to be sealed; fails (and goes on) while sealing is failing. */
export async function waitSealed(server: RunningServer): Promise<{ ms: number; status: ServerStatus }> {
  const t0 = performance.now()
  for (;;) {
    const st = await getJson<ServerStatus>(`${server.url}/v1/status`)
    if (st.tiers.pending === 0 && st.sealing.backlog === 0) return { ms: performance.now() - t0, status: st }
    if (st.sealing.failing.length > 0) fail(`sealing is failing: ${JSON.stringify(st.sealing.failing).slice(0, 300)}`)
    if (performance.now() - t0 > sealWaitMaxMs) throw new Error('sealing did not finish within the bound')
    await new Promise((r) => setTimeout(r, sealPollMs))
  }
}

/**
 * Resends the ledger's unanswered batches and returns the acknowledged totals, or
 * undefined (a failure) when some batch was only partly stored. With `logResent`, a
 * line says how many batches were resent and how they were answered.
 */
export async function settleLedger(server: RunningServer, ledger: IngestLedger, logResent = false): Promise<BatchTotals | undefined> {
  const resend = await ledger.resendInFlight(server.url)
  for (const f of resend.failures) fail(`resend: ${f}`)
  if (logResent && resend.batches > 0) log(`  resent ${resend.batches} unanswered batches: ${resend.accepted} accepted, ${resend.duplicates} duplicates`)
  const t = ledger.expectedTotals()
  if (t === undefined) fail('some batch was only partly stored')
  return t
}
