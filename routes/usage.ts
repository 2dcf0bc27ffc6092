// GET /v1/usage: exact totals for a window and filters. (The full query API,
// with group_by, time series and exports, grows here.)

import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { Type } from 'typebox'
import { parseFilter } from '../src/query/filters.js'
import { usageTotals } from '../src/query/read.js'
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
          'Totals outlive raw events: before the raw-event retention cutoff they come from 15-minute rollups, so there `from` and `to` must fall on 15-minute boundaries (400 otherwise); ' +
          'nothing is counted before the rollup retention cutoff.',
        tags: ['query'],
        querystring: Type.Object(QueryFilters, { additionalProperties: false }),
        response: { 200: Type.Object({ totals: Type.Ref('UsageTotals') }), ...commonErrors },
      },
    },
    async (request) => {
      const nowMs = clock.nowMs()
      const filter = parseFilter(request.query, {
        nowMs,
        eventRetentionMs: config.eventRetentionMs,
        maxFutureSkewMs: config.maxFutureSkewMs,
      })
      return { totals: await usageTotals(store, filter, 'auto', nowMs) }
    },
  )
}
