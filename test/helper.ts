// Builds the real app (real DuckDB store in a fresh temp dir) for app.inject
// tests, and removes everything when the test ends.

import assert from 'node:assert/strict'
import { mkdtemp, readdir, rm } from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import type { TestContext } from 'node:test'
import type { FastifyInstance } from 'fastify'
import { pino } from 'pino'
import { buildApp } from '../src/app.js'
import { ManualClock } from '../src/clock.js'
import { loadConfig, type Config } from '../src/config.js'
import type { FileSystem } from '../src/store/fsops.js'
import type { StoreHooks } from '../src/store/options.js'
import { CALM_PRESSURE_ENV } from './support/calm.js'

/** Noon on the day the suite was written: fixed so timestamps in tests are stable. */
export const T0 = Date.parse('2026-11-24T12:00:00Z')

export interface Built {
  app: FastifyInstance
  clock: ManualClock
  dataDir: string
  /** Closes the app and builds a new one on the same data dir (a clean restart). */
  restart(): Promise<FastifyInstance>
  /** Closes the app (a later restart() builds the new one without closing it again). */
  stop(): Promise<void>
}

export interface BuildOptions {
  /** The store's file-system seam. */
  fs?: FileSystem
  /** Adjusts the loaded configuration (for values no environment variable may take). */
  configure?: (config: Config) => void
}

export async function build(t: TestContext, env: Record<string, string> = {}, hooks?: StoreHooks, options: BuildOptions = {}): Promise<Built> {
  const dataDir = await mkdtemp(path.join(os.tmpdir(), 'tl-test-'))
  const clock = new ManualClock(T0)
  const config = loadConfig({ TOKENLEDGER_DATA_DIR: dataDir, ...CALM_PRESSURE_ENV, ...env })
  options.configure?.(config)
  const make = () => buildApp({ config, clock, storeHooks: hooks, ...(options.fs ? { fs: options.fs } : {}) }, pino({ level: 'silent' }))
  let stopped = false
  const built: Built = {
    app: await make(),
    clock,
    dataDir,
    async restart() {
      if (!stopped) await built.app.close()
      stopped = false
      built.app = await make()
      return built.app
    },
    async stop() {
      stopped = true
      await built.app.close()
    },
  }
  t.after(async () => {
    if (!stopped) await built.app.close()
    await rm(dataDir, { recursive: true, force: true })
  })
  return built
}

let seq = 0
/** A valid event with a fresh id; override any field. */
export function event(over: Record<string, unknown> = {}): Record<string, unknown> {
  seq++
  return {
    event_id: `evt-${process.pid}-${seq}`,
    timestamp: T0 - 60_000,
    key_id: 'key_a',
    provider: 'openai',
    model: 'gpt-4o-mini',
    status_code: 200,
    input_tokens: 100,
    output_tokens: 20,
    cost: '0.001',
    ...over,
  }
}

export async function post(app: FastifyInstance, events: unknown, query = '') {
  const res = await app.inject({ method: 'POST', url: `/v1/events${query}`, payload: events as object })
  return { status: res.statusCode, body: res.json() as IngestBody, headers: res.headers }
}

export interface IngestBody {
  accepted: number
  duplicates: number
  conflicts: number
  rejected: number
  results: Array<{ index: number; event_id: string | null; status: string; errors?: Array<{ field: string; message: string }> }>
}

export async function totals(app: FastifyInstance, query = '') {
  const res = await app.inject({ method: 'GET', url: `/v1/usage?from=0&to=${T0 + 3_600_000}${query ? `&${query}` : ''}` })
  if (res.statusCode !== 200) throw new Error(`usage answered ${res.statusCode}: ${res.body}`)
  return (res.json() as { totals: Record<string, unknown> }).totals
}

/** A latch a hook can wait on: the hook calls `reached()` then awaits `opened`; the test awaits `arrived`, then calls `open()`. */
export function latch() {
  let open!: () => void
  const opened = new Promise<void>((resolve) => (open = resolve))
  let reached!: () => void
  const arrived = new Promise<void>((resolve) => (reached = resolve))
  return { open, opened, reached, arrived }
}

/** GET /v1/admin/segments. */
export async function segments(app: FastifyInstance) {
  const res = await app.inject({ url: '/v1/admin/segments' })
  assert.equal(res.statusCode, 200, res.body)
  return (res.json() as { segments: Array<{ id: number; state: string; row_count: number; seal?: { attempts: number; last_error: string | null } }> }).segments
}

/** POST /v1/admin/rollover. */
export async function rollover(app: FastifyInstance) {
  const res = await app.inject({ method: 'POST', url: '/v1/admin/rollover' })
  assert.equal(res.statusCode, 200, res.body)
  return res.json() as { rolled: boolean; segment_id: number | null; gate_held_ms: number }
}

/** Files per tier directory, for checking catalog <-> files agreement. */
export async function filesIn(dataDir: string): Promise<Record<'active' | 'pending' | 'archive' | 'orphaned', string[]>> {
  const list = async (tier: string) => (await readdir(path.join(dataDir, tier))).sort()
  return { active: await list('active'), pending: await list('pending'), archive: await list('archive'), orphaned: await list('orphaned') }
}

/** tokenledger_ingest_events_total of `source` by outcome, read from GET /metrics. */
export async function ingestOutcomes(app: FastifyInstance, source: string, headers: Record<string, string> = {}): Promise<Record<string, number>> {
  const res = await app.inject({ url: '/metrics', headers })
  assert.equal(res.statusCode, 200, res.body)
  const out: Record<string, number> = {}
  for (const outcome of ['accepted', 'duplicate', 'conflict', 'rejected', 'refused']) {
    const line = new RegExp(`^tokenledger_ingest_events_total\\{source="${source}",outcome="${outcome}"\\} (\\d+)$`, 'm').exec(res.body)
    assert.ok(line, `/metrics has no tokenledger_ingest_events_total{source="${source}",outcome="${outcome}"}`)
    out[outcome] = Number(line[1])
  }
  return out
}
