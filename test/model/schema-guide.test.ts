import { isIP, isIPv4, isIPv6 } from 'node:net';
import { describe, expect, it } from 'vitest';
import { FORMATS, SchemaError, compileJsonSchema } from '../../src/model/json-schema.js';
import { MAX_EXPONENT_DIGITS, MAX_INTEGER_DIGITS, MAX_WHITESPACE, SchemaGuide } from '../../src/model/schema-guide.js';
import { Sequence } from '../../src/model/sequence.js';
import { piecesTokenizer } from './tokenizer-fixture.js';
import { Rng } from '../../src/util/rng.js';
import { isMultiple } from './exact-decimal.js';

const enc = (s: string) => new TextEncoder().encode(s);
/** Every byte a token of its own, then a few multi-byte tokens. */
const MULTI = ['{"', '":', '", "', '"}', '}}', '[1', ', ', 'true', 'null', ' {', '\n  ', '1.5e', '-0', 'é', '\\u00', 'ab"', '"]}'];
const vocab: Array<Uint8Array | null> = [null, ...Array.from({ length: 255 }, (_, i) => Uint8Array.of(i + 1)), ...MULTI.map(enc)];

/** Whether guide `g` takes `text` whole, byte by byte (advancing; token id b is the byte b), and ends done. */
function walkGuide(g: SchemaGuide, text: string): { accepted: number; done: boolean } {
  const bytes = enc(text);
  for (let i = 0; i < bytes.length; i++) {
    if (!g.accepts([bytes[i]])) return { accepted: i, done: false };
    g.advance(bytes[i]);
  }
  return { accepted: bytes.length, done: g.done };
}

/** Where and by which keyword compiling a schema refuses it: [path, keyword], or null when it compiles. */
function refusal(schema: unknown): [string, string] | null {
  try {
    compileJsonSchema(schema);
    return null;
  } catch (e) {
    if (e instanceof SchemaError) return [e.path, e.keyword];
    throw e;
  }
}

/** walkGuide through JSON mode's guide, and through a schema's. */
const walk = (text: string) => walkGuide(SchemaGuide.jsonObject(vocab), text);
const walkIn = (schema: unknown, text: string) => walkGuide(new SchemaGuide(compileJsonSchema(schema), vocab), text);

/**
 * The texts of 200 seeded walks through a guide's masks that finished within `steps` tokens, each
 * drawn uniformly among the allowed ones; tokens starting with a `closers` byte grow likelier as a
 * walk goes on (certain after `closeAfter` steps), so that walks end.
 */
function randomWalks(make: () => SchemaGuide, o: { steps: number; closers: number[]; closeAfter: number }): string[] {
  const texts: string[] = [];
  for (let seed = 1; seed <= 200; seed++) {
    const rng = new Rng(seed);
    const g = make();
    const out: number[] = [];
    for (let step = 0; step < o.steps && !g.done; step++) {
      const mask = g.allowed();
      const ids = [...mask.keys()].filter((id) => mask[id]);
      expect(ids.length).toBeGreaterThan(0);
      const closers = ids.filter((id) => o.closers.includes(vocab[id]![0]));
      const pool = closers.length > 0 && rng.uniform() < step / o.closeAfter ? closers : ids;
      const id = pool[Math.floor(rng.uniform() * pool.length)];
      g.advance(id);
      out.push(...vocab[id]!);
    }
    if (g.done) texts.push(new TextDecoder().decode(Uint8Array.from(out)));
  }
  return texts;
}

/** Keys written in a JSON text: strings followed by a colon (a scan of the text, independent of the guide). */
function keysWritten(text: string): number {
  let n = 0;
  for (let i = 0; i < text.length; i++) {
    if (text[i] !== '"') continue;
    for (i++; text[i] !== '"'; i++) if (text[i] === '\\') i++;
    let j = i + 1;
    while (/\s/.test(text[j] ?? '')) j++;
    if (text[j] === ':') n++;
  }
  return n;
}

/** Keys of a parsed document, every object's (a key written twice is there once). */
function keysParsed(v: unknown): number {
  if (v === null || typeof v !== 'object') return 0;
  const values = Array.isArray(v) ? v : Object.values(v);
  return (Array.isArray(v) ? 0 : values.length) + values.reduce((n: number, x) => n + keysParsed(x), 0);
}

describe('SchemaGuide of any JSON object (JSON mode)', () => {
  it('takes JSON object documents whole and is done exactly at their end', () => {
    for (const doc of [
      '{}',
      '{"a":1}',
      ' {"a": [1, -2.5e+3, 0.25, 0, -0, 1E9, true, false, null, {"b": "x\\n\\"\\u00e9\\/"}, []], "c": {}}',
      '{\n  "name": "Ann",\n  "age": 37\n}',
      '{"é": "ünïcode ✓"}',
    ]) {
      expect(JSON.parse(doc)).toBeTypeOf('object');
      expect(walk(doc), doc).toEqual({ accepted: enc(doc).length, done: true });
      expect(walk(doc.slice(0, -1)).done, doc).toBe(false);
    }
  });

  it('refuses the first byte that no JSON object document can continue with', () => {
    for (const [bad, at] of [
      ['[1]', 0],
      ['"x"', 0],
      ['{"a" 1}', 5],
      ['{"a":01}', 6],
      ['{"a":1.}', 7],
      ['{"a":1e}', 7],
      ['{"a":--1}', 6],
      ['{"a":tru3}', 8],
      ['{"a":"x\u0001"}', 7],
      ['{"a":"\\x"}', 7],
      ['{"a":"\\u12g4"}', 10],
      ['{,}', 1],
      ['{"a":1,}', 7],
      ['{"a":[1,]}', 8],
      ['{"a":1]', 6],
      ['{a:1}', 1],
      ['{} ', 2],
      ['{}}', 2],
    ] as const) {
      expect(walk(bad), bad).toEqual({ accepted: at, done: false });
    }
    // Whitespace between tokens is bounded: a run of at most MAX_WHITESPACE bytes with one line break.
    expect(walk('{\r\n  "a": 1\n}').done).toBe(true);
    expect(walk('{\n\n"a": 1}').accepted).toBe(2);
    expect(walk(`{${' '.repeat(MAX_WHITESPACE)}}`).done).toBe(true);
    expect(walk(`{${' '.repeat(MAX_WHITESPACE + 1)}}`).accepted).toBe(1 + MAX_WHITESPACE);
  });

  it('a number without bounds or multipleOf parses to the same finite double: at most 15 integer digits and 2 exponent digits, each count free to end', () => {
    const digits = '9'.repeat(MAX_INTEGER_DIGITS);
    for (const ok of [`{"a":${digits}}`, `{"a":-${digits}.123456789}`, `{"a":${digits}e99}`, '{"a":1E-99}', '{"a":0.5e+12}']) {
      expect(walk(ok), ok).toEqual({ accepted: ok.length, done: true });
      expect(Number.isFinite(JSON.parse(ok).a)).toBe(true);
    }
    expect(JSON.parse(`{"a":${digits}}`).a).toBe(Number(digits)); // exact: below 2^53
    expect(walk(`{"a":${digits}9}`)).toEqual({ accepted: 5 + MAX_INTEGER_DIGITS, done: false });
    expect(walk(`{"a":-${digits}9}`)).toEqual({ accepted: 6 + MAX_INTEGER_DIGITS, done: false });
    expect(walk('{"a":1e999}')).toEqual({ accepted: 5 + 1 + 1 + MAX_EXPONENT_DIGITS, done: false });
    // A multiple is capped alike, with or without a bound, and a digit is taken only where a multiple can still end within the cap.
    for (const a of [{ type: 'integer', multipleOf: 7 }, { type: 'integer', multipleOf: 7, minimum: -20 }, { type: 'number', multipleOf: 0.7 }]) {
      const seven = { type: 'object', properties: { a } };
      expect(walkIn(seven, `{"a":${'7'.repeat(MAX_INTEGER_DIGITS)}}`).done, JSON.stringify(a)).toBe(true);
      expect(walkIn(seven, `{"a":${'7'.repeat(MAX_INTEGER_DIGITS + 1)}}`).done, JSON.stringify(a)).toBe(false);
    }
    const last = new SchemaGuide(compileJsonSchema({ type: 'object', properties: { a: { type: 'integer', multipleOf: 7 } } }), vocab);
    const head = `1${'0'.repeat(MAX_INTEGER_DIGITS - 2)}`;
    for (const b of enc(`{"a":${head}`)) last.advance(b);
    // The last digit: only those that make a multiple (exact, by BigInt), and no ending before it (10^13 is none).
    expect([...'0123456789'].filter((d) => last.accepts(enc(d)))).toEqual([...'0123456789'].filter((d) => BigInt(head + d) % 7n === 0n));
    expect(last.accepts(enc('}'))).toBe(false);
    // A fraction is still there to end on where the multiple has places (0.7: one).
    const frac = new SchemaGuide(compileJsonSchema({ type: 'object', properties: { a: { type: 'number', multipleOf: 0.7 } } }), vocab);
    for (const b of enc(`{"a":${head}`)) frac.advance(b);
    expect([...'0123456789'].filter((d) => frac.accepts(enc(d))).length).toBe(10);
  });

  it('masks the vocabulary: a token is allowed exactly when all its bytes continue the document', () => {
    const g = SchemaGuide.jsonObject(vocab);
    for (const b of enc('{"key": "va')) g.advance(b);
    const mask = g.allowed();
    expect(mask[0]).toBe(0); // a token without bytes is never drawn
    vocab.forEach((bytes, id) => {
      if (bytes) expect(mask[id], `token ${id}`).toBe(g.accepts(bytes) ? 1 : 0);
    });
    const allowed = (s: string) => mask[vocab.findIndex((v) => v !== null && new TextDecoder().decode(v) === s)];
    expect([allowed('ab"'), allowed('"}'), allowed('"]}'), allowed('", "'), allowed('\\u00')]).toEqual([1, 1, 0, 1, 1]);
    expect(() => g.advance(vocab.findIndex((v) => v !== null && new TextDecoder().decode(v) === '"]}'))).toThrow(/does not continue/);
    // The mask depends on the state alone: another guide in the same state, reached by other tokens, gets the same one.
    const other = SchemaGuide.jsonObject(vocab);
    for (const t of ['{"', 'k', 'e', 'y', '":', ' ', '"', 'v', 'a']) other.advance(vocab.findIndex((v) => v !== null && new TextDecoder().decode(v) === t));
    expect(other.allowed()).toBe(mask);
  });

  it('random walks through the mask only ever write JSON: every finished one parses as an object, no object repeating a key', () => {
    const texts = randomWalks(() => SchemaGuide.jsonObject(vocab), { steps: 400, closers: [0x7d, 0x5d, 0x22], closeAfter: 100 });
    expect(texts.length).toBeGreaterThan(100);
    let keys = 0;
    for (const text of texts) {
      const parsed: unknown = JSON.parse(text);
      expect(parsed !== null && typeof parsed === 'object' && !Array.isArray(parsed)).toBe(true);
      expect(keysWritten(text), text).toBe(keysParsed(parsed));
      keys += keysParsed(parsed);
    }
    expect(keys).toBeGreaterThan(200);
  });

  it('an object never repeats a key: its closing quote is refused, by the mask too, and keys are spelled one way only', () => {
    for (const doc of ['{"a":{"a":1},"b":{"a":2}}', '{"a":1,"ab":2,"b":3}', '{"a\\"b":1,"a\\\\b":2,"\\n\\t":3}', '{"a":"a","b":["a"]}']) {
      expect(walk(doc), doc).toEqual({ accepted: enc(doc).length, done: true });
    }
    for (const [bad, at] of [
      ['{"a":1,"a":2}', 9],
      ['{"a":1,"b":{"a":2},"b":3}', 21],
      // The same characters are always the same bytes: no \u escape, no \/ in a key (in a value they stay).
      ['{"\\u0061":1}', 3],
      ['{"\\/":1}', 3],
    ] as const) {
      expect(walk(bad), bad).toEqual({ accepted: at, done: false });
    }
    const id = (s: string) => vocab.findIndex((v) => v !== null && new TextDecoder().decode(v) === s);
    const at = (text: string) => {
      const g = SchemaGuide.jsonObject(vocab);
      for (const b of enc(text)) g.advance(b);
      return g;
    };
    // After {"ab":1,"a: the quote closing "a" again is refused, alone or in a token; "ab" may still grow.
    const g = at('{"a":1,"a');
    const mask = g.allowed();
    expect([mask[0x22], mask[id('":')], mask[id('"}')], mask[id('", "')], mask[0x62]]).toEqual([0, 0, 0, 0, 1]);
    vocab.forEach((bytes, i) => {
      if (bytes) expect(mask[i], `token ${i}`).toBe(g.accepts(bytes) ? 1 : 0);
    });
    // A token that closes a key written before is refused; in an object without it, the same state's token is not.
    expect(at('{"ab":1,"').allowed()[id('ab"')]).toBe(0);
    expect(at('{"xy":1,"').allowed()[id('ab"')]).toBe(1);
    expect(at('{"a":1,"').allowed()[id('ab"')]).toBe(1);
  });
});

