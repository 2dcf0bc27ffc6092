// POST /v1/events (ingest), GET /v1/events (pages of events) and GET /v1/events/{event_id}.
// HTTP only: body formats (JSON, bare array, NDJSON, gzip), per-event
// validation results, status codes. The store does dedupe and durability.

import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { Type } from 'typebox'
import { Errors } from '../src/errors.js'
import { parseFilter } from '../src/query/filters.js'
import { decodeCursor, listEvents, MAX_LIST_LIMIT } from '../src/query/list.js'
import { getEvent } from '../src/query/read.js'
import { acceptBodies, rawBody } from './ingest-body.js'
import { commonErrors, IngestBody, QueryFilters } from './schemas.js'

const NDJSON_TYPES = ['application/x-ndjson', 'application/ndjson', 'application/jsonl', 'application/x-jsonlines']

export const eventRoutes: FastifyPluginAsyncTypebox = async (app) => {
  const { config, store, clock } = app

  // Only JSON and NDJSON bodies: anything else is 415, not parsed as text.
  // Bodies are read as bytes here and decoded (parsed, validated, encoded) by
  // the shared decoder: on ingest worker threads unless TOKENLEDGER_INGEST_WORKERS=0.
  const door = acceptBodies(app, [
    [['application/json'], 'json'],
    [NDJSON_TYPES, 'ndjson'],
  ])

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
          408: Type.Ref('Error'),
          413: Type.Ref('Error'),
          415: Type.Ref('Error'),
          422: Type.Ref('IngestResult'),
          429: Type.Ref('Error'),
          ...commonErrors,
        },
      },
      preParsing: async (request, _reply, payload) => door.decode(request, payload),
    },
    async (request, reply) => {
      // No Content-Type parser ran when the request had no body at all: decoded as an empty one (400).
      const body = rawBody(request, 'json')
      const { outcome } = await app.intake.submit(body.raw, body.format, 'native', request.query.atomic === true)
      const { stored, ...answer } = outcome
      return reply.code(stored ? 200 : 422).send(answer)
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
