// The price table and costless bodies the pricing benches share (bench/pricing.ts,
// bench/store-floor.ts with BENCH_FLOOR_COST).
import { BatchFactory, type BatchTotals } from './events.js'
import type { BodyFactory } from './load.js'

/** bench/lib/events.ts's models at its per-token prices (micro-units per token = units per million). */
export const BENCH_PRICES = {
  prices: [
    { provider: 'openai', model: 'gpt-4o-mini', per_million: { input: '0.15', cache_read: '0.075', output: '0.6' } },
    { provider: 'openai', model: 'o4-mini', per_million: { input: '1.1', cache_read: '0.275', output: '4.4' } },
    { provider: 'anthropic', model: 'claude-sonnet-4', per_million: { input: '3', cache_read: '0.3', output: '15' } },
    { provider: 'anthropic', model: 'claude-haiku-3.5', per_million: { input: '0.8', cache_read: '0.08', output: '4' } },
    { provider: 'google', model: 'gemini-2.5-flash', per_million: { input: '0.3', cache_read: '0.075', output: '2.5' } },
  ],
}

/** bench/ingest's bodies without their `cost` fields. */
export class CostlessFactory implements BodyFactory {
  constructor(readonly inner: BatchFactory) {}
  get batchSize(): number {
    return this.inner.batchSize
  }
  templateOf(n: number): number {
    return this.inner.templateOf(n)
  }
  totalsOf(t: number): BatchTotals {
    return this.inner.totalsOf(t)
  }
  build(n: number, ts: number): string {
    return this.inner.build(n, ts).replace(/,"cost":"[0-9.]+"/g, '')
  }
}

