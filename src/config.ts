// Configuration: every knob in one place, read from TOKENLEDGER_* environment
// variables and validated before anything starts. A bad value is a ConfigError
// naming the variable and what it allows; server.ts prints it and exits non-zero.
//
// Durations are written `500ms`, `30s`, `15m`, `36h`, `30d`; sizes `512KiB`,
// `64MiB`, `1GiB` (or plain bytes). Every limit of the service has its named
// default here, so there is exactly one place to read what the bounds are.

import os from 'node:os'
import path from 'node:path'
import v8 from 'node:v8'
import type { OtlpMapping } from './ingest/otlp.js'
import { PRICING_MODES, type PricingMode } from './pricing/apply.js'
import { closest } from './closest.js'
import { STORE_DEFAULTS as D } from './store/options.js'

export interface Config {
  dataDir: string
  host: string
  port: number
  logLevel: 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace' | 'silent'
  /** Raw events older than this are not accepted, are invisible to queries, and are deleted by retention. */
  eventRetentionMs: number
  /** Detail payloads older than this are invisible and deleted (at most eventRetentionMs). */
  detailRetentionMs: number
  /** 15-minute rollups older than this are deleted (at least eventRetentionMs): billing totals outlive raw events. */
  rollupRetentionMs: number
  /** How often the retention scheduler runs; 0 (`off`): never on its own (POST /v1/admin/retention still runs it). */
  retentionIntervalMs: number
  /** How often the light verify runs (GET /v1/admin/verify on the last verifyWindowMs; mismatches logged and counted); 0 (`off`, the default): never on its own. */
  verifyIntervalMs: number
  verifyWindowMs: number
  /** How far in the future an event timestamp may lie. */
  maxFutureSkewMs: number
  /** Most events in one POST. */
  maxBatchEvents: number
  /** Most bytes in one request body, after gzip decoding. */
  maxBodyBytes: number
  /** Events waiting for a commit before ingest answers 503. */
  maxQueueEvents: number
  /** Body bytes of requests waiting for a commit before ingest answers 503. */
  maxQueueBytes: number
  /** Most events written by one group commit. */
  maxCommitEvents: number
  /** Longest an append may wait for the write gate before it is answered 503. */
  gateWaitMs: number
  /** Seconds sent in Retry-After with a 503. */
  retryAfterSeconds: number
  /** Concurrent read queries against the store. */
  maxConcurrentQueries: number
  /** Longest one read of the store may run before DuckDB is interrupted and the query answered 503. */
  queryTimeoutMs: number
  /** Rows of catalog answers (rollups of archived segments) kept for repeated questions; 0 keeps none. */
  queryCacheRows: number
  /** Most events one export may hold (400 past it). */
  exportMaxEvents: number
  /** Longest DuckDB may take to write one Parquet export. */
  exportTimeoutMs: number
  /** Fastify request timeout (a slow-loris bound). */
  requestTimeoutMs: number
  /** Time allowed for draining on SIGTERM before the process gives up. */
  shutdownGraceMs: number
  /** DuckDB memory limit for the store, e.g. `2GiB`. */
  duckdbMemoryBytes: number
  /** DuckDB worker threads. */
  duckdbThreads: number
  /** Worker threads that parse, validate and encode ingest bodies; 0: the event loop does it. */
  ingestWorkers: number
  /** Roll the active segment over when its file plus WAL reach this size. */
  rolloverBytes: number
  /** ...or when its first event is this old (so a quiet node still seals). */
  rolloverAgeMs: number
  /** First delay before a failed seal is retried; doubles up to sealRetryMaxMs. */
  sealRetryMs: number
  sealRetryMaxMs: number
  /** Bearer tokens per scope. All empty: auth is off, which is allowed only on a loopback host. */
  auth: AuthTokens
  /** Requests per token (per client address without a token) per rateLimitWindowMs; 0: no rate limit. */
  rateLimitMax: number
  rateLimitWindowMs: number
  /** Largest request head (request line and headers) Node accepts; past it, 431. */
  maxHeaderBytes: number
  /** Open client connections; past it Node closes new ones at once (file descriptors are finite). */
  maxConnections: number
  /** Ingest is refused (503) and /readyz unready while the data directory's file system has less free space than this. */
  minFreeDiskBytes: number
  /** Ingest requests being read, validated, queued or committed at once; past it 503 before the body is read. */
  maxIngestInflight: number
  /**
   * Body bytes those requests may hold at once, each charged its Content-Length
   * (maxBodyBytes when it has none or is compressed); past it 503 before the body
   * is read. Default: maxQueueBytes.
   */
  maxIngestInflightBytes: number
  /** Of those requests, from one client (its token and address; its address alone without auth); past it 429. Default: all but an eighth of maxIngestInflight. */
  maxIngestInflightPerClient: number
  /** Of those bytes, from one client; past it 429. Default: all but an eighth of maxIngestInflightBytes. */
  maxIngestInflightBytesPerClient: number
  /** Slowest an ingest body may arrive once bodyGraceMs have passed, in bytes per second on the wire; slower is cut off with 408. 0: no minimum. */
  minBodyBytesPerSec: number
  /** How long an ingest body may take before its rate is judged. */
  bodyGraceMs: number
  /** Ingest is refused while more rolled-over segments than this wait to be sealed. */
  maxPendingSegments: number
  /** Ingest is refused while the active segment (file plus WAL) is larger than this: rollover is not keeping up or failing. */
  maxActiveBytes: number
  /** Process pressure at which queries are refused (503): 0 turns a check off. Queries degrade before ingest does. */
  queryPressure: PressureLimits
  /** Process pressure at which ingest is refused and /readyz turns unready (each at least its query threshold). */
  ingestPressure: PressureLimits
  /** Which span and resource attributes of OTLP GenAI spans give what the conventions do not name. */
  otlp: OtlpMapping
  /** Which events the price table prices: none, those without a cost (default), or every one it covers. */
  pricing: PricingMode
  /** The price table file, loaded at start and replaced by PUT /v1/admin/prices (default <data>/prices.json). */
  pricesFile: string
}

