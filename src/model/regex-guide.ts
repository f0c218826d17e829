/**
 * Guided decoding to a regular expression (vLLM's guided_regex): at each step the tokens whose bytes
 * keep the reply a prefix of some string the pattern matches whole (regex.ts); the end tokens where
 * the reply matches, and the reply ends by itself when it matches and nothing can follow. Masks of
 * the tokens are kept per pattern and NFA state set (mask-cache.ts).
 */
import type { Guide } from './guide.js';
import { cachedMask, withEnds } from './mask-cache.js';
import { type Nfa, RegexError, compileRegex, regexAccepts, regexStuck, stepRegex } from './regex.js';
import { TextCache } from '../util/text-cache.js';

export interface CompiledRegex {
  /** A process-wide number: masks of guides of the same pattern are shared. */
  readonly id: number;
  readonly nfa: Nfa;
}

let nextId = 1;
const compiled = new TextCache<CompiledRegex>(64, 'regex', (r) => ({ ...r, id: nextId++ }), {
  is: (e): e is RegexError => e instanceof RegexError,
  revive: (f) => new RegexError(f.message),
});

/** Compile a pattern for guiding (kept by its text); RegexError where it is outside the subset. */
export function compileGuideRegex(pattern: string): CompiledRegex {
  return compiled.get(pattern, () => ({ id: nextId++, nfa: compileRegex(pattern) }));
}

export class RegexGuide implements Guide {
  private states: readonly number[];

  constructor(
    private readonly regex: CompiledRegex,
    private readonly vocab: ReadonlyArray<Uint8Array | null>,
    private readonly ends: readonly number[],
  ) {
    this.states = regex.nfa.start;
  }

  /** The reply matches and cannot grow. */
  get done(): boolean {
    return regexAccepts(this.regex.nfa, this.states) && regexStuck(this.regex.nfa, this.states);
  }

  /** The states after `bytes` (empty: no match goes on this way). */
  private run(bytes: Uint8Array): readonly number[] {
    let s = this.states;
    for (let i = 0; i < bytes.length && s.length > 0; i++) s = stepRegex(this.regex.nfa, s, bytes[i]);
    return s;
  }

  allowed(): Uint8Array {
    const tokens = cachedMask(this.vocab, `regex ${this.regex.id}|${this.states.join(',')}`, (bytes) => this.run(bytes).length > 0);
    // A whole match may end here.
    return withEnds(tokens, this.ends, regexAccepts(this.regex.nfa, this.states));
  }

  advance(id: number): void {
    if (this.ends.includes(id)) return;
    const bytes = this.vocab[id];
    const next = bytes ? this.run(bytes) : [];
    if (next.length === 0) throw new Error(`token ${id} does not continue a match of the pattern`);
    this.states = next;
  }
}
