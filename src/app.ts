// The whole service as one Fastify plugin, plus the instance options it needs.
// server.ts and the tests build it the same way (buildApp).

import { randomUUID } from 'node:crypto'
import type http from 'node:http'
import Ajv from 'ajv'
import Fastify, { LogController, type FastifyBaseLogger, type FastifyReply, type FastifyRequest, type FastifySchemaValidationError, type FastifyError, type FastifyHttpOptions, type FastifyInstance } from 'fastify'
import fp from 'fastify-plugin'
import swagger from '@fastify/swagger'
import swaggerUi from '@fastify/swagger-ui'
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox'
import type { Logger } from 'pino'
import { routes } from '../routes/index.js'
import { ErrorBody, IngestResult, PER_EVENT_VALIDATION, ProblemBody, UsageEventIn, UsageEventOut, UsagePoint, UsageTotals } from '../routes/schemas.js'
import { systemClock, type Clock } from './clock.js'
import type { Config } from './config.js'
import { closest } from './closest.js'
import { describeError, Errors } from './errors.js'
import { redactUrl } from './redact.js'
import authPlugin, { DOCS_PREFIX } from './plugins/auth.js'
import intakePlugin from './plugins/intake.js'
import metricsPlugin from './plugins/metrics.js'
import pressurePlugin from './plugins/pressure.js'
import storePlugin from './plugins/store.js'
import uploadsPlugin from './plugins/uploads.js'
import type { FileSystem } from './store/fsops.js'
import type { StoreHooks } from './store/options.js'
import type { Store } from './store/store.js'
import { VERSION } from './version.js'

declare module 'fastify' {
  interface FastifyInstance {
    config: Config
    clock: Clock
    store: Store
    /** Whether ingest would be taken now, and why not: the store's reasons and process pressure past the ingest thresholds. */
    readiness(): { ready: boolean; reasons: string[] }
  }
}

export interface AppOptions {
  config: Config
  clock?: Clock
  storeHooks?: StoreHooks
  /** The store's file-system seam (tests inject faults and free-space readings); default: the real one. */
  fs?: FileSystem
  /** Resolve before the store's dedupe index has loaded (the server does: its port opens meanwhile, /readyz says it is loading and ingest answers 503). */
  openBeforeIndex?: boolean
}

const REQUEST_ID = /^[A-Za-z0-9._:-]{1,128}$/

/** Options for the Fastify instance itself: limits that must be set at creation. */
export function serverOptions(config: Config, logger: Logger): FastifyHttpOptions<http.Server> & { loggerInstance: FastifyBaseLogger } {
  return {
    loggerInstance: logger as FastifyBaseLogger,
    bodyLimit: config.maxBodyBytes,
    requestTimeout: config.requestTimeoutMs,
    // The idle-socket timeout must outlast the longest answer the service may take to
    // start (a Parquet export, a query at its time bound behind the gate), or Node would
    // reset the socket of a request still being worked on. Slow clients are bounded by
    // requestTimeout (receiving the request) and headersTimeout.
    connectionTimeout: Math.max(config.requestTimeoutMs, config.exportTimeoutMs, config.queryTimeoutMs + config.gateWaitMs) + 10_000,
    // Node's own bounds on a request head: its size (431 past it) and how long it may take to arrive.
    // Node enforces both timeouts only when it checks its connections (every 30 s by default): check every second.
    http: { maxHeaderSize: config.maxHeaderBytes, headersTimeout: Math.min(config.requestTimeoutMs, 60_000), connectionsCheckingInterval: 1000 },
    keepAliveTimeout: 72_000,
    routerOptions: { maxParamLength: 256 },
    // Requests that arrive while the app closes are refused by app.ts's own hook (503 TL_DRAINING with Retry-After).
    return503OnClosing: false,
    logController: new OneLinePerRequest(),
    schemaErrorFormatter: formatSchemaErrors,
    onProtoPoisoning: 'error',
    onConstructorPoisoning: 'error',
    // A caller's x-request-id is kept when it is a plain, short id; anything else
    // (long, odd characters) is replaced, so a client cannot bloat or forge log lines.
    requestIdHeader: false,
    genReqId: (req) => {
      const given = req.headers['x-request-id']
      return typeof given === 'string' && REQUEST_ID.test(given) ? given : randomUUID()
    },
    // Opening the store (recovery, then the dedupe index rebuilt from every segment's ids)
    // takes time proportional to the retained events: about a minute per 100 million
    // events here (see the tiers bench). Fastify's default of 10 s per plugin would make a
    // large store unable to start at all; the process has not bound its port yet, so the
    // bound on start-up belongs to the supervisor's start-up probe, not to Fastify.
    pluginTimeout: 0,
  }
}

