// Online backup: a consistent copy of the store in another directory while
// ingest goes on; a server started on that directory serves every event that
// was acknowledged before the backup began, once.
//
// How:
// - Under the store's maintenance lock (no seal and no retention run changes
//   the catalog or the closed files meanwhile; rollovers go on, and the write
//   gate is never taken), one read snapshot pins every retained segment.
// - The catalog is copied by DuckDB (COPY FROM DATABASE, one transaction).
// - Closed files (archives, their detail files, pending files) are immutable:
//   hard-linked, or copied when the target is on another file system.
// - Live segments (the active one, and one rolled over but not yet closed) are
//   copied by DuckDB from a read transaction: every event committed before it
//   began is in it, and events appended since are not (they were acknowledged
//   after the backup began). The copies go to active/; start-up moves all but
//   the newest to pending/, as after a crash mid-rollover.
// - What lives beside the store (the price table and its history) is copied by
//   the caller's `extras` before the manifest, so a finished backup holds it.
// - Every copied file and directory is fsync'd; backup.json is written last
//   (temp, fsync, rename): a directory without it is not a finished backup.
//
// Invariants:
// - The target is an absolute path outside the data directory, new or empty.
// - One backup at a time. Lock order: the maintenance lock, then reads; the
//   gate is never taken, so appends never wait on a backup.

import { constants } from 'node:fs'
import { copyFile, link, mkdir, readdir, rename, stat, writeFile } from 'node:fs/promises'
import path from 'node:path'
import type { DuckDBConnection } from '@duckdb/node-api'
import { Errors } from '../errors.js'
import type { Logger } from '../log.js'
import type { Catalog, SegmentRecord } from './catalog.js'
import type { FileSystem } from './fsops.js'
import type { BackupReport, BackupSegment } from './reports.js'
import { CATALOG_FILE, detailsPath, segmentPath, tierDir, TIERS } from './layout.js'
import { ident, sqlString } from './relations.js'
import type { Snapshot } from './snapshot.js'

export interface BackupHost {
  readonly dataDir: string
  readonly fs: FileSystem
  readonly logger: Logger
  readonly catalog: Catalog
  /** Runs `fn` holding the maintenance lock (no seal or retention run meanwhile). */
  exclusive<T>(fn: () => Promise<T>): Promise<T>
  snapshot<T>(fn: (snap: Snapshot) => Promise<T>, opts: { timeoutMs: number }): Promise<T>
}

const MANIFEST = 'backup.json'

/** Checks the target: absolute, outside the data directory, new or empty. Creates it. */
async function prepareTarget(dataDir: string, dir: string): Promise<string> {
  if (!path.isAbsolute(dir)) throw new Errors.BadBody(`/dir: must be an absolute path, got "${dir}"`)
  const target = path.resolve(dir)
  const data = path.resolve(dataDir)
  const inside = (a: string, b: string) => a === b || a.startsWith(b + path.sep)
  if (inside(target, data) || inside(data, target)) throw new Errors.BadBody(`/dir: must be outside the data directory (${data}), and not contain it`)
  const parent = path.dirname(target)
  const parentStat = await stat(parent).catch(() => null)
  if (!parentStat?.isDirectory()) throw new Errors.BadBody(`/dir: its parent directory ${parent} does not exist`)
  const existing = await readdir(target).catch((err: NodeJS.ErrnoException) => (err.code === 'ENOENT' ? null : Promise.reject(err)))
  if (existing !== null && existing.length > 0) throw new Errors.BadBody(`/dir: ${target} exists and is not empty; back up into a new directory`)
  await mkdir(target, { recursive: true })
  for (const tier of TIERS) await mkdir(tierDir(target, tier), { recursive: true })
  return target
}

/** A hard link, or a copy when the target is on another file system; fsync'd. */
async function linkOrCopy(fs: FileSystem, from: string, to: string): Promise<'linked' | 'copied'> {
  try {
    await link(from, to)
    return 'linked'
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code
    if (code !== 'EXDEV' && code !== 'EPERM' && code !== 'ENOTSUP') throw err
    await copyFile(from, to, constants.COPYFILE_EXCL)
    await fs.syncFile(to)
    return 'copied'
  }
}

/**
 * Copies the database `name` (attached to `conn`'s instance) into a new file by
 * DuckDB, in one transaction (one snapshot of it), then checkpoints the copy.
 */
