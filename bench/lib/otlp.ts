// The benchmark's events as OTLP/HTTP protobuf exports (POST /v1/traces): the
// same templates as BatchFactory (same keys, models, tokens, exact costs),
// each event one GenAI span, so the OTLP door and the native route are
// measured on the same events in the same run.
//
// Built fast enough for the load generator: every template is encoded once
// with protobufjs and the vendored OTLP schema, with marker bytes where the
// trace id, span id and times go. Those are fixed-width fields (bytes of 16
// and 8, fixed64), so a request is a copy of the template with its fresh ids
// and the current time written over the markers. Span ids are unique per
// batch number and slot; the trace id carries a random per-run prefix.

import { randomBytes } from 'node:crypto'
import { fileURLToPath } from 'node:url'
import protobuf from 'protobufjs'
import type { BatchFactory, BatchTotals } from './events.js'
import type { Door } from './load.js'

const PROTO_DIR = fileURLToPath(new URL('../../proto/', import.meta.url))
const NS_PER_MS = 1_000_000n

interface Slots {
  trace: number[]
  span: number[]
  start: number[]
  end: number[]
  latencyNs: bigint[]
}

function requestType(): protobuf.Type {
  const root = new protobuf.Root()
  root.resolvePath = (_origin, target) => PROTO_DIR + target
  root.loadSync('opentelemetry/proto/collector/trace/v1/trace_service.proto')
  return root.lookupType('opentelemetry.proto.collector.trace.v1.ExportTraceServiceRequest')
}

/** 8 marker bytes for slot `j` of `kind` (no real id or time looks like this). */
function marker(kind: number, j: number): Buffer {
  const b = Buffer.alloc(8)
  b.writeUInt32BE(0xfeed0000 + kind, 0)
  b.writeUInt32BE(j, 4)
  return b
}

export class OtlpBatchFactory {
  readonly batchSize: number
  private readonly runPrefix = randomBytes(8)
  private readonly templates: Array<{ body: Buffer; slots: Slots }> = []

  constructor(private readonly events: BatchFactory, templateCount: number) {
    this.batchSize = events.batchSize
    const type = requestType()
    for (let t = 0; t < templateCount; t++) this.templates.push(this.encode(type, t))
  }

  templateOf(batchNo: number): number {
    return this.events.templateOf(batchNo)
  }

  totalsOf(template: number): BatchTotals {
    return this.events.totalsOf(template)
  }

  private encode(type: protobuf.Type, template: number): { body: Buffer; slots: Slots } {
    const attr = (key: string, v: string | number) => ({ key, value: typeof v === 'string' ? { stringValue: v } : { intValue: v } })
    const events = this.events.eventsOf(template)
    const spans = events.map((e, j) => ({
      traceId: Buffer.concat([marker(1, j), marker(2, j)]),
      spanId: marker(3, j),
      name: 'chat',
      kind: 3,
      startTimeUnixNano: marker(4, j).readBigUInt64LE(0).toString(),
      endTimeUnixNano: marker(5, j).readBigUInt64LE(0).toString(),
      attributes: [
        attr('gen_ai.operation.name', 'chat'),
        attr('gen_ai.provider.name', e.provider!),
        attr('gen_ai.response.model', e.model!),
        attr('gen_ai.usage.input_tokens', e.input_tokens!),
        attr('gen_ai.usage.output_tokens', e.output_tokens!),
        attr('gen_ai.usage.cache_read.input_tokens', e.cache_read_tokens!),
        attr('gen_ai.usage.reasoning.output_tokens', e.reasoning_tokens!),
        attr('http.response.status_code', e.status_code!),
        attr('tokenledger.key_id', e.key_id!),
        attr('tokenledger.team_id', e.team_id!),
        attr('tokenledger.cost', e.cost!),
      ],
    }))
    const message = type.fromObject({
      resourceSpans: [{ resource: { attributes: [attr('service.name', 'bench-gateway')] }, scopeSpans: [{ scope: { name: 'bench' }, spans }] }],
    })
    const body = Buffer.from(type.encode(message).finish())
    const find = (bytes: Buffer): number => {
      const at = body.indexOf(bytes)
      if (at === -1 || body.indexOf(bytes, at + 1) !== -1) throw new Error('OTLP template: a marker is missing or not unique')
      return at
    }
    const slots: Slots = { trace: [], span: [], start: [], end: [], latencyNs: [] }
    events.forEach((e, j) => {
      slots.trace.push(find(Buffer.concat([marker(1, j), marker(2, j)])))
      slots.span.push(find(marker(3, j)))
      slots.start.push(find(marker(4, j)))
      slots.end.push(find(marker(5, j)))
      slots.latencyNs.push(BigInt(e.latency_ms as number) * NS_PER_MS)
    })
    return { body, slots }
  }

  /** The protobuf body of batch `batchNo`: fresh span ids, every span ending at `timestampMs`. */
  build(batchNo: number, timestampMs: number): Buffer {
    const t = this.templates[this.templateOf(batchNo)]
    if (t === undefined) throw new RangeError(`no template for batch ${batchNo}`)
    const body = Buffer.from(t.body)
    const endNs = BigInt(timestampMs) * NS_PER_MS
    const base = BigInt(batchNo) * BigInt(this.batchSize)
    const { trace, span, start, end, latencyNs } = t.slots
    for (let j = 0; j < trace.length; j++) {
      const n = base + BigInt(j) + 1n // never all zero
      this.runPrefix.copy(body, trace[j]!)
      body.writeBigUInt64BE(n, trace[j]! + 8)
      body.writeBigUInt64BE(n, span[j]!)
      body.writeBigUInt64LE(endNs - latencyNs[j]!, start[j]!)
      body.writeBigUInt64LE(endNs, end[j]!)
    }
    return body
  }
}

/** POST /v1/traces: a 200 with an empty ExportTraceServiceResponse (no partial_success) stored every span. */
export const OTLP_DOOR: Door = {
  path: '/v1/traces',
  contentType: 'application/x-protobuf',
  parse: (body, batchSize) => (body.length === 0 ? { accepted: batchSize, duplicates: 0, conflicts: 0, rejected: 0 } : undefined),
}
