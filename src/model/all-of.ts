/**
 * `allOf` of several schemas as one schema that json-schema.ts compiles: a document is valid under
 * every part exactly when it is valid under the merged schema (what the guide writes is, in any
 * case, valid under every part). Parts are read through their `$ref`s and nested `allOf`s; a part
 * with alternatives (`anyOf`, `oneOf`) makes the merge an alternative of merges, one per alternative
 * (A and (B or C) is (A and B) or (A and C)). Keyword by keyword:
 *  - `type`: the types every part allows (an integer is a number); `enum` and `const`: the values
 *    every list holds (the compiler then keeps those the other keywords allow);
 *  - bounds: the tightest of each (`minimum`, `maxLength`, `minItems`, `maxProperties`...);
 *    `multipleOf`: the least common multiple, exactly, of the decimal divisors;
 *  - objects: every part's properties, a property named by several parts valid under each (its
 *    schemas as an allOf), a property a part with `additionalProperties: false` does not name left
 *    out (refused where a part requires it), `required` joined, `additionalProperties` false if any
 *    part's is;
 *  - arrays: `items` of each part (as an allOf); tuples only in one part;
 *  - a `pattern` or `format` only in one part (or the same in several).
 * What cannot be merged so is refused with a SchemaError naming `allOf`.
 */
import { decimalOf } from './number-pattern.js';
import { sameJson } from './schema-check.js';
import { ANNOTATIONS, EmptySchemaError, SchemaError, isPlainObject, splitNullable } from './schema-terms.js';

type Schema = Record<string, unknown>;

/** The keywords mergeAllOf merges (or leaves out, as `additionalProperties: true` and `items: true`); annotations are left out too. */
const MERGED = new Set(['type', 'enum', 'const', 'minimum', 'exclusiveMinimum', 'minLength', 'minItems', 'minProperties', 'maximum', 'exclusiveMaximum', 'maxLength', 'maxItems', 'maxProperties', 'multipleOf', 'pattern', 'format', 'properties', 'required', 'additionalProperties', 'prefixItems', 'items', 'additionalItems', 'uniqueItems', 'propertyNames', 'patternProperties']);
/** Most `$ref`s and nested `allOf`s read while flattening one allOf (a schema whose allOf leads back to itself). */
const MAX_PARTS = 64;

/**
 * The parts of an allOf as plain schemas without `$ref` or `allOf` of their own, in order: a part's
 * reference and allOf where the part is, before its own keywords (an extended schema's properties
 * come first, and are written first).
 */
function flatten(parts: readonly unknown[], path: string, resolve: (ref: unknown, path: string) => unknown): Schema[] {
  const out: Schema[] = [];
  let read = 0;
  const visit = (part: unknown): void => {
    if (++read > MAX_PARTS) throw new SchemaError(path, 'allOf', `allOf reads more than ${MAX_PARTS} schemas through its references (a schema whose allOf leads back to itself?)`);
    if (part === true) return;
    if (part === false) throw new EmptySchemaError(path, 'allOf', 'a schema of false in allOf allows no value');
    if (!isPlainObject(part)) throw new SchemaError(path, 'allOf', 'a schema must be an object or true');
    if (part.nullable !== undefined) {
      // A nullable part is a union with null, distributed as any union is.
      const { rest, nullable } = splitNullable(part, path);
      visit(nullable ? { anyOf: [rest, { type: 'null' }] } : rest);
      return;
    }
    const { $ref, allOf, ...rest } = part;
    if ($ref !== undefined) visit(resolve($ref, path));
    if (allOf !== undefined) {
      if (!Array.isArray(allOf) || allOf.length === 0) throw new SchemaError(path, 'allOf', '"allOf" must be a non-empty array');
      allOf.forEach(visit);
    }
    if (Object.keys(rest).some((k) => !ANNOTATIONS.has(k))) out.push(rest);
  };
  parts.forEach(visit);
  return out;
}

/** The values of `key` in the parts that have it. */
const given = (parts: readonly Schema[], key: string): unknown[] => parts.filter((p) => p[key] !== undefined).map((p) => p[key]);

