// @ts-check
// The page's only door to the service: same-origin calls to the public query
// API. A query token, when the service has tokens, lives in sessionStorage only
// (gone with the tab) and travels only in the Authorization header: never in a
// URL, never in a log line, never in the page's own state in the address bar.

const TOKEN_KEY = 'tokenledger.query-token'
/** Longest token kept (the service refuses longer ones anyway). */
const MAX_TOKEN_CHARS = 512

export class ApiError extends Error {
  /**
   * @param {number} status HTTP status (0: no answer at all)
   * @param {string} code the service's error code, e.g. TL_QUERY_TOO_LARGE
   * @param {string} message the service's message, which names the parameter at fault
   */
  constructor(status, code, message) {
    super(message)
    this.status = status
    this.code = code
  }
  /** The token is missing or refused (401), or lacks the scope (403). */
  get isAuth() {
    return this.status === 401 || this.status === 403
  }
}

/** @returns {string | null} */
export function getToken() {
  try {
    return sessionStorage.getItem(TOKEN_KEY)
  } catch {
    return null
  }
}

/** @param {string | null} token */
export function setToken(token) {
  if (token === null || token === '') sessionStorage.removeItem(TOKEN_KEY)
  else sessionStorage.setItem(TOKEN_KEY, token.trim().slice(0, MAX_TOKEN_CHARS))
}

/** @returns {Record<string, string>} */
function headers() {
  const token = getToken()
  return token ? { authorization: `Bearer ${token}` } : {}
}

/**
 * @param {Response} res
 * @returns {Promise<ApiError>}
 */
async function errorOf(res) {
  let code = `HTTP_${res.status}`
  let message = res.statusText || `the service answered ${res.status}`
  try {
    const body = await res.json()
    if (body && typeof body.message === 'string') message = body.message
    if (body && typeof body.code === 'string') code = body.code
    // /readyz's refusal carries reasons, not a message.
    if (body && Array.isArray(body.reasons)) message = body.reasons.join('; ') || message
  } catch {
    // not JSON: keep the status line
  }
  return new ApiError(res.status, code, message)
}

/**
 * GET a JSON answer; non-2xx answers throw ApiError with the service's message.
 * @param {string} path e.g. "/v1/usage"
 * @param {URLSearchParams} [params]
 * @param {AbortSignal} [signal]
 * @returns {Promise<any>}
 */
export async function getJson(path, params, signal) {
  const url = params && [...params.keys()].length > 0 ? `${path}?${params}` : path
  let res
  try {
    res = await fetch(url, { headers: headers(), signal, cache: 'no-store' })
  } catch (err) {
    if (signal?.aborted) throw err
    throw new ApiError(0, 'NETWORK', 'the service did not answer (is it running?)')
  }
  if (!res.ok) throw await errorOf(res)
  return res.json()
}

/**
 * GET a file (an export) as a Blob, with the token in the header, and the file name the service gave.
 * @param {string} path
 * @param {URLSearchParams} params
 * @returns {Promise<{ blob: Blob, name: string }>}
 */
export async function getFile(path, params) {
  const res = await fetch(`${path}?${params}`, { headers: headers(), cache: 'no-store' })
  if (!res.ok) throw await errorOf(res)
  const disposition = res.headers.get('content-disposition') ?? ''
  const name = /filename="([^"]{1,200})"/.exec(disposition)?.[1] ?? 'tokenledger-export'
  return { blob: await res.blob(), name }
}