export interface AuthTokens {
  ingest: string[]
  query: string[]
  admin: string[]
  metrics: string[]
}

export interface PressureLimits {
  /** Mean event-loop delay over the last sample (1 s). */
  eventLoopDelayMs: number
  heapUsedBytes: number
  rssBytes: number
}

export class ConfigError extends Error {
  constructor(
    readonly variable: string,
    reason: string,
  ) {
    super(`${variable}: ${reason}`)
    this.name = 'ConfigError'
  }
}

const DURATION_UNITS_MS: Record<string, number> = {
  ms: 1,
  s: 1000,
  m: 60_000,
  h: 3_600_000,
  d: 86_400_000,
  w: 7 * 86_400_000,
}

const SIZE_UNITS: Record<string, number> = {
  B: 1,
  KB: 1000,
  MB: 1000 ** 2,
  GB: 1000 ** 3,
  KiB: 1024,
  MiB: 1024 ** 2,
  GiB: 1024 ** 3,
  TiB: 1024 ** 4,
}

/** Parses `30d`, `36h`, `15m`, `10s`, `250ms`; throws a message for ConfigError. */
export function parseDuration(text: string): number {
  const m = /^(\d{1,12})(ms|s|m|h|d|w)$/.exec(text.trim())
  if (!m) throw new Error(`"${text}" is not a duration; write a whole number and a unit: ms, s, m, h, d or w (e.g. 30d, 15m)`)
  return Number(m[1]) * DURATION_UNITS_MS[m[2]!]!
}

/** Parses `64MiB`, `1GiB`, `512KB`, `1048576`; throws a message for ConfigError. */
export function parseSize(text: string): number {
  const m = /^(\d{1,15})\s*(B|KB|MB|GB|KiB|MiB|GiB|TiB)?$/.exec(text.trim())
  if (!m) throw new Error(`"${text}" is not a size; write a whole number with an optional unit: B, KB, MB, GB, KiB, MiB, GiB, TiB (e.g. 64MiB)`)
  const bytes = Number(m[1]) * SIZE_UNITS[m[2] ?? 'B']!
  if (!Number.isSafeInteger(bytes)) throw new Error(`"${text}" is too large`)
  return bytes
}

type Env = Record<string, string | undefined>

