// The ceiling for bench/ingest.ts: a minimal Fastify server whose POST /v1/events only
// JSON-parses the body (Fastify's default parser, bodyLimit 8 MiB) and answers the
// ingest shape with every event "accepted". No validation, no storage. It runs as a
// child process of the bench and, like tokenledger, prints one JSON line with
// `"event":"listening"` and its URL on stdout.
//
// Environment: BENCH_PARSE_PORT (default 0 = any free port), BENCH_PARSE_HOST
// (default 127.0.0.1).
import Fastify from 'fastify'

const bodyLimitBytes = 8 * 1024 * 1024

const ingestReplySchema = {
  type: 'object',
  properties: {
    accepted: { type: 'integer' },
    duplicates: { type: 'integer' },
    conflicts: { type: 'integer' },
    rejected: { type: 'integer' },
    results: { type: 'array', maxItems: 0 },
  },
} as const

const errorReplySchema = { type: 'object', properties: { error: { type: 'string' } } } as const

const app = Fastify({ logger: false, bodyLimit: bodyLimitBytes })

app.get('/readyz', async () => ({ status: 'ready' }))

app.post('/v1/events', { schema: { response: { 200: ingestReplySchema, 400: errorReplySchema } } }, async (request, reply) => {
  const body = request.body as { events?: unknown } | null
  if (body === null || typeof body !== 'object' || !Array.isArray(body.events)) {
    return reply.code(400).send({ error: 'expected {"events":[…]}' })
  }
  return { accepted: body.events.length, duplicates: 0, conflicts: 0, rejected: 0, results: [] }
})

const port = Number(process.env['BENCH_PARSE_PORT'] ?? '0')
const host = process.env['BENCH_PARSE_HOST'] ?? '127.0.0.1'
const url = await app.listen({ port, host })
process.stdout.write(`${JSON.stringify({ level: 30, event: 'listening', url })}\n`)

for (const signal of ['SIGTERM', 'SIGINT'] as const) {
  process.once(signal, () => {
    app.close().then(
      () => process.exit(0),
      () => process.exit(1),
    )
  })
}
