// Start-up recovery: brings the data directory's files and the catalog into
// agreement and returns the retained segments, before the store takes any
// request.
//
// Invariants:
// - Files are the truth for active and pending segments, the catalog for
//   archived and deleted ones; every step is safe to repeat after a crash
//   inside it.
// - Seal outputs never published (`.tmp`) are removed; an archive the catalog
//   never recorded is removed and its pending file sealed again; a file
//   nothing explains is moved to orphaned/ for an operator, never deleted.
// - Exactly one active segment comes out, of the current schema: older
//   active files (a crash mid-rollover, or an upgrade) are moved to pending.

import path from 'node:path'
import type { Catalog } from './catalog.js'
import type { FileTier } from './files.js'
import { removeDurably, type FileSystem } from './fsops.js'
import { detailsPath, LEGACY_ACTIVE_FILE, parseSegmentFileName, relativeSegmentPath, segmentPath, tierDir, TIERS } from './layout.js'
import { segmentOptions, type StoreOptions } from './options.js'
import { eventColumns, isCurrentEventsTable } from './schema.js'
import { finishReprices } from './reprice.js'
import { Segment } from './segment.js'
import { computeStats } from './stats.js'
import { moveToPending, newEntry, type SegmentEntry } from './tiers.js'

/**
 * Start-up: brings files and catalog into agreement and returns the retained
 * segments. Files are the truth for active and pending segments, the catalog
 * for archived and deleted ones. Every step is safe to repeat.
 */
