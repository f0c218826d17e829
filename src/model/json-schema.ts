/**
 * JSON schemas compiled for guided decoding (schema-guide.ts): OpenAI's structured outputs
 * (`response_format: {"type": "json_schema"}`) and vLLM's guided_json. A schema becomes a small graph
 * of nodes, each a kind of value the reply may write there; `$ref`s (to `#/$defs/...`,
 * `#/definitions/...` or `#`) become edges, so recursive schemas compile to finite graphs.
 *
 * The subset is what such schemas use: `type` (one or a list), `properties` with `required`
 * (properties are written in the schema's order, the required ones always; an optional one may be left
 * out), `minProperties` / `maxProperties`, `additionalProperties` (an object without `properties`
 * takes any keys, with values of that schema), `items` with `minItems` / `maxItems` and
 * `uniqueItems` (items of listed values: a value written is not offered again; strings without a
 * pattern or maxLength: one written already is refused at its closing quote), tuples
 * (`prefixItems`, or `items` as an array with `additionalItems`), `minLength` / `maxLength` (in code points), a
 * string's `pattern` (regex.ts; its text written without escapes) or `format` (FORMATS), a number's
 * `minimum` / `maximum` / `exclusiveMinimum` / `exclusiveMaximum` (number-pattern.ts) and `multipleOf`
 * (multiple-of.ts), `enum` and `const` (the values listed that the keywords beside them allow too,
 * schema-check.ts), `anyOf` (alternatives that start alike are followed together until the reply tells them
 * apart), `oneOf` whose alternatives start with different bytes (a string or null, an object or an
 * array...) or, objects alike, carry a tag of constant values telling them apart (so no document is
 * one of two), `allOf` (one schema as itself; several, or one beside other keywords, merged into one
 * by all-of.ts), and annotations. Anything else (`allOf` parts that cannot be merged, `not`, other
 * formats, oneOf alternatives a reply could not tell apart...) is refused with a
 * SchemaError naming the keyword and where it is, rather than silently not enforced. The root is an
 * object or an array, so that the reply is whole exactly when it closes.
 */

import { type Multiple, multipleOf, multiplesWithin } from './multiple-of.js';
import { type Bound, MAX_BOUND, boundedNumberPattern, tighter } from './number-pattern.js';
import { type Nfa, RegexError, compileRegex, fewestToMatch, lengthsToAccept, matchWithin, mostToAccept } from './regex.js';
import { mergeAllOf } from './all-of.js';
import { ANNOTATIONS, EmptySchemaError, FREE_FORMATS, INT32, SchemaError, isPlainObject, splitNullable } from './schema-terms.js';
import { SchemaChecker } from './schema-check.js';
import { TextCache } from '../util/text-cache.js';

export { SchemaError };

export interface Property {
  name: string;
  /** The key as the reply writes it, after its opening quote: JSON-escaped, then the closing quote. */
  key: Uint8Array;
  node: number;
  required: boolean;
}

export type SchemaNode =
  /**
   * An object: `props` in order; or with `values` (a node id) any keys, each value of that node, and
   * each key a string of `keys` (propertyNames: a string node; absent, any string).
   */
  | { k: 'obj'; props: Property[]; values: number | null; minProps: number; maxProps: number; keys?: number }
  /**
   * An array: item i of node `prefix[i]` (a tuple's), those after it of `items` (null: none, max is
   * then at most the prefix's length); `unique` (uniqueItems): none written twice, items of listed
   * values (a literal node) or strings (of no pattern and no maxLength, written as free keys are).
   */
  | { k: 'arr'; prefix: number[]; items: number | null; min: number; max: number; unique?: 'values' | 'strings' }
  /**
   * A string: its length in code points, and a pattern its text matches whole (pattern, format);
   * with a pattern and a minLength, per NFA state the most characters to a match, counted up to min
   * (mostToAccept), so that a reply never takes a way too short to reach it; with both bounds, per
   * NFA state every match length up to max (lengthsToAccept), so that a way whose matches all fall
   * outside the window (lengths 2 or 10 for 4 to 6) is never taken either.
   */
  | { k: 'str'; min: number; max: number; regex: Nfa | null; most?: Int32Array | null; lengths?: Uint32Array[] | null }
  /** A number (an integer only when `integer`), within bounds when `regex` is given (number-pattern.ts), a multiple of `multiple` when given (multiple-of.ts). */
  | { k: 'num'; integer: boolean; regex: Nfa | null; multiple: Multiple | null }
  /** One of these values, written exactly as JSON.stringify writes them (enum, const, booleans, null). */
  | { k: 'lit'; values: Uint8Array[] }
  /**
   * One of the alternatives. Those that may start alike are followed together until the bytes tell
   * them apart (anyOf); `exclusive` ones (oneOf) must be told apart by their first byte, so that no
   * document is one of two.
   */
  | { k: 'alt'; alts: number[]; exclusive?: boolean };

/**
 * patternProperties of one pattern, on an object of free keys (as pydantic writes a dict whose keys
 * have a pattern): its keys written as the pattern's matches (whole, as every pattern is written),
 * each value of its schema, so written as propertyNames and additionalProperties. Keys other
 * patterns or additionalProperties would take are never written: documents of the schema, all the
 * same. Several patterns, or one beside named properties, an additionalProperties schema or
 * propertyNames, are refused.
 */
