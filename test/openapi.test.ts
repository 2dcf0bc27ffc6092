// Proves openapi.yaml is the document the running code describes: it is
// regenerated from the route schemas and must equal the committed file
// (run `npm run openapi` after changing a route). Also checks that every
// route the app serves is in it, with its declared statuses.

import assert from 'node:assert/strict'
import { readFile } from 'node:fs/promises'
import { test } from 'node:test'
import { parse } from 'yaml'
import { generateOpenApiYaml } from './support/openapi.js'

test('openapi.yaml equals the spec generated from the route schemas', async () => {
  const committed = await readFile(new URL('../openapi.yaml', import.meta.url), 'utf8')
  const generated = await generateOpenApiYaml()
  assert.equal(committed, generated, 'openapi.yaml is stale: run `npm run openapi` and commit the result')

  const doc = parse(generated) as { paths: Record<string, Record<string, { responses: Record<string, unknown> }>> }
  const expected: Array<[string, string, string[]]> = [
    ['/v1/events', 'post', ['200', '400', '413', '415', '422', '503']],
    ['/v1/events/{event_id}', 'get', ['200', '404']],
    ['/api/v1/events', 'post', ['204', '400', '401', '409', '413', '415', '503']],
    ['/v1/traces', 'post', ['200', '400', '413', '415', '429', '503']],
    ['/v1/integrations/litellm', 'post', ['200', '400', '413', '415', '503']],
    ['/v1/usage', 'get', ['200', '400']],
    ['/healthz', 'get', ['200']],
    ['/readyz', 'get', ['200', '503']],
  ]
  for (const [route, method, statuses] of expected) {
    const op = doc.paths[route]?.[method]
    assert.ok(op, `${method.toUpperCase()} ${route} is documented`)
    for (const s of statuses) assert.ok(op.responses[s], `${method.toUpperCase()} ${route} documents ${s}`)
  }
})
