// Proves the price table prices what the gateways do not: each token class at
// its own price (cached and reasoning tokens apart), the entry in effect at
// the event's time across a price change, dated model versions through a
// pattern (an exact name and the more specific pattern winning), unknown
// models left unknown, the gateway's cost winning unless TOKENLEDGER_PRICING
// says always, half-even rounding, and exactness over a million random events
// against an independent decimal library (decimal.js). Over HTTP: a bad table
// is refused with every field named and the old one kept; a priced event
// records its origin and price entry, totals split the priced part, live and
// sealed (rollups) alike, verify agrees, a replay after a price change is a
// duplicate, and the table survives a restart.

import assert from 'node:assert/strict'
import { test } from 'node:test'
import { readFile } from 'node:fs/promises'
import path from 'node:path'
import { Decimal } from 'decimal.js'
import fc from 'fast-check'
import { applyPrice, costAsBigint, costAsNumber, costOf, type Priceable } from '../src/pricing/apply.js'
import { parsePriceTable, perToken, type PriceTable } from '../src/pricing/table.js'
import { formatCost } from '../src/money.js'
import { build, event, post, rollover, T0 } from './helper.js'

const US = 1000

function table(input: unknown): PriceTable {
  const res = parsePriceTable(input)
  if (!res.ok) throw new Error(JSON.stringify(res.errors))
  return res.table
}

const CLASSES = {
  prices: [
    {
      provider: 'p',
      model: 'm',
      per_million: { input: '1', cache_read: '0.1', cache_write: '1.25', output: '4', reasoning: '8' },
      per_request: '0.01',
    },
  ],
}

function usage(over: Partial<Priceable> = {}): Priceable {
  return {
    ts_us: T0 * US,
    provider: 'p',
    model: 'm',
    status_code: 200,
    input_tokens: 0,
    output_tokens: 0,
    cache_read_tokens: 0,
    cache_write_tokens: 0,
    reasoning_tokens: 0,
    cost: null,
    reported_cost: null,
    cost_origin: null,
    price_ref: null,
    currency: 'USD',
    ...over,
  }
}

function priced(t: PriceTable, over: Partial<Priceable>, mode: 'missing' | 'always' = 'missing'): Priceable {
  const e = usage(over)
  applyPrice(e, t, mode)
  return e
}
const cost = (e: Priceable): string | null => (e.cost === null ? null : formatCost(e.cost))

test('each token class is priced at its own price; cached tokens are part of input, reasoning part of output', () => {
  const t = table(CLASSES)
  const M = 1_000_000
  assert.equal(cost(priced(t, { input_tokens: M })), '1.01', 'uncached input, plus the request price')
  assert.equal(cost(priced(t, { input_tokens: M, cache_read_tokens: M })), '0.11', 'all input read from cache')
  assert.equal(cost(priced(t, { input_tokens: M, cache_write_tokens: M })), '1.26', 'all input written to cache')
  assert.equal(cost(priced(t, { output_tokens: M })), '4.01')
  assert.equal(cost(priced(t, { output_tokens: M, reasoning_tokens: M / 2 })), '6.01', 'half the output was reasoning: 0.5 x 4 + 0.5 x 8')
  assert.equal(cost(priced(t, { input_tokens: 3 * M, cache_read_tokens: M, cache_write_tokens: M, output_tokens: 2 * M, reasoning_tokens: M })), '14.36')
  assert.equal(cost(priced(t, { input_tokens: M, status_code: 500 })), '1', 'no request price for a failed request; its tokens still cost')
  const defaults = table({ prices: [{ provider: 'p', model: 'm', per_million: { input: '2', output: '3' } }] })
  assert.equal(cost(priced(defaults, { input_tokens: M, cache_read_tokens: M / 2, output_tokens: M, reasoning_tokens: M })), '5', 'absent cache and reasoning prices are the input and output prices')
})

