// How SQL names a segment's tables: quoted identifiers and literals, and the
// relation that reads an attached file's `events` as the current schema.
//
// Invariants:
// - An alias names one ATTACHed database for its whole life (files.ts makes
//   them unique within the process); the registry below holds an entry only
//   between that file's ATTACH and its DETACH (files.ts sets and clears it).
// - Every reader of a segment's events goes through tableOf, so a file of an
//   older schema version is read with the current columns (missing ones as
//   null or their default).

/** Names a SQL identifier safely (aliases are generated, but quote anyway). */
export function ident(name: string): string {
  return `"${name.replaceAll('"', '""')}"`
}

/** A SQL string literal (for file paths, which DuckDB does not take as parameters in ATTACH or COPY). */
export function sqlString(text: string): string {
  return `'${text.replaceAll("'", "''")}'`
}

/** Attached files whose `events` table predates a column, by alias, and the relation that reads them as the current schema. */
const olderSchemaEvents = new Map<string, string>()

export function setEventsRelation(alias: string, relation: string | null): void {
  if (relation === null) olderSchemaEvents.delete(alias)
  else olderSchemaEvents.set(alias, relation)
}

/**
 * `alias` names an attached database; null means the connection's own. An
 * `events` table of an older schema version reads through its projection.
 */
export function tableOf(alias: string | null, table: string): string {
  if (alias === null) return table
  return (table === 'events' ? olderSchemaEvents.get(alias) : undefined) ?? `${ident(alias)}.${table}`
}
