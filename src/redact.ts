// What a URL may say in a log line: query parameters that look like secrets
// (a token someone put in a query string, an API key, a signature) have their
// values replaced, so the log never holds a credential verbatim. The path and
// the other parameters are kept as sent.

/** Parameter names whose values are never logged: token, access_token, api_key, apikey, secret, password, signature, … */
const SECRET_NAME_RE = /token|secret|passw|pwd|api[-_]?key|^key$|auth|credential|signature|^sig$|session|cookie/i

export const REDACTED = '[REDACTED]'

/** `url` (path and query string) with the values of secret-looking parameters replaced by [REDACTED]. */
export function redactUrl(url: string): string {
  const q = url.indexOf('?')
  if (q === -1) return url
  const parts = url.slice(q + 1).split('&')
  let changed = false
  for (let i = 0; i < parts.length; i++) {
    const part = parts[i]!
    const eq = part.indexOf('=')
    const rawName = eq === -1 ? part : part.slice(0, eq)
    let name: string
    try {
      name = decodeURIComponent(rawName.replace(/\+/g, ' '))
    } catch {
      name = rawName
    }
    if (eq !== -1 && SECRET_NAME_RE.test(name)) {
      parts[i] = `${rawName}=${REDACTED}`
      changed = true
    }
  }
  return changed ? `${url.slice(0, q)}?${parts.join('&')}` : url
}
