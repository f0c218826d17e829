/**
 * Masks of guided decoding, kept per vocabulary and guide state and shared by every sequence: a mask
 * depends on the state alone, and replies revisit few states (inside a string, after a key...), so
 * running the vocabulary through an automaton (0.15-0.63 ms on the default model's 2,048
 * tokens) is mostly a lookup instead (bench/sampling-options.ts).
 */

/** Bytes of masks kept per vocabulary; past it the vocabulary's masks are dropped and computed again. */
export const MASK_CACHE_BYTES = 16 * 1024 * 1024;
const caches = new WeakMap<ReadonlyArray<Uint8Array | null>, Map<string, Uint8Array>>();

/** 1 for each token with bytes that `accepts` takes (a token without bytes is never allowed). */
export function maskOf(vocab: ReadonlyArray<Uint8Array | null>, accepts: (bytes: Uint8Array) => boolean): Uint8Array {
  const mask = new Uint8Array(vocab.length);
  for (let id = 0; id < vocab.length; id++) {
    const bytes = vocab[id];
    if (bytes && accepts(bytes)) mask[id] = 1;
  }
  return mask;
}

/** The mask of `key` (a guide's state, unique across guides) for this vocabulary: on a miss, the tokens `accepts` takes. */
export function cachedMask(vocab: ReadonlyArray<Uint8Array | null>, key: string, accepts: (bytes: Uint8Array) => boolean): Uint8Array {
  let masks = caches.get(vocab);
  if (!masks) caches.set(vocab, (masks = new Map()));
  let mask = masks.get(key);
  if (mask) return mask;
  mask = maskOf(vocab, accepts);
  if ((masks.size + 1) * vocab.length > MASK_CACHE_BYTES) masks.clear();
  masks.set(key, mask);
  return mask;
}
