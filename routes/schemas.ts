// Shared TypeBox schemas of the HTTP surface. Every field is bounded.
// The event schema is generated from src/ingest/event.ts's field table, the
// same table the validator enforces.

import { Type, type TSchema } from 'typebox'
import { EVENT_FIELDS, MAX_TAG_KEY_CHARS, MAX_TAG_VALUE_CHARS, MAX_TAGS } from '../src/ingest/event.js'

const MAX_SAFE = Number.MAX_SAFE_INTEGER

/** Marks a body schema that documents the input but is enforced by the route itself. */
export const PER_EVENT_VALIDATION = 'x-validated-per-event'

export const ErrorBody = Type.Object(
  {
    statusCode: Type.Integer({ minimum: 400, maximum: 599 }),
    code: Type.String({ maxLength: 64 }),
    error: Type.String({ maxLength: 64 }),
    message: Type.String({ maxLength: 4096 }),
  },
  { $id: 'Error', description: 'A whole-request error. 5xx messages never carry internals.' },
)

/** Responses every route may give besides its own. */
export const commonErrors = {
  400: Type.Ref('Error'),
  503: Type.Ref('Error'),
} as const

function fieldSchema(spec: (typeof EVENT_FIELDS)[keyof typeof EVENT_FIELDS]): TSchema {
  const description = spec.description
  switch (spec.kind) {
    case 'id':
      return Type.String({ minLength: spec.min, maxLength: spec.max, pattern: '^[!-~]+$', description })
    case 'string':
      return Type.String({ minLength: spec.min, maxLength: spec.max, description })
    case 'int':
      return Type.Integer({ minimum: spec.min, maximum: spec.max, description })
    case 'timestamp':
      return Type.Union([Type.String({ maxLength: 40 }), Type.Integer()], { description })
    case 'cost':
      return Type.Union([Type.String({ maxLength: 64, pattern: '^\\d+(\\.\\d{1,12})?$' }), Type.Number({ minimum: 0 })], { description })
    case 'currency':
      return Type.String({ pattern: '^[A-Z]{3}$', default: 'USD', description })
    case 'boolean':
      return Type.Boolean({ description })
    case 'tags':
      return Type.Record(Type.String({ minLength: 1, maxLength: MAX_TAG_KEY_CHARS }), Type.String({ maxLength: MAX_TAG_VALUE_CHARS }), {
        maxProperties: MAX_TAGS,
        description,
      })
    case 'detail':
      return Type.Object({}, { additionalProperties: true, description })
  }
}

const eventProperties: Record<string, TSchema> = {}
for (const [name, spec] of Object.entries(EVENT_FIELDS)) {
  const schema = fieldSchema(spec)
  eventProperties[name] = spec.required ? schema : Type.Optional(Type.Union([schema, Type.Null()]))
}

/** A posted event, as documented. Enforced by validateEvent, per event. */
export const UsageEventIn = Type.Object(eventProperties, { $id: 'UsageEventIn', additionalProperties: false })

export const IngestBody = Type.Union([Type.Object({ events: Type.Array(Type.Ref('UsageEventIn')) }, { additionalProperties: false }), Type.Array(Type.Ref('UsageEventIn'))], {
  [PER_EVENT_VALIDATION]: true,
  description:
    'A batch: {"events":[...]}, a bare JSON array, or NDJSON (application/x-ndjson, one event per line). Content-Encoding: gzip is accepted. Each event is validated on its own; see the per-event results.',
})

export const FieldErrorSchema = Type.Object({
  field: Type.String({ maxLength: 256, description: 'JSON pointer into the event, e.g. /input_tokens; empty for the event itself.' }),
  message: Type.String({ maxLength: 512 }),
})

