/**
 * Stop sequences on generated text. Text is released only once it can no longer turn into a stop
 * sequence: a tail that is a prefix of some stop string is held back until the next piece settles
 * it. When a stop string appears, the text before it is final and the stop string is not shown,
 * unless it is one of those to keep (vLLM's include_stop_str_in_output): then it ends the text.
 * Text pushed while the matcher is not yet armed (a request's first minTokens - 1 tokens, as vLLM's
 * min_tokens skips its stop checks) is released at once and can hold no stop string.
 */
export class StopMatcher {
  private text = '';
  private emitted = 0;
  private done = false;
  private readonly stops: string[];

  constructor(
    stops: readonly string[] = [],
    private readonly kept: ReadonlySet<string> = new Set(),
  ) {
    this.stops = stops.filter((s) => s.length > 0);
  }

  get stopped(): boolean {
    return this.done;
  }

  /** The released text so far. */
  get output(): string {
    return this.text.slice(0, this.emitted);
  }

  /** Add generated text; returns what may be shown now and whether a stop string was hit (never unarmed). */
  push(piece: string, armed = true): { text: string; stopped: boolean } {
    if (this.done) return { text: '', stopped: true };
    this.text += piece;
    if (!armed) return { text: this.flush(), stopped: false };
    // A stop string can only start in the unreleased tail (that is what holding back guarantees).
    let hit = -1;
    let found = '';
    for (const s of this.stops) {
      const i = this.text.indexOf(s, this.emitted);
      if (i >= 0 && (hit < 0 || i < hit)) [hit, found] = [i, s];
    }
    if (hit >= 0) {
      const end = this.kept.has(found) ? hit + found.length : hit;
      const out = this.text.slice(this.emitted, end);
      this.text = this.text.slice(0, end);
      this.emitted = end;
      this.done = true;
      return { text: out, stopped: true };
    }
    let hold = 0;
    for (const s of this.stops) {
      for (let k = Math.min(s.length - 1, this.text.length - this.emitted); k > hold; k--) {
        if (this.text.endsWith(s.slice(0, k))) {
          hold = k;
          break;
        }
      }
    }
    const end = this.text.length - hold;
    const out = this.text.slice(this.emitted, end);
    this.emitted = end;
    return { text: out, stopped: false };
  }

  /** Release whatever is held back (the sequence ended for another reason). */
  flush(): string {
    if (this.done) return '';
    const out = this.text.slice(this.emitted);
    this.emitted = this.text.length;
    return out;
  }
}
