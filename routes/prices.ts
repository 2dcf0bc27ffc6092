// GET and PUT /v1/admin/prices: the price table events without a cost are
// priced by (src/pricing). Admin scope. A refused table names every entry and
// field at fault, and the table in use stays.

import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { Type } from 'typebox'
import { Errors } from '../src/errors.js'
import { MAX_PRICE_TABLE_BYTES, summary } from '../src/pricing/book.js'
import { MAX_PRICE_ENTRIES, PRICE_CLASSES } from '../src/pricing/table.js'
import { parseFilter } from '../src/query/filters.js'
import { MAX_REPRICE_WINDOW_MS } from '../src/store/reprice.js'
import { commonErrors } from './schemas.js'

const DAY_MS = 86_400_000

const Price = Type.String({ maxLength: 32, pattern: '^\\d+(\\.\\d+)?$', description: 'Exact decimal, at most 12 fractional digits.' })

const PriceEntry = Type.Object(
  {
    provider: Type.String({ minLength: 1, maxLength: 64 }),
    model: Type.String({ minLength: 1, maxLength: 128, description: 'The exact model name (for a pattern entry: one name the pattern matches).' }),
    model_pattern: Type.Optional(Type.String({ maxLength: 128, description: 'Glob for dated versions: `*` any run of characters, `?` one. An exact model entry wins over a pattern; the most specific pattern wins over others.' })),
    effective_from: Type.String({ maxLength: 40, description: 'RFC 3339: the entry prices events from this instant on (until a later entry of the same model).' }),
    currency: Type.String({ minLength: 3, maxLength: 3 }),
    per_million: Type.Object(Object.fromEntries(PRICE_CLASSES.map((c) => [c, c === 'input' || c === 'output' ? Price : Type.Optional(Price)])), {
      additionalProperties: false,
      description: 'Price per million tokens of each class. cache_read and cache_write default to input, reasoning to output.',
    }),
    per_request: Type.Optional(Price),
    source: Type.Optional(Type.String({ maxLength: 1024, description: 'Where the figures come from (a URL and the date read).' })),
  },
  { additionalProperties: false },
)

const PriceTableOut = Type.Object(
  {
    version: Type.Union([Type.String({ maxLength: 16 }), Type.Null()], { description: 'sha-256 of the canonical table (16 hex digits); null when no table is installed.' }),
    pricing: Type.String({ maxLength: 16, description: 'TOKENLEDGER_PRICING: off, missing (price events without a cost) or always.' }),
    prices: Type.Array(PriceEntry, { maxItems: MAX_PRICE_ENTRIES }),
  },
  { $id: 'PriceTable' },
)

const PriceRefusal = Type.Object(
  {
    statusCode: Type.Integer(),
    code: Type.String(),
    error: Type.String(),
    message: Type.String(),
    errors: Type.Array(Type.Object({ field: Type.String({ description: 'JSON pointer into the table, e.g. /prices/3/per_million/input.' }), message: Type.String() }), { maxItems: 100 }),
  },
  { description: 'The table was refused whole; the one in use is kept.' },
)

const RepriceReport = Type.Object(
  {
    from: Type.String(),
    to: Type.String(),
    version: Type.String({ description: 'The price table version the window was priced by.' }),
    mode: Type.String(),
    segments_examined: Type.Integer({ minimum: 0 }),
    segments_rewritten: Type.Integer({ minimum: 0 }),
    events_examined: Type.Integer({ minimum: 0 }),
    events_changed: Type.Integer({ minimum: 0 }),
    became_priced: Type.Integer({ minimum: 0, description: 'Events that had no cost and are priced now.' }),
    became_unknown: Type.Integer({ minimum: 0, description: 'Events that were priced and have no price now.' }),
    cost_before_by_currency: Type.Record(Type.String(), Type.String(), { description: "The changed events' costs before, summed per currency." }),
    cost_after_by_currency: Type.Record(Type.String(), Type.String(), { description: "The changed events' costs after, summed per currency." }),
    too_large: Type.Integer({ minimum: 0, description: 'Events whose price is not below 10^15, left as they were.' }),
    took_ms: Type.Integer({ minimum: 0 }),
  },
  { $id: 'RepriceReport' },
)

