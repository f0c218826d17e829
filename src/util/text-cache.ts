/**
 * What was made from a text, kept by that text: compiled patterns, grammars and schemas, so that the
 * same guide in every request is compiled once and shares its masks. Past `max` entries the oldest
 * is dropped. A text whose making throws is not kept.
 *
 * A cache given a name can also be filled from another thread (serve/guide-compiler.ts): there what
 * code takes from the caches is recorded (`recordUsed`: made or kept), posted back, and `adoptUsed`
 * keeps it here, each value given this thread's own identity by the cache's `adopt`; `peekKept` runs
 * code against what is kept here only, to tell whether anything would be made.
 */
export class TextCache<T> {
  private readonly kept = new Map<string, T>();

  /**
   * @param name the cache's name across threads (one cache per name); unnamed caches are left out of
   *   recording and adoption
   * @param adopt what a value made on another thread becomes here (e.g. a fresh process-wide id); default as it is
   */
  constructor(
    private readonly max: number,
    readonly name?: string,
    private readonly adopt: (made: T) => T = (made) => made,
  ) {
    if (name !== undefined) {
      if (named.has(name)) throw new Error(`a text cache named "${name}" exists already`);
      named.set(name, this as TextCache<unknown>);
    }
  }

  /** What was made from `text`, or `make()` kept under it. */
  get(text: string, make: () => T): T {
    let value = this.kept.get(text);
    if (value === undefined) {
      if (peeking) throw new NotKept();
      value = make();
      this.keep(text, value);
    }
    if (recording && this.name !== undefined) recording.push({ cache: this.name, text, value });
    return value;
  }

  /** Keeps `made` (from another thread) under `text` unless something is kept there already. */
  adoptFrom(text: string, made: T): void {
    if (!this.kept.has(text)) this.keep(text, this.adopt(made));
  }

  private keep(text: string, made: T): void {
    if (this.kept.size >= this.max) this.kept.delete(this.kept.keys().next().value!);
    this.kept.set(text, made);
  }
}

/** One value taken from a named cache while recording: the cache's name, the text and the value. */
export interface Used {
  cache: string;
  text: string;
  value: unknown;
}

const named = new Map<string, TextCache<unknown>>();
let recording: Used[] | null = null;
let peeking = false;

/** Thrown through `fn` by peekKept where something would be made. */
class NotKept extends Error {}

/** `fn()` with what it takes from the named caches (made or kept) recorded, in the order taken. */
export function recordUsed<R>(fn: () => R): { result: R; used: Used[] } {
  const outer = recording;
  const used: Used[] = [];
  recording = used;
  try {
    return { result: fn(), used };
  } finally {
    recording = outer;
  }
}

/** Values recorded on another thread, kept by the caches of their names (a name unknown here is skipped). */
export function adoptUsed(used: readonly Used[]): void {
  for (const u of used) named.get(u.cache)?.adoptFrom(u.text, u.value);
}

/** `fn()` against what the caches keep: `{ kept: false }` where it would make anything (nothing is made). */
export function peekKept<R>(fn: () => R): { kept: true; result: R } | { kept: false } {
  const outer = peeking;
  peeking = true;
  try {
    return { kept: true, result: fn() };
  } catch (e) {
    if (e instanceof NotKept) return { kept: false };
    throw e;
  } finally {
    peeking = outer;
  }
}