interface Reader {
  string(name: string, def: string): string
  int(name: string, def: number, min: number, max: number): number
  duration(name: string, def: string, minMs: number, maxMs: number): number
  size(name: string, def: string, min: number, max: number): number
  oneOf<T extends string>(name: string, def: T, allowed: readonly T[]): T
  tokens(name: string): string[]
  /** A comma-separated list of attribute names (at least one). */
  names(name: string, def: string): string[]
  /** `off` (0) or what `read` parses. */
  orOff(name: string, read: () => number): number
}

/** RFC 6750 b64token characters; 32+ of them (e.g. `openssl rand -hex 32` gives 64). */
const TOKEN_PATTERN = /^[A-Za-z0-9\-._~+/]+=*$/
export const MIN_TOKEN_CHARS = 32
export const MAX_TOKEN_CHARS = 256
const MAX_TOKENS_PER_SCOPE = 64
/** OTLP attribute names: one variable lists at most this many, each at most this long. */
const MAX_ATTRIBUTE_NAMES = 8
const MAX_ATTRIBUTE_NAME_CHARS = 128
const ATTRIBUTE_NAME_PATTERN = new RegExp(`^[A-Za-z0-9._\\-/]{1,${MAX_ATTRIBUTE_NAME_CHARS}}$`)

function reader(env: Env, asked: Set<string>): Reader {
  const raw = (name: string): string | undefined => {
    asked.add(`TOKENLEDGER_${name}`)
    const v = env[`TOKENLEDGER_${name}`]
    return v === undefined || v.trim() === '' ? undefined : v.trim()
  }
  const fail = (name: string, reason: string): never => {
    throw new ConfigError(`TOKENLEDGER_${name}`, reason)
  }
  const bounded = (name: string, value: number, min: number, max: number, show: (n: number) => string): number => {
    if (value < min || value > max) fail(name, `must be between ${show(min)} and ${show(max)}, got ${show(value)}`)
    return value
  }
  return {
    string: (name, def) => raw(name) ?? def,
    int(name, def, min, max) {
      const v = raw(name)
      if (v === undefined) return def
      if (!/^\d{1,15}$/.test(v)) fail(name, `must be a whole number between ${min} and ${max}, got "${v}"`)
      return bounded(name, Number(v), min, max, String)
    },
    duration(name, def, minMs, maxMs) {
      let ms: number
      try {
        ms = parseDuration(raw(name) ?? def)
      } catch (err) {
        return fail(name, (err as Error).message)
      }
      return bounded(name, ms, minMs, maxMs, (n) => `${n}ms`)
    },
    size(name, def, min, max) {
      let bytes: number
      try {
        bytes = parseSize(raw(name) ?? def)
      } catch (err) {
        return fail(name, (err as Error).message)
      }
      return bounded(name, bytes, min, max, (n) => `${n} bytes`)
    },
    oneOf(name, def, allowed) {
      const v = raw(name) ?? def
      if (!(allowed as readonly string[]).includes(v)) fail(name, `must be one of ${allowed.join(', ')}, got "${v}"`)
      return v as (typeof allowed)[number]
    },
    tokens(name) {
      const v = raw(name)
      if (v === undefined) return []
      const list = v.split(',').map((t) => t.trim())
      if (list.length > MAX_TOKENS_PER_SCOPE) fail(name, `holds ${list.length} tokens; at most ${MAX_TOKENS_PER_SCOPE} are allowed`)
      list.forEach((t, i) => {
        // Never echo a token (or part of one) into an error message: it is a secret.
        const which = `token ${i + 1} of ${list.length}`
        if (t.length === 0) fail(name, `${which} is empty; separate tokens with single commas`)
        if (t.length < MIN_TOKEN_CHARS || t.length > MAX_TOKEN_CHARS) {
          fail(name, `${which} has ${t.length} characters; tokens must have ${MIN_TOKEN_CHARS} to ${MAX_TOKEN_CHARS} (generate one with \`openssl rand -hex 32\`)`)
        }
        if (!TOKEN_PATTERN.test(t)) fail(name, `${which} has a character outside A-Z a-z 0-9 - . _ ~ + / (and trailing =)`)
      })
      return list
    },
    names(name, def) {
      const list = (raw(name) ?? def).split(',').map((n) => n.trim())
      if (list.length > MAX_ATTRIBUTE_NAMES) fail(name, `holds ${list.length} names; at most ${MAX_ATTRIBUTE_NAMES} are allowed`)
      for (const n of list) {
        if (!ATTRIBUTE_NAME_PATTERN.test(n)) fail(name, `"${n.slice(0, 64)}" is not an attribute name: 1-${MAX_ATTRIBUTE_NAME_CHARS} characters, letters, digits and . _ - / (names separated by commas)`)
      }
      return list
    },
    orOff(name, read) {
      return raw(name) === 'off' ? 0 : read()
    },
  }
}