export async function recover(
  opts: StoreOptions,
  fs: FileSystem,
  files: FileTier,
  catalog: Catalog,
): Promise<{ entries: SegmentEntry[]; nextId: number }> {
  const log = opts.logger
  const dir = (tier: (typeof TIERS)[number]) => tierDir(opts.dataDir, tier)
  const segOpts = segmentOptions(opts)
  // Reprices first: a committed one's copy becomes the archive, an uncommitted one's is removed.
  await finishReprices(opts.dataDir, fs, catalog, log)
  const records = new Map((await catalog.list()).map((r) => [r.id, r]))
  let maxId = Math.max(0, ...records.keys())
  const idsIn = async (tier: 'active' | 'pending' | 'archive', kind: 'events' | 'details' = 'events'): Promise<number[]> => {
    const out: number[] = []
    for (const name of await fs.list(dir(tier))) {
      const parsed = parseSegmentFileName(name)
      if (!parsed) continue
      maxId = Math.max(maxId, parsed.id)
      if (parsed.suffix.includes('.tmp')) {
        // A seal that never published: its output is worthless.
        await fs.remove(path.join(dir(tier), name))
        log.warn({ event: 'recover_removed_tmp', file: name }, 'removed an unfinished seal output')
      } else if (parsed.suffix === '' && parsed.kind === kind) out.push(parsed.id)
    }
    return out
  }

  // The single-file store of the first release becomes an ordinary active segment.
  const legacy = path.join(dir('active'), LEGACY_ACTIVE_FILE)
  if ((await fs.size(legacy)) !== null) {
    const id = Math.max(maxId, ...(await idsIn('active')), ...(await idsIn('pending')), ...(await idsIn('archive'))) + 1
    if ((await fs.size(`${legacy}.wal`)) !== null) await fs.rename(`${legacy}.wal`, `${segmentPath(opts.dataDir, 'active', id)}.wal`)
    await fs.rename(legacy, segmentPath(opts.dataDir, 'active', id))
    await fs.syncDir(dir('active'))
    log.info({ event: 'recover_legacy', id }, 'adopted the single-file store as segment')
  }

  // Active: the newest file is the active segment; older ones were rolled
  // over but not yet moved (crash mid-rollover): close them properly, move on.
  const activeIds = await idsIn('active')
  for (const id of activeIds.slice(0, -1)) {
    const seg = await Segment.open(segmentPath(opts.dataDir, 'active', id), segOpts)
    await seg.close()
    await moveToPending(fs, opts.dataDir, id)
    log.warn({ event: 'recover_rolled', id }, 'moved a rolled-over segment to pending')
  }

  const archiveIds = new Set(await idsIn('archive'))
  const entries: SegmentEntry[] = []
  /** Takes a pending file in as a segment: attached, measured, recorded as pending unless the catalog has it archived. */
  const addPending = async (id: number): Promise<void> => {
    const rec = records.get(id)
    const file = segmentPath(opts.dataDir, 'pending', id)
    const entry = newEntry(id, 'pending', null)
    entry.file = await files.attach(id, file)
    const stats = await computeStats(files.probeConn, entry.file.alias)
    Object.assign(entry, { rowCount: stats.rowCount, minTsUs: stats.minTsUs, maxTsUs: stats.maxTsUs, bytes: await fs.size(file) })
    entry.createdMs = rec?.createdMs ?? opts.clock.nowMs()
    // When it became pending before the restart is not recorded: from now (a lower bound).
    entry.pendingSinceMs = opts.clock.nowMs()
    if (rec?.state !== 'archived') await catalog.putLive(id, 'pending', relativeSegmentPath('pending', id), entry.createdMs)
    entries.push(entry)
  }
  for (const id of await idsIn('pending')) {
    const rec = records.get(id)
    const file = segmentPath(opts.dataDir, 'pending', id)
    if (rec?.state === 'deleted' || (rec?.state === 'archived' && archiveIds.has(id))) {
      // Sealed (or expired) before the crash; only the removal of the pending file was left.
      await removeDurably(fs, file)
      log.info({ event: 'recover_pending_done', id, state: rec.state }, 'removed a pending file already sealed')
      continue
    }
    if (rec?.state !== 'archived' && archiveIds.has(id)) {
      // Published but not recorded: seal again from the pending file.
      await removeDurably(fs, segmentPath(opts.dataDir, 'archive', id))
      archiveIds.delete(id)
      log.warn({ event: 'recover_unrecorded_archive', id }, 'removed an archive the catalog never recorded; sealing again')
    }
    await addPending(id)
  }

  const dims = await catalog.dims()
  for (const id of archiveIds) {
    const rec = records.get(id)
    const file = segmentPath(opts.dataDir, 'archive', id)
    if (rec?.state === 'deleted') {
      await removeDurably(fs, file)
      log.info({ event: 'recover_deleted', id }, 'removed an archive the catalog had deleted')
      continue
    }
    if (rec?.state !== 'archived' || !rec.stats) {
      const to = path.join(dir('orphaned'), path.basename(file))
      await fs.rename(file, to)
      await fs.syncDir(dir('orphaned'))
      log.error({ event: 'recover_orphan', id, to }, 'an archive file nothing explains was moved aside for an operator')
      continue
    }
    const entry = newEntry(id, 'archived', null)
    entry.file = await files.attach(id, file)
    Object.assign(entry, {
      createdMs: rec.createdMs,
      rowCount: rec.stats.rowCount,
      minTsUs: rec.stats.minTsUs,
      maxTsUs: rec.stats.maxTsUs,
      bytes: rec.bytes,
      stats: rec.stats,
      dims: dims.get(id) ?? null,
      details: rec.details,
    })
    entries.push(entry)
  }

  // Detail files: kept when the catalog says the archived segment has one;
  // removed when it was expired, deleted, or its seal never recorded (sealing
  // runs again); moved aside when nothing explains them.
  for (const id of await idsIn('archive', 'details')) {
    const rec = records.get(id)
    const file = detailsPath(opts.dataDir, id)
    const entry = entries.find((e) => e.id === id && e.state === 'archived')
    if (entry && rec?.details === 'file') {
      entry.detailsFile = await files.attach(id, file)
      continue
    }
    if (rec !== undefined || entries.some((e) => e.id === id && e.state === 'pending')) {
      await removeDurably(fs, file)
      log.info({ event: 'recover_removed_details', id, state: rec?.state ?? 'pending', details: rec?.details ?? null }, 'removed a detail file the catalog no longer needs')
      continue
    }
    const to = path.join(dir('orphaned'), path.basename(file))
    await fs.rename(file, to)
    await fs.syncDir(dir('orphaned'))
    log.error({ event: 'recover_orphan', id, to }, 'a detail file nothing explains was moved aside for an operator')
  }
  for (const e of entries) {
    if (e.details === 'file' && e.detailsFile === null) {
      log.error({ event: 'recover_missing_details', id: e.id }, 'the catalog lists a detail file that is missing: details of this segment cannot be read')
    }
  }
  for (const rec of records.values()) {
    if (rec.state === 'archived' && !entries.some((e) => e.id === rec.id)) {
      log.error({ event: 'recover_missing_archive', id: rec.id, path: rec.path }, 'the catalog lists an archive whose file is missing: its raw events cannot be read (rollups remain)')
    }
    if ((rec.state === 'active' || rec.state === 'pending') && !entries.some((e) => e.id === rec.id) && !activeIds.includes(rec.id)) {
      await catalog.forget(rec.id)
    }
  }

  // The newest active file of an older schema version (an upgrade) takes no
  // appends: it is moved to pending like the older ones (sealing reads it
  // through the projection into a current archive), and a fresh one opens.
  let activeId = activeIds.at(-1) ?? maxId + 1
  maxId = Math.max(maxId, activeId)
  let live = await Segment.open(segmentPath(opts.dataDir, 'active', activeId), segOpts)
  const columns = await live.read((conn) => eventColumns(conn, null))
  if (!isCurrentEventsTable(columns)) {
    await live.close()
    await moveToPending(fs, opts.dataDir, activeId)
    await addPending(activeId)
    log.warn({ event: 'recover_older_schema', id: activeId, columns }, 'the active segment has an older schema: moved to pending, a new active segment opens')
    activeId = ++maxId
    live = await Segment.open(segmentPath(opts.dataDir, 'active', activeId), segOpts)
  }
  const active = newEntry(activeId, 'active', live)
  const stats = await live.read((conn) => computeStats(conn, null))
  Object.assign(active, { rowCount: stats.rowCount, minTsUs: stats.minTsUs, maxTsUs: stats.maxTsUs })
  if (stats.rowCount > 0) active.firstAppendMs = live.createdMs
  await catalog.putLive(activeId, 'active', relativeSegmentPath('active', activeId), live.createdMs)
  entries.push(active)
  entries.sort((a, b) => a.id - b.id)
  return { entries, nextId: maxId + 1 }
}
