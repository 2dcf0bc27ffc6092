// The event-loop-delay guards (src/plugins/pressure.ts) at values that a loaded CI
// machine's scheduling noise does not reach: a server under test sheds load only when a
// test means it to. Tests of the guards themselves set their own thresholds.
export const CALM_PRESSURE_ENV: Readonly<Record<string, string>> = {
  TOKENLEDGER_QUERY_MAX_EVENT_LOOP_DELAY: '5s',
  TOKENLEDGER_INGEST_MAX_EVENT_LOOP_DELAY: '10s',
}
