/** What the JSON schema modules (json-schema.ts, all-of.ts, schema-check.ts) share: their error, and the keywords that only describe. */

/** A schema guided decoding cannot enforce, or that is not a valid schema: where, which keyword, and why. */
export class SchemaError extends Error {
  constructor(
    /** JSON pointer of the schema object at fault ('' for the root). */
    readonly path: string,
    readonly keyword: string,
    message: string,
  ) {
    super(`${path || '/'}: ${message}`);
    this.name = 'SchemaError';
  }
}

/** Keywords that describe a schema without constraining its documents (OpenAPI's discriminator names a oneOf's tag: the tag's own constant values tell the alternatives apart; the content keywords describe a string's encoded content and, as JSON Schema 2020-12 has them, assert nothing). */
export const ANNOTATIONS: ReadonlySet<string> = new Set(['title', 'description', 'default', 'examples', '$schema', '$id', '$comment', 'deprecated', 'readOnly', 'writeOnly', '$defs', 'definitions', 'discriminator', 'contentEncoding', 'contentMediaType', 'contentSchema']);

/**
 * OpenAPI's string formats that constrain no string (`password`: a hint to hide the input; `binary`:
 * any octets, a file's): a string of such a format is any string.
 */
export const FREE_FORMATS: ReadonlySet<string> = new Set(['password', 'binary']);

/** OpenAPI's int32: a signed 32-bit integer's range, as bounds. */
export const INT32 = { min: -(2 ** 31), max: 2 ** 31 - 1 } as const;

/** A schema no value satisfies (allOf parts with no type or value in common, or false): as an alternative of a union, it is left out. */
export class EmptySchemaError extends SchemaError {}

/**
 * OpenAPI 3.0's `nullable` (as tool schemas written for it carry): true, the schema's values and null
 * too; false, the schema's values. Returns the schema without it and whether null is added.
 */
export function splitNullable(s: Record<string, unknown>, path: string): { rest: Record<string, unknown>; nullable: boolean } {
  const { nullable, ...rest } = s;
  if (nullable !== undefined && typeof nullable !== 'boolean') throw new SchemaError(path, 'nullable', '"nullable" must be a boolean');
  return { rest, nullable: nullable === true };
}

/** A JSON object (not an array, not null): a schema object, or an object value. */
export const isPlainObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);
