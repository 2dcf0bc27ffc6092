// An OTLP ExportTraceServiceRequest in binary protobuf, read straight off the
// wire into what the GenAI mapping (otlp.ts) uses, and nothing else: per
// resource its attributes, per span its ids, times, status code and the
// attributes the mapping can ask for. protobufjs's Reader does the reading
// (tags, varints, lengths, UTF-8), driven by the field numbers of the vendored
// schema (otlp-schema.ts: looked up once per thread, checked against the types
// read here); this file only chooses which fields to keep. Spans are handed
// to a visitor one by one, in one reused object, so a body's spans are never
// all held at once. Why not the generated
// decoder: it built every message, value and Long of the body (span names,
// events, links, every attribute), and that was most of an OTLP body's decode
// time (bench/decode-otlp.ts).
//
// Invariants (test/otlp-wire.test.ts checks them against protobufjs's full
// decode, by fast-check, on generated and on corrupted bodies):
// - What is kept is what the full decode gives for it: the last occurrence of
//   a scalar wins and a default value clears it, a repeated singular message
//   is merged (a resource's attributes concatenated, a value's last kind set
//   wins), a known field with the wrong wire type is skipped as unknown, and
//   so is every unknown field (groups included, to protobufjs's depth bound).
// - Every byte is walked: a truncated or overrunning message, a bad tag, wire
//   type or varint throws (the body is refused, 400), as the full decode does.
//   The content of fields not kept (names, events, links, attribute values
//   the mapping never reads) is skipped by its length, not decoded, so a body
//   corrupt only inside them is read where the full decode would refuse it.
// - Times stay exact without BigInt: a fixed64 is read as two uint32s and split
//   into milliseconds and the nanoseconds within (every operand below 2^53).
//   An int attribute is a number when it is a safe integer, else protobufjs's
//   Long (otlp.ts reports it as beyond 2^53-1).

import protobuf from 'protobufjs'
import { fieldNumbers, LEN, I64, VARINT, type FieldNumbers } from './otlp-schema.js'

/** An OTLP AnyValue as the mapping reads it: at most one own property, named as the schema's lowerCamelCase field (stringValue, intValue, ...). */
export type AnyValue = Record<string, unknown>
/** A span's or resource's attributes by key: the last KeyValue with a value wins. */
export type Attributes = Map<string, AnyValue>

/** A time as the mapping uses it: milliseconds since the epoch and the nanoseconds within that millisecond; ms -1 when absent or not above 0. */
export interface NanoTime {
  ms: number
  subNs: number
}

export interface SpanIn {
  /** Lowercase hex of exactly 16 bytes, not all zero; else null. */
  traceId: string | null
  /** Lowercase hex of exactly 8 bytes, not all zero; else null. */
  spanId: string | null
  start: NanoTime
  end: NanoTime
  /** Status.code (2 is ERROR). */
  statusCode: number
  attrs: Attributes
}

export interface ResourceIn {
  attrs: Attributes
  /** Every span of every ScopeSpans of this ResourceSpans, in order. */
  spans: SpanIn[]
}

export const NO_TIME: NanoTime = Object.freeze({ ms: -1, subNs: 0 })

// ---------------------------------------------------------------------------
// Reading.

/** Fixed-width ids and times: 2^32 = 4294 * 10^6 + 967296. */
const MS_PER_2_32_NS = 4294
const NS_REM_2_32 = 967_296
const NS_PER_MS = 1_000_000
const TWO_32 = 4_294_967_296
/** High words of the int64s that are safe integers (|n| ≤ 2^53-1) for every low word. */
const SAFE_HIGH = 0x200000

interface Reading {
  r: protobuf.Reader
  buf: Buffer
  f: FieldNumbers
  wanted: KeyTable
  maxSpans: number
  spans: number
  onTooMany: (count: number) => Error
  /** The AnyValue being read (one at a time). */
  value: AnyValueState
  /** The span being read (one at a time, handed to `visit`, then reused). */
  span: SpanIn
  visit: SpanVisitor
}