test('the entry in effect at the event time prices it; a change does not reach back', () => {
  const t = table({
    prices: [
      { provider: 'p', model: 'm', effective_from: '2026-01-01T00:00:00Z', per_million: { input: '1', output: '1' } },
      { provider: 'p', model: 'm', effective_from: '2026-06-01T00:00:00Z', per_million: { input: '2', output: '2' } },
    ],
  })
  const at = (iso: string) => Date.parse(iso) * US
  assert.equal(cost(priced(t, { input_tokens: 1_000_000, ts_us: at('2025-12-31T23:59:59.999Z') })), null, 'before the first entry: no price')
  const before = priced(t, { input_tokens: 1_000_000, ts_us: at('2026-05-31T23:59:59.999Z') })
  assert.equal(cost(before), '1')
  assert.equal(before.price_ref, t.version)
  assert.equal(t.lookup('p', 'm', before.ts_us)!.name, 'p/m@2026-01-01T00:00:00.000Z', 'the version and the lookup rule name the entry')
  assert.equal(cost(priced(t, { input_tokens: 1_000_000, ts_us: at('2026-06-01T00:00:00Z') })), '2', 'from the instant of the change on')
})

test('dated versions are priced through a pattern; an exact name, then the more specific pattern, wins', () => {
  const t = table({
    prices: [
      { provider: 'openai', model: 'gpt-4o', model_pattern: 'gpt-4o-*', per_million: { input: '2.5', output: '10' } },
      { provider: 'openai', model: 'gpt-4o-mini', model_pattern: 'gpt-4o-mini-????-??-??', per_million: { input: '0.15', output: '0.6' } },
      { provider: 'openai', model: 'gpt-4o-2024-05-13', per_million: { input: '5', output: '15' } },
    ],
  })
  const price = (model: string) => cost(priced(t, { provider: 'openai', model, input_tokens: 1_000_000 }))
  assert.equal(price('gpt-4o'), '2.5')
  assert.equal(price('gpt-4o-2024-08-06'), '2.5', 'a dated version through the pattern')
  assert.equal(price('gpt-4o-2024-05-13'), '5', 'an exact name wins over a pattern')
  assert.equal(price('gpt-4o-mini-2024-07-18'), '0.15', 'the more specific pattern wins')
  assert.equal(price('gpt-4o-mini-latest'), '2.5', '? matches one character only: the shorter pattern prices it')
  assert.equal(price('gpt-4'), null, 'an unknown model stays unknown')
  assert.equal(cost(priced(t, { provider: 'azure', model: 'gpt-4o', input_tokens: 1 })), null, 'the provider is part of the key')
})

test('the reported cost wins unless pricing is always; a reported cost in another currency is never re-priced', () => {
  const t = table({ prices: [{ provider: 'p', model: 'm', per_million: { input: '1', output: '1' } }] })
  const reported = { input_tokens: 1_000_000, cost: 7n * 10n ** 12n, reported_cost: 7n * 10n ** 12n, cost_origin: 'reported' as const }
  const kept = priced(t, reported, 'missing')
  assert.deepEqual([cost(kept), kept.cost_origin, kept.price_ref], ['7', 'reported', null])
  const over = priced(t, reported, 'always')
  assert.deepEqual([cost(over), over.cost_origin, formatCost(over.reported_cost!)], ['1', 'priced', '7'], 'always: priced, the reported figure kept')
  const euro = priced(t, { ...reported, currency: 'EUR' }, 'always')
  assert.deepEqual([cost(euro), euro.cost_origin], ['7', 'reported'])
  const unknown = usage({ input_tokens: 5 })
  assert.equal(applyPrice(unknown, t, 'off'), 'unpriced')
  assert.equal(unknown.cost, null)
})

