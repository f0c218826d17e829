/**
 * What guided_grammar costs a reply, on the default model's vocabulary: a GBNF grammar of JSON text
 * (docs/grammars/json.gbnf, run by src/model/grammar-guide.ts as sets of parse stacks) against JSON
 * mode (response_format json_object, src/model/schema-guide.ts's own automaton), which allows the
 * same replies but for white space, interleaved in one run; and Lark's JSON example
 * (docs/grammars/json.lark, translated to GBNF by src/model/lark.ts), as vLLM users write it.
 *
 * - First visit of a state (a mask built: the vocabulary run through the guide): each rep compiles
 *   the grammar afresh (a new text), so its masks and byte steps are cold; JSON mode's masks are
 *   built by maskOf directly. Milliseconds, the median of `--reps`.
 * - A whole reply, token by token (allowed() then advance(), the serving loop's calls): a JSON
 *   document of nested objects, arrays, strings and numbers written with the tokenizer's own tokens,
 *   cold (a fresh grammar) and warm (the same grammar again: every mask cached). Microseconds per token.
 *
 *   npx tsx bench/grammar-masks.ts [--reps 21]
 *
 * Writes bench/results/grammar-masks.json.
 */
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { compileGrammar } from '../src/model/grammar.js';
import { compileGuideGrammar } from '../src/model/lark.js';
import { GrammarGuide } from '../src/model/grammar-guide.js';
import { type Guide, guideVocabulary } from '../src/model/guide.js';
import { maskOf } from '../src/model/mask-cache.js';
import { SchemaGuide } from '../src/model/schema-guide.js';
import { loadTokenizer } from '../src/model/tokenizer.js';
import { numberArg } from './args.js';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const REPS = numberArg('reps', 21);

const tokenizer = loadTokenizer(join(root, 'models', 'default'));
const vocab = guideVocabulary(tokenizer, tokenizer.vocabSize);
const END = tokenizer.eosId;
const JSON_GBNF = readFileSync(join(root, 'docs', 'grammars', 'json.gbnf'), 'utf8');
let fresh = 0;
/** The JSON grammar under a text never compiled before: its masks and steps start cold. */
const coldGrammar = () => compileGrammar(`${JSON_GBNF}\n# ${++fresh}`);
const JSON_LARK = readFileSync(join(root, 'docs', 'grammars', 'json.lark'), 'utf8');
/** Lark's JSON grammar, translated and compiled afresh (a rule of its own added: a comment would translate to the same GBNF, compiled once). */
const coldLark = () => compileGuideGrammar(`${JSON_LARK}\nunused_${++fresh}: "x"`);

