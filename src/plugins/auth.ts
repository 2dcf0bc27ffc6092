// Bearer-token auth as a named plugin.
//
// Every route declares its scope in `config.scope` (routes/ does, one per
// route); a route without one fails start-up, so nothing is ever exposed by
// forgetting. Scopes: `open` (health, readiness, the API document), `ingest`,
// `query`, `metrics` (GET /metrics only) and `admin` (everything).
//
// - With no tokens configured at all, auth is off; config.ts allows that only
//   on a loopback host.
// - The check runs in onRequest, before any body is read or decoded, so an
//   unauthenticated client cannot make the service parse or gunzip anything.
// - Comparison: the presented token is hashed (SHA-256) and compared with the
//   hash of every configured token by crypto.timingSafeEqual, without an early
//   exit. Equal-length digests mean neither a token's content nor its length
//   shows in the timing, and the work is the same whatever matches.
// - A request's principal is the first 12 hex digits of its token's hash: what
//   logs and the rate limiter see. Tokens themselves are never logged.

import { createHash, timingSafeEqual } from 'node:crypto'
import type { FastifyReply, FastifyRequest } from 'fastify'
import fp from 'fastify-plugin'
import { MAX_TOKEN_CHARS, type AuthTokens } from '../config.js'
import { Errors } from '../errors.js'

export type Scope = 'open' | 'ingest' | 'query' | 'metrics' | 'admin'
export const SCOPES: readonly Scope[] = ['open', 'ingest', 'query', 'metrics', 'admin']

export interface Principal {
  /** First 12 hex digits of the token's SHA-256: safe to log, a stable rate-limit key. */
  id: string
  scopes: ReadonlySet<Scope>
}

declare module 'fastify' {
  interface FastifyContextConfig {
    scope?: Scope
  }
  interface FastifyRequest {
    principal: Principal | null
  }
}

/** Routes under this prefix belong to the API reference page (@fastify/swagger-ui) and are open. */
export const DOCS_PREFIX = '/docs'

const SCHEME = /^Bearer +([^ ]+) *$/i

function digest(token: string): Buffer {
  return createHash('sha256').update(token, 'utf8').digest()
}

/** The scopes a set of configured tokens grants, keyed by token digest. */
export class TokenTable {
  private readonly entries: Array<{ digest: Buffer; scopes: Set<Scope> }> = []

  constructor(tokens: AuthTokens) {
    const byToken = new Map<string, Set<Scope>>()
    for (const scope of ['ingest', 'query', 'metrics', 'admin'] as const) {
      for (const token of tokens[scope]) {
        const scopes = byToken.get(token) ?? new Set<Scope>()
        scopes.add(scope)
        byToken.set(token, scopes)
      }
    }
    for (const [token, scopes] of byToken) this.entries.push({ digest: digest(token), scopes })
  }

  get enabled(): boolean {
    return this.entries.length > 0
  }

  /** The principal a presented token stands for, or null: constant time in the token and in which entry matches. */
  lookup(token: string): Principal | null {
    const presented = digest(token)
    let found: Set<Scope> | null = null
    for (const entry of this.entries) {
      const same = timingSafeEqual(entry.digest, presented)
      if (same) found = entry.scopes
    }
    return found === null ? null : { id: presented.toString('hex').slice(0, 12), scopes: found }
  }
}

/** Whether a principal holding `scopes` may call a route of `required` scope. */
export function allows(scopes: ReadonlySet<Scope>, required: Scope): boolean {
  return required === 'open' || scopes.has('admin') || scopes.has(required)
}

export default fp(
  async (app) => {
    const table = new TokenTable(app.config.auth)
    app.decorateRequest('principal', null)

    app.addHook('onRoute', (route) => {
      const scope = route.config?.scope ?? (route.url.startsWith(DOCS_PREFIX) ? 'open' : undefined)
      if (scope === undefined || !SCOPES.includes(scope)) {
        throw new Error(`route ${String(route.method)} ${route.url} declares no auth scope (config.scope): every route must`)
      }
      route.config = { ...route.config, scope }
      if (scope === 'open' || !route.schema) return
      // Described in the OpenAPI document: bearer auth, and its two refusals.
      route.schema.security = [{ bearerAuth: [scope] }]
      // A route that writes its refusals in another format (problem+json, OTLP's Status) declares them itself.
      const declared = (route.schema.response ?? {}) as Record<string, unknown>
      route.schema.response = {
        ...declared,
        401: declared[401] ?? { $ref: 'Error' },
        403: declared[403] ?? { $ref: 'Error' },
        // Only when TOKENLEDGER_RATE_LIMIT is set; documented whatever the configuration.
        429: declared[429] ?? { $ref: 'Error' },
      }
    })

    if (!table.enabled) return

    app.addHook('onRequest', async (request: FastifyRequest, reply: FastifyReply) => {
      // A 404 has no route config: nothing to protect, nothing to reveal beyond the public API document.
      const required = request.routeOptions.config.scope
      if (required === undefined || required === 'open') return
      const header = request.headers.authorization
      if (header === undefined) {
        reply.header('www-authenticate', 'Bearer realm="tokenledger"')
        throw new Errors.Unauthorized('missing bearer token; send the header "Authorization: Bearer <token>"')
      }
      const match = header.length <= MAX_TOKEN_CHARS + 16 ? SCHEME.exec(header) : null
      const principal = match ? table.lookup(match[1]!) : null
      if (principal === null) {
        reply.header('www-authenticate', 'Bearer realm="tokenledger", error="invalid_token"')
        throw new Errors.Unauthorized('the bearer token is not valid')
      }
      request.principal = principal
      if (!allows(principal.scopes, required)) {
        reply.header('www-authenticate', `Bearer realm="tokenledger", error="insufficient_scope", scope="${required}"`)
        throw new Errors.Forbidden(required, [...principal.scopes].join(', '))
      }
    })
  },
  { name: 'tokenledger-auth', decorators: { fastify: ['config'] } },
)
