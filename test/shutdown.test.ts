// Proves graceful shutdown on SIGTERM: requests in flight when the signal
// arrives are committed and answered 200, the process exits 0, and after a
// restart every acknowledged event is there exactly once. Also proves that a
// bad configuration value stops the process with a message naming the variable.

import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import { mkdtemp, rm } from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import { test } from 'node:test'
import { repoRoot, startChildServer } from './support/child-server.js'

// One timestamp for the whole test, so a re-post is the same content (a duplicate).
const now = Date.now()

function batch(prefix: string, n: number) {
  return Array.from({ length: n }, (_, i) => ({
    event_id: `${prefix}-${i}`,
    timestamp: now,
    key_id: 'k',
    provider: 'p',
    model: 'm',
    status_code: 200,
    input_tokens: 1,
    output_tokens: 1,
  }))
}

test('SIGTERM drains: in-flight posts are answered, exit code 0, nothing lost', { timeout: 120_000 }, async (t) => {
  const dataDir = await mkdtemp(path.join(os.tmpdir(), 'tl-shutdown-'))
  t.after(() => rm(dataDir, { recursive: true, force: true }))
  const server = await startChildServer({ dataDir })
  t.after(() => server.kill().catch(() => undefined))

  const posts = Array.from({ length: 20 }, (_, i) =>
    fetch(`${server.url}/v1/events`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ events: batch(`drain-${i}`, 200) }),
      signal: AbortSignal.timeout(30_000),
    }).then(
      async (res) => ({ status: res.status, body: (await res.json()) as { accepted?: number } }),
      () => ({ status: 0, body: {} as { accepted?: number } }),
    ),
  )
  // Signal while the posts are in flight; each must end in 200 (stored) or a refusal (not stored).
  setImmediate(() => server.child.kill('SIGTERM'))
  const answers = await Promise.all(posts)
  const exit = await server.exited
  assert.equal(exit.code, 0, `clean exit; log tail:\n${server.logTail()}`)
  assert.match(server.logTail(), /"event":"stopped"/)

  const acked = answers.filter((a) => a.status === 200)
  for (const a of acked) assert.equal(a.body.accepted, 200)
  for (const a of answers) assert.ok([0, 200, 503].includes(a.status), `unexpected status ${a.status}`)

  const again = await startChildServer({ dataDir })
  t.after(() => again.kill().catch(() => undefined))
  const res = await fetch(`${again.url}/v1/usage?from=0&to=${Date.now() + 3_600_000}`)
  const { totals } = (await res.json()) as { totals: { requests: number } }
  assert.ok(totals.requests >= acked.length * 200, 'every acknowledged event survived')
  // Re-posting everything: acknowledged batches are all duplicates, and the total is exact.
  for (let i = 0; i < posts.length; i++) {
    const r = await fetch(`${again.url}/v1/events`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(batch(`drain-${i}`, 200)) })
    const body = (await r.json()) as { accepted: number; duplicates: number; conflicts: number }
    assert.equal(body.conflicts, 0)
    if (answers[i]!.status === 200) assert.equal(body.duplicates, 200, `batch ${i} was acknowledged, so it must be stored`)
  }
  const final = (await (await fetch(`${again.url}/v1/usage?from=0&to=${Date.now() + 3_600_000}`)).json()) as { totals: { requests: number } }
  assert.equal(final.totals.requests, 20 * 200)
  assert.equal((await again.stop()).code, 0)
})

test('a bad configuration value exits non-zero naming the variable', () => {
  const res = spawnSync(process.execPath, ['--import', 'tsx', 'src/server.ts'], {
    cwd: repoRoot,
    env: { ...process.env, TOKENLEDGER_PORT: '99999', TOKENLEDGER_DATA_DIR: os.tmpdir() },
    encoding: 'utf8',
    timeout: 60_000,
  })
  assert.equal(res.status, 2)
  assert.match(res.stderr, /TOKENLEDGER_PORT: must be between 0 and 65535, got 99999/)
})
