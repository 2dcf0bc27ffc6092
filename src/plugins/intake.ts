// The ingest path as a named plugin: one decoder (its worker threads and their
// bounded pending bytes) shared by every ingest route, decorated with the
// store as `app.intake`, and closed in onClose after requests have drained.

import fp from 'fastify-plugin'
import { createDecoder } from '../ingest/decoder.js'
import { Intake } from '../ingest/intake.js'

declare module 'fastify' {
  interface FastifyInstance {
    intake: Intake
  }
}

export default fp(
  async (app) => {
    const { config } = app
    const decoder = createDecoder({ workers: config.ingestWorkers, maxPendingBytes: config.maxQueueBytes, maxBodyBytes: config.maxBodyBytes, logger: app.log })
    app.decorate('intake', new Intake({ decoder, store: app.store, config, clock: app.clock }))
    app.addHook('onClose', () => decoder.close())
  },
  { name: 'tokenledger-intake', decorators: { fastify: ['config', 'clock', 'store'] } },
)
