// The one JSON reader of every ingest body: a single pass over the text that
// refuses, while it parses, what JSON.parse would silently accept or change.
//
// Invariants (each a refusal naming where, as a JSON pointer, and why):
// - a body that is not valid UTF-8 is refused (never decoded to U+FFFD, which
//   would make `k\xff` and `k\xc0` the same billing key): the pointer names the
//   string holding the first bad byte, with its byte offset;
// - an object with the same key twice is refused: a gateway whose JSON library
//   keeps the first key and we (last wins) would disagree about the event's id
//   or its amount;
// - nesting deeper than `maxDepth` is refused when the parser reaches it, so a
//   7 MB `[[[[…` costs a few bytes of work, not a tree of millions of arrays;
// - `__proto__` keys and `constructor.prototype` are refused (prototype
//   poisoning), as secure-json-parse did before;
// - with `exactNumbers`, a number a double cannot hold exactly (more than 15
//   significant digits) is kept as its text (ExactNumber): a cost of
//   123456789012.123456 stays that, never 123456789012.12346.
//
// Why not a library: JSON.parse (so secure-json-parse, json-bigint's
// storeAsString over it) cannot see a duplicate key at all; lossless-json
// 4.3 keeps number text and has an onDuplicateKey hook, but lets a repeated
// key with an equal value pass, recurses with no depth bound (a deep body
// ends in a stack overflow), works on text already decoded (so it cannot say
// where bad UTF-8 was) and names no field. bench/json-parse.ts measures this
// reader against secure-json-parse on the ingest bench's bodies.

import { isUtf8 } from 'node:buffer'

/** A JSON number kept as its text because a double would change it (more than 15 significant digits). */
export class ExactNumber {
  constructor(readonly text: string) {}
}

/** A fault in a JSON body: what, and where (a JSON pointer; "" is the whole document). */
export class JsonFault extends Error {
  constructor(
    message: string,
    /** Character offset in the text. */
    readonly at: number,
    /** Path segments, innermost last; filled while the fault unwinds. */
    readonly path: Array<string | number> = [],
  ) {
    super(message)
  }

  get pointer(): string {
    return this.path.map((p) => `/${String(p).replace(/~/g, '~0').replace(/\//g, '~1')}`).join('').slice(0, 300)
  }
}

export interface JsonReadOptions {
  /** Deepest nesting of arrays and objects; the top-level value is depth 1. */
  maxDepth: number
  /** Keep numbers of more than 15 significant digits as ExactNumber (else: doubles). */
  exactNumbers: boolean
}

/** A UTF-8 body as text, or the byte offset of its first invalid sequence. */
export function utf8Text(bytes: Uint8Array): { ok: true; text: string } | { ok: false; text: string; badByte: number; badChar: number } {
  const buf = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength)
  const text = buf.toString('utf8')
  if (isUtf8(buf)) return { ok: true, text }
  const badByte = firstInvalidUtf8(buf)
  // Everything before badByte is valid UTF-8: its decoded length is where the U+FFFD stands.
  const badChar = buf.subarray(0, badByte).toString('utf8').length
  return { ok: false, text, badByte, badChar }
}

/** The offset of the first byte that does not start or continue a valid UTF-8 sequence (RFC 3629: no overlongs, surrogates or code points past U+10FFFF). */
export function firstInvalidUtf8(b: Uint8Array): number {
  let i = 0
  while (i < b.length) {
    const c = b[i]!
    if (c < 0x80) {
      i++
      continue
    }
    let n: number
    let lo = 0x80
    let hi = 0xbf
    if (c >= 0xc2 && c <= 0xdf) n = 1
    else if (c >= 0xe0 && c <= 0xef) {
      n = 2
      if (c === 0xe0) lo = 0xa0
      else if (c === 0xed) hi = 0x9f
    } else if (c >= 0xf0 && c <= 0xf4) {
      n = 3
      if (c === 0xf0) lo = 0x90
      else if (c === 0xf4) hi = 0x8f
    } else return i
    const second = b[i + 1]
    if (second === undefined || second < lo || second > hi) return i
    for (let k = 2; k <= n; k++) {
      const x = b[i + k]
      if (x === undefined || x < 0x80 || x > 0xbf) return i
    }
    i += n + 1
  }
  return -1
}

const MAX_EXACT_DIGITS = 15

/**
 * Parses `text` as one JSON document. `badChar` (from utf8Text) is where an
 * invalid UTF-8 sequence was decoded as U+FFFD: reaching it is a fault.
 * Throws JsonFault.
 */
export function readJson(text: string, opts: JsonReadOptions, badChar = -1, badByte = -1): unknown {
  return new Reader(text, 0, text.length, opts, badChar, badByte).document()
}

