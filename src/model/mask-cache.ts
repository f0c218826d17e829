/**
 * Masks of guided decoding, kept per vocabulary and guide state and shared by every sequence: a mask
 * depends on the state alone, and replies revisit few states (inside a string, after a key...), so
 * running the vocabulary through an automaton (0.04-0.65 ms on the default model's 2,048 tokens,
 * bench/guide-masks.ts) is mostly a lookup instead (bench/sampling-options.ts).
 */

/** Bytes of masks kept per vocabulary; past it the vocabulary's masks are dropped and computed again. */
export const MASK_CACHE_BYTES = 16 * 1024 * 1024;
const caches = new WeakMap<ReadonlyArray<Uint8Array | null>, Map<string, Uint8Array>>();

/**
 * A vocabulary's tokens in byte order, each with the longest token its bytes begin with (its own
 * bytes included: a token of the same bytes earlier in the order), as a walk down a trie would meet them.
 */
interface PrefixOrder {
  /** Token ids with bytes, sorted by their bytes. */
  ids: Int32Array;
  /** For ids[k]: the id of the longest token (earlier in the order) whose bytes begin ids[k]'s; -1 if none. */
  prefix: Int32Array;
}

const prefixOrders = new WeakMap<ReadonlyArray<Uint8Array | null>, PrefixOrder>();

function compareBytes(a: Uint8Array, b: Uint8Array): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return a[i] - b[i];
  return a.length - b.length;
}

/** Whether `bytes` begin with `head`. */
export function beginsWith(bytes: ArrayLike<number>, head: ArrayLike<number>): boolean {
  if (head.length > bytes.length) return false;
  for (let i = 0; i < head.length; i++) if (bytes[i] !== head[i]) return false;
  return true;
}

function prefixOrder(vocab: ReadonlyArray<Uint8Array | null>): PrefixOrder {
  let order = prefixOrders.get(vocab);
  if (order) return order;
  const sorted: number[] = [];
  for (let id = 0; id < vocab.length; id++) if (vocab[id]) sorted.push(id);
  sorted.sort((a, b) => compareBytes(vocab[a]!, vocab[b]!) || a - b);
  const prefix = new Int32Array(sorted.length);
  // The tokens on the way down to the current one: each begins the next.
  const path: number[] = [];
  sorted.forEach((id, k) => {
    const bytes = vocab[id]!;
    while (path.length > 0 && !beginsWith(bytes, vocab[path[path.length - 1]]!)) path.pop();
    prefix[k] = path.length > 0 ? path[path.length - 1] : -1;
    path.push(id);
  });
  order = { ids: Int32Array.from(sorted), prefix };
  prefixOrders.set(vocab, order);
  return order;
}

/**
 * 1 for each token with bytes that `accepts` takes (a token without bytes is never allowed).
 * `accepts` must refuse every extension of bytes it refuses (a state that dies on some byte dies there
 * whatever follows), as a guide's does: tokens are visited in byte order, and a token that begins with
 * a refused token's bytes is refused without being run. In the states where few tokens may follow,
 * most of a byte-level vocabulary is refused through its one-byte tokens.
 */
export function maskOf(vocab: ReadonlyArray<Uint8Array | null>, accepts: (bytes: Uint8Array) => boolean): Uint8Array {
  const mask = new Uint8Array(vocab.length);
  const { ids, prefix } = prefixOrder(vocab);
  for (let k = 0; k < ids.length; k++) {
    const head = prefix[k];
    if (head >= 0 && mask[head] === 0) continue;
    const id = ids[k];
    if (accepts(vocab[id]!)) mask[id] = 1;
  }
  return mask;
}

/** The mask of `key` (a guide's state, unique across guides) for this vocabulary: on a miss, the tokens `accepts` takes. */
export function cachedMask(vocab: ReadonlyArray<Uint8Array | null>, key: string, accepts: (bytes: Uint8Array) => boolean): Uint8Array {
  return cachedBy(vocab, key, () => maskOf(vocab, accepts));
}

/**
 * A cached mask with the request's end tokens allowed too, where the reply may end (`whole`): a copy,
 * since the cached mask is shared and end tokens are each request's own.
 */
export function withEnds(tokens: Uint8Array, ends: readonly number[], whole: boolean): Uint8Array {
  if (!whole) return tokens;
  const mask = tokens.slice();
  for (const e of ends) mask[e] = 1;
  return mask;
}

/** What `build` makes for `key` (a mask, or a guide's own table of at most a vocabulary's bytes), kept with the vocabulary's masks. */
export function cachedBy(vocab: ReadonlyArray<Uint8Array | null>, key: string, build: () => Uint8Array): Uint8Array {
  let masks = caches.get(vocab);
  if (!masks) caches.set(vocab, (masks = new Map()));
  let mask = masks.get(key);
  if (mask) return mask;
  mask = build();
  if ((masks.size + 1) * vocab.length > MASK_CACHE_BYTES) masks.clear();
  masks.set(key, mask);
  return mask;
}