test('rounding is half to even, once, at the twelfth decimal', () => {
  // 0.0000005 per million tokens is 5 x 10^-13 per token: one token is exactly half a unit of the 12th digit.
  const t = table({ prices: [{ provider: 'p', model: 'm', per_million: { input: '0.0000005', output: '0.0000015' } }] })
  const units = (e: Priceable) => e.cost
  assert.equal(units(priced(t, { input_tokens: 1 })), 0n, '0.5 rounds to even 0')
  assert.equal(units(priced(t, { input_tokens: 3 })), 2n, '1.5 rounds to even 2')
  assert.equal(units(priced(t, { input_tokens: 5 })), 2n, '2.5 rounds to even 2')
  assert.equal(units(priced(t, { input_tokens: 1, output_tokens: 1 })), 2n, 'classes summed before rounding: 0.5 + 1.5 = 2, not 0 + 2')
})

test('a million random events priced exactly: equal to decimal.js computing the written rule', () => {
  const D = Decimal.clone({ precision: 80, rounding: Decimal.ROUND_HALF_EVEN })
  let seed = 0x9e3779b9
  const rand = () => {
    seed ^= seed << 13
    seed ^= seed >>> 17
    seed ^= seed << 5
    return (seed >>> 0) / 2 ** 32
  }
  const priceText = () => {
    const whole = Math.floor(rand() * (rand() < 0.1 ? 1e6 : 100))
    const frac = String(Math.floor(rand() * 1e12)).padStart(12, '0').slice(0, Math.floor(rand() * 13))
    return frac ? `${whole}.${frac}` : String(whole)
  }
  const entries = Array.from({ length: 50 }, (_, i) => ({
    provider: 'p',
    model: `m${i}`,
    per_million: { input: priceText(), cache_read: priceText(), cache_write: priceText(), output: priceText(), reasoning: priceText() },
    per_request: rand() < 0.5 ? priceText() : '0',
  }))
  const t = table({ prices: entries })
  const tokens = () => (rand() < 0.05 ? Math.floor(rand() * 2 ** 40) : Math.floor(rand() * 200_000))
  let fast = 0
  for (let i = 0; i < 1_000_000; i++) {
    const k = Math.floor(rand() * entries.length)
    const input = tokens()
    const read = Math.floor(rand() * (input + 1))
    const write = Math.floor(rand() * (input - read + 1))
    const output = tokens()
    const reasoning = Math.floor(rand() * (output + 1))
    const status = rand() < 0.1 ? 429 : 200
    const e = { input_tokens: input, cache_read_tokens: read, cache_write_tokens: write, output_tokens: output, reasoning_tokens: reasoning, status_code: status }
    const entry = t.lookup('p', `m${k}`, 0)!
    const got = costOf(e, entry)
    if (entry.perToken !== null && costAsNumber(e, entry.perToken) !== null) fast++
    const p = entries[k]!.per_million
    const exact = new D(input - read - write)
      .mul(p.input)
      .add(new D(read).mul(p.cache_read))
      .add(new D(write).mul(p.cache_write))
      .add(new D(output - reasoning).mul(p.output))
      .add(new D(reasoning).mul(p.reasoning))
      .div(1_000_000)
      .toDecimalPlaces(12, Decimal.ROUND_HALF_EVEN)
      .add(status < 400 ? entries[k]!.per_request : 0)
    if (got === null) {
      assert.ok(exact.gte(new D(10).pow(15)), `event ${i}: refused as too large but is ${exact.toFixed()}`)
      continue
    }
    if (formatCost(got) !== exact.toFixed()) assert.fail(`event ${i} (${JSON.stringify(e)}, entry ${k}): ${formatCost(got)} != ${exact.toFixed()}`)
  }
  // Both arithmetic paths were checked: the Number one, and the bigint one it falls back to.
  assert.ok(fast > 500_000 && fast < 990_000, `${fast} of 1,000,000 events took the Number path`)
})