export const priceRoutes: FastifyPluginAsyncTypebox = async (app) => {
  const { prices, config, store, clock } = app

  app.post(
    '/v1/admin/reprice',
    {
      config: { scope: 'admin' },
      schema: {
        summary: 'Price the retained events of a window again, from the price table in use',
        description:
          'Recomputes the cost of every retained event of [from, to) that the table prices under TOKENLEDGER_PRICING (events without a reported cost; with `always`, every ' +
          'event it covers) and of priced events it no longer prices (they become unknown), with their rollups. The active segment is rolled over and sealed first when it holds ' +
          'events of the window; each archive holding changes is rewritten as a new file, recorded in the catalog in one transaction with its rollups, then renamed over the old one: ' +
          `a crash at any point leaves each segment's events and rollups in agreement (start-up finishes or discards the rewrite). At most ${MAX_REPRICE_WINDOW_MS / DAY_MS} days; ` +
          'ingest goes on (the write gate is never held); seals, retention and backups wait for each segment. One reprice at a time (409).',
        tags: ['admin'],
        querystring: Type.Object(
          {
            from: Type.String({ maxLength: 40, description: 'RFC 3339 or epoch milliseconds.' }),
            to: Type.Optional(Type.String({ maxLength: 40, description: 'RFC 3339 or epoch milliseconds; default: now.' })),
          },
          { additionalProperties: false },
        ),
        response: { 200: RepriceReport, 409: Type.Ref('Error'), ...commonErrors },
      },
    },
    async (request) => {
      const table = prices.current()
      if (table === null || config.pricing === 'off') throw new Errors.NoPrices()
      const nowMs = clock.nowMs()
      const window = parseFilter({ from: request.query.from, to: request.query.to ?? String(nowMs + config.maxFutureSkewMs) }, { nowMs, eventRetentionMs: config.eventRetentionMs, maxFutureSkewMs: config.maxFutureSkewMs })
      if (window.fromUs >= window.toUs) throw new Errors.BadQuery('`from` must be earlier than `to`')
      if (window.toUs - window.fromUs > MAX_REPRICE_WINDOW_MS * 1000) throw new Errors.BadQuery(`\`from\`..\`to\` spans more than ${MAX_REPRICE_WINDOW_MS / DAY_MS} days; reprice a longer period in several windows`)
      return store.reprice(window.fromUs, window.toUs, table, config.pricing)
    },
  )

  // The table is read by the strict JSON reader (duplicate keys refused), not Fastify's default parser.
  app.addContentTypeParser('application/json', { parseAs: 'string', bodyLimit: MAX_PRICE_TABLE_BYTES }, (_req, body, done) => done(null, body))

  app.get(
    '/v1/admin/prices',
    {
      config: { scope: 'admin' },
      schema: {
        summary: 'The price table in use, or a version that was',
        description: 'Every version ever in use is kept beside the table file, so the `price_ref` of a stored event (the version that priced it) can always be looked up: its entry is the one the lookup rule picks for the event\'s provider, model and timestamp.',
        tags: ['admin'],
        querystring: Type.Object({ version: Type.Optional(Type.String({ pattern: '^[0-9a-f]{16}$', 'x-allowed': '16 lowercase hex digits (the version an event\'s price_ref names)', description: 'A past version (from an event\'s price_ref).' })) }, { additionalProperties: false }),
        response: { 200: PriceTableOut, 404: Type.Ref('Error'), ...commonErrors },
      },
    },
    async (request) => {
      const asked = request.query.version
      if (asked === undefined) {
        const table = prices.current()
        return { version: table?.version ?? null, pricing: config.pricing, prices: table ? (JSON.parse(table.canonical) as { prices: unknown[] }).prices : [] } as never
      }
      const text = await prices.version(asked)
      if (text === null) throw new Errors.NotFound(`no price table version ${asked} was ever in use here`)
      return { version: asked, pricing: config.pricing, prices: (JSON.parse(text) as { prices: unknown[] }).prices } as never
    },
  )

  app.put(
    '/v1/admin/prices',
    {
      config: { scope: 'admin' },
      schema: {
        summary: 'Replace the price table',
        description:
          'Body: `{"currency":"USD","prices":[{provider, model, model_pattern?, effective_from?, currency?, per_million:{input, output, cache_read?, cache_write?, reasoning?}, per_request?, source?}]}`. ' +
          'Validated whole: a refused table (400) lists every entry and field at fault, and the table in use stays. An accepted one is written durably, then prices ' +
          'every event decoded after this answer. Events already stored keep their cost until `POST /v1/admin/reprice`.',
        tags: ['admin'],
        body: Type.Unknown({ description: 'The price table (JSON).' }),
        response: {
          200: Type.Object({
            version: Type.String({ maxLength: 16 }),
            previous_version: Type.Union([Type.String({ maxLength: 16 }), Type.Null()]),
            changed: Type.Boolean({ description: 'False when the table equals the one in use.' }),
            entries: Type.Integer({ minimum: 0 }),
          }),
          ...commonErrors,
          400: PriceRefusal,
        },
      },
    },
    async (request, reply) => {
      const replaced = await prices.replace(typeof request.body === 'string' ? request.body : '')
      if (!replaced.ok) {
        request.log.warn({ event: 'prices_refused', errors: replaced.errors.slice(0, 5) }, 'price table refused')
        return reply.code(400).send({ statusCode: 400, code: 'TL_BAD_PRICES', error: 'Bad Request', message: `price table refused, the one in use is kept: ${summary(replaced.errors)}`, errors: replaced.errors })
      }
      request.log.info({ event: 'prices_replaced', version: replaced.table.version, previous: replaced.previous, entries: replaced.table.entries.length }, 'price table replaced')
      return { version: replaced.table.version, previous_version: replaced.previous, changed: replaced.changed, entries: replaced.table.entries.length }
    },
  )
}