/** True for names and addresses that only this machine can reach. */
export function isLoopbackHost(host: string): boolean {
  const h = host.toLowerCase().replace(/^\[(.*)\]$/, '$1')
  return h === 'localhost' || h === '::1' || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(h) || /^::ffff:127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(h)
}

const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const
const DAY_MS = 86_400_000
const MiB = 1024 ** 2
/**
 * One ingest worker per core but one (the event loop and DuckDB need the rest),
 * at least one, at most four. On the 2-core bench machine: one.
 */
const DEFAULT_INGEST_WORKERS = Math.min(4, Math.max(1, os.availableParallelism() - 1))

/** A size in the largest binary unit that divides it exactly (`64MiB`, `1GiB`, `1500B`). */
function sizeText(bytes: number): string {
  for (const unit of ['TiB', 'GiB', 'MiB', 'KiB'] as const) {
    const size = SIZE_UNITS[unit]!
    if (bytes % size === 0 && bytes >= size) return `${bytes / size}${unit}`
  }
  return `${bytes}B`
}

/** A duration in the largest unit that divides it exactly (`30d`, `36h`, `1500ms`). */
function msText(ms: number): string {
  for (const unit of ['w', 'd', 'h', 'm', 's'] as const) {
    const size = DURATION_UNITS_MS[unit]!
    if (ms % size === 0) return `${ms / size}${unit}`
  }
  return `${ms}ms`
}

/**
 * Queries are refused at the lower thresholds, ingest (and readiness) only at
 * the higher ones. Defaults: event-loop delay 200 ms / 1 s; heap 70 % / 90 % of
 * V8's heap limit; RSS unchecked (DuckDB's memory is bounded by its own limit).
 */
function readPressure(r: Reader, config: Config): void {
  const heapLimit = v8.getHeapStatistics().heap_size_limit
  const pct = (share: number) => String(Math.floor((heapLimit * share) / MiB) * MiB)
  const pairs: Array<[keyof PressureLimits, string, () => number, () => number]> = [
    ['eventLoopDelayMs', 'EVENT_LOOP_DELAY', () => r.duration('QUERY_MAX_EVENT_LOOP_DELAY', '200ms', 10, 60_000), () => r.duration('INGEST_MAX_EVENT_LOOP_DELAY', '1s', 10, 60_000)],
    ['heapUsedBytes', 'HEAP', () => r.size('QUERY_MAX_HEAP', pct(0.7), 16 * MiB, 1024 * 1024 * MiB), () => r.size('INGEST_MAX_HEAP', pct(0.9), 16 * MiB, 1024 * 1024 * MiB)],
    ['rssBytes', 'RSS', () => r.size('QUERY_MAX_RSS', '0', 0, 1024 * 1024 * MiB), () => r.size('INGEST_MAX_RSS', '0', 0, 1024 * 1024 * MiB)],
  ]
  for (const [field, suffix, query, ingest] of pairs) {
    config.queryPressure[field] = r.orOff(`QUERY_MAX_${suffix}`, query)
    config.ingestPressure[field] = r.orOff(`INGEST_MAX_${suffix}`, ingest)
    const q = config.queryPressure[field]
    const i = config.ingestPressure[field]
    if (i !== 0 && (q === 0 || q > i)) {
      throw new ConfigError(`TOKENLEDGER_QUERY_MAX_${suffix}`, `must be on and at most TOKENLEDGER_INGEST_MAX_${suffix}: queries are refused before ingest is`)
    }
  }
}

/**
 * TOKENLEDGER_* variables that are not the service's settings but are read by this
 * repository's tools (test/ui.test.ts and bench/ui.ts: the Chromium binary): no warning.
 */
const TOOL_VARIABLES = ['TOKENLEDGER_CHROMIUM']

/** Reads and validates the configuration; throws ConfigError on the first bad variable. */
export function loadConfig(env: Env = process.env): Config {
  return readConfig(env).config
}