const byte = (b: number) => vocab.findIndex((v) => v !== null && v.length === 1 && v[0] === b);
/** A guide advanced through `prefix`, one single-byte token per byte. */
function at<G extends Guide>(g: G, prefix: string): G {
  for (const b of new TextEncoder().encode(prefix)) g.advance(byte(b));
  return g;
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const STATES = [
  { name: 'before the document', prefix: '' },
  { name: "after '{'", prefix: '{' },
  { name: 'in a string', prefix: '{"a": "xy' },
  { name: 'in a number', prefix: '{"a": [12' },
  { name: 'nested four deep, after a value', prefix: '{"a": [{"b": [true' },
];

// Warm both code paths up (their first calls compile them), so that the runs below time the masks.
for (const { prefix } of STATES) {
  at(new GrammarGuide(coldGrammar(), vocab, [END]), prefix).allowed();
  at(new GrammarGuide(coldLark(), vocab, [END]), prefix).allowed();
  const s = at(SchemaGuide.jsonObject(vocab), prefix);
  maskOf(vocab, (bytes) => s.accepts(bytes));
}
const states = STATES.map(({ name, prefix }) => {
  const grammarMs: number[] = [];
  const jsonMs: number[] = [];
  const larkMs: number[] = [];
  let allowed = 0;
  for (let r = 0; r < REPS; r++) {
    const g = at(new GrammarGuide(coldGrammar(), vocab, [END]), prefix);
    let t0 = performance.now();
    const mask = g.allowed();
    grammarMs.push(performance.now() - t0);
    const s = at(SchemaGuide.jsonObject(vocab), prefix);
    t0 = performance.now();
    const jsonMask = maskOf(vocab, (bytes) => s.accepts(bytes));
    jsonMs.push(performance.now() - t0);
    const l = at(new GrammarGuide(coldLark(), vocab, [END]), prefix);
    t0 = performance.now();
    l.allowed();
    larkMs.push(performance.now() - t0);
    allowed = mask.reduce((a, b) => a + b, 0) - (mask[END] ?? 0);
    // The grammar allows white space JSON mode bounds; elsewhere the two agree.
    if (prefix !== '' && !prefix.endsWith('{') && mask.some((m, id) => id !== END && m !== jsonMask[id])) throw new Error(`${name}: the grammar's mask differs from JSON mode's`);
  }
  const out = { state: name, grammarMs: Number(median(grammarMs).toFixed(3)), jsonModeMs: Number(median(jsonMs).toFixed(3)), ratio: Number((median(grammarMs) / median(jsonMs)).toFixed(2)), larkMs: Number(median(larkMs).toFixed(3)), larkToGrammar: Number((median(larkMs) / median(grammarMs)).toFixed(2)), allowed };
  process.stderr.write(`${name.padEnd(34)} grammar ${out.grammarMs.toFixed(3)} ms, JSON mode ${out.jsonModeMs.toFixed(3)} ms a first mask (${out.ratio}x; ${allowed} of ${vocab.length} tokens allowed); Lark's JSON ${out.larkMs.toFixed(3)} ms (${out.larkToGrammar}x the grammar's)\n`);
  return out;
});

// A reply written with the tokenizer's own tokens, guide calls as the serving loop makes them.
const DOC = JSON.stringify({ name: 'Ada', tags: ['maths', 'engines', 'poetry'], born: 1815, notes: [{ year: 1843, on: 'the analytical engine', pages: 65.5 }, { year: null, ok: true }], nested: { a: { b: { c: [1, [2, [3]]] } } } }, null, 1);
const ids = tokenizer.encode(DOC);
function reply(make: () => Guide): number {
  const g = make();
  const t0 = performance.now();
  for (const id of ids) {
    if (!g.allowed()![id]) throw new Error(`token ${id} refused`);
    g.advance(id);
  }
  if (!g.done && !g.allowed()![END]) throw new Error('the end refused after the whole document');
  return ((performance.now() - t0) / ids.length) * 1000;
}
const cold: number[] = [];
const warm: number[] = [];
const jsonWarm: number[] = [];
const larkCold: number[] = [];
const larkWarm: number[] = [];
for (let r = 0; r < REPS; r++) {
  const grammar = coldGrammar();
  cold.push(reply(() => new GrammarGuide(grammar, vocab, [END])));
  warm.push(reply(() => new GrammarGuide(grammar, vocab, [END])));
  jsonWarm.push(reply(() => SchemaGuide.jsonObject(vocab)));
  const lark = coldLark();
  larkCold.push(reply(() => new GrammarGuide(lark, vocab, [END])));
  larkWarm.push(reply(() => new GrammarGuide(lark, vocab, [END])));
}
const replies = {
  tokens: ids.length,
  bytes: DOC.length,
  coldUsPerToken: Number(median(cold).toFixed(1)),
  warmUsPerToken: Number(median(warm).toFixed(2)),
  jsonModeWarmUsPerToken: Number(median(jsonWarm).toFixed(2)),
  larkColdUsPerToken: Number(median(larkCold).toFixed(1)),
  larkWarmUsPerToken: Number(median(larkWarm).toFixed(2)),
};
process.stderr.write(`a ${ids.length}-token JSON reply: grammar ${replies.coldUsPerToken} µs a token cold, ${replies.warmUsPerToken} warm; JSON mode warm ${replies.jsonModeWarmUsPerToken}; Lark's JSON ${replies.larkColdUsPerToken} cold, ${replies.larkWarmUsPerToken} warm\n`);

mkdirSync(join(root, 'bench', 'results'), { recursive: true });
writeFileSync(join(root, 'bench', 'results', 'grammar-masks.json'), `${JSON.stringify({ date: new Date().toISOString(), model: 'models/default', reps: REPS, grammar: 'docs/grammars/json.gbnf', lark: 'docs/grammars/json.lark', states, reply: replies }, null, 2)}\n`);