function patternsAsNames(s: Record<string, unknown>, path: string): Record<string, unknown> {
  const { patternProperties, ...rest } = s;
  if (!isPlainObject(patternProperties)) throw new SchemaError(path, 'patternProperties', '"patternProperties" must be an object');
  const entries = Object.entries(patternProperties);
  if (entries.length === 0) return rest;
  const named = isPlainObject(s.properties) && Object.keys(s.properties).length > 0;
  if (entries.length > 1 || named || isPlainObject(s.additionalProperties) || s.propertyNames !== undefined) {
    throw new SchemaError(path, 'patternProperties', 'patternProperties is supported as one pattern on an object of free keys (no properties named, no additionalProperties schema, no propertyNames)');
  }
  const [[pattern, value]] = entries;
  return { ...rest, propertyNames: { pattern }, additionalProperties: value };
}

export interface CompiledSchema {
  /** A process-wide number: masks of guides of the same schema are shared. */
  readonly id: number;
  readonly nodes: readonly SchemaNode[];
  readonly root: number;
  /** Per node, the bytes a value of it may start with. */
  readonly first: readonly Set<number>[];
  /** A key of an object that takes any keys: a plain string. */
  readonly keyNode: number;
}

const KEYWORDS = new Set([...ANNOTATIONS, 'type', 'enum', 'const', 'properties', 'required', 'additionalProperties', 'propertyNames', 'patternProperties', 'items', 'prefixItems', 'additionalItems', 'minItems', 'maxItems', 'uniqueItems', 'minLength', 'maxLength', 'pattern', 'format', 'minimum', 'maximum', 'exclusiveMinimum', 'exclusiveMaximum', 'minProperties', 'maxProperties', 'multipleOf', 'anyOf', 'oneOf', 'allOf', '$ref']);

const OCTET = '(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])';
const FULL_TIME = '([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\\.[0-9]{1,6})?(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])';
// Days that every year has in their month (no 29 February: the year is not known yet when the day is written).
const FULL_DATE = '[0-9]{4}-((0[1-9]|1[0-2])-(0[1-9]|1[0-9]|2[0-8])|(0[13-9]|1[0-2])-(29|30)|(0[13578]|1[02])-31)';
const LABEL = '[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?';
const H16 = '[0-9A-Fa-f]{1,4}';
const PORT = '(6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[1-9][0-9]{0,3}|0)';
/** A character of a URI's path, query or fragment (RFC 3986 pchar: unreserved, sub-delims, ':', '@', or a percent escape). */
const PCHAR = "([A-Za-z0-9._~!$&'()*+,;=:@-]|%[0-9A-Fa-f]{2})";
const DIGITS = '[0-9]{1,9}';
const DUR_TIME = `T(${DIGITS}H(${DIGITS}M(${DIGITS}S)?)?|${DIGITS}M(${DIGITS}S)?|${DIGITS}S)`;
const IPV4 = `${OCTET}(\\.${OCTET}){3}`;
// RFC 4291's text forms (eight groups, or fewer around one "::"), without a zone or an IPv4 tail.
const IPV6 = [
  `(${H16}:){7}${H16}`,
  `(${H16}:){1,7}:`,
  `(${H16}:){1,6}:${H16}`,
  `(${H16}:){1,5}(:${H16}){1,2}`,
  `(${H16}:){1,4}(:${H16}){1,3}`,
  `(${H16}:){1,3}(:${H16}){1,4}`,
  `(${H16}:){1,2}(:${H16}){1,5}`,
  `${H16}:(:${H16}){1,6}`,
  `:((:${H16}){1,7}|:)`,
].join('|');
/** An address with an optional prefix length: an interface, as Python's ipaddress reads one (pydantic's IPv4Interface...). */
const IPV4_INTERFACE = `${IPV4}(/(3[0-2]|[12]?[0-9]))?`;
const IPV6_INTERFACE = `(${IPV6})(/(12[0-8]|1[01][0-9]|[1-9]?[0-9]))?`;
/** The formats a string may have, as the patterns its text is generated to (RFC 3339 dates and times, RFC 4122 ids...). */
export const FORMATS: Record<string, string> = {
  date: FULL_DATE,
  time: FULL_TIME,
  'date-time': `${FULL_DATE}T${FULL_TIME}`,
  uuid: '[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}',
  // OpenAPI's byte: base64 (RFC 4648's alphabet, padded).
  byte: '([A-Za-z0-9+/]{4})*([A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?',
  ipv4: IPV4,
  email: `[A-Za-z0-9._%+-]{1,64}@${LABEL}(\\.${LABEL})+`,
  hostname: `${LABEL}(\\.${LABEL})*`,
  ipv6: IPV6,
  // pydantic's formats for its ipaddress types: either address; an address with an optional prefix length.
  ipvanyaddress: `(${IPV4})|(${IPV6})`,
  ipv4interface: IPV4_INTERFACE,
  ipv6interface: IPV6_INTERFACE,
  ipvanyinterface: `(${IPV4_INTERFACE})|(${IPV6_INTERFACE})`,
  // An absolute URI with a host name (RFC 3986): scheme://host[:port][/path][?query][#fragment].
  uri: `[A-Za-z][A-Za-z0-9+.-]{0,31}://${LABEL}(\\.${LABEL})*(:${PORT})?(/${PCHAR}*)*(\\?(${PCHAR}|[/?])*)?(#(${PCHAR}|[/?])*)?`,
  // RFC 3339's ISO 8601 durations (P1Y2M3DT4H5M6S, P2W...).
  duration: `P((${DIGITS}D|${DIGITS}M(${DIGITS}D)?|${DIGITS}Y(${DIGITS}M(${DIGITS}D)?)?)(${DUR_TIME})?|${DUR_TIME}|${DIGITS}W)`,
};
const TYPES = ['object', 'array', 'string', 'number', 'integer', 'boolean', 'null'] as const;
/** The keywords that apply to one type only. */
const TYPE_KEYWORDS: Record<string, readonly string[]> = {
  object: ['properties', 'required', 'additionalProperties', 'minProperties', 'maxProperties', 'propertyNames', 'patternProperties'],
  array: ['items', 'prefixItems', 'additionalItems', 'minItems', 'maxItems', 'uniqueItems'],
  string: ['minLength', 'maxLength', 'pattern', 'format'],
  number: ['minimum', 'maximum', 'exclusiveMinimum', 'exclusiveMaximum', 'multipleOf'],
};
/** Most nodes a schema may compile to, and most enum and const values in all (OpenAI's bound): a mask's work grows with both. */
export const MAX_SCHEMA_NODES = 2000;
export const MAX_ENUM_VALUES = 1000;
/** Most integers between two bounds that unique items are listed as (uniqueItems). */
export const MAX_UNIQUE_RANGE = 1000;
/** Most allOf merges one inside another (a property named by several parts is itself merged). */
const MAX_MERGE_DEPTH = 32;
/** Most alternatives of one anyOf that may start alike (each is followed in a state of its own until the reply tells them apart). */
export const MAX_ALIKE = 64;