describe('a Sequence guided to JSON', () => {
  const tokenizerOf = piecesTokenizer;

  it('draws only tokens that continue the document, and ends when the object closes; the model\'s favourite is taken where allowed', () => {
    const tok = tokenizerOf(['a', '{', '"', 'k', ':', '1', '}', '{"k":1}']);
    const seq = new Sequence(0, { prompt: [1], maxTokens: 20, guide: { type: 'json_object' }, sampling: { temperature: 0 } }, { tokenizer: tok, eosIds: [0], vocabSize: tok.vocabSize });
    // The model always prefers 'a', then EOS, then the whole document in one token: the document wins.
    const logits = Float32Array.from([5, 9, 0, 0, 0, 0, 0, 0, 1]);
    const ev = seq.next(logits);
    expect(ev.token).toBe(8);
    expect(seq.finishReason).toBe('stop');
    expect(seq.result().text).toBe('{"k":1}');
  });

  it('a vocabulary that cannot continue the document lets the end tokens end it', () => {
    const tok = tokenizerOf(['a', 'b']);
    const seq = new Sequence(0, { prompt: [1], maxTokens: 5, guide: { type: 'json_object' }, sampling: { temperature: 0 } }, { tokenizer: tok, eosIds: [0], vocabSize: tok.vocabSize });
    expect(seq.next(Float32Array.from([-3, 5, 4])).token).toBe(0);
    expect(seq.finishReason).toBe('eos');
  });
});

/** A person with a pet (a recursive definition): every keyword of the supported subset. */
const PERSON = {
  type: 'object',
  properties: {
    name: { type: 'string', minLength: 1, maxLength: 8 },
    age: { type: 'integer' },
    tags: { type: 'array', items: { enum: ['a', 'b', 12] }, minItems: 1, maxItems: 3 },
    nick: { type: ['string', 'null'] },
    pet: { $ref: '#/$defs/pet' },
    score: { type: 'number' },
    ok: { type: 'boolean' },
    extra: { type: 'object', additionalProperties: { type: 'integer' } },
    code: { type: 'string', pattern: '^[A-Z]{2}-\\d{1,3}(x|yz)?$' },
    born: { type: 'string', format: 'date' },
    ref: { type: 'string', format: 'uuid' },
    rating: { type: 'integer', minimum: 1, maximum: 5 },
    temp: { type: 'number', exclusiveMinimum: -40, maximum: 60.5 },
  },
  required: ['name', 'age', 'tags', 'ok'],
  additionalProperties: false,
  $defs: {
    pet: { type: 'object', properties: { kind: { const: 'cat' }, kids: { type: 'array', items: { $ref: '#/$defs/pet' }, maxItems: 2 } }, required: ['kind'] },
  },
};

