// The one path every ingest door takes after HTTP: decode the body on the
// ingest workers (decoder.ts; every format ends in validateEvent), then append
// the valid events to the store (dedupe, group commit, durable commit before
// the answer). Routes differ only in how they read bodies and write answers.
//
// Invariant: the outcome returned is the store's, after its commit: nothing
// is acknowledged that is not durable, and every record of the body has an
// outcome (accepted, duplicate, conflict, rejected) or was ignored on purpose
// (OTLP spans without usage, counted in `ignored`).

import type { Clock } from '../clock.js'
import type { Config } from '../config.js'
import type { AppendOutcome, IngestSource } from '../store/outcomes.js'
import type { Store } from '../store/store.js'
import type { BodyFormat } from './decode.js'
import type { Decoder } from './decoder.js'


export interface IntakeResult {
  outcome: AppendOutcome
  /** Records in the body (events, CloudEvents, spans or payloads). */
  records: number
  /** Records skipped on purpose: OTLP spans without gen_ai usage. */
  ignored: number
}

export interface IntakeDeps {
  decoder: Decoder
  store: Store
  config: Config
  clock: Clock
}

export class Intake {
  constructor(private readonly deps: IntakeDeps) {}

  get decoder(): Decoder {
    return this.deps.decoder
  }

  /** Decodes `raw` as `format` and appends what is valid; with `atomic`, nothing unless everything is (stored: false; the store decides and counts it). */
  async submit(raw: Uint8Array, format: BodyFormat, source: IngestSource, atomic = false): Promise<IntakeResult> {
    const { decoder, store, config, clock } = this.deps
    const limits = { nowMs: clock.nowMs(), eventRetentionMs: config.eventRetentionMs, maxFutureSkewMs: config.maxFutureSkewMs }
    const decoded = await decoder.decode(raw, format, { limits, maxEvents: config.maxBatchEvents, otlp: config.otlp, pricing: config.pricing })
    const { batch, rejected, records, ignored } = decoded
    const outcome = await store.append({ events: batch, rejected, atomic, bytes: batch.bytes, source })
    return { outcome, records, ignored }
  }
}
