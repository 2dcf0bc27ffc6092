// Proves the supported Node.js range is stated honestly and in one agreement:
// package.json's `engines.node` admits no version that an installed dependency refuses
// (so `npm ci` on a supported Node prints no EBADENGINE warning); the Dockerfile runs one
// Node line in every stage, an LTS line (even major) inside that range; and the README's
// Set-up names the same floor and the Docker image's line. (The machine running the tests
// may be older than the range, as this repository's CI is on Node 20.20; the README says so,
// and this test does not depend on it.)

import assert from 'node:assert/strict'
import { readFile } from 'node:fs/promises'
import path from 'node:path'
import { test } from 'node:test'
import semver from 'semver'
import { repoRoot } from './support/child-server.js'

interface LockPackage {
  engines?: Record<string, string> | string[]
  optional?: boolean
  os?: string[]
  cpu?: string[]
}

const read = (file: string) => readFile(path.join(repoRoot, file), 'utf8')

test('engines.node admits no Node version an installed dependency refuses', async () => {
  const pkg = JSON.parse(await read('package.json')) as { engines: { node: string } }
  const ours = pkg.engines.node
  assert.ok(semver.validRange(ours), `engines.node ${ours} is a range`)
  const floor = semver.minVersion(ours)!
  const lock = JSON.parse(await read('package-lock.json')) as { packages: Record<string, LockPackage> }
  const refusing: string[] = []
  for (const [where, p] of Object.entries(lock.packages)) {
    if (where === '' || !p.engines || Array.isArray(p.engines) || p.engines.node === undefined) continue
    // Platform-specific optional binaries for other systems are never installed here.
    if (p.optional && (p.os !== undefined || p.cpu !== undefined)) continue
    const theirs = p.engines.node
    if (!semver.satisfies(floor, theirs) || !semver.subset(ours, theirs)) refusing.push(`${where.replace(/^.*node_modules\//, '')} wants node ${theirs}`)
  }
  assert.deepEqual(refusing, [], `engines.node ${ours} admits versions these refuse`)
})

test('the Dockerfile runs one LTS Node line inside engines.node, and the README names the floor and that line', async () => {
  const pkg = JSON.parse(await read('package.json')) as { engines: { node: string } }
  const dockerfile = await read('Dockerfile')
  const images = [...dockerfile.matchAll(/^(?:ARG NODE_IMAGE=|FROM )node:(\d+)[-.\w]*/gm)].map((m) => Number(m[1]))
  assert.ok(images.length >= 1, 'the Dockerfile names a node image')
  const lines = [...new Set(images)]
  assert.equal(lines.length, 1, `one Node line in every stage: ${lines.join(', ')}`)
  const major = lines[0]!
  assert.equal(major % 2, 0, `node:${major} is an LTS line (even major)`)
  assert.ok(semver.satisfies(`${major}.0.0`, pkg.engines.node), `node:${major} is inside engines.node ${pkg.engines.node}`)
  const readme = await read('README.md')
  const setup = readme.slice(readme.indexOf('## Set-up'), readme.indexOf('\n## ', readme.indexOf('## Set-up') + 1))
  const floor = semver.minVersion(pkg.engines.node)!
  const floorText = floor.minor === 0 && floor.patch === 0 ? `${floor.major}` : `${floor.major}.${floor.minor}`
  assert.match(setup, new RegExp(`Node\\.js ${floorText} or later`), 'the README states the engines floor')
  assert.match(setup, new RegExp(`Node\\.js ${major}\\b`), 'the README names the Docker image\'s Node line')
  assert.match(setup, /EBADENGINE/, 'the README explains the npm ci warnings an older Node prints')
})