/** Each format's own check, written apart from the patterns the guide writes them by. */
const BASE64 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/';
/** An IP address of `version`, then maybe "/" and a prefix length that fits it (no leading zeros). */
function interfaceOf(v: string, version: 4 | 6): boolean {
  const [address, prefix, ...more] = v.split('/');
  if (more.length > 0 || !(version === 4 ? isIPv4(address) : isIPv6(address))) return false;
  return prefix === undefined || (/^(0|[1-9][0-9]*)$/.test(prefix) && Number(prefix) <= (version === 4 ? 32 : 128));
}
const FORMAT_CHECKS: Record<string, (v: string) => boolean> = {
  // Padded base64: groups of four of the alphabet, the last ending in at most two "=", decoding to as many bytes as its length says.
  byte: (v) => {
    const pad = v.endsWith('==') ? 2 : v.endsWith('=') ? 1 : 0;
    return v.length % 4 === 0 && [...v.slice(0, v.length - pad)].every((ch) => BASE64.includes(ch)) && Buffer.from(v, 'base64').length === (v.length / 4) * 3 - pad;
  },
  // A real calendar day: Date normalises 31 November into 1 December.
  date: (v) => /^\d{4}-\d\d-\d\d$/.test(v) && !Number.isNaN(Date.parse(v)) && new Date(`${v}T00:00:00Z`).toISOString().startsWith(v),
  time: (v) => /^\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$/.test(v) && !Number.isNaN(Date.parse(`2000-01-01T${v}`)),
  'date-time': (v) => FORMAT_CHECKS.date(v.slice(0, 10)) && v[10] === 'T' && FORMAT_CHECKS.time(v.slice(11)),
  uuid: (v) => /^[0-9a-f]{8}(-[0-9a-f]{4}){3}-[0-9a-f]{12}$/i.test(v),
  ipv4: (v) => v.split('.').length === 4 && v.split('.').every((o) => /^(0|[1-9]\d*)$/.test(o) && Number(o) <= 255),
  email: (v) => v.split('@').length === 2 && v.split('@')[0].length > 0 && FORMAT_CHECKS.hostname(v.split('@')[1]) && v.split('@')[1].includes('.'),
  hostname: (v) => v.split('.').every((l) => l.length >= 1 && l.length <= 63 && /^[A-Za-z0-9-]+$/.test(l) && !l.startsWith('-') && !l.endsWith('-')),
  // Node's own reading of an IPv6 address.
  ipv6: (v) => isIPv6(v),
  // pydantic's: either address (Node's reading), and an address with an optional prefix length of its size.
  ipvanyaddress: (v) => isIP(v) !== 0,
  ipv4interface: (v) => interfaceOf(v, 4),
  ipv6interface: (v) => interfaceOf(v, 6),
  ipvanyinterface: (v) => interfaceOf(v, 4) || interfaceOf(v, 6),
  // The WHATWG URL parser takes it, with a scheme and "//", and every percent starts an escape.
  uri: (v) => {
    try {
      new URL(v);
    } catch {
      return false;
    }
    return /^[A-Za-z][A-Za-z0-9+.-]*:\/\/[^\s"\\<>^`{|}]+$/.test(v) && !/%(?![0-9A-Fa-f]{2})/.test(v);
  },
  // RFC 3339 Appendix A, read part by part: P, then date parts in Y M D order or weeks alone, then T and time parts in H M S order.
  duration: (v) => {
    if (!v.startsWith('P') || v.length < 3) return false;
    const [date, time, ...more] = v.slice(1).split('T');
    if (more.length > 0 || (time !== undefined && time === '')) return false;
    const parts = (s: string, units: string) => {
      const found = [...s.matchAll(/([0-9]+)([A-Z])/g)];
      if (found.map((m) => m[0]).join('') !== s) return null;
      const order = found.map((m) => units.indexOf(m[2]));
      return order.every((o, i) => o >= 0 && (i === 0 || o > order[i - 1])) ? found.map((m) => m[2]).join('') : null;
    };
    const d = parts(date, 'YMD');
    const w = parts(date, 'W');
    const t = time === undefined ? '' : parts(time, 'HMS');
    if (t === null || (d === null && w === null)) return false;
    if (w) return time === undefined;
    // No gaps: Y then M then D (M D, or Y M, but not Y D); H M S likewise.
    const contiguous = (units: string, got: string) => got === '' || units.includes(got);
    return contiguous('YMD', d!) && contiguous('HMS', t) && (d !== '' || t !== '');
  },
};

/** An independent check of a parsed value against a schema of the subset (the test's own reading of JSON Schema). */
function valid(v: unknown, s: Record<string, any>, root: Record<string, any> = s): boolean {
  if (s.$ref) return valid(v, s.$ref.split('/').slice(1).reduce((o: any, k: string) => o[k], root), root);
  if (s.anyOf) return s.anyOf.some((a: Record<string, any>) => valid(v, a, root));
  if (s.oneOf) return s.oneOf.filter((a: Record<string, any>) => valid(v, a, root)).length === 1;
  if ('const' in s) return JSON.stringify(v) === JSON.stringify(s.const);
  if (s.enum) return s.enum.some((e: unknown) => JSON.stringify(e) === JSON.stringify(v));
  const types: string[] = Array.isArray(s.type) ? s.type : [s.type];
  return types.some((t) => {
    switch (t) {
      case 'object': {
        if (v === null || typeof v !== 'object' || Array.isArray(v)) return false;
        const o = v as Record<string, unknown>;
        const props = s.properties ?? {};
        if ((s.required ?? []).some((r: string) => !(r in o))) return false;
        return Object.entries(o).every(([k, x]) => (k in props ? valid(x, props[k], root) : s.additionalProperties !== false && (typeof s.additionalProperties !== 'object' || valid(x, s.additionalProperties, root))));
      }
      case 'array': {
        if (!Array.isArray(v) || v.length < (s.minItems ?? 0) || v.length > (s.maxItems ?? Infinity)) return false;
        // A tuple: prefixItems (or items as an array), then items (or additionalItems) for the rest.
        const tuple: unknown[] = s.prefixItems ?? (Array.isArray(s.items) ? s.items : []);
        const rest = s.prefixItems === undefined && Array.isArray(s.items) ? s.additionalItems : s.items;
        return v.every((x, i) => (i < tuple.length ? valid(x, tuple[i] as Record<string, any>, root) : rest === undefined || rest === true || (rest !== false && valid(x, rest, root))));
      }
      case 'string':
        if (typeof v !== 'string' || [...v].length < (s.minLength ?? 0) || [...v].length > (s.maxLength ?? Infinity)) return false;
        if (s.pattern !== undefined && !new RegExp(s.pattern, 'u').test(v)) return false;
        if (s.format !== undefined && s.format !== 'uuid') return FORMAT_CHECKS[s.format](v);
        if (s.format === 'uuid') return /^[0-9a-f]{8}(-[0-9a-f]{4}){3}-[0-9a-f]{12}$/i.test(v);
        return true;
      case 'integer':
      case 'number':
        return (
          typeof v === 'number' &&
          (t === 'number' || Number.isInteger(v)) &&
          (s.minimum === undefined || v >= s.minimum) &&
          (s.maximum === undefined || v <= s.maximum) &&
          (s.exclusiveMinimum === undefined || v > s.exclusiveMinimum) &&
          (s.exclusiveMaximum === undefined || v < s.exclusiveMaximum) &&
          (s.multipleOf === undefined || Math.abs(v / s.multipleOf) > 1e12 || Math.abs(Math.round(v / s.multipleOf) * s.multipleOf - v) < 1e-9)
        );
      case 'boolean':
        return typeof v === 'boolean';
      case 'null':
        return v === null;
      default:
        return false;
    }
  });
}

describe('SchemaGuide of a JSON schema (structured outputs)', () => {
  const person = compileJsonSchema(PERSON);
  const walkSchema = (text: string) => walkGuide(new SchemaGuide(person, vocab), text);

  it('takes the schema\'s documents whole (properties in order, optional ones left out or not) and is done exactly at their end', () => {
    for (const doc of [
      '{"name":"Ann","age":37,"tags":["a"],"ok":true}',
      '{"name": "\\u00e9l\\"e", "age": -3, "tags": ["b", 12, "a"], "nick": null, "ok": false}',
      '{\n  "name": "Zoë",\n  "age": 0,\n  "tags": [12],\n  "nick": "Z",\n  "pet": {"kind": "cat", "kids": [{"kind": "cat"}, {"kind": "cat", "kids": []}]},\n  "score": 1.5e-3,\n  "ok": true,\n  "extra": {"x": 1, "y": -2}\n}',
      '{"name":"12345678","age":1,"tags":["a","a","a"],"ok":true,"extra":{}}',
      '{"name":"Bo","age":2,"tags":["b"],"ok":true,"code":"AB-12yz","born":"1999-12-31","ref":"0f8fad5b-d9cb-469f-a165-70867728950e","rating":5,"temp":-39.25}',
    ]) {
      expect(valid(JSON.parse(doc), PERSON), doc).toBe(true);
      expect(walkSchema(doc), doc).toEqual({ accepted: enc(doc).length, done: true });
      expect(walkSchema(doc.slice(0, -1)).done, doc).toBe(false);
    }
  });

  it('refuses the first byte past which no document of the schema goes on', () => {
    const head = '{"name":"Ann","age":37,"tags":["a"]';
    for (const [bad, at] of [
      ['{"age":1}', 2], // name is required and comes first
      ['{"name":"","age":1}', 9], // minLength 1
      ['{"name":"123456789"', 17], // maxLength 8
      ['{"name":"A","age":1.5}', 19], // an integer
      ['{"name":"A","age":1e3}', 19],
      ['{"name":"A","age":1,"tags":[]}', 28], // minItems 1
      ['{"name":"A","age":1,"tags":["a","a","a","a"]}', 39], // maxItems 3
      ['{"name":"A","age":1,"tags":["c"]}', 29], // not in the enum
      ['{"name":"A","age":1,"tags":[123]}', 30],
      [`${head},"ok":1}`, head.length + 6], // a boolean
      [`${head}}`, head.length], // ok is required
      [`${head},"zzz":1}`, head.length + 2], // no such property
      [`${head},"ok":true,"nick":null}`, head.length + 12], // nick comes before ok
      [`${head},"pet":{"kind":"dog"}`, head.length + 16],
      [`${head},"pet":{"kids":[]}`, head.length + 11], // kind is required and first: "ki" may begin it, the d cannot
      [`${head},"ok":true,"extra":{"x":"1"}}`, head.length + 24], // additionalProperties: integers
      [`${head},"ok":true,"code":"AB-1234"}`, head.length + 25], // at most three digits
      [`${head},"ok":true,"code":"AB-1y"}`, head.length + 24], // y only with z after it
      [`${head},"ok":true,"code":"ab`, head.length + 19], // capitals
      [`${head},"ok":true,"born":"1999-13`, head.length + 25], // no month 13
      [`${head},"ok":true,"ref":"0f8fad5b-d9cb-469f-a165-70867728950"`, head.length + 53], // a uuid is 36 characters
      [`${head},"ok":true,"code":"A\\u0042-1"}`, head.length + 20], // no escapes in a pattern's text
      [`${head},"ok":true,"rating":6`, head.length + 20], // at most 5
      [`${head},"ok":true,"rating":0`, head.length + 20], // at least 1
      [`${head},"ok":true,"rating":4.5`, head.length + 21], // an integer
      [`${head},"ok":true,"temp":-40}`, head.length + 20], // above -40: "-4" may go on, "-40" not
    ] as const) {
      expect(walkSchema(bad), bad).toEqual({ accepted: at, done: false });
    }
  });

  it('anyOf alternatives that start alike are followed together until the reply tells them apart', () => {
    const PETS = {
      type: 'object',
      properties: {
        pets: { type: 'array', items: { anyOf: [{ $ref: '#/$defs/cat' }, { $ref: '#/$defs/dog' }] }, minItems: 1, maxItems: 3 },
        n: { anyOf: [{ type: 'integer', minimum: 10 }, { type: 'number', maximum: 0 }] },
        nums: { type: 'array', items: { anyOf: [{ type: 'integer' }, { type: 'number' }] } },
      },
      required: ['pets', 'n'],
      additionalProperties: false,
      $defs: {
        cat: { type: 'object', properties: { kind: { const: 'cat' }, lives: { type: 'integer' } }, required: ['kind', 'lives'] },
        dog: { type: 'object', properties: { kind: { enum: ['dog', 'cattle dog'] }, good: { type: 'boolean' } }, required: ['kind'] },
      },
    };
    const schema = compileJsonSchema(PETS);
    const at = (text: string) => {
      const g = new SchemaGuide(schema, vocab);
      return { g, ...walkGuide(g, text) };
    };
    for (const doc of ['{"pets":[{"kind":"cat","lives":9},{"kind":"cattle dog","good":true},{"kind":"dog"}],"n":12}', '{"pets":[{"kind":"dog"}],"n":-0.5,"nums":[1,2.5,-3]}']) {
      expect(valid(JSON.parse(doc), PETS), doc).toBe(true);
      expect(at(doc), doc).toMatchObject({ accepted: doc.length, done: true });
    }
    const head = '{"pets":[{"kind":"';
    for (const [bad, accepted] of [
      [`${head}cat","good"`, head.length + 6], // a cat's next key is lives
      [`${head}dog","lives"`, head.length + 6], // a dog's is good
      [`${head}cow"`, head.length + 1],
      [`${head}dog"}],"n":5}`, head.length + 12], // 5 may begin 50, but not end
      [`${head}dog"}],"n":1.`, head.length + 12], // an integer from 10, or a number up to 0
    ] as const) {
      expect(at(bad), bad).toMatchObject({ accepted, done: false });
    }
    // Inside "cat" both kinds are possible (the dog's "cattle dog"): the mask is what either state takes.
    const both = at(`${head}cat`).g;
    expect(both.stateCount).toBe(2);
    const mask = both.allowed();
    vocab.forEach((bytes, i) => {
      if (bytes) expect(mask[i], `token ${i}`).toBe(both.accepts(bytes) ? 1 : 0);
    });
    expect([mask[0x22], mask[0x74], mask[0x73]]).toEqual([1, 1, 0]);
    expect(at(`${head}cat"`).g.stateCount).toBe(1);
    expect(at(`${head}catt`).g.stateCount).toBe(1);
    // An integer is a number too: both are followed through each item, and states alike are followed once.
    expect(at(`${head}dog"}],"n":0,"nums":[1,2`).g.stateCount).toBe(2);
    expect(at(`${head}dog"}],"n":0,"nums":[1,2,3,4,5,6,7,8,9,10,`).g.stateCount).toBe(1);
    const texts = randomWalks(() => new SchemaGuide(schema, vocab), { steps: 600, closers: [0x7d, 0x5d, 0x22, 0x2c], closeAfter: 80 });
    expect(texts.length).toBeGreaterThan(100);
    for (const t of texts) expect(valid(JSON.parse(t), PETS), t).toBe(true);
    // A union of 40 event types alike up to their tag's value: every one can be written.
    const events = { anyOf: Array.from({ length: 40 }, (_, i) => ({ type: 'object', properties: { type: { const: `e${i}` }, [`f${i}`]: { type: 'integer' } }, required: ['type', `f${i}`] })) };
    for (const i of [0, 15, 16, 39]) expect(walkIn(events, `{"type":"e${i}","f${i}":1}`).done, `event ${i}`).toBe(true);
    expect(walkIn(events, '{"type":"e39","f3":1}')).toMatchObject({ done: false });
    expect(() => compileJsonSchema({ anyOf: [...events.anyOf, ...events.anyOf.slice(0, 25)] })).toThrow(SchemaError);
    expect(texts.some((t) => t.includes('"cattle dog"')) && texts.some((t) => t.includes('"lives"'))).toBe(true);
  });

  it("a pattern reads every byte of a character: non-ASCII literals match whole, and a character's other bytes are checked", () => {
    const word = { type: 'object', properties: { w: { type: 'string', pattern: '^(é+|ça)$' } }, required: ['w'] };
    for (const doc of ['{"w":"é"}', '{"w":"ééé"}', '{"w":"ça"}']) expect(walkIn(word, doc), doc).toEqual({ accepted: enc(doc).length, done: true });
    // é is C3 A9, è C3 A8: the lead byte fits, the next does not.
    expect(walkIn(word, '{"w":"è')).toEqual({ accepted: 7, done: false });
    expect(walkIn(word, '{"w":"éa')).toEqual({ accepted: 8, done: false });
  });

  it('a pattern with length bounds never takes a way its match could not end within them', () => {
    const obj = (v: unknown) => ({ type: 'object', properties: { v }, required: ['v'] });
    // An address of at most 16 characters: the name stops where "@x.org" still fits.
    const mail = obj({ type: 'string', pattern: '^[a-z]+@x\\.org$', maxLength: 16 });
    expect(walkIn(mail, '{"v":"abcdefghij@x.org"}')).toEqual({ accepted: 24, done: true });
    expect(walkIn(mail, '{"v":"abcdefghijk')).toEqual({ accepted: 16, done: false });
    // At least 6: the short alternative is refused once taken, the long one not.
    const word = obj({ type: 'string', pattern: '^(ab|cdefgh+)$', minLength: 6 });
    expect(walkIn(word, '{"v":"a')).toEqual({ accepted: 6, done: false });
    expect(walkIn(word, '{"v":"cdefghh"}')).toEqual({ accepted: 15, done: true });
    // A character's later bytes narrow the pattern too: è takes the long way, past maxLength 3.
    const accent = obj({ type: 'string', pattern: '^(é|èxxxx)$', maxLength: 3 });
    expect(walkIn(accent, '{"v":"é"}').done).toBe(true);
    expect(walkIn(accent, '{"v":"è')).toEqual({ accepted: 7, done: false });
    // Random walks through the masks all end (the shortest and longest ways stay open) and keep both bounds.
    const texts = randomWalks(() => new SchemaGuide(compileJsonSchema(mail), vocab), { steps: 200, closers: [0x7d, 0x22, 0x40], closeAfter: 20 });
    expect(texts.length).toBe(200);
    for (const t of texts) expect((JSON.parse(t) as { v: string }).v, t).toMatch(/^[a-z]{1,10}@x\.org$/);
    // Bounds the pattern's matches cannot meet are refused.
    const refusal = (v: unknown) => {
      try {
        compileJsonSchema(obj(v));
        return null;
      } catch (e) {
        return e instanceof SchemaError ? e.keyword : 'other';
      }
    };
    expect(refusal({ type: 'string', pattern: '^[0-9]{5}$', maxLength: 4 })).toBe('maxLength');
    expect(refusal({ type: 'string', pattern: '^(ab|cd)$', minLength: 3 })).toBe('minLength');
    expect(refusal({ type: 'string', format: 'uuid', maxLength: 20 })).toBe('maxLength');
    expect(refusal({ type: 'string', pattern: '^a+$', minLength: 50, maxLength: 60 })).toBeNull();
    // Both bounds at once: match lengths 2 or 10 skip the window 4 to 6 (each bound alone is met: before, this compiled and got stuck after "aa").
    expect(refusal({ type: 'string', pattern: '^(a{2}|a{10})$', minLength: 4, maxLength: 6 })).toBe('minLength');
    // Lengths 2, 4 (b's) and 5 to 10: a way is taken only where a length within 4 to 6 stays open.
    const gaps = obj({ type: 'string', pattern: '^(a{2}|b{4}|a{5,10})$', minLength: 4, maxLength: 6 });
    expect(walkIn(gaps, '{"v":"aaaaa"}').done).toBe(true);
    expect(walkIn(gaps, '{"v":"bbbb"}').done).toBe(true);
    expect(walkIn(gaps, '{"v":"aa"')).toEqual({ accepted: 8, done: false });
    expect(walkIn(gaps, '{"v":"aaaaaaa')).toEqual({ accepted: 12, done: false });
    const gapWalks = randomWalks(() => new SchemaGuide(compileJsonSchema(gaps), vocab), { steps: 60, closers: [0x7d, 0x22], closeAfter: 10 });
    expect(gapWalks.length).toBe(200);
    for (const t of gapWalks) expect((JSON.parse(t) as { v: string }).v, t).toMatch(/^(bbbb|a{5,6})$/);
  });

  it('multipleOf: every number written is a multiple, with or without bounds, and no way is a dead end', () => {
    const cases: Array<[Record<string, unknown>, string]> = [
      [{ type: 'number', multipleOf: 0.25 }, '0.25'],
      [{ type: 'integer', multipleOf: 5, minimum: 3 }, '5'],
      [{ type: 'number', multipleOf: 0.04, minimum: 0.37 }, '0.04'],
      [{ type: 'number', multipleOf: 0.5, maximum: -1.2 }, '0.5'],
      [{ type: 'number', multipleOf: 0.1, minimum: 0.25, maximum: 0.75 }, '0.1'],
      [{ type: 'integer', multipleOf: 3, exclusiveMinimum: 6 }, '3'],
      [{ type: 'number', multipleOf: 7, minimum: -20 }, '7'],
      [{ type: 'number', multipleOf: 1.5, exclusiveMaximum: 4.5 }, '1.5'],
    ];
    for (const [n, divisor] of cases) {
      const schema = { type: 'object', properties: { n }, required: ['n'] };
      const texts = randomWalks(() => new SchemaGuide(compileJsonSchema(schema), vocab), { steps: 60, closers: [0x7d], closeAfter: 12 });
      // Every walk ends: the guide never leaves a number that cannot become a multiple within the bounds.
      expect(texts.length, JSON.stringify(n)).toBe(200);
      const seen = new Set<string>();
      for (const t of texts) {
        const text = /"n"\s*:\s*(-?[0-9.]+)/.exec(t)![1];
        seen.add(text);
        expect(isMultiple(text, divisor), `${text} of ${divisor}`).toBe(true);
        expect(valid(JSON.parse(t), schema), t).toBe(true);
      }
      expect(seen.size, JSON.stringify(n)).toBeGreaterThan(2);
    }
    // The exact bytes: 0.3 cannot become a multiple of 0.04 at or above 0.37 (0.37-0.39 hold none), 0.4 can.
    const g = new SchemaGuide(compileJsonSchema({ type: 'object', properties: { n: cases[2][0] }, required: ['n'] }), vocab);
    for (const b of enc('{"n":0.')) g.advance(b);
    expect([g.accepts(enc('3')), g.accepts(enc('4')), g.accepts(enc('44}')), g.accepts(enc('45')), g.accepts(enc('4e'))]).toEqual([false, true, true, false, false]);
  });

  it('tuples: prefixItems (or items as an array) item by item, then items (or additionalItems) or none', () => {
    const TUPLES = {
      type: 'object',
      properties: {
        pos: { type: 'array', prefixItems: [{ type: 'number' }, { type: 'number' }, { enum: ['N', 'S'] }], items: false, minItems: 2 },
        row: { type: 'array', items: [{ type: 'string', maxLength: 3 }, { type: 'integer' }], additionalItems: { type: 'boolean' }, maxItems: 4 },
        head: { type: 'array', prefixItems: [{ const: 'id' }], items: { type: 'integer' }, minItems: 1 },
      },
      required: ['pos', 'row', 'head'],
      additionalProperties: false,
    };
    for (const doc of ['{"pos":[1.5,-2],"row":[],"head":["id"]}', '{"pos":[0,0,"S"],"row":["abc",7,true,false],"head":["id",1,2,3]}', '{"pos":[1,2],"row":["a"],"head":["id"]}']) {
      expect(valid(JSON.parse(doc), TUPLES), doc).toBe(true);
      expect(walkIn(TUPLES, doc), doc).toEqual({ accepted: doc.length, done: true });
    }
    for (const [bad, at] of [
      ['{"pos":[1]', 9], // at least two items
      ['{"pos":["N"', 8], // the first is a number
      ['{"pos":[1,2,"E"', 13], // the third is N or S
      ['{"pos":[1,2,"N",', 15], // nothing after the tuple
      ['{"pos":[1,2],"row":[1', 20], // a string first
      ['{"pos":[1,2],"row":["a",1,2', 26], // then booleans
      ['{"pos":[1,2],"row":["a",1,true,true,', 35], // at most four
      ['{"pos":[1,2],"row":[],"head":[]', 30], // at least the tuple's one
      ['{"pos":[1,2],"row":[],"head":["id","x"', 35], // then integers
    ] as const) {
      expect(walkIn(TUPLES, bad), bad).toEqual({ accepted: at, done: false });
    }
    const texts = randomWalks(() => new SchemaGuide(compileJsonSchema(TUPLES), vocab), { steps: 500, closers: [0x7d, 0x5d, 0x22, 0x2c], closeAfter: 80 });
    expect(texts.length).toBeGreaterThan(100);
    for (const t of texts) expect(valid(JSON.parse(t), TUPLES), t).toBe(true);
  });

  it('allOf of several schemas: every document written is valid under every part (a $ref extended, a property named by both, a closed schema, listed values, multiples, a union distributed)', () => {
    const defs = {
      base: { type: 'object', properties: { id: { type: 'integer', minimum: 0, maximum: 99 }, tag: { type: 'string', maxLength: 3 }, note: { type: 'string' } }, required: ['id'] },
      closed: { type: 'object', properties: { id: { type: 'integer' }, ok: { type: 'boolean' }, tag: { type: 'string' } }, additionalProperties: false },
    };
    const parts: Record<string, Array<Record<string, unknown>>> = {
      // Inheritance: the base through $ref, extended with a property and a tighter id.
      item: [{ $ref: '#/$defs/base' }, { type: 'object', properties: { id: { type: 'integer', multipleOf: 4 }, extra: { type: 'boolean' } }, required: ['extra'] }],
      // The closed schema names no "note": it is never written.
      closed: [{ $ref: '#/$defs/base' }, { $ref: '#/$defs/closed' }],
      n: [{ type: 'number', multipleOf: 0.4 }, { type: 'number', multipleOf: 0.6, minimum: 0, maximum: 6 }],
      pick: [{ type: 'string', enum: ['a', 'b', 'c'] }, { type: 'string', enum: ['b', 'c', 'd'] }],
      shape: [
        { type: 'object', properties: { size: { type: 'integer', minimum: 1, maximum: 3 } }, required: ['size'] },
        { anyOf: [{ type: 'object', properties: { kind: { const: 'box' } }, required: ['kind'] }, { type: 'object', properties: { kind: { const: 'ball' }, round: { type: 'boolean' } }, required: ['kind', 'round'] }] },
      ],
    };
    const root = { type: 'object', properties: Object.fromEntries(Object.entries(parts).map(([k, allOf]) => [k, { allOf }])), required: Object.keys(parts), $defs: defs };
    const texts = randomWalks(() => new SchemaGuide(compileJsonSchema(root), vocab), { steps: 600, closers: [0x7d, 0x5d, 0x22, 0x2c], closeAfter: 80 });
    expect(texts.length).toBeGreaterThan(100);
    const seen = { n: new Set<number>(), pick: new Set<string>(), kind: new Set<string>() };
    for (const t of texts) {
      const doc = JSON.parse(t);
      for (const [k, allOf] of Object.entries(parts)) for (const part of allOf) expect(valid(doc[k], part, root), `${k} of ${t}`).toBe(true);
      expect('note' in doc.closed, t).toBe(false);
      seen.n.add(doc.n);
      seen.pick.add(doc.pick);
      seen.kind.add(doc.shape.kind);
    }
    // The walks reached the values both parts allow, and only those.
    expect([...seen.n].sort((a, b) => a - b)).toEqual([0, 1.2, 2.4, 3.6, 4.8, 6]);
    expect([...seen.pick].sort()).toEqual(['b', 'c']);
    expect([...seen.kind].sort()).toEqual(['ball', 'box']);
    // Byte by byte: an id that is no multiple of 4, or a "note" in the closed object, is refused where it is written.
    const closedOnly = { ...root, properties: { closed: root.properties.closed }, required: ['closed'] };
    expect(walkIn(closedOnly, '{"closed": {"id": 3, "ok": true}}').done).toBe(true);
    expect(walkIn(closedOnly, '{"closed": {"id": 3, "no')).toMatchObject({ done: false, accepted: 22 });
    const itemOnly = { ...root, properties: { item: root.properties.item }, required: ['item'] };
    expect(walkIn(itemOnly, '{"item": {"id": 12, "extra": false}}').done).toBe(true);
    expect(walkIn(itemOnly, '{"item": {"id": 13')).toMatchObject({ done: false });
  });

  it('nullable (OpenAPI 3.0) adds null to a schema\'s values; allOf distributed over a union leaves out the alternatives no value satisfies', () => {
    const takes = (schema: unknown, text: string) => walkIn(schema, text).done;
    const obj = (props: Record<string, unknown>) => ({ type: 'object', properties: props });
    const nullable = obj({ a: { type: 'string', maxLength: 2, nullable: true }, b: { type: 'integer', nullable: false }, r: { $ref: '#/$defs/n', nullable: true } });
    const withDefs = { ...nullable, $defs: { n: { type: 'integer', maximum: 3 } } };
    const texts = ['{"a": null}', '{"a": "xy"}', '{"a": "xyz"}', '{"b": null}', '{"b": 1}', '{"r": null}', '{"r": 3}', '{"r": 4}'];
    expect(texts.map((t) => takes(withDefs, t))).toEqual([true, true, false, false, true, true, true, false]);
    // In allOf, a nullable part is a union with null: null only where every part takes it.
    const parts = obj({ c: { allOf: [{ type: 'integer', nullable: true }, { maximum: 3 }] }, d: { allOf: [{ type: 'integer', nullable: true }, { type: 'integer' }] } });
    expect(['{"c": null}', '{"c": 3}', '{"c": 4}', '{"d": null}', '{"d": 5}'].map((t) => takes(parts, t))).toEqual([true, true, false, false, true]);
    // Distributed over a union, an alternative with no type or value in common with the rest is left out (it was refused before).
    const typed = obj({ e: { allOf: [{ type: 'integer' }, { anyOf: [{ type: 'string' }, { type: 'integer' }] }] } });
    expect(['{"e": 5}', '{"e": "x"}'].map((t) => takes(typed, t))).toEqual([true, false]);
    const listed = obj({ e: { allOf: [{ enum: [1, 2] }, { oneOf: [{ const: 3 }, { const: 2 }] }] } });
    expect(['{"e": 2}', '{"e": 1}', '{"e": 3}'].map((t) => takes(listed, t))).toEqual([true, false, false]);
    // Every alternative empty: refused, naming the first; a nullable that is no boolean: refused.
    expect(refusal(obj({ e: { allOf: [{ type: 'integer' }, { anyOf: [{ type: 'string' }, { type: 'null' }] }] } }))).toEqual(['/properties/e/anyOf/0', 'allOf']);
    expect(refusal(obj({ a: { type: 'string', nullable: 'yes' } }))).toEqual(['/properties/a', 'nullable']);
  });

  it('propertyNames: free keys follow its pattern and lengths, names it lists become properties, and named properties it refuses are never written; patternProperties of one pattern likewise', () => {
    const takes = (schema: unknown, text: string) => walkIn(schema, text).done;
    const pattern = { type: 'object', propertyNames: { pattern: '[a-c]{1,3}' }, additionalProperties: { type: 'integer' } };
    expect(['{"ab": 1}', '{"abcd": 1}', '{"A": 1}', '{"a": 1, "b": 2}', '{"a": 1, "a": 2}', '{}', '{"": 1}'].map((t) => takes(pattern, t))).toEqual([true, false, false, true, false, true, false]);
    // The masks follow the key's own states (cached per state): a quote only once the key may end, a letter only while it may go on.
    const g = new SchemaGuide(compileJsonSchema(pattern), vocab);
    const quote = 0x22;
    for (const b of enc('{"')) g.advance(b);
    expect([g.allowed()[quote], g.allowed()[0x61], g.allowed()[0x64]]).toEqual([0, 1, 0]);
    for (const b of enc('abc')) g.advance(b);
    expect([g.allowed()[quote], g.allowed()[0x61]]).toEqual([1, 0]);
    const other = new SchemaGuide(compileJsonSchema(pattern), vocab);
    for (const b of enc('{"a')) other.advance(b);
    expect([other.allowed()[quote], other.allowed()[0x61]]).toEqual([1, 1]);
    // Lengths and formats too; names listed (enum, const) are properties of those names, each optional.
    const short = { type: 'object', propertyNames: { minLength: 2, maxLength: 2 } };
    expect(['{"ab": 1}', '{"a": 1}', '{"abc": 1}'].map((t) => takes(short, t))).toEqual([true, false, false]);
    const listed = { type: 'object', propertyNames: { enum: ['x', 'y', 'zz'], maxLength: 1 }, additionalProperties: { type: 'boolean' } };
    expect(['{"x": true}', '{"x": true, "y": false}', '{"y": false}', '{"zz": true}', '{"q": true}', '{}'].map((t) => takes(listed, t))).toEqual([true, true, true, false, false, true]);
    // Named properties: those it refuses are not written (a required one is refused at compile time).
    const named = { type: 'object', properties: { ok: { type: 'integer' }, BAD: { type: 'integer' } }, propertyNames: { pattern: '[a-z]+' } };
    expect(['{"ok": 1}', '{"ok": 1, "BAD": 2}', '{"BAD": 2}'].map((t) => takes(named, t))).toEqual([true, false, false]);
    // In allOf, every part's propertyNames holds.
    const both = { type: 'object', allOf: [{ propertyNames: { maxLength: 2 } }, { propertyNames: { pattern: 'a.*' }, additionalProperties: { type: 'null' } }] };
    expect(['{"ab": null}', '{"abc": null}', '{"b": null}'].map((t) => takes(both, t))).toEqual([true, false, false]);
    // patternProperties of one pattern on free keys (as pydantic writes a dict of patterned keys): its matches, each value of its schema.
    const dict = { type: 'object', patternProperties: { '^x-[a-z]+$': { type: 'integer' } }, additionalProperties: false };
    expect(['{"x-ab": 1}', '{"x-ab": "s"}', '{"y": 1}', '{}'].map((t) => takes(dict, t))).toEqual([true, false, false, true]);
    expect(refusal({ type: 'object', patternProperties: { a: true, b: true } })).toEqual(['', 'patternProperties']);
    expect(refusal({ type: 'object', patternProperties: { '(': true } })).toEqual(['/patternProperties/(', 'pattern']);
    expect(refusal({ type: 'object', properties: { q: true }, patternProperties: { a: true } })).toEqual(['', 'patternProperties']);
    expect(refusal({ allOf: [{ type: 'object', patternProperties: { a: true } }, { patternProperties: { b: true } }] })).toEqual(['', 'allOf']);
    expect(refusal({ type: 'object', propertyNames: false })).toEqual(['', 'propertyNames']);
    expect(refusal({ type: 'object', propertyNames: { type: 'integer' } })).toEqual(['/propertyNames', 'type']);
    expect(refusal({ type: 'object', properties: { A: true }, required: ['A'], propertyNames: { pattern: '[a-z]+' } })).toEqual(['', 'propertyNames']);
    expect(refusal({ type: 'object', propertyNames: { anyOf: [{ pattern: 'a' }, { pattern: 'b' }] } })).toEqual(['/propertyNames', 'propertyNames']);
  });

  it('uniqueItems: items of listed values, none written twice (the first byte of a value is taken only for the values still free: 1 again begins only 12), at most as many as there are values', () => {
    const tags = { type: 'object', properties: { tags: { type: 'array', items: { enum: ['red', 'green', 'blue', 1, 12, true] }, uniqueItems: true } }, required: ['tags'] };
    const texts = randomWalks(() => new SchemaGuide(compileJsonSchema(tags), vocab), { steps: 200, closers: [0x7d, 0x5d, 0x2c], closeAfter: 40 });
    expect(texts.length).toBe(200);
    const lengths = new Set<number>();
    for (const t of texts) {
      const items = JSON.parse(t).tags as unknown[];
      expect(new Set(items.map((x) => JSON.stringify(x))).size, t).toBe(items.length);
      lengths.add(items.length);
    }
    expect(Math.max(...lengths)).toBe(6);
    expect(walkIn(tags, '{"tags": ["red", 1, 12, true, "blue", "green"]}').done).toBe(true);
    // Integers within two bounds (through a $ref too) are listed: none twice, at most as many as there are.
    const ints = { type: 'object', properties: { s: { type: 'array', items: { $ref: '#/$defs/small' }, uniqueItems: true } }, required: ['s'], $defs: { small: { type: 'integer', minimum: 1, exclusiveMaximum: 4 } } };
    expect(['{"s": [3, 1, 2]}', '{"s": [1, 1]}', '{"s": [4]}', '{"s": [1, 2, 3, 1]}'].map((t) => walkIn(ints, t).done)).toEqual([true, false, false, false]);
    expect(refusal({ type: 'array', items: { type: 'integer', minimum: 1, maximum: 3 }, uniqueItems: true, minItems: 4 })).toEqual(['', 'minItems']);
    expect(refusal({ type: 'array', items: { type: 'integer', minimum: 1 }, uniqueItems: true })).toEqual(['', 'uniqueItems']);
    expect(refusal({ type: 'array', items: { type: 'integer', minimum: 0, maximum: 1000 }, uniqueItems: true })).toEqual(['', 'uniqueItems']);
    // A value written already is refused where it would be written again: "red" at its first byte past the quote, 1 at the byte that would end it.
    expect(walkIn(tags, '{"tags": ["red", "red"]}')).toMatchObject({ done: false, accepted: 18 });
    expect(walkIn(tags, '{"tags": [1, 12, 1]}')).toMatchObject({ done: false, accepted: 17 });
    expect(walkIn(tags, '{"tags": [1, 1]}')).toMatchObject({ done: false, accepted: 14 });
    expect(walkIn(tags, '{"tags": [12, 1]}').done).toBe(true);
    // Through a $ref, booleans, and with allOf.
    expect(walkIn({ type: 'array', items: { $ref: '#/$defs/b' }, uniqueItems: true, $defs: { b: { type: 'boolean' } } }, '[true, false]').done).toBe(true);
    expect(walkIn({ type: 'array', items: { type: 'boolean' }, uniqueItems: true }, '[true, true')).toMatchObject({ done: false, accepted: 7 });
    expect(walkIn({ type: 'array', allOf: [{ items: { enum: [1, 2] } }, { uniqueItems: true }] }, '[2, 1]').done).toBe(true);
    expect(walkIn({ type: 'array', allOf: [{ items: { enum: [1, 2] } }, { uniqueItems: true }] }, '[2, 2')).toMatchObject({ done: false });
    // Strings (no pattern, no maxLength): one written already is refused at its closing quote, and may go on instead;
    // written as free keys are (no \u escapes), so that one string has one spelling.
    const words = { type: 'array', items: { type: 'string' }, uniqueItems: true, minItems: 1 };
    expect(walkIn(words, '["ab", "a", "abc", "b\\"c"]').done).toBe(true);
    expect(walkIn(words, '["ab", "ab"')).toMatchObject({ done: false, accepted: 10 });
    expect(walkIn(words, '["ab", "abc"]').done).toBe(true);
    // The mask says so too (it is kept without the strings written, its quote tokens run again against them).
    const wg = new SchemaGuide(compileJsonSchema(words), vocab);
    wg.allowed();
    for (const b of enc('["ab", "ab')) {
      wg.advance(b);
      wg.allowed();
    }
    expect([wg.allowed()[0x22], wg.allowed()[0x63]]).toEqual([0, 1]);
    const fresh = new SchemaGuide(compileJsonSchema(words), vocab);
    for (const b of enc('["ab')) fresh.advance(b);
    expect(fresh.allowed()[0x22]).toBe(1);
    expect(walkIn(words, '["ab", "\\u0061b"]')).toMatchObject({ done: false, accepted: 9 });
    const wordWalks = randomWalks(() => new SchemaGuide(compileJsonSchema({ type: 'object', properties: { w: { ...words, maxItems: 12 } }, required: ['w'] }), vocab), { steps: 300, closers: [0x7d, 0x5d, 0x22, 0x2c], closeAfter: 40 });
    expect(wordWalks.length).toBeGreaterThan(150);
    for (const t of wordWalks) {
      const w = JSON.parse(t).w as string[];
      expect(new Set(w).size, t).toBe(w.length);
    }
    expect(wordWalks.some((t) => (JSON.parse(t).w as string[]).length > 3)).toBe(true);
    // uniqueItems false is no constraint.
    expect(walkIn({ type: 'array', items: { type: 'boolean' }, uniqueItems: false }, '[true, true]').done).toBe(true);
  });

  it('minProperties and maxProperties: named properties (exactly one of them, as tool calls use) and free ones', () => {
    const one = { type: 'object', properties: { a: { type: 'integer' }, b: { type: 'integer' }, c: { type: 'integer' } }, minProperties: 1, maxProperties: 1, additionalProperties: false };
    for (const doc of ['{"a":1}', '{"b": 2}', '{ "c" : 3 }']) expect(walkIn(one, doc), doc).toEqual({ accepted: doc.length, done: true });
    expect(walkIn(one, '{}')).toEqual({ accepted: 1, done: false });
    expect(walkIn(one, '{"a":1,')).toEqual({ accepted: 6, done: false });
    const free = { type: 'object', additionalProperties: { type: 'integer' }, minProperties: 2, maxProperties: 3 };
    expect(walkIn(free, '{"x":1,"y":2}')).toEqual({ accepted: 13, done: true });
    expect(walkIn(free, '{"x":1,"y":2,"z":3}')).toEqual({ accepted: 19, done: true });
    expect(walkIn(free, '{"x":1}')).toEqual({ accepted: 6, done: false });
    expect(walkIn(free, '{"x":1,"y":2,"z":3,')).toEqual({ accepted: 18, done: false });
    // Named properties are not taken where minProperties could no longer be reached: two of a, b, c.
    const two = { type: 'object', properties: { a: { type: 'integer' }, b: { type: 'integer' }, c: { type: 'integer' } }, minProperties: 2 };
    expect(walkIn(two, '{"c"')).toEqual({ accepted: 2, done: false });
    expect(walkIn(two, '{"b":1,"c":2}')).toEqual({ accepted: 13, done: true });
    expect(walkIn(two, '{"a":1,"b":2,"c":3}')).toEqual({ accepted: 19, done: true });
    // A key written again would not count: its closing quote is refused (a longer key is fine).
    expect(walkIn(free, '{"x":1,"x":2}')).toEqual({ accepted: 9, done: false });
    expect(walkIn(free, '{"x":1,"xx":2}')).toEqual({ accepted: 14, done: true });
    const texts = randomWalks(() => new SchemaGuide(compileJsonSchema(free), vocab), { steps: 300, closers: [0x7d, 0x22, 0x2c], closeAfter: 80 });
    expect(texts.length).toBeGreaterThan(100);
    for (const t of texts) expect([2, 3], t).toContain(Object.keys(JSON.parse(t) as object).length);
  });

  it('OpenAPI formats: password and binary are any string, byte is base64, int32 a signed 32-bit integer', () => {
    const takes = (schema: unknown, text: string) => walkIn(schema, text).done;
    const s = { type: 'object', properties: { p: { type: 'string', format: 'password', maxLength: 4 }, f: { type: 'string', format: 'binary', pattern: 'x+' }, b: { type: 'string', format: 'byte' }, n: { type: 'integer', format: 'int32' }, m: { type: 'number', format: 'int32', minimum: 5 } } };
    const texts = ['{"p": "é\\n"}', '{"p": "abcde"}', '{"f": "xx"}', '{"f": "y"}', '{"b": "QUJD"}', '{"b": "QUI="}', '{"b": "QUI"}', '{"n": 2147483647}', '{"n": 2147483648}', '{"n": -2147483648}', '{"n": -2147483649}', '{"m": 4}', '{"m": 5.5}'];
    expect(texts.map((t) => takes(s, t))).toEqual([true, false, true, false, true, true, false, true, false, true, false, false, true]);
    expect(['QUJD', 'QUI=', 'QQ==', '', 'QUI', 'Q===', 'QU=I'].map(FORMAT_CHECKS.byte)).toEqual([true, true, true, true, false, false, false]);
  });

  it('every format writes only strings its own check takes', () => {
    // The checks themselves take and refuse what they should.
    expect(['P1Y2M3DT4H5M6S', 'P2W', 'PT1M', 'P1MT1S'].map(FORMAT_CHECKS.duration)).toEqual([true, true, true, true]);
    expect(['P', 'PT', 'P1Y1D', 'PT1H1S', 'P1WT1H', 'P1D2M', '1D'].map(FORMAT_CHECKS.duration)).toEqual(Array(7).fill(false));
    expect(['::', '2001:db8::1', '1:2:3:4:5:6:7:8'].map(FORMAT_CHECKS.ipv6)).toEqual([true, true, true]);
    expect(['1::2::3', '1:2:3:4:5:6:7:8:9', '12345::', 'g::1'].map(FORMAT_CHECKS.ipv6)).toEqual([false, false, false, false]);
    expect(['https://a.org/x%20y?q#f', 'urn+x://h'].map(FORMAT_CHECKS.uri)).toEqual([true, true]);
    expect(['10.0.0.1/8', '::1/128', '::1', '1.2.3.4/32'].map(FORMAT_CHECKS.ipvanyinterface)).toEqual([true, true, true, true]);
    expect(['10.0.0.1/33', '::1/129', '1.2.3.4/', '1.2.3.4/08', '1.2.3.4/8/8'].map(FORMAT_CHECKS.ipvanyinterface)).toEqual([false, false, false, false, false]);
    expect(['a:b', 'http://a b', 'http://a/%zz', '://a'].map(FORMAT_CHECKS.uri)).toEqual([false, false, false, false]);
    for (const format of Object.keys(FORMATS)) {
      const texts = randomWalks(() => new SchemaGuide(compileJsonSchema({ type: 'object', properties: { v: { type: 'string', format } }, required: ['v'] }), vocab), { steps: 400, closers: [0x7d, 0x22], closeAfter: 150 });
      expect(texts.length, format).toBeGreaterThan(100);
      for (const text of texts) expect(FORMAT_CHECKS[format]((JSON.parse(text) as { v: string }).v), `${format}: ${text}`).toBe(true);
    }
  });

  it('random walks through the mask only ever write documents of the schema', () => {
    const texts = randomWalks(() => new SchemaGuide(person, vocab), { steps: 600, closers: [0x7d, 0x5d, 0x22, 0x2c], closeAfter: 60 });
    expect(texts.length).toBeGreaterThan(100);
    for (const text of texts) expect(valid(JSON.parse(text), PERSON), text).toBe(true);
    // The walks reached the patterned and formatted strings too (the validator checks them with the JavaScript engine's RegExp).
    for (const key of ['code', 'born', 'ref', 'rating', 'temp']) expect(texts.filter((t) => key in JSON.parse(t)).length, key).toBeGreaterThan(5);
  });
});

describe('compileJsonSchema', () => {
  it('refuses what it cannot enforce, naming the keyword and where it is', () => {
    const refused = (schema: unknown) => {
      try {
        compileJsonSchema(schema);
      } catch (e) {
        if (e instanceof SchemaError) return { path: e.path, keyword: e.keyword };
        throw e;
      }
      return null;
    };
    const obj = (props: Record<string, unknown>) => ({ type: 'object', properties: props });
    expect(refused(obj({ a: { type: 'string', pattern: '(?=a)b' } }))).toEqual({ path: '/properties/a', keyword: 'pattern' });
    expect(refused(obj({ a: { type: 'string', pattern: 'a', format: 'date' } }))).toEqual({ path: '/properties/a', keyword: 'format' });
    expect(refused(obj({ 'a/b': { type: 'string', format: 'iri' } }))).toEqual({ path: '/properties/a~1b', keyword: 'format' });
    expect(refused(obj({ n: { type: 'integer', multipleOf: 0 } }))).toEqual({ path: '/properties/n', keyword: 'multipleOf' });
    expect(refused(obj({ n: { type: 'number', multipleOf: 1e-13 } }))).toEqual({ path: '/properties/n', keyword: 'multipleOf' });
    expect(refused(obj({ n: { type: 'number', multipleOf: 0.5, minimum: 0.6, maximum: 0.9 } }))).toEqual({ path: '/properties/n', keyword: 'multipleOf' });
    expect(refused(obj({ n: { type: 'number', multipleOf: 0.001, minimum: 0, maximum: 2 } }))).toEqual({ path: '/properties/n', keyword: 'multipleOf' });
    // Every integer is a multiple of 1 or 0.5: wide integer bounds need no list.
    expect(refused(obj({ n: { type: 'integer', multipleOf: 1, minimum: -1e6, maximum: 1e6 } }))).toBeNull();
    expect(refused(obj({ n: { type: 'integer', multipleOf: 0.5, minimum: -1e6 } }))).toBeNull();
    expect(refused(obj({ n: { type: 'integer', multipleOf: 2, minimum: -1e6 } }))).toEqual({ path: '/properties/n', keyword: 'multipleOf' });
    expect(refused(obj({ n: { type: 'integer', minimum: 5, maximum: 3 } }))).toEqual({ path: '/properties/n', keyword: 'minimum' });
    expect(refused(obj({ n: { type: 'number', exclusiveMinimum: true, minimum: 0 } }))).toEqual({ path: '/properties/n', keyword: 'exclusiveMinimum' });
    expect(refused(obj({ n: { type: 'number', minimum: 0.2, maximum: 0.8 } }))).toBeNull();
    expect(refused(obj({ n: { type: 'integer', minimum: 0.2, maximum: 0.8 } }))).toEqual({ path: '/properties/n', keyword: 'minimum' });
    expect(refused(obj({ n: { type: 'number', exclusiveMinimum: 0.5, exclusiveMaximum: 0.5 } }))).toEqual({ path: '/properties/n', keyword: 'exclusiveMinimum' });
    // allOf of several schemas (or one beside other keywords) is merged; what cannot be merged is refused.
    expect(refused(obj({ n: { allOf: [{ type: 'integer' }, { minimum: 0 }] } }))).toBeNull();
    expect(refused(obj({ n: { allOf: [{ type: 'integer' }], minimum: 0 } }))).toBeNull();
    expect(refused(obj({ n: { allOf: [{ type: 'string' }, { type: ['integer', 'null'] }] } }))).toEqual({ path: '/properties/n', keyword: 'allOf' });
    expect(refused(obj({ n: { allOf: [{ type: 'string', pattern: 'a' }, { pattern: 'b' }] } }))).toEqual({ path: '/properties/n', keyword: 'allOf' });
    expect(refused(obj({ n: { allOf: [{ type: 'string', pattern: 'a' }, { pattern: 'a', maxLength: 3 }] } }))).toBeNull();
    expect(refused(obj({ n: { allOf: [{ prefixItems: [true] }, { prefixItems: [true, true] }] } }))).toEqual({ path: '/properties/n', keyword: 'allOf' });
    expect(refused(obj({ n: { allOf: [{ enum: [1, 2] }, { enum: [3] }] } }))).toEqual({ path: '/properties/n', keyword: 'allOf' });
    expect(refused(obj({ n: { allOf: [{ type: 'integer' }, false] } }))).toEqual({ path: '/properties/n', keyword: 'allOf' });
    expect(refused(obj({ n: { allOf: [] } }))).toEqual({ path: '/properties/n', keyword: 'allOf' });
    expect(refused(obj({ n: { allOf: [{ type: 'object', properties: { a: true }, additionalProperties: false }, { required: ['b'], properties: { b: true } }] } }))).toEqual({ path: '/properties/n', keyword: 'allOf' });
    // A schema recursive through allOf (each merge naming the next), and an allOf that leads back to itself.
    const deep = refused({ type: 'object', properties: { c: { allOf: [{ $ref: '#' }, { type: 'object' }] } } });
    expect(deep?.keyword).toBe('allOf');
    expect(deep?.path).toBe('/properties/c'.repeat(33)); // the root's c, then 32 merges, each naming the next c
    expect(refused({ $ref: '#/$defs/a', $defs: { a: { allOf: [{ $ref: '#/$defs/a' }, { type: 'object' }] } } })).toEqual({ path: '/$defs/a', keyword: 'allOf' });
    expect(refused(obj({ n: { allOf: [{ type: 'integer', multipleOf: -3 }] } }))).toEqual({ path: '/properties/n/allOf/0', keyword: 'multipleOf' });
    // allOf of one schema, annotated (as generators wrap a $ref), is that schema.
    const wrapped = compileJsonSchema({ ...obj({ n: { allOf: [{ $ref: '#/$defs/small' }], description: 'a small number' } }), required: ['n'], $defs: { small: { type: 'integer', maximum: 9 } } });
    const g = new SchemaGuide(wrapped, vocab);
    for (const b of enc('{"n":')) g.advance(b);
    expect([g.accepts(enc('7}')), g.accepts(enc('12')), g.accepts(enc('"x"'))]).toEqual([true, false, false]);
    // Annotations (the content keywords too: in JSON Schema 2020-12 they assert nothing) leave the documents as they are.
    const plain = compileJsonSchema(obj({ s: { type: 'string', maxLength: 4 } }));
    const contentKeywords = { contentEncoding: 'base64', contentMediaType: 'application/json', contentSchema: { type: 'object' } };
    const annotated = compileJsonSchema({ ...obj({ s: { type: 'string', maxLength: 4, title: 'S', examples: ['ab'], $comment: 'c', ...contentKeywords } }), description: 'd' });
    expect(annotated.nodes).toEqual(plain.nodes);
    expect(refused(obj({ s: { type: 'string', contentEncodings: 'base64' } }))).toEqual({ path: '/properties/s', keyword: 'contentEncodings' });
    expect(refused(obj({ t: { type: 'array', prefixItems: [{ type: 'integer' }], items: [{ type: 'integer' }] } }))).toEqual({ path: '/properties/t', keyword: 'items' });
    expect(refused(obj({ t: { type: 'array', prefixItems: [{ type: 'integer' }], items: false, minItems: 2 } }))).toEqual({ path: '/properties/t', keyword: 'minItems' });
    expect(refused(obj({ t: { type: 'array', prefixItems: { type: 'integer' } } }))).toEqual({ path: '/properties/t', keyword: 'prefixItems' });
    expect(refused(obj({ t: { type: 'array', prefixItems: [{ type: 'integer', not: {} }] } }))).toEqual({ path: '/properties/t/prefixItems/0', keyword: 'not' });
    expect(refused(obj({ u: { anyOf: [obj({ a: true }), obj({ b: true })] } }))).toBeNull();
    expect(refused(obj({ u: { oneOf: [obj({ a: true }), obj({ b: true })] } }))).toEqual({ path: '/properties/u', keyword: 'oneOf' });
    expect(refused(obj({ u: { oneOf: [obj({ a: true }), { type: 'null' }] } }))).toBeNull();
    // A tagged union, as pydantic writes one: a required tag of constant values tells the objects apart.
    const pet = (kind: unknown, extra: Record<string, unknown> = {}, required = ['kind']) => ({ type: 'object', properties: { kind, ...extra }, required });
    const union = (alts: unknown[]) => ({ type: 'object', properties: { p: { oneOf: alts, discriminator: { propertyName: 'kind' } } }, $defs: { cat: pet({ const: 'cat' }, { lives: { type: 'integer' } }) } });
    expect(refused(union([{ $ref: '#/$defs/cat' }, pet({ enum: ['dog', 'wolf'] }), { type: 'null' }]))).toBeNull();
    expect(refused(union([{ $ref: '#/$defs/cat' }, pet({ enum: ['dog', 'cat'] })]))).toEqual({ path: '/properties/p', keyword: 'oneOf' });
    expect(refused(union([{ $ref: '#/$defs/cat' }, pet({ const: 'dog' }, {}, [])]))).toEqual({ path: '/properties/p', keyword: 'oneOf' });
    expect(refused(union([{ $ref: '#/$defs/cat' }, pet({ type: 'string' })]))).toEqual({ path: '/properties/p', keyword: 'oneOf' });
    const tagged = new SchemaGuide(compileJsonSchema(union([{ $ref: '#/$defs/cat' }, pet({ enum: ['dog', 'wolf'] }, { good: { type: 'boolean' } })])), vocab);
    for (const b of enc('{"p":{"kind":"cat",')) tagged.advance(b);
    expect([tagged.accepts(enc('"lives":1}}')), tagged.accepts(enc('"good":true}}'))]).toEqual([true, false]);
    expect(refused(obj({ u: { type: ['integer', 'string'], enum: [1] } }))).toBeNull();
    expect(refused(obj({ r: { $ref: 'https://example.com/s.json' } }))).toEqual({ path: '/properties/r', keyword: '$ref' });
    expect(refused(obj({ r: { $ref: '#/$defs/missing' } }))).toEqual({ path: '/properties/r', keyword: '$ref' });
    expect(refused({ type: 'object', properties: {}, required: ['a'] })).toEqual({ path: '', keyword: 'required' });
    expect(refused(obj({ a: false }))).toEqual({ path: '/properties/a', keyword: 'schema' });
    expect(refused({ type: 'string' })).toEqual({ path: '', keyword: 'type' });
    expect(refused({ type: 'strin' })).toEqual({ path: '', keyword: 'type' });
    expect(refused({ anyOf: [{ type: 'object' }, { type: 'array' }] })).toBeNull();
    // Without a type, the keywords say which: a pattern or a bound is never dropped for "any value".
    const typeless = compileJsonSchema({ type: 'object', properties: { p: { pattern: '^x+$' }, n: { minimum: 3, maximum: 4 }, both: { maxLength: 2, maxItems: 1 } } });
    const node = (name: string) => typeless.nodes[(typeless.nodes[typeless.root] as { props: Array<{ name: string; node: number }> }).props.find((q) => q.name === name)!.node];
    expect(node('p')).toMatchObject({ k: 'str' });
    expect(node('n')).toMatchObject({ k: 'num', integer: false });
    expect(node('both')).toMatchObject({ k: 'alt' });
    // An enum beside a type keeps the values of that type; none of them is a refusal.
    const typedEnum = compileJsonSchema({ type: 'object', properties: { e: { type: ['string', 'null'], enum: ['a', 1, null, 2.5] } } });
    const values = (typedEnum.nodes[(typedEnum.nodes[typedEnum.root] as { props: Array<{ node: number }> }).props[0].node] as { values: Uint8Array[] }).values;
    expect(values.map((v) => new TextDecoder().decode(v))).toEqual(['"a"', 'null']);
    expect(refused(obj({ e: { type: 'integer', enum: [1.5, 'x'] } }))).toEqual({ path: '/properties/e', keyword: 'enum' });
    // So do the other keywords beside an enum or a const (before, only the type was): bounds, multiples,
    // lengths, a pattern (searched for, as JSON Schema reads it), a format, an object's and an array's keywords, a $ref.
    const listed = (schema: unknown) => {
      const c = compileJsonSchema({ type: 'object', properties: { e: schema }, $defs: { small: { maximum: 9 } } });
      const lit = c.nodes[(c.nodes[c.root] as { props: Array<{ node: number }> }).props[0].node] as { values: Uint8Array[] };
      return lit.values.map((v) => new TextDecoder().decode(v));
    };
    expect(listed({ enum: [1, 500, 4.5, 10, -3], minimum: 0, maximum: 100, multipleOf: 0.5, exclusiveMaximum: 10 })).toEqual(['1', '4.5']);
    expect(listed({ enum: [0.3, 0.35, 0.6], multipleOf: 0.1 })).toEqual(['0.3', '0.6']);
    expect(listed({ enum: ['abc', 'de', 'fé'], maxLength: 2 })).toEqual(['"de"', '"fé"']);
    expect(listed({ enum: ['xaby', 'b', 'ab'], pattern: 'a.' })).toEqual(['"xaby"', '"ab"']);
    expect(listed({ enum: ['2026-12-07', '2026-13-01', 'today'], format: 'date' })).toEqual(['"2026-12-07"']);
    expect(listed({ enum: [{ a: 1 }, { b: 2 }, { a: 'x' }, [1]], properties: { a: { type: 'integer' } }, required: ['a'] })).toEqual(['{"a":1}', '[1]']); // an object's keywords do not apply to an array
    expect(listed({ enum: [[1, 2], [1], [3, 4, 5]], minItems: 2, items: { maximum: 4 } })).toEqual(['[1,2]']);
    expect(listed({ enum: [3, 30], anyOf: [{ $ref: '#/$defs/small' }] })).toEqual(['3']);
    expect(listed({ const: 'b', enum: ['a', 'b'] })).toEqual(['"b"']);
    expect(refused(obj({ e: { const: 'b', enum: ['a'] } }))).toEqual({ path: '/properties/e', keyword: 'const' });
    expect(refused(obj({ e: { enum: [500], maximum: 100 } }))).toEqual({ path: '/properties/e', keyword: 'enum' });
    expect(refused(obj({ e: { enum: ['a'], format: 'color' } }))).toEqual({ path: '/properties/e', keyword: 'format' });
    expect(refused(obj({ e: { enum: ['a'], pattern: '(' } }))).toEqual({ path: '/properties/e', keyword: 'pattern' });
    expect(refused(obj({ e: { enum: [1], anyOf: [{ $ref: '#/$defs/none' }] } }))).toEqual({ path: '/properties/e/anyOf/0', keyword: '$ref' });
    expect(refused({ anyOf: [{ type: 'object' }, { type: 'null' }] })).toEqual({ path: '', keyword: 'type' });
    expect(refused({ type: 'array', minItems: 3, maxItems: 2 })).toEqual({ path: '', keyword: 'minItems' });
    expect(refused({ type: 'object', minProperties: 3, maxProperties: 2 })).toEqual({ path: '', keyword: 'minProperties' });
    expect(refused({ type: 'object', properties: { a: true, b: true }, required: ['a', 'b'], maxProperties: 1 })).toEqual({ path: '', keyword: 'maxProperties' });
    expect(refused({ type: 'object', properties: { a: true }, minProperties: 2 })).toEqual({ path: '', keyword: 'minProperties' });
    // An optional property is not written where the required ones after it would pass maxProperties
    // (found by a random-schema walk: a reply wrote "a" and got stuck needing "b").
    const tight = { type: 'object', properties: { a: { type: 'null' }, b: { type: 'null' }, c: { type: 'null' } }, required: ['b'], maxProperties: 1 };
    expect(walkIn(tight, '{"b": null}').done).toBe(true);
    expect(walkIn(tight, '{"a"')).toMatchObject({ accepted: 2, done: false });
    expect(walkIn({ ...tight, maxProperties: 2 }, '{"a": null, "b": null}').done).toBe(true);
    expect(walkIn({ ...tight, maxProperties: 2 }, '{"b": null, "c": null}').done).toBe(true);
    // uniqueItems: only items of listed values, never a tuple, and no more items needed than there are values.
    expect(refused({ type: 'array', items: { type: 'string', maxLength: 5 }, uniqueItems: true })).toEqual({ path: '', keyword: 'uniqueItems' });
    expect(refused({ type: 'array', items: { type: 'string', pattern: 'a+' }, uniqueItems: true })).toEqual({ path: '', keyword: 'uniqueItems' });
    expect(refused({ type: 'array', items: { type: 'integer' }, uniqueItems: true })).toEqual({ path: '', keyword: 'uniqueItems' });
    expect(refused({ type: 'array', items: { type: 'string', minLength: 2 }, uniqueItems: true })).toBeNull();
    expect(refused({ type: 'array', uniqueItems: true })).toEqual({ path: '', keyword: 'uniqueItems' });
    expect(refused({ type: 'array', prefixItems: [{ const: 1 }], items: { const: 2 }, uniqueItems: true })).toEqual({ path: '', keyword: 'uniqueItems' });
    expect(refused({ type: 'array', items: { enum: [1, 2] }, uniqueItems: true, minItems: 3 })).toEqual({ path: '', keyword: 'minItems' });
    expect(refused({ type: 'array', items: { enum: [1, 2] }, uniqueItems: 'yes' })).toEqual({ path: '', keyword: 'uniqueItems' });
    expect(refused({ type: 'array', items: { type: 'string' }, uniqueItems: true, maxItems: 0 })).toBeNull();
    // No property allowed, yet one needed (found by a random-schema walk: the reply got stuck inside the object).
    expect(refused(obj({ e: { type: 'object', additionalProperties: false, minProperties: 1 } }))).toEqual({ path: '/properties/e', keyword: 'minProperties' });
    expect(refused(obj({ e: { enum: Array.from({ length: 1001 }, (_, i) => i) } }))).toEqual({ path: '/properties/e', keyword: 'enum' });
    // References that only lead to each other, or to themselves beside another alternative, are no value a reply could start.
    expect(refused({ $ref: '#/$defs/a', $defs: { a: { $ref: '#/$defs/b' }, b: { $ref: '#/$defs/a' } } })?.keyword).toBe('$ref');
    expect(refused({ $ref: '#/$defs/a', $defs: { a: { anyOf: [{ $ref: '#/$defs/a' }, { type: 'object' }] } } })).toEqual({ path: '/$defs/a', keyword: 'anyOf' });
    // A recursive root, a list of types, and the same schema again (compiled once).
    const tree = { type: 'object', properties: { kids: { type: 'array', items: { $ref: '#' } } } };
    expect(refused(tree)).toBeNull();
    expect(compileJsonSchema(structuredClone(tree))).toBe(compileJsonSchema(tree));
  });
});
