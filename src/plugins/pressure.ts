// Load shedding as a named plugin: process pressure (@fastify/under-pressure)
// and per-token rate limits (@fastify/rate-limit). Registered after auth, so
// both see the route's scope and the request's principal.
//
// Pressure has two levels (config.queryPressure < config.ingestPressure):
// - past the query thresholds, query and export routes answer 503 with
//   Retry-After: dashboards back off first;
// - ingest is refused only past the ingest thresholds, which also turn
//   /readyz unready (with the store's own signals: disk, seal backlog, queue);
// - health, readiness, metrics, status and admin routes are never shed: an
//   operator must be able to see and act on an overloaded node.
//
// under-pressure samples once a second and calls the pressure handler with
// only the first threshold crossed, so the ingest check reads every figure.
//
// Ingest admission: at most maxIngestInflight ingest requests, holding at most
// maxIngestInflightBytes of body, are between their headers and their answer;
// one more is answered 503 at once, before its body is read, parsed or
// validated. Under overload that turns what would be a client timeout (work
// queued on the event loop, then the accept backlog) into a fast, cheap,
// retryable refusal. Each request is charged its Content-Length, or the
// largest body (maxBodyBytes) when it has none or is compressed: memory is
// bounded by bytes, not by a count sized for the largest body, so the bursts
// of a client at half capacity (queued behind a commit that runs DuckDB's WAL
// checkpoint, hundreds of ms every few seconds) are not shed. One client
// (token and address) may hold all but an eighth of each (429 TL_CLIENT_BUSY
// past it); uploads.ts cuts off bodies that arrive too slowly.

import fp from 'fastify-plugin'
import underPressure from '@fastify/under-pressure'
import rateLimit from '@fastify/rate-limit'
import type { PressureLimits } from '../config.js'
import { Errors } from '../errors.js'

declare module 'fastify' {
  interface FastifyInstance {
    /** Why ingest is refused by process pressure now (empty: it is not). */
    ingestPressure(): string[]
    /** Ingest requests between their headers and their answer. */
    ingestInflight(): number
    /** The body bytes those requests are charged (Content-Length, or the largest body). */
    ingestInflightBytes(): number
  }
}

interface Sample {
  eventLoopDelay: number
  heapUsed: number
  rssBytes: number
}

const MiB = 1024 * 1024

/**
 * What an ingest request is charged against the in-flight byte bounds: its
 * Content-Length when the body is sent as is, else (no length, chunked, or
 * compressed: it may inflate up to the limit) the largest body allowed.
 */
export function chargedBytes(headers: { 'content-length'?: string; 'content-encoding'?: string }, maxBodyBytes: number): number {
  const encoding = headers['content-encoding']?.trim().toLowerCase()
  if (encoding !== undefined && encoding !== '' && encoding !== 'identity') return maxBodyBytes
  const length = headers['content-length']
  if (length === undefined || !/^\d{1,15}$/.test(length)) return maxBodyBytes
  return Math.min(Number(length), maxBodyBytes)
}

/** The thresholds of `limits` that `sample` is past, as readable reasons. */
export function pressureReasons(sample: Sample, limits: PressureLimits): string[] {
  const reasons: string[] = []
  if (limits.eventLoopDelayMs > 0 && sample.eventLoopDelay > limits.eventLoopDelayMs) {
    reasons.push(`event-loop delay ${Math.round(sample.eventLoopDelay)} ms is past ${limits.eventLoopDelayMs} ms`)
  }
  if (limits.heapUsedBytes > 0 && sample.heapUsed > limits.heapUsedBytes) {
    reasons.push(`heap ${Math.round(sample.heapUsed / MiB)} MiB is past ${Math.round(limits.heapUsedBytes / MiB)} MiB`)
  }
  if (limits.rssBytes > 0 && sample.rssBytes > limits.rssBytes) {
    reasons.push(`RSS ${Math.round(sample.rssBytes / MiB)} MiB is past ${Math.round(limits.rssBytes / MiB)} MiB`)
  }
  return reasons
}

