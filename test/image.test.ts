// The container image holds what the compiled server reads at run time. No Docker engine
// runs where the tests do, so this builds what the Dockerfile's runtime stage would hold:
// the build stage's `npm run build` output (tsc of tsconfig.build.json, into a temp dir),
// and then exactly the paths the runtime stage copies (`COPY --from=build /app/<path>`),
// nothing else; it starts `node dist/src/server.js` from there, as the image's CMD does,
// and uses what reads files at run time: the ingest workers (dist/src/ingest/worker.js),
// the OTLP schema (proto/), the dashboard (ui/ and uPlot), the API docs.
// (Found missing: ui/, so the image's server refused to start.)
import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import { cp, mkdir, mkdtemp, readFile, rm, symlink } from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import { after, test } from 'node:test'
import { promisify } from 'node:util'
import { repoRoot, startChildServer } from './support/child-server.js'

const run = promisify(execFile)

/** The runtime stage's `COPY --from=build /app/<path> ./<path>` sources, and its CMD's arguments. */
function runtimeStage(dockerfile: string): { copies: string[]; cmd: string[] } {
  const stages = dockerfile.split(/^FROM\s+/m)
  const runtime = stages.find((s) => /^\S+\s+AS\s+runtime\b/i.test(s))
  assert.ok(runtime, 'the Dockerfile has a stage named runtime')
  const copies: string[] = []
  for (const m of runtime.matchAll(/^COPY\s+--from=build\s+\/app\/(\S+)\s+\.\/(\S+)\s*$/gm)) {
    assert.equal(m[1], m[2], `COPY ${m[1]} keeps its path`)
    copies.push(m[1]!)
  }
  assert.equal(copies.length, [...runtime.matchAll(/^COPY\b/gm)].length, 'every COPY of the runtime stage is from the build stage, path for path')
  const cmd = /^CMD\s+(\[.*\])\s*$/m.exec(runtime)
  assert.ok(cmd, 'the runtime stage has an exec-form CMD')
  return { copies, cmd: JSON.parse(cmd[1]!) as string[] }
}

/** The runtime stage's files in a temp dir (built once for this file's tests), and its CMD. */
let image: Promise<{ tmp: string; app: string; cmd: string[] }> | null = null
after(async () => {
  if (image) await rm((await image).tmp, { recursive: true, force: true })
})

function buildImage(): Promise<{ tmp: string; app: string; cmd: string[] }> {
  image ??= (async () => {
    const { copies, cmd } = runtimeStage(await readFile(path.join(repoRoot, 'Dockerfile'), 'utf8'))
    const tmp = await mkdtemp(path.join(os.tmpdir(), 'tokenledger-image-'))
    const built = path.join(tmp, 'build')
    await run(process.execPath, [path.join(repoRoot, 'node_modules/typescript/bin/tsc'), '-p', path.join(repoRoot, 'tsconfig.build.json'), '--outDir', path.join(built, 'dist')], { cwd: repoRoot })
    const app = path.join(tmp, 'app')
    await mkdir(app)
    for (const p of copies) {
      const target = path.join(app, p)
      if (p === 'dist') await cp(path.join(built, 'dist'), target, { recursive: true })
      // The build stage's node_modules after `npm prune --omit=dev`: the repository's (a superset) stands in.
      else if (p === 'node_modules') await symlink(path.join(repoRoot, 'node_modules'), target, 'dir')
      else await cp(path.join(repoRoot, p), target, { recursive: true })
    }
    return { tmp, app, cmd }
  })()
  return image
}

