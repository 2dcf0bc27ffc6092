// Starts the real server (`src/server.ts`) as a child process, for tests that must kill it
// (SIGKILL) or restart it on the same data directory. Every wait here is bounded: the
// "listening" line within `startTimeoutMs`, `/readyz` within `readyTimeoutMs`, the exit
// after a signal within `exitTimeoutMs`. Children still alive when this process exits are
// SIGKILLed, so a crashed test run leaves no server behind. The spawning, waiting,
// draining and stopping are the shared launcher's (./launcher.ts, also under the benches);
// this module is the tests' API over it: the server's entry point and environment, and
// long log tails for failure messages.
import type { ChildProcess } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { CALM_PRESSURE_ENV } from './calm.js'
import { launchChild, type ChildExit } from './launcher.js'

export type { ChildExit } from './launcher.js'

/** The repository root, resolved from this file's location (test/support/ → ../..). */
export const repoRoot: string = fileURLToPath(new URL('../../', import.meta.url))

const startTimeoutMsDefault = 30_000
const readyTimeoutMsDefault = 30_000
const exitTimeoutMsDefault = 10_000
/** The readiness poll, and long log tails for a failed test's message. */
const launchFigures = { readyPollIntervalMs: 50, tailLinesMax: 400, lineCharsMax: 4_000 } as const

export interface ChildServerOptions {
  /** TOKENLEDGER_DATA_DIR for the child. */
  dataDir: string
  /** Extra environment for the child (e.g. TOKENLEDGER_ROLLOVER_BYTES); wins over the defaults. */
  env?: Record<string, string | undefined>
  startTimeoutMs?: number
  readyTimeoutMs?: number
  /** Where the server runs and what node is given (default: the repository, `--import tsx src/server.ts`). */
  cwd?: string
  args?: string[]
}

export interface ChildServer {
  /** Base URL without a trailing slash, e.g. http://127.0.0.1:41234 */
  readonly url: string
  readonly pid: number
  readonly child: ChildProcess
  /** Resolves when the child has exited (never rejects). */
  readonly exited: Promise<ChildExit>
  /** The last lines the child wrote to stdout and stderr, for failure messages. */
  logTail(): string
  /** SIGKILL the child and wait (bounded) until it has exited. */
  kill(): Promise<ChildExit>
  /** SIGTERM, then SIGKILL if it has not exited within `exitTimeoutMs`. */
  stop(exitTimeoutMs?: number): Promise<ChildExit>
}

/**
 * Spawns `node --import tsx src/server.ts`, waits for its `"event":"listening"` line and
 * for `GET /readyz` to answer 200. On failure the child is killed and the error carries
 * its output.
 */
export async function startChildServer(opts: ChildServerOptions): Promise<ChildServer> {
  const env: Record<string, string> = {}
  const merged: Record<string, string | undefined> = {
    ...process.env,
    TOKENLEDGER_DATA_DIR: opts.dataDir,
    TOKENLEDGER_PORT: '0',
    TOKENLEDGER_HOST: '127.0.0.1',
    TOKENLEDGER_LOG_LEVEL: 'warn',
    ...CALM_PRESSURE_ENV,
    ...opts.env,
  }
  for (const [k, v] of Object.entries(merged)) if (v !== undefined) env[k] = v
  // The test runner's own flags (e.g. --test) must not leak into the server.
  delete env.NODE_TEST_CONTEXT

  const c = await launchChild({
    name: 'server',
    cwd: opts.cwd ?? repoRoot,
    args: opts.args ?? ['--import', 'tsx', 'src/server.ts'],
    env,
    startTimeoutMs: opts.startTimeoutMs ?? startTimeoutMsDefault,
    readyTimeoutMs: opts.readyTimeoutMs ?? readyTimeoutMsDefault,
    ...launchFigures,
  })
  return {
    url: c.url,
    pid: c.pid,
    child: c.child,
    exited: c.exited,
    logTail: c.tail,
    kill: async () => (await c.signalAndWait('SIGKILL', exitTimeoutMsDefault)).exit,
    stop: async (exitTimeoutMs = exitTimeoutMsDefault) => (await c.signalAndWait('SIGTERM', exitTimeoutMs)).exit,
  }
}

/** One JSON call to a child server: its status and parsed body (null when empty). */
export async function callJson(server: ChildServer, method: string, url: string, body?: unknown): Promise<{ status: number; json: any }> {
  const res = await fetch(`${server.url}${url}`, { method, headers: body === undefined ? {} : { 'content-type': 'application/json' }, body: body === undefined ? undefined : JSON.stringify(body) })
  const text = await res.text()
  return { status: res.status, json: text ? JSON.parse(text) : null }
}
