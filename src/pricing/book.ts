// The price table in use and its files: `prices.json` (TOKENLEDGER_PRICES_FILE)
// is the current table, read at start and replaced by PUT /v1/admin/prices;
// `prices-history/<version>.json` beside it keeps every version that was ever
// in use, so the `price_ref` of a stored event can always be explained.
//
// Invariants:
// - A table is in use only once it is durable: the history file and then the
//   current file are written to a temp name, fsynced, renamed and the
//   directory fsynced, before the decoder is told (onChange). A crash leaves
//   the old table or the new one, never a torn file.
// - A refused table changes nothing (its errors name entry and field).
// - One replacement at a time (a mutex): two PUTs never interleave their files.
// - A current file that is not a valid table stops the start with its errors:
//   a billing service never runs on prices it could not read.

import fs from 'node:fs/promises'
import path from 'node:path'
import { Mutex } from 'async-mutex'
import { JsonFault, readJson } from '../ingest/json.js'
import { parsePriceTable, type PriceFieldError, type PriceTable } from './table.js'

/** The largest price table file or body, in bytes. */
export const MAX_PRICE_TABLE_BYTES = 4 * 1024 * 1024

export type Replaced = { ok: true; table: PriceTable; previous: string | null; changed: boolean } | { ok: false; errors: PriceFieldError[] }

export class PriceBook {
  private readonly lock = new Mutex()

  private constructor(
    private readonly file: string,
    private table: PriceTable | null,
    private readonly onChange: (table: PriceTable | null) => void,
  ) {}

  /** Reads the current table (none when the file does not exist); throws naming the file and its errors when it is not valid. */
  static async open(file: string, onChange: (table: PriceTable | null) => void): Promise<PriceBook> {
    let text: string | null = null
    try {
      text = await fs.readFile(file, 'utf8')
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err
    }
    let table: PriceTable | null = null
    if (text !== null) {
      const res = parseText(text)
      if (!res.ok) throw new Error(`the price table ${file} is not valid (fix it, or remove it to run without prices): ${summary(res.errors)}`)
      table = res.table
    }
    const book = new PriceBook(file, table, onChange)
    if (table) await book.keepHistory(table)
    onChange(table)
    return book
  }

  current(): PriceTable | null {
    return this.table
  }

  /** The canonical text of a version that was in use, or null. */
  async version(version: string): Promise<string | null> {
    if (!/^[0-9a-f]{16}$/.test(version)) return null
    if (this.table?.version === version) return this.table.canonical
    try {
      return await fs.readFile(this.historyFile(version), 'utf8')
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null
      throw err
    }
  }

  /** Validates the table `text` and, when valid, makes it the table in use (durably, then the decoder). */
  replace(text: string): Promise<Replaced> {
    return this.lock.runExclusive(async () => {
      const res = parseText(text)
      if (!res.ok) return res
      const previous = this.table?.version ?? null
      if (previous === res.table.version) return { ok: true, table: this.table!, previous, changed: false }
      await this.keepHistory(res.table)
      await writeDurably(this.file, `${res.table.canonical}\n`)
      this.table = res.table
      this.onChange(res.table)
      return { ok: true, table: res.table, previous, changed: true }
    })
  }

  /**
   * Copies the table in use and every past version into `dir` (a backup's
   * target): `<dir>/prices.json` and `<dir>/prices-history/`, each written
   * durably, under the book's lock so no replacement interleaves. A server
   * started on `dir` with the default prices file prices as this one does and
   * can still explain every stored `price_ref`.
   */
  copyTo(dir: string): Promise<{ version: string | null; history: number }> {
    return this.lock.runExclusive(async () => {
      const history = path.dirname(this.historyFile('x'))
      let names: string[] = []
      try {
        names = (await fs.readdir(history)).filter((n) => /^[0-9a-f]{16}\.json$/.test(n))
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err
      }
      for (const name of names) await writeDurably(path.join(dir, 'prices-history', name), await fs.readFile(path.join(history, name), 'utf8'))
      if (this.table) await writeDurably(path.join(dir, 'prices.json'), `${this.table.canonical}\n`)
      return { version: this.table?.version ?? null, history: names.length }
    })
  }

  private historyFile(version: string): string {
    return path.join(path.dirname(this.file), 'prices-history', `${version}.json`)
  }

  private async keepHistory(table: PriceTable): Promise<void> {
    const file = this.historyFile(table.version)
    try {
      await fs.access(file)
      return
    } catch {
      await fs.mkdir(path.dirname(file), { recursive: true })
      await writeDurably(file, `${table.canonical}\n`)
    }
  }
}

/** A price table's text parsed strictly (duplicate keys are refused) and compiled. */
export function parseText(text: string): ReturnType<typeof parsePriceTable> {
  if (Buffer.byteLength(text) > MAX_PRICE_TABLE_BYTES) return { ok: false, errors: [{ field: '', message: `must be at most ${MAX_PRICE_TABLE_BYTES} bytes` }] }
  let value: unknown
  try {
    value = readJson(text, { maxDepth: 16, exactNumbers: false })
  } catch (err) {
    if (err instanceof JsonFault) return { ok: false, errors: [{ field: '', message: `not valid JSON: ${err.message}` }] }
    throw err
  }
  return parsePriceTable(value)
}

/** The first errors as one line. */
export function summary(errors: readonly PriceFieldError[]): string {
  const shown = errors.slice(0, 5).map((e) => `${e.field || '(table)'}: ${e.message}`)
  return shown.join('; ') + (errors.length > 5 ? `; and ${errors.length - 5} more` : '')
}

/** Writes `text` to `file` atomically and durably: temp file, fsync, rename, fsync of the directory. */
async function writeDurably(file: string, text: string): Promise<void> {
  const dir = path.dirname(file)
  await fs.mkdir(dir, { recursive: true })
  const tmp = `${file}.tmp`
  const handle = await fs.open(tmp, 'w')
  try {
    await handle.writeFile(text, 'utf8')
    await handle.sync()
  } finally {
    await handle.close()
  }
  await fs.rename(tmp, file)
  const d = await fs.open(dir, 'r')
  try {
    await d.sync()
  } finally {
    await d.close()
  }
}
