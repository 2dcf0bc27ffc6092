// The filter of an id run (idruns.ts): a split-block Bloom filter (Parquet's
// SBBF). Blocks of 8 words; a key picks a block from its hash's hi word and sets
// one bit in each of the block's words from its lo word.
//
// Invariants:
// - No false negatives: a key added is always found (`filterHas`).
// - The layout is persisted in run files: changing it means a new run version.

export const BLOCK_WORDS = 8
/** Filter bits per key: ~0.5% false positives for a split-block Bloom filter. */
export const FILTER_BITS_PER_KEY = 11

const SALT = new Uint32Array([0x47b6137b, 0x44974d91, 0x8824ad5b, 0xa2b7289d, 0x705495c7, 0x2df1424b, 0x9efc4947, 0x5c6bfb31])

/** The filter's blocks for `keys` keys (at least one). */
export function filterBlocks(keys: number): number {
  return Math.max(1, Math.ceil((keys * FILTER_BITS_PER_KEY) / (BLOCK_WORDS * 32)))
}

export function filterBlock(hi: number, blocks: number): number {
  return Math.floor((hi / 4294967296) * blocks)
}

export function filterAdd(filter: Uint32Array, blocks: number, hi: number, lo: number): void {
  const base = filterBlock(hi, blocks) * BLOCK_WORDS
  for (let w = 0; w < BLOCK_WORDS; w++) filter[base + w]! |= 1 << (Math.imul(lo, SALT[w]!) >>> 27)
}

export function filterHas(filter: Uint32Array, blocks: number, hi: number, lo: number): boolean {
  const base = filterBlock(hi, blocks) * BLOCK_WORDS
  for (let w = 0; w < BLOCK_WORDS; w++) if ((filter[base + w]! & (1 << (Math.imul(lo, SALT[w]!) >>> 27))) === 0) return false
  return true
}
