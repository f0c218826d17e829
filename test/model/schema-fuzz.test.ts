/**
 * Random schemas of the supported subset, each walked through its guide's masks with random tokens:
 * no walk may get stuck (a state with no token allowed), and every document finished must be valid
 * under its schema as SchemaChecker reads it (a check of parsed values, apart from the byte automaton).
 * These walks found four bugs (an empty range's fractions, an object allowing no property yet needing
 * one, an optional property written past the room maxProperties left the required ones, numbers
 * parsing to Infinity); the seeds are fixed, so a failure here reproduces.
 */
import { describe, expect, it } from 'vitest';
import { FORMATS, SchemaError, compileJsonSchema } from '../../src/model/json-schema.js';
import { SchemaChecker } from '../../src/model/schema-check.js';
import { SchemaGuide } from '../../src/model/schema-guide.js';
import { TextOrJsonGuide } from '../../src/model/text-or-json-guide.js';
import { Rng } from '../../src/util/rng.js';

const enc = (s: string) => new TextEncoder().encode(s);
/** Every ASCII byte a token, and some longer tokens that cross the grammar's boundaries. */
const MULTI = ['{"', '":', '", "', '"}', '}}', '[1', ', ', 'true', 'null', ' {', '\n  ', '1.5e', '-0', 'é', '\\u00', 'ab"', '"]}', '0.', '12', 'ca', 'do'];
const vocab: Array<Uint8Array | null> = [null, ...Array.from({ length: 126 }, (_, i) => Uint8Array.of(i + 1)), ...MULTI.map(enc)];
const CLOSERS = [0x7d, 0x5d, 0x22, 0x2c];

