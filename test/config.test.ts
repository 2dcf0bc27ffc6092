// Proves configuration parsing: defaults, units, and that every bad value is
// refused with an error naming the variable and what it allows.

import assert from 'node:assert/strict'
import os from 'node:os'
import path from 'node:path'
import { test } from 'node:test'
import { mkdtemp, readFile, rm } from 'node:fs/promises'
import { startChildServer } from './support/child-server.js'
import { ConfigError, knownVariables, loadConfig, parseDuration, parseSize, readConfig } from '../src/config.js'

test('defaults match the README', () => {
  const c = loadConfig({})
  assert.equal(c.dataDir, path.resolve('./data'))
  assert.equal(c.host, '127.0.0.1')
  assert.equal(c.port, 8080)
  assert.equal(c.logLevel, 'info')
  assert.equal(c.eventRetentionMs, 30 * 86_400_000)
  assert.equal(c.maxFutureSkewMs, 5 * 60_000)
  assert.equal(c.maxBatchEvents, 10_000)
  assert.equal(c.maxBodyBytes, 8 * 1024 * 1024)
  assert.equal(c.detailRetentionMs, 7 * 86_400_000)
  assert.equal(c.rollupRetentionMs, 400 * 86_400_000)
  assert.equal(c.retentionIntervalMs, 3_600_000)
  assert.deepEqual(c.auth, { ingest: [], query: [], admin: [], metrics: [] })
  assert.equal(c.rateLimitMax, 0)
  assert.equal(c.minFreeDiskBytes, 1024 ** 3)
  assert.equal(c.maxActiveBytes, 4 * c.rolloverBytes)
  assert.equal(c.ingestWorkers, Math.min(4, Math.max(1, os.availableParallelism() - 1)), 'one ingest worker per core but one, 1-4')
  assert.equal(loadConfig({ TOKENLEDGER_INGEST_WORKERS: '0' }).ingestWorkers, 0, '0: decoded on the event loop')
  assert.deepEqual([c.queryPressure.eventLoopDelayMs, c.ingestPressure.eventLoopDelayMs], [200, 1000])
  assert.ok(c.queryPressure.heapUsedBytes < c.ingestPressure.heapUsedBytes)
  assert.deepEqual([c.queryPressure.rssBytes, c.ingestPressure.rssBytes], [0, 0])
  const both = loadConfig({ TOKENLEDGER_QUERY_MAX_RSS: '3GiB', TOKENLEDGER_INGEST_MAX_RSS: '4GiB', TOKENLEDGER_RATE_LIMIT: '600', TOKENLEDGER_INGEST_MAX_EVENT_LOOP_DELAY: 'off', TOKENLEDGER_QUERY_MAX_EVENT_LOOP_DELAY: 'off' })
  assert.deepEqual([both.queryPressure.rssBytes, both.ingestPressure.rssBytes, both.rateLimitMax, both.ingestPressure.eventLoopDelayMs], [3 * 1024 ** 3, 4 * 1024 ** 3, 600, 0])
})

test('retention windows: details within the event window, rollups beyond it; unset ones follow the event window', () => {
  assert.equal(loadConfig({ TOKENLEDGER_EVENT_RETENTION: '3d' }).detailRetentionMs, 3 * 86_400_000, 'detail default shrinks to the event window')
  assert.equal(loadConfig({ TOKENLEDGER_EVENT_RETENTION: '500d' }).rollupRetentionMs, 500 * 86_400_000, 'rollup default grows to the event window')
  assert.equal(loadConfig({ TOKENLEDGER_EVENT_RETENTION: '500d' }).detailRetentionMs, 7 * 86_400_000)
  assert.throws(() => loadConfig({ TOKENLEDGER_EVENT_RETENTION: '3d', TOKENLEDGER_DETAIL_RETENTION: '4d' }), /^ConfigError: TOKENLEDGER_DETAIL_RETENTION: must be at most TOKENLEDGER_EVENT_RETENTION \(3d\)/)
  assert.throws(() => loadConfig({ TOKENLEDGER_ROLLUP_RETENTION: '10d' }), /^ConfigError: TOKENLEDGER_ROLLUP_RETENTION: must be at least TOKENLEDGER_EVENT_RETENTION \(30d\)/)
  assert.throws(() => loadConfig({ TOKENLEDGER_RETENTION_INTERVAL: 'hourly' }), /^ConfigError: TOKENLEDGER_RETENTION_INTERVAL: "hourly" is not a duration/)
  assert.equal(loadConfig({ TOKENLEDGER_RETENTION_INTERVAL: 'off' }).retentionIntervalMs, 0, 'off: only the admin route runs it')
})