test('the Number path equals the bigint path wherever it answers, also at 2^53, and answers for realistic events', () => {
  // Prices up to $100 per million (most), any size, and the split's edges (rest 0, 500000, 999999).
  const price = fc.oneof(
    { arbitrary: fc.bigInt({ min: 0n, max: 10n ** 14n }), weight: 4 },
    { arbitrary: fc.bigInt({ min: 0n, max: 10n ** 19n }), weight: 1 },
    { arbitrary: fc.constantFrom(0n, 500_000n, 999_999n, 1_000_000n, 1_500_000n), weight: 1 },
  )
  const entryOf = (pm: bigint[], perRequest: bigint) => {
    const perMillion = pm as unknown as readonly [bigint, bigint, bigint, bigint, bigint]
    return { name: 'p/m', provider: 'p', model: 'm', pattern: null, effectiveFromUs: 0, currency: 'USD', perMillion, perRequest, perToken: perToken(perMillion, perRequest) }
  }
  // Token counts near the edges: small, around 2^53 / price, and large.
  const count = fc.oneof(
    { arbitrary: fc.integer({ min: 0, max: 300_000 }), weight: 6 },
    { arbitrary: fc.integer({ min: 0, max: Number.MAX_SAFE_INTEGER }), weight: 1 },
    { arbitrary: fc.constantFrom(0, 1, 2 ** 26, 2 ** 40, 2 ** 53 - 1), weight: 1 },
  )
  let answered = 0
  fc.assert(
    fc.property(fc.array(price, { minLength: 5, maxLength: 5 }), price, count, count, count, count, count, fc.constantFrom(200, 500), (pm, perRequest, a, b, c, d, f, status) => {
      const entry = entryOf(pm, perRequest)
      const e = { input_tokens: a + b + c, cache_read_tokens: b, cache_write_tokens: c, output_tokens: d + f, reasoning_tokens: f, status_code: status }
      if (!Number.isSafeInteger(e.input_tokens) || !Number.isSafeInteger(e.output_tokens)) return
      const slow = costAsBigint(e, entry)
      const quick = entry.perToken === null ? null : costAsNumber(e, entry.perToken)
      if (quick !== null) {
        answered++
        assert.equal(BigInt(quick), slow, JSON.stringify({ pm: pm.map(String), e }))
      }
      assert.equal(costOf(e, entry), slow)
    }),
    { numRuns: 20_000 },
  )
  assert.ok(answered > 2_000, `the Number path answered ${answered} of 20,000 times`)
  // Exactly at the boundary: a whole-unit sum of 2^53 - 1 answers, 2^53 does not.
  const one = entryOf([1_000_000n, 0n, 0n, 0n, 0n], 0n)
  const at = (n: number) => costAsNumber({ input_tokens: n, cache_read_tokens: 0, cache_write_tokens: 0, output_tokens: 0, reasoning_tokens: 0, status_code: 500 }, one.perToken!)
  assert.equal(at(2 ** 53 - 1), 2 ** 53 - 1)
  assert.equal(at(2 ** 53), null)
  // A realistic event (GPT-4o-like prices, 200k tokens) takes the Number path.
  const gpt = entryOf([2_500_000_000_000n, 1_250_000_000_000n, 2_500_000_000_000n, 10_000_000_000_000n, 10_000_000_000_000n], 0n)
  assert.notEqual(costAsNumber({ input_tokens: 200_000, cache_read_tokens: 50_000, cache_write_tokens: 0, output_tokens: 8_000, reasoning_tokens: 2_000, status_code: 200 }, gpt.perToken!), null)
})

test('a bad table is refused with every entry and field named', () => {
  const res = parsePriceTable({
    prices: [
      { provider: 'p', model: 'm', per_million: { input: '1.5', output: 2 } },
      { provider: 'p', per_million: { input: '-1', output: '1e3', cached: '1' } },
      { provider: 'p', model: 'm', model_pattern: '**', per_million: { input: '0.0000000000001', output: '1' }, effective_from: 'soon' },
      { provider: 'p', model: 'n', per_million: { input: '1', output: '1' } },
      { provider: 'p', model: 'n', effective_from: '1970-01-01T00:00:00Z', per_million: { input: '2', output: '2' } },
    ],
    extra: true,
  })
  assert.equal(res.ok, false)
  const fields = res.ok ? [] : res.errors.map((e) => e.field)
  assert.deepEqual(fields.sort(), [
    '/extra',
    '/prices/0/per_million/output',
    '/prices/1/model',
    '/prices/1/per_million/cached',
    '/prices/1/per_million/input',
    '/prices/1/per_million/output',
    '/prices/2/effective_from',
    '/prices/2/model_pattern',
    '/prices/2/per_million/input',
    '/prices/4',
  ].sort())
  assert.match(res.ok ? '' : res.errors.find((e) => e.field === '/prices/4')!.message, /same provider and model from the same effective_from as \/prices\/3/)
})

