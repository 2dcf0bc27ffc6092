// The process: read the environment, build the logger, listen, and exit
// cleanly on SIGTERM/SIGINT (stop taking requests, commit and answer what is
// queued, checkpoint, close DuckDB, exit 0).

import './threadpool.js'
import closeWithGrace from 'close-with-grace'
import { pino } from 'pino'
import { buildApp } from './app.js'
import { ConfigError, readConfig, type Config, type ConfigWarning } from './config.js'

let config: Config
let warnings: ConfigWarning[]
try {
  ;({ config, warnings } = readConfig())
} catch (err) {
  if (err instanceof ConfigError) {
    process.stderr.write(`tokenledger: invalid configuration: ${err.message}\n`)
    process.exit(2)
  }
  throw err
}

const logger = pino({ level: config.logLevel, base: { service: 'tokenledger' } })
// Lifecycle lines (listening, stopped) are always printed: supervisors and tests read them.
const lifecycle = pino({ level: 'info', base: { service: 'tokenledger' } })
// A TOKENLEDGER_* variable that is no setting (a typo) is ignored, but said so at start.
for (const w of warnings) logger.warn({ event: 'unknown_variable', variable: w.variable, closest: w.closest }, w.message)

const app = await buildApp({ config, openBeforeIndex: true }, logger).catch((err: unknown) => {
  lifecycle.fatal({ err }, 'failed to start')
  process.exit(1)
})

closeWithGrace({ delay: config.shutdownGraceMs }, async ({ signal, err }) => {
  if (err) lifecycle.error({ err }, 'shutting down after an uncaught error')
  else lifecycle.info({ event: 'stopping', signal }, 'draining and closing')
  await app.close()
  lifecycle.info({ event: 'stopped' }, 'stopped cleanly')
})

try {
  const url = await app.listen({ host: config.host, port: config.port })
  lifecycle.info({ event: 'listening', url, dataDir: config.dataDir }, 'tokenledger listening')
} catch (err) {
  lifecycle.fatal({ err }, 'failed to listen')
  await app.close().catch(() => undefined)
  process.exit(1)
}
