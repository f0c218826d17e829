/**
 * Masks of guided decoding, kept per vocabulary and guide state and shared by every sequence: a mask
 * depends on the state alone, and replies revisit few states (inside a string, after a key...), so
 * running the vocabulary through an automaton (0.15-0.53 ms on the default model's 2,048
 * tokens) is mostly a lookup instead (bench/sampling-options.ts).
 */

/** Bytes of masks kept per vocabulary; past it the vocabulary's masks are dropped and computed again. */
export const MASK_CACHE_BYTES = 16 * 1024 * 1024;
const caches = new WeakMap<ReadonlyArray<Uint8Array | null>, Map<string, Uint8Array>>();

/** The mask of `key` (a guide's state, unique across guides) for this vocabulary, computed on a miss. */
export function cachedMask(vocab: ReadonlyArray<Uint8Array | null>, key: string, compute: () => Uint8Array): Uint8Array {
  let masks = caches.get(vocab);
  if (!masks) caches.set(vocab, (masks = new Map()));
  let mask = masks.get(key);
  if (mask) return mask;
  mask = compute();
  if ((masks.size + 1) * vocab.length > MASK_CACHE_BYTES) masks.clear();
  masks.set(key, mask);
  return mask;
}
