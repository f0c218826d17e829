/**
 * Whether a JSON value is valid under a schema of the subset json-schema.ts compiles, read as JSON
 * Schema reads it: a `pattern` is searched for, not matched whole; values are equal whatever the
 * order of their keys; integers are the numbers without a fraction; a `format` is the pattern the guide
 * writes it by (for `uri`, a subset: absolute URIs with a host). The compiler asks it where a
 * schema lists its values (`enum`, `const`) beside other keywords, so that the values a reply may
 * write are those every keyword allows, not only the list.
 */
import { FREE_FORMATS, INT32, SchemaError, isPlainObject } from './schema-terms.js';
import { decimalOf } from './number-pattern.js';

/** A check past this many nested schemas is refused: a reference that leads to itself without a value to read. */
const MAX_DEPTH = 256;

/** JSON equality: numbers by value, objects whatever the order of their keys. */
export function sameJson(a: unknown, b: unknown): boolean {
  if (a === b) return true;
  if (Array.isArray(a)) return Array.isArray(b) && a.length === b.length && a.every((x, i) => sameJson(x, b[i]));
  if (isPlainObject(a) && isPlainObject(b)) {
    const keys = Object.keys(a);
    return keys.length === Object.keys(b).length && keys.every((k) => Object.hasOwn(b, k) && sameJson(a[k], b[k]));
  }
  return false;
}

function hasType(v: unknown, type: unknown): boolean {
  switch (type) {
    case 'null':
      return v === null;
    case 'boolean':
      return typeof v === 'boolean';
    case 'string':
      return typeof v === 'string';
    case 'number':
      return typeof v === 'number';
    case 'integer':
      return Number.isInteger(v);
    case 'array':
      return Array.isArray(v);
    case 'object':
      return isPlainObject(v);
    default:
      return false;
  }
}

/** Whether x is a whole multiple of m, exactly, on their shortest decimal texts. */
function isMultipleOf(x: number, m: number): boolean {
  const a = decimalOf(x);
  const b = decimalOf(m);
  if (b.digits === 0n) return false;
  return (a.digits * 10n ** BigInt(b.scale)) % (b.digits * 10n ** BigInt(a.scale)) === 0n;
}

export class SchemaChecker {
  constructor(
    /** The schema a `$ref` points to (throws where it does not resolve). */
    private readonly resolve: (ref: string, path: string) => unknown,
    /** The named formats, as the patterns their strings match whole. */
    private readonly formats: Record<string, string>,
  ) {}

  /** Whether `value` is valid under `schema` (at `path`, for errors). */
  fits(value: unknown, schema: unknown, path: string, depth = 0): boolean {
    if (depth > MAX_DEPTH) throw new SchemaError(path, '$ref', `the schema's references nest more than ${MAX_DEPTH} deep without a value to check`);
    if (schema === true) return true;
    if (schema === false) return false;
    if (!isPlainObject(schema)) throw new SchemaError(path, 'schema', 'a schema must be an object or a boolean');
    const s = schema;
    if (s.nullable === true && value === null) return true;
    const sub = (v: unknown, child: unknown, at: string) => this.fits(v, child, at, depth + 1);
    if (s.$ref !== undefined && !sub(value, this.resolve(s.$ref as string, path), String(s.$ref).slice(1))) return false;
    if (s.type !== undefined && !(Array.isArray(s.type) ? s.type : [s.type]).some((t) => hasType(value, t))) return false;
    if (s.const !== undefined && !sameJson(value, s.const)) return false;
    if (Array.isArray(s.enum) && !s.enum.some((e) => sameJson(value, e))) return false;
    if (Array.isArray(s.allOf) && !s.allOf.every((a, i) => sub(value, a, `${path}/allOf/${i}`))) return false;
    if (Array.isArray(s.anyOf) && !s.anyOf.some((a, i) => sub(value, a, `${path}/anyOf/${i}`))) return false;
    if (Array.isArray(s.oneOf) && s.oneOf.filter((a, i) => sub(value, a, `${path}/oneOf/${i}`)).length !== 1) return false;
    if (typeof value === 'number') return this.number(value, s);
    if (typeof value === 'string') return this.string(value, s, path);
    if (Array.isArray(value)) return this.array(value, s, path, depth);
    if (isPlainObject(value)) return this.object(value, s, path, depth);
    return true;
  }

