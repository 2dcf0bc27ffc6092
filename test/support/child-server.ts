// Starts the real server (`src/server.ts`) as a child process, for tests that must kill it
// (SIGKILL) or restart it on the same data directory. Every wait here is bounded: the
// "listening" line within `startTimeoutMs`, `/readyz` within `readyTimeoutMs`, the exit
// after a signal within `exitTimeoutMs`. Children still alive when this process exits are
// SIGKILLed, so a crashed test run leaves no server behind.
import { spawn, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { fileURLToPath } from 'node:url'
import { setTimeout as delay } from 'node:timers/promises'

/** The repository root, resolved from this file's location (test/support/ → ../..). */
export const repoRoot: string = fileURLToPath(new URL('../../', import.meta.url))

const startTimeoutMsDefault = 30_000
const readyTimeoutMsDefault = 30_000
const readyPollIntervalMs = 50
const readyRequestTimeoutMs = 2_000
const exitTimeoutMsDefault = 10_000
const logTailLinesMax = 400
const logLineCharsMax = 4_000

export interface ChildServerOptions {
  /** TOKENLEDGER_DATA_DIR for the child. */
  dataDir: string
  /** Extra environment for the child (e.g. TOKENLEDGER_ROLLOVER_BYTES); wins over the defaults. */
  env?: Record<string, string | undefined>
  startTimeoutMs?: number
  readyTimeoutMs?: number
}

export interface ChildExit {
  code: number | null
  signal: NodeJS.Signals | null
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

const liveChildren = new Set<ChildProcess>()
let exitHookInstalled = false

function installExitHook(): void {
  if (exitHookInstalled) return
  exitHookInstalled = true
  process.on('exit', () => {
    for (const child of liveChildren) {
      try {
        child.kill('SIGKILL')
      } catch {
        // already gone
      }
    }
  })
}

/** Bounded ring of log lines. */
class LogTail {
  private readonly lines: string[] = []
  private partial = ''
  constructor(private readonly label: string) {}

  /** Feeds a chunk; calls `onLine` for each complete line. */
  push(chunk: string, onLine?: (line: string) => void): void {
    const text = this.partial + chunk
    const parts = text.split('\n')
    this.partial = parts.pop() ?? ''
    if (this.partial.length > logLineCharsMax * 16) {
      // A runaway line without a newline: keep it bounded.
      this.partial = this.partial.slice(-logLineCharsMax * 16)
    }
    for (const line of parts) {
      this.remember(line)
      onLine?.(line)
    }
  }

  private remember(line: string): void {
    this.lines.push(line.length > logLineCharsMax ? `${line.slice(0, logLineCharsMax)}…` : line)
    if (this.lines.length > logTailLinesMax) this.lines.shift()
  }

  render(): string {
    const all = this.partial ? [...this.lines, this.partial] : this.lines
    return `--- child ${this.label} (last ${all.length} lines) ---\n${all.join('\n')}`
  }
}

function parseListeningUrl(line: string): string | undefined {
  if (!line.includes('"event":"listening"')) return undefined
  let url: unknown
  try {
    url = (JSON.parse(line) as { url?: unknown }).url
  } catch {
    url = /"url":"(http:\/\/[^"]+)"/.exec(line)?.[1]
  }
  if (typeof url !== 'string') return undefined
  return url.replace(/\/+$/, '')
}

async function waitReady(url: string, timeoutMs: number, exited: Promise<ChildExit>, logs: () => string): Promise<void> {
  const deadlineMs = Date.now() + timeoutMs
  let hasExited = false
  void exited.then(() => {
    hasExited = true
  })
  let last = 'no answer yet'
  for (;;) {
    if (hasExited) throw new Error(`server exited before /readyz answered 200 (last: ${last})\n${logs()}`)
    try {
      const res = await fetch(`${url}/readyz`, { signal: AbortSignal.timeout(readyRequestTimeoutMs) })
      const body = await res.text()
      if (res.status === 200) return
      last = `${res.status} ${body.slice(0, 200)}`
    } catch (err) {
      last = String(err)
    }
    if (Date.now() >= deadlineMs) {
      throw new Error(`/readyz did not answer 200 within ${timeoutMs} ms (last: ${last})\n${logs()}`)
    }
    await delay(readyPollIntervalMs) // polling interval of a bounded readiness probe
  }
}