const enc = new TextEncoder();
const escapePointer = (s: string) => s.replace(/~/g, '~0').replace(/\//g, '~1');

let nextId = 1;

class Compiler {
  readonly nodes: SchemaNode[] = [];
  /** Where each alternative node comes from, for errors. */
  readonly paths = new Map<number, string>();
  /** The alternative nodes that stand for a `$ref`. */
  readonly refNodes = new Set<number>();
  private readonly refs = new Map<string, number>();
  private anyNode = -1;
  private literals = 0;
  /** allOf merges under way, one inside another. */
  private merges = 0;

  constructor(private readonly rootSchema: unknown) {}

  add(node: SchemaNode): number {
    if (this.nodes.length >= MAX_SCHEMA_NODES) throw new SchemaError('', 'schema', `the schema compiles to more than ${MAX_SCHEMA_NODES} nodes`);
    this.nodes.push(node);
    return this.nodes.length - 1;
  }

  /** Any JSON value (true, {}, and what a schema leaves open). */
  any(): number {
    if (this.anyNode < 0) {
      this.anyNode = this.add({ k: 'alt', alts: [] });
      const alts = [
        this.add({ k: 'obj', props: [], values: this.anyNode, minProps: 0, maxProps: Infinity }),
        this.add({ k: 'arr', prefix: [], items: this.anyNode, min: 0, max: Infinity }),
        this.add({ k: 'str', min: 0, max: Infinity, regex: null }),
        this.add({ k: 'num', integer: false, regex: null, multiple: null }),
        this.add({ k: 'lit', values: ['true', 'false', 'null'].map((s) => enc.encode(s)) }),
      ];
      this.nodes[this.anyNode] = { k: 'alt', alts };
    }
    return this.anyNode;
  }

  compile(s: unknown, path: string): number {
    if (s === true) return this.any();
    if (!isPlainObject(s)) throw new SchemaError(path, 'schema', s === false ? 'a schema of false allows no value' : 'a schema must be an object or true');
    if (s.nullable !== undefined) {
      const { rest, nullable } = splitNullable(s, path);
      return nullable ? this.alt([this.compile(rest, path), this.compile({ type: 'null' }, path)], path) : this.compile(rest, path);
    }
    for (const key of Object.keys(s)) if (!KEYWORDS.has(key)) throw new SchemaError(path, key, `"${key}" is not supported`);
    if (s.$ref !== undefined) {
      const others = Object.keys(s).filter((k) => k !== '$ref' && !ANNOTATIONS.has(k));
      if (others.length > 0) throw new SchemaError(path, others[0], `"${others[0]}" beside "$ref" is not supported`);
      return this.ref(s.$ref, path);
    }
    if (s.const !== undefined || s.enum !== undefined) {
      const keyword = s.const !== undefined ? 'const' : 'enum';
      if (keyword === 'enum' && (!Array.isArray(s.enum) || s.enum.length === 0)) throw new SchemaError(path, 'enum', '"enum" must be a non-empty array');
      const listed = keyword === 'const' ? [s.const] : (s.enum as unknown[]);
      // Only the values that the keywords beside the list allow too (a type, bounds, a length...) are valid.
      const beside = Object.fromEntries(Object.entries(s).filter(([k]) => k !== keyword && !ANNOTATIONS.has(k)));
      const values = listed.filter((v) => this.checker.fits(v, beside, path));
      if (values.length === 0) throw new SchemaError(path, keyword, `no value of "${keyword}" is valid under the keywords beside it (${Object.keys(beside).join(', ')})`);
      this.literals += values.length;
      if (this.literals > MAX_ENUM_VALUES) throw new SchemaError(path, keyword, `the schema has more than ${MAX_ENUM_VALUES} enum and const values`);
      return this.add({ k: 'lit', values: [...new Set(values.map((v) => JSON.stringify(v)))].map((v) => enc.encode(v)) });
    }
    if (s.allOf !== undefined) {
      if (!Array.isArray(s.allOf) || s.allOf.length === 0) throw new SchemaError(path, 'allOf', '"allOf" must be a non-empty array');
      const others = Object.keys(s).filter((k) => k !== 'allOf' && !ANNOTATIONS.has(k));
      // One schema in allOf (as generators wrap a $ref to annotate it) is that schema.
      if (s.allOf.length === 1 && others.length === 0) return this.compile(s.allOf[0], `${path}/allOf/0`);
      // Several, or one beside other keywords: merged into one schema (all-of.ts).
      if (this.merges >= MAX_MERGE_DEPTH) throw new SchemaError(path, 'allOf', `allOf merges nest more than ${MAX_MERGE_DEPTH} deep (a schema recursive through allOf is not supported)`);
      this.merges++;
      try {
        const beside = Object.fromEntries(others.map((k) => [k, s[k]]));
        return this.compile(mergeAllOf([...s.allOf, beside], path, (ref, at) => this.target(ref, at)), path);
      } finally {
        this.merges--;
      }
    }
    const union = s.anyOf ?? s.oneOf;
    if (union !== undefined) {
      const keyword = s.anyOf !== undefined ? 'anyOf' : 'oneOf';
      if (s.anyOf !== undefined && s.oneOf !== undefined) throw new SchemaError(path, 'oneOf', '"anyOf" with "oneOf" is not supported');
      if (!Array.isArray(union) || union.length === 0) throw new SchemaError(path, keyword, `"${keyword}" must be a non-empty array`);
      const others = Object.keys(s).filter((k) => k !== keyword && !ANNOTATIONS.has(k));
      if (others.length > 0) throw new SchemaError(path, others[0], `"${others[0]}" beside "${keyword}" is not supported`);
      const ids: number[] = [];
      let empty: EmptySchemaError | null = null;
      union.forEach((alt, i) => {
        const before = this.nodes.length;
        try {
          ids.push(this.compile(alt, `${path}/${keyword}/${i}`));
        } catch (e) {
          // An alternative no value satisfies (as allOf distributed over a union may make) adds
          // nothing: it is left out, if it failed before compiling any part of itself.
          if (!(e instanceof EmptySchemaError) || this.nodes.length !== before) throw e;
          empty ??= e;
        }
      });
      if (ids.length === 0) throw empty!;
      return this.alt(ids, path, keyword === 'oneOf');
    }
    // Without a type, the types whose keywords the schema uses (each applies to its own type only, so
    // writing just those types stays within the schema); none: any value.
    const types: string[] = s.type === undefined ? Object.keys(TYPE_KEYWORDS).filter((t) => TYPE_KEYWORDS[t].some((k) => s[k] !== undefined)) : Array.isArray(s.type) ? s.type : [s.type];
    for (const t of types) if (!(TYPES as readonly unknown[]).includes(t)) throw new SchemaError(path, 'type', `unknown type ${JSON.stringify(t)}`);
    if (types.length === 0) return this.any();
    // A number takes every integer: a list with both needs the number only.
    const kinds = types.includes('number') ? types.filter((t) => t !== 'integer') : types;
    const ids = [...new Set(kinds)].map((t) => this.typed(s, t, path));
    return ids.length === 1 ? ids[0] : this.alt(ids, path);
  }

  private alt(alts: number[], path: string, exclusive = false): number {
    const id = this.add({ k: 'alt', alts, exclusive });
    this.paths.set(id, path);
    return id;
  }

  private typed(s: Record<string, unknown>, type: string, path: string): number {
    switch (type) {
      case 'object':
        return this.object(s, path);
      case 'array':
        return this.array(s, path);
      case 'string': {
        const min = count(s, 'minLength', path) ?? 0;
        const max = count(s, 'maxLength', path) ?? Infinity;
        if (min > max) throw new SchemaError(path, 'minLength', `minLength ${min} exceeds maxLength ${max}`);
        const regex = stringPattern(s, path);
        if (regex === null) return this.add({ k: 'str', min, max, regex });
        // The lengths the pattern's matches can have must meet the bounds (each checked on its own).
        const keyword = s.pattern !== undefined ? 'pattern' : 'format';
        const fewest = fewestToMatch(regex, regex.start);
        if (fewest > max) throw new SchemaError(path, 'maxLength', `the ${keyword}'s shortest match has ${fewest} characters, more than maxLength ${max}`);
        const most = min > 0 ? mostToAccept(regex, min) : null;
        if (most && Math.max(...regex.start.map((st) => most[st])) < min) throw new SchemaError(path, 'minLength', `the ${keyword}'s longest match has fewer than minLength ${min} characters`);
        const lengths = min > 0 && max < Infinity ? lengthsToAccept(regex, max) : null;
        if (lengths && !matchWithin(lengths, regex.start, min, max)) throw new SchemaError(path, 'minLength', `no match of the ${keyword} has between minLength ${min} and maxLength ${max} characters`);
        return this.add({ k: 'str', min, max, regex, most, lengths });
      }
      case 'number':
      case 'integer':
        return this.number(s.format === 'int32' ? int32Bounds(s) : s, type === 'integer', path);
      case 'boolean':
        return this.add({ k: 'lit', values: [enc.encode('true'), enc.encode('false')] });
      default:
        return this.add({ k: 'lit', values: [enc.encode('null')] });
    }
  }

  /**
   * An array: its tuple's items (2020-12's `prefixItems`, or draft 7's `items` as an array), then
   * items of `items` (after `prefixItems`) or `additionalItems` (after an array of `items`): a
   * schema, true or absent (any value), or false (no more).
   */
  private array(s: Record<string, unknown>, path: string): number {
    const tupleKey = s.prefixItems !== undefined ? 'prefixItems' : Array.isArray(s.items) ? 'items' : null;
    if (tupleKey === 'prefixItems' && Array.isArray(s.items)) throw new SchemaError(path, 'items', '"items" as an array beside "prefixItems" is not supported');
    const tuple = tupleKey === null ? [] : s[tupleKey];
    if (!Array.isArray(tuple)) throw new SchemaError(path, 'prefixItems', '"prefixItems" must be an array of schemas');
    const restKey = tupleKey === 'items' ? 'additionalItems' : 'items';
    const rest = s[restKey];
    let max = count(s, 'maxItems', path) ?? Infinity;
    if (rest === false) max = Math.min(max, tuple.length);
    const min = count(s, 'minItems', path) ?? 0;
    if (min > max) throw new SchemaError(path, 'minItems', rest === false ? `minItems ${min} exceeds the ${tuple.length} items of the tuple` : `minItems ${min} exceeds maxItems ${max}`);
    const node: SchemaNode = { k: 'arr', prefix: [], items: null, min, max };
    const id = this.add(node);
    node.prefix = tuple.slice(0, max).map((item, i) => this.compile(item, `${path}/${tupleKey}/${i}`));
    if (rest !== false && max > tuple.length) {
      // Unique integers within two bounds are listed, so that none is written twice (as pydantic writes a set of bounded ints).
      const items = s.uniqueItems === true && tuple.length === 0 ? (this.boundedIntegers(rest, path) ?? rest) : rest;
      node.items = items === undefined || items === true ? this.any() : this.compile(items, `${path}/${restKey}`);
    }
    if (s.uniqueItems !== undefined && typeof s.uniqueItems !== 'boolean') throw new SchemaError(path, 'uniqueItems', '"uniqueItems" must be a boolean');
    if (s.uniqueItems === true && node.max > 0) this.unique(node, path);
    return id;
  }

  /**
   * An integer schema within two bounds (a $ref to one too) as the list of its values, where there are
   * at most MAX_UNIQUE_RANGE integers between the bounds; null for any other schema.
   */
  private boundedIntegers(items: unknown, path: string): Record<string, unknown> | null {
    const s = isPlainObject(items) && typeof items.$ref === 'string' ? this.target(items.$ref, path) : items;
    if (!isPlainObject(s) || s.type !== 'integer' || s.enum !== undefined || s.const !== undefined || s.nullable !== undefined) return null;
    // The tighter bound of each side (the checker then tells an exclusive one's own value out).
    const finite = (v: unknown) => (typeof v === 'number' && Number.isFinite(v) ? v : undefined);
    const lo = tighter(finite(s.minimum), finite(s.exclusiveMinimum), 1);
    const hi = tighter(finite(s.maximum), finite(s.exclusiveMaximum), -1);
    if (!lo || !hi || Math.floor(hi.v) - Math.ceil(lo.v) + 1 > Math.min(MAX_UNIQUE_RANGE, MAX_ENUM_VALUES - this.literals)) return null;
    const values: number[] = [];
    for (let v = Math.ceil(lo.v); v <= Math.floor(hi.v); v++) if (this.checker.fits(v, s, path)) values.push(v);
    return values.length > 0 ? { enum: values } : null;
  }

  /**
   * uniqueItems: items of listed values (enum, const, boolean, null, integers within two bounds), each written at most once, so at
   * most as many items as values; or strings of no pattern and no maxLength (a string written already
   * can always go on, so refusing its closing quote is no dead end).
   */
  private unique(node: Extract<SchemaNode, { k: 'arr' }>, path: string): void {
    if (node.prefix.length > 0) throw new SchemaError(path, 'uniqueItems', '"uniqueItems" with a tuple is not supported');
    const items = node.items === null ? null : resolved(this.nodes, node.items);
    if (items?.k === 'str' && items.regex === null && items.max === Infinity) {
      node.unique = 'strings';
      return;
    }
    if (items?.k !== 'lit') throw new SchemaError(path, 'uniqueItems', '"uniqueItems" is supported for items of listed values (enum, const, boolean, null, integers within two bounds at most 1000 apart) and for strings without a pattern or maxLength only');
    node.unique = 'values';
    node.max = Math.min(node.max, items.values.length);
    if (node.min > node.max) throw new SchemaError(path, 'minItems', `minItems ${node.min} exceeds the ${items.values.length} distinct values the items may have`);
  }

  /**
   * A number: within its bounds (a pattern of the numbers written within them), and a multiple of
   * multipleOf. Multiples within two bounds are few and are listed; with one side open, a number is
   * followed digit by digit from a round bound on (0, or the integer next to the bound), and the few
   * multiples between the bound and it are listed beside it, so that no way is a dead end.
   */
  private number(s: Record<string, unknown>, integer: boolean, path: string): number {
    const regex = numberBounds(s, integer, path);
    if (s.multipleOf === undefined) return this.add({ k: 'num', integer, regex, multiple: null });
    const multiple = typeof s.multipleOf === 'number' ? multipleOf(s.multipleOf) : null;
    if (!multiple) throw new SchemaError(path, 'multipleOf', '"multipleOf" must be a positive number of at most 12 digits and 12 decimal places');
    // Every integer is a multiple of 1, 0.5, 0.25...: nothing more to follow.
    if (integer && 10 ** multiple.e % multiple.k === 0) return this.add({ k: 'num', integer, regex, multiple: null });
    const low = tighter(s.minimum as number | undefined, s.exclusiveMinimum as number | undefined, 1);
    const high = tighter(s.maximum as number | undefined, s.exclusiveMaximum as number | undefined, -1);
    if (low && high) return this.multiples(multiple, low, high, integer, path, true);
    if (!low && !high) return this.add({ k: 'num', integer, regex: null, multiple });
    // One side open: from a round bound on (0, or the bound's next integer) every digit is followed.
    const round = low ? (low.v < 0 ? 0 : low.strict && Number.isInteger(low.v) ? low.v + 1 : Math.ceil(low.v)) : high!.v > 0 ? 0 : high!.strict && Number.isInteger(high!.v) ? high!.v - 1 : Math.floor(high!.v);
    const open = compileRegex(boundedNumberPattern(low ? { min: round } : { max: round }, integer)!);
    const followed = this.add({ k: 'num', integer, regex: open, multiple });
    if (low ? low.v === round && !low.strict : high!.v === round && !high!.strict) return followed;
    // The multiples between the bound and the round one (the round one itself being followed).
    const listed = low ? this.multiples(multiple, low, { v: round, strict: true }, integer, path, false) : this.multiples(multiple, { v: round, strict: true }, high!, integer, path, false);
    return listed < 0 ? followed : this.alt([listed, followed], path);
  }

  /** The multiples within two bounds, as a literal node; -1 for none unless `needed` (then a SchemaError). */
  private multiples(m: Multiple, lo: Bound, hi: Bound, integer: boolean, path: string, needed: boolean): number {
    const values = multiplesWithin(m, lo, hi, integer, MAX_ENUM_VALUES - this.literals);
    if (values === null) throw new SchemaError(path, 'multipleOf', `more than ${MAX_ENUM_VALUES} multiples (in all the schema's enum, const and listed multiples) within the bounds ${lo.v} and ${hi.v}`);
    if (values.length === 0) {
      if (needed) throw new SchemaError(path, 'multipleOf', `no multiple of ${m.k / 10 ** m.e} within the bounds`);
      return -1;
    }
    this.literals += values.length;
    return this.add({ k: 'lit', values: values.map((v) => enc.encode(v)) });
  }

  /** An object; `keysAt`: where its propertyNames came from, for errors (patternProperties' pattern). */
  private object(s: Record<string, unknown>, path: string, keysAt = `${path}/propertyNames`): number {
    if (s.patternProperties !== undefined) {
      const pattern = isPlainObject(s.patternProperties) ? Object.keys(s.patternProperties)[0] : undefined;
      return this.object(patternsAsNames(s, path), path, pattern === undefined ? keysAt : `${path}/patternProperties/${escapePointer(pattern)}`);
    }
    const minProps = count(s, 'minProperties', path) ?? 0;
    const maxProps = count(s, 'maxProperties', path) ?? Infinity;
    if (minProps > maxProps) throw new SchemaError(path, 'minProperties', `minProperties ${minProps} exceeds maxProperties ${maxProps}`);
    const node: SchemaNode = { k: 'obj', props: [], values: null, minProps, maxProps };
    const id = this.add(node);
    const props = s.properties ?? {};
    if (!isPlainObject(props)) throw new SchemaError(path, 'properties', '"properties" must be an object');
    const required = s.required ?? [];
    if (!Array.isArray(required) || required.some((r) => typeof r !== 'string')) throw new SchemaError(path, 'required', '"required" must be an array of property names');
    for (const r of required) if (!Object.hasOwn(props, r)) throw new SchemaError(path, 'required', `required property "${r}" is not in "properties"`);
    if (required.length > maxProps) throw new SchemaError(path, 'maxProperties', `${required.length} required properties exceed maxProperties ${maxProps}`);
    const additional = s.additionalProperties;
    if (additional !== undefined && typeof additional !== 'boolean' && !isPlainObject(additional)) throw new SchemaError(path, 'additionalProperties', '"additionalProperties" must be a boolean or a schema');
    const keySchema = this.propertyNames(s.propertyNames, path);
    // Named properties propertyNames refuses: refused when required, else never written.
    const names = Object.keys(props).filter((name) => {
      if (!keySchema || this.checker.fits(name, keySchema, `${path}/propertyNames`)) return true;
      if (required.includes(name)) throw new SchemaError(path, 'propertyNames', `required property "${name}" is not a name propertyNames allows`);
      return false;
    });
    if (names.length === 0) {
      // Names listed (enum, const): properties of those names, each a value of additionalProperties.
      const listed = keySchema && (keySchema.enum !== undefined || keySchema.const !== undefined) ? this.listedNames(keySchema, path) : null;
      if (listed && additional !== false) {
        const value = additional ?? true;
        const { propertyNames: _names, ...rest } = s;
        return this.replace(id, this.object({ ...rest, properties: Object.fromEntries(listed.map((n) => [n, value])), required: [], additionalProperties: false }, path));
      }
      // No properties named: any keys (each value of additionalProperties; of propertyNames when given), or none at all when it is false.
      if (additional === false && minProps > 0) throw new SchemaError(path, 'minProperties', `minProperties ${minProps} with no property allowed (none named, additionalProperties false)`);
      if (additional !== false) {
        node.values = isPlainObject(additional) ? this.compile(additional, `${path}/additionalProperties`) : this.any();
        if (keySchema) node.keys = this.keyNodeOf(keySchema, keysAt);
      }
      return id;
    }
    // Only the named properties are written: valid whatever additionalProperties allows.
    if (minProps > names.length) throw new SchemaError(path, 'minProperties', `minProperties ${minProps} exceeds the ${names.length} properties named`);
    node.props = names.map((name) => ({
      name,
      key: enc.encode(JSON.stringify(name).slice(1)),
      node: this.compile(props[name], `${path}/properties/${escapePointer(name)}`),
      required: required.includes(name),
    }));
    return id;
  }

  /** propertyNames as a schema of strings (true, or absent: none); false and non-schemas are refused. */
  private propertyNames(names: unknown, path: string): Record<string, unknown> | null {
    if (names === undefined || names === true) return null;
    if (!isPlainObject(names)) throw new SchemaError(path, 'propertyNames', '"propertyNames" must be a schema object (false, no property at all, is not supported)');
    return names;
  }

  /** The names propertyNames lists (enum, const) that its other keywords allow too. */
  private listedNames(keySchema: Record<string, unknown>, path: string): string[] {
    const listed = keySchema.const !== undefined ? [keySchema.const] : keySchema.enum;
    if (!Array.isArray(listed)) throw new SchemaError(`${path}/propertyNames`, 'enum', '"enum" must be an array');
    return [...new Set(listed.filter((n): n is string => typeof n === 'string' && this.checker.fits(n, keySchema, `${path}/propertyNames`)))];
  }

  /** The string node free keys are written by: propertyNames' pattern, format and lengths (nothing else a string node cannot hold). */
  private keyNodeOf(keySchema: Record<string, unknown>, at: string): number {
    if (keySchema.type !== undefined && keySchema.type !== 'string') throw new SchemaError(at, 'type', 'property names are strings: propertyNames may only be of type string');
    const union = keySchema.anyOf !== undefined || keySchema.oneOf !== undefined || keySchema.$ref !== undefined;
    const id = this.compile(union ? keySchema : { ...keySchema, type: 'string' }, at);
    if (this.nodes[id].k !== 'str') throw new SchemaError(at, 'propertyNames', 'propertyNames is supported as string keywords (pattern, format, minLength, maxLength) or names listed (enum, const)');
    return id;
  }

  /** Node `id` becomes a copy of node `other` (an object compiled again in another form); returns id. */
  private replace(id: number, other: number): number {
    this.nodes[id] = this.nodes[other];
    return id;
  }

  private ref(ref: unknown, path: string): number {
    const known = this.refs.get(ref as string);
    if (known !== undefined) return known;
    const target = this.target(ref, path);
    // The reference is a node of one alternative, set once its target compiles: a schema may refer to itself.
    const id = this.alt([], path);
    this.refs.set(ref as string, id);
    this.refNodes.add(id);
    this.nodes[id] = { k: 'alt', alts: [this.compile(target, (ref as string).slice(1))] };
    return id;
  }

  /** The schema a `$ref` points to. */
  private target(ref: unknown, path: string): unknown {
    if (typeof ref !== 'string' || !(ref === '#' || ref.startsWith('#/'))) throw new SchemaError(path, '$ref', `only references within the schema ("#/$defs/...") are supported, not ${JSON.stringify(ref)}`);
    let target: unknown = this.rootSchema;
    for (const part of ref === '#' ? [] : ref.slice(2).split('/')) {
      const key = decodeURIComponent(part).replace(/~1/g, '/').replace(/~0/g, '~');
      if (!isPlainObject(target) || !Object.hasOwn(target, key)) throw new SchemaError(path, '$ref', `${ref} does not resolve`);
      target = target[key];
    }
    return target;
  }

  private readonly checker = new SchemaChecker((ref, path) => this.target(ref, path), FORMATS);

}

const BOUNDS = ['minimum', 'maximum', 'exclusiveMinimum', 'exclusiveMaximum'] as const;

/** A number's bounds as the pattern of the numbers written within them, compiled; null for none. */
function numberBounds(s: Record<string, unknown>, integer: boolean, path: string): Nfa | null {
  const given = BOUNDS.filter((k) => s[k] !== undefined);
  if (given.length === 0) return null;
  for (const k of given) if (typeof s[k] !== 'number' || !Number.isFinite(s[k])) throw new SchemaError(path, k, `"${k}" must be a number`);
  const pattern = boundedNumberPattern(
    { min: s.minimum as number | undefined, max: s.maximum as number | undefined, exclusiveMin: s.exclusiveMinimum as number | undefined, exclusiveMax: s.exclusiveMaximum as number | undefined },
    integer,
  );
  if (pattern === null) throw new SchemaError(path, given[0], `no ${integer ? 'integer' : 'number'} within the bounds can be written (an empty range, for an integer one with no integer in it, or bounds past ${MAX_BOUND})`);
  return compileRegex(pattern);
}

/** A number of OpenAPI's int32 format: its bounds tightened to a signed 32-bit integer's range. */
function int32Bounds(s: Record<string, unknown>): Record<string, unknown> {
  const tight = (v: unknown, bound: number, pick: (a: number, b: number) => number) => (typeof v === 'number' ? pick(v, bound) : v === undefined ? bound : v);
  return { ...s, minimum: tight(s.minimum, INT32.min, Math.max), maximum: tight(s.maximum, INT32.max, Math.min) };
}

/** A string's pattern (ECMAScript, matched whole) or format, compiled; null for neither. */
function stringPattern(schema: Record<string, unknown>, path: string): Nfa | null {
  // A format that constrains no string (OpenAPI's password, binary) is none.
  const s = typeof schema.format === 'string' && FREE_FORMATS.has(schema.format) ? { ...schema, format: undefined } : schema;
  if (s.pattern !== undefined && s.format !== undefined) throw new SchemaError(path, 'format', '"pattern" with "format" is not supported');
  const keyword = s.pattern !== undefined ? 'pattern' : s.format !== undefined ? 'format' : null;
  if (keyword === null) return null;
  const value = s[keyword];
  if (typeof value !== 'string') throw new SchemaError(path, keyword, `"${keyword}" must be a string`);
  if (keyword === 'format' && !Object.hasOwn(FORMATS, value)) {
    throw new SchemaError(path, 'format', `format ${JSON.stringify(value)} is not supported (${Object.keys(FORMATS).join(', ')} are)`);
  }
  try {
    return compileRegex(keyword === 'format' ? FORMATS[value] : value);
  } catch (e) {
    if (e instanceof RegexError) throw new SchemaError(path, keyword, `${keyword} ${JSON.stringify(value.slice(0, 200))}: ${e.message}`);
    throw e;
  }
}

function count(s: Record<string, unknown>, keyword: string, path: string): number | undefined {
  const v = s[keyword];
  if (v === undefined) return undefined;
  if (!Number.isSafeInteger(v) || (v as number) < 0) throw new SchemaError(path, keyword, `"${keyword}" must be a whole number >= 0`);
  return v as number;
}

const START: Record<Exclude<SchemaNode['k'], 'lit' | 'alt'>, number[]> = {
  obj: [0x7b],
  arr: [0x5b],
  str: [0x22],
  num: [...'-0123456789'].map((c) => c.charCodeAt(0)),
};

/** The bytes each node's values may start with (to a fixed point: references may form cycles). */
function firstBytes(nodes: readonly SchemaNode[]): Set<number>[] {
  const first = nodes.map((n) => (n.k === 'lit' ? new Set(n.values.map((v) => v[0])) : n.k === 'alt' ? new Set<number>() : new Set(START[n.k])));
  for (let changed = true; changed; ) {
    changed = false;
    nodes.forEach((n, i) => {
      if (n.k !== 'alt') return;
      for (const alt of n.alts) {
        for (const b of first[alt]) {
          if (first[i].has(b)) continue;
          first[i].add(b);
          changed = true;
        }
      }
    });
  }
  return first;
}

/** A node past the references (alternatives of one) that stand for it. */
function resolved(nodes: readonly SchemaNode[], i: number): SchemaNode {
  let n = nodes[i];
  while (n.k === 'alt' && n.alts.length === 1) n = nodes[n.alts[0]];
  return n;
}

/**
 * Whether no document can be of two of these alternatives: each is an object with named properties,
 * all requiring a property (a tag, as generators write tagged unions with a `discriminator`) of
 * constant values, no value of one alternative's tag another's.
 */
function tagged(nodes: readonly SchemaNode[], alts: readonly number[]): boolean {
  const objects = alts.map((i) => resolved(nodes, i));
  if (objects.some((o) => o.k !== 'obj' || o.values !== null)) return false;
  const [head, ...rest] = objects as Array<Extract<SchemaNode, { k: 'obj' }>>;
  const dec = new TextDecoder();
  const tagValues = (o: Extract<SchemaNode, { k: 'obj' }>, name: string): string[] | null => {
    const p = o.props.find((q) => q.name === name && q.required);
    const lit = p && resolved(nodes, p.node);
    return lit && lit.k === 'lit' ? lit.values.map((v) => dec.decode(v)) : null;
  };
  return head.props.some((p) => {
    const seen = new Set<string>();
    return [head, ...rest].every((o) => {
      const values = tagValues(o, p.name);
      if (!values || values.some((v) => seen.has(v))) return false;
      for (const v of values) seen.add(v);
      return true;
    });
  });
}

/**
 * Refuses alternatives that lead back to themselves before any value begins (`a: anyOf [$ref a, ...]`):
 * beginning one would begin it again without end. A cycle of alternative nodes is one.
 */
function leftRecursion(c: Compiler): void {
  const state = new Uint8Array(c.nodes.length); // 0 unseen, 1 on the path, 2 done
  const visit = (i: number): void => {
    const n = c.nodes[i];
    if (n.k !== 'alt' || state[i] === 2) return;
    state[i] = 1;
    for (const alt of n.alts) {
      if (state[alt] !== 1) visit(alt);
      else throw new SchemaError(c.paths.get(i) ?? '', c.refNodes.has(i) ? '$ref' : n.exclusive ? 'oneOf' : 'anyOf', 'an alternative that leads back to itself before any value begins');
    }
    state[i] = 2;
  };
  c.nodes.forEach((_, i) => visit(i));
}

/** Compiled schemas kept by their JSON text (the same schema in every request shares its masks). */
const compiled = new TextCache<CompiledSchema>(64, 'json-schema', (c) => ({ ...c, id: nextId++ }), {
  is: (e): e is SchemaError => e instanceof SchemaError,
  // The message is the error's whole (its path already in front).
  revive: (f) => Object.assign(new SchemaError(String(f.path), String(f.keyword), ''), { message: f.message }),
});

/** Compile a JSON schema for guided decoding; throws SchemaError where it is outside the subset. */
export function compileJsonSchema(schema: unknown): CompiledSchema {
  return compiled.get(JSON.stringify(schema), () => compileSchema(schema));
}

function compileSchema(schema: unknown): CompiledSchema {
  const c = new Compiler(schema);
  const root = c.compile(schema, '');
  const keyNode = c.add({ k: 'str', min: 0, max: Infinity, regex: null });
  const first = firstBytes(c.nodes);
  leftRecursion(c);
  c.nodes.forEach((n, i) => {
    if (n.k !== 'alt') return;
    if (first[i].size === 0) throw new SchemaError(c.paths.get(i) ?? '', '$ref', 'a reference that never reaches a value');
    for (const b of first[i]) {
      const alike = n.alts.filter((alt) => first[alt].has(b));
      const keyword = n.exclusive ? 'oneOf' : 'anyOf';
      if (alike.length > MAX_ALIKE) throw new SchemaError(c.paths.get(i) ?? '', keyword, `more than ${MAX_ALIKE} alternatives may start alike (with "${String.fromCharCode(b)}")`);
      // oneOf: alternatives that may start alike must be told apart by a tag, or a document could be of two.
      if (n.exclusive && alike.length > 1 && !tagged(c.nodes, alike)) {
        throw new SchemaError(c.paths.get(i) ?? '', 'oneOf', `oneOf alternatives that may start alike (with "${String.fromCharCode(b)}") and carry no tag telling them apart are not supported: a document could be of two (anyOf allows it)`);
      }
    }
  });
  // Every value of the root starts with { or [: it is an object or an array, whole when it closes.
  if ([...first[root]].some((b) => b !== 0x7b && b !== 0x5b)) throw new SchemaError('', 'type', 'the root must be an object or an array');
  return { id: nextId++, nodes: c.nodes, root, first, keyNode };
}
