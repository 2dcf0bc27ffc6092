// What watches the server during bench/overload.ts's overload phase, besides the
// /healthz probers (healthz.ts): query clients (a dashboard's calls, one at a time each),
// and a sampler of the child's RSS and CPU, its queue (GET /v1/status) and its listen
// socket's accept queue, every second.
import { execFile } from 'node:child_process'
import { readFileSync } from 'node:fs'
import http from 'node:http'
import type { RunningServer } from './child.js'
import { rssMiB } from './cli.js'
import { KEY_COUNT } from './events.js'
import { httpCall, NoAnswer, type Answer } from './http-call.js'
import { addCount, clip, nowAbsMs, samplesMax, sleep, type Tokens } from './overload-common.js'

export const queryTimeoutMs = 30_000
/** Pause between one query client's calls (a dashboard, not a tight loop). */
export const queryPauseMs = 200
export const samplerIntervalMs = 1_000
const statusTimeoutMs = 2_000
const BUCKET_15M_MS = 900_000
const HOUR_MS = 3_600_000

/** TcpExt ListenOverflows of this network namespace (every listener, not only the server's), if readable. */
export function listenOverflows(): number | undefined {
  try {
    const lines = readFileSync('/proc/net/netstat', 'utf8').split('\n').filter((l) => l.startsWith('TcpExt:'))
    const names = lines[0]?.split(/\s+/) ?? []
    const values = lines[1]?.split(/\s+/) ?? []
    const i = names.indexOf('ListenOverflows')
    return i > 0 && values[i] !== undefined ? Number(values[i]) : undefined
  } catch {
    return undefined
  }
}

/**
 * The server's listening socket from `ss` (netlink, filtered in the kernel, run
 * asynchronously): connections waiting to be accepted and the backlog bound. Not
 * /proc/net/tcp: with thousands of client sockets and TIME_WAITs it is megabytes to
 * read and split on the generator's thread every second.
 */
function acceptQueue(port: number): Promise<{ waiting: number; backlog: number } | undefined> {
  return new Promise((resolve) => {
    execFile('ss', ['-ltnH', `sport = :${port}`], { timeout: 2_000 }, (err, stdout) => {
      // State Recv-Q Send-Q Local Peer; for a listener Recv-Q is the accept queue, Send-Q its bound.
      const f = err === null ? stdout.trim().split(/\s+/) : []
      const waiting = Number(f[1])
      const backlog = Number(f[2])
      resolve(f[0] === 'LISTEN' && Number.isInteger(waiting) && Number.isInteger(backlog) ? { waiting, backlog } : undefined)
    })
  })
}

// ---------------------------------------------------------------------------- query clients

interface QueryKind {
  name: string
  path: (nowMs: number) => string
}

export function queryKinds(runStartMs: number): QueryKind[] {
  const floor15 = (ms: number): number => Math.floor(ms / BUCKET_15M_MS) * BUCKET_15M_MS
  let keyNo = 0
  return [
    { name: 'usage totals by key', path: (now) => `/v1/usage?from=${floor15(runStartMs - HOUR_MS)}&to=${now + 60_000}&group_by=key_id` },
    { name: 'timeseries 15m by model', path: (now) => `/v1/usage/timeseries?bucket=15m&tz=UTC&group_by=model&from=${floor15(now - 6 * HOUR_MS)}&to=${floor15(now) + BUCKET_15M_MS}` },
    { name: 'newest events page', path: () => '/v1/events?limit=100' },
    { name: 'events page, one key', path: () => `/v1/events?limit=100&key_id=key_${keyNo++ % KEY_COUNT}` },
  ]
}

interface QueryFigures {
  latenciesMs: number[]
  statuses: Record<string, number>
  samples: string[]
}

export class QueryClients {
  readonly figures = new Map<string, QueryFigures>()
  private stopped = false
  private readonly loops: Promise<void>[] = []
  private readonly agent = new http.Agent({ keepAlive: true })

  constructor(
    private readonly base: URL,
    private readonly headers: Record<string, string>,
    private readonly kinds: QueryKind[],
  ) {
    for (const k of kinds) this.figures.set(k.name, { latenciesMs: [], statuses: {}, samples: [] })
  }

