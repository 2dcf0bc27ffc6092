// Proves the layout rules of issue 18 hold for the code as it is: no import cycle among the
// .ts files of src/ and routes/ (a type-only import counts: `import type` ties modules
// together as much as any other), no relative import naming no file, and no file in src/
// over 500 lines whose header lacks a line `Over 500 lines: <the reason>`. It fails
// listing every cycle (as `a → b →(type) c → a`) and every such file; the same findings
// print with `npx tsx scripts/check-architecture.ts` (one implementation:
// test/support/architecture.ts).
//
// The first two tests run the checker on small trees written to a temporary directory, to
// prove it can fail: it must find a cycle through `import type`, `export … from`,
// `import(…)` and an `import('…').T` type with NodeNext `.js` specifiers, and each kind of
// long file, and nothing where there is nothing.
import assert from 'node:assert/strict'
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import path from 'node:path'
import test, { type TestContext } from 'node:test'
import { fileURLToPath } from 'node:url'
import { checkArchitecture, cycleText, findingCount, formatFindings, linesMax } from './support/architecture.js'

const repoRoot = fileURLToPath(new URL('../', import.meta.url))

function tree(t: TestContext, files: Record<string, string>): string {
  const root = mkdtempSync(path.join(tmpdir(), 'tl-architecture-'))
  t.after(() => rmSync(root, { recursive: true, force: true }))
  for (const [name, text] of Object.entries(files)) {
    mkdirSync(path.dirname(path.join(root, name)), { recursive: true })
    writeFileSync(path.join(root, name), text)
  }
  return root
}

const lines = (n: number, header = ''): string => header + 'export const x = 1\n'.repeat(n - header.split('\n').length + 1)

test('the checker finds every cycle, type-only ones included, and imports that name no file', (t) => {
  const root = tree(t, {
    // a ⇄ b: one side type-only.
    'src/a.ts': "import type { B } from './b.js'\nexport const a = 1\nexport type A = B\n",
    'src/b.ts': "import { a } from './a.js'\nexport type B = typeof a\n",
    // c → d → e → c, through a folder, `export * from` and an index file.
    'src/c.ts': "import { d } from './sub/d.js'\nexport const c = d\n",
    'src/sub/d.ts': "export { e as d } from '../e/index.js'\n",
    'src/e/index.ts': "export * from '../c.js'\nexport const e = 1\n",
    // f ⇄ g: an `import('…').T` type one way, a dynamic import the other.
    'src/f.ts': "export type F = import('./g.js').G\n",
    'src/g.ts': "export type G = number\nexport const load = () => import('./f.js')\n",
    // No cycle: routes/ → src/, a package, a JSON file; a chain h → i.
    'routes/r.ts': "import { a } from '../src/a.js'\nimport ts from 'typescript'\nimport pkg from '../package.json'\nexport const r = [a, ts, pkg]\n",
    'package.json': '{}\n',
    'src/h.ts': "import { i } from './i.js'\nexport const h = i\n",
    'src/i.ts': "export const i = 1\nimport './missing.js'\n",
  })
  const f = checkArchitecture(root)
  assert.deepEqual(
    f.components.map((c) => ({ files: c.files, cycles: c.cycles.map(cycleText), truncated: c.truncated })),
    [
      { files: ['src/a.ts', 'src/b.ts'], cycles: ['src/a.ts →(type) src/b.ts → src/a.ts'], truncated: false },
      { files: ['src/c.ts', 'src/e/index.ts', 'src/sub/d.ts'], cycles: ['src/c.ts → src/sub/d.ts → src/e/index.ts → src/c.ts'], truncated: false },
      { files: ['src/f.ts', 'src/g.ts'], cycles: ['src/f.ts →(type) src/g.ts → src/f.ts'], truncated: false },
    ],
  )
  assert.deepEqual(f.unresolved, [{ file: 'src/i.ts', specifier: './missing.js' }])
  assert.equal(findingCount(f), 4)
  assert.match(formatFindings(f), /^import cycle among 2 files: src\/a\.ts, src\/b\.ts$/m)
})

test(`the checker finds each file in src/ over ${linesMax} lines without a reason in its header`, (t) => {
  const root = tree(t, {
    'src/no-header.ts': lines(linesMax + 1),
    'src/reason.ts': lines(linesMax + 1, '// The table of codes.\n//\n// Over 500 lines: one table that reads best whole.\n'),
    'src/block-reason.ts': lines(linesMax + 1, '/*\n * Over 500 lines: generated.\n */\n'),
    'src/empty-reason.ts': lines(linesMax + 1, '// Over 500 lines:\n'),
    'src/reason-too-late.ts': lines(linesMax + 1, '// The header.\n\n// Over 500 lines: not in the first comment block.\n'),
    'src/at-the-bound.ts': lines(linesMax),
    'routes/long.ts': lines(linesMax + 100),
  })
  const f = checkArchitecture(root)
  assert.deepEqual(
    f.longFiles.map((l) => l.file),
    ['src/empty-reason.ts', 'src/no-header.ts', 'src/reason-too-late.ts'],
  )
  assert.ok(f.longFiles.every((l) => l.lines === linesMax + 1))
  assert.deepEqual(f.components, [])
})

test('src/ and routes/ have no import cycle, and no file in src/ is over 500 lines without a reason', () => {
  const f = checkArchitecture(repoRoot)
  assert.ok(f.files > 0, 'no source files found: wrong root?')
  assert.equal(findingCount(f), 0, `\n${formatFindings(f)}`)
})
