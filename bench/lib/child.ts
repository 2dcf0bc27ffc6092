// A server under benchmark, run as a child process so the load generator does not share
// its event loop. The child must print a JSON line containing `"event":"listening"` and
// `"url":"http://host:port"` on stdout (at any log level); the bench then waits for
// `GET /readyz` to answer 200. stdout is drained for the child's whole life (a full pipe
// would stall it), and pino lines at warn or above are counted and sampled so the report
// can say whether the server complained under load. Every wait is bounded.
import { spawn, type ChildProcess } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { createInterface } from 'node:readline'
import { setTimeout as delay } from 'node:timers/promises'

const readyPollIntervalMs = 100
const readyRequestTimeoutMs = 2_000
const stopTimeoutMs = 30_000
const killTimeoutMs = 10_000
const tailLinesMax = 40
const sampleLinesMax = 5
const lineCharsMax = 400
/** Clock ticks per second for /proc/<pid>/stat; 100 on every mainstream Linux. */
const clockTicksPerS = 100
/** pino's numeric level for `warn`. */
const pinoWarnLevel = 40

export interface ServerSpec {
  name: string
  cwd: string
  /** Arguments after the node executable. */
  args: string[]
  env: Record<string, string>
  startTimeoutMs: number
}

export interface LogStats {
  warnLines: number
  errorLines: number
  stderrLines: number
  /** First few warn/error/stderr lines, truncated. */
  samples: string[]
}

export interface StopReport {
  code: number | null
  signal: NodeJS.Signals | null
  stopMs: number
  /** SIGTERM was not enough within the bound; SIGKILL was sent. */
  forced: boolean
}

export interface RunningServer {
  readonly name: string
  readonly pid: number
  /** Base URL without a trailing slash. */
  readonly url: string
  readonly listeningMs: number
  readonly readyMs: number
  readonly logs: LogStats
  /** True once the child has exited, for whatever reason. */
  exited(): boolean
  /** User + system CPU seconds the child has used so far, if /proc is readable. */
  cpuSeconds(): number | undefined
  /** Last lines of stdout and stderr, for failure messages. */
  tail(): string
  /** SIGTERM, bounded wait, then SIGKILL. */
  stop(): Promise<StopReport>
}

const liveChildren = new Set<ChildProcess>()
let exitHookInstalled = false

function installExitHook(): void {
  if (exitHookInstalled) return
  exitHookInstalled = true
  // A bench that dies (or is interrupted) must not leave servers behind.
  process.on('exit', () => {
    for (const child of liveChildren) child.kill('SIGKILL')
  })
  for (const signal of ['SIGINT', 'SIGTERM'] as const) {
    process.once(signal, () => {
      for (const child of liveChildren) child.kill('SIGKILL')
      process.exit(130)
    })
  }
}

function truncate(line: string): string {
  return line.length > lineCharsMax ? `${line.slice(0, lineCharsMax)}…` : line
}

function parseListeningUrl(line: string): string | undefined {
  if (!line.includes('"event":"listening"')) return undefined
  let url: unknown
  try {
    url = (JSON.parse(line) as { url?: unknown }).url
  } catch {
    url = /"url":"(https?:\/\/[^"]+)"/.exec(line)?.[1]
  }
  return typeof url === 'string' ? url.replace(/\/+$/, '') : undefined
}

function pinoLevel(line: string): number | undefined {
  const m = /"level":(\d+)/.exec(line)
  return m?.[1] === undefined ? undefined : Number(m[1])
}

function readCpuSeconds(pid: number): number | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    // Fields after "(comm)": state is field 3, utime 14, stime 15 (1-based).
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
    const utime = Number(fields[11])
    const stime = Number(fields[12])
    if (!Number.isFinite(utime) || !Number.isFinite(stime)) return undefined
    return (utime + stime) / clockTicksPerS
  } catch {
    return undefined
  }
}

async function waitReady(url: string, deadlineMs: number, isExited: () => boolean, tail: () => string): Promise<void> {
  let last = 'no answer yet'
  for (;;) {
    if (isExited()) throw new Error(`server exited before /readyz answered 200 (last: ${last})\n${tail()}`)
    try {
      const res = await fetch(`${url}/readyz`, { signal: AbortSignal.timeout(readyRequestTimeoutMs) })
      const body = await res.text()
      if (res.status === 200) return
      last = `${res.status} ${truncate(body)}`
    } catch (err) {
      last = String(err)
    }
    if (Date.now() >= deadlineMs) throw new Error(`/readyz did not answer 200 in time (last: ${last})\n${tail()}`)
    await delay(readyPollIntervalMs)
  }
}

