// The OTLP trace schema of this thread: the vendored .proto files (proto/,
// opentelemetry-proto verbatim, and google.rpc.Status) loaded once by
// protobufjs, for the answers' encoding (otlp.ts) and for the field numbers
// the wire reader (otlp-wire.ts) is driven by. Those are looked up here by
// name and checked against the type the reader reads each field as, so a
// schema that changed under it fails at the first body, loudly, rather than
// being read wrong.

import { fileURLToPath } from 'node:url'
import protobuf from 'protobufjs'

const PROTO_DIR = fileURLToPath(new URL(import.meta.url.endsWith('.ts') ? '../../proto/' : '../../../proto/', import.meta.url))

export interface OtlpSchema {
  request: protobuf.Type
  response: protobuf.Type
  status: protobuf.Type
}
let schema: OtlpSchema | null = null

export function otlpSchema(): OtlpSchema {
  if (schema !== null) return schema
  const root = new protobuf.Root()
  root.resolvePath = (_origin, target) => PROTO_DIR + target
  root.loadSync(['opentelemetry/proto/collector/trace/v1/trace_service.proto', 'google/rpc/status.proto'], { keepCase: false })
  schema = {
    request: root.lookupType('opentelemetry.proto.collector.trace.v1.ExportTraceServiceRequest'),
    response: root.lookupType('opentelemetry.proto.collector.trace.v1.ExportTraceServiceResponse'),
    status: root.lookupType('google.rpc.Status'),
  }
  return schema
}

/** Wire types (protobuf encoding). */
export const VARINT = 0
export const I64 = 1
export const LEN = 2

export interface FieldNumbers {
  request: { resourceSpans: number }
  resourceSpans: { resource: number; scopeSpans: number }
  resource: { attributes: number }
  scopeSpans: { spans: number }
  span: { traceId: number; spanId: number; start: number; end: number; attributes: number; status: number }
  status: { code: number }
  keyValue: { key: number; value: number }
  anyValue: { string: number; bool: number; int: number; double: number; array: number; kvlist: number; bytes: number }
}
let numbers: FieldNumbers | null = null

/** The field numbers this reader needs, from the loaded schema; throws when a field is missing or not of the type read here. */
export function fieldNumbers(): FieldNumbers {
  if (numbers !== null) return numbers
  const root = otlpSchema().request.root
  const field = (typeName: string, name: string, kind: string, repeated = false): number => {
    const f = root.lookupType(typeName).fields[name]
    const resolved = f?.resolve().resolvedType
    const actual = resolved instanceof protobuf.Type ? resolved.fullName.slice(1) : resolved instanceof protobuf.Enum ? 'enum' : f?.type
    if (f === undefined || actual !== kind || f.repeated !== repeated) {
      throw new Error(`OTLP schema (proto/): ${typeName}.${name} is not a ${repeated ? 'repeated ' : ''}${kind}; otlp-wire.ts reads it as one`)
    }
    return f.id
  }
  const t = 'opentelemetry.proto.trace.v1.'
  const c = 'opentelemetry.proto.common.v1.'
  numbers = {
    request: { resourceSpans: field('opentelemetry.proto.collector.trace.v1.ExportTraceServiceRequest', 'resourceSpans', `${t}ResourceSpans`, true) },
    resourceSpans: { resource: field(`${t}ResourceSpans`, 'resource', 'opentelemetry.proto.resource.v1.Resource'), scopeSpans: field(`${t}ResourceSpans`, 'scopeSpans', `${t}ScopeSpans`, true) },
    resource: { attributes: field('opentelemetry.proto.resource.v1.Resource', 'attributes', `${c}KeyValue`, true) },
    scopeSpans: { spans: field(`${t}ScopeSpans`, 'spans', `${t}Span`, true) },
    span: {
      traceId: field(`${t}Span`, 'traceId', 'bytes'),
      spanId: field(`${t}Span`, 'spanId', 'bytes'),
      start: field(`${t}Span`, 'startTimeUnixNano', 'fixed64'),
      end: field(`${t}Span`, 'endTimeUnixNano', 'fixed64'),
      attributes: field(`${t}Span`, 'attributes', `${c}KeyValue`, true),
      status: field(`${t}Span`, 'status', `${t}Status`),
    },
    status: { code: field(`${t}Status`, 'code', 'enum') },
    keyValue: { key: field(`${c}KeyValue`, 'key', 'string'), value: field(`${c}KeyValue`, 'value', `${c}AnyValue`) },
    anyValue: {
      string: field(`${c}AnyValue`, 'stringValue', 'string'),
      bool: field(`${c}AnyValue`, 'boolValue', 'bool'),
      int: field(`${c}AnyValue`, 'intValue', 'int64'),
      double: field(`${c}AnyValue`, 'doubleValue', 'double'),
      array: field(`${c}AnyValue`, 'arrayValue', `${c}ArrayValue`),
      kvlist: field(`${c}AnyValue`, 'kvlistValue', `${c}KeyValueList`),
      bytes: field(`${c}AnyValue`, 'bytesValue', 'bytes'),
    },
  }
  return numbers
}