test('the image as the Dockerfile builds it starts, ingests (JSON and OTLP), and serves the dashboard and the docs', { timeout: 180_000 }, async (t) => {
  const { tmp, app, cmd } = await buildImage()
  assert.deepEqual(cmd.slice(0, 2), ['node', 'dist/src/server.js'])
  const server = await startChildServer({ dataDir: path.join(tmp, 'data'), cwd: app, args: cmd.slice(1) })
  t.after(() => server.stop())

  const now = Date.now()
  const ingest = await fetch(`${server.url}/v1/events`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify([{ event_id: 'image-1', timestamp: now, key_id: 'k', provider: 'openai', model: 'gpt-4o-mini', status_code: 200, input_tokens: 10, output_tokens: 2, cost: '0.01' }]),
  })
  assert.equal(ingest.status, 200, await ingest.text())
  const span = {
    traceId: '0af7651916cd43dd8448eb211c80319c',
    spanId: 'b7ad6b7169203331',
    name: 'chat',
    startTimeUnixNano: String(BigInt(now - 1000) * 1_000_000n),
    endTimeUnixNano: String(BigInt(now) * 1_000_000n),
    attributes: [
      { key: 'gen_ai.provider.name', value: { stringValue: 'openai' } },
      { key: 'gen_ai.request.model', value: { stringValue: 'gpt-4o-mini' } },
      { key: 'gen_ai.usage.input_tokens', value: { intValue: '5' } },
      { key: 'gen_ai.usage.output_tokens', value: { intValue: '1' } },
    ],
  }
  const otlp = await fetch(`${server.url}/v1/traces`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ resourceSpans: [{ resource: { attributes: [{ key: 'service.name', value: { stringValue: 'gw' } }] }, scopeSpans: [{ spans: [span] }] }] }),
  })
  assert.equal(otlp.status, 200, await otlp.text())
  const usage = (await (await fetch(`${server.url}/v1/usage?from=${now - 60_000}&to=${now + 1}`)).json()) as { totals: { requests: number } }
  assert.equal(usage.totals.requests, 2)

  const page = await fetch(`${server.url}/`)
  assert.equal(page.status, 200)
  assert.match(await page.text(), /<html/i)
  for (const asset of ['app.js', 'uplot.esm.js']) assert.equal((await fetch(`${server.url}/ui/${asset}`)).status, 200, asset)
  const docs = await fetch(`${server.url}/docs/json`)
  assert.equal(docs.status, 200)
})

// `npm start` (the README's way to run the service) runs `sh -c` on its script: without
// `exec`, the shell forks the server and a SIGTERM that npm forwards stops only the shell,
// leaving the server running, orphaned, holding the data directory's lock (found by a
// newcomer: the next start was refused). With `exec` the server is npm's own child.
test('npm start: a SIGTERM sent to npm reaches the server, which drains and exits; the data directory is free for the next start', { timeout: 180_000 }, async () => {
  const { tmp, app, cmd } = await buildImage()
  const pkg = JSON.parse(await readFile(path.join(repoRoot, 'package.json'), 'utf8')) as { scripts: Record<string, string> }
  assert.match(pkg.scripts.start!, /^exec node dist\/src\/server\.js$/)
  const npmCli = process.env.npm_execpath?.endsWith('npm-cli.js') ? process.env.npm_execpath : path.join(path.dirname(process.execPath), '../lib/node_modules/npm/bin/npm-cli.js')
  const dataDir = path.join(tmp, 'npm-start-data')
  // --ignore-scripts skips prestart (the build): dist/ is already there.
  const viaNpm = await startChildServer({ dataDir, cwd: app, args: [npmCli, 'start', '--ignore-scripts', '--silent'], env: { TOKENLEDGER_LOG_LEVEL: 'info' } })
  const stopped = await viaNpm.stop(30_000)
  assert.equal(stopped.code, 0, viaNpm.logTail())
  assert.match(viaNpm.logTail(), /stopped cleanly/, 'the server itself got the SIGTERM and drained')
  // A server left behind would hold the lock: the next start on the same directory is refused.
  const next = await startChildServer({ dataDir, cwd: app, args: cmd.slice(1) })
  assert.equal((await fetch(`${next.url}/readyz`)).status, 200)
  assert.equal((await next.stop()).code, 0)
})
