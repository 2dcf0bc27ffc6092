// Liveness and readiness for load balancers. Both are open (no auth).
// /healthz: the process is alive and its event loop answers.
// /readyz: the store is open and writable and the service is not draining.

import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { Type } from 'typebox'

const Readiness = Type.Object({
  status: Type.Union([Type.Literal('ready'), Type.Literal('unready')]),
  reasons: Type.Array(Type.String({ maxLength: 512 }), { maxItems: 32 }),
})

export const healthRoutes: FastifyPluginAsyncTypebox = async (app) => {
  app.get(
    '/healthz',
    { schema: { summary: 'Liveness', tags: ['operations'], response: { 200: Type.Object({ status: Type.Literal('ok') }) } } },
    async () => ({ status: 'ok' as const }),
  )

  app.get(
    '/readyz',
    { schema: { summary: 'Readiness: writable and not draining', tags: ['operations'], response: { 200: Readiness, 503: Readiness } } },
    async (_request, reply) => {
      const { ready, reasons } = app.store.ready()
      return reply.code(ready ? 200 : 503).send({ status: ready ? 'ready' : 'unready', reasons })
    },
  )
}