// One Ajv for every schema-validated part. Unknown query parameters are errors
// (removeAdditional: false): a typo'd filter must not silently widen a billing query.
// verbose: errors carry the value that failed (formatSchemaErrors names it) and the schema around it.
const ajv = new Ajv.default({ coerceTypes: 'array', useDefaults: true, removeAdditional: false, allErrors: false, strict: false, verbose: true })

export const app = fp<AppOptions>(
  async (instance, opts) => {
    instance.decorate('config', opts.config)
    instance.decorate('clock', opts.clock ?? systemClock)
    instance.setValidatorCompiler(({ schema, httpPart }) => {
      if (httpPart === 'body' && (schema as Record<string, unknown>)[PER_EVENT_VALIDATION] === true) return () => true
      return ajv.compile(schema)
    })
    for (const schema of [ErrorBody, ProblemBody, UsageEventIn, IngestResult, UsageEventOut, UsageTotals, UsagePoint]) instance.addSchema(schema)

    await instance.register(swagger, {
      openapi: {
        openapi: '3.1.0',
        info: {
          title: 'tokenledger',
          version: VERSION,
          description: 'Usage ledger for LLM gateways: durable, exactly-once ingest of usage events and exact billing queries.',
        },
        tags: [
          { name: 'ingest', description: 'Posting usage events' },
          { name: 'query', description: 'Reading events and usage' },
          { name: 'operations', description: 'Health and readiness' },
        ],
        components: {
          securitySchemes: {
            bearerAuth: {
              type: 'http',
              scheme: 'bearer',
              description:
                'Tokens from TOKENLEDGER_INGEST_TOKENS, TOKENLEDGER_QUERY_TOKENS, TOKENLEDGER_METRICS_TOKENS and TOKENLEDGER_ADMIN_TOKENS; each operation names the scope it needs (admin may do everything). With no tokens configured, auth is off and the service serves loopback only.',
            },
          },
        },
      },
      refResolver: { buildLocalReference: (json, _baseUri, _fragment, i) => String(json.$id ?? `def-${i}`) },
    })

    instance.setErrorHandler((error: FastifyError, request, reply) => {
      const answer = describeError(error)
      if (answer.internal) request.log.error({ err: error }, 'request failed')
      if (answer.retryAfter) reply.header('retry-after', String(opts.config.retryAfterSeconds))
      return reply.code(answer.status).send({ statusCode: answer.status, code: answer.code, error: answer.title, message: answer.message })
    })

    instance.server.maxConnections = opts.config.maxConnections

    instance.setNotFoundHandler((request, reply) => {
      reply.code(404).send({ statusCode: 404, code: 'TL_NO_ROUTE', error: 'Not Found', message: `no route ${request.method} ${request.url.split('?')[0]!.slice(0, 200)}` })
    })

    // Draining: requests in flight when close() starts are answered, and their
    // keep-alive connections closed with them; otherwise an idle keep-alive
    // socket holds server.close() open until keepAliveTimeout.
    let closing = false
    // Connections that never sent a byte would hold server.close() open until
    // headersTimeout, past the shutdown grace: close them when draining starts.
    const sockets = new Set<import('node:net').Socket>()
    instance.server.on('connection', (socket: import('node:net').Socket) => {
      sockets.add(socket)
      socket.once('close', () => sockets.delete(socket))
    })
    // Draining: a request that arrives once close() has begun is refused, retryable
    // (Retry-After), before auth or its body is read, and its connection closed.
    instance.addHook('onRequest', async (_request, reply) => {
      if (!closing) return
      reply.header('connection', 'close')
      throw new Errors.Draining()
    })
    instance.addHook('preClose', async () => {
      closing = true
      for (const socket of sockets) if (socket.bytesRead === 0) socket.destroy()
    })
    instance.addHook('onSend', async (_request, reply, payload) => {
      if (closing) reply.header('connection', 'close')
      return payload
    })

    await instance.register(authPlugin)
    await instance.register(pressurePlugin)
    await instance.register(uploadsPlugin)
    await instance.register(storePlugin, { hooks: opts.storeHooks, fs: opts.fs, openBeforeIndex: opts.openBeforeIndex === true })
    instance.decorate('readiness', () => {
      const reasons = [...instance.store.ready().reasons, ...instance.ingestPressure()]
      return { ready: reasons.length === 0, reasons }
    })
    await instance.register(metricsPlugin)
    await instance.register(intakePlugin)
    await instance.register(routes)

    const open = { scope: 'open' as const }
    instance.get('/openapi.json', { schema: { hide: true }, config: open }, async () => instance.swagger())
    instance.get('/openapi.yaml', { schema: { hide: true }, config: open }, async (_req, reply) => reply.type('application/yaml').send(instance.swagger({ yaml: true })))
    // The interactive reference page; its assets ship in the package (nothing is fetched from a CDN).
    // Its strict CSP, less upgrade-insecure-requests: served over plain HTTP (behind a
    // TLS-terminating proxy or on a private network) the page must load its own assets.
    await instance.register(swaggerUi, { routePrefix: DOCS_PREFIX, staticCSP: true, transformStaticCSP: (header) => header.replace(/\s*upgrade-insecure-requests;?/g, '').trim() })
  },
  { name: 'tokenledger' },
)

