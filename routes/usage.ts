// GET /v1/usage: exact totals for a window and filters, optionally per group
// of dimension values; GET /v1/usage/timeseries: the same per local-calendar
// bucket; GET /v1/usage/dimensions: the values in use, for drop-downs.

import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { Type } from 'typebox'
import { parseFilter } from '../src/query/filters.js'
import { Errors } from '../src/errors.js'
import { formatTimestampUs } from '../src/ingest/timestamp.js'
import { DIMENSIONS, type Dimension } from '../src/query/filters.js'
import { effectiveFromUs } from '../src/query/window.js'
import { dimensionValues, MAX_GROUPS, MEASURES, timeseries, usage, type Count, type Totals, type UsageGroup } from '../src/query/read.js'
import { BUCKETS, bucketStarts, canonicalZone, DAY_MS, formatLocal, HOUR_MS, type Bucket } from '../src/query/calendar.js'
import { BUCKET_US } from '../src/store/catalog.js'
import { parseCost } from '../src/money.js'
import { commonErrors, QueryFilters } from './schemas.js'

const ORDER_BY = MEASURES
type OrderBy = (typeof ORDER_BY)[number]
const MAX_GROUPS_LISTED = 1000
const MAX_DIMENSION_VALUES = 1000
/** Most buckets in one time series. */
const MAX_BUCKETS = 10_000
/** Most series one time-series answer lists. */
const MAX_SERIES_LISTED = 100
/** Most points (series listed × buckets) in one time-series answer. */
const MAX_POINTS = 200_000
const FIFTEEN_MIN_MS = BUCKET_US / 1000
/** The longest a bucket of each size can be (a day across DST is 25 hours). */
const LONGEST_BUCKET_MS: Record<Bucket, number> = { '15m': FIFTEEN_MIN_MS, '1h': HOUR_MS, '1d': 25 * HOUR_MS, '1w': 7 * DAY_MS + HOUR_MS, '1mo': 31 * DAY_MS + HOUR_MS }
/** How far a series window may reach past the rollup retention window (a current month or quarter ending in the future). */
const SPAN_SLACK_MS = 62 * DAY_MS

const GroupBy = Type.Optional(
  Type.Array(Type.Union(DIMENSIONS.map((d) => Type.Literal(d))), {
    maxItems: DIMENSIONS.length,
    uniqueItems: true,
    description: 'Dimensions to group by (repeat the parameter).',
  }),
)

/** Largest first by the measure (cost: its exact value; a group with several currencies or only unknown costs has none and sorts last), then by key. */
function sortGroups<G extends { totals: Totals }>(groups: G[], by: OrderBy): G[] {
  const value = (g: G): bigint => {
    if (by !== 'cost') return BigInt(g.totals[by] as Count)
    const parsed = g.totals.cost === null ? null : parseCost(g.totals.cost)
    return parsed?.ok ? parsed.scaled : -1n
  }
  return groups
    .map((g, i) => ({ g, i, v: value(g) }))
    .sort((a, b) => (a.v === b.v ? a.i - b.i : a.v > b.v ? -1 : 1))
    .map((x) => x.g)
}

