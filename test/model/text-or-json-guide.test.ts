import { describe, expect, it } from 'vitest';
import { compileJsonSchema } from '../../src/model/json-schema.js';
import { SchemaGuide } from '../../src/model/schema-guide.js';
import { Sequence } from '../../src/model/sequence.js';
import { TextOrJsonGuide } from '../../src/model/text-or-json-guide.js';
import { Rng } from '../../src/util/rng.js';
import { piecesTokenizer } from './tokenizer-fixture.js';

const enc = (s: string) => new TextEncoder().encode(s);
const dec = (b: ArrayLike<number>) => Buffer.from(Uint8Array.from(b)).toString('latin1');
// id 0: an end token (no bytes); then every byte; then multi-byte tokens that open, or do not open, a call.
const MULTI = ['{"', ' {', '{x', '[{', '[ {"', '[1', 'Hi', '  ', '\n\n', '"zoom"', '": {"', 'level', '"}', '}}', ' [', 'Sure, {"'];
const vocab: Array<Uint8Array | null> = [null, ...Array.from({ length: 255 }, (_, i) => Uint8Array.of(i + 1)), ...MULTI.map(enc)];
const id = (s: string) => vocab.findIndex((v) => v !== null && dec(v) === s);

// A call of zoom (level 1-3), or (several) an array of such calls: as the chat route writes a tool's call schema.
const call = { type: 'object', properties: { zoom: { type: 'object', properties: { level: { type: 'integer', minimum: 1, maximum: 3 } }, required: ['level'], additionalProperties: false } }, required: ['zoom'], additionalProperties: false };
const several = compileJsonSchema({ anyOf: [call, { type: 'array', items: call, minItems: 1, maxItems: 4 }] });
const one = compileJsonSchema(call);

/** A document of `call` (or an array of them): checked on the parsed value, apart from the guide. */
function isCall(v: unknown): boolean {
  if (Array.isArray(v)) return v.length >= 1 && v.length <= 4 && v.every(isCall);
  if (typeof v !== 'object' || v === null || Object.keys(v).join() !== 'zoom') return false;
  const args = (v as { zoom: unknown }).zoom as Record<string, unknown>;
  return typeof args === 'object' && args !== null && Object.keys(args).join() === 'level' && [1, 2, 3].includes(args.level as number);
}

/** Whether a reply's text, white space left out, opens a call: `{`, or `[` then `{` (with `arrays`). */
const opens = (text: string, arrays: boolean) => {
  const solid = text.replace(/\s/g, '');
  return solid.startsWith('{') || (arrays && solid.startsWith('[{'));
};

