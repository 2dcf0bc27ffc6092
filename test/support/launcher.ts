// The one launcher of child servers, for the tests (test/support/child-server.ts) and the
// benches (bench/lib/child.ts): spawn `node <args>`, drain its stdout and stderr for its
// whole life (a full pipe would stall it) into bounded tails, wait for the JSON line
// holding `"event":"listening"` and `"url":"http://host:port"`, then for `GET /readyz` to
// answer 200, and stop it: a signal, a bounded wait, then SIGKILL. Every wait is bounded.
// Children still alive when this process exits are SIGKILLed, so a crashed test or bench
// leaves no server behind.
//
// Why here: the benches may import test support, never the reverse. A test run must not
// load bench code (benches are not tests, and read their own flags and BENCH_* variables),
// and the tests are the stricter user (the SIGKILL-on-exit safety and restart on one data
// directory are theirs first); so the shared part lives under test/support/ and
// bench/lib/child.ts adds what only the benches need (warn/error counts, CPU from /proc).
import { spawn, type ChildProcess } from 'node:child_process'
import { setTimeout as delay } from 'node:timers/promises'

/** Bound on each wait for the exit after a SIGKILL. */
const killTimeoutMs = 10_000
/** Bound on one GET /readyz while polling. */
const readyRequestTimeoutMs = 2_000
/** A line still without its newline is cut to its first this many characters (memory stays bounded). */
const partialLineCharsMax = 64_000
/** How much of a /readyz answer a failure message quotes. */
const readyBodyCharsMax = 200

export interface ChildExit {
  code: number | null
  signal: NodeJS.Signals | null
}

export interface LaunchSpec {
  /** Names the child in failure messages, e.g. `server`. */
  name: string
  cwd: string
  /** Arguments after the node executable. */
  args: string[]
  env: Record<string, string>
  /** Bound on the listening line, from the spawn. */
  startTimeoutMs: number
  /** Bound on /readyz → 200 once listening; without it, /readyz must answer within `startTimeoutMs` of the spawn. */
  readyTimeoutMs?: number
  readyPollIntervalMs: number
  /** Lines kept per stream for `tail()`, and the characters kept of each. */
  tailLinesMax: number
  lineCharsMax: number
  /** Every complete stdout line but the listening line. */
  onStdoutLine?: (line: string) => void
  /** Every complete stderr line. */
  onStderrLine?: (line: string) => void
  /** Also SIGKILL the children and exit 130 on SIGINT/SIGTERM (a bench interrupted at the terminal). */
  killChildrenOnSignal?: boolean
}

export interface LaunchedChild {
  readonly child: ChildProcess
  readonly pid: number
  /** Base URL without a trailing slash, e.g. http://127.0.0.1:41234 */
  readonly url: string
  /** Ms from just before the spawn to the listening line, and to /readyz → 200. */
  readonly listeningMs: number
  readonly readyMs: number
  /** Resolves when the child has exited (never rejects). */
  readonly exited: Promise<ChildExit>
  hasExited(): boolean
  /** The last lines of stdout and stderr, for failure messages. */
  tail(): string
  /**
   * Sends `signal` (unless the child has exited) and waits `timeoutMs`; then SIGKILL and
   * a bounded wait. `forced` says the SIGKILL was needed. Throws if even that does not end it.
   */
  signalAndWait(signal: NodeJS.Signals, timeoutMs: number): Promise<{ exit: ChildExit; forced: boolean }>
}

const liveChildren = new Set<ChildProcess>()
let exitHookInstalled = false
let signalHookInstalled = false

function killLiveChildren(): void {
  for (const child of liveChildren) {
    try {
      child.kill('SIGKILL')
    } catch {
      // already gone
    }
  }
}

function installHooks(onSignal: boolean): void {
  if (!exitHookInstalled) {
    exitHookInstalled = true
    process.on('exit', killLiveChildren)
  }
  if (onSignal && !signalHookInstalled) {
    signalHookInstalled = true
    for (const signal of ['SIGINT', 'SIGTERM'] as const) {
      process.once(signal, () => {
        killLiveChildren()
        process.exit(130)
      })
    }
  }
}

/** A bounded ring of one stream's lines; hands each complete line on. */
class LineTail {
  private readonly lines: string[] = []
  private partial = ''
  constructor(
    private readonly label: string,
    private readonly linesMax: number,
    private readonly charsMax: number,
    private readonly onLine: (line: string) => void,
  ) {}

  push(chunk: string): void {
    const parts = (this.partial + chunk).split('\n')
    this.partial = parts.pop() ?? ''
    // A runaway line without a newline: keep its head (where pino puts the level), bounded.
    if (this.partial.length > partialLineCharsMax) this.partial = this.partial.slice(0, partialLineCharsMax)
    for (const line of parts) this.take(line.endsWith('\r') ? line.slice(0, -1) : line)
  }

  /** The stream has ended: its last line, if it had no newline, is a line too. */
  end(): void {
    if (this.partial === '') return
    const line = this.partial
    this.partial = ''
    this.take(line)
  }

  private take(line: string): void {
    this.lines.push(line.length > this.charsMax ? `${line.slice(0, this.charsMax)}…` : line)
    if (this.lines.length > this.linesMax) this.lines.shift()
    this.onLine(line)
  }

  render(): string {
    const all = this.partial ? [...this.lines, this.partial] : this.lines
    return `--- ${this.label} (last ${all.length} lines) ---\n${all.join('\n')}`
  }
}

