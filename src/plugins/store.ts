// The store as a named Fastify plugin: opened at registration, decorated as
// `app.store`, closed in onClose (after Fastify has stopped taking requests and
// drained the in-flight ones), so shutdown order is the framework's.

import fp from 'fastify-plugin'
import type { FileSystem } from '../store/fsops.js'
import type { StoreHooks } from '../store/options.js'
import { Store } from '../store/store.js'

export interface StorePluginOptions {
  hooks?: StoreHooks
  fs?: FileSystem
  /** Register before the dedupe index has loaded (the server: its port opens, /readyz and ingest say it is loading). */
  openBeforeIndex?: boolean
}

export default fp<StorePluginOptions>(
  async (app, opts) => {
    const { config, clock } = app
    const store = await Store.open({
      dataDir: config.dataDir,
      clock,
      logger: app.log.child({ component: 'store' }),
      maxQueueEvents: config.maxQueueEvents,
      maxQueueBytes: config.maxQueueBytes,
      maxCommitEvents: config.maxCommitEvents,
      gateWaitMs: config.gateWaitMs,
      maxConcurrentQueries: config.maxConcurrentQueries,
      queryTimeoutMs: config.queryTimeoutMs,
      answerCacheRows: config.queryCacheRows,
      duckdbMemoryBytes: config.duckdbMemoryBytes,
      duckdbThreads: config.duckdbThreads,
      rolloverBytes: config.rolloverBytes,
      rolloverAgeMs: config.rolloverAgeMs,
      sealRetryMs: config.sealRetryMs,
      sealRetryMaxMs: config.sealRetryMaxMs,
      retention: {
        eventRetentionMs: config.eventRetentionMs,
        detailRetentionMs: config.detailRetentionMs,
        rollupRetentionMs: config.rollupRetentionMs,
      },
      retentionIntervalMs: config.retentionIntervalMs,
      verifyIntervalMs: config.verifyIntervalMs,
      verifyWindowMs: config.verifyWindowMs,
      minFreeDiskBytes: config.minFreeDiskBytes,
      maxPendingSegments: config.maxPendingSegments,
      maxActiveBytes: config.maxActiveBytes,
      hooks: opts.hooks,
      waitForIndex: opts.openBeforeIndex !== true,
      ...(opts.fs ? { fs: opts.fs } : {}),
    })
    app.decorate('store', store)
    app.addHook('onClose', async () => {
      await store.close()
    })
  },
  { name: 'tokenledger-store', decorators: { fastify: ['config', 'clock'] } },
)
