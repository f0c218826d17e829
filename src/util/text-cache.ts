/**
 * What was made from a text, kept by that text: compiled patterns, grammars and schemas, so that the
 * same guide in every request is compiled once and shares its masks. Past `max` entries the oldest
 * is dropped. A text whose making throws is not kept, unless the cache's `refusals` say the error is
 * a refusal (what the text is, not a passing failure): that is kept and thrown again for the text,
 * so a guide that cannot be compiled is not compiled again at every request.
 *
 * A cache given a name can also be filled from another thread (serve/guide-compiler.ts): there what
 * code takes from the caches is recorded (`recordUsed`: made or kept, refusals too), posted back, and
 * `adoptUsed` keeps it here, each value given this thread's own identity by the cache's `adopt` and
 * each refusal made an error of its class again by `refusals.revive`; `peekKept` runs code against
 * what is kept here only, to tell whether anything would be made.
 */

/** How a cache tells a refusal from another error, and makes one again from its fields (another thread's). */
export interface Refusals {
  is(e: unknown): e is Error;
  /** The refusal of `fields`: its message, and its own fields (a SchemaError's path and keyword). */
  revive(fields: Readonly<Record<string, unknown>> & { message: string }): Error;
}

type Entry<T> = { value: T } | { refusal: Error };

export class TextCache<T> {
  private readonly kept = new Map<string, Entry<T>>();

  /**
   * @param name the cache's name across threads (one cache per name); unnamed caches are left out of
   *   recording and adoption
   * @param adopt what a value made on another thread becomes here (e.g. a fresh process-wide id); default as it is
   * @param refusals the errors of `make` that are kept; none by default
   */
  constructor(
    private readonly max: number,
    readonly name?: string,
    private readonly adopt: (made: T) => T = (made) => made,
    private readonly refusals?: Refusals,
  ) {
    if (name !== undefined) {
      if (named.has(name)) throw new Error(`a text cache named "${name}" exists already`);
      named.set(name, this as TextCache<unknown>);
    }
  }

  /** What was made from `text`, or `make()` kept under it; a refusal kept for `text` is thrown. */
  get(text: string, make: () => T): T {
    let entry = this.kept.get(text);
    if (entry === undefined) {
      if (peeking) throw new NotKept();
      try {
        entry = { value: make() };
      } catch (e) {
        if (!this.refusals?.is(e)) throw e;
        entry = { refusal: e };
      }
      this.keep(text, entry);
    }
    if (recording && this.name !== undefined) recording.push('value' in entry ? { cache: this.name, text, value: entry.value } : { cache: this.name, text, refusal: fieldsOf(entry.refusal) });
    if ('refusal' in entry) throw entry.refusal;
    return entry.value;
  }

  /** Keeps what another thread took for `text` (recorded by recordUsed), unless something is kept there already. */
  adoptFrom(used: Used): void {
    if (this.kept.has(used.text)) return;
    if (used.refusal !== undefined) {
      if (this.refusals) this.keep(used.text, { refusal: this.refusals.revive(used.refusal) });
    } else {
      this.keep(used.text, { value: this.adopt(used.value as T) });
    }
  }

  private keep(text: string, entry: Entry<T>): void {
    if (this.kept.size >= this.max) this.kept.delete(this.kept.keys().next().value!);
    this.kept.set(text, entry);
  }
}

/** One value or refusal taken from a named cache while recording: the cache's name, the text and what it gave. */
export interface Used {
  cache: string;
  text: string;
  value?: unknown;
  /** A refusal's message and own fields (data only, to cross threads). */
  refusal?: Record<string, unknown> & { message: string };
}

/** An error as data: its message and its own enumerable fields (name, a SchemaError's path and keyword). */
function fieldsOf(e: Error): Record<string, unknown> & { message: string } {
  return { ...Object.fromEntries(Object.entries(e)), message: e.message };
}

const named = new Map<string, TextCache<unknown>>();
let recording: Used[] | null = null;
let peeking = false;

/** Thrown through `fn` by peekKept where something would be made. */
class NotKept extends Error {}

/**
 * `fn()` with what it takes from the named caches (made or kept, refusals too) recorded into `used`,
 * in the order taken; `used` holds what was taken also when `fn` throws.
 */
export function recordUsed<R>(fn: () => R, used: Used[] = []): { result: R; used: Used[] } {
  const outer = recording;
  recording = used;
  try {
    return { result: fn(), used };
  } finally {
    recording = outer;
  }
}

/** What another thread recorded, kept by the caches of their names (a name unknown here is skipped). */
export function adoptUsed(used: readonly Used[]): void {
  for (const u of used) named.get(u.cache)?.adoptFrom(u);
}

/**
 * `fn()` against what the caches keep: `{ kept: false }` where it would make anything (nothing is
 * made). A refusal kept for a text is thrown through `fn` as `get` throws it.
 */
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
