/** maskOf: tokens visited in byte order, those that begin with a refused token's bytes refused unrun; the masks must be the naive ones. */
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { guideVocabulary } from '../../src/model/guide.js';
import { compileJsonSchema } from '../../src/model/json-schema.js';
import { maskOf } from '../../src/model/mask-cache.js';
import { RegexGuide, compileGuideRegex } from '../../src/model/regex-guide.js';
import { SchemaGuide } from '../../src/model/schema-guide.js';
import { loadTokenizer } from '../../src/model/tokenizer.js';
import { Rng } from '../../src/util/rng.js';

const enc = (s: string) => new TextEncoder().encode(s);

/** The reference: every token with bytes run through `accepts`. */
const naive = (vocab: ReadonlyArray<Uint8Array | null>, accepts: (b: Uint8Array) => boolean) => Uint8Array.from(vocab, (b) => (b && accepts(b) ? 1 : 0));

describe('maskOf', () => {
  it('is the naive mask, and runs only the tokens whose longest token prefix was taken', () => {
    // Duplicates, a token that no shorter token begins, nulls, and tokens out of byte order.
    const vocab = [null, ...['ab', 'a', 'b', 'abc', 'ba', 'abd', 'x', 'ab', 'bab', 'c', 'abcd', 'xa'].map(enc), null];
    const text = (b: Uint8Array) => new TextDecoder().decode(b);
    // Prefixes of "abcd" or of "bab": a refused text's extensions are refused too.
    const accepts = (b: Uint8Array) => 'abcd'.startsWith(text(b)) || 'bab'.startsWith(text(b));
    const ran: string[] = [];
    const mask = maskOf(vocab, (b) => (ran.push(text(b)), accepts(b)));
    expect(mask).toEqual(naive(vocab, accepts));
    expect([...mask.keys()].filter((id) => mask[id]).map((id) => text(vocab[id]!)).sort()).toEqual(['a', 'ab', 'ab', 'abc', 'abcd', 'b', 'ba', 'bab']);
    // "abd" is run (its prefix "ab" was taken) and refused, as are "x" and "c" (no token begins them); "xa" is not run ("x" was refused).
    expect(ran.sort()).toEqual(['a', 'ab', 'ab', 'abc', 'abcd', 'abd', 'b', 'ba', 'bab', 'c', 'x']);
  });

  it("equals the naive mask at every step of random walks through JSON, schema (with a union's forks) and pattern guides on the default model's vocabulary", () => {
    const tokenizer = loadTokenizer(join(import.meta.dirname, '..', '..', 'models', 'default'));
    const vocab = guideVocabulary(tokenizer, tokenizer.vocabSize);
    const schema = compileJsonSchema({
      anyOf: [
        { type: 'object', properties: { kind: { const: 'cat' }, name: { type: 'string', maxLength: 12 } }, required: ['kind', 'name'] },
        { type: 'object', properties: { kind: { const: 'cattle' }, n: { type: 'integer', minimum: -5, maximum: 300 } }, required: ['kind'] },
      ],
    });
    const regex = compileGuideRegex('(the|a) [a-z]{1,6}( and [a-z]{2,4})?\\.');
    const guides: Array<{ name: string; make: () => SchemaGuide | RegexGuide; accepts: (g: never, b: Uint8Array) => boolean }> = [
      { name: 'json object', make: () => SchemaGuide.jsonObject(vocab), accepts: (g: SchemaGuide, b) => g.accepts(b) },
      { name: 'schema', make: () => new SchemaGuide(schema, vocab), accepts: (g: SchemaGuide, b) => g.accepts(b) },
      { name: 'regex', make: () => new RegexGuide(regex, vocab, []), accepts: (g: RegexGuide, b) => (g as unknown as { run(b: Uint8Array): readonly number[] }).run(b).length > 0 },
    ];
    let compared = 0;
    for (const { name, make, accepts } of guides) {
      for (let seed = 1; seed <= 6; seed++) {
        const rng = new Rng(seed);
        const g = make();
        for (let step = 0; step < 24 && !g.done; step++) {
          const own = (b: Uint8Array) => accepts(g as never, b);
          const mask = maskOf(vocab, own);
          expect(mask, `${name} seed ${seed} step ${step}`).toEqual(naive(vocab, own));
          compared++;
          const ids = [...mask.keys()].filter((id) => mask[id]);
          if (ids.length === 0) break;
          g.advance(ids[Math.floor(rng.uniform() * ids.length)]);
        }
      }
    }
    expect(compared).toBeGreaterThan(100);
  });
});

describe('masks inside bounded strings', () => {
  it('built from the string tables, equal the naive mask at every step of random walks (lengths and bounds, non-ASCII, escapes, free keys, unions)', () => {
    const tokenizer = loadTokenizer(join(import.meta.dirname, '..', '..', 'models', 'default'));
    const real = guideVocabulary(tokenizer, tokenizer.vocabSize);
    // Every byte, and tokens that cross a string's end: a quote and what follows it, escapes, multi-byte characters.
    const made = [null, ...Array.from({ length: 255 }, (_, i) => Uint8Array.of(i + 1)), ...['",', '"}', '", "', '":', 'ab', '\\"', '\\u00e9', 'é', '日本', '"]', '"}}', 'abc"', 'x\\n', ' "'].map(enc)];
    const schemas = [
      { type: 'object', properties: { s: { type: 'string', minLength: 2, maxLength: 5 }, t: { type: 'string', maxLength: 1 } }, required: ['s'] },
      { type: 'array', items: { type: 'string', minLength: 1, maxLength: 3 }, maxItems: 3 },
      { type: 'object', additionalProperties: { type: 'string', maxLength: 2 } },
      { type: 'object', properties: { u: { anyOf: [{ type: 'string', maxLength: 2 }, { type: 'string', minLength: 4, maxLength: 6 }] }, v: { type: 'string', minLength: 3 } }, required: ['u', 'v'] },
      // Unique strings: masks kept without the strings written, the closing quotes run again against them.
      { type: 'array', items: { type: 'string', minLength: 1 }, uniqueItems: true },
    ];
    let compared = 0;
    for (const vocab of [made, real]) {
      for (const schema of schemas) {
        const compiled = compileJsonSchema(schema);
        for (let seed = 1; seed <= 8; seed++) {
          const rng = new Rng(seed);
          const g = new SchemaGuide(compiled, vocab);
          for (let step = 0; step < 30 && !g.done; step++) {
            const mask = g.allowed();
            expect(mask, `${JSON.stringify(schema)} seed ${seed} step ${step}`).toEqual(naive(vocab, (b) => g.accepts(b)));
            compared++;
            const ids = [...mask.keys()].filter((id) => mask[id]);
            if (ids.length === 0) break;
            g.advance(ids[Math.floor(rng.uniform() * ids.length)]);
          }
        }
      }
    }
    expect(compared).toBeGreaterThan(500);
  });
});
