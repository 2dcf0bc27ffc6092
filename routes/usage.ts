// GET /v1/usage: exact totals for a window and filters. (The full query API,
// with group_by, time series and exports, grows here.)

import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { Type } from 'typebox'
import { parseFilter } from '../src/query/filters.js'
import { formatTimestampUs } from '../src/ingest/timestamp.js'
import { effectiveFromUs, usageTotals } from '../src/query/read.js'
import { commonErrors, QueryFilters } from './schemas.js'

export const usageRoutes: FastifyPluginAsyncTypebox = async (app) => {
  const { config, store, clock } = app

  app.get(
    '/v1/usage',
    {
      schema: {
        summary: 'Usage totals for a window',
        description:
          'Exact totals over the events in [from, to) that match every filter. A filter given several times means OR. ' +
          'Totals outlive raw events: before the raw-event retention cutoff they come from 15-minute rollups, so there `from` and `to` must fall on 15-minute boundaries (400 otherwise; ' +
          'a `from` at most 15 minutes before that cutoff is answered from the cutoff on, as `from` in the answer says); ' +
          'nothing is counted before the rollup retention cutoff.',
        tags: ['query'],
        querystring: Type.Object(QueryFilters, { additionalProperties: false }),
        response: {
          200: Type.Object({
            from: Type.String({ maxLength: 40, description: 'The window answered, which may start later than asked: never before the rollup retention cutoff, and a `from` up to 15 minutes before the raw-event cutoff starts at that cutoff.' }),
            to: Type.String({ maxLength: 40 }),
            totals: Type.Ref('UsageTotals'),
          }),
          ...commonErrors,
        },
      },
    },
    async (request) => {
      const nowMs = clock.nowMs()
      const filter = parseFilter(request.query, {
        nowMs,
        eventRetentionMs: config.eventRetentionMs,
        maxFutureSkewMs: config.maxFutureSkewMs,
      })
      const fromUs = effectiveFromUs(filter.fromUs, store.cutoffs(nowMs))
      const totals = await usageTotals(store, { ...filter, fromUs }, 'auto', nowMs)
      return { from: formatTimestampUs(fromUs), to: formatTimestampUs(filter.toUs), totals }
    },
  )
}