test('over HTTP: a table is installed, prices what carries no cost, splits the totals live and sealed, and survives a restart', async (t) => {
  const built = await build(t)
  let { app } = built
  const put = (payload: string) => app.inject({ method: 'PUT', url: '/v1/admin/prices', headers: { 'content-type': 'application/json' }, payload })
  const first = { prices: [{ provider: 'openai', model: 'gpt-4o-mini', model_pattern: 'gpt-4o-mini-*', per_million: { input: '0.15', cache_read: '0.075', output: '0.6' } }] }

  const bad = await put(JSON.stringify({ prices: [{ provider: 'openai', model: 'x', per_million: { input: 'cheap', output: '1' } }] }))
  assert.equal(bad.statusCode, 400)
  assert.deepEqual(bad.json().errors, [{ field: '/prices/0/per_million/input', message: 'must be a plain decimal like "2.50" (digits, an optional point and fraction; no sign, exponent or spaces)' }])
  const dupKeys = await put('{"prices":[],"prices":[]}')
  assert.equal(dupKeys.statusCode, 400, 'duplicate keys are refused, not last-one-wins')

  const ok = await put(JSON.stringify(first))
  assert.equal(ok.statusCode, 200, ok.body)
  const v1 = ok.json().version as string
  assert.equal((await app.inject({ url: '/v1/admin/prices' })).json().version, v1)
  const refused = await put(JSON.stringify({ prices: [{ provider: 'openai' }] }))
  assert.equal(refused.statusCode, 400)
  assert.equal((await app.inject({ url: '/v1/admin/prices' })).json().version, v1, 'the refused table changed nothing')

  const at = T0 - 30 * 60_000
  const unpriced = event({ cost: undefined, model: 'gpt-4o-mini-2024-07-18', input_tokens: 1_000_000, cache_read_tokens: 400_000, output_tokens: 100_000, timestamp: at })
  const reported = event({ cost: '0.5', model: 'gpt-4o-mini', timestamp: at })
  const unknown = event({ cost: undefined, model: 'llama-3', timestamp: at })
  const res = await post(app, [unpriced, reported, unknown])
  assert.equal(res.body.accepted, 3, JSON.stringify(res.body))

  const stored = (await app.inject({ url: `/v1/events/${unpriced.event_id}` })).json()
  // 600k uncached x 0.15 + 400k cached x 0.075 + 100k x 0.6, per million: 0.09 + 0.03 + 0.06
  assert.deepEqual([stored.cost, stored.cost_origin, stored.reported_cost, stored.price_ref], ['0.18', 'priced', null, v1])
  const rep = (await app.inject({ url: `/v1/events/${reported.event_id}` })).json()
  assert.deepEqual([rep.cost, rep.cost_origin, rep.reported_cost, rep.price_ref], ['0.5', 'reported', '0.5', null])

  const check = async (where: string) => {
    const u = (await app.inject({ url: `/v1/usage?from=${T0 - 3_600_000}&to=${T0}&group_by=model` })).json()
    assert.deepEqual([u.totals.cost, u.totals.cost_priced, u.totals.cost_missing], ['0.68', '0.18', 1], `${where}: totals`)
    const groups = Object.fromEntries(u.groups.map((g: { key: { model: string }; totals: { cost: string | null; cost_priced: string | null } }) => [g.key.model, [g.totals.cost, g.totals.cost_priced]]))
    assert.deepEqual(groups, { 'gpt-4o-mini-2024-07-18': ['0.18', '0.18'], 'gpt-4o-mini': ['0.5', '0'], 'llama-3': [null, null] }, `${where}: groups`)
    const s = (await app.inject({ url: `/v1/usage/timeseries?bucket=1h&from=${T0 - 3_600_000}&to=${T0}` })).json()
    assert.deepEqual([s.series[0].totals.cost_priced, s.series[0].points.map((p: { cost_priced: string | null }) => p.cost_priced)], ['0.18', ['0.18']], `${where}: series`)
    const v = (await app.inject({ url: `/v1/admin/verify?from=${T0 - 3_600_000}&to=${T0}` })).json()
    assert.equal(v.mismatch_count, 0, `${where}: verify ${JSON.stringify(v.mismatches)}`)
  }
  await check('active segment')

  // A new price applies to events decoded after it; a replay of an event priced before is the same event.
  const second = await put(JSON.stringify({ prices: [{ ...first.prices[0], per_million: { input: '1', output: '1' } }] }))
  assert.equal(second.statusCode, 200)
  assert.notEqual(second.json().version, v1)
  const replay = await post(app, [unpriced])
  assert.deepEqual([replay.body.duplicates, replay.body.conflicts], [1, 0], 'the fingerprint is of what the client sent, not of the price')
  assert.equal((await app.inject({ url: `/v1/events/${unpriced.event_id}` })).json().cost, '0.18', 'the stored cost is kept until a reprice')
  const old = await app.inject({ url: `/v1/admin/prices?version=${v1}` })
  assert.equal(old.json().prices[0].per_million.input, '0.15', 'a past version stays readable, so a price_ref can be explained')

  await rollover(app)
  await app.store.settle()
  await check('sealed segment')

  app = await built.restart()
  assert.equal((await app.inject({ url: '/v1/admin/prices' })).json().version, second.json().version, 'the table in use is read back at start')
  const later = event({ cost: undefined, model: 'gpt-4o-mini', input_tokens: 1_000_000, output_tokens: 0, timestamp: at })
  assert.equal((await post(app, [later])).body.accepted, 1)
  assert.equal((await app.inject({ url: `/v1/events/${later.event_id}` })).json().cost, '1')
  assert.ok((await readFile(path.join(built.dataDir, 'prices.json'), 'utf8')).includes('"input": "1"'))
})

