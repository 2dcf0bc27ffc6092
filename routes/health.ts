// Liveness and readiness for load balancers. Both are open (no auth), never
// rate limited and never shed under pressure.
// /healthz: the process is alive and its event loop answers.
// /readyz: ingest would be taken now (see the route's description).

import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { Type } from 'typebox'

const Readiness = Type.Object({
  status: Type.Union([Type.Literal('ready'), Type.Literal('unready')]),
  reasons: Type.Array(Type.String({ maxLength: 512 }), { maxItems: 32 }),
})

export const healthRoutes: FastifyPluginAsyncTypebox = async (app) => {
  app.get(
    '/healthz',
    { config: { scope: 'open' }, schema: { summary: 'Liveness', tags: ['operations'], response: { 200: Type.Object({ status: Type.Literal('ok') }) } } },
    async () => ({ status: 'ok' as const }),
  )

  app.get(
    '/readyz',
    {
      config: { scope: 'open' },
      schema: {
        summary: 'Readiness: writable, not draining, disk above its floor, not overloaded',
        description: 'Unready (503 with Retry-After, and the reasons) while the store would refuse ingest: draining, failed, queue full, free disk below TOKENLEDGER_MIN_FREE_DISK, seal backlog, oversized active segment, or process pressure past the ingest thresholds.',
        tags: ['operations'],
        response: { 200: Readiness, 503: Readiness },
      },
    },
    async (_request, reply) => {
      const { ready, reasons } = app.readiness()
      // Unready is a retryable state: say when to look again, as every other 503 does.
      if (!ready) reply.header('retry-after', String(app.config.retryAfterSeconds))
      return reply.code(ready ? 200 : 503).send({ status: ready ? 'ready' : 'unready', reasons })
    },
  )
}