/**
 * The configuration, and a warning for each TOKENLEDGER_* variable that is no setting
 * (a typo such as TOKENLEDGER_RETENTON would otherwise be ignored without a word), naming
 * the closest known one. The known names are the ones loadConfig asks for as it reads:
 * there is no second list of them to fall out of step.
 */
export function readConfig(env: Env = process.env): { config: Config; warnings: ConfigWarning[] } {
  const asked = new Set<string>()
  const config = readSettings(reader(env, asked))
  const known = [...asked]
  const warnings: ConfigWarning[] = []
  for (const variable of Object.keys(env).sort()) {
    if (!variable.startsWith('TOKENLEDGER_') || asked.has(variable) || TOOL_VARIABLES.includes(variable)) continue
    const nearest = closest(variable.slice('TOKENLEDGER_'.length), known.map((k) => k.slice('TOKENLEDGER_'.length)))
    const suggestion = nearest === null ? null : `TOKENLEDGER_${nearest}`
    warnings.push({
      variable: variable.slice(0, 128),
      closest: suggestion,
      message: `${variable.slice(0, 128)} is not a tokenledger setting and is ignored${suggestion === null ? '' : `; the closest known one is ${suggestion}`} (see the README's Configuration table)`,
    })
  }
  return { config, warnings }
}

/** Every TOKENLEDGER_* setting, as loadConfig reads them (in its order). */
export function knownVariables(): string[] {
  const asked = new Set<string>()
  readSettings(reader({}, asked))
  return [...asked]
}

/** An environment variable that looks like a setting but is none. */
export interface ConfigWarning {
  variable: string
  /** The known variable nearest to it (a likely typo's intended name). */
  closest: string | null
  message: string
}