test('a price table file that is not valid stops the start, naming the entry and field', async (t) => {
  const built = await build(t)
  await built.app.close()
  const { writeFile } = await import('node:fs/promises')
  await writeFile(path.join(built.dataDir, 'prices.json'), JSON.stringify({ prices: [{ provider: 'p', model: 'm', per_million: { input: '1' } }] }))
  await assert.rejects(built.restart(), /prices\.json is not valid.*\/prices\/0\/per_million\/output: is required/)
  await writeFile(path.join(built.dataDir, 'prices.json'), JSON.stringify({ prices: [] }))
  const app = await built.restart()
  assert.equal((await app.inject({ url: '/v1/admin/prices' })).json().version?.length, 16, 'a valid file starts again')
})

/** A table pricing `gpt-4o-mini` (and `gpt-4o` unless left out) at the given input price per million. */
function repriceTable(inputPerMillion: string, withGpt4o = true) {
  return JSON.stringify({
    prices: [
      { provider: 'openai', model: 'gpt-4o-mini', per_million: { input: inputPerMillion, output: '1' } },
      ...(withGpt4o ? [{ provider: 'openai', model: 'gpt-4o', per_million: { input: '10', output: '10' } }] : []),
    ],
  })
}

/** Events over two hours: without a cost, two models; one with a reported cost. */
function repriceEvents(n: number) {
  return Array.from({ length: n }, (_, i) =>
    event({ cost: i % 10 === 0 ? '0.5' : undefined, model: i % 3 === 0 ? 'gpt-4o' : 'gpt-4o-mini', input_tokens: 1000 + i, output_tokens: i % 50, timestamp: T0 - 2 * 3_600_000 + i * 1000 }),
  )
}

