/**
 * Free text, or one JSON document: the guide of a reply that may answer in words or open a JSON
 * document that must then be one of a schema (tool calls under OpenAI's tool_choice auto: the model
 * decides whether to call, and a call it begins is one of the offered functions with arguments of
 * their parameters). The reply is free until its first bytes other than white space decide: when
 * they begin one of the `openers` (`{`, or `[{` with white space between allowed), the reply from
 * its first such byte on is guided as one document of the schema and ends when the document closes;
 * otherwise it is free text to the end. While its bytes are still a proper prefix of an opener
 * (nothing but white space, or `[`), the tokens that would open a document the schema cannot take are
 * left out, and every other token may come.
 */
import type { Guide } from './guide.js';
import type { CompiledSchema } from './json-schema.js';
import { beginsWith, cachedBy } from './mask-cache.js';
import { MAX_WHITESPACE, SchemaGuide, isWhitespace } from './schema-guide.js';

/** What a reply's bytes so far make of it: still undecided, a document begun, or text. */
type Reading = { kind: 'lead'; pending: number[] } | { kind: 'json'; from: number[] } | { kind: 'text' };

export class TextOrJsonGuide implements Guide {
  private readonly openers: Uint8Array[];
  /** Undecided: the reply's bytes from its first one other than white space (a proper prefix of an opener, white space inside kept). */
  private pending: number[] = [];
  private phase: 'lead' | 'json' | 'text' = 'lead';
  private json: SchemaGuide | null = null;

  constructor(
    private readonly schema: CompiledSchema,
    private readonly vocab: ReadonlyArray<Uint8Array | null>,
    openers: readonly string[],
  ) {
    if (openers.length === 0 || openers.some((o) => o.length === 0 || /\s/.test(o))) throw new Error('text-or-JSON guide needs openers without white space');
    const enc = new TextEncoder();
    this.openers = openers.map((o) => enc.encode(o));
  }

  /** The reply opened a document and it has closed. */
  get done(): boolean {
    return this.phase === 'json' && this.json!.done;
  }

  /** Whether the reply is free text for good (null masks), a document (the schema's masks), or still undecided. */
  get state(): 'lead' | 'json' | 'text' {
    return this.phase;
  }

  /** What `bytes` written next would make of the reply. */
  private read(bytes: Uint8Array): Reading {
    const pending = this.pending.slice();
    for (const b of bytes) if (pending.length > 0 || !isWhitespace(b)) pending.push(b);
    const solid = pending.filter((b) => !isWhitespace(b));
    if (this.openers.some((o) => beginsWith(solid, o))) return { kind: 'json', from: pending };
    // Still a proper prefix of an opener, and the schema could still take it (its white space is bounded).
    if (this.openers.some((o) => beginsWith(o, solid)) && pending.length - solid.length <= MAX_WHITESPACE) return { kind: 'lead', pending };
    return { kind: 'text' };
  }

  /** Null where any token may come (free text); else 1 for each token that may. */
  allowed(): Uint8Array | null {
    if (this.phase === 'text') return null;
    if (this.phase === 'json') return this.json!.allowed();
    return cachedBy(this.vocab, `text-or-json ${this.schema.id}|${this.openers.join(';')}|${this.pending.join(',')}`, () => {
      const fresh = new SchemaGuide(this.schema, this.vocab);
      return Uint8Array.from(this.vocab, (bytes) => {
        if (!bytes) return 1;
        const r = this.read(bytes);
        return r.kind !== 'json' || fresh.accepts(r.from) ? 1 : 0;
      });
    });
  }

  advance(id: number): void {
    if (this.phase === 'text') return;
    if (this.phase === 'json') {
      this.json!.advance(id);
      return;
    }
    const bytes = this.vocab[id];
    const r: Reading = bytes ? this.read(bytes) : { kind: 'text' };
    if (r.kind === 'lead') this.pending = r.pending;
    else if (r.kind === 'text') this.phase = 'text';
    else {
      const json = new SchemaGuide(this.schema, this.vocab);
      if (!json.take(r.from)) throw new Error(`token ${id} opens a JSON document the schema does not take`);
      this.json = json;
      this.phase = 'json';
    }
  }
}
