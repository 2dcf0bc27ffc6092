// Exact usage sums for the benches' billing checks: requests, errors and token counts
// as bigints and the cost as an integer × 10^12 (the server's DECIMAL(38,12)), so what
// GET /v1/usage answers can be compared to the last unit with what was generated into
// segment files (read back by a separate DuckDB, not the server's code) plus what the
// ingest ledger had acknowledged.
import { DuckDBInstance } from '@duckdb/node-api'
import { toScaled12 } from './decimal.js'
import type { BatchTotals } from './events.js'

export interface Sums {
  requests: bigint
  errors: bigint
  input: bigint
  output: bigint
  cacheRead: bigint
  cacheWrite: bigint
  reasoning: bigint
  /** cost × 10^12 */
  cost: bigint
  costMissing: bigint
}

export const zero = (): Sums => ({ requests: 0n, errors: 0n, input: 0n, output: 0n, cacheRead: 0n, cacheWrite: 0n, reasoning: 0n, cost: 0n, costMissing: 0n })

/** `s` plus what the ledger acknowledged (its events carry no cache writes and always a cost). */
export function plusAcked(s: Sums, t: BatchTotals): Sums {
  return {
    ...s,
    requests: s.requests + BigInt(t.events),
    errors: s.errors + BigInt(t.errors),
    input: s.input + t.inputTokens,
    output: s.output + t.outputTokens,
    cacheRead: s.cacheRead + t.cacheReadTokens,
    reasoning: s.reasoning + t.reasoningTokens,
    cost: s.cost + t.costMicros * 10n ** 6n,
  }
}

/** The server's totals (GET /v1/usage) as Sums, or undefined when a field is not an exact number. */
export function sumsOf(t: Record<string, unknown>): Sums | undefined {
  const big = (k: string): bigint | undefined => (typeof t[k] === 'number' && Number.isSafeInteger(t[k]) ? BigInt(t[k]) : undefined)
  const cost = t['cost'] === null ? 0n : toScaled12(t['cost'])
  const s = {
    requests: big('requests'),
    errors: big('errors'),
    input: big('input_tokens'),
    output: big('output_tokens'),
    cacheRead: big('cache_read_tokens'),
    cacheWrite: big('cache_write_tokens'),
    reasoning: big('reasoning_tokens'),
    cost,
    costMissing: big('cost_missing'),
  }
  return Object.values(s).every((v) => v !== undefined) ? (s as Sums) : undefined
}

/** One `field got ≠ want` entry per field that differs. */
export function sumsDiff(want: Sums, got: Sums): string[] {
  return (Object.keys(want) as (keyof Sums)[]).filter((k) => want[k] !== got[k]).map((k) => `${k} ${got[k]} ≠ ${want[k]}${k === 'cost' ? ' (× 10^-12)' : ''}`)
}

/** Sums over the generated files, read by a separate DuckDB (not the server's code) with `threads` threads. */
export async function sumsOfFiles(paths: string[], threads: number): Promise<Sums> {
  const db = await DuckDBInstance.create(':memory:', { threads: String(threads) })
  const conn = await db.connect()
  let s = zero()
  try {
    for (const [i, p] of paths.entries()) {
      await conn.run(`ATTACH '${p.replaceAll("'", "''")}' AS f${i} (READ_ONLY)`)
      const r = await conn.runAndReadAll(
        `SELECT count(*)::VARCHAR, count(*) FILTER (WHERE status_code >= 400)::VARCHAR, sum(input_tokens)::VARCHAR, sum(output_tokens)::VARCHAR,
                sum(cache_read_tokens)::VARCHAR, sum(cache_write_tokens)::VARCHAR, sum(reasoning_tokens)::VARCHAR, coalesce(sum(cost), 0)::VARCHAR,
                count(*) FILTER (WHERE cost IS NULL)::VARCHAR FROM f${i}.events`,
      )
      const [req, err, inp, out, cr, cw, rs, cost, missing] = r.getRows()[0] as string[]
      const scaledCost = toScaled12(cost)
      if (scaledCost === undefined) throw new Error(`${p}: cost sum is not a decimal: ${cost}`)
      s = {
        requests: s.requests + BigInt(req!),
        errors: s.errors + BigInt(err!),
        input: s.input + BigInt(inp!),
        output: s.output + BigInt(out!),
        cacheRead: s.cacheRead + BigInt(cr!),
        cacheWrite: s.cacheWrite + BigInt(cw!),
        reasoning: s.reasoning + BigInt(rs!),
        cost: s.cost + scaledCost,
        costMissing: s.costMissing + BigInt(missing!),
      }
      await conn.run(`DETACH f${i}`)
    }
  } finally {
    conn.closeSync()
    db.closeSync()
  }
  return s
}