/** The exact total a window must show: each event priced by the table (or its reported cost), summed. */
function expectedTotal(events: ReturnType<typeof repriceEvents>, text: string): { cost: string; priced: string; missing: number } {
  const t = table(JSON.parse(text))
  let cost = 0n
  let pricedSum = 0n
  let missing = 0
  for (const e of events) {
    if (e.cost !== undefined) {
      cost += 500_000_000_000n
      continue
    }
    const entry = t.lookup('openai', String(e.model), 0)
    if (!entry) {
      missing++
      continue
    }
    const c = costOf({ input_tokens: Number(e.input_tokens), output_tokens: Number(e.output_tokens), cache_read_tokens: 0, cache_write_tokens: 0, reasoning_tokens: 0, status_code: 200 }, entry)!
    cost += c
    pricedSum += c
  }
  return { cost: formatCost(cost), priced: formatCost(pricedSum), missing }
}

async function windowTotals(app: import('fastify').FastifyInstance) {
  const u = (await app.inject({ url: `/v1/usage?from=${T0 - 3 * 3_600_000}&to=${T0}` })).json()
  const v = (await app.inject({ url: `/v1/admin/verify?from=${T0 - 3 * 3_600_000}&to=${T0}` })).json()
  assert.equal(v.mismatch_count, 0, `verify: ${JSON.stringify(v.mismatches)}`)
  return { cost: u.totals.cost as string, priced: u.totals.cost_priced as string, missing: u.totals.cost_missing as number }
}

test('reprice prices history once a table is installed, follows a change, and makes unpriced what left the table', async (t) => {
  const { app } = await build(t)
  const events = repriceEvents(600)
  for (let i = 0; i < events.length; i += 200) {
    assert.equal((await post(app, events.slice(i, i + 200))).body.accepted, 200)
    if (i < 400) {
      await rollover(app)
      await app.store.settle()
    }
  }
  assert.equal((await app.inject({ method: 'POST', url: `/v1/admin/reprice?from=${T0 - 3 * 3_600_000}` })).statusCode, 409, 'no table: nothing to price from')
  const put = (text: string) => app.inject({ method: 'PUT', url: '/v1/admin/prices', headers: { 'content-type': 'application/json' }, payload: text })
  assert.deepEqual(await windowTotals(app), { cost: '30', priced: '0', missing: 540 })

  assert.equal((await put(repriceTable('0.15'))).statusCode, 200)
  const first = await app.inject({ method: 'POST', url: `/v1/admin/reprice?from=${T0 - 3 * 3_600_000}&to=${T0}` })
  assert.equal(first.statusCode, 200, first.body)
  const r1 = first.json()
  assert.deepEqual([r1.events_examined, r1.events_changed, r1.became_priced, r1.became_unknown, r1.segments_rewritten], [600, 540, 540, 0, 3], JSON.stringify(r1))
  assert.deepEqual(await windowTotals(app), expectedTotal(events, repriceTable('0.15')))

  assert.equal((await put(repriceTable('0.3', false))).statusCode, 200)
  const r2 = (await app.inject({ method: 'POST', url: `/v1/admin/reprice?from=${T0 - 3 * 3_600_000}&to=${T0}` })).json()
  const gpt4o = events.filter((e) => e.model === 'gpt-4o' && e.cost === undefined).length
  assert.deepEqual([r2.events_changed, r2.became_unknown], [540, gpt4o], JSON.stringify(r2))
  assert.deepEqual(await windowTotals(app), expectedTotal(events, repriceTable('0.3', false)))
  const again = (await app.inject({ method: 'POST', url: `/v1/admin/reprice?from=${T0 - 3 * 3_600_000}&to=${T0}` })).json()
  assert.deepEqual([again.events_changed, again.segments_rewritten], [0, 0], 'a second run changes nothing')
  const one = (await app.inject({ url: `/v1/events/${events[1]!.event_id}` })).json()
  assert.equal(one.price_ref, (await app.inject({ url: '/v1/admin/prices' })).json().version)
})

