// The ingest path as a named plugin: one decoder (its worker threads and their
// bounded pending bytes) shared by every ingest route, decorated with the
// store as `app.intake`, and closed in onClose after requests have drained;
// and the price table the decoder prices events by, as `app.prices`.

import fp from 'fastify-plugin'
import { createDecoder, type Decoder } from '../ingest/decoder.js'
import { Intake } from '../ingest/intake.js'
import { PriceBook } from '../pricing/book.js'

declare module 'fastify' {
  interface FastifyInstance {
    intake: Intake
    prices: PriceBook
  }
}

export default fp(
  async (app) => {
    const { config } = app
    // The table first: a bad one stops the start before any worker thread exists.
    let decoder: Decoder | null = null
    const prices = await PriceBook.open(config.pricesFile, (t) => decoder?.setPrices(t))
    const table = prices.current()
    const started = createDecoder({ workers: config.ingestWorkers, maxPendingBytes: config.maxQueueBytes, maxBodyBytes: config.maxBodyBytes, logger: app.log })
    decoder = started
    started.setPrices(table)
    app.addHook('onClose', () => started.close())
    if (table) app.log.info({ event: 'prices_loaded', version: table.version, entries: table.entries.length, pricing: config.pricing }, 'price table loaded')
    else if (config.pricing !== 'off') app.log.info({ event: 'prices_none', file: config.pricesFile }, 'no price table: events without a cost keep an unknown cost (see README, Prices)')
    app.decorate('prices', prices)
    app.decorate('intake', new Intake({ decoder: started, store: app.store, config, clock: app.clock }))
  },
  { name: 'tokenledger-intake', decorators: { fastify: ['config', 'clock', 'store'] } },
)