/**
 * Called with each span in order, and its resource's attributes. The span
 * (its attributes too) is reused for the next one once this returns: copy out
 * what is kept.
 */
export type SpanVisitor = (span: SpanIn, resourceAttrs: Attributes) => void

/**
 * Reads the request, calling `visit` with each span. `wanted`: the attribute
 * keys the mapping may read (others are skipped); past `maxSpans` spans,
 * `onTooMany`'s error is thrown. Malformed wire data throws protobufjs's error.
 */
export function readExportRequest(bytes: Uint8Array, wanted: KeyTable, maxSpans: number, onTooMany: (count: number) => Error, visit: SpanVisitor): void {
  const buf = Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength)
  const r = protobuf.Reader.create(buf)
  const span: SpanIn = { traceId: null, spanId: null, start: NO_TIME, end: NO_TIME, statusCode: 0, attrs: new Map() }
  const s: Reading = { r, buf, f: fieldNumbers(), wanted, maxSpans, spans: 0, onTooMany, value: new AnyValueState(), span, visit }
  const id = s.f.request.resourceSpans
  while (r.pos < r.len) {
    const tag = r.tag()
    const field = tag >>> 3
    if (field === id && (tag & 7) === LEN) {
      const outer = r.len
      const end = enter(r, 1)
      readResourceSpans(s, end, 1)
      leave(r, end, outer)
    } else {
      r.skipType(tag & 7, 0, field)
    }
  }
}

/**
 * Enters a length-delimited message at `depth`, bounded to its length as
 * protobufjs's decode bounds it: returns where it ends (r.len is set there);
 * `leave` checks it was read to exactly there and restores `outer`.
 */
function enter(r: protobuf.Reader, depth: number): number {
  if (depth > protobuf.Reader.recursionLimit) throw Error('max depth exceeded')
  const length = r.size()
  const end = r.pos + length
  if (end > r.len) throw RangeError('index out of range')
  r.len = end
  return end
}

function leave(r: protobuf.Reader, end: number, outer: number): void {
  if (r.pos !== end) throw RangeError('index out of range')
  r.len = outer
}

/** A ResourceSpans: its resource first (wherever it lies in the message), then its spans, each to `visit`. */
function readResourceSpans(s: Reading, end: number, depth: number): void {
  const { r, f } = s
  const start = r.pos
  const attrs: Attributes = new Map()
  for (let pass = 0; pass < 2; pass++) {
    r.pos = start
    while (r.pos < end) {
      const tag = r.tag()
      const field = tag >>> 3
      const wire = tag & 7
      const wantedHere = wire === LEN && (pass === 0 ? field === f.resourceSpans.resource : field === f.resourceSpans.scopeSpans)
      if (wantedHere) {
        const outer = r.len
        const inner = enter(r, depth + 1)
        if (pass === 0) readResource(s, inner, depth + 1, attrs)
        else readScopeSpans(s, inner, depth + 1, attrs)
        leave(r, inner, outer)
      } else {
        r.skipType(wire, depth, field)
      }
    }
  }
}

function readResource(s: Reading, end: number, depth: number, into: Attributes): void {
  const { r, f } = s
  while (r.pos < end) {
    const tag = r.tag()
    const field = tag >>> 3
    if (field === f.resource.attributes && (tag & 7) === LEN) {
      const outer = r.len
      const inner = enter(r, depth + 1)
      readKeyValue(s, inner, depth + 1, into)
      leave(r, inner, outer)
    } else {
      r.skipType(tag & 7, depth, field)
    }
  }
}

function readScopeSpans(s: Reading, end: number, depth: number, resourceAttrs: Attributes): void {
  const { r, f } = s
  while (r.pos < end) {
    const tag = r.tag()
    const field = tag >>> 3
    if (field === f.scopeSpans.spans && (tag & 7) === LEN) {
      if (++s.spans > s.maxSpans) throw s.onTooMany(s.spans)
      const outer = r.len
      const inner = enter(r, depth + 1)
      readSpan(s, inner, depth + 1)
      s.visit(s.span, resourceAttrs)
      leave(r, inner, outer)
    } else {
      r.skipType(tag & 7, depth, field)
    }
  }
}