/**
 * The values of an NDJSON text, one per non-blank line. `onValue` is called
 * for each with its 1-based line number (it may throw to stop: a count bound).
 * A fault carries `line`.
 */
export function readNdjson(text: string, opts: JsonReadOptions, onValue: (value: unknown, line: number) => void, badChar = -1, badByte = -1): void {
  let start = 0
  let line = 0
  while (start <= text.length) {
    let end = text.indexOf('\n', start)
    if (end === -1) end = text.length
    line++
    const reader = new Reader(text, start, end, opts, badChar, badByte)
    if (!reader.blank()) {
      try {
        onValue(reader.document(), line)
      } catch (err) {
        if (err instanceof JsonFault) throw Object.assign(err, { line })
        throw err
      }
    }
    start = end + 1
  }
}

class Reader {
  private i: number
  private depth = 0

  constructor(
    private readonly s: string,
    start: number,
    private readonly end: number,
    private readonly opts: JsonReadOptions,
    private readonly badChar: number,
    private readonly badByte: number,
  ) {
    this.i = start
  }

  blank(): boolean {
    this.ws()
    return this.i >= this.end
  }

  document(): unknown {
    this.ws()
    const value = this.value()
    this.ws()
    if (this.i < this.end) this.fail(`unexpected ${this.describe()} after the JSON value`)
    return value
  }

  private fail(message: string, at = this.i): never {
    if (this.badChar !== -1 && at >= this.badChar) throw new JsonFault(`invalid UTF-8 at byte offset ${this.badByte}`, this.badChar)
    throw new JsonFault(message, at)
  }

  private describe(): string {
    if (this.i >= this.end) return 'end of input'
    return `character ${JSON.stringify(this.s[this.i])} at offset ${this.i}`
  }

  private ws(): void {
    const s = this.s
    let i = this.i
    if (s.charCodeAt(i) > 0x20) return
    for (; i < this.end; i++) {
      const c = s.charCodeAt(i)
      if (c !== 0x20 && c !== 0x0a && c !== 0x0d && c !== 0x09) break
    }
    this.i = i
  }

  private value(): unknown {
    if (this.i >= this.end) this.fail('unexpected end of input, a value was expected')
    const c = this.s.charCodeAt(this.i)
    switch (c) {
      case 0x7b: // {
        return this.object()
      case 0x5b: // [
        return this.array()
      case 0x22: // "
        return this.string(false)
      case 0x74: // t
        return this.word('true', true)
      case 0x66: // f
        return this.word('false', false)
      case 0x6e: // n
        return this.word('null', null)
      default:
        if (c === 0x2d || (c >= 0x30 && c <= 0x39)) return this.number()
        return this.fail(`unexpected ${this.describe()}, a value was expected`)
    }
  }

  private enter(): void {
    if (++this.depth > this.opts.maxDepth) this.fail(`nested deeper than ${this.opts.maxDepth} levels`)
  }

  private object(): Record<string, unknown> {
    this.enter()
    this.i++
    const obj: Record<string, unknown> = {}
    this.ws()
    if (this.s.charCodeAt(this.i) === 0x7d) {
      this.i++
      this.depth--
      return obj
    }
    for (;;) {
      if (this.s.charCodeAt(this.i) !== 0x22) this.fail(`unexpected ${this.describe()}, a key (a string) was expected`)
      const keyAt = this.i
      const key = this.string(true)
      if (Object.prototype.hasOwnProperty.call(obj, key)) throw new JsonFault(`duplicate key ${JSON.stringify(key.slice(0, 64))}`, keyAt, [key])
      if (key === '__proto__') throw new JsonFault('a "__proto__" key is not allowed', keyAt, [key])
      this.ws()
      if (this.s.charCodeAt(this.i) !== 0x3a) this.fail(`unexpected ${this.describe()}, ":" was expected`)
      this.i++
      this.ws()
      let v: unknown
      try {
        v = this.value()
      } catch (err) {
        if (err instanceof JsonFault) err.path.unshift(key)
        throw err
      }
      if (key === 'constructor' && typeof v === 'object' && v !== null && Object.prototype.hasOwnProperty.call(v, 'prototype')) {
        throw new JsonFault('a "constructor.prototype" key is not allowed', keyAt, [key])
      }
      obj[key] = v
      if (this.closes(0x7d, '}')) return obj
    }
  }

  private array(): unknown[] {
    this.enter()
    this.i++
    const arr: unknown[] = []
    this.ws()
    if (this.s.charCodeAt(this.i) === 0x5d) {
      this.i++
      this.depth--
      return arr
    }
    for (;;) {
      try {
        arr.push(this.value())
      } catch (err) {
        if (err instanceof JsonFault) err.path.unshift(arr.length)
        throw err
      }
      if (this.closes(0x5d, ']')) return arr
    }
  }

