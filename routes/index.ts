// Every route, registered explicitly (no directory sniffing).

import type { FastifyPluginAsync } from 'fastify'
import { adminRoutes } from './admin.js'
import { backupRoutes } from './backup.js'
import { eventRoutes } from './events.js'
import { exportRoutes } from './export.js'
import { healthRoutes } from './health.js'
import { litellmRoutes } from './litellm.js'
import { metricsRoutes } from './metrics.js'
import { openmeterRoutes } from './openmeter.js'
import { otlpRoutes } from './otlp.js'
import { priceRoutes } from './prices.js'
import { uiRoutes } from './ui.js'
import { usageRoutes } from './usage.js'
import { verifyRoutes } from './verify.js'

export const routes: FastifyPluginAsync = async (app) => {
  await app.register(healthRoutes)
  await app.register(eventRoutes)
  await app.register(openmeterRoutes)
  await app.register(otlpRoutes)
  await app.register(litellmRoutes)
  await app.register(usageRoutes)
  await app.register(exportRoutes)
  await app.register(adminRoutes)
  await app.register(verifyRoutes)
  await app.register(backupRoutes)
  await app.register(priceRoutes)
  await app.register(metricsRoutes)
  await app.register(uiRoutes)
}
