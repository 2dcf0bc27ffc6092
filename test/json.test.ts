// Proves the ingest JSON reader (src/ingest/json.ts) reads every valid JSON
// document exactly as JSON.parse does (property test), refuses what JSON.parse
// refuses, and refuses what JSON.parse silently accepts or changes: duplicate
// keys, excess depth, invalid UTF-8 (found at the right byte), prototype keys;
// and that long numbers keep their text.

import assert from 'node:assert/strict'
import { test } from 'node:test'
import fc from 'fast-check'
import { ExactNumber, firstInvalidUtf8, JsonFault, readJson, utf8Text } from '../src/ingest/json.js'
import { plainDecimal } from '../src/money.js'

const opts = { maxDepth: 64, exactNumbers: false }
const runs = Number(process.env['FUZZ_RUNS'] ?? '300')

/** Whether `v` holds a key the reader refuses on purpose: `__proto__`, or `constructor` holding `prototype`. */
function hasPrototypeKey(v: unknown): boolean {
  if (Array.isArray(v)) return v.some(hasPrototypeKey)
  if (v === null || typeof v !== 'object') return false
  return Object.entries(v).some(([k, x]) => k === '__proto__' || (k === 'constructor' && x !== null && typeof x === 'object' && Object.prototype.hasOwnProperty.call(x, 'prototype')) || hasPrototypeKey(x))
}

test('reads what JSON.parse reads, and refuses what it refuses', () => {
  fc.assert(
    // Prototype keys are refused by design (json.ts; 'refusals name where' below covers them).
    fc.property(fc.jsonValue({ maxDepth: 8 }).filter((v) => !hasPrototypeKey(v)), fc.constantFrom('', ' ', '\n\t '), (value, ws) => {
      const text = ws + JSON.stringify(value, null, ws.length > 1 ? 1 : undefined) + ws
      assert.deepEqual(readJson(text, opts), JSON.parse(text))
    }),
    { numRuns: runs },
  )
  fc.assert(
    fc.property(fc.string({ maxLength: 12 }), (text) => {
      let expected: unknown
      try {
        expected = JSON.parse(text)
      } catch {
        assert.throws(() => readJson(text, opts), JsonFault, `JSON.parse refuses ${JSON.stringify(text)}`)
        return
      }
      // JSON.parse takes it: so do we, unless it repeats a key.
      assert.deepEqual(readJson(text, opts), expected)
    }),
    { numRuns: runs * 10 },
  )
})

test('refusals name where', () => {
  const fault = (text: string, depth = 64) => {
    try {
      readJson(text, { maxDepth: depth, exactNumbers: true })
    } catch (err) {
      assert.ok(err instanceof JsonFault)
      return `${err.message} @${err.pointer}`
    }
    assert.fail(`${text} was read`)
  }
  assert.equal(fault('{"a":[{"b":1,"b":1}]}'), 'duplicate key "b" @/a/0/b')
  assert.equal(fault('{"a~/":{"x":[[[]]]}}', 3), 'nested deeper than 3 levels @/a~0~1/x/0')
  assert.equal(fault('{"__proto__":{}}'), 'a "__proto__" key is not allowed @/__proto__')
  assert.equal(fault('{"constructor":{"prototype":{}}}'), 'a "constructor.prototype" key is not allowed @/constructor')
  assert.equal(fault('["\u0001"]'), 'a control character (U+0001) in a string must be escaped @/0')
})

test('a 10 MB [[[[… is refused at its 65th byte, not after reading it all', () => {
  const text = '['.repeat(10_000_000)
  assert.throws(
    () => readJson(text, opts),
    (err) => err instanceof JsonFault && err.at === 64 && /nested deeper than 64/.test(err.message),
  )
})

test('the first invalid UTF-8 byte is found where Node and the standard put it', () => {
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 24 }), (bytes) => {
      const buf = Buffer.from(bytes)
      const at = firstInvalidUtf8(buf)
      const res = utf8Text(buf)
      assert.equal(res.ok, at === -1)
      if (!res.ok) {
        assert.equal(res.badByte, at)
        // Everything before it decodes cleanly, and the decoder's first U+FFFD is where we say.
        assert.ok(new TextDecoder('utf-8', { fatal: true }).decode(buf.subarray(0, at)) !== undefined)
        assert.equal(res.text.indexOf('\ufffd', res.badChar - 0), res.badChar)
      }
    }),
    { numRuns: runs * 10 },
  )
})

test('numbers of more than 15 significant digits keep their text; the others are doubles', () => {
  const read = (t: string) => readJson(t, { maxDepth: 4, exactNumbers: true })
  assert.deepEqual(read('[123456789012.123456, 1e400, 0.000000000000000000001, 123456789012345, -0]'), [new ExactNumber('123456789012.123456'), Infinity, 1e-21, 123456789012345, -0])
  assert.deepEqual(read('1234567890123456'), new ExactNumber('1234567890123456'))
  assert.equal(plainDecimal('1.5e-7'), '0.00000015')
  assert.equal(plainDecimal('12E+3'), '12000')
  assert.equal(plainDecimal('0.012e1'), '0.12')
  assert.equal(plainDecimal('-1.25e-2'), '-0.0125')
})
