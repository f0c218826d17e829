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

/** A JSON object (not an array, not null): a schema object, or an object value. */
export const isPlainObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);