export const usageRoutes: FastifyPluginAsyncTypebox = async (app) => {
  const { config, store, clock } = app

  app.get(
    '/v1/usage',
    {
      config: { scope: 'query' },
      schema: {
        summary: 'Usage totals for a window',
        description:
          'Exact totals over the events in [from, to) that match every filter. A filter given several times means OR. ' +
          'Totals outlive raw events: before the raw-event retention cutoff they come from 15-minute rollups, so there `from` and `to` must fall on 15-minute boundaries (400 otherwise; ' +
          'a `from` at most 15 minutes before that cutoff is answered from the cutoff on, as `from` in the answer says); ' +
          'nothing is counted before the rollup retention cutoff.',
        tags: ['query'],
        querystring: Type.Object(
          {
            ...QueryFilters,
            group_by: GroupBy,
            order_by: Type.Optional(
              Type.Union(ORDER_BY.map((m) => Type.Literal(m)), { default: 'requests', description: 'Groups are sorted by this measure, largest first (then by key).' }),
            ),
            limit: Type.Optional(Type.Integer({ minimum: 1, maximum: MAX_GROUPS_LISTED, default: 100, description: 'Most groups returned; `group_count` tells how many there are.' })),
          },
          { additionalProperties: false },
        ),
        response: {
          200: Type.Object({
            from: Type.String({ maxLength: 40, description: 'The window answered, which may start later than asked: never before the rollup retention cutoff, and a `from` up to 15 minutes before the raw-event cutoff starts at that cutoff.' }),
            to: Type.String({ maxLength: 40 }),
            totals: Type.Ref('UsageTotals'),
            group_count: Type.Optional(Type.Integer({ minimum: 0, maximum: MAX_GROUPS })),
            groups: Type.Optional(
              Type.Array(
                Type.Object({
                  key: Type.Record(Type.String(), Type.Union([Type.String(), Type.Null()]), { description: 'The group\'s value of each group_by dimension (null: none).' }),
                  totals: Type.Ref('UsageTotals'),
                }),
                { maxItems: MAX_GROUPS_LISTED },
              ),
            ),
          }),
          ...commonErrors,
        },
      },
    },
    async (request) => {
      const nowMs = clock.nowMs()
      const { group_by: groupBy, order_by: orderBy, limit, ...filters } = request.query
      const filter = parseFilter(filters, {
        nowMs,
        eventRetentionMs: config.eventRetentionMs,
        maxFutureSkewMs: config.maxFutureSkewMs,
      })
      const fromUs = effectiveFromUs(filter.fromUs, store.cutoffs(nowMs))
      const answer = await usage(store, { ...filter, fromUs }, (groupBy ?? []) as Dimension[], 'auto', nowMs)
      if (answer.tooManyGroups) throw new Errors.BadQuery(`\`group_by\` gives more than ${MAX_GROUPS} groups; narrow the window or the filters`)
      const window = { from: formatTimestampUs(fromUs), to: formatTimestampUs(filter.toUs), totals: answer.totals }
      if (!groupBy || groupBy.length === 0) return window
      const groups = sortGroups(answer.groups, orderBy ?? 'requests').slice(0, limit ?? 100)
      return { ...window, group_count: answer.groups.length, groups }
    },
  )
  app.get(
    '/v1/usage/timeseries',
    {
      config: { scope: 'query' },
      schema: {
        summary: 'Usage per time bucket in a time zone',
        description:
          'The totals of /v1/usage per bucket of local calendar time in `tz`: 15m and 1h buckets start where the local clock reads a multiple of the unit ' +
          '(the hour repeated when clocks go back is two buckets, each labelled with its own offset), 1d at local midnight (23 or 25 hours across DST), ' +
          '1w at Monday midnight, 1mo at midnight of the first. Every bucket overlapping [from, to) is listed, with zeros where nothing happened; ' +
          'the first may start before `from` and counts only from `from` on. One series per group of `group_by` values (one series with an empty key without group_by), ' +
          'the `limit` largest by `order_by`. Same window rules and exactness as /v1/usage.',
        tags: ['query'],
        querystring: Type.Object(
          {
            ...QueryFilters,
            bucket: Type.Union(BUCKETS.map((b) => Type.Literal(b)), { description: 'Bucket size.' }),
            tz: Type.Optional(Type.String({ minLength: 1, maxLength: 64, default: 'UTC', description: 'IANA time zone, e.g. Europe/Berlin.' })),
            group_by: GroupBy,
            order_by: Type.Optional(
              Type.Union(ORDER_BY.map((m) => Type.Literal(m)), { default: 'requests', description: 'Series are chosen and sorted by this measure over the window, largest first (then by key).' }),
            ),
            limit: Type.Optional(
              Type.Integer({ minimum: 1, maximum: MAX_SERIES_LISTED, default: 10, description: `Most series returned; \`series_count\` tells how many there are. Series × buckets may not pass ${MAX_POINTS}.` }),
            ),
          },
          { additionalProperties: false },
        ),
        response: {
          200: Type.Object({
            from: Type.String({ maxLength: 40, description: 'The window answered (see /v1/usage).' }),
            to: Type.String({ maxLength: 40 }),
            bucket: Type.Union(BUCKETS.map((b) => Type.Literal(b))),
            tz: Type.String({ maxLength: 64, description: 'The zone, by its canonical name.' }),
            series_count: Type.Integer({ minimum: 0, maximum: MAX_GROUPS }),
            series: Type.Array(
              Type.Object({
                key: Type.Record(Type.String(), Type.Union([Type.String(), Type.Null()]), { description: 'The series\' value of each group_by dimension (null: none).' }),
                totals: Type.Ref('UsageTotals'),
                points: Type.Array(Type.Ref('UsagePoint'), { maxItems: MAX_BUCKETS }),
              }),
              { maxItems: MAX_SERIES_LISTED },
            ),
          }),
          ...commonErrors,
        },
      },
    },
    async (request) => {
      const nowMs = clock.nowMs()
      const { bucket, tz: tzAsked, group_by: groupBy, order_by: orderBy, limit: limitAsked, ...filters } = request.query
      const filter = parseFilter(filters, { nowMs, eventRetentionMs: config.eventRetentionMs, maxFutureSkewMs: config.maxFutureSkewMs })
      const tz = canonicalZone(tzAsked ?? 'UTC')
      if (tz === null) throw new Errors.BadQuery('`tz` is not an IANA time zone name (e.g. Europe/Berlin, America/St_Johns, UTC)')
      const limit = limitAsked ?? 10
      const fromUs = effectiveFromUs(filter.fromUs, store.cutoffs(nowMs))
      const window = { from: formatTimestampUs(fromUs), to: formatTimestampUs(filter.toUs), bucket: bucket as Bucket, tz }
      if (fromUs >= filter.toUs) return { ...window, series_count: 0, series: [] }
      // Refused before any calendar work: a far-off `to` must not cost a walk through centuries of zone rules.
      const spanMs = Math.ceil(filter.toUs / 1000) - Math.floor(fromUs / 1000)
      const tooManyBuckets = () => new Errors.BadQuery(`\`bucket\` ${bucket} gives more than ${MAX_BUCKETS} buckets in the window; use a larger bucket or a shorter window`)
      if (spanMs > MAX_BUCKETS * LONGEST_BUCKET_MS[bucket as Bucket]) throw tooManyBuckets()
      const maxSpanMs = config.rollupRetentionMs + SPAN_SLACK_MS
      if (spanMs > maxSpanMs) {
        throw new Errors.BadQuery(`\`to\` is more than ${Math.floor(maxSpanMs / DAY_MS)} days after \`from\` (the rollup retention window and two months): nothing is kept that long`)
      }
      const starts = bucketStarts(tz, bucket as Bucket, Math.floor(fromUs / 1000), Math.ceil(filter.toUs / 1000), MAX_BUCKETS)
      if (starts === null) throw tooManyBuckets()
      if (starts.startsMs.length * limit > MAX_POINTS) {
        throw new Errors.BadQuery(`\`limit\` ${limit} series × ${starts.startsMs.length} buckets is more than ${MAX_POINTS} points; lower the limit, use a larger bucket or a shorter window`)
      }
      // Totals are kept per 15 minutes (UTC): a bucket must be a whole number of them.
      const odd = starts.startsMs.findIndex((s) => s % FIFTEEN_MIN_MS !== 0)
      if (odd !== -1) {
        throw new Errors.BadQuery(`\`tz\` ${tz} has a bucket starting at ${formatLocal(starts.startsMs[odd]!, starts.offsetsMs[odd]!)}, off the 15-minute grid totals are kept in; no series can be exact there`)
      }
      const pick = (all: UsageGroup[]) => sortGroups(all, orderBy ?? 'requests').slice(0, limit)
      const answer = await timeseries(store, { ...filter, fromUs }, (groupBy ?? []) as Dimension[], starts.startsMs.map((s) => s * 1000), pick, 'auto', nowMs)
      if (answer.tooManyGroups) throw new Errors.BadQuery(`\`group_by\` gives more than ${MAX_GROUPS} series; narrow the window or the filters`)
      const labels = starts.startsMs.map((s, i) => formatLocal(s, starts.offsetsMs[i]!))
      const series = answer.series.map((s) => ({ key: s.key, totals: s.totals, points: s.points.map((p, i) => ({ start: labels[i]!, ...p })) }))
      return { ...window, series_count: answer.seriesCount, series }
    },
  )
  app.get(
    '/v1/usage/dimensions',
    {
      config: { scope: 'query' },
      schema: {
        summary: 'Distinct values of each dimension in a window (for dashboard drop-downs)',
        description:
          'For each dimension, the values that occur in [from, to) under the other filters, most used first, at most `limit` of them (`truncated` says when there are more). ' +
          'Events without a value (e.g. no team_id) are not listed.',
        tags: ['query'],
        querystring: Type.Object(
          { ...QueryFilters, limit: Type.Optional(Type.Integer({ minimum: 1, maximum: MAX_DIMENSION_VALUES, default: 100, description: 'Most values per dimension.' })) },
          { additionalProperties: false },
        ),
        response: {
          200: Type.Object({
            from: Type.String({ maxLength: 40 }),
            to: Type.String({ maxLength: 40 }),
            dimensions: Type.Object(
              Object.fromEntries(
                DIMENSIONS.map((d) => [
                  d,
                  Type.Object({
                    values: Type.Array(Type.String({ maxLength: 128 }), { maxItems: MAX_DIMENSION_VALUES }),
                    truncated: Type.Boolean(),
                  }),
                ]),
              ),
            ),
          }),
          ...commonErrors,
        },
      },
    },
    async (request) => {
      const nowMs = clock.nowMs()
      const { limit, ...filters } = request.query
      const filter = parseFilter(filters, { nowMs, eventRetentionMs: config.eventRetentionMs, maxFutureSkewMs: config.maxFutureSkewMs })
      const fromUs = effectiveFromUs(filter.fromUs, store.cutoffs(nowMs))
      const max = limit ?? 100
      // One exact grouped pass for every dimension (rollups for the sealed middle): values ranked by use.
      const found = await dimensionValues(store, { ...filter, fromUs }, nowMs)
      const dimensions: Record<string, { values: string[]; truncated: boolean }> = {}
      for (const dim of DIMENSIONS) {
        const values = found[dim]
        dimensions[dim] = { values: values.slice(0, max).map((v) => v.value), truncated: values.length > max }
      }
      return { from: formatTimestampUs(fromUs), to: formatTimestampUs(filter.toUs), dimensions }
    },
  )
}
