// POST /v1/traces: OTLP/HTTP trace export, so the OpenTelemetry SDKs' stock
// exporters (protobuf and JSON) send GenAI spans here unchanged. HTTP only:
// content types, OTLP's answers, the call into intake. Which spans become
// which usage events is src/ingest/otlp.ts.
//
// Answers (the OTLP/HTTP specification): 200 with an ExportTraceServiceResponse
// in the request's encoding, its partial_success set only when GenAI spans
// were rejected or conflicted (rejected_spans, and an error_message naming
// each span's field and reason); duplicates are successes. Spans without
// gen_ai usage are ignored and counted (tokenledger_otlp_spans_ignored_total).
// Refusals carry a google.rpc.Status: 400 bad data (not retried by exporters),
// 503 with Retry-After when the service sheds load, so exporters retry (429,
// 502, 503, 504 are OTLP's retryable codes).

import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import type { FastifyReply, FastifyRequest } from 'fastify'
import { Counter } from 'prom-client'
import { Type } from 'typebox'
import { encodeStatus, encodeTraceResponse, partialSuccess, type OtlpEncoding } from '../src/ingest/otlp.js'
import { acceptBodies, answerErrors, mediaType, rawBody } from './ingest-body.js'
import { BinaryBody, OtlpStatusJson, OtlpTraceResponseJson, OtlpTracesJson } from './schemas.js'

const PROTOBUF = 'application/x-protobuf'
const JSON_TYPE = 'application/json'
/** google.rpc.Code of each refusal (OTLP clients do not act on it; it is for their logs). */
const RPC_CODES: Record<number, number> = { 400: 3, 401: 16, 403: 7, 404: 5, 413: 3, 415: 3, 429: 8, 500: 13, 503: 14 }
const RPC_UNKNOWN = 2

const statusContent = { [PROTOBUF]: { schema: Type.String({ format: 'binary' }) }, [JSON_TYPE]: { schema: OtlpStatusJson } }
const refusal = (description: string) => ({ description: `${description} Body: google.rpc.Status in the request's encoding.`, content: statusContent })

function encodingOf(request: FastifyRequest): OtlpEncoding {
  return mediaType(request) === PROTOBUF ? 'proto' : 'json'
}

export const otlpRoutes: FastifyPluginAsyncTypebox = async (app) => {
  const door = acceptBodies(app, [
    [[PROTOBUF], 'otlp-proto'],
    [[JSON_TYPE], 'otlp-json'],
  ])
  answerErrors(app, (answer, request, reply) => {
    const encoding = encodingOf(request)
    return reply
      .code(answer.status)
      .type(encoding === 'proto' ? PROTOBUF : JSON_TYPE)
      .send(encodeStatus(RPC_CODES[answer.status] ?? RPC_UNKNOWN, answer.message, encoding))
  })
  const ignoredSpans = new Counter({
    name: 'tokenledger_otlp_spans_ignored_total',
    help: 'Spans posted to POST /v1/traces without gen_ai usage attributes: not usage, skipped.',
    registers: [app.metrics],
  })

  app.post(
    '/v1/traces',
    {
      config: { scope: 'ingest' },
      bodyLimit: app.config.maxBodyBytes,
      schema: {
        summary: 'Ingest OTLP/HTTP traces (OpenTelemetry GenAI spans)',
        description:
          'OTLP/HTTP trace export, binary protobuf or JSON, gzip accepted. Each span with gen_ai.usage.input_tokens or gen_ai.usage.output_tokens becomes one usage event, event_id "otel:<trace id>:<span id>"; other spans are ignored. ' +
          'Answers after the events are committed to disk, with an ExportTraceServiceResponse in the request\'s encoding; partial_success names the rejected spans (conflicts included) and why.',
        tags: ['ingest'],
        body: {
          content: {
            [PROTOBUF]: { schema: { ...BinaryBody, description: 'ExportTraceServiceRequest, binary protobuf (opentelemetry-proto v1.11.0).' } },
            [JSON_TYPE]: { schema: OtlpTracesJson },
          },
        },
        response: {
          200: {
            description: 'ExportTraceServiceResponse, in the request\'s encoding.',
            content: { [PROTOBUF]: { schema: Type.String({ format: 'binary' }) }, [JSON_TYPE]: { schema: OtlpTraceResponseJson } },
          },
          400: refusal('Bad data: not an ExportTraceServiceRequest (exporters do not retry it).'),
          401: refusal('No or an invalid bearer token.'),
          403: refusal('The token lacks the ingest scope.'),
          413: refusal('Too many spans or bytes.'),
          415: refusal('Not application/x-protobuf or application/json, or an unsupported Content-Encoding.'),
          429: refusal('Rate limited; retryable.'),
          503: refusal('Not stored; retry after Retry-After (exporters do).'),
        },
      },
      preParsing: async (request, _reply, payload) => door.decode(request, payload),
    },
    async (request, reply) => {
      const body = rawBody(request, 'otlp-json')
      const { outcome, ignored } = await app.intake.submit(body.raw, body.format, 'otlp')
      if (ignored > 0) ignoredSpans.inc(ignored)
      const encoding = encodingOf(request)
      const answer = reply as unknown as FastifyReply // the body is encoded here (protobuf or JSON): no serializer
      return answer.code(200).type(encoding === 'proto' ? PROTOBUF : JSON_TYPE).send(encodeTraceResponse(partialSuccess(outcome), encoding))
    },
  )
}
