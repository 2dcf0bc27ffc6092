// Builds the app on a throwaway data dir and returns the OpenAPI document
// generated from its route schemas, as YAML.

import { mkdtemp, rm } from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import { pino } from 'pino'
import { buildApp } from '../../src/app.js'
import { loadConfig } from '../../src/config.js'

export async function generateOpenApiYaml(): Promise<string> {
  const dataDir = await mkdtemp(path.join(os.tmpdir(), 'tl-openapi-'))
  try {
    // Defaults only (no environment): the document must not depend on who generates it.
    const app = await buildApp({ config: loadConfig({ TOKENLEDGER_DATA_DIR: dataDir }) }, pino({ level: 'silent' }))
    try {
      return app.swagger({ yaml: true })
    } finally {
      await app.close()
    }
  } finally {
    await rm(dataDir, { recursive: true, force: true })
  }
}
