// Prints the architecture findings (import cycles in src/ and routes/, files in src/ over
// 500 lines without a reason in their header) and exits 1 when there are any:
// `npx tsx scripts/check-architecture.ts [root]` (root: this repository by default).
// test/architecture.test.ts fails on the same findings, from the same implementation
// (test/support/architecture.ts).
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { checkArchitecture, findingCount, formatFindings } from '../test/support/architecture.js'

const root = process.argv[2] === undefined ? fileURLToPath(new URL('../', import.meta.url)) : path.resolve(process.argv[2])
const findings = checkArchitecture(root)
process.stdout.write(`${formatFindings(findings)}\n`)
process.exitCode = findingCount(findings) === 0 ? 0 : 1
