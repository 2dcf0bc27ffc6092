// What every ingest route shares at the HTTP edge: bodies read as bytes (for
// the decoder, never parsed here), one parser per content type naming the
// body format, gzip undone in preParsing with the decoded bytes counted
// against the body limit, a missing body read as an empty one, and refusals
// written in the door's own error format.

import { PassThrough, type Readable } from 'node:stream'
import { createGunzip } from 'node:zlib'
import type { FastifyError, FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import { describeError, Errors, type ErrorAnswer } from '../src/errors.js'
import type { BodyFormat } from '../src/ingest/decode.js'

export interface RawBody {
  raw: Buffer
  format: BodyFormat
  /** The request's media type, lowercased, without parameters. */
  type: string
}

/** How one door reads its bodies: its preParsing step (gzip undone, content type and encoding checked). */
export interface BodyDoor {
  /** The media types this door takes, in the order its refusals list them. */
  readonly types: readonly string[]
  /** The route's preParsing step: a 415 naming what is accepted, or the decoded body. */
  decode(request: FastifyRequest, payload: Readable): Promise<Readable>
}

/**
 * Replaces this plugin context's parsers (Fastify's JSON and text ones) with
 * byte readers: each listed media type reads its body as `format`; any other
 * type is 415, and so is an encoding other than gzip or identity: both refusals
 * name the content types and encodings the door takes. Returns the door's
 * preParsing step, which checks them before the body is read.
 */
export function acceptBodies(app: FastifyInstance, formats: ReadonlyArray<readonly [types: readonly string[], format: BodyFormat]>): BodyDoor {
  app.removeAllContentTypeParsers()
  for (const [types, format] of formats) {
    for (const type of types) {
      app.addContentTypeParser(type, { parseAs: 'buffer', bodyLimit: app.config.maxBodyBytes }, (_req, body, done) => done(null, { raw: body as Buffer, format, type } satisfies RawBody))
    }
  }
  const types = formats.flatMap(([list]) => list)
  const accepted = types.length === 1 ? types[0]! : `${types.slice(0, -1).join(', ')} or ${types.at(-1)!}`
  return {
    types,
    async decode(request, payload) {
      const type = mediaType(request)
      if (type === '') {
        // No Content-Type: only an empty body may omit it (decoded as an empty one: 400).
        if (hasBody(request)) throw new Errors.UnsupportedMediaType('a body without Content-Type', accepted)
      } else if (!types.includes(type)) {
        throw new Errors.UnsupportedMediaType(`unsupported Content-Type "${type.slice(0, 64)}"`, accepted)
      }
      return decodeBody(request, payload, accepted)
    },
  }
}

/** Whether the request announces a body (as Fastify decides whether to parse one). */
function hasBody(request: FastifyRequest): boolean {
  const length = request.headers['content-length']
  return request.headers['transfer-encoding'] !== undefined || (length !== undefined && length !== '0')
}

/** The body a parser read; no parser runs for a request without a body: it is an empty one of `format`. */
export function rawBody(request: FastifyRequest, format: BodyFormat): RawBody {
  return (request.body as RawBody | undefined) ?? { raw: Buffer.alloc(0), format, type: mediaType(request) }
}

export function mediaType(request: FastifyRequest): string {
  return (request.headers['content-type'] ?? '').split(';')[0]!.trim().toLowerCase()
}

/** gzip and identity are accepted (a refusal names `accepted`, the door's content types); the decoded bytes count against bodyLimit. */
async function decodeBody(request: FastifyRequest, payload: Readable, accepted: string): Promise<Readable> {
  const encoding = request.headers['content-encoding']
  const enc = (encoding ?? 'identity').trim().toLowerCase()
  if (enc === 'identity' || enc === '') return payload
  if (enc !== 'gzip' && enc !== 'x-gzip') throw new Errors.UnsupportedEncoding(enc.slice(0, 32), accepted)
  const gunzip = createGunzip()
  const out = new PassThrough() as PassThrough & { receivedEncodedLength: number }
  out.receivedEncodedLength = 0
  payload.on('data', (chunk: Buffer) => (out.receivedEncodedLength += chunk.length))
  payload.on('error', (err) => out.destroy(err))
  gunzip.on('error', (err) => out.destroy(new Errors.BadBody(`invalid gzip: ${err.message}`)))
  payload.pipe(gunzip).pipe(out)
  return out
}

/**
 * This plugin context's error handler, for a door whose refusals have their
 * own body format: the same reading of errors as the app's (describeError:
 * internals logged, never told; Retry-After on every retryable refusal),
 * written by `write`.
 */
export function answerErrors(app: FastifyInstance, write: (answer: ErrorAnswer, request: FastifyRequest, reply: FastifyReply) => FastifyReply): void {
  app.setErrorHandler((error: FastifyError, request, reply) => {
    const answer = describeError(error)
    if (answer.internal) request.log.error({ err: error }, 'request failed')
    if (answer.retryAfter) reply.header('retry-after', String(app.config.retryAfterSeconds))
    return write(answer, request, reply)
  })
}
