// GET /metrics: Prometheus text format. Scope `metrics` (a scraper's token
// reads nothing else) or admin.

import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { Type } from 'typebox'

export const metricsRoutes: FastifyPluginAsyncTypebox = async (app) => {
  app.get(
    '/metrics',
    {
      config: { scope: 'metrics' },
      schema: {
        summary: 'Prometheus metrics',
        tags: ['operations'],
        produces: ['text/plain'],
        response: { 200: Type.String({ description: 'Prometheus text exposition format 0.0.4.' }) },
      },
    },
    async (_request, reply) => {
      const body = await app.metrics.metrics()
      return reply.type(app.metrics.contentType).send(body)
    },
  )
}
