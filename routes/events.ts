// POST /v1/events (ingest), GET /v1/events (pages of events) and GET /v1/events/{event_id}.
// HTTP only: body formats (JSON, bare array, NDJSON, gzip), per-event
// validation results, status codes. The store does dedupe and durability.

import { PassThrough, type Readable } from 'node:stream'
import { createGunzip } from 'node:zlib'
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import sjson from 'secure-json-parse'
import { Type } from 'typebox'
import { Errors } from '../src/errors.js'
import { validateEvent } from '../src/ingest/event.js'
import { parseFilter } from '../src/query/filters.js'
import { decodeCursor, listEvents, MAX_LIST_LIMIT } from '../src/query/list.js'
import { getEvent } from '../src/query/read.js'
import type { EventResult, IndexedEvent } from '../src/store/store.js'
import { commonErrors, IngestBody, IngestResult, QueryFilters, UsageEventOut } from './schemas.js'

const NDJSON_TYPES = ['application/x-ndjson', 'application/ndjson', 'application/jsonl', 'application/x-jsonlines']

export const eventRoutes: FastifyPluginAsyncTypebox = async (app) => {
  const { config, store, clock } = app

  // Only JSON and NDJSON bodies: anything else is 415, not parsed as text.
  app.removeContentTypeParser(['text/plain'])
  for (const type of NDJSON_TYPES) {
    app.addContentTypeParser(type, { parseAs: 'string', bodyLimit: config.maxBodyBytes }, (_req, body, done) => {
      try {
        done(null, parseNdjson(body as string, config.maxBatchEvents))
      } catch (err) {
        done(err as Error, undefined)
      }
    })
  }

  app.post(
    '/v1/events',
    {
      config: { scope: 'ingest' },
      bodyLimit: config.maxBodyBytes,
      schema: {
        summary: 'Ingest a batch of usage events',
        description:
          'Answers only after the accepted events are committed to disk. Every event gets an outcome: accepted (counted), duplicate (same id and content: already stored), conflict (same id, different content: first write wins) or rejected (with the field and the reason).',
        tags: ['ingest'],
        consumes: ['application/json', ...NDJSON_TYPES],
        querystring: Type.Object(
          { atomic: Type.Optional(Type.Boolean({ default: false, description: 'Store nothing unless every event is acceptable (then 422).' })) },
          { additionalProperties: false },
        ),
        // Documented here, enforced per event by validateEvent (see app.ts's
        // validator compiler), so one bad event is reported, not the batch refused.
        body: IngestBody,
        response: {
          200: Type.Ref('IngestResult'),
          413: Type.Ref('Error'),
          415: Type.Ref('Error'),
          422: Type.Ref('IngestResult'),
          ...commonErrors,
        },
      },
      preParsing: async (request, _reply, payload) => decodeBody(request.headers['content-encoding'], payload),
    },
    async (request, reply) => {
      const events = batchOf(request.body)
      if (events.length > config.maxBatchEvents) throw new Errors.TooManyEvents(events.length, config.maxBatchEvents)
      const limits = { nowMs: clock.nowMs(), eventRetentionMs: config.eventRetentionMs, maxFutureSkewMs: config.maxFutureSkewMs }
      const valid: IndexedEvent[] = []
      const rejected: EventResult[] = []
      events.forEach((raw, index) => {
        const res = validateEvent(raw, limits)
        if (res.ok) valid.push({ index, event: res.event })
        else rejected.push({ index, event_id: res.eventId, status: 'rejected', errors: res.errors })
      })
      const atomic = request.query.atomic === true
      if (atomic && rejected.length > 0) {
        return reply.code(422).send({ accepted: 0, duplicates: 0, conflicts: 0, rejected: rejected.length, results: rejected })
      }
      // What the queued events hold in memory, roughly: the queue's byte bound counts this.
      const bytes = valid.reduce((n, v) => n + 512 + (v.event.detail?.length ?? 0) + (v.event.tags?.length ?? 0), 0)
      const outcome = await store.append({ events: valid, rejected, atomic, bytes })
      const { stored, ...body } = outcome
      return reply.code(stored ? 200 : 422).send(body)
    },
  )

  app.get(
    '/v1/events',
    {
      config: { scope: 'query' },
      schema: {
        summary: 'Matching events, newest first, in pages',
        description:
          'Events in [from, to) matching every filter, newest first by (timestamp, event_id), summary fields only (no `detail`). ' +
          'Pass `next_cursor` as `cursor` for the next page; it is null after the last page. A walk never repeats an event and never skips one that existed when it began, ' +
          'whatever is ingested meanwhile. Events older than the event retention window are never listed.',
        tags: ['query'],
        querystring: Type.Object(
          {
            ...QueryFilters,
            limit: Type.Optional(Type.Integer({ minimum: 1, maximum: MAX_LIST_LIMIT, default: 100, description: 'Events per page.' })),
            cursor: Type.Optional(Type.String({ minLength: 1, maxLength: 400, description: 'The previous page\'s `next_cursor`.' })),
            source: Type.Optional(
              Type.Union([Type.Literal('all'), Type.Literal('hot'), Type.Literal('archive')], {
                default: 'all',
                description: '`hot`: the active and pending segments only; `archive`: sealed segments only.',
              }),
            ),
          },
          { additionalProperties: false },
        ),
        response: {
          200: Type.Object({
            events: Type.Array(Type.Ref('UsageEventOut'), { maxItems: MAX_LIST_LIMIT }),
            next_cursor: Type.Union([Type.String({ maxLength: 400 }), Type.Null()]),
          }),
          ...commonErrors,
        },
      },
    },
    async (request) => {
      const { limit, cursor, source, ...filters } = request.query
      const filter = parseFilter(filters, { nowMs: clock.nowMs(), eventRetentionMs: config.eventRetentionMs, maxFutureSkewMs: config.maxFutureSkewMs })
      return listEvents(store, filter, { limit: limit ?? 100, cursor: cursor === undefined ? null : decodeCursor(cursor), source: source ?? 'all' })
    },
  )

  app.get(
    '/v1/events/:event_id',
    {
      config: { scope: 'query' },
      schema: {
        summary: 'One event, with its detail while that is retained',
        tags: ['query'],
        params: Type.Object({ event_id: Type.String({ minLength: 1, maxLength: 128 }) }),
        response: { 200: Type.Ref('UsageEventOut'), 404: Type.Ref('Error'), ...commonErrors },
      },
    },
    async (request) => {
      const event = await getEvent(store, request.params.event_id)
      if (!event) throw new Errors.NotFound(`no retained event with id "${request.params.event_id}"`)
      return event
    },
  )
}