export const IngestResult = Type.Object(
  {
    accepted: Type.Integer({ minimum: 0 }),
    duplicates: Type.Integer({ minimum: 0 }),
    conflicts: Type.Integer({ minimum: 0 }),
    rejected: Type.Integer({ minimum: 0 }),
    results: Type.Array(
      Type.Object({
        index: Type.Integer({ minimum: 0, description: 'Position of the event in the batch.' }),
        event_id: Type.Union([Type.String({ maxLength: 128 }), Type.Null()]),
        status: Type.Union([Type.Literal('duplicate'), Type.Literal('conflict'), Type.Literal('rejected')]),
        errors: Type.Optional(Type.Array(FieldErrorSchema)),
      }),
      { description: 'Only the events that were not accepted, in batch order.' },
    ),
  },
  { $id: 'IngestResult' },
)

/** An event as stored and returned: timestamps RFC 3339 UTC, cost a decimal string. */
export const UsageEventOut = Type.Object(
  {
    event_id: Type.String(),
    timestamp: Type.String({ description: 'RFC 3339, UTC.' }),
    key_id: Type.String(),
    provider: Type.String(),
    model: Type.String(),
    status_code: Type.Integer(),
    input_tokens: Type.Integer({ minimum: 0, maximum: MAX_SAFE }),
    output_tokens: Type.Integer({ minimum: 0, maximum: MAX_SAFE }),
    cache_read_tokens: Type.Integer({ minimum: 0, maximum: MAX_SAFE }),
    cache_write_tokens: Type.Integer({ minimum: 0, maximum: MAX_SAFE }),
    reasoning_tokens: Type.Integer({ minimum: 0, maximum: MAX_SAFE }),
    cost: Type.Union([Type.String(), Type.Null()], { description: 'Exact decimal string (what totals count); null when unknown.' }),
    cost_origin: Type.Union([Type.Literal('reported'), Type.Literal('priced'), Type.Null()], { description: 'Where `cost` comes from: the gateway, or the price table; null when unknown.' }),
    reported_cost: Type.Union([Type.String(), Type.Null()], { description: 'The cost the gateway sent (kept when TOKENLEDGER_PRICING=always prices over it); null when it sent none.' }),
    price_ref: Type.Union([Type.String(), Type.Null()], { description: 'The version of the price table that priced it (16 hex digits; see GET /v1/admin/prices?version=): its entry is the one the lookup rule picks for the event\'s provider, model and timestamp. Null unless priced.' }),
    currency: Type.String(),
    team_id: Type.Union([Type.String(), Type.Null()]),
    user_id: Type.Union([Type.String(), Type.Null()]),
    customer_id: Type.Union([Type.String(), Type.Null()]),
    endpoint: Type.Union([Type.String(), Type.Null()]),
    latency_ms: Type.Union([Type.Integer(), Type.Null()]),
    ttft_ms: Type.Union([Type.Integer(), Type.Null()]),
    stream: Type.Union([Type.Boolean(), Type.Null()]),
    tags: Type.Union([Type.Record(Type.String(), Type.String()), Type.Null()]),
    detail: Type.Optional(Type.Union([Type.Object({}, { additionalProperties: true }), Type.Null()])),
  },
  { $id: 'UsageEventOut' },
)

const filterValues = (name: string, maxLength: number) =>
  Type.Optional(
    Type.Array(Type.String({ minLength: 1, maxLength }), {
      maxItems: 100,
      description: `Only events with this ${name}; repeat the parameter to mean OR.`,
    }),
  )

/** The window and filters every query route takes. */
export const QueryFilters = {
  from: Type.Optional(Type.String({ maxLength: 40, description: 'Inclusive start: RFC 3339 or epoch milliseconds. Default: the start of the event retention window.' })),
  to: Type.Optional(Type.String({ maxLength: 40, description: 'Exclusive end: RFC 3339 or epoch milliseconds. Default: now plus the allowed future skew.' })),
  key_id: filterValues('key_id', 128),
  team_id: filterValues('team_id', 128),
  user_id: filterValues('user_id', 128),
  customer_id: filterValues('customer_id', 128),
  provider: filterValues('provider', 64),
  model: filterValues('model', 128),
  status: Type.Optional(
    Type.Array(Type.String({ pattern: '^(ok|error|[1-5][0-9][0-9])$', 'x-allowed': 'ok, error or a status code from 100 to 599' }), {
      maxItems: 20,
      description: '`ok` (below 400), `error` (400 and above) or an exact status code; repeat to mean OR.',
    }),
  ),
}