  /** After a member of an object or array: true at its end `close` (consumed, depth left), false after a comma; else a fault. */
  private closes(close: number, name: string): boolean {
    this.ws()
    const c = this.s.charCodeAt(this.i)
    if (c === 0x2c) {
      this.i++
      this.ws()
      return false
    }
    if (c === close) {
      this.i++
      this.depth--
      return true
    }
    this.fail(`unexpected ${this.describe()}, "," or "${name}" was expected`)
  }

  private word<T>(word: string, value: T): T {
    if (!this.s.startsWith(word, this.i) || this.i + word.length > this.end) this.fail(`unexpected ${this.describe()}, a value was expected`)
    this.i += word.length
    return value
  }

  private string(key: boolean): string {
    const s = this.s
    const start = ++this.i
    let i = start
    let out = ''
    let from = start
    for (;;) {
      if (i >= this.end) this.fail('unterminated string', start - 1)
      const c = s.charCodeAt(i)
      if (c === 0x22) break
      if (c < 0x20) this.fail(`a control character (U+${c.toString(16).padStart(4, '0')}) in a string must be escaped`, i)
      if (c === 0x5c) {
        out += s.slice(from, i)
        i++
        const e = s.charCodeAt(i)
        switch (e) {
          case 0x22: out += '"'; break
          case 0x5c: out += '\\'; break
          case 0x2f: out += '/'; break
          case 0x62: out += '\b'; break
          case 0x66: out += '\f'; break
          case 0x6e: out += '\n'; break
          case 0x72: out += '\r'; break
          case 0x74: out += '\t'; break
          case 0x75: {
            const hex = s.slice(i + 1, i + 5)
            if (!/^[0-9a-fA-F]{4}$/.test(hex) || i + 5 > this.end) this.fail('invalid \\u escape in a string', i - 1)
            out += String.fromCharCode(parseInt(hex, 16))
            i += 4
            break
          }
          default:
            this.fail('invalid escape in a string', i - 1)
        }
        i++
        from = i
        continue
      }
      i++
    }
    this.i = i + 1
    if (this.badChar >= start && this.badChar < i) {
      throw new JsonFault(`invalid UTF-8 in a ${key ? 'key' : 'string'} (byte offset ${this.badByte})`, this.badChar)
    }
    return from === start ? s.slice(start, i) : out + s.slice(from, i)
  }

  private number(): number | ExactNumber {
    const s = this.s
    const start = this.i
    let i = start
    if (s.charCodeAt(i) === 0x2d) i++
    const intStart = i
    let c = s.charCodeAt(i)
    // The whole part's value is kept while it is read: a plain integer (most numbers here) needs no Number(text).
    let whole = 0
    if (c === 0x30) i++
    else if (c >= 0x31 && c <= 0x39) while (i < this.end && (c = s.charCodeAt(i)) >= 0x30 && c <= 0x39) (whole = whole * 10 + (c - 0x30)), i++
    else this.fail('invalid number: a digit was expected', i)
    let digits = i - intStart
    c = s.charCodeAt(i)
    if (digits <= MAX_EXACT_DIGITS && (i >= this.end || (c !== 0x2e && c !== 0x65 && c !== 0x45))) {
      this.i = i
      return intStart === start ? whole : whole === 0 ? -0 : -whole
    }
    if (i < this.end && s.charCodeAt(i) === 0x2e) {
      i++
      const fracStart = i
      while (i < this.end && (c = s.charCodeAt(i)) >= 0x30 && c <= 0x39) i++
      if (i === fracStart) this.fail('invalid number: a digit was expected after "."', i)
      digits += i - fracStart
    }
    c = s.charCodeAt(i)
    if (i < this.end && (c === 0x65 || c === 0x45)) {
      i++
      c = s.charCodeAt(i)
      if (c === 0x2b || c === 0x2d) i++
      const expStart = i
      while (i < this.end && (c = s.charCodeAt(i)) >= 0x30 && c <= 0x39) i++
      if (i === expStart) this.fail('invalid number: a digit was expected in the exponent', i)
    }
    this.i = i
    const text = s.slice(start, i)
    if (digits > MAX_EXACT_DIGITS && this.opts.exactNumbers && significantDigits(text) > MAX_EXACT_DIGITS) return new ExactNumber(text)
    return Number(text)
  }
}

/** Digits of a JSON number's mantissa without leading or trailing zeros. */
function significantDigits(text: string): number {
  const e = text.search(/[eE]/)
  const mantissa = (e === -1 ? text : text.slice(0, e)).replace(/[-.]/g, '')
  return mantissa.replace(/^0+/, '').replace(/0+$/, '').length
}
