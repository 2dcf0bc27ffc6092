// The event_id of a record that another door identifies its own way: a
// CloudEvent by (source, id), a LiteLLM payload by its id. Deterministic, so
// a replay (or the same record posted natively under this id) is the same
// event, and within the native event_id alphabet (1-128 printable ASCII, no
// spaces).
//
// Form: `<prefix>:<part>:<part>…`, each part percent-encoded (every UTF-8
// byte outside [A-Za-z0-9._~/@-] as %XX, so ':' and '%' never appear raw and
// the parts split back unambiguously). When that is longer than 128
// characters: `<prefix>h:<64 hex digits>`, the SHA-256 of the parts (each
// preceded by its length, so no two part lists hash the same text). The two
// forms cannot meet: the third character is ':' in one and 'h' in the other
// (prefixes are letters only).

import { createHash } from 'node:crypto'

export const MAX_EVENT_ID_CHARS = 128
const KEEP_RE = /^[A-Za-z0-9._~/@-]*$/
const PREFIX_RE = /^[a-z]+$/

const LONE_SURROGATE_RE = /[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/

/** Whether `s` is well-formed UTF-16 (no lone surrogate): only such parts have one UTF-8 form, so one id. */
export function wellFormed(s: string): boolean {
  return !LONE_SURROGATE_RE.test(s)
}

/** The id of the record whose identity is `parts` (each well-formed: see wellFormed). */
export function mappedEventId(prefix: string, parts: readonly string[]): string {
  if (!PREFIX_RE.test(prefix)) throw new Error(`event id prefix "${prefix}" must be lowercase letters`)
  const plain = `${prefix}:${parts.map(escapePart).join(':')}`
  if (plain.length <= MAX_EVENT_ID_CHARS) return plain
  const digest = createHash('sha256')
  for (const part of parts) digest.update(`${Buffer.byteLength(part, 'utf8')}:`).update(part, 'utf8')
  return `${prefix}h:${digest.digest('hex')}`
}

function escapePart(part: string): string {
  if (KEEP_RE.test(part)) return part
  let out = ''
  for (const ch of part) {
    if (KEEP_RE.test(ch)) out += ch
    else for (const byte of Buffer.from(ch, 'utf8')) out += `%${byte.toString(16).toUpperCase().padStart(2, '0')}`
  }
  return out
}
