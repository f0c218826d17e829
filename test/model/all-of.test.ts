/** mergeAllOf keyword by keyword, against merges worked out by hand (the guide's walks through merged schemas are in schema-guide.test.ts). */
import { describe, expect, it } from 'vitest';
import { mergeAllOf } from '../../src/model/all-of.js';
import { SchemaError } from '../../src/model/json-schema.js';

const defs: Record<string, unknown> = { '#/$defs/named': { type: 'object', properties: { name: { type: 'string' } }, required: ['name'], title: 'Named' } };
const resolve = (ref: unknown) => defs[ref as string];
const merge = (...parts: unknown[]) => mergeAllOf(parts, '/x', resolve);

describe('mergeAllOf', () => {
  it('merges types, listed values, bounds, multiples and strings keyword by keyword', () => {
    expect(merge({ type: ['number', 'string'] }, { type: ['integer', 'null', 'string'] }, true)).toEqual({ type: ['integer', 'string'] });
    expect(merge({ enum: [1, { a: [1, 2], b: null }, 'x'] }, { enum: [{ b: null, a: [1, 2] }, 'x', 3] }, { const: 'x' })).toEqual({ enum: ['x'] });
    expect(merge({ minimum: 1, maximum: 9, exclusiveMaximum: 8 }, { minimum: 3, maximum: 5 }, { minLength: 2 }, { minLength: 4, maxLength: 6 })).toEqual({ minimum: 3, maximum: 5, exclusiveMaximum: 8, minLength: 4, maxLength: 6 });
    // The least common multiple of 0.25, 0.3 and 2 is 6 (in hundredths: 25, 30, 200 -> 600).
    expect(merge({ multipleOf: 0.25 }, { multipleOf: 0.3 }, { multipleOf: 2 })).toEqual({ multipleOf: 6 });
    expect(merge({ multipleOf: 0.1 }, { multipleOf: 0.01 })).toEqual({ multipleOf: 0.1 });
    expect(merge({ format: 'date' }, { format: 'date', description: 'same' })).toEqual({ format: 'date' });
  });

  it('merges objects: properties of every part, named by several as an allOf, additionalProperties of one part applied to the properties it does not name', () => {
    expect(merge({ $ref: '#/$defs/named' }, { properties: { age: { type: 'integer' }, name: { maxLength: 5 } }, required: ['age'], minProperties: 1 }, { additionalProperties: { description: 'any', type: 'string' }, maxProperties: 3 })).toEqual({
      type: 'object',
      properties: { name: { allOf: [{ type: 'string' }, { maxLength: 5 }, { description: 'any', type: 'string' }] }, age: { allOf: [{ type: 'integer' }, { description: 'any', type: 'string' }] } },
      required: ['name', 'age'],
      additionalProperties: { description: 'any', type: 'string' },
      minProperties: 1,
      maxProperties: 3,
    });
    // A closed part: the properties it does not name are left out, unless required (then refused).
    expect(merge({ properties: { a: true, b: true } }, { properties: { a: { type: 'integer' } }, additionalProperties: false })).toEqual({ properties: { a: { allOf: [true, { type: 'integer' }] } }, additionalProperties: false });
    expect(() => merge({ properties: { b: true }, required: ['b'] }, { properties: { a: true }, additionalProperties: false })).toThrow(SchemaError);
  });

  it('merges arrays (items as an allOf; a tuple from one part), flattens nested allOfs, and distributes alternatives', () => {
    expect(merge({ items: { type: 'integer' }, minItems: 1 }, { items: { maximum: 3 }, maxItems: 4 }, { items: true })).toEqual({ items: { allOf: [{ type: 'integer' }, { maximum: 3 }] }, minItems: 1, maxItems: 4 });
    expect(merge({ prefixItems: [{ type: 'string' }], items: false }, { minItems: 1 })).toEqual({ prefixItems: [{ type: 'string' }], items: false, minItems: 1 });
    expect(merge({ allOf: [{ minimum: 1 }, { allOf: [{ maximum: 2 }] }] }, { type: 'integer' })).toEqual({ type: 'integer', minimum: 1, maximum: 2 });
    expect(merge({ type: 'object', oneOf: [{ required: ['a'] }, { required: ['b'] }] }, { minProperties: 1 })).toEqual({
      oneOf: [{ allOf: [{ minProperties: 1 }, { type: 'object' }, { required: ['a'] }] }, { allOf: [{ minProperties: 1 }, { type: 'object' }, { required: ['b'] }] }],
    });
  });

  it('refuses what it cannot merge, naming allOf', () => {
    for (const parts of [
      [{ type: 'string' }, { type: 'integer' }],
      [{ pattern: 'a' }, { pattern: 'b' }],
      [{ format: 'date' }, { format: 'time' }],
      [{ items: [true] }, { prefixItems: [true] }],
      [{ prefixItems: [true] }, { items: { type: 'string' } }],
      [{ enum: [1] }, { const: 2 }],
      [false],
      [{ properties: [] }, { type: 'object' }],
      [{ required: 'a' }, { type: 'object' }],
    ]) {
      expect(() => merge(...parts), JSON.stringify(parts)).toThrow(SchemaError);
    }
    // A part that leads back to itself is read at most 64 times.
    defs['#/$defs/loop'] = { allOf: [{ $ref: '#/$defs/loop' }, { minimum: 1 }] };
    expect(() => merge({ $ref: '#/$defs/loop' })).toThrow(/more than 64/);
  });
});