test('durations and sizes', () => {
  assert.equal(parseDuration('30d'), 30 * 86_400_000)
  assert.equal(parseDuration('36h'), 36 * 3_600_000)
  assert.equal(parseDuration('15m'), 900_000)
  assert.equal(parseDuration('250ms'), 250)
  assert.equal(parseSize('64MiB'), 64 * 1024 * 1024)
  assert.equal(parseSize('1GB'), 1e9)
  assert.equal(parseSize('4096'), 4096)
  for (const bad of ['30', '1.5h', 'h', '-1s', '10 years']) assert.throws(() => parseDuration(bad), /not a duration/)
  for (const bad of ['64 mb', '1.5GiB', 'lots']) assert.throws(() => parseSize(bad), /not a size/)
})

test('every bad value names its variable', () => {
  const cases: Array<[Record<string, string>, RegExp]> = [
    [{ TOKENLEDGER_PORT: 'http' }, /^TOKENLEDGER_PORT: must be a whole number/],
    [{ TOKENLEDGER_PORT: '70000' }, /^TOKENLEDGER_PORT: must be between 0 and 65535/],
    [{ TOKENLEDGER_LOG_LEVEL: 'loud' }, /^TOKENLEDGER_LOG_LEVEL: must be one of fatal, error/],
    [{ TOKENLEDGER_EVENT_RETENTION: '30' }, /^TOKENLEDGER_EVENT_RETENTION: "30" is not a duration/],
    [{ TOKENLEDGER_EVENT_RETENTION: '1m' }, /^TOKENLEDGER_EVENT_RETENTION: must be between/],
    [{ TOKENLEDGER_MAX_BODY_BYTES: 'big' }, /^TOKENLEDGER_MAX_BODY_BYTES: "big" is not a size/],
    [{ TOKENLEDGER_HOST: 'bad host!' }, /^TOKENLEDGER_HOST: must be a host name/],
    [{ TOKENLEDGER_MAX_BATCH_EVENTS: '5000', TOKENLEDGER_MAX_QUEUE_EVENTS: '100' }, /^TOKENLEDGER_MAX_QUEUE_EVENTS: must be at least/],
    [{ TOKENLEDGER_QUERY_MAX_EVENT_LOOP_DELAY: '2s' }, /^TOKENLEDGER_QUERY_MAX_EVENT_LOOP_DELAY: must be on and at most TOKENLEDGER_INGEST_MAX_EVENT_LOOP_DELAY/],
    [{ TOKENLEDGER_QUERY_MAX_HEAP: 'off' }, /^TOKENLEDGER_QUERY_MAX_HEAP: must be on and at most TOKENLEDGER_INGEST_MAX_HEAP/],
    [{ TOKENLEDGER_INGEST_MAX_RSS: '4GiB' }, /^TOKENLEDGER_QUERY_MAX_RSS: must be on and at most TOKENLEDGER_INGEST_MAX_RSS/],
    [{ TOKENLEDGER_ROLLOVER_BYTES: '64MiB', TOKENLEDGER_MAX_ACTIVE_BYTES: '32MiB' }, /^TOKENLEDGER_MAX_ACTIVE_BYTES: must be at least TOKENLEDGER_ROLLOVER_BYTES/],
    [{ TOKENLEDGER_RATE_LIMIT: 'fast' }, /^TOKENLEDGER_RATE_LIMIT: must be a whole number/],
    [{ TOKENLEDGER_INGEST_WORKERS: '65' }, /^TOKENLEDGER_INGEST_WORKERS: must be between 0 and 64/],
    [{ TOKENLEDGER_MIN_FREE_DISK: 'lots' }, /^TOKENLEDGER_MIN_FREE_DISK: "lots" is not a size/],
  ]
  for (const [env, message] of cases) {
    assert.throws(
      () => loadConfig(env),
      (err: unknown) => err instanceof ConfigError && message.test(err.message),
      JSON.stringify(env),
    )
  }
})

