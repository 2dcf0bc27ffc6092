// GET / (the dashboard page) and GET /ui/{asset} (its scripts, styles and the
// uPlot chart library). HTTP only: which files exist and the headers they go
// out with. The page is a client of the public query API and holds no data,
// so these routes are open; every call the page makes for data needs a token.
//
// - Assets are an allow-list built at start-up: the files in `ui/` and uPlot's
//   two files from node_modules. Nothing else is reachable (no wildcard into a
//   directory, so no path to traverse), and nothing comes from another origin.
// - Every answer carries a Content-Security-Policy allowing only this origin:
//   no inline script or style, no eval, no frames, no foreign connections.
//   The policy is set here, in this plugin's own context, so the API reference
//   page under /docs keeps the policy @fastify/swagger-ui gives it.
// - Hidden from the OpenAPI document, like /docs and /openapi.json: they are a
//   page for people, not part of the API a client programs against.

import { readdir } from 'node:fs/promises'
import { createRequire } from 'node:module'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import fastifyStatic from '@fastify/static'
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { Type } from 'typebox'
import { Errors } from '../src/errors.js'

export const CONTENT_SECURITY_POLICY = [
  "default-src 'self'",
  "script-src 'self'",
  "style-src 'self'",
  "connect-src 'self'",
  "img-src 'self' data:",
  "font-src 'self'",
  "object-src 'none'",
  "frame-ancestors 'none'",
  "base-uri 'none'",
  "form-action 'self'",
].join('; ')

/** The page's own files, found from this module whether it runs from the source tree or from dist/. */
function uiDir(): string {
  const here = path.dirname(fileURLToPath(import.meta.url))
  // routes/ → ../ui; dist/routes/ → ../../ui
  return path.basename(path.dirname(here)) === 'dist' ? path.resolve(here, '../../ui') : path.resolve(here, '../ui')
}

const ASSET_NAME = '^[a-z0-9][a-z0-9.-]{0,63}$'
const SERVED_TYPES = new Set(['.js', '.css', '.html', '.svg'])

/** Asset name (as in /ui/{name}) → the directory holding it and its file name there. */
async function assetTable(): Promise<Map<string, { root: string; file: string }>> {
  const dir = uiDir()
  const table = new Map<string, { root: string; file: string }>()
  for (const file of (await readdir(dir)).sort()) {
    if (SERVED_TYPES.has(path.extname(file)) && new RegExp(ASSET_NAME).test(file) && file !== 'index.html') table.set(file, { root: dir, file })
  }
  // uPlot's ES module and stylesheet, straight from the installed (pinned) package.
  const uplotDist = path.dirname(createRequire(import.meta.url).resolve('uplot/dist/uPlot.esm.js'))
  table.set('uplot.esm.js', { root: uplotDist, file: 'uPlot.esm.js' })
  table.set('uplot.min.css', { root: uplotDist, file: 'uPlot.min.css' })
  return table
}

const FileBody = {
  description: 'The file (ETag and Last-Modified for revalidation).',
  content: { 'text/html': { schema: { type: 'string' } }, 'text/javascript': { schema: { type: 'string' } }, 'text/css': { schema: { type: 'string' } } },
}
const NotModified = { description: 'Not modified since the ETag or date the client holds.', type: 'null' }

export const uiRoutes: FastifyPluginAsyncTypebox = async (app) => {
  const dir = uiDir()
  const assets = await assetTable()
  // serve: false — no wildcard route; only the routes below reach files, through reply.sendFile.
  await app.register(fastifyStatic, { root: dir, serve: false, dotfiles: 'deny', index: false })

  app.addHook('onSend', async (_request, reply, payload) => {
    reply.header('content-security-policy', CONTENT_SECURITY_POLICY)
    reply.header('x-content-type-options', 'nosniff')
    reply.header('referrer-policy', 'no-referrer')
    reply.header('cross-origin-opener-policy', 'same-origin')
    return payload
  })

  app.get(
    '/',
    { config: { scope: 'open' }, schema: { hide: true, summary: 'The usage dashboard page', response: { 200: FileBody, 304: NotModified } } },
    async (_request, reply) => reply.sendFile('index.html', dir),
  )

  app.get(
    '/ui/:asset',
    {
      config: { scope: 'open' },
      schema: {
        hide: true,
        summary: 'A script or stylesheet of the dashboard page',
        params: Type.Object({ asset: Type.String({ pattern: ASSET_NAME, maxLength: 64 }) }, { additionalProperties: false }),
        response: { 200: FileBody, 304: NotModified, 400: Type.Ref('Error'), 404: Type.Ref('Error') },
      },
    },
    async (request, reply) => {
      const found = assets.get(request.params.asset)
      if (!found) throw new Errors.NotFound(`no dashboard asset "${request.params.asset}"`)
      return reply.sendFile(found.file, found.root)
    },
  )
}
