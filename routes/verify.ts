// GET /v1/admin/verify: the store proves its derived figures against its raw
// events for a window (src/store/verify.ts). Admin scope; a read, never the
// write gate.

import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { Type } from 'typebox'
import { Errors } from '../src/errors.js'
import { parseFilter } from '../src/query/filters.js'
import { VerifyReport } from '../src/store/reports.js'
import { commonErrors } from './schemas.js'

const DAY_MS = 86_400_000
/** The longest window one verify may check (each segment is read whole within it). */
export const MAX_VERIFY_WINDOW_MS = 31 * DAY_MS

export const verifyRoutes: FastifyPluginAsyncTypebox = async (app) => {
  const { store, clock, config } = app

  app.get(
    '/v1/admin/verify',
    {
      config: { scope: 'admin' },
      schema: {
        summary: 'Check every derived figure of a window against the raw events',
        description:
          'Recomputes counts, token sums and exact cost from the raw events of each segment in [from, to) and compares them with the segment\'s catalog entry, ' +
          'its 15-minute rollups, the live rollups of active and pending segments, and the coarse rollups (15 minutes, hour, day, users per day). ' +
          `The window is widened to whole 15-minute cells, starts no earlier than the rollup retention cutoff, and spans at most ${MAX_VERIFY_WINDOW_MS / DAY_MS} days ` +
          '(default: the last 24 hours). Segments are read one at a time through the query slots, so dashboards and ingest go on. ' +
          '`mismatch_count` 0 means every derived figure equals the raw events; otherwise each mismatch says where and by how much.',
        tags: ['admin'],
        querystring: Type.Object(
          {
            from: Type.Optional(Type.String({ maxLength: 40, description: 'RFC 3339 or epoch milliseconds; default: 24 hours before `to`.' })),
            to: Type.Optional(Type.String({ maxLength: 40, description: 'RFC 3339 or epoch milliseconds; default: now.' })),
          },
          { additionalProperties: false },
        ),
        response: { 200: VerifyReport, ...commonErrors },
      },
    },
    async (request) => {
      const nowMs = clock.nowMs()
      const to = request.query.to ?? String(nowMs + config.maxFutureSkewMs)
      const window = parseFilter({ ...request.query, to }, { nowMs, eventRetentionMs: DAY_MS, maxFutureSkewMs: config.maxFutureSkewMs })
      const fromUs = request.query.from === undefined ? window.toUs - DAY_MS * 1000 : window.fromUs
      if (fromUs >= window.toUs) throw new Errors.BadQuery('`from` must be earlier than `to`')
      if (window.toUs - fromUs > MAX_VERIFY_WINDOW_MS * 1000) throw new Errors.BadQuery(`\`from\`..\`to\` spans more than ${MAX_VERIFY_WINDOW_MS / DAY_MS} days; verify a longer period in several windows`)
      return store.verify(fromUs, window.toUs)
    },
  )
}
