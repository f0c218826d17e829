/**
 * Defaults merged with caller options, where an option given as `undefined` keeps its default
 * (a plain spread would let `{ epochs: undefined }` erase the default and silently train 0 steps).
 */
export function withDefaults<T extends object>(defaults: T, options: Partial<T> | undefined): T {
  const out = { ...defaults };
  if (options) for (const [k, v] of Object.entries(options)) if (v !== undefined) (out as Record<string, unknown>)[k] = v;
  return out;
}
