/**
 * What a guided reply's first visit to a state costs: running the default model's vocabulary through
 * the JSON automaton (src/model/schema-guide.ts) to build that state's mask, for JSON mode and for a
 * schema, at states of different kinds: before the document, after '{' (a key or '}': few tokens
 * allowed), inside a string (most allowed), inside a bounded string (its length counted), and after
 * a key of a schema (only ':' continues). Later visits to a state are a lookup (mask-cache.ts), so
 * this is paid once per state, per schema, per process. Milliseconds per mask, the median of
 * `--reps` runs of `--masks` masks each, as served (maskOf: tokens in byte order, those that begin
 * with a refused token's bytes refused unrun) and, interleaved in the same run, naively (every
 * token run), with the ratio. Then what a later visit costs (`allowed()` with the mask
 * cached: the state's key, the lookup and, in an object with free keys, the vocabulary's tokens with
 * a quote run again against the keys written; with two states of a union, both masks joined), in
 * microseconds. Last, what tool_choice auto's guide (text-or-json-guide.ts) costs a reply before it
 * decides: its undecided mask, built once per set of tools (each rep a new set, so a cold build),
 * beside the first mask of the calls' own schema guide, and a later visit.
 *
 *   npx tsx bench/guide-masks.ts [--reps 7] [--masks 100]
 *
 * Writes bench/results/guide-masks.json.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { guideVocabulary } from '../src/model/guide.js';
import { compileJsonSchema } from '../src/model/json-schema.js';
import { maskOf } from '../src/model/mask-cache.js';
import { SchemaGuide } from '../src/model/schema-guide.js';
import { TextOrJsonGuide } from '../src/model/text-or-json-guide.js';
import { loadTokenizer } from '../src/model/tokenizer.js';
import { numberArg } from './args.js';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const REPS = numberArg('reps', 7);
const MASKS = numberArg('masks', 100);

const tokenizer = loadTokenizer(join(root, 'models', 'default'));
const vocab = guideVocabulary(tokenizer, tokenizer.vocabSize);
const dish = compileJsonSchema({
  type: 'object',
  properties: { dish: { type: 'string', maxLength: 40 }, vegetarian: { type: 'boolean' }, course: { enum: ['starter', 'main', 'dessert'] } },
  required: ['dish', 'vegetarian', 'course'],
});
const CASES = [
  { name: 'json object: before the document', guide: () => SchemaGuide.jsonObject(vocab), prefix: '' },
  { name: "json object: after '{'", guide: () => SchemaGuide.jsonObject(vocab), prefix: '{' },
  { name: 'json object: in a string', guide: () => SchemaGuide.jsonObject(vocab), prefix: '{"a": "xy' },
  { name: 'schema: in a bounded string', guide: () => new SchemaGuide(dish, vocab), prefix: '{"dish": "ab' },
  { name: 'schema: after a key', guide: () => new SchemaGuide(dish, vocab), prefix: '{"dish"' },
];

/** A guide advanced through `prefix`, one single-byte token per byte. */
function at(make: () => SchemaGuide, prefix: string): SchemaGuide {
  const g = make();
  for (const b of new TextEncoder().encode(prefix)) g.advance(vocab.findIndex((v) => v !== null && v.length === 1 && v[0] === b));
  return g;
}