/** A random schema of the subset, nested at most three deep. */
function randomSchema(rng: Rng, depth: number): unknown {
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rng.uniform() * xs.length)];
  const int = (a: number, b: number) => a + Math.floor(rng.uniform() * (b - a + 1));
  const chance = (p: number) => rng.uniform() < p;
  const sub = () => randomSchema(rng, depth + 1);
  const leaves = ['string', 'number', 'integer', 'enum', 'const', 'boolean', 'null'];
  switch (pick(depth > 2 ? leaves : [...leaves, 'object', 'array', 'anyOf', 'allOf', 'ref', 'tagged'])) {
    case 'object': {
      const properties: Record<string, unknown> = {};
      for (let i = int(0, 3); i > 0; i--) properties[pick(['a', 'b', 'ca', 'do', 'x y', 'é'])] = sub();
      const names = Object.keys(properties);
      const s: Record<string, unknown> = { type: 'object', properties, required: names.filter(() => chance(0.5)) };
      if (names.length === 0 && chance(0.5)) s.additionalProperties = chance(0.5) ? false : sub();
      if (names.length === 0 && s.additionalProperties === undefined && chance(0.15)) s.patternProperties = { [pick(['[a-c]+', 'x.?'])]: sub() };
      else if (chance(0.25)) s.propertyNames = pick([{ pattern: '[a-c]+' }, { maxLength: 2 }, { minLength: 2, pattern: '[a-z ]*' }, { enum: ['a', 'ca', 'x y', 'q'] }, { format: 'date' }]);
      if (chance(0.2)) s.maxProperties = int((s.required as string[]).length, 3);
      if (chance(0.2)) s.minProperties = int(0, 2);
      return s;
    }
    case 'array': {
      const s: Record<string, unknown> = { type: 'array' };
      if (chance(0.3)) Object.assign(s, { prefixItems: [sub(), sub()], items: chance(0.5) ? false : sub() });
      else s.items = sub();
      if (chance(0.4)) s.minItems = int(0, 2);
      if (chance(0.4)) s.maxItems = int((s.minItems as number | undefined) ?? 0, 3);
      if (chance(0.2)) Object.assign(s, { prefixItems: undefined, items: pick([{ enum: [1, 12, 'a', true, null].slice(0, int(1, 5)) }, { type: 'string' }, { type: 'integer', minimum: -1, maximum: int(0, 12) }]), uniqueItems: true });
      return s;
    }
    case 'string': {
      const s: Record<string, unknown> = { type: 'string' };
      if (chance(0.4)) s.minLength = int(0, 3);
      if (chance(0.4)) s.maxLength = int((s.minLength as number | undefined) ?? 0, 6);
      if (chance(0.3)) s.pattern = pick(['[a-c]+', 'x(y|zz)*', '\\d{2,4}', 'é?a', '[^"]{1,3}']);
      else if (chance(0.2)) s.format = pick(Object.keys(FORMATS));
      return s;
    }
    case 'number':
    case 'integer': {
      const s: Record<string, unknown> = { type: pick(['number', 'integer']) };
      if (chance(0.5)) s.minimum = pick([-3, 0, 0.5, 2, 10]);
      if (chance(0.5)) s.maximum = pick([-1, 1, 2.5, 7, 100]);
      if (chance(0.3)) s.exclusiveMinimum = pick([-2, 0, 1.5]);
      if (chance(0.3)) s.multipleOf = pick([0.5, 3, 0.25, 7, 0.1]);
      if (chance(0.15)) s.nullable = true;
      return s;
    }
    case 'enum':
      return {
        enum: Array.from({ length: int(1, 4) }, () => pick([1, 2.5, 'a', 'bb', null, true, { a: 1 }, [1, 'x'], 'é'])),
        ...(chance(0.3) ? { type: pick(['string', 'integer', 'number']) } : {}),
        ...(chance(0.3) ? { maxLength: 1 } : {}),
        ...(chance(0.3) ? { maximum: 2 } : {}),
      };
    case 'const':
      return { const: pick([1, 'a', null, { k: [1, 2] }, 'ab"c']) };
    case 'boolean':
      return { type: 'boolean' };
    case 'null':
      return { type: 'null' };
    case 'anyOf':
      return { anyOf: Array.from({ length: int(2, 3) }, sub) };
    case 'allOf': {
      const parts = [{ minimum: 1 }, { maxLength: 2 }, { type: 'object', properties: { a: { type: 'integer' } } }, { required: ['a'], properties: { a: true } }, { multipleOf: 2 }, { enum: [1, 2, 'a'] }, { items: { type: 'integer' } }];
      return { allOf: Array.from({ length: int(2, 3) }, () => (chance(0.5) ? sub() : pick(parts))) };
    }
    case 'ref':
      return { $ref: '#/$defs/d' };
    default:
      return { oneOf: [{ type: 'object', properties: { t: { const: 'x' }, v: sub() }, required: ['t'] }, { type: 'object', properties: { t: { const: 'y' } }, required: ['t'] }] };
  }
}