const Measures = {
  requests: Type.Integer({ minimum: 0 }),
  errors: Type.Integer({ minimum: 0, description: 'Events with status 400 and above.' }),
  input_tokens: Type.Integer({ minimum: 0 }),
  output_tokens: Type.Integer({ minimum: 0 }),
  cache_read_tokens: Type.Integer({ minimum: 0 }),
  cache_write_tokens: Type.Integer({ minimum: 0 }),
  reasoning_tokens: Type.Integer({ minimum: 0 }),
  cost: Type.Union([Type.String(), Type.Null()], {
    description: 'Exact decimal sum of the known costs when they are all in one currency (named by `currency`); null when the window mixes currencies (see cost_by_currency) or when every event counted has an unknown cost (see cost_missing). "0" when nothing is counted.',
  }),
  currency: Type.Union([Type.String(), Type.Null()]),
  cost_by_currency: Type.Record(Type.String(), Type.String(), { description: 'Exact decimal sum per ISO 4217 currency.' }),
  cost_missing: Type.Integer({ minimum: 0, description: 'Events whose cost is unknown: the gateway sent none and the price table had no price for them (counted as missing, not as zero).' }),
  cost_priced: Type.Union([Type.String(), Type.Null()], {
    description: 'The part of `cost` that tokenledger priced from its price table (the rest the gateways reported); null exactly when `cost` is.',
  }),
  cost_priced_by_currency: Type.Record(Type.String(), Type.String(), { description: 'The priced part per currency (keys as cost_by_currency).' }),
}

export const UsageTotals = Type.Object(Measures, { $id: 'UsageTotals' })

export const UsagePoint = Type.Object(
  {
    start: Type.String({ maxLength: 40, description: 'The bucket\'s first instant as local time in `tz` with its offset (RFC 3339), e.g. 2026-10-25T02:00:00+01:00.' }),
    ...Measures,
  },
  { $id: 'UsagePoint' },
)

// ---------------------------------------------------------------------------
// The other doors in: documented shapes. Bodies are enforced record by record
// by their mappers (src/ingest/cloudevents.ts, otlp.ts, litellm.ts), so that one
// bad record is reported, not the request refused.

/** RFC 7807 problem details, as OpenMeter's API answers errors (application/problem+json). */
export const ProblemBody = Type.Object(
  {
    type: Type.String({ maxLength: 256, description: 'A URI naming the problem type.' }),
    title: Type.String({ maxLength: 64 }),
    status: Type.Integer({ minimum: 400, maximum: 599 }),
    detail: Type.String({ maxLength: 8192 }),
    instance: Type.String({ maxLength: 256, description: 'urn:request:<request id>' }),
    extensions: Type.Optional(
      Type.Object(
        {
          code: Type.Optional(Type.String({ maxLength: 64 })),
          accepted: Type.Optional(Type.Integer({ minimum: 0 })),
          duplicates: Type.Optional(Type.Integer({ minimum: 0 })),
          conflicts: Type.Optional(Type.Integer({ minimum: 0 })),
          rejected: Type.Optional(Type.Integer({ minimum: 0 })),
          results: Type.Optional(Type.Array(Type.Object({}, { additionalProperties: true, description: 'index, event_id, status (duplicate, conflict, rejected) and errors, as in IngestResult.' }))),
        },
        { additionalProperties: true, description: 'For events not stored: the per-event outcomes, as POST /v1/events answers them (fields point into the CloudEvent).' },
      ),
    ),
  },
  { $id: 'Problem', description: 'A Problem Details object (RFC 7807).' },
)

