// One bounded HTTP request of bench/overload.ts, its whole answer read: on node:http
// with the caller's agent (so a bench controls its sockets), never hanging past its
// timeout, and a request that got no answer told apart (client timeout or socket).
import http from 'node:http'

export interface Answer {
  status: number
  headers: http.IncomingHttpHeaders
  body: string
}

/** A request that got no HTTP answer: the client's own timeout, or the connection failed. */
export class NoAnswer extends Error {
  constructor(
    readonly kind: 'timeout' | 'socket',
    message: string,
  ) {
    super(message)
  }
}

export interface Call {
  agent: http.Agent | false
  base: URL
  method: 'GET' | 'POST'
  path: string
  headers: Record<string, string>
  body?: string
  timeoutMs: number
}

/** One HTTP request, its whole answer read; rejects with NoAnswer (never hangs past timeoutMs). */
export function httpCall(c: Call): Promise<Answer> {
  return new Promise((resolve, reject) => {
    let settled = false
    let timedOut = false
    const finish = (fn: () => void): void => {
      if (settled) return
      settled = true
      clearTimeout(timer)
      fn()
    }
    const headers = c.body === undefined ? c.headers : { ...c.headers, 'content-length': String(Buffer.byteLength(c.body)) }
    const req = http.request({ host: c.base.hostname, port: c.base.port, method: c.method, path: c.path, headers, agent: c.agent })
    const timer = setTimeout(() => {
      timedOut = true
      req.destroy(new Error(`no answer within ${c.timeoutMs} ms`))
    }, c.timeoutMs)
    const noAnswer = (err: unknown): void => finish(() => reject(new NoAnswer(timedOut ? 'timeout' : 'socket', err instanceof Error ? err.message : String(err))))
    req.on('error', noAnswer)
    req.on('response', (res) => {
      const chunks: Buffer[] = []
      res.on('data', (chunk: Buffer) => chunks.push(chunk))
      res.on('error', noAnswer)
      res.on('end', () => finish(() => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks).toString('utf8') })))
      res.on('close', () => {
        if (!res.complete) noAnswer(new Error('connection closed mid-answer'))
      })
    })
    req.end(c.body)
  })
}