describe('random schemas', () => {
  it('every walk through a random schema\'s guide goes on to its end, and every document it finishes is valid under the schema', () => {
    let compiled = 0;
    let refused = 0;
    let checked = 0;
    for (let seed = 1; seed <= 400; seed++) {
      const rng = new Rng(seed);
      const root: Record<string, unknown> = rng.uniform() < 0.8 ? { type: 'object', properties: { p: randomSchema(rng, 0), q: randomSchema(rng, 1) }, required: rng.uniform() < 0.5 ? ['p'] : [] } : { type: 'array', items: randomSchema(rng, 0), maxItems: 3 };
      root.$defs = { d: randomSchema(rng, 2) };
      let schema;
      try {
        schema = compileJsonSchema(root);
        compiled++;
      } catch (e) {
        if (!(e instanceof SchemaError)) throw e;
        refused++;
        continue;
      }
      const checker = new SchemaChecker((ref) => (root.$defs as Record<string, unknown>)[(ref as string).slice('#/$defs/'.length)], FORMATS);
      for (let w = 0; w < 10; w++) {
        const walk = new Rng(seed * 1000 + w);
        const g = new SchemaGuide(schema, vocab);
        const out: number[] = [];
        for (let step = 0; step < 300 && !g.done; step++) {
          const mask = g.allowed();
          const ids = [...mask.keys()].filter((id) => mask[id]);
          expect(ids.length, `seed ${seed} walk ${w} stuck after ${JSON.stringify(new TextDecoder().decode(Uint8Array.from(out)))}`).toBeGreaterThan(0);
          const closers = ids.filter((id) => CLOSERS.includes(vocab[id]![0]));
          const pool = closers.length > 0 && walk.uniform() < step / 60 ? closers : ids;
          const id = pool[Math.floor(walk.uniform() * pool.length)];
          g.advance(id);
          out.push(...vocab[id]!);
        }
        if (!g.done) continue;
        const text = new TextDecoder().decode(Uint8Array.from(out));
        expect(checker.fits(JSON.parse(text), root, ''), `seed ${seed}: ${text} under ${JSON.stringify(root)}`).toBe(true);
        checked++;
      }
    }
    expect(compiled).toBeGreaterThan(250);
    expect(refused).toBeGreaterThan(50);
    expect(checked).toBeGreaterThan(2500);
  });

  it('a free reply that may open a document (tool calls under tool_choice auto): every walk that opens one goes on to its end and is valid, every other is text that opens none', () => {
    const counts = { documents: 0, texts: 0 };
    const openers = ['{', '[{'];
    for (let seed = 1; seed <= 150; seed++) {
      const rng = new Rng(seed);
      const root: Record<string, unknown> = rng.uniform() < 0.6 ? { type: 'object', properties: { p: randomSchema(rng, 0) }, required: ['p'] } : { type: 'array', items: randomSchema(rng, 0), minItems: 1, maxItems: 2 };
      let schema;
      try {
        schema = compileJsonSchema(root);
      } catch (e) {
        if (!(e instanceof SchemaError)) throw e;
        continue;
      }
      const checker = new SchemaChecker(() => undefined, FORMATS);
      for (let w = 0; w < 6; w++) {
        const walk = new Rng(seed * 1000 + w);
        const g = new TextOrJsonGuide(schema, vocab, openers);
        const out: number[] = [];
        for (let step = 0; step < 300 && !g.done && g.state !== 'text'; step++) {
          const mask = g.allowed();
          const ids = [...vocab.keys()].filter((id) => id > 0 && (mask === null || mask[id]));
          expect(ids.length, `seed ${seed} walk ${w} stuck`).toBeGreaterThan(0);
          // While undecided, an opening bracket or brace is likelier, so that documents are walked too.
          const opening = g.state === 'lead' ? ids.filter((id) => vocab[id]![0] === 0x7b || vocab[id]![0] === 0x5b) : [];
          const closers = ids.filter((id) => CLOSERS.includes(vocab[id]![0]));
          const pool = opening.length > 0 && walk.uniform() < 0.9 ? opening : closers.length > 0 && walk.uniform() < step / 60 ? closers : ids;
          const id = pool[Math.floor(walk.uniform() * pool.length)];
          g.advance(id);
          out.push(...vocab[id]!);
        }
        const text = new TextDecoder().decode(Uint8Array.from(out));
        const solid = text.replace(/\s/g, '');
        if (g.state === 'text') {
          expect(openers.some((o) => solid.startsWith(o)), `seed ${seed}: ${JSON.stringify(text)}`).toBe(false);
          counts.texts++;
        } else if (g.done) {
          expect(checker.fits(JSON.parse(text), root, ''), `seed ${seed}: ${text} under ${JSON.stringify(root)}`).toBe(true);
          counts.documents++;
        }
      }
    }
    expect(counts.documents).toBeGreaterThan(120);
    expect(counts.texts).toBeGreaterThan(300);
  });
});