  start(clients: number): void {
    for (let c = 0; c < clients; c++) this.loops.push(this.loop(c))
  }

  private async loop(client: number): Promise<void> {
    let i = client // clients start on different kinds
    while (!this.stopped) {
      const kind = this.kinds[i++ % this.kinds.length]!
      const f = this.figures.get(kind.name)!
      const t0 = performance.now()
      try {
        const a = await httpCall({ agent: this.agent, base: this.base, method: 'GET', path: kind.path(Date.now()), headers: this.headers, timeoutMs: queryTimeoutMs })
        f.latenciesMs.push(performance.now() - t0)
        addCount(f.statuses, String(a.status))
        if (a.status !== 200 && f.samples.length < samplesMax) f.samples.push(`${a.status} ${clip(a.body)}`)
      } catch (err) {
        addCount(f.statuses, err instanceof NoAnswer ? err.kind : 'error')
        if (f.samples.length < samplesMax) f.samples.push(clip(String(err)))
      }
      await sleep(queryPauseMs)
    }
  }

  async stop(): Promise<void> {
    this.stopped = true
    await Promise.allSettled(this.loops)
    this.agent.destroy()
  }
}

// ---------------------------------------------------------------------------- RSS / CPU / queue sampler

export interface Sample {
  atAbs: number
  rssMiB: number | undefined
  acceptWaiting: number | undefined
  backlog: number | undefined
  cpuS: number | undefined
  queuedEvents: number | undefined
  committedEvents: number | undefined
  rollovers: number | undefined
}

export interface StatusAnswer {
  ingest?: { queued_events?: number; committed_events?: number }
  rollovers?: number
  tiers?: { active?: number; pending?: number; archived?: number }
  sealing?: { sealed?: number; backlog?: number; failures?: number }
}

/** GET /v1/status with the query token, or the admin token if the query token is refused (once auth lands). */
export class StatusReader {
  private token: string
  constructor(
    private readonly base: URL,
    private readonly tokens: Tokens,
    private readonly agent: http.Agent,
  ) {
    this.token = tokens.query
  }

  async read(timeoutMs = statusTimeoutMs): Promise<StatusAnswer | undefined> {
    const get = (token: string): Promise<Answer> => httpCall({ agent: this.agent, base: this.base, method: 'GET', path: '/v1/status', headers: { authorization: `Bearer ${token}` }, timeoutMs })
    try {
      let a = await get(this.token)
      if ((a.status === 401 || a.status === 403) && this.token !== this.tokens.admin) {
        this.token = this.tokens.admin
        a = await get(this.token)
      }
      return a.status === 200 ? (JSON.parse(a.body) as StatusAnswer) : undefined
    } catch {
      return undefined
    }
  }
}

export class Sampler {
  readonly samples: Sample[] = []
  private timer: NodeJS.Timeout | undefined
  private busy = false

  private readonly port: number

  constructor(
    private readonly server: RunningServer,
    private readonly status: StatusReader,
  ) {
    this.port = Number(new URL(server.url).port)
  }

  start(): void {
    const take = (): void => {
      if (this.busy) return // the previous /v1/status is still out: skip a beat rather than pile up
      this.busy = true
      const s: Sample = { atAbs: nowAbsMs(), rssMiB: rssMiB(this.server.pid), acceptWaiting: undefined, backlog: undefined, cpuS: this.server.cpuSeconds(), queuedEvents: undefined, committedEvents: undefined, rollovers: undefined }
      this.samples.push(s)
      void Promise.all([this.status.read(), acceptQueue(this.port)]).then(([st, q]) => {
        s.queuedEvents = st?.ingest?.queued_events
        s.committedEvents = st?.ingest?.committed_events
        s.rollovers = st?.rollovers
        s.acceptWaiting = q?.waiting
        s.backlog = q?.backlog
        this.busy = false
      })
    }
    take()
    this.timer = setInterval(take, samplerIntervalMs)
  }

  stop(): void {
    if (this.timer !== undefined) clearInterval(this.timer)
  }
}