/**
 * Spawns `node --import tsx src/server.ts`, waits for its `"event":"listening"` line and
 * for `GET /readyz` to answer 200. On failure the child is killed and the error carries
 * its output.
 */
export async function startChildServer(opts: ChildServerOptions): Promise<ChildServer> {
  installExitHook()
  const startTimeoutMs = opts.startTimeoutMs ?? startTimeoutMsDefault
  const readyTimeoutMs = opts.readyTimeoutMs ?? readyTimeoutMsDefault

  const env: Record<string, string> = {}
  const merged: Record<string, string | undefined> = {
    ...process.env,
    TOKENLEDGER_DATA_DIR: opts.dataDir,
    TOKENLEDGER_PORT: '0',
    TOKENLEDGER_HOST: '127.0.0.1',
    TOKENLEDGER_LOG_LEVEL: 'warn',
    ...opts.env,
  }
  for (const [k, v] of Object.entries(merged)) if (v !== undefined) env[k] = v
  // The test runner's own flags (e.g. --test) must not leak into the server.
  delete env.NODE_TEST_CONTEXT

  const child = spawn(process.execPath, ['--import', 'tsx', 'src/server.ts'], {
    cwd: repoRoot,
    env,
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  liveChildren.add(child)

  const exited: Promise<ChildExit> = new Promise((resolve) => {
    child.once('exit', (code, signal) => {
      liveChildren.delete(child)
      resolve({ code, signal })
    })
  })
  // A spawn failure ('error' without 'exit') must not hang anyone waiting on `exited`.
  const spawnError: Promise<Error> = new Promise((resolve) => child.once('error', resolve))

  const stdoutTail = new LogTail('stdout')
  const stderrTail = new LogTail('stderr')
  const logTail = (): string => `${stdoutTail.render()}\n${stderrTail.render()}`

  let onListening: ((url: string) => void) | undefined
  const listening = new Promise<string>((resolve) => {
    onListening = resolve
  })
  child.stdout.setEncoding('utf8')
  child.stderr.setEncoding('utf8')
  child.stdout.on('data', (chunk: string) =>
    stdoutTail.push(chunk, (line) => {
      const url = parseListeningUrl(line)
      if (url !== undefined) onListening?.(url)
    }),
  )
  child.stderr.on('data', (chunk: string) => stderrTail.push(chunk))

  const killAndWait = async (signal: NodeJS.Signals, timeoutMs: number): Promise<ChildExit> => {
    if (child.exitCode === null && child.signalCode === null) child.kill(signal)
    const timer = delay(timeoutMs, 'timeout' as const, { ref: false })
    const first = await Promise.race([exited, timer])
    if (first !== 'timeout') return first
    child.kill('SIGKILL')
    const second = await Promise.race([exited, delay(exitTimeoutMsDefault, 'timeout' as const, { ref: false })])
    if (second === 'timeout') throw new Error(`child ${child.pid} did not exit after SIGKILL`)
    return second
  }

  let url: string
  try {
    const startTimer = delay(startTimeoutMs, 'timeout' as const, { ref: false })
    const first = await Promise.race([
      listening,
      startTimer,
      exited.then((e) => ({ exit: e })),
      spawnError.then((e) => ({ error: e })),
    ])
    if (first === 'timeout') {
      throw new Error(`server printed no "event":"listening" line within ${startTimeoutMs} ms\n${logTail()}`)
    }
    if (typeof first !== 'string') {
      const why = 'exit' in first ? `exited (code ${first.exit.code}, signal ${first.exit.signal})` : `failed to spawn: ${first.error.message}`
      throw new Error(`server ${why} before listening\n${logTail()}`)
    }
    url = first
    await waitReady(url, readyTimeoutMs, exited, logTail)
  } catch (err) {
    await killAndWait('SIGKILL', exitTimeoutMsDefault).catch(() => undefined)
    throw err
  }

  if (child.pid === undefined) throw new Error('spawned child has no pid')
  return {
    url,
    pid: child.pid,
    child,
    exited,
    logTail,
    kill: () => killAndWait('SIGKILL', exitTimeoutMsDefault),
    stop: (exitTimeoutMs = exitTimeoutMsDefault) => killAndWait('SIGTERM', exitTimeoutMs),
  }
}
