// Proves that every ingest door answers a body it cannot read (an unsupported
// Content-Type, a body without one, an unsupported Content-Encoding) with a 415 whose
// message names what was sent and every content type and encoding the door accepts, in
// the door's own error format (ours, OpenMeter's problem+json, OTLP's google.rpc.Status);
// and that each content type it names is in fact accepted.

import assert from 'node:assert/strict'
import { gzipSync } from 'node:zlib'
import { test } from 'node:test'
import { build } from './helper.js'

interface Door {
  url: string
  types: string[]
  /** The message of a refusal, in this door's format. */
  message(body: string): string
}

const DOORS: Door[] = [
  { url: '/v1/events', types: ['application/json', 'application/x-ndjson', 'application/ndjson', 'application/jsonl', 'application/x-jsonlines'], message: (b) => (JSON.parse(b) as { message: string }).message },
  { url: '/api/v1/events', types: ['application/cloudevents+json', 'application/cloudevents-batch+json', 'application/json'], message: (b) => (JSON.parse(b) as { detail: string }).detail },
  { url: '/v1/traces', types: ['application/x-protobuf', 'application/json'], message: (b) => (JSON.parse(b) as { message: string }).message },
  { url: '/v1/integrations/litellm', types: ['application/json', 'application/x-ndjson', 'application/ndjson'], message: (b) => (JSON.parse(b) as { message: string }).message },
]

function assertNamesAccepted(door: Door, message: string, what: RegExp): void {
  assert.match(message, what, `${door.url}: ${message}`)
  for (const type of door.types) assert.ok(message.includes(type), `${door.url}: the 415 names ${type}: ${message}`)
  assert.match(message, /gzip/, `${door.url}: the 415 names the encodings: ${message}`)
  assert.match(message, /identity/, `${door.url}: the 415 names the encodings: ${message}`)
}

test('a 415 from any ingest door names the content types and encodings it accepts', async (t) => {
  const { app } = await build(t)
  for (const door of DOORS) {
    const wrongType = await app.inject({ method: 'POST', url: door.url, headers: { 'content-type': 'text/plain' }, payload: 'x' })
    assert.equal(wrongType.statusCode, 415, `${door.url}: ${wrongType.body}`)
    assertNamesAccepted(door, door.message(wrongType.body), /unsupported Content-Type "text\/plain"/)

    const noType = await app.inject({ method: 'POST', url: door.url, payload: Buffer.from('{}') })
    assert.equal(noType.statusCode, 415, `${door.url}: ${noType.body}`)
    assertNamesAccepted(door, door.message(noType.body), /a body without Content-Type/)

    // (The last type named: OTLP answers in the request's encoding, and that one is JSON.)
    const wrongEncoding = await app.inject({ method: 'POST', url: door.url, headers: { 'content-type': door.types.at(-1)!, 'content-encoding': 'br' }, payload: '{}' })
    assert.equal(wrongEncoding.statusCode, 415, `${door.url}: ${wrongEncoding.body}`)
    assertNamesAccepted(door, door.message(wrongEncoding.body), /unsupported Content-Encoding "br"/)

    // Every type named is one the door reads (a gzipped, malformed body: 400, not 415).
    for (const type of door.types) {
      const res = await app.inject({ method: 'POST', url: door.url, headers: { 'content-type': `${type}; charset=utf-8`, 'content-encoding': 'gzip' }, payload: gzipSync('\u0000') })
      assert.notEqual(res.statusCode, 415, `${door.url} reads ${type}: ${res.body}`)
    }
  }
})
