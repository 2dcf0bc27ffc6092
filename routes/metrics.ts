// GET /metrics: Prometheus text format. (Open like the admin routes until the
// hardening issue scopes it; the service binds loopback by default.)

import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { Type } from 'typebox'

export const metricsRoutes: FastifyPluginAsyncTypebox = async (app) => {
  app.get(
    '/metrics',
    {
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