test('a TOKENLEDGER_* variable that is no setting is warned about, naming the closest known one', () => {
  // Proves a typo is not silently ignored: each unknown TOKENLEDGER_* name gets one warning
  // with its likely intended name; real settings, the tools' TOKENLEDGER_CHROMIUM and other
  // prefixes get none; the configuration read is the same as without the stray variables.
  const { config, warnings } = readConfig({
    TOKENLEDGER_RETENTON: '7d',
    TOKENLEDGER_PROT: '9000',
    TOKENLEDGER_INGEST_TOKEN: 'x',
    TOKENLEDGER_EVENT_RETENTION: '10d',
    TOKENLEDGER_CHROMIUM: '/usr/bin/chromium',
    NODE_ENV: 'production',
    OTHER_RETENTON: '1d',
  })
  assert.equal(config.eventRetentionMs, 10 * 86_400_000)
  assert.equal(config.port, 8080)
  assert.deepEqual(
    warnings.map((w) => [w.variable, w.closest]),
    [
      ['TOKENLEDGER_INGEST_TOKEN', 'TOKENLEDGER_INGEST_TOKENS'],
      ['TOKENLEDGER_PROT', 'TOKENLEDGER_PORT'],
      ['TOKENLEDGER_RETENTON', 'TOKENLEDGER_EVENT_RETENTION'],
    ],
  )
  assert.equal(warnings[2]!.message, 'TOKENLEDGER_RETENTON is not a tokenledger setting and is ignored; the closest known one is TOKENLEDGER_EVENT_RETENTION (see the README\'s Configuration table)')
  assert.deepEqual(readConfig({ TOKENLEDGER_PORT: '9000' }).warnings, [])
})

test('the known settings are the ones loadConfig reads, and the README documents exactly those', async () => {
  // Proves there is one list of settings (what loadConfig asks for, so a new setting needs no
  // second entry to be known) and the README's Configuration table lists each and no other.
  const known = knownVariables()
  assert.ok(known.length > 40, known.join(', '))
  for (const name of known) assert.deepEqual(readConfig({ [name]: '' }).warnings, [], `${name} is known`)
  const readme = await readFile(new URL('../README.md', import.meta.url), 'utf8')
  const table = readme.slice(readme.indexOf('## Configuration'), readme.indexOf('\n## ', readme.indexOf('## Configuration') + 1))
  const documented = new Set<string>()
  for (const line of table.split('\n')) {
    const first = /^\| ([^|]+) \|/.exec(line)?.[1]
    if (!first) continue
    const names = [...first.matchAll(/`([A-Z_]+)`/g)].map((m) => m[1]!)
    const full = names[0]
    if (!full?.startsWith('TOKENLEDGER_')) continue
    for (const n of names) {
      // `TOKENLEDGER_OTLP_TEAM_ATTRIBUTES`, `_USER_ATTRIBUTES`: the short form replaces as many trailing words.
      if (n.startsWith('TOKENLEDGER_')) documented.add(n)
      else documented.add(full.split('_').slice(0, -(n.split('_').length - 1)).join('_') + n)
    }
  }
  assert.deepEqual([...documented].sort(), [...known].sort())
})

test('the server warns at start about a TOKENLEDGER_* variable that is no setting, and starts all the same', async (t) => {
  // Proves the warning reaches the log of a real server (src/server.ts) before it listens.
  const dataDir = await mkdtemp(path.join(os.tmpdir(), 'tl-config-'))
  t.after(() => rm(dataDir, { recursive: true, force: true }))
  const server = await startChildServer({ dataDir, env: { TOKENLEDGER_RETENTON: '7d' } })
  t.after(() => server.stop())
  const lines = server.logTail().split('\n').filter((l) => l.includes('"unknown_variable"'))
  assert.equal(lines.length, 1, server.logTail())
  const line = JSON.parse(lines[0]!.slice(lines[0]!.indexOf('{'))) as { level: number; variable: string; closest: string; msg: string }
  assert.deepEqual([line.level, line.variable, line.closest], [40, 'TOKENLEDGER_RETENTON', 'TOKENLEDGER_EVENT_RETENTION'])
  assert.match(line.msg, /closest known one is TOKENLEDGER_EVENT_RETENTION/)
  assert.equal((await fetch(`${server.url}/healthz`)).status, 200)
})