async function copyDatabase(conn: DuckDBConnection, name: string, file: string): Promise<void> {
  const alias = `backup_${process.pid}_${Date.now()}`
  await conn.run(`ATTACH ${sqlString(file)} AS ${ident(alias)}`)
  try {
    await conn.run('BEGIN TRANSACTION')
    try {
      await conn.run(`COPY FROM DATABASE ${ident(name)} TO ${ident(alias)}`)
    } finally {
      await conn.run('COMMIT').catch(() => conn.run('ROLLBACK').catch(() => undefined))
    }
    await conn.run(`CHECKPOINT ${ident(alias)}`)
  } finally {
    await conn.run(`DETACH ${ident(alias)}`)
  }
}

/** Copies a live segment's own database (read on `conn`) into `file`. */
async function snapshotLive(conn: DuckDBConnection, file: string): Promise<void> {
  const name = String((await conn.runAndReadAll('SELECT current_database()')).getRows()[0]![0])
  await copyDatabase(conn, name, file)
}

/** Copies what lives beside the store into a backup's target (the price table); its answer goes into the report. */
export type BackupExtras = (target: string) => Promise<BackupReport['prices']>

/** Writes a consistent copy of the store into `dir`; see the header. */
export async function backup(host: BackupHost, dir: string, timeoutMs: number, extras?: BackupExtras): Promise<BackupReport> {
  const started = performance.now()
  const startedAt = new Date().toISOString()
  const target = await prepareTarget(host.dataDir, dir)
  let heldMs = 0
  const segments = await host.exclusive(async () => {
    const t0 = performance.now()
    try {
      const records = new Map<number, SegmentRecord>((await host.catalog.list()).map((r) => [r.id, r]))
      return await host.snapshot(
        async (snap) => {
          const out: BackupSegment[] = []
          // The catalog first: the closed files it describes cannot change while the lock is held.
          await snap.files((conn) => copyDatabase(conn, 'catalog', path.join(target, CATALOG_FILE)))
          for (const part of snap.parts) {
            const rec = records.get(part.id)
            if (part.alias === null) {
              const file = segmentPath(target, 'active', part.id)
              await part.live((conn) => snapshotLive(conn, file))
              await host.fs.syncFile(file)
              out.push({ id: part.id, state: part.state, how: 'snapshot', bytes: (await host.fs.size(file)) ?? 0 })
              continue
            }
            const tier = part.state === 'archived' ? 'archive' : 'pending'
            const from = rec ? path.join(host.dataDir, rec.path) : segmentPath(host.dataDir, tier, part.id)
            const to = segmentPath(target, tier, part.id)
            const how = await linkOrCopy(host.fs, from, to)
            let bytes = (await host.fs.size(to)) ?? 0
            if (part.state === 'archived' && rec?.details === 'file' && part.detailsAt !== null && part.detailsAt.alias !== part.alias) {
              await linkOrCopy(host.fs, detailsPath(host.dataDir, part.id), detailsPath(target, part.id))
              bytes += (await host.fs.size(detailsPath(target, part.id))) ?? 0
            }
            out.push({ id: part.id, state: part.state, how, bytes })
          }
          return out
        },
        { timeoutMs },
      )
    } finally {
      heldMs = performance.now() - t0
    }
  })
  for (const tier of TIERS) await host.fs.syncDir(tierDir(target, tier))
  await host.fs.syncFile(path.join(target, CATALOG_FILE))
  const prices = extras ? await extras(target) : { version: null, history: 0 }
  const report: BackupReport = {
    dir: target,
    started_at: startedAt,
    segments,
    bytes: segments.reduce((n, s) => n + s.bytes, 0),
    prices,
    gate_held_ms: 0,
    maintenance_held_ms: Math.round(heldMs * 1000) / 1000,
    duration_ms: 0,
  }
  report.duration_ms = Math.round((performance.now() - started) * 1000) / 1000
  const tmp = path.join(target, `${MANIFEST}.tmp`)
  await writeFile(tmp, JSON.stringify(report, null, 2) + '\n', { flag: 'wx' })
  await host.fs.syncFile(tmp)
  await rename(tmp, path.join(target, MANIFEST))
  await host.fs.syncDir(target)
  host.logger.info({ event: 'backup', dir: target, segments: segments.length, bytes: report.bytes, ms: report.duration_ms, maintenanceMs: report.maintenance_held_ms }, 'backup written')
  return report
}
