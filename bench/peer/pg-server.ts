// A throwaway PostgreSQL cluster for the ingest bench's peer (bench/peer/postgres.ts):
// initdb into a temp folder, pg_ctl start on a unix socket in that folder (no TCP
// port: nothing else on the machine can reach it), and pg_ctl stop -m immediate plus
// the folder's removal when the bench is done. PostgreSQL refuses to run as root, so
// when the bench runs as root the cluster runs as the `postgres` user (Debian's
// package creates it) or `nobody`. When initdb/pg_ctl are missing, Debian's
// `postgresql` package is installed with apt-get (the bench says so first).
//
// Durability is PostgreSQL's default (fsync on, synchronous_commit on, full page
// writes): the peer answers only after its commit is on disk, as tokenledger does.
//
// CPU: `cpuSeconds()` sums /proc/<pid>/stat of the postmaster and of every process
// whose parent it is (backends, WAL writer, checkpointer, …), plus the postmaster's
// cutime/cstime (children that ended meanwhile): PostgreSQL's whole share of the
// machine, for the peer's server CPU per event.
import { execFileSync, spawnSync } from 'node:child_process'
import { chmodSync, chownSync, existsSync, mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs'
import os from 'node:os'
import { join } from 'node:path'

const clockTicksPerS = 100
const startTimeoutS = 60

export interface PgCluster {
  /** The folder holding the socket (host for `pg`). */
  socketDir: string
  port: number
  user: string
  database: string
  postmasterPid: number
  /** CPU seconds of the postmaster and its children so far. */
  cpuSeconds(): number | undefined
  stop(): void
}

/** Where initdb and pg_ctl are: PATH, else the newest /usr/lib/postgresql/<v>/bin. */
function findBinDir(): string | undefined {
  const root = '/usr/lib/postgresql'
  if (existsSync(root)) {
    const versions = readdirSync(root)
      .filter((v) => existsSync(join(root, v, 'bin', 'pg_ctl')) && existsSync(join(root, v, 'bin', 'initdb')))
      .sort((a, b) => Number(b) - Number(a))
    if (versions[0] !== undefined) return join(root, versions[0], 'bin')
  }
  const which = spawnSync('sh', ['-c', 'command -v pg_ctl'], { encoding: 'utf8' })
  const p = which.stdout.trim()
  if (which.status === 0 && p !== '' && existsSync(p.replace(/pg_ctl$/, 'initdb'))) return p.replace(/\/pg_ctl$/, '')
  return undefined
}

function ensureInstalled(log: (line: string) => void): string {
  const found = findBinDir()
  if (found !== undefined) return found
  if (process.getuid?.() !== 0) throw new Error('PostgreSQL (initdb, pg_ctl) is not installed and the bench is not root: install Debian\'s postgresql package')
  log('PostgreSQL is not installed: apt-get install postgresql (Debian\'s package)')
  execFileSync('apt-get', ['update'], { stdio: 'ignore', timeout: 600_000 })
  execFileSync('apt-get', ['install', '-y', '--no-install-recommends', 'postgresql'], { stdio: 'ignore', timeout: 900_000, env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' } })
  const after = findBinDir()
  if (after === undefined) throw new Error('apt-get installed postgresql but no initdb/pg_ctl was found under /usr/lib/postgresql')
  return after
}

/** uid/gid to run the cluster as: ourselves unless root, then `postgres` or `nobody`. */
function runAs(): { uid: number; gid: number; name: string } | undefined {
  if (process.getuid?.() !== 0) return undefined
  const passwd = readFileSync('/etc/passwd', 'utf8').split('\n').map((l) => l.split(':'))
  for (const name of ['postgres', 'nobody']) {
    const row = passwd.find((r) => r[0] === name)
    if (row?.[2] !== undefined && row[3] !== undefined) return { uid: Number(row[2]), gid: Number(row[3]), name }
  }
  throw new Error('running as root and no postgres or nobody user to run PostgreSQL as')
}

function procCpu(pid: number, withChildren: boolean): number | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
    // utime 14, stime 15, cutime 16, cstime 17 (1-based over the whole line; here from field 3).
    const ticks = Number(f[11]) + Number(f[12]) + (withChildren ? Number(f[13]) + Number(f[14]) : 0)
    return Number.isFinite(ticks) ? ticks / clockTicksPerS : undefined
  } catch {
    return undefined
  }
}

function childrenOf(pid: number): number[] {
  const out: number[] = []
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8')
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1])
      if (ppid === pid) out.push(Number(entry))
    } catch {
      // ended meanwhile
    }
  }
  return out
}

/** Creates and starts a fresh cluster; throws with PostgreSQL's log when it does not come up. */
export function startPgCluster(log: (line: string) => void): PgCluster {
  const bin = ensureInstalled(log)
  const owner = runAs()
  const dir = mkdtempSync(join(os.tmpdir(), 'tokenledger-bench-pg-'))
  chmodSync(dir, 0o700)
  if (owner !== undefined) chownSync(dir, owner.uid, owner.gid)
  const dataDir = join(dir, 'data')
  const logFile = join(dir, 'postgres.log')
  const port = 5432
  const opts = { stdio: 'pipe' as const, encoding: 'utf8' as const, timeout: startTimeoutS * 1000, ...(owner === undefined ? {} : { uid: owner.uid, gid: owner.gid }), env: { ...process.env, LC_ALL: 'C' } }
  const user = owner?.name ?? os.userInfo().username
  try {
    execFileSync(join(bin, 'initdb'), ['-D', dataDir, '-U', user, '--auth=trust', '--no-instructions', '-E', 'UTF8', '--locale=C'], opts)
    const serverOpts = [`-k ${dir}`, "-c listen_addresses=''", `-p ${port}`, '-c fsync=on', '-c synchronous_commit=on', '-c max_connections=100'].join(' ')
    execFileSync(join(bin, 'pg_ctl'), ['-D', dataDir, '-l', logFile, '-o', serverOpts, '-w', '-t', String(startTimeoutS), 'start'], opts)
  } catch (err) {
    let pgLog = ''
    try {
      pgLog = readFileSync(logFile, 'utf8').slice(-2000)
    } catch {
      // no log yet
    }
    rmSync(dir, { recursive: true, force: true })
    const e = err as { stderr?: string; message: string }
    throw new Error(`PostgreSQL did not start: ${e.message} ${e.stderr ?? ''}\n${pgLog}`)
  }
  const postmasterPid = Number(readFileSync(join(dataDir, 'postmaster.pid'), 'utf8').split('\n')[0])
  let stopped = false
  return {
    socketDir: dir,
    port,
    user,
    database: 'postgres',
    postmasterPid,
    cpuSeconds: () => {
      const own = procCpu(postmasterPid, true)
      if (own === undefined) return undefined
      let sum = own
      for (const child of childrenOf(postmasterPid)) sum += procCpu(child, false) ?? 0
      return sum
    },
    stop: () => {
      if (stopped) return
      stopped = true
      try {
        execFileSync(join(bin, 'pg_ctl'), ['-D', dataDir, '-m', 'immediate', '-w', 'stop'], opts)
      } finally {
        rmSync(dir, { recursive: true, force: true })
      }
    },
  }
}