/** The types every part that names types allows (an integer is a number); undefined when none names any. */
function commonTypes(parts: readonly Schema[], path: string): string[] | undefined {
  const lists = given(parts, 'type').map((t) => (Array.isArray(t) ? t : [t]) as string[]);
  if (lists.length === 0) return undefined;
  let common = lists[0];
  for (const list of lists.slice(1)) {
    common = common.flatMap((t) => (list.includes(t) ? [t] : t === 'number' && list.includes('integer') ? ['integer'] : t === 'integer' && list.includes('number') ? ['integer'] : []));
  }
  common = [...new Set(common)];
  if (common.length === 0) throw new EmptySchemaError(path, 'allOf', `the schemas of allOf have no type in common (${lists.map((l) => JSON.stringify(l)).join(', ')})`);
  return common;
}

/** The least common multiple of decimal divisors, exactly; NaN for one that is not a positive number. */
function leastCommonMultiple(divisors: readonly unknown[]): number {
  if (divisors.some((d) => typeof d !== 'number' || !(d > 0) || !Number.isFinite(d))) return NaN;
  const decimals = divisors.map((d) => decimalOf(d as number));
  const scale = Math.max(...decimals.map((d) => d.scale));
  const gcd = (a: bigint, b: bigint): bigint => (b === 0n ? a : gcd(b, a % b));
  // Each divisor as an integer count of 10^-scale; their lcm, scaled back.
  const lcm = decimals.map((d) => d.digits * 10n ** BigInt(scale - d.scale)).reduce((a, b) => (a / gcd(a, b)) * b);
  return Number(`${lcm}e-${scale}`);
}

/** The one value of a keyword several parts may give alike (a pattern, a format, a tuple); a SchemaError when they differ. */
function alike(parts: readonly Schema[], key: string, path: string): unknown {
  const values = given(parts, key);
  if (values.some((v) => !sameJson(v, values[0]))) throw new SchemaError(path, 'allOf', `"${key}" in several schemas of allOf is not supported`);
  return values[0];
}

/** One schema of several: itself alone, or their allOf. */
const allOfOf = (schemas: readonly unknown[]): unknown => (schemas.length === 1 ? schemas[0] : { allOf: schemas });

function mergeObjects(parts: readonly Schema[], merged: Schema, path: string): void {
  for (const p of parts) {
    if (p.properties !== undefined && !isPlainObject(p.properties)) throw new SchemaError(path, 'properties', '"properties" must be an object');
    if (p.required !== undefined && (!Array.isArray(p.required) || p.required.some((r) => typeof r !== 'string'))) throw new SchemaError(path, 'required', '"required" must be an array of property names');
  }
  const names: string[] = [];
  for (const p of parts) if (isPlainObject(p.properties)) for (const name of Object.keys(p.properties)) if (!names.includes(name)) names.push(name);
  const required = [...new Set(given(parts, 'required').flat() as string[])];
  const properties: Schema = {};
  for (const name of names) {
    const schemas: unknown[] = [];
    let barred = false;
    for (const p of parts) {
      const props = isPlainObject(p.properties) ? p.properties : {};
      if (Object.hasOwn(props, name)) schemas.push(props[name]);
      else if (p.additionalProperties === false) barred = true;
      else if (isPlainObject(p.additionalProperties)) schemas.push(p.additionalProperties);
    }
    if (!barred) properties[name] = allOfOf(schemas);
    else if (required.includes(name)) throw new SchemaError(path, 'allOf', `property "${name}" is required in allOf but a schema of it (additionalProperties false) does not allow it`);
  }
  if (names.length > 0) merged.properties = properties;
  if (required.length > 0) merged.required = required;
  const additional = given(parts, 'additionalProperties');
  if (additional.includes(false)) merged.additionalProperties = false;
  else {
    const schemas = additional.filter((a) => a !== true);
    if (schemas.length > 0) merged.additionalProperties = allOfOf(schemas);
  }
}