export const CloudEventIn = Type.Object(
  {
    specversion: Type.Literal('1.0'),
    id: Type.String({ minLength: 1, maxLength: 1024 }),
    source: Type.String({ minLength: 1, maxLength: 1024 }),
    type: Type.String({ minLength: 1, maxLength: 256 }),
    subject: Type.String({ minLength: 1, maxLength: 128, description: 'The customer (customer_id); also the key_id when data has none.' }),
    time: Type.String({ maxLength: 40, description: 'RFC 3339. Required here: a replay must carry the same time.' }),
    datacontenttype: Type.Optional(Type.Union([Type.Literal('application/json'), Type.Null()])),
    dataschema: Type.Optional(Type.Union([Type.String({ maxLength: 2048 }), Type.Null()])),
    data: Type.Object(
      {},
      {
        additionalProperties: true,
        description:
          'The usage: the native field names (input_tokens, output_tokens, model, provider, cost, key_id, team_id, user_id, status_code, …) or OpenMeter\'s LLM shape {"tokens": N, "type": "input"|"output", "model": …, "provider": …}. Other string fields are kept as tags.',
      },
    ),
  },
  { additionalProperties: true, description: 'A CloudEvents 1.0 event (extension attributes are allowed and ignored).' },
)

/** Binary bodies (protobuf) are documented, never validated as JSON. */
export const BinaryBody = Type.String({ format: 'binary', [PER_EVENT_VALIDATION]: true })

const OtlpAnyJson = Type.Object({}, { additionalProperties: true })
export const OtlpTracesJson = Type.Object(
  {
    resourceSpans: Type.Optional(
      Type.Array(
        Type.Object({
          resource: Type.Optional(Type.Object({ attributes: Type.Optional(Type.Array(OtlpAnyJson)) }, { additionalProperties: true })),
          scopeSpans: Type.Optional(Type.Array(Type.Object({ spans: Type.Optional(Type.Array(OtlpAnyJson)) }, { additionalProperties: true }))),
        }, { additionalProperties: true }),
      ),
    ),
  },
  { additionalProperties: true, [PER_EVENT_VALIDATION]: true, description: 'ExportTraceServiceRequest in OTLP\'s JSON encoding (hex ids, lowerCamelCase keys).' },
)

export const OtlpTraceResponseJson = Type.Object(
  {
    partialSuccess: Type.Optional(
      Type.Object({
        rejectedSpans: Type.String({ pattern: '^\\d+$', description: 'int64, as a string (proto3 JSON).' }),
        errorMessage: Type.String({ maxLength: 4096 }),
      }),
    ),
  },
  { description: 'ExportTraceServiceResponse: partialSuccess only when GenAI spans were rejected.' },
)

export const OtlpStatusJson = Type.Object(
  { code: Type.Integer({ description: 'A google.rpc.Code.' }), message: Type.String({ maxLength: 4096 }) },
  { description: 'google.rpc.Status: the body of every OTLP/HTTP 4xx and 5xx answer.' },
)

export const LiteLLMPayloadIn = Type.Object(
  {
    id: Type.String({ minLength: 1, maxLength: 1024 }),
    status: Type.Union([Type.Literal('success'), Type.Literal('failure')]),
    model: Type.String({ maxLength: 128 }),
    custom_llm_provider: Type.Union([Type.String({ maxLength: 64 }), Type.Null()]),
    prompt_tokens: Type.Integer({ minimum: 0 }),
    completion_tokens: Type.Integer({ minimum: 0 }),
    startTime: Type.Number({ description: 'Epoch seconds.' }),
    endTime: Type.Number({ description: 'Epoch seconds: the event timestamp.' }),
    response_cost: Type.Optional(Type.Union([Type.Number({ minimum: 0 }), Type.Null()])),
    metadata: Type.Optional(Type.Object({}, { additionalProperties: true })),
  },
  { additionalProperties: true, description: "LiteLLM's StandardLoggingPayload (the fields read; the rest are ignored)." },
)

export const LiteLLMBody = Type.Union([Type.Array(LiteLLMPayloadIn), LiteLLMPayloadIn], {
  [PER_EVENT_VALIDATION]: true,
  description: 'What LiteLLM\'s generic_api logger sends: a JSON array (log_format json_array), one object (single) or one object per line (ndjson), all as application/json.',
})
