// The server (as src/server.ts starts it) with a kill switch, for crash tests that must
// die at one exact point of a seal or of the dedupe index's persistence, not at a random
// moment: once the file named by TL_TEST_KILL_ARM holds a kill point, the process
// SIGKILLs itself when it reaches that point (no close, no finally block, no flush:
// what the kernel has is what the next start finds).
//
// Kill points:
//   seal:<step>    before that step of a seal (SEAL_STEPS: copy ... cleanup)
//   index-part     after a seal's swap, before its id run is written (dedupe.ts)
//   run-rename:N   right after the Nth rename of an id run file (index/run-*.ids) since
//                  arming: N=1 is the sealed segment's own run, N=2 the merge that
//                  follows it when one is due (its inputs are still on disk)
// Before dying it writes one line, {"event":"kill_at","point":...,"runs":[...]}, with
// the run files in index/ at that moment, so a test can tell which case it reached.

import '../../src/threadpool.js'
import { readdirSync, readFileSync, writeSync } from 'node:fs'
import path from 'node:path'
import { pino } from 'pino'
import { buildApp } from '../../src/app.js'
import { readConfig } from '../../src/config.js'
import { nodeFileSystem, type FileSystem } from '../../src/store/fsops.js'

const armFile = process.env.TL_TEST_KILL_ARM
if (!armFile) throw new Error('TL_TEST_KILL_ARM must name the arm file')
const { config } = readConfig()
const indexDir = path.join(config.dataDir, 'index')

function armed(): string | null {
  try {
    return readFileSync(armFile!, 'utf8').trim() || null
  } catch {
    return null
  }
}

function die(point: string): never {
  const runs = readdirSync(indexDir).filter((n) => n.startsWith('run-')).sort()
  writeSync(1, `${JSON.stringify({ event: 'kill_at', point, runs })}\n`)
  process.kill(process.pid, 'SIGKILL')
  throw new Error('unreachable: SIGKILL sent')
}

let runRenames = 0
const fs: FileSystem = {
  ...nodeFileSystem,
  async rename(from, to) {
    await nodeFileSystem.rename(from, to)
    const point = armed()
    if (point?.startsWith('run-rename:') && /run-\d+\.ids$/.test(to) && ++runRenames === Number(point.slice('run-rename:'.length))) die(point)
  },
}

const logger = pino({ level: config.logLevel, base: { service: 'tokenledger' } })
const app = await buildApp(
  {
    config,
    openBeforeIndex: true,
    fs,
    storeHooks: {
      beforeSealStep: async (step) => {
        if (armed() === `seal:${step}`) die(`seal:${step}`)
      },
      beforeIndexPart: async () => {
        if (armed() === 'index-part') die('index-part')
      },
    },
  },
  logger,
)
const url = await app.listen({ host: config.host, port: config.port })
pino({ level: 'info', base: { service: 'tokenledger' } }).info({ event: 'listening', url, dataDir: config.dataDir }, 'tokenledger listening (kill-at server)')
