// The closest of some known names to a name given (a typo'd parameter, value or
// environment variable), for messages that say what was probably meant.

/** Most characters compared: longer names are cut (bounds the work on hostile input). */
const MAX_NAME_CHARS = 128

/** Levenshtein distance (insertions, deletions, substitutions), case-insensitive. */
export function editDistance(a: string, b: string): number {
  const x = a.slice(0, MAX_NAME_CHARS).toLowerCase()
  const y = b.slice(0, MAX_NAME_CHARS).toLowerCase()
  let prev = Array.from({ length: y.length + 1 }, (_, j) => j)
  for (let i = 1; i <= x.length; i++) {
    const row = [i]
    for (let j = 1; j <= y.length; j++) {
      row[j] = Math.min(prev[j]! + 1, row[j - 1]! + 1, prev[j - 1]! + (x[i - 1] === y[j - 1] ? 0 : 1))
    }
    prev = row
  }
  return prev[y.length]!
}

/**
 * The known name nearest to `given` (the first of equals, in `known`'s order), or null
 * when none is known or, with `near`, none is near enough to be a plausible typo
 * (at most a third of its characters, and at least 2, changed).
 */
export function closest(given: string, known: readonly string[], opts: { near?: boolean } = {}): string | null {
  let best: string | null = null
  let bestDistance = Infinity
  for (const name of known) {
    const d = editDistance(given, name)
    if (d < bestDistance) [best, bestDistance] = [name, d]
  }
  if (best !== null && opts.near === true && bestDistance > Math.max(2, Math.floor(best.length / 3))) return null
  return best
}
