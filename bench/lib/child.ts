// A server under benchmark, run as a child process so the load generator does not share
// its event loop. Spawning, waiting for the listening line and `GET /readyz`, draining
// stdout and stderr for the child's whole life and stopping it are the shared launcher's
// (test/support/launcher.ts: the tests' launcher too). This module adds what the benches
// report: pino lines at warn or above, and stderr lines, are counted and sampled so the
// report can say whether the server complained under load; the child's CPU from /proc
// (in all and per thread);
// the time to stop it. Every wait is bounded, and an interrupted bench (SIGINT/SIGTERM)
// SIGKILLs its servers before it exits.
import { readdirSync, readFileSync } from 'node:fs'
import { launchChild } from '../../test/support/launcher.js'

/** The readiness poll, and short log tails (a report quotes them only when a server failed). */
const launchFigures = { readyPollIntervalMs: 100, tailLinesMax: 40, lineCharsMax: 400 } as const
const stopTimeoutMs = 30_000
const sampleLinesMax = 5
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
  /** Bound on the listening line and /readyz → 200 together, from the spawn. */
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
  /** The same per thread, by thread name (/proc/<pid>/task/<tid>/comm: `node` unless the thread named itself), if readable. */
  threadCpuSeconds(): ThreadCpu[] | undefined
  /** Last lines of stdout and stderr, for failure messages. */
  tail(): string
  /** SIGTERM, bounded wait, then SIGKILL. */
  stop(): Promise<StopReport>
}

function truncate(line: string): string {
  const { lineCharsMax } = launchFigures
  return line.length > lineCharsMax ? `${line.slice(0, lineCharsMax)}…` : line
}

function pinoLevel(line: string): number | undefined {
  const m = /"level":(\d+)/.exec(line)
  return m?.[1] === undefined ? undefined : Number(m[1])
}

/** One thread of a child and the CPU it has used. */
export interface ThreadCpu {
  tid: number
  /** Its name: the process's for the main thread and every thread that did not name itself. */
  name: string
  cpuS: number
}

function readThreadCpu(pid: number): ThreadCpu[] | undefined {
  try {
    const out: ThreadCpu[] = []
    for (const entry of readdirSync(`/proc/${pid}/task`)) {
      const tid = Number(entry)
      const cpuS = readCpuSeconds(pid, tid)
      if (cpuS === undefined) continue // the thread ended meanwhile
      let name = ''
      try {
        name = readFileSync(`/proc/${pid}/task/${tid}/comm`, 'utf8').trim()
      } catch {
        continue
      }
      out.push({ tid, name, cpuS })
    }
    return out
  } catch {
    return undefined
  }
}

/**
 * What each thread used between two readings: the main thread (its tid is
 * the pid), every named thread by name (the ingest workers name themselves),
 * and the rest together (DuckDB's threads, libuv's pool, V8's helpers), in
 * CPU seconds. Threads that started or ended between the two count from 0.
 */
export function threadCpuDelta(pid: number, before: readonly ThreadCpu[], after: readonly ThreadCpu[]): Array<{ name: string; cpuS: number }> {
  const was = new Map(before.map((t) => [t.tid, t.cpuS]))
  const process = after.find((t) => t.tid === pid)?.name
  const byName = new Map<string, number>()
  for (const t of after) {
    const d = t.cpuS - (was.get(t.tid) ?? 0)
    const name = t.tid === pid ? 'main' : t.name === process ? 'other' : t.name
    byName.set(name, (byName.get(name) ?? 0) + d)
  }
  const order = (n: string): number => (n === 'main' ? 0 : n === 'other' ? 2 : 1)
  return [...byName].map(([name, cpuS]) => ({ name, cpuS })).sort((a, b) => order(a.name) - order(b.name) || a.name.localeCompare(b.name))
}

function readCpuSeconds(pid: number, tid?: number): number | undefined {
  try {
    const stat = readFileSync(tid === undefined ? `/proc/${pid}/stat` : `/proc/${pid}/task/${tid}/stat`, 'utf8')
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

/** This process's environment plus `extra`, for a child server. */
export function childEnv(extra: Record<string, string>): Record<string, string> {
  const env: Record<string, string> = {}
  for (const [k, v] of Object.entries(process.env)) if (v !== undefined) env[k] = v
  return { ...env, ...extra }
}

/** Starts the child, waits for its listening line and for /readyz → 200. */
export async function startServer(spec: ServerSpec): Promise<RunningServer> {
  const logs: LogStats = { warnLines: 0, errorLines: 0, stderrLines: 0, samples: [] }
  const sample = (line: string): void => {
    if (logs.samples.length < sampleLinesMax) logs.samples.push(truncate(line))
  }
  const c = await launchChild({
    name: spec.name,
    cwd: spec.cwd,
    args: spec.args,
    env: spec.env,
    startTimeoutMs: spec.startTimeoutMs,
    ...launchFigures,
    killChildrenOnSignal: true,
    onStdoutLine: (line) => {
      const level = pinoLevel(line)
      if (level === undefined || level < pinoWarnLevel) return
      if (level > pinoWarnLevel) logs.errorLines++
      else logs.warnLines++
      sample(line)
    },
    onStderrLine: (line) => {
      if (line.trim() === '') return
      logs.stderrLines++
      sample(`stderr: ${line}`)
    },
  })

  const stop = async (): Promise<StopReport> => {
    if (c.hasExited()) return { ...(await c.exited), stopMs: 0, forced: false }
    const s0 = performance.now()
    const { exit, forced } = await c.signalAndWait('SIGTERM', stopTimeoutMs)
    return { ...exit, stopMs: performance.now() - s0, forced }
  }

  return {
    name: spec.name,
    pid: c.pid,
    url: c.url,
    listeningMs: c.listeningMs,
    readyMs: c.readyMs,
    logs,
    exited: c.hasExited,
    cpuSeconds: () => readCpuSeconds(c.pid),
    threadCpuSeconds: () => readThreadCpu(c.pid),
    tail: c.tail,
    stop,
  }
}
