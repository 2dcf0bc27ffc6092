// Proves the README's examples run as written, on any day, against a real server
// (src/server.ts as a child process, on a fresh data directory), and answer what the
// README says they answer.
//
// Which blocks run: every ```sh block right after the line `<!-- readme-test: run -->`.
// Each such block runs whole, in one `bash -e` (so variables such as NOW carry from one
// command to the next), in a fresh temporary directory, with one substitution: the
// README's `localhost:8080` becomes the test server's address. A block with no marker is
// never run; so that an example cannot escape the test by accident, every ```sh block that
// talks to `localhost:8080` must carry the marker.
//
// What is checked: a comment line `# → ANSWER` after a command is what the commands since
// the previous `# →` line printed. ANSWER goes through the same shell (so `$NOW` is the
// block's NOW). When ANSWER is JSON the output must be JSON holding at least those fields
// (objects: each field given, recursively; arrays: the same length, element by element),
// so a README answer may leave out what varies or does not matter (`from`, `to`, `points`);
// otherwise the output must equal ANSWER exactly.

import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import { mkdtemp, readFile, rm } from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import { test } from 'node:test'
import { repoRoot, startChildServer } from './support/child-server.js'

const MARKER = '<!-- readme-test: run -->'
const ANSWER = /^# → (.*)$/
/** Separates outputs in the transformed script; never printed by an example. */
const CUT = '@@readme-test-cut@@'
/** Bound on one block's run. */
const BLOCK_TIMEOUT_MS = 60_000

interface Block {
  line: number
  text: string
  marked: boolean
}

/** Every ```sh block of the README, with whether the marker line is right before it. */
function shellBlocks(readme: string): Block[] {
  const lines = readme.split('\n')
  const blocks: Block[] = []
  for (let i = 0; i < lines.length; i++) {
    if (lines[i] !== '```sh') continue
    const end = lines.indexOf('```', i + 1)
    assert.ok(end > i, `README line ${i + 1}: a \`\`\`sh block without its end`)
    blocks.push({ line: i + 1, text: lines.slice(i + 1, end).join('\n'), marked: lines[i - 1] === MARKER })
    i = end
  }
  return blocks
}

/**
 * The block as one script printing, for each `# →` line, the output of the commands before
 * it, then the answer expanded by the shell, each followed by CUT.
 */
function transform(block: string, address: string): { script: string; answers: number } {
  let answers = 0
  const out: string[] = []
  for (const line of block.replaceAll('localhost:8080', address).split('\n')) {
    const m = ANSWER.exec(line)
    if (!m) {
      out.push(line)
      continue
    }
    answers++
    const delimiter = `README_ANSWER_${answers}`
    out.push(`printf '\\n${CUT}\\n'`, `cat <<${delimiter}`, m[1]!, delimiter, `printf '${CUT}\\n'`)
  }
  return { script: out.join('\n'), answers }
}

/** `expected`'s fields are in `actual` (objects recursively, arrays element by element, same length). */
function assertHolds(actual: unknown, expected: unknown, where: string): void {
  if (Array.isArray(expected)) {
    assert.ok(Array.isArray(actual), `${where}: an array expected, got ${JSON.stringify(actual)}`)
    assert.equal(actual.length, expected.length, `${where}: length of ${JSON.stringify(actual)}`)
    expected.forEach((e, i) => assertHolds(actual[i], e, `${where}/${i}`))
  } else if (expected !== null && typeof expected === 'object') {
    assert.ok(actual !== null && typeof actual === 'object' && !Array.isArray(actual), `${where}: an object expected, got ${JSON.stringify(actual)}`)
    for (const [k, v] of Object.entries(expected)) {
      assert.ok(Object.prototype.hasOwnProperty.call(actual, k), `${where}: no field "${k}" in ${JSON.stringify(actual)}`)
      assertHolds((actual as Record<string, unknown>)[k], v, `${where}/${k}`)
    }
  } else {
    assert.deepEqual(actual, expected, where)
  }
}

function parseJson(text: string): { ok: true; value: unknown } | { ok: false } {
  try {
    return { ok: true, value: JSON.parse(text) as unknown }
  } catch {
    return { ok: false }
  }
}

test("the README's examples run as written against a real server and answer what it says", async (t) => {
  const readme = await readFile(path.join(repoRoot, 'README.md'), 'utf8')
  const blocks = shellBlocks(readme)
  const unmarked = blocks.filter((b) => !b.marked && b.text.includes('localhost:8080'))
  assert.deepEqual(unmarked.map((b) => b.line), [], `\`\`\`sh blocks that talk to localhost:8080 without "${MARKER}" before them`)
  const runnable = blocks.filter((b) => b.marked)
  assert.ok(runnable.length >= 1, 'the README has runnable examples')

  const dataDir = await mkdtemp(path.join(os.tmpdir(), 'tl-readme-'))
  const workDir = await mkdtemp(path.join(os.tmpdir(), 'tl-readme-cwd-'))
  t.after(async () => {
    await rm(dataDir, { recursive: true, force: true })
    await rm(workDir, { recursive: true, force: true })
  })
  // The README's default set-up: no tokens, loopback.
  const server = await startChildServer({ dataDir })
  t.after(() => server.stop())
  const address = new URL(server.url).host

  let checked = 0
  for (const block of runnable) {
    const { script, answers } = transform(block.text, address)
    assert.ok(answers > 0, `README line ${block.line}: a runnable block shows no answer (# → …) to check`)
    const run = spawnSync('bash', ['-e', '-c', script], { cwd: workDir, encoding: 'utf8', timeout: BLOCK_TIMEOUT_MS, env: { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: workDir, LC_ALL: 'C' } })
    assert.equal(run.status, 0, `README line ${block.line}: the block exited ${run.status} (${run.signal ?? 'no signal'})\nstdout: ${run.stdout}\nstderr: ${run.stderr}\n${server.logTail()}`)
    const parts = run.stdout.split(`${CUT}\n`)
    assert.equal(parts.length, 2 * answers + 1, `README line ${block.line}: outputs and answers do not pair up:\n${run.stdout}`)
    for (let i = 0; i < answers; i++) {
      const output = parts[2 * i]!.trim()
      const expected = parts[2 * i + 1]!.trim()
      const where = `README line ${block.line}, answer ${i + 1} (${expected.slice(0, 80)})`
      const want = parseJson(expected)
      if (want.ok) {
        const got = parseJson(output)
        assert.ok(got.ok, `${where}: the output is not JSON: ${output}`)
        assertHolds(got.value, want.value, where)
      } else {
        assert.equal(output, expected, where)
      }
      checked++
    }
  }
  assert.ok(checked >= 5, `${checked} answers checked`)
})