/** Builds a ready instance: what server.ts listens on and what tests inject into. */
export async function buildApp(opts: AppOptions, logger: Logger): Promise<FastifyInstance> {
  const instance = Fastify(serverOptions(opts.config, logger)).withTypeProvider<TypeBoxTypeProvider>()
  try {
    await instance.register(app, opts)
    await instance.ready()
  } catch (err) {
    // A plugin that failed to start must not leave the ones before it running (the store, ingest workers).
    await instance.close().catch(() => undefined)
    throw err
  }
  return instance as unknown as FastifyInstance
}

/**
 * One log line per request, after the answer, with the request id (`reqId`,
 * bound in the request's child logger): method, URL, status, time; no
 * payloads, no headers. Fastify's own "Route ... not found" line is dropped:
 * the 404's request line says it.
 */
class OneLinePerRequest extends LogController {
  override incomingRequest(): void {}
  override routeNotFound(): void {}
  override requestCompleted(error: Error | null | undefined, request: FastifyRequest, reply: FastifyReply): void {
    const line = {
      method: request.method,
      // Secret-looking query parameters (token, api_key, …) are logged as [REDACTED].
      url: redactUrl(request.url).slice(0, 512),
      statusCode: reply.statusCode,
      ms: Math.round(reply.elapsedTime),
      // Which token (a 12-hex-digit digest prefix, never the token), when auth is on.
      ...(request.principal ? { principal: request.principal.id } : {}),
    }
    if (error) request.log.error({ ...line, err: error }, 'request failed')
    else request.log.info(line, 'request')
  }
}

/** Most problems one validation error names (each names its parameter and reason). */
const MAX_SCHEMA_PROBLEMS = 5

/** Ajv's error with `verbose: true`: the value that failed and the schema around it. */
type VerboseError = FastifySchemaValidationError & { data?: unknown; parentSchema?: { properties?: Record<string, unknown>; 'x-allowed'?: string } }

