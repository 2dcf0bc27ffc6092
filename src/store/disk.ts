// Reading the data directory's free space, bounded: a statfs that fails or
// hangs (a wedged network mount) must not freeze the reading. Each read is
// given DISK_READ_TIMEOUT_MS; past it, or on an error, the reading is
// unknown (not the last good value, which would go stale while the disk
// fills), the store refuses ingest while its floor is on (it cannot show it
// is above it), and the next sample tries again: a hung call is abandoned,
// never awaited by later samples or by shutdown.

import type { FileSystem } from './fsops.js'

/** Longest one free-space read may take before it counts as failed. */
export const DISK_READ_TIMEOUT_MS = 5_000

/** Directories whose last statfs has not answered yet, and since when. */
const hung = new Map<string, number>()

/** The free bytes of `dir`'s file system, or the reason they are unknown. */
export async function readFreeBytes(fs: FileSystem, dir: string, timeoutMs = DISK_READ_TIMEOUT_MS): Promise<{ ok: true; bytes: number } | { ok: false; reason: string }> {
  // A call that hung is not joined by another: one stuck statfs per directory at most (each holds a libuv thread).
  const hungSinceMs = hung.get(dir)
  if (hungSinceMs !== undefined) return { ok: false, reason: `statfs has not answered for ${Math.round(performance.now() - hungSinceMs)} ms` }
  let settled = false
  const call = fs.freeBytes(dir).finally(() => {
    settled = true
    hung.delete(dir)
  })
  let timer: NodeJS.Timeout | undefined
  const timeout = new Promise<{ ok: false; reason: string }>((resolve) => {
    timer = setTimeout(() => resolve({ ok: false, reason: `statfs did not answer within ${timeoutMs} ms` }), timeoutMs)
    timer.unref()
  })
  try {
    return await Promise.race([
      call.then(
        (bytes) => (Number.isFinite(bytes) && bytes >= 0 ? { ok: true as const, bytes } : { ok: false as const, reason: `statfs gave ${bytes}` }),
        (err: unknown) => ({ ok: false as const, reason: `statfs failed: ${String((err as Error)?.message ?? err).slice(0, 200)}` }),
      ),
      timeout,
    ])
  } finally {
    clearTimeout(timer)
    if (!settled) hung.set(dir, performance.now() - timeoutMs)
  }
}