test('reprice under always: a reported cost priced over is kept, and comes back when the model leaves the table', async (t) => {
  const { app } = await build(t, { TOKENLEDGER_PRICING: 'always' })
  const put = (text: string) => app.inject({ method: 'PUT', url: '/v1/admin/prices', headers: { 'content-type': 'application/json' }, payload: text })
  const reprice = async () => {
    const res = await app.inject({ method: 'POST', url: `/v1/admin/reprice?from=${T0 - 3 * 3_600_000}&to=${T0}` })
    assert.equal(res.statusCode, 200, res.body)
    return res.json()
  }
  const reported = event({ cost: '0.5', model: 'gpt-4o', input_tokens: 1000, output_tokens: 0, timestamp: T0 - 3_600_000 })
  assert.equal((await post(app, [reported])).body.accepted, 1)
  await rollover(app)
  await app.store.settle()
  const read = async () => {
    const e = (await app.inject({ url: `/v1/events/${reported.event_id}` })).json()
    return [e.cost, e.cost_origin, e.reported_cost, e.price_ref === null ? null : 'v']
  }
  assert.deepEqual(await read(), ['0.5', 'reported', '0.5', null])
  assert.equal((await put(repriceTable('0.15'))).statusCode, 200)
  assert.equal((await reprice()).events_changed, 1)
  // gpt-4o at 10 per million: 1000 x 10 / 10^6 = 0.01, the gateway's 0.5 kept beside it.
  assert.deepEqual(await read(), ['0.01', 'priced', '0.5', 'v'])
  assert.deepEqual(await windowTotals(app), { cost: '0.01', priced: '0.01', missing: 0 })
  assert.equal((await put(repriceTable('0.15', false))).statusCode, 200)
  const back = await reprice()
  assert.deepEqual([back.events_changed, back.became_unknown], [1, 0], JSON.stringify(back))
  assert.deepEqual(await read(), ['0.5', 'reported', '0.5', null], 'out of the table: the reported cost again')
  assert.deepEqual(await windowTotals(app), { cost: '0.5', priced: '0', missing: 0 })
})

for (const step of ['copy', 'validate', 'record', 'swap', 'publish'] as const) {
  test(`a reprice stopped at its ${step} step leaves events and rollups in agreement, and start-up finishes or discards it`, async (t) => {
    let armed = false
    const built = await build(t, {}, {
      beforeRepriceStep: async (s) => {
        if (armed && s === step) {
          armed = false
          throw new Error(`stopped at ${step}`)
        }
      },
    })
    let app = built.app
    const events = repriceEvents(300)
    assert.equal((await post(app, events)).body.accepted, 300)
    await rollover(app)
    await app.store.settle()
    const put = await app.inject({ method: 'PUT', url: '/v1/admin/prices', headers: { 'content-type': 'application/json' }, payload: repriceTable('0.15') })
    assert.equal(put.statusCode, 200)
    armed = true
    const stopped = await app.inject({ method: 'POST', url: `/v1/admin/reprice?from=${T0 - 3 * 3_600_000}&to=${T0}` })
    assert.equal(stopped.statusCode, 500, stopped.body)
    const committed = step === 'swap' || step === 'publish'
    app = await built.restart()
    const expectAfter = committed ? expectedTotal(events, repriceTable('0.15')) : { cost: '15', priced: '0', missing: 270 }
    assert.deepEqual(await windowTotals(app), expectAfter, `after the restart the ${committed ? 'committed reprice is finished' : 'uncommitted copy is gone'}`)
    const files = (await (await import('node:fs/promises')).readdir(path.join(built.dataDir, 'archive'))).filter((f) => f.includes('.reprice'))
    assert.deepEqual(files, [], 'no reprice copy is left behind')
    const rerun = await app.inject({ method: 'POST', url: `/v1/admin/reprice?from=${T0 - 3 * 3_600_000}&to=${T0}` })
    assert.equal(rerun.statusCode, 200, rerun.body)
    assert.deepEqual(await windowTotals(app), expectedTotal(events, repriceTable('0.15')))
  })
}