  private number(v: number, s: Record<string, unknown>): boolean {
    const n = (k: string) => (typeof s[k] === 'number' ? (s[k] as number) : undefined);
    const [min, max, xmin, xmax, step] = [n('minimum'), n('maximum'), n('exclusiveMinimum'), n('exclusiveMaximum'), n('multipleOf')];
    if ((min !== undefined && v < min) || (max !== undefined && v > max)) return false;
    if (s.format === 'int32' && (v < INT32.min || v > INT32.max)) return false;
    if ((xmin !== undefined && v <= xmin) || (xmax !== undefined && v >= xmax)) return false;
    return step === undefined || isMultipleOf(v, step);
  }

  private string(v: string, s: Record<string, unknown>, path: string): boolean {
    const length = [...v].length;
    if (typeof s.minLength === 'number' && length < s.minLength) return false;
    if (typeof s.maxLength === 'number' && length > s.maxLength) return false;
    const pattern = (keyword: string, source: string, whole: boolean): boolean => {
      try {
        return new RegExp(whole ? `^(?:${source})$` : source, 'u').test(v);
      } catch (e) {
        throw new SchemaError(path, keyword, `${keyword} ${JSON.stringify(source.slice(0, 200))}: ${(e as Error).message}`);
      }
    };
    if (typeof s.pattern === 'string' && !pattern('pattern', s.pattern, false)) return false;
    if (typeof s.format === 'string' && !FREE_FORMATS.has(s.format)) {
      const format = this.formats[s.format];
      if (format === undefined) throw new SchemaError(path, 'format', `format ${JSON.stringify(s.format)} is not supported`);
      if (!pattern('format', format, true)) return false;
    }
    return true;
  }

  private array(v: unknown[], s: Record<string, unknown>, path: string, depth: number): boolean {
    if (typeof s.minItems === 'number' && v.length < s.minItems) return false;
    if (typeof s.maxItems === 'number' && v.length > s.maxItems) return false;
    if (s.uniqueItems === true && v.some((x, i) => v.slice(0, i).some((y) => sameJson(x, y)))) return false;
    // A tuple: 2020-12's prefixItems then items, or draft 7's items as an array then additionalItems.
    const tupleKey = Array.isArray(s.prefixItems) ? 'prefixItems' : Array.isArray(s.items) ? 'items' : null;
    const tuple = tupleKey === null ? [] : (s[tupleKey] as unknown[]);
    const restKey = tupleKey === 'items' ? 'additionalItems' : 'items';
    const rest = s[restKey];
    return v.every((item, i) => {
      if (i < tuple.length) return this.fits(item, tuple[i], `${path}/${tupleKey}/${i}`, depth + 1);
      return rest === undefined || this.fits(item, rest, `${path}/${restKey}`, depth + 1);
    });
  }

  private object(v: Record<string, unknown>, s: Record<string, unknown>, path: string, depth: number): boolean {
    const searchPattern = (source: string, text: string, at: string): boolean => {
      try {
        return new RegExp(source, 'u').test(text);
      } catch (e) {
        throw new SchemaError(at, 'patternProperties', `patternProperties ${JSON.stringify(source.slice(0, 200))}: ${(e as Error).message}`);
      }
    };
    const keys = Object.keys(v);
    if (typeof s.minProperties === 'number' && keys.length < s.minProperties) return false;
    if (typeof s.maxProperties === 'number' && keys.length > s.maxProperties) return false;
    if (Array.isArray(s.required) && !s.required.every((k) => typeof k === 'string' && Object.hasOwn(v, k))) return false;
    if (s.propertyNames !== undefined && !keys.every((k) => this.fits(k, s.propertyNames, `${path}/propertyNames`, depth + 1))) return false;
    const props = isPlainObject(s.properties) ? s.properties : {};
    const patterns = isPlainObject(s.patternProperties) ? Object.entries(s.patternProperties) : [];
    return keys.every((k) => {
      // A key named by properties, or matched (searched, as JSON Schema has it) by patternProperties, is valid under each schema so naming it; any other under additionalProperties.
      let named = Object.hasOwn(props, k);
      if (named && !this.fits(v[k], props[k], `${path}/properties/${k}`, depth + 1)) return false;
      for (const [p, sub] of patterns) {
        if (!searchPattern(p, k, `${path}/patternProperties`)) continue;
        named = true;
        if (!this.fits(v[k], sub, `${path}/patternProperties`, depth + 1)) return false;
      }
      return named || s.additionalProperties === undefined || this.fits(v[k], s.additionalProperties, `${path}/additionalProperties`, depth + 1);
    });
  }
}
