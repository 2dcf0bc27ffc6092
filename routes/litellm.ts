// POST /v1/integrations/litellm: what LiteLLM's generic API logger posts
// (StandardLoggingPayload objects), so a LiteLLM proxy or SDK logs usage here
// with its own callback, unchanged. HTTP only: content types, the call into
// intake, the native answer (LiteLLM logs the status and ignores the body),
// `?atomic=true` as on POST /v1/events (all or nothing, else 422).
// The mapping of a payload to a usage event is src/ingest/litellm.ts.

import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { Type } from 'typebox'
import { acceptBodies, rawBody } from './ingest-body.js'
import { commonErrors, LiteLLMBody } from './schemas.js'

export const litellmRoutes: FastifyPluginAsyncTypebox = async (app) => {
  const door = acceptBodies(app, [[['application/json', 'application/x-ndjson', 'application/ndjson'], 'litellm']])

  app.post(
    '/v1/integrations/litellm',
    {
      config: { scope: 'ingest' },
      bodyLimit: app.config.maxBodyBytes,
      schema: {
        summary: "Ingest LiteLLM's StandardLoggingPayload (generic_api logger)",
        description:
          'Each payload becomes one usage event, event_id "litellm:<id>". Answers after the events are committed to disk, with the same per-event outcomes as POST /v1/events (fields point into the payload).',
        tags: ['ingest'],
        consumes: ['application/json', 'application/x-ndjson', 'application/ndjson'],
        querystring: Type.Object(
          {
            atomic: Type.Optional(
              Type.Boolean({ default: false, description: 'Store nothing unless every payload is acceptable (then 422, with each one\'s outcome).' }),
            ),
          },
          { additionalProperties: false },
        ),
        body: LiteLLMBody,
        response: {
          200: Type.Ref('IngestResult'),
          413: Type.Ref('Error'),
          415: Type.Ref('Error'),
          422: Type.Ref('IngestResult'),
          ...commonErrors,
        },
      },
      preParsing: async (request, _reply, payload) => door.decode(request, payload),
    },
    async (request, reply) => {
      const body = rawBody(request, 'litellm')
      const { outcome } = await app.intake.submit(body.raw, 'litellm', 'litellm', request.query.atomic === true)
      const { stored, ...answer } = outcome
      return reply.code(stored ? 200 : 422).send(answer)
    },
  )
}