export default fp(
  async (app) => {
    const { config } = app
    const q = config.queryPressure
    await app.register(underPressure, {
      maxEventLoopDelay: q.eventLoopDelayMs,
      maxHeapUsedBytes: q.heapUsedBytes,
      maxRssBytes: q.rssBytes,
      retryAfter: config.retryAfterSeconds,
      pressureHandler: async (request) => {
        const scope = request.routeOptions.config.scope
        if (scope === 'query') {
          throw new Errors.Overloaded(pressureReasons(app.memoryUsage(), q).join('; ') || 'process under pressure')
        }
        if (scope === 'ingest') {
          const reasons = app.ingestPressure()
          if (reasons.length > 0) throw new Errors.Overloaded(reasons.join('; '))
        }
        // Anything else (health, metrics, status, admin, docs, 404s) is served.
      },
    })
    app.decorate('ingestPressure', () => pressureReasons(app.memoryUsage(), config.ingestPressure))

    let inflight = 0
    let inflightBytes = 0
    // Per client, so that one client cannot hold every slot: its token when
    // auth is on (wherever it connects from: a token spread over several
    // addresses is still one share), its address when auth is off (loopback
    // only); entries leave the map at zero.
    const perClient = new Map<string, { requests: number; bytes: number }>()
    app.decorate('ingestInflight', () => inflight)
    app.decorate('ingestInflightBytes', () => inflightBytes)
    app.addHook('onRequest', async (request, reply) => {
      if (request.routeOptions.config.scope !== 'ingest') return
      const charge = chargedBytes(request.headers, config.maxBodyBytes)
      // A refusal before the body is read closes the connection: the unread body is not drained.
      if (inflight >= config.maxIngestInflight) {
        reply.header('connection', 'close')
        throw new Errors.Overloaded(`${inflight} ingest requests in flight, at most ${config.maxIngestInflight} (TOKENLEDGER_MAX_INGEST_INFLIGHT)`)
      }
      if (inflightBytes + charge > config.maxIngestInflightBytes) {
        reply.header('connection', 'close')
        throw new Errors.Overloaded(`${inflightBytes} body bytes in flight and ${charge} more asked, at most ${config.maxIngestInflightBytes} (TOKENLEDGER_MAX_INGEST_INFLIGHT_BYTES)`)
      }
      const client = request.principal ? `token ${request.principal.id}` : `address ${request.ip}`
      const mine = perClient.get(client) ?? { requests: 0, bytes: 0 }
      if (mine.requests >= config.maxIngestInflightPerClient) {
        reply.header('connection', 'close')
        throw new Errors.ClientBusy(`${mine.requests} ingest requests in flight, at most ${config.maxIngestInflightPerClient} (TOKENLEDGER_MAX_INGEST_INFLIGHT_PER_CLIENT)`)
      }
      if (mine.bytes + charge > config.maxIngestInflightBytesPerClient) {
        reply.header('connection', 'close')
        throw new Errors.ClientBusy(`${mine.bytes} body bytes in flight and ${charge} more asked, at most ${config.maxIngestInflightBytesPerClient} (TOKENLEDGER_MAX_INGEST_INFLIGHT_BYTES_PER_CLIENT)`)
      }
      inflight++
      inflightBytes += charge
      mine.requests++
      mine.bytes += charge
      perClient.set(client, mine)
      // 'close' comes once for every response, answered or aborted.
      reply.raw.once('close', () => {
        inflight--
        inflightBytes -= charge
        mine.requests--
        mine.bytes -= charge
        if (mine.requests === 0) perClient.delete(client)
      })
    })

    if (config.rateLimitMax > 0) {
      await app.register(rateLimit, {
        global: true,
        max: config.rateLimitMax,
        timeWindow: config.rateLimitWindowMs,
        // Per token when auth is on; per client address when it is off (loopback only).
        keyGenerator: (request) => request.principal?.id ?? request.ip,
        allowList: (request) => request.routeOptions.config.scope === 'open',
        errorResponseBuilder: (_request, context) => new Errors.RateLimited(context.after),
      })
    }
  },
  { name: 'tokenledger-pressure', dependencies: ['tokenledger-auth'] },
)
