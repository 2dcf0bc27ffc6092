// Proves that a query parameter outside its fixed set of values (`group_by=modle`,
// `bucket=1day`, `format=xlsx`, `source=cold`, `order_by=price`) is answered 400 once, naming
// the parameter, the value given and the values allowed (and the nearest one when it looks
// like a typo), instead of one "must be equal to constant" per allowed value; that other
// problems still name their parameter and reason; and that an unknown parameter names the
// known one it was probably meant to be.

import assert from 'node:assert/strict'
import { test } from 'node:test'
import { build } from './helper.js'

const CASES: Array<[url: string, message: string]> = [
  ['/v1/usage?group_by=modle', 'querystring/group_by "modle" is not allowed; allowed: key_id, team_id, user_id, customer_id, provider, model (did you mean model?)'],
  ['/v1/usage?group_by=model&group_by=teem_id', 'querystring/group_by "teem_id" is not allowed; allowed: key_id, team_id, user_id, customer_id, provider, model (did you mean team_id?)'],
  ['/v1/usage/timeseries?bucket=1day', 'querystring/bucket "1day" is not allowed; allowed: 15m, 1h, 1d, 1w, 1mo (did you mean 1d?)'],
  ['/v1/export?format=xlsx', 'querystring/format "xlsx" is not allowed; allowed: csv, ndjson, parquet'],
  ['/v1/events?source=cold', 'querystring/source "cold" is not allowed; allowed: all, hot, archive'],
  ['/v1/usage?order_by=price', 'querystring/order_by "price" is not allowed; allowed: requests, errors, input_tokens, output_tokens, cache_read_tokens, cache_write_tokens, reasoning_tokens, cost, cost_missing'],
  ['/v1/usage?limit=0', 'querystring/limit must be >= 1'],
  ['/v1/usage?group_bye=model', 'querystring/group_bye is not a known parameter (did you mean group_by?)'],
  ['/v1/usage?colour=red', 'querystring/colour is not a known parameter'],
  ['/v1/usage/timeseries', 'querystring/bucket is required'],
  // A pattern is told in words, never as its regex.
  ['/v1/usage?status=okk', 'querystring/status "okk" is not allowed; allowed: ok, error or a status code from 100 to 599'],
  ['/v1/usage?status=ok&status=600', 'querystring/status "600" is not allowed; allowed: ok, error or a status code from 100 to 599'],
  ['/v1/admin/prices?version=XYZ', 'querystring/version "XYZ" is not allowed; allowed: 16 lowercase hex digits (the version an event\'s price_ref names)'],
]

test('an enum query parameter with a wrong value is told once, with the value given and the values allowed', async (t) => {
  const { app } = await build(t)
  for (const [url, message] of CASES) {
    const res = await app.inject({ url })
    assert.equal(res.statusCode, 400, `${url}: ${res.body}`)
    const body = res.json() as { code: string; message: string }
    assert.equal(body.code, 'TL_INVALID_REQUEST', url)
    assert.equal(body.message, message, url)
    assert.doesNotMatch(body.message, /equal to constant|match a schema in anyOf|must match pattern/, url)
  }
})

test('a long wrong value is quoted cut short, never echoed whole', async (t) => {
  const { app } = await build(t)
  const res = await app.inject({ url: `/v1/export?format=${'x'.repeat(5000)}` })
  assert.equal(res.statusCode, 400)
  const { message } = res.json() as { message: string }
  assert.ok(message.length < 200, message)
  assert.match(message, /^querystring\/format "x{63}\u2026 is not allowed; allowed: csv, ndjson, parquet$/)
})