/** Accepts {"events":[...]} or a bare array; anything else is a malformed body. */
function batchOf(body: unknown): unknown[] {
  if (Array.isArray(body)) return body
  if (typeof body === 'object' && body !== null) {
    const keys = Object.keys(body)
    const events = (body as { events?: unknown }).events
    if (keys.length === 1 && keys[0] === 'events' && Array.isArray(events)) return events
    const extra = keys.find((k) => k !== 'events')
    if (extra !== undefined) throw new Errors.BadBody(`unknown top-level field "${extra.slice(0, 64)}"; the body is {"events":[...]}, a JSON array, or NDJSON`)
  }
  throw new Errors.BadBody('expected {"events":[...]}, a JSON array of events, or NDJSON')
}

function parseNdjson(text: string, maxEvents: number): unknown[] {
  const out: unknown[] = []
  let line = 0
  for (const raw of text.split('\n')) {
    line++
    const trimmed = raw.trim()
    if (trimmed === '') continue
    if (out.length >= maxEvents) throw new Errors.TooManyEvents(out.length + 1, maxEvents)
    try {
      out.push(sjson.parse(trimmed, undefined, { protoAction: 'error', constructorAction: 'error' }))
    } catch (err) {
      throw new Errors.BadBody(`NDJSON line ${line} is not valid JSON: ${(err as Error).message.slice(0, 200)}`)
    }
  }
  return out
}

/** gzip and identity are accepted; the decoded bytes count against bodyLimit. */
function decodeBody(encoding: string | undefined, payload: Readable): Readable {
  const enc = (encoding ?? 'identity').trim().toLowerCase()
  if (enc === 'identity' || enc === '') return payload
  if (enc !== 'gzip' && enc !== 'x-gzip') throw new Errors.UnsupportedEncoding(enc.slice(0, 32))
  const gunzip = createGunzip()
  const out = new PassThrough() as PassThrough & { receivedEncodedLength: number }
  out.receivedEncodedLength = 0
  payload.on('data', (chunk: Buffer) => (out.receivedEncodedLength += chunk.length))
  payload.on('error', (err) => out.destroy(err))
  gunzip.on('error', (err) => out.destroy(new Errors.BadBody(`invalid gzip: ${err.message}`)))
  payload.pipe(gunzip).pipe(out)
  return out
}
