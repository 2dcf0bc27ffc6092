// The small file-system seam of the store: every file step the tiers take
// (list, stat, rename, remove, fsync) goes through it (StoreOptions.fs), so a
// test can substitute an implementation that fails at any step.
//
// Invariants:
// - `rename` is atomic within one file system (POSIX rename(2)); callers make
//   it durable with `syncDir` on the destination (and source) directory.
// - `remove` of a missing file is not an error (steps are re-run on recovery).

import fs from 'node:fs/promises'
import path from 'node:path'

export interface FileSystem {
  mkdirp(dir: string): Promise<void>
  list(dir: string): Promise<string[]>
  /** Size in bytes, or null when the file does not exist. */
  size(file: string): Promise<number | null>
  rename(from: string, to: string): Promise<void>
  remove(file: string): Promise<void>
  /** fsync(2) a file's data and metadata. */
  syncFile(file: string): Promise<void>
  /** fsync(2) a directory, making renames and unlinks in it durable. */
  syncDir(dir: string): Promise<void>
  /** Bytes an unprivileged process may still write on the file system holding `dir` (statfs(2): bavail × bsize). */
  freeBytes(dir: string): Promise<number>
}

/** `fn`'s result, or `missing` when it fails because the path does not exist. */
async function unlessMissing<T, M>(fn: () => Promise<T>, missing: M): Promise<T | M> {
  try {
    return await fn()
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return missing
    throw err
  }
}

/** fsync(2) through a handle opened with `flags` (directories open read-only). */
async function fsync(target: string, flags: 'r' | 'r+'): Promise<void> {
  const handle = await fs.open(target, flags)
  try {
    await handle.sync()
  } finally {
    await handle.close()
  }
}

export const nodeFileSystem: FileSystem = {
  async mkdirp(dir) {
    await fs.mkdir(dir, { recursive: true })
  },
  list: (dir) => unlessMissing(async () => (await fs.readdir(dir)).sort(), []),
  size: (file) => unlessMissing(async () => (await fs.stat(file)).size, null),
  async rename(from, to) {
    await fs.rename(from, to)
  },
  async remove(file) {
    await fs.rm(file, { force: true })
  },
  syncFile: (file) => fsync(file, 'r+'),
  syncDir: (dir) => fsync(dir, 'r'),
  async freeBytes(dir) {
    const st = await fs.statfs(dir)
    return st.bavail * st.bsize
  },
}

/**
 * Removes a DuckDB database file and any WAL beside it, then fsyncs their
 * directory, so the removal survives a crash. A missing file is not an error.
 */
export async function removeDurably(fs: FileSystem, file: string): Promise<void> {
  await fs.remove(file)
  await fs.remove(`${file}.wal`)
  await fs.syncDir(path.dirname(file))
}