/** Starts the child, waits for its listening line and for /readyz → 200. */
/** This process's environment plus `extra`, for a child server. */
export function childEnv(extra: Record<string, string>): Record<string, string> {
  const env: Record<string, string> = {}
  for (const [k, v] of Object.entries(process.env)) if (v !== undefined) env[k] = v
  return { ...env, ...extra }
}

export async function startServer(spec: ServerSpec): Promise<RunningServer> {
  installExitHook()
  const t0 = performance.now()
  const deadlineMs = Date.now() + spec.startTimeoutMs
  const child = spawn(process.execPath, spec.args, { cwd: spec.cwd, env: spec.env, stdio: ['ignore', 'pipe', 'pipe'] })
  liveChildren.add(child)

  let hasExited = false
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    child.once('exit', (code, signal) => {
      hasExited = true
      liveChildren.delete(child)
      resolve({ code, signal })
    })
  })
  const spawnFailed = new Promise<Error>((resolve) => child.once('error', resolve))

  const logs: LogStats = { warnLines: 0, errorLines: 0, stderrLines: 0, samples: [] }
  const stdoutTail: string[] = []
  const stderrTail: string[] = []
  const remember = (ring: string[], line: string): void => {
    ring.push(truncate(line))
    if (ring.length > tailLinesMax) ring.shift()
  }
  const sample = (line: string): void => {
    if (logs.samples.length < sampleLinesMax) logs.samples.push(truncate(line))
  }
  const tail = (): string =>
    `--- ${spec.name} stdout (last ${stdoutTail.length}) ---\n${stdoutTail.join('\n')}\n` +
    `--- ${spec.name} stderr (last ${stderrTail.length}) ---\n${stderrTail.join('\n')}`

  let onListening: (url: string) => void = () => undefined
  const listening = new Promise<string>((resolve) => {
    onListening = resolve
  })
  createInterface({ input: child.stdout, crlfDelay: Infinity }).on('line', (line) => {
    remember(stdoutTail, line)
    const url = parseListeningUrl(line)
    if (url !== undefined) {
      onListening(url)
      return
    }
    const level = pinoLevel(line)
    if (level !== undefined && level >= pinoWarnLevel) {
      if (level > pinoWarnLevel) logs.errorLines++
      else logs.warnLines++
      sample(line)
    }
  })
  createInterface({ input: child.stderr, crlfDelay: Infinity }).on('line', (line) => {
    remember(stderrTail, line)
    if (line.trim() === '') return
    logs.stderrLines++
    sample(`stderr: ${line}`)
  })

  const stop = async (): Promise<StopReport> => {
    const s0 = performance.now()
    if (hasExited) return { ...(await exited), stopMs: 0, forced: false }
    child.kill('SIGTERM')
    const first = await Promise.race([exited, delay(stopTimeoutMs, 'timeout' as const, { ref: false })])
    if (first !== 'timeout') return { ...first, stopMs: performance.now() - s0, forced: false }
    child.kill('SIGKILL')
    const second = await Promise.race([exited, delay(killTimeoutMs, 'timeout' as const, { ref: false })])
    if (second === 'timeout') throw new Error(`${spec.name} (pid ${child.pid}) did not exit after SIGKILL`)
    return { ...second, stopMs: performance.now() - s0, forced: true }
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
      const why =
        'exit' in first
          ? `exited (code ${first.exit.code}, signal ${first.exit.signal})`
          : `failed to spawn: ${first.error.message}`
      throw new Error(`${spec.name} ${why} before listening\n${tail()}`)
    }
    const url = first
    const listeningMs = performance.now() - t0
    await waitReady(url, deadlineMs, () => hasExited, tail)
    const readyMs = performance.now() - t0
    const pid = child.pid
    if (pid === undefined) throw new Error(`${spec.name}: spawned child has no pid`)
    return {
      name: spec.name,
      pid,
      url,
      listeningMs,
      readyMs,
      logs,
      exited: () => hasExited,
      cpuSeconds: () => readCpuSeconds(pid),
      tail,
      stop,
    }
  } catch (err) {
    if (!hasExited) {
      child.kill('SIGKILL')
      await Promise.race([exited, delay(killTimeoutMs, undefined, { ref: false })])
    }
    throw err
  }
}