/** One span into s.span (reused). */
function readSpan(s: Reading, end: number, depth: number): void {
  const { r, f } = s
  const n = f.span
  let traceId: string | null = null
  let spanId: string | null = null
  let startLo = 0
  let startHi = 0
  let endLo = 0
  let endHi = 0
  let statusCode = 0
  const attrs = s.span.attrs
  attrs.clear()
  while (r.pos < end) {
    const tag = r.tag()
    const field = tag >>> 3
    const wire = tag & 7
    if (field === n.attributes && wire === LEN) {
      const outer = r.len
      const inner = enter(r, depth + 1)
      readKeyValue(s, inner, depth + 1, attrs)
      leave(r, inner, outer)
    } else if (field === n.traceId && wire === LEN) traceId = readId(s, 16)
    else if (field === n.spanId && wire === LEN) spanId = readId(s, 8)
    else if (field === n.start && wire === I64) {
      startLo = r.fixed32()
      startHi = r.fixed32()
    } else if (field === n.end && wire === I64) {
      endLo = r.fixed32()
      endHi = r.fixed32()
    } else if (field === n.status && wire === LEN) {
      const outer = r.len
      const inner = enter(r, depth + 1)
      statusCode = readStatus(s, inner, depth + 1, statusCode)
      leave(r, inner, outer)
    } else {
      r.skipType(wire, depth, field)
    }
  }
  const span = s.span
  span.traceId = traceId
  span.spanId = spanId
  span.start = nanoTime(startHi, startLo)
  span.end = nanoTime(endHi, endLo)
  span.statusCode = statusCode
}

/** A bytes field as lowercase hex when it is `width` bytes and not all zero, else null. */
function readId(s: Reading, width: number): string | null {
  const r = s.r
  const length = r.size()
  const start = r.pos
  const end = start + length
  if (end > r.len) throw RangeError('index out of range')
  r.pos = end
  if (length !== width) return null
  for (let i = start; i < end; i++) if (s.buf[i] !== 0) return s.buf.toString('hex', start, end)
  return null
}

/** A fixed64 of nanoseconds (high and low words, unsigned) as milliseconds and the nanoseconds within; NO_TIME for 0. */
export function nanoTime(hi: number, lo: number): NanoTime {
  if (hi === 0 && lo === 0) return NO_TIME
  const t = hi * NS_REM_2_32 + lo // < 2^52
  const carry = Math.floor(t / NS_PER_MS)
  return { ms: hi * MS_PER_2_32_NS + carry, subNs: t - carry * NS_PER_MS }
}

function readStatus(s: Reading, end: number, depth: number, code: number): number {
  const { r, f } = s
  let value = code
  while (r.pos < end) {
    const tag = r.tag()
    const field = tag >>> 3
    if (field === f.status.code && (tag & 7) === VARINT) value = r.int32()
    else r.skipType(tag & 7, depth, field)
  }
  return value
}

/** One KeyValue into `into`, when its key is wanted and it has a value (its value messages merged in order). */
function readKeyValue(s: Reading, end: number, depth: number, into: Attributes): void {
  const { r, f } = s
  let key: string | null = null
  // Where the value message(s) lie: read once the key is known (it may come after them).
  let first = -1
  let more: number[] | null = null
  while (r.pos < end) {
    const tag = r.tag()
    const field = tag >>> 3
    const wire = tag & 7
    if (field === f.keyValue.key && wire === LEN) {
      const length = r.size()
      const start = r.pos
      r.skip(length)
      key = s.wanted.match(s.buf, start, start + length)
    } else if (field === f.keyValue.value && wire === LEN) {
      const at = r.pos
      r.skip(r.size())
      if (first === -1) first = at
      else (more ??= []).push(at)
    } else {
      r.skipType(wire, depth, field)
    }
  }
  if (first === -1 || key === null) return
  const after = r.pos
  const outer = r.len
  const value = s.value
  value.kind = ''
  value.v = undefined
  r.pos = first
  let inner = enter(r, depth + 1)
  readAnyValue(s, inner, depth + 1, value)
  leave(r, inner, outer)
  for (const at of more ?? []) {
    r.pos = at
    inner = enter(r, depth + 1)
    readAnyValue(s, inner, depth + 1, value)
    leave(r, inner, outer)
  }
  r.pos = after
  into.set(key, value.value())
}