describe('TextOrJsonGuide', () => {
  it('leaves the reply free until it opens a document, and then lets it open only a document the schema takes', () => {
    const g = new TextOrJsonGuide(several, vocab, ['{', '[{']);
    const mask = g.allowed()!;
    const at = (s: string) => mask[id(s)];
    // Opening a call: only as the schema allows; words, a list, a closing brace and the end token are free.
    expect([at('{"'), at(' {'), at('{x'), at('[{'), at('[ {"'), at('Sure, {"')]).toEqual([1, 1, 0, 1, 1, 1]);
    expect([at('Hi'), at('[1'), at('}}'), at('  '), mask[0], at('{'), at('[')]).toEqual([1, 1, 1, 1, 1, 1, 1]);
    // One call only: an array is text, and the schema of one call refuses none of the array's tokens.
    const single = new TextOrJsonGuide(one, vocab, ['{']).allowed()!;
    expect([single[id('[{')], single[id('[ {"')], single[id('{x')], single[id('{"')]]).toEqual([1, 1, 0, 1]);
    // Free text for good: no mask at all, never done.
    const text = new TextOrJsonGuide(several, vocab, ['{', '[{']);
    text.advance(id('Hi'));
    expect(text.state).toBe('text');
    text.advance(id('{x'));
    expect([text.allowed(), text.done]).toEqual([null, false]);
    expect(() => new TextOrJsonGuide(several, vocab, [])).toThrow();
  });

  it('white space and a bracket keep the reply undecided; the document begins at its first byte and ends when it closes', () => {
    const g = new TextOrJsonGuide(several, vocab, ['{', '[{']);
    for (const s of ['\n\n', ' [', '  ']) {
      g.advance(id(s));
      expect(g.state).toBe('lead');
    }
    // After "[", a list of numbers is still text, but a brace opens a call that must be one of the schema.
    expect(g.allowed()![id('1')]).toBe(1);
    expect(g.allowed()![id('{x')]).toBe(0);
    g.advance(id('{"'));
    expect(g.state).toBe('json');
    // From here the masks are the schema's own, at the document's text so far (the white space before "[" left out).
    const same = new SchemaGuide(several, vocab);
    expect(same.take(enc('[  {"'))).toBe(true);
    expect(g.allowed()).toEqual(same.allowed());
    for (const b of enc('zoom": {"level": 2}}')) {
      expect(g.done).toBe(false);
      g.advance(b); // token b is the byte b
    }
    expect(g.done).toBe(false);
    expect(g.allowed()![id(']')]).toBe(1);
    expect(g.allowed()![id('}')]).toBe(0);
    g.advance(id(']'));
    expect(g.done).toBe(true);
    // A bracket then a number is text; so is a bracket with more white space than a document may hold.
    const list = new TextOrJsonGuide(several, vocab, ['{', '[{']);
    list.advance(id('[1'));
    expect(list.state).toBe('text');
    const wide = new TextOrJsonGuide(several, vocab, ['{', '[{']);
    wide.advance(id('['));
    for (let i = 0; i < 9; i++) wide.advance(id('  '));
    expect(wide.state).toBe('text');
    expect(() => new TextOrJsonGuide(several, vocab, ['{', '[{']).advance(id('{x'))).toThrow(/does not take/);
  });

  it('on random walks, a reply that opens a call is a call, and any other is free text', () => {
    const counts = { call: 0, text: 0 };
    for (let seed = 1; seed <= 150; seed++) {
      const rng = new Rng(seed);
      const arrays = seed % 3 !== 0;
      const g = new TextOrJsonGuide(arrays ? several : one, vocab, arrays ? ['{', '[{'] : ['{']);
      let text = '';
      for (let step = 0; step < 300 && !g.done; step++) {
        const mask = g.allowed();
        // Openers are likelier than the rest of the vocabulary, so that both kinds of reply are walked.
        const ids = [...vocab.keys()].filter((t) => t > 0 && (mask === null || mask[t]));
        const openers = ids.filter((t) => /^\s*[[{]/.test(dec(vocab[t]!)));
        const pool = text.trim() === '' && openers.length > 0 && rng.uniform() < 0.7 ? openers : ids;
        const t = pool[Math.floor(rng.uniform() * pool.length)];
        g.advance(t);
        text += dec(vocab[t]!);
        if (g.state === 'text') break;
      }
      if (opens(text, arrays)) {
        expect(g.done, `seed ${seed}: ${JSON.stringify(text)}`).toBe(true);
        expect(isCall(JSON.parse(text)), text).toBe(true);
        counts.call++;
      } else {
        expect(g.state, text).toBe('text');
        counts.text++;
      }
    }
    expect(counts.call).toBeGreaterThan(20);
    expect(counts.text).toBeGreaterThan(20);
  });

  it('guides a Sequence: the model\'s favourite words are free, and a reply it opens with a brace becomes a call', () => {
    const all = ['<eos>', 'Hi', '{', '{x', '"zoom"', ':', '{"level":', '2', '7', '}', ' '];
    const tok = piecesTokenizer(all.slice(1));
    const run = (prefer: string[]) => {
      const seq = new Sequence(0, { prompt: [1], maxTokens: 12, guide: { type: 'text_or_json', schema: one, openers: ['{'] }, sampling: { temperature: 0 } }, { tokenizer: tok, eosIds: [0], vocabSize: tok.vocabSize });
      // The model ranks the pieces by `prefer`, first the likeliest; the rest well below.
      const logits = Float32Array.from(all, (p) => (prefer.includes(p) ? 10 - prefer.indexOf(p) : -10));
      while (!seq.finished) seq.next(logits);
      return { text: seq.result().text, finish: seq.finishReason };
    };
    // "{x" would open a document the schema refuses, so the reply begins with a word; then it is free
    // text, and "{x" is the model's to write (to maxTokens: the end token ranks below).
    expect(run(['{x', 'Hi', '<eos>'])).toEqual({ text: `Hi${'{x'.repeat(11)}`, finish: 'length' });
    // A brace first: the call the schema allows, whatever the model prefers ("{x" and '{"level":' do
    // not open a call of zoom, "7" is past its maximum).
    expect(run(['{x', '{"level":', '{', '7', '"zoom"', ':', '}', '2'])).toEqual({ text: '{"zoom":{"level":2}}', finish: 'stop' });
  });
});
