// POST /v1/admin/backup: a consistent copy of the store into a directory while
// ingest goes on (src/store/backup.ts). Admin scope.

import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { Type } from 'typebox'
import { BackupReport } from '../src/store/reports.js'
import { commonErrors } from './schemas.js'

export const backupRoutes: FastifyPluginAsyncTypebox = async (app) => {
  const { store, config, prices } = app

  app.post(
    '/v1/admin/backup',
    {
      config: { scope: 'admin' },
      schema: {
        summary: 'Write a consistent copy of the store into a directory, while ingest goes on',
        description:
          'The directory (an absolute path on the server, outside the data directory, new or empty) receives the catalog, every archive and pending file ' +
          '(hard links where the file system allows, else copies) and a DuckDB copy of each live segment, the price table in use and every past version (`prices.json`, `prices-history/`), then `backup.json`, written last. ' +
          'Every event acknowledged before `started_at` is in the copy, once. The write gate is never taken; seals and retention wait for the backup ' +
          '(`maintenance_held_ms`). Start a server on the copy with `TOKENLEDGER_DATA_DIR=<dir>`. One backup at a time (409 otherwise).',
        tags: ['admin'],
        body: Type.Object({ dir: Type.String({ minLength: 1, maxLength: 4096, description: 'Absolute path of the new backup directory.' }) }, { additionalProperties: false }),
        response: { 200: BackupReport, 409: Type.Ref('Error'), ...commonErrors },
      },
    },
    async (request) => store.backup(request.body.dir, config.exportTimeoutMs, (target) => prices.copyTo(target)),
  )
}