/** The mask as allowed() builds it on a miss (mask-cache.ts). */
const buildMask = (g: SchemaGuide): Uint8Array => maskOf(vocab, (bytes) => g.accepts(bytes));
/** The baseline: every token's bytes run from the state. */
function naiveMask(g: SchemaGuide): Uint8Array {
  const mask = new Uint8Array(vocab.length);
  for (let id = 0; id < vocab.length; id++) {
    const bytes = vocab[id];
    if (bytes && g.accepts(bytes)) mask[id] = 1;
  }
  return mask;
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const results = CASES.map(({ name, guide, prefix }) => {
  const g = at(guide, prefix);
  const mask = buildMask(g);
  if (mask.some((m, i) => m !== naiveMask(g)[i])) throw new Error(`${name}: the mask differs from the naive one`);
  const allowed = mask.reduce((a, b) => a + b, 0);
  const perMask: number[] = [];
  const perNaive: number[] = [];
  const time = (build: (g: SchemaGuide) => Uint8Array): number => {
    const t0 = performance.now();
    for (let i = 0; i < MASKS; i++) build(g);
    return (performance.now() - t0) / MASKS;
  };
  for (let r = 0; r < REPS; r++) {
    perMask.push(time(buildMask));
    perNaive.push(time(naiveMask));
  }
  const ms = Number(median(perMask).toFixed(3));
  const naiveMs = Number(median(perNaive).toFixed(3));
  const speedup = Number((median(perNaive) / median(perMask)).toFixed(2));
  process.stderr.write(`${name.padEnd(34)} ${ms.toFixed(3)} ms per mask, naive ${naiveMs.toFixed(3)} (${speedup}x; ${allowed} of ${vocab.length} tokens allowed)\n`);
  return { state: name, msPerMask: ms, naiveMsPerMask: naiveMs, speedup, allowed, vocabulary: vocab.length };
});

// A union of two objects alike up to their tag's value: inside "cat" both are still possible (two states).
const pets = compileJsonSchema({
  anyOf: [
    { type: 'object', properties: { kind: { const: 'cat' }, lives: { type: 'integer' } }, required: ['kind', 'lives'] },
    { type: 'object', properties: { kind: { const: 'cattle dog' }, good: { type: 'boolean' } }, required: ['kind'] },
  ],
});
// A union of 40 event types alike up to their tag's value: while the tag is written, 40 states.
const events = compileJsonSchema({
  anyOf: Array.from({ length: 40 }, (_, i) => ({ type: 'object', properties: { type: { const: `e${i}` }, [`f${i}`]: { type: 'integer' } }, required: ['type', `f${i}`] })),
});
const VISITS = [
  { name: 'json object: in a key, keys written', guide: () => SchemaGuide.jsonObject(vocab), prefix: '{"a": 1, "b' },
  { name: 'json object: in a value, keys written', guide: () => SchemaGuide.jsonObject(vocab), prefix: '{"a": 1, "b": "xy' },
  { name: 'schema: in a bounded string', guide: () => new SchemaGuide(dish, vocab), prefix: '{"dish": "ab' },
  { name: 'union: two states (in "cat")', guide: () => new SchemaGuide(pets, vocab), prefix: '{"kind": "cat' },
  { name: 'union: 40 states (in a tag)', guide: () => new SchemaGuide(events, vocab), prefix: '{"type": "e' },
];
const quoteTokens = vocab.filter((v) => v?.includes(0x22)).length;
// Warm the allowed() path up (its first call compiles it), so that each first visit times its masks.
at(() => SchemaGuide.jsonObject(vocab), '{"w": [').allowed();
const visits = VISITS.map(({ name, guide, prefix }) => {
  const g = at(guide, prefix);
  const t0 = performance.now();
  g.allowed();
  const firstMs = Number((performance.now() - t0).toFixed(2));
  const perVisit: number[] = [];
  for (let r = 0; r < REPS; r++) {
    const t0 = performance.now();
    for (let i = 0; i < MASKS * 100; i++) g.allowed();
    perVisit.push(((performance.now() - t0) / (MASKS * 100)) * 1000);
  }
  const us = Number(median(perVisit).toFixed(2));
  process.stderr.write(`${name.padEnd(38)} ${us.toFixed(2)} µs per later visit, ${firstMs} ms the first, one shot (${g.stateCount} states; ${quoteTokens} tokens with a quote)\n`);
  return { state: name, states: g.stateCount, firstMs, usPerVisit: us, quoteTokens };
});

// A bounded string written whole: each code point written is a state of its own (its count), so a
// reply writing 40 characters of "dish" (maxLength 40) meets 40 new masks. Served, they are built
// from the vocabulary's string tables (schema-guide.ts boundedStringMask); naively, each runs the
// vocabulary through the automaton. Each rep starts from a fresh copy of the vocabulary, so that its
// caches and tables are built afresh and timed too.
const STRING_CHARS = 40;
function writeString(make: (v: ReadonlyArray<Uint8Array | null>) => SchemaGuide, build: (g: SchemaGuide, v: ReadonlyArray<Uint8Array | null>) => Uint8Array): number {
  const v = vocab.slice();
  const g = make(v);
  const byte = (b: number) => v.findIndex((t) => t !== null && t.length === 1 && t[0] === b);
  for (const b of new TextEncoder().encode('{"dish": "')) g.advance(byte(b));
  const a = byte(0x61);
  const t0 = performance.now();
  for (let i = 0; i < STRING_CHARS; i++) {
    if (!build(g, v)[a]) throw new Error('"a" refused inside the string');
    g.advance(a);
  }
  return performance.now() - t0;
}
const served: number[] = [];
const naive: number[] = [];
for (let r = 0; r < REPS; r++) {
  served.push(writeString((v) => new SchemaGuide(dish, v), (g) => g.allowed()));
  naive.push(
    writeString(
      (v) => new SchemaGuide(dish, v),
      (g, v) => {
        const mask = new Uint8Array(v.length);
        for (let id = 0; id < v.length; id++) if (v[id] && g.accepts(v[id]!)) mask[id] = 1;
        return mask;
      },
    ),
  );
}
const boundedString = {
  chars: STRING_CHARS,
  msServed: Number(median(served).toFixed(2)),
  msNaive: Number(median(naive).toFixed(2)),
  speedup: Number((median(naive) / median(served)).toFixed(1)),
};
process.stderr.write(`a bounded string, ${STRING_CHARS} characters' first masks: ${boundedString.msServed} ms from the string tables, ${boundedString.msNaive} ms running the vocabulary (${boundedString.speedup}x)\n`);

// tool_choice auto: two tools' calls (one, or an array of them), each rep a schema of its own (a
// description carries the rep), so that its masks are built cold.
const calls = (rep: number) => {
  const call = {
    type: 'object',
    properties: {
      get_weather: { type: 'object', description: `rep ${rep}`, properties: { city: { type: 'string' }, unit: { enum: ['c', 'f'] } }, required: ['city'] },
      get_time: { type: 'object', properties: {}, additionalProperties: false },
    },
    minProperties: 1,
    maxProperties: 1,
    additionalProperties: false,
  };
  return compileJsonSchema({ $defs: { call }, anyOf: [{ $ref: '#/$defs/call' }, { type: 'array', items: { $ref: '#/$defs/call' }, minItems: 1, maxItems: 16 }] });
};
const undecided: number[] = [];
const callsFirst: number[] = [];
const undecidedVisit: number[] = [];
for (let r = 0; r < REPS; r++) {
  const schema = calls(r);
  let t0 = performance.now();
  const g = new TextOrJsonGuide(schema, vocab, ['{', '[{']);
  g.allowed();
  undecided.push(performance.now() - t0);
  t0 = performance.now();
  new SchemaGuide(schema, vocab).allowed();
  callsFirst.push(performance.now() - t0);
  t0 = performance.now();
  for (let i = 0; i < MASKS * 100; i++) new TextOrJsonGuide(schema, vocab, ['{', '[{']).allowed();
  undecidedVisit.push(((performance.now() - t0) / (MASKS * 100)) * 1000);
}
const autoTools = {
  msUndecidedFirst: Number(median(undecided).toFixed(2)),
  msCallsFirst: Number(median(callsFirst).toFixed(2)),
  ratio: Number((median(undecided) / median(callsFirst)).toFixed(2)),
  usUndecidedVisit: Number(median(undecidedVisit).toFixed(2)),
};
process.stderr.write(`tool_choice auto, before the reply decides: ${autoTools.msUndecidedFirst} ms the first mask of a set of tools (${autoTools.ratio}x the calls' own first mask, ${autoTools.msCallsFirst} ms), ${autoTools.usUndecidedVisit} µs a later visit\n`);

const out = join(root, 'bench', 'results');
mkdirSync(out, { recursive: true });
writeFileSync(join(out, 'guide-masks.json'), `${JSON.stringify({ date: new Date().toISOString(), model: 'models/default', reps: REPS, masksPerRep: MASKS, results, visits, boundedString, autoTools }, null, 2)}\n`);
