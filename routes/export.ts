// GET /v1/export: every matching event as CSV, NDJSON or Parquet, streamed.
// HTTP only: the walk, the formats and the bounds are in src/query/export.ts.

import { randomUUID } from 'node:crypto'
import { createReadStream } from 'node:fs'
import { mkdir, rm, stat } from 'node:fs/promises'
import path from 'node:path'
import { Readable } from 'node:stream'
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { E_TIMEOUT, Semaphore, withTimeout } from 'async-mutex'
import { Type } from 'typebox'
import { Errors } from '../src/errors.js'
import { countEvents, csvHeader, csvRows, EXPORT_COLUMNS, EXPORT_FORMATS, ndjsonRows, walkEvents, writeParquet, type ExportFormat } from '../src/query/export.js'
import { parseFilter } from '../src/query/filters.js'
import { commonErrors, QueryFilters } from './schemas.js'

const CONTENT_TYPES: Record<ExportFormat, string> = {
  csv: 'text/csv; charset=utf-8',
  ndjson: 'application/x-ndjson; charset=utf-8',
  parquet: 'application/vnd.apache.parquet',
}

/** Exports running at once; past it, 503 with Retry-After (dashboards' queries keep the other query slots). */
const MAX_CONCURRENT_EXPORTS = 1
/** How long an export waits for the running one to finish before it is refused. */
const EXPORT_SLOT_WAIT_MS = 2000

/** `20261101T000000Z` from an RFC 3339 UTC timestamp: safe in a file name. */
const compact = (us: number): string => new Date(Math.floor(us / 1000)).toISOString().replace(/\.\d+/, '').replaceAll(/[-:]/g, '')

export const exportRoutes: FastifyPluginAsyncTypebox = async (app) => {
  const { config, store, clock } = app
  // Parquet files being written or sent; nothing in it outlives the process.
  const dir = path.join(config.dataDir, 'exports')
  await rm(dir, { recursive: true, force: true })
  await mkdir(dir, { recursive: true })
  const slots = withTimeout(new Semaphore(MAX_CONCURRENT_EXPORTS), EXPORT_SLOT_WAIT_MS, E_TIMEOUT)

  app.get(
    '/v1/export',
    {
      config: { scope: 'query' },
      // A HEAD would run the whole export only to throw it away.
      exposeHeadRoute: false,
      schema: {
        summary: 'Export the matching events (CSV, NDJSON or Parquet)',
        description:
          `Every event in [from, to) that matches the filters, oldest first by (timestamp, event_id), summary fields only (no \`detail\`), columns always in this order: ${EXPORT_COLUMNS.join(', ')}. ` +
          'CSV and NDJSON are streamed (cost as an exact decimal string, tags as JSON); Parquet is written by DuckDB (timestamp as UTC TIMESTAMPTZ, cost as DECIMAL(38,12)). ' +
          `An export holds at most TOKENLEDGER_EXPORT_MAX_EVENTS events (400 when the window holds more; if events ingested during a streamed export carry it past that, the transfer is broken off rather than cut short silently). ` +
          'One export runs at a time (503 with Retry-After otherwise). Values are exported exactly as stored: a CSV opened in a spreadsheet may treat a field starting with =, +, - or @ as a formula.',
        tags: ['query'],
        querystring: Type.Object({ ...QueryFilters, format: Type.Optional(Type.Union(EXPORT_FORMATS.map((f) => Type.Literal(f)), { default: 'csv' })) }, { additionalProperties: false }),
        response: {
          200: {
            description: 'The events, with Content-Disposition: attachment.',
            content: Object.fromEntries(EXPORT_FORMATS.map((f) => [CONTENT_TYPES[f], { schema: f === 'parquet' ? { type: 'string', format: 'binary' } : { type: 'string' } }])),
          },
          ...commonErrors,
        },
      },
    },
    async (request, reply) => {
      const { format: asked, ...filters } = request.query
      const format = (asked ?? 'csv') as ExportFormat
      // Parquet is written to the data directory's file system first: never into the disk floor that protects ingest.
      if (format === 'parquet' && store.lowOnDisk()) throw new Errors.Overloaded('free disk is below TOKENLEDGER_MIN_FREE_DISK; a Parquet export needs scratch space, CSV and NDJSON do not')
      const filter = parseFilter(filters, { nowMs: clock.nowMs(), eventRetentionMs: config.eventRetentionMs, maxFutureSkewMs: config.maxFutureSkewMs })
      // A client exporting one window after another finds the slot free again
      // within moments of its last byte; only a real overlap is refused.
      // `done` frees the slot; calling it again is a no-op (async-mutex releasers are idempotent).
      const [, done] = await slots.acquire().then(
        (r) => r,
        (err: unknown) => {
          throw err === E_TIMEOUT ? new Errors.QueryBusy() : err
        },
      )
      try {
        const n = await countEvents(store, filter)
        if (n > config.exportMaxEvents) {
          throw new Errors.QueryTooLarge(`the window and filters hold ${n} events; an export may hold at most ${config.exportMaxEvents} (TOKENLEDGER_EXPORT_MAX_EVENTS): narrow the window or the filters`)
        }
        const name = `tokenledger-events-${compact(filter.fromUs)}-${compact(filter.toUs)}.${format}`
        reply.header('content-type', CONTENT_TYPES[format]).header('content-disposition', `attachment; filename="${name}"`).header('cache-control', 'no-store')
        if (format === 'parquet') {
          const file = path.join(dir, `${randomUUID()}.parquet`)
          try {
            await writeParquet(store, filter, dir, file, config.exportMaxEvents, config.exportTimeoutMs)
            reply.header('content-length', String((await stat(file)).size))
          } catch (err) {
            await rm(file, { force: true })
            throw err
          }
          // Unlinked as soon as it is open: the stream reads it, nothing else can find it.
          const body = createReadStream(file)
          await new Promise<void>((resolve, reject) => body.once('open', () => resolve()).once('error', reject))
          await rm(file, { force: true })
          body.once('close', done)
          return reply.send(body)
        }
        const rows = format === 'csv' ? csvRows : ndjsonRows
        async function* chunks(): AsyncGenerator<string> {
          try {
            if (format === 'csv') yield csvHeader()
            for await (const page of walkEvents(store, filter, config.exportMaxEvents)) yield rows(page)
          } finally {
            done() // the walk is over (ended, failed, or the client went away)
          }
        }
        const body = Readable.from(chunks(), { objectMode: true, highWaterMark: 1 })
        body.once('close', done)
        body.once('error', (err) => request.log.warn({ err, event: 'export_broken_off' }, 'export stopped mid-stream'))
        return reply.send(body)
      } catch (err) {
        done()
        throw err
      }
    },
  )
}