/**
 * "querystring/limit must be <= 1000", naming each offending parameter once. A value
 * outside a fixed set (a union of constants: `group_by`, `bucket`, `format`…) fails each
 * constant and then the union: that is one problem, told as the value given and the
 * values allowed (and the nearest of them), not once per constant. A pattern with
 * an `x-allowed` annotation is told in its words, not as the regex.
 */
function formatSchemaErrors(errors: FastifySchemaValidationError[], dataVar: string): Error {
  const list = errors as VerboseError[]
  // Where a union failed, the errors of its branches (same place, deeper schema path) are its parts.
  const unions = list.filter((e) => e.keyword === 'anyOf' || e.keyword === 'oneOf')
  const branchOf = (e: VerboseError) => unions.find((u) => u !== e && u.instancePath === e.instancePath && e.schemaPath.startsWith(`${u.schemaPath}/`))
  const place = (e: VerboseError) => {
    // A query parameter given once or repeated is an array: name the parameter, the value says which.
    const where = dataVar === 'querystring' ? e.instancePath.replace(/\/\d+$/, '') : e.instancePath
    return `${dataVar}${where}`
  }
  const parts: string[] = []
  for (const e of list) {
    const params = e.params as Record<string, unknown>
    let part: string
    if (e.keyword === 'additionalProperties') {
      const name = String(params.additionalProperty)
      const near = closest(name, Object.keys(e.parentSchema?.properties ?? {}), { near: true })
      part = `${dataVar}/${name} is not a known parameter${near === null ? '' : ` (did you mean ${near}?)`}`
    } else if (e.keyword === 'required') {
      part = `${dataVar}/${String(params.missingProperty)} is required`
    } else if (unions.includes(e)) {
      const branches = list.filter((b) => branchOf(b) === e)
      const allowed = branches.flatMap((b) => (b.keyword === 'const' ? [(b.params as { allowedValue: unknown }).allowedValue] : b.keyword === 'enum' ? ((b.params as { allowedValues: unknown[] }).allowedValues) : []))
      if (branches.length === 0) {
        part = `${place(e)} ${e.message ?? 'is invalid'}`
      } else if (allowed.length !== branches.length) {
        // Not a fixed set of values: each form's reason, once ("must be string or must be integer").
        part = `${place(e)} ${[...new Set(branches.map((b) => b.message ?? 'is invalid'))].join(' or ')}`
      } else {
        part = `${place(e)} ${describeValue(e.data)} is not allowed; allowed: ${allowed.map(String).join(', ')}`
        const near = typeof e.data === 'string' ? closest(e.data, allowed.map(String), { near: true }) : null
        if (near !== null) part += ` (did you mean ${near}?)`
      }
    } else if (branchOf(e) !== undefined) {
      continue // told with its union
    } else if (e.keyword === 'pattern' && typeof e.parentSchema?.['x-allowed'] === 'string') {
      // A pattern's regex is no message for a person: the schema's `x-allowed` says it in words.
      part = `${place(e)} ${describeValue(e.data)} is not allowed; allowed: ${e.parentSchema['x-allowed']}`
    } else if (e.keyword === 'enum') {
      part = `${place(e)} ${describeValue(e.data)} is not allowed; allowed: ${((params.allowedValues as unknown[]) ?? []).map(String).join(', ')}`
    } else {
      part = `${dataVar}${e.instancePath} ${e.message ?? 'is invalid'}`
    }
    if (!parts.includes(part)) parts.push(part)
  }
  const told = parts.slice(0, MAX_SCHEMA_PROBLEMS)
  if (parts.length > told.length) told.push(`${parts.length - told.length} more not listed`)
  return new Error(told.join('; '))
}

/** A value as a client sent it, quoted and cut short. */
function describeValue(value: unknown): string {
  const text = JSON.stringify(value) ?? String(value)
  return text.length > 66 ? `${text.slice(0, 64)}\u2026` : text
}
