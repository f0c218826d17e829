/**
 * What was made from a text, kept by that text: compiled patterns, grammars and schemas, so that the
 * same guide in every request is compiled once and shares its masks. Past `max` entries the oldest
 * is dropped. A text whose making throws is not kept.
 */
export class TextCache<T> {
  private readonly kept = new Map<string, T>();

  constructor(private readonly max: number) {}

  /** What was made from `text`, or `make()` kept under it. */
  get(text: string, make: () => T): T {
    const known = this.kept.get(text);
    if (known !== undefined) return known;
    const made = make();
    if (this.kept.size >= this.max) this.kept.delete(this.kept.keys().next().value!);
    this.kept.set(text, made);
    return made;
  }
}