export function parseListeningUrl(line: string): string | undefined {
  if (!line.includes('"event":"listening"')) return undefined
  let url: unknown
  try {
    url = (JSON.parse(line) as { url?: unknown }).url
  } catch {
    url = /"url":"(https?:\/\/[^"]+)"/.exec(line)?.[1]
  }
  return typeof url === 'string' ? url.replace(/\/+$/, '') : undefined
}

async function waitReady(spec: LaunchSpec, url: string, deadlineMs: number, hasExited: () => boolean, tail: () => string): Promise<void> {
  let last = 'no answer yet'
  for (;;) {
    if (hasExited()) throw new Error(`${spec.name} exited before /readyz answered 200 (last: ${last})\n${tail()}`)
    try {
      const res = await fetch(`${url}/readyz`, { signal: AbortSignal.timeout(readyRequestTimeoutMs) })
      const body = await res.text()
      if (res.status === 200) return
      last = `${res.status} ${body.slice(0, readyBodyCharsMax)}`
    } catch (err) {
      last = String(err)
    }
    if (Date.now() >= deadlineMs) {
      const boundMs = spec.readyTimeoutMs ?? spec.startTimeoutMs
      throw new Error(`${spec.name}: /readyz did not answer 200 within ${boundMs} ms (last: ${last})\n${tail()}`)
    }
    await delay(spec.readyPollIntervalMs) // the interval of a bounded readiness probe
  }
}

/**
 * Spawns the child, waits for its listening line and for `GET /readyz` → 200. On failure
 * the child is SIGKILLed and the error carries its output.
 */
export async function launchChild(spec: LaunchSpec): Promise<LaunchedChild> {
  installHooks(spec.killChildrenOnSignal === true)
  const t0 = performance.now()
  const startDeadlineMs = Date.now() + spec.startTimeoutMs
  const child = spawn(process.execPath, spec.args, { cwd: spec.cwd, env: spec.env, stdio: ['ignore', 'pipe', 'pipe'] })
  liveChildren.add(child)

  let exitedYet = false
  const exited = new Promise<ChildExit>((resolve) => {
    child.once('exit', (code, signal) => {
      exitedYet = true
      liveChildren.delete(child)
      resolve({ code, signal })
    })
  })
  // A spawn failure ('error' without 'exit') must not hang anyone waiting on `exited`.
  const spawnFailed = new Promise<Error>((resolve) => child.once('error', resolve))

  let onListening: (url: string) => void = () => undefined
  const listening = new Promise<string>((resolve) => {
    onListening = resolve
  })
  const stdoutTail = new LineTail(`${spec.name} stdout`, spec.tailLinesMax, spec.lineCharsMax, (line) => {
    const url = parseListeningUrl(line)
    if (url !== undefined) onListening(url)
    else spec.onStdoutLine?.(line)
  })
  const stderrTail = new LineTail(`${spec.name} stderr`, spec.tailLinesMax, spec.lineCharsMax, (line) => spec.onStderrLine?.(line))
  const tail = (): string => `${stdoutTail.render()}\n${stderrTail.render()}`
  for (const [stream, lines] of [
    [child.stdout, stdoutTail],
    [child.stderr, stderrTail],
  ] as const) {
    stream.setEncoding('utf8')
    stream.on('data', (chunk: string) => lines.push(chunk))
    stream.on('end', () => lines.end())
  }

  const signalAndWait = async (signal: NodeJS.Signals, timeoutMs: number): Promise<{ exit: ChildExit; forced: boolean }> => {
    if (!exitedYet) child.kill(signal)
    const first = await Promise.race([exited, delay(timeoutMs, 'timeout' as const, { ref: false })])
    if (first !== 'timeout') return { exit: first, forced: false }
    child.kill('SIGKILL')
    const second = await Promise.race([exited, delay(killTimeoutMs, 'timeout' as const, { ref: false })])
    if (second === 'timeout') throw new Error(`${spec.name} (pid ${child.pid}) did not exit after SIGKILL`)
    return { exit: second, forced: true }
  }

  try {
    const first = await Promise.race([
      listening,
      delay(spec.startTimeoutMs, 'timeout' as const, { ref: false }),
      exited.then((e) => ({ exit: e })),
      spawnFailed.then((e) => ({ error: e })),
    ])
    if (first === 'timeout') {
      throw new Error(`${spec.name} printed no "event":"listening" line within ${spec.startTimeoutMs} ms\n${tail()}`)
    }
    if (typeof first !== 'string') {
      const why = 'exit' in first ? `exited (code ${first.exit.code}, signal ${first.exit.signal})` : `failed to spawn: ${first.error.message}`
      throw new Error(`${spec.name} ${why} before listening\n${tail()}`)
    }
    const url = first
    const listeningMs = performance.now() - t0
    const readyDeadlineMs = spec.readyTimeoutMs === undefined ? startDeadlineMs : Date.now() + spec.readyTimeoutMs
    await waitReady(spec, url, readyDeadlineMs, () => exitedYet, tail)
    const readyMs = performance.now() - t0
    const pid = child.pid
    if (pid === undefined) throw new Error(`${spec.name}: spawned child has no pid`)
    return { child, pid, url, listeningMs, readyMs, exited, hasExited: () => exitedYet, tail, signalAndWait }
  } catch (err) {
    await signalAndWait('SIGKILL', killTimeoutMs).catch(() => undefined)
    throw err
  }
}