/**
 * The attribute keys the mapping reads, matched on their UTF-8 bytes: a key
 * on the wire that is none of them is skipped without making a string of it.
 */
export class KeyTable {
  /** By UTF-8 length: the keys of that length. */
  private readonly byLength: Array<Array<{ bytes: Buffer; key: string }> | undefined> = []

  constructor(keys: Iterable<string>) {
    for (const key of keys) {
      const bytes = Buffer.from(key, 'utf8')
      const list = (this.byLength[bytes.length] ??= [])
      if (!list.some((e) => e.key === key)) list.push({ bytes, key })
    }
  }

  /** The key whose UTF-8 is buf[start, end), or null when it is not in the table. */
  match(buf: Buffer, start: number, end: number): string | null {
    const list = this.byLength[end - start]
    if (list === undefined) return null
    for (let k = 0; k < list.length; k++) {
      const { bytes, key } = list[k]!
      // From the end: the keys share their prefixes (gen_ai.usage.…).
      let i = bytes.length - 1
      while (i >= 0 && bytes[i] === buf[start + i]) i--
      if (i < 0) return key
    }
    return null
  }
}

/** The oneof of an AnyValue being read: the last kind set wins (protobufjs's oneof setter). */
class AnyValueState {
  kind = ''
  v: unknown = undefined
  value(): AnyValue {
    switch (this.kind) {
      case '':
        return {}
      case 'stringValue':
        return { stringValue: this.v }
      case 'intValue':
        return { intValue: this.v }
      case 'doubleValue':
        return { doubleValue: this.v }
      case 'boolValue':
        return { boolValue: this.v }
      default:
        return { [this.kind]: this.v }
    }
  }
}

function readAnyValue(s: Reading, end: number, depth: number, v: AnyValueState): void {
  const { r, f } = s
  const n = f.anyValue
  while (r.pos < end) {
    const tag = r.tag()
    const field = tag >>> 3
    const wire = tag & 7
    if (field === n.string && wire === LEN) {
      v.kind = 'stringValue'
      v.v = r.stringVerify()
    } else if (field === n.int && wire === VARINT) {
      v.kind = 'intValue'
      v.v = readInt64(r)
    } else if (field === n.double && wire === I64) {
      v.kind = 'doubleValue'
      v.v = r.double()
    } else if (field === n.bool && wire === VARINT) {
      v.kind = 'boolValue'
      v.v = r.bool()
    } else if ((field === n.array || field === n.kvlist || field === n.bytes) && wire === LEN) {
      // Only their kind is read (the mapping names it in an error): their content is skipped.
      v.kind = field === n.array ? 'arrayValue' : field === n.kvlist ? 'kvlistValue' : 'bytesValue'
      v.v = true
      r.skip(r.size())
    } else {
      r.skipType(wire, depth, field)
    }
  }
}

/** An int64 varint: a number when it is a safe integer, else protobufjs's Long. */
function readInt64(r: protobuf.Reader): number | protobuf.Long {
  const b = r.buf
  const p = r.pos
  // At most 4 bytes: below 2^28, exact as a uint32.
  if (p + 4 <= r.len && (b[p]! < 128 || b[p + 1]! < 128 || b[p + 2]! < 128 || b[p + 3]! < 128)) return r.uint32()
  const long = r.int64()
  if (long.high > -SAFE_HIGH && long.high < SAFE_HIGH) return long.high * TWO_32 + (long.low >>> 0)
  return long
}
