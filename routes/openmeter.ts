// POST /api/v1/events: OpenMeter's event ingest API, so `@openmeter/sdk` and
// any CloudEvents client post here unchanged. HTTP only: content types,
// OpenMeter's answers (204, application/problem+json), the call into intake.
// The mapping of a CloudEvent to a usage event is src/ingest/cloudevents.ts.
//
// Answers: 204 when every CloudEvent is stored (accepted now, or a duplicate
// of one stored before: OpenMeter dedupes by (source, id) silently too).
// Otherwise a problem+json whose `extensions` carry the per-event outcomes:
// 400 when some CloudEvent was rejected (each with the field and the reason),
// else 409 when some was a conflict (same source and id, another body: first
// write wins). The good events of such a request are stored all the same:
// re-sending the whole request is safe, they come back as duplicates.

import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import type { FastifyReply } from 'fastify'
import { Type } from 'typebox'
import type { AppendOutcome } from '../src/store/outcomes.js'
import { acceptBodies, answerErrors, rawBody } from './ingest-body.js'
import { CloudEventIn, PER_EVENT_VALIDATION } from './schemas.js'

export const CLOUDEVENTS_TYPES = ['application/cloudevents+json', 'application/cloudevents-batch+json', 'application/json']
const PROBLEM_TYPE = 'application/problem+json'
/** Problem types of this route (documented in the README). */
export const PROBLEMS = {
  rejected: 'urn:tokenledger:problem:events-rejected',
  conflict: 'urn:tokenledger:problem:events-conflict',
  error: 'about:blank',
} as const
/** Events described one by one in a problem's detail; all are in extensions.results. */
const MAX_DESCRIBED = 10

const problemContent = { [PROBLEM_TYPE]: { schema: Type.Ref('Problem') } }
const problem = (description: string) => ({ description, content: problemContent })

export const openmeterRoutes: FastifyPluginAsyncTypebox = async (app) => {
  const door = acceptBodies(app, [[CLOUDEVENTS_TYPES, 'openmeter']])
  answerErrors(app, (answer, request, reply) =>
    reply
      .code(answer.status)
      .type(PROBLEM_TYPE)
      .send(problemBytes({ type: PROBLEMS.error, title: answer.title, status: answer.status, detail: answer.message, instance: `urn:request:${request.id}`, extensions: { code: answer.code } })),
  )

  app.post(
    '/api/v1/events',
    {
      config: { scope: 'ingest' },
      bodyLimit: app.config.maxBodyBytes,
      schema: {
        summary: 'Ingest CloudEvents (OpenMeter API)',
        description:
          "OpenMeter's ingest API: one CloudEvent (application/cloudevents+json) or an array (application/cloudevents-batch+json; application/json takes either). " +
          'Identity is (source, id), stored as event_id "ce:<source>:<id>" (percent-encoded; hashed past 128 characters). ' +
          '204 once every event is committed to disk (duplicates included); otherwise problem+json with the per-event outcomes: 400 if any was rejected, else 409 for conflicts. The other events of the request are stored either way.',
        tags: ['ingest'],
        body: {
          content: {
            'application/cloudevents+json': { schema: { ...CloudEventIn, [PER_EVENT_VALIDATION]: true } },
            'application/cloudevents-batch+json': { schema: Type.Array(CloudEventIn, { [PER_EVENT_VALIDATION]: true }) },
            'application/json': { schema: Type.Union([CloudEventIn, Type.Array(CloudEventIn)], { [PER_EVENT_VALIDATION]: true }) },
          },
        },
        response: {
          204: { description: 'Every event is stored (accepted or already stored).', type: 'null' },
          400: problem('A malformed body, or some events rejected (see extensions.results); the others are stored.'),
          401: problem('No or an invalid bearer token.'),
          403: problem('The token lacks the ingest scope.'),
          409: problem('Some events conflict with stored ones (same source and id, other content; first write wins); the others are stored.'),
          413: problem('Too many events or bytes.'),
          415: problem('Unsupported content type or encoding.'),
          429: problem('Rate limited.'),
          503: problem('Not stored; retry after Retry-After.'),
        },
      },
      preParsing: async (request, _reply, payload) => door.decode(request, payload),
    },
    async (request, reply) => {
      const body = rawBody(request, 'openmeter')
      const { outcome } = await app.intake.submit(body.raw, 'openmeter', 'openmeter')
      const notStored = notStoredProblem(outcome, request.id)
      const answer = reply as unknown as FastifyReply // the body is written here, as OpenMeter does: no serializer
      if (notStored === null) return answer.code(204).send()
      return answer.code(notStored.status).type(PROBLEM_TYPE).send(problemBytes(notStored))
    },
  )
}

/**
 * A problem as bytes: Fastify would append "; charset=utf-8" to the type of a
 * string body, and the OpenMeter SDK reads problem details only when the
 * Content-Type is exactly application/problem+json.
 */
function problemBytes(problem: object): Buffer {
  return Buffer.from(JSON.stringify(problem), 'utf8')
}

/** The problem+json for a request some of whose events were not stored; null when all were. */
function notStoredProblem(outcome: AppendOutcome, requestId: string) {
  const { accepted, duplicates, conflicts, rejected, results } = outcome
  if (rejected === 0 && conflicts === 0) return null
  const status = rejected > 0 ? 400 : 409
  const described = results
    .filter((r) => r.status !== 'duplicate')
    .slice(0, MAX_DESCRIBED)
    .map((r) => {
      const why = r.status === 'conflict' ? 'conflict: another event with this source and id is stored with other content (first write wins)' : (r.errors ?? []).map((e) => `${e.field || '(event)'} ${e.message}`).join('; ')
      return `event ${r.index}: ${why}`
    })
  const more = rejected + conflicts > described.length ? `; and ${rejected + conflicts - described.length} more` : ''
  return {
    type: status === 400 ? PROBLEMS.rejected : PROBLEMS.conflict,
    title: status === 400 ? 'Bad Request' : 'Conflict',
    status,
    detail: `${rejected + conflicts} of ${accepted + duplicates + conflicts + rejected} events not stored (${rejected} rejected, ${conflicts} conflicts): ${described.join('; ')}${more}. ${accepted + duplicates > 0 ? `The other ${accepted + duplicates} stored` : 'None of them stored'}; re-sending the request is safe.`,
    instance: `urn:request:${requestId}`,
    extensions: { accepted, duplicates, conflicts, rejected, results },
  }
}
