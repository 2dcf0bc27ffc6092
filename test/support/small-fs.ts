// A small real file system for the disk-full tests: a tmpfs of a few MiB the
// test mounts (root only, as CI and the dev machines run), and a filler file
// that takes all but a chosen number of its free bytes, so ENOSPC can be driven
// into one step of the store, then given back.

import { execFileSync } from 'node:child_process'
import { closeSync, ftruncateSync, mkdtempSync, openSync, rmSync, statfsSync, writeSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import type { TestContext } from 'node:test'

export interface SmallFs {
  /** The mount point. */
  readonly dir: string
  /** Changes the file system's size (remount). */
  resize(mib: number): void
  /** Bytes free now (statfs: bavail × bsize). */
  freeBytes(): number
  /** Writes a filler file so that at most `leaveBytes` stay free (tmpfs counts whole pages); returns what is free after. */
  fill(leaveBytes?: number): number
  /** Removes the filler file. */
  unfill(): void
}

/** Bytes of zeros per write of the filler (tmpfs allocates pages as they are written: no sparse files). */
const FILL_CHUNK = 1024 * 1024

/** Mounts a tmpfs of `mib` MiB for the test (unmounted after it); a string says why it could not. */
export function mountTmpfs(t: TestContext, mib: number): SmallFs | string {
  if (process.getuid?.() !== 0) return 'not running as root: cannot mount a small file system'
  const dir = mkdtempSync(path.join(os.tmpdir(), 'tl-diskfull-'))
  try {
    execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${mib}m`, 'tmpfs', dir], { stdio: 'pipe' })
  } catch (err) {
    rmSync(dir, { recursive: true, force: true })
    return `mount -t tmpfs failed (${String((err as Error).message).split('\n')[0]}): no small file system to fill`
  }
  t.after(() => {
    execFileSync('umount', ['-l', dir], { stdio: 'pipe' })
    rmSync(dir, { recursive: true, force: true })
  })
  const filler = path.join(dir, 'filler')
  const freeBytes = () => {
    const st = statfsSync(dir)
    return st.bavail * st.bsize
  }
  return {
    dir,
    resize: (m) => execFileSync('mount', ['-o', `remount,size=${m}m`, dir], { stdio: 'pipe' }),
    freeBytes,
    fill(leaveBytes = 0) {
      const zeros = Buffer.alloc(FILL_CHUNK)
      const fd = openSync(filler, 'a')
      try {
        for (let i = 0; i < 1 << 20; i++) {
          const excess = freeBytes() - leaveBytes
          if (excess <= 0) break
          try {
            writeSync(fd, zeros, 0, Math.min(FILL_CHUNK, excess))
          } catch (err) {
            if ((err as NodeJS.ErrnoException).code === 'ENOSPC') break
            throw err
          }
        }
      } finally {
        closeSync(fd)
      }
      return freeBytes()
    },
    unfill() {
      try {
        const fd = openSync(filler, 'r+')
        ftruncateSync(fd, 0)
        closeSync(fd)
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err
      }
      rmSync(filler, { force: true })
    },
  }
}