/** Every setting, read through `r` (which records each name it is asked for). */
function readSettings(r: Reader): Config {
  const host = r.string('HOST', '127.0.0.1')
  if (!/^[A-Za-z0-9.:\-[\]]{1,255}$/.test(host)) {
    throw new ConfigError('TOKENLEDGER_HOST', `must be a host name or IP address, got "${host}"`)
  }
  const config: Config = {
    dataDir: path.resolve(r.string('DATA_DIR', './data')),
    host,
    port: r.int('PORT', 8080, 0, 65_535),
    logLevel: r.oneOf('LOG_LEVEL', 'info', LOG_LEVELS),
    eventRetentionMs: r.duration('EVENT_RETENTION', '30d', 3_600_000, 3650 * DAY_MS),
    detailRetentionMs: 0,
    rollupRetentionMs: 0,
    retentionIntervalMs: r.string('RETENTION_INTERVAL', msText(D.retentionIntervalMs)) === 'off' ? 0 : r.duration('RETENTION_INTERVAL', msText(D.retentionIntervalMs), 1000, 7 * DAY_MS),
    verifyIntervalMs: r.string('VERIFY_INTERVAL', 'off') === 'off' ? 0 : r.duration('VERIFY_INTERVAL', 'off', 60_000, 30 * DAY_MS),
    verifyWindowMs: r.duration('VERIFY_WINDOW', msText(D.verifyWindowMs), 15 * 60_000, 31 * DAY_MS),
    maxFutureSkewMs: r.duration('MAX_FUTURE_SKEW', '5m', 0, DAY_MS),
    maxBatchEvents: r.int('MAX_BATCH_EVENTS', 10_000, 1, 100_000),
    maxBodyBytes: r.size('MAX_BODY_BYTES', '8MiB', 1024, 256 * MiB),
    maxQueueEvents: r.int('MAX_QUEUE_EVENTS', 200_000, 1, 10_000_000),
    maxQueueBytes: r.size('MAX_QUEUE_BYTES', '256MiB', MiB, 16 * 1024 * MiB),
    maxCommitEvents: r.int('MAX_COMMIT_EVENTS', 50_000, 1, 1_000_000),
    gateWaitMs: r.duration('GATE_WAIT', '10s', 10, 600_000),
    retryAfterSeconds: r.int('RETRY_AFTER_SECONDS', 1, 1, 3600),
    maxConcurrentQueries: r.int('MAX_CONCURRENT_QUERIES', 2, 1, 64),
    queryTimeoutMs: r.duration('QUERY_TIMEOUT', msText(D.queryTimeoutMs), 10, 3_600_000),
    queryCacheRows: r.int('QUERY_CACHE_ROWS', D.answerCacheRows, 0, 10_000_000),
    exportMaxEvents: r.int('EXPORT_MAX_EVENTS', 10_000_000, 1, 1_000_000_000),
    exportTimeoutMs: r.duration('EXPORT_TIMEOUT', '10m', 1000, 24 * 3_600_000),
    requestTimeoutMs: r.duration('REQUEST_TIMEOUT', '30s', 1000, 3_600_000),
    shutdownGraceMs: r.duration('SHUTDOWN_GRACE', '25s', 1000, 3_600_000),
    duckdbMemoryBytes: r.size('DUCKDB_MEMORY', '2GiB', 64 * MiB, 1024 * 1024 * MiB),
    duckdbThreads: r.int('DUCKDB_THREADS', 2, 1, 256),
    ingestWorkers: r.int('INGEST_WORKERS', DEFAULT_INGEST_WORKERS, 0, 64),
    rolloverBytes: r.size('ROLLOVER_BYTES', sizeText(D.rolloverBytes), 64 * 1024, 64 * 1024 * MiB),
    rolloverAgeMs: r.duration('ROLLOVER_AGE', msText(D.rolloverAgeMs), 100, 7 * DAY_MS),
    sealRetryMs: r.duration('SEAL_RETRY', msText(D.sealRetryMs), 10, 3_600_000),
    sealRetryMaxMs: r.duration('SEAL_RETRY_MAX', msText(D.sealRetryMaxMs), 10, DAY_MS),
    auth: { ingest: r.tokens('INGEST_TOKENS'), query: r.tokens('QUERY_TOKENS'), admin: r.tokens('ADMIN_TOKENS'), metrics: r.tokens('METRICS_TOKENS') },
    rateLimitMax: r.orOff('RATE_LIMIT', () => r.int('RATE_LIMIT', 0, 1, 1_000_000)),
    rateLimitWindowMs: r.duration('RATE_LIMIT_WINDOW', '1m', 1000, DAY_MS),
    maxHeaderBytes: r.size('MAX_HEADER_BYTES', '16KiB', 1024, MiB),
    maxConnections: r.int('MAX_CONNECTIONS', 4096, 1, 1_000_000),
    minFreeDiskBytes: r.size('MIN_FREE_DISK', sizeText(D.minFreeDiskBytes), 0, 1024 * 1024 * MiB),
    maxPendingSegments: r.int('MAX_PENDING_SEGMENTS', D.maxPendingSegments, 1, 100_000),
    maxIngestInflight: r.int('MAX_INGEST_INFLIGHT', 512, 1, 100_000),
    maxIngestInflightBytes: 0, // set below: maxQueueBytes unless given
    maxIngestInflightPerClient: 0, // set below: all but an eighth of maxIngestInflight unless given
    maxIngestInflightBytesPerClient: 0, // set below: all but an eighth of maxIngestInflightBytes unless given
    minBodyBytesPerSec: r.size('MIN_BODY_RATE', '16KiB', 0, 1024 * MiB),
    bodyGraceMs: r.duration('BODY_RATE_GRACE', '2s', 100, 3_600_000),
    maxActiveBytes: 0,
    queryPressure: { eventLoopDelayMs: 0, heapUsedBytes: 0, rssBytes: 0 },
    ingestPressure: { eventLoopDelayMs: 0, heapUsedBytes: 0, rssBytes: 0 },
    otlp: {
      keyAttributes: r.names('OTLP_KEY_ATTRIBUTES', 'tokenledger.key_id'),
      teamAttributes: r.names('OTLP_TEAM_ATTRIBUTES', 'tokenledger.team_id'),
      userAttributes: r.names('OTLP_USER_ATTRIBUTES', 'user.id,enduser.id'),
      customerAttributes: r.names('OTLP_CUSTOMER_ATTRIBUTES', 'tokenledger.customer_id'),
      costAttributes: r.names('OTLP_COST_ATTRIBUTES', 'tokenledger.cost'),
      currencyAttributes: r.names('OTLP_CURRENCY_ATTRIBUTES', 'tokenledger.currency'),
      defaultKey: r.string('OTLP_DEFAULT_KEY', 'otlp'),
    },
    pricing: r.oneOf('PRICING', 'missing', PRICING_MODES),
    pricesFile: '',
  }
  config.pricesFile = path.resolve(config.dataDir, r.string('PRICES_FILE', path.join(config.dataDir, 'prices.json')))
  // One client (a gateway fleet sharing a token behind one NAT is one client) may
  // use all but an eighth of the node, so the other clients are never locked out.
  config.maxIngestInflightPerClient = r.int('MAX_INGEST_INFLIGHT_PER_CLIENT', Math.max(1, config.maxIngestInflight - Math.ceil(config.maxIngestInflight / 8)), 1, 100_000)
  config.maxIngestInflightBytes = r.size('MAX_INGEST_INFLIGHT_BYTES', sizeText(config.maxQueueBytes), 1024, 16 * 1024 * MiB)
  config.maxIngestInflightBytesPerClient = r.size('MAX_INGEST_INFLIGHT_BYTES_PER_CLIENT', sizeText(config.maxIngestInflightBytes - Math.ceil(config.maxIngestInflightBytes / 8)), 1024, 16 * 1024 * MiB)
  if (!/^[\x21-\x7e]{1,128}$/.test(config.otlp.defaultKey)) {
    throw new ConfigError('TOKENLEDGER_OTLP_DEFAULT_KEY', 'must be 1-128 printable ASCII characters without spaces')
  }
  config.maxActiveBytes = r.size('MAX_ACTIVE_BYTES', sizeText(D.maxActiveRollovers * config.rolloverBytes), 64 * 1024, 1024 * 1024 * MiB)
  if (config.maxActiveBytes < config.rolloverBytes) {
    throw new ConfigError('TOKENLEDGER_MAX_ACTIVE_BYTES', `must be at least TOKENLEDGER_ROLLOVER_BYTES (${config.rolloverBytes} bytes)`)
  }
  readPressure(r, config)
  const tokens = Object.values(config.auth).flat().length
  if (tokens === 0 && !isLoopbackHost(config.host)) {
    throw new ConfigError(
      'TOKENLEDGER_HOST',
      `"${config.host}" is reachable from other machines, and no tokens are configured: set TOKENLEDGER_INGEST_TOKENS, TOKENLEDGER_QUERY_TOKENS and TOKENLEDGER_ADMIN_TOKENS (and TOKENLEDGER_METRICS_TOKENS for a Prometheus scraper), or bind to 127.0.0.1`,
    )
  }
  // Unset windows follow the event window when it is set past their defaults,
  // so that setting one variable never makes another (unset) one invalid.
  const event = config.eventRetentionMs
  config.detailRetentionMs = r.duration('DETAIL_RETENTION', msText(Math.min(7 * DAY_MS, event)), 3_600_000, 3650 * DAY_MS)
  config.rollupRetentionMs = r.duration('ROLLUP_RETENTION', msText(Math.max(400 * DAY_MS, event)), 3_600_000, 36_500 * DAY_MS)
  if (config.detailRetentionMs > event) {
    throw new ConfigError('TOKENLEDGER_DETAIL_RETENTION', `must be at most TOKENLEDGER_EVENT_RETENTION (${msText(event)}): details cannot outlive their events`)
  }
  if (config.rollupRetentionMs < event) {
    throw new ConfigError('TOKENLEDGER_ROLLUP_RETENTION', `must be at least TOKENLEDGER_EVENT_RETENTION (${msText(event)}): rollups answer totals once raw events are gone`)
  }
  if (config.maxBatchEvents > config.maxQueueEvents) {
    throw new ConfigError('TOKENLEDGER_MAX_QUEUE_EVENTS', `must be at least TOKENLEDGER_MAX_BATCH_EVENTS (${config.maxBatchEvents})`)
  }
  if (config.maxIngestInflightBytesPerClient < config.maxBodyBytes) {
    throw new ConfigError('TOKENLEDGER_MAX_INGEST_INFLIGHT_BYTES_PER_CLIENT', `must leave one client room for a body of TOKENLEDGER_MAX_BODY_BYTES (${config.maxBodyBytes} bytes)`)
  }
  if (config.maxBodyBytes > config.maxQueueBytes) {
    throw new ConfigError('TOKENLEDGER_MAX_QUEUE_BYTES', `must be at least TOKENLEDGER_MAX_BODY_BYTES (${config.maxBodyBytes} bytes)`)
  }
  return config
}
