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

/** The words of a name (`EVENT_RETENTION` → event, retention). */
function words(name: string): string[] {
  return name.slice(0, MAX_NAME_CHARS).toLowerCase().split(/[_.\- ]+/).filter((w) => w !== '')
}

/** How far the words given are from the candidate's nearest words: a typo'd word costs its typo, a missing word nothing. */
function wordDistance(given: readonly string[], candidate: readonly string[]): number {
  let sum = 0
  for (const w of given) sum += Math.min(...candidate.map((c) => editDistance(w, c)), w.length)
  return sum
}

/**
 * The known name nearest to `given` (the first of equals, in `known`'s order), or null
 * when none is known or, with `near`, none is near enough to be a plausible typo
 * (at most a third of its characters, and at least 2, changed). Nearest by its words
 * first (`RETENTON` is one typo from the word `RETENTION`), then by the whole name.
 */
export function closest(given: string, known: readonly string[], opts: { near?: boolean } = {}): string | null {
  const givenWords = words(given)
  let best: string | null = null
  let bestKey: [number, number] = [Infinity, Infinity]
  for (const name of known) {
    const key: [number, number] = [wordDistance(givenWords, words(name)), editDistance(given, name)]
    if (key[0] < bestKey[0] || (key[0] === bestKey[0] && key[1] < bestKey[1])) [best, bestKey] = [name, key]
  }
  if (best !== null && opts.near === true && bestKey[1] > Math.max(2, Math.floor(best.length / 3))) return null
  return best
}
