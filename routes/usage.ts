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
        description: 'Exact totals over the events in [from, to) that match every filter. A filter given several times means OR.',
        tags: ['query'],
        querystring: Type.Object(QueryFilters, { additionalProperties: false }),
        response: { 200: Type.Object({ totals: Type.Ref('UsageTotals') }), ...commonErrors },
      },
    },
    async (request) => {
      const filter = parseFilter(request.query, {
        nowMs: clock.nowMs(),
        eventRetentionMs: config.eventRetentionMs,
        maxFutureSkewMs: config.maxFutureSkewMs,
      })
      return { totals: await usageTotals(store, filter) }
    },
  )
}
