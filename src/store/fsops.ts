// The small file-system seam of the store: every file step the tiers take
// (list, stat, rename, remove, fsync) goes through it, so tests can inject a
// fault at any step (a fault-injecting implementation lives in test/support).
//
// Invariants:
// - `rename` is atomic within one file system (POSIX rename(2)); callers make
//   it durable with `syncDir` on the destination (and source) directory.
// - `remove` of a missing file is not an error (steps are re-run on recovery).

import fs from 'node:fs/promises'

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
  /** Free bytes on the file system holding `dir`. */
  freeBytes(dir: string): Promise<number>
}

export const nodeFileSystem: FileSystem = {
  async mkdirp(dir) {
    await fs.mkdir(dir, { recursive: true })
  },
  async list(dir) {
    try {
      return (await fs.readdir(dir)).sort()
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return []
      throw err
    }
  },
  async size(file) {
    try {
      return (await fs.stat(file)).size
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null
      throw err
    }
  },
  async rename(from, to) {
    await fs.rename(from, to)
  },
  async remove(file) {
    await fs.rm(file, { force: true })
  },
  async syncFile(file) {
    const handle = await fs.open(file, 'r+')
    try {
      await handle.sync()
    } finally {
      await handle.close()
    }
  },
  async syncDir(dir) {
    const handle = await fs.open(dir, 'r')
    try {
      await handle.sync()
    } finally {
      await handle.close()
    }
  },
  async freeBytes(dir) {
    const s = await fs.statfs(dir)
    return s.bavail * s.bsize
  },
}