function mergeArrays(parts: readonly Schema[], merged: Schema, path: string): void {
  const tuples = parts.filter((p) => p.prefixItems !== undefined || Array.isArray(p.items) || p.additionalItems !== undefined);
  if (tuples.length > 1) throw new SchemaError(path, 'allOf', 'tuples (prefixItems, items as an array) in several schemas of allOf are not supported');
  if (tuples.length === 1) {
    const t = tuples[0];
    if (parts.some((p) => p !== t && p.items !== undefined)) throw new SchemaError(path, 'allOf', 'a tuple with "items" of another schema of allOf is not supported');
    for (const key of ['prefixItems', 'items', 'additionalItems']) if (t[key] !== undefined) merged[key] = t[key];
    return;
  }
  const items = given(parts, 'items').filter((i) => i !== true);
  if (items.length > 0) merged.items = allOfOf(items);
}

/**
 * One schema (without allOf at its top) whose documents are those valid under every part; parts are
 * read through \`$ref\` (\`resolve\`) and nested allOfs.
 */
export function mergeAllOf(parts: readonly unknown[], path: string, resolve: (ref: unknown, path: string) => unknown): Schema {
  const flat = flatten(parts, path, resolve);
  // Alternatives: the merge of the others with each alternative in turn.
  const withUnion = flat.find((p) => p.anyOf !== undefined || p.oneOf !== undefined);
  if (withUnion) {
    const keyword = withUnion.anyOf !== undefined ? 'anyOf' : 'oneOf';
    const alts = withUnion[keyword];
    if (!Array.isArray(alts) || alts.length === 0) throw new SchemaError(path, keyword, `"${keyword}" must be a non-empty array`);
    const { [keyword]: _alts, ...restOfPart } = withUnion;
    const others = flat.filter((p) => p !== withUnion);
    return { [keyword]: alts.map((alt) => ({ allOf: [...others, restOfPart, alt] })) };
  }
  const merged: Schema = {};
  const types = commonTypes(flat, path);
  if (types) merged.type = types.length === 1 ? types[0] : types;
  // Listed values: those every list holds.
  const lists = flat.flatMap((p) => [...(p.const !== undefined ? [[p.const]] : []), ...(p.enum !== undefined ? [p.enum] : [])]);
  if (lists.some((l) => !Array.isArray(l) || l.length === 0)) throw new SchemaError(path, 'enum', '"enum" must be a non-empty array');
  if (lists.length > 0) {
    const values = (lists[0] as unknown[]).filter((v) => lists.every((l) => (l as unknown[]).some((w) => sameJson(v, w))));
    if (values.length === 0) throw new EmptySchemaError(path, 'allOf', 'the enum and const values of allOf have no value in common');
    merged.enum = values;
  }
  const tightest = (key: string, pick: (...xs: number[]) => number) => {
    const xs = given(flat, key);
    if (xs.length === 0) return;
    if (xs.some((x) => typeof x !== 'number')) throw new SchemaError(path, key, `"${key}" must be a number`);
    merged[key] = pick(...(xs as number[]));
  };
  for (const key of ['minimum', 'exclusiveMinimum', 'minLength', 'minItems', 'minProperties']) tightest(key, Math.max);
  for (const key of ['maximum', 'exclusiveMaximum', 'maxLength', 'maxItems', 'maxProperties']) tightest(key, Math.min);
  const divisors = given(flat, 'multipleOf');
  if (divisors.length > 0) {
    const lcm = leastCommonMultiple(divisors);
    if (Number.isNaN(lcm)) throw new SchemaError(path, 'multipleOf', '"multipleOf" must be a positive number');
    merged.multipleOf = lcm;
  }
  for (const key of ['pattern', 'format', 'patternProperties']) {
    const v = alike(flat, key, path);
    if (v !== undefined) merged[key] = v;
  }
  if (given(flat, 'uniqueItems').includes(true)) merged.uniqueItems = true;
  const names = given(flat, 'propertyNames');
  if (names.length > 0) merged.propertyNames = allOfOf(names);
  mergeObjects(flat, merged, path);
  mergeArrays(flat, merged, path);
  // Anything else (keywords the compiler does not take) is kept, for the compiler to refuse by name.
  for (const p of flat) for (const key of Object.keys(p)) if (!(key in merged) && !ANNOTATIONS.has(key) && !MERGED.has(key)) merged[key] = p[key];
  return merged;
}

