// A fixed set of DuckDB connections lent out one caller at a time.
//
// Invariants:
// - At most `size` callers hold a connection; the others wait in FIFO order
//   (async-mutex Semaphore), so a burst of reads is bounded, never refused.
// - A connection is returned when `fn` settles, whether it resolved or threw.

import { Semaphore } from 'async-mutex'
import type { DuckDBConnection } from '@duckdb/node-api'

export class ConnectionPool {
  private readonly free: DuckDBConnection[]
  private readonly slots: Semaphore

  constructor(private readonly all: readonly DuckDBConnection[]) {
    this.free = [...all]
    this.slots = new Semaphore(all.length)
  }

  /** Runs `fn` on a free connection, waiting for one if all are lent out. */
  async run<T>(fn: (conn: DuckDBConnection) => Promise<T>): Promise<T> {
    const [, release] = await this.slots.acquire()
    const conn = this.free.pop()!
    try {
      return await fn(conn)
    } finally {
      this.free.push(conn)
      release()
    }
  }

  /** Closes every connection (callers must be done with them). */
  closeAll(): void {
    for (const c of this.all) c.closeSync()
  }
}
