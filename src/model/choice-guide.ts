/**
 * Guided decoding to one of given strings (vLLM's guided_choice): at each step the tokens whose bytes
 * keep the reply a prefix of some choice, matched on bytes, so a choice may be written with any
 * tokenization the model prefers; the reply ends the moment it is a whole choice that no other choice
 * extends (where one choice is a prefix of another, the end tokens may end it there too). The choices
 * still possible are kept as a list of indices; a step looks only at the tokens that start with the
 * next byte of one of them (the vocabulary indexed by first byte once).
 */
import type { Guide } from './guide.js';

const byFirstByteCache = new WeakMap<ReadonlyArray<Uint8Array | null>, number[][]>();

/** The vocabulary's token ids by their first byte. */
function byFirstByte(vocab: ReadonlyArray<Uint8Array | null>): number[][] {
  let index = byFirstByteCache.get(vocab);
  if (!index) {
    index = Array.from({ length: 256 }, () => []);
    vocab.forEach((bytes, id) => {
      if (bytes) index![bytes[0]].push(id);
    });
    byFirstByteCache.set(vocab, index);
  }
  return index;
}

export class ChoiceGuide implements Guide {
  private readonly choices: Uint8Array[];
  /** Bytes of the reply so far (a prefix of every live choice). */
  private at = 0;
  /** The choices the reply is still a prefix of. */
  private live: number[];
  private readonly first: number[][];

  constructor(
    choices: readonly string[],
    private readonly vocab: ReadonlyArray<Uint8Array | null>,
    private readonly ends: readonly number[],
  ) {
    if (choices.length === 0 || choices.some((c) => c.length === 0)) throw new Error('guided choice needs at least one non-empty choice');
    const enc = new TextEncoder();
    this.choices = choices.map((c) => enc.encode(c));
    this.live = this.choices.map((_, i) => i);
    this.first = byFirstByte(vocab);
  }

  /** A live choice is complete. */
  private get complete(): boolean {
    return this.live.some((c) => this.choices[c].length === this.at);
  }

  get done(): boolean {
    return this.complete && this.live.every((c) => this.choices[c].length === this.at);
  }

  /** Whether `bytes` continue some live choice. */
  private continues(bytes: Uint8Array): boolean {
    return this.live.some((c) => this.extends(c, bytes));
  }

  private extends(c: number, bytes: Uint8Array): boolean {
    const choice = this.choices[c];
    if (this.at + bytes.length > choice.length) return false;
    for (let i = 0; i < bytes.length; i++) if (choice[this.at + i] !== bytes[i]) return false;
    return true;
  }

  allowed(): Uint8Array {
    const mask = new Uint8Array(this.vocab.length);
    const next = new Set<number>();
    for (const c of this.live) if (this.choices[c].length > this.at) next.add(this.choices[c][this.at]);
    for (const b of next) for (const id of this.first[b]) if (!mask[id] && this.continues(this.vocab[id]!)) mask[id] = 1;
    if (this.complete) for (const e of this.ends) mask[e] = 1;
    return mask;
  }

  advance(id: number): void {
    if (this.ends.includes(id)) return;
    const bytes = this.vocab[id];
    const live = bytes ? this.live.filter((c) => this.extends(c, bytes)) : [];
    if (live.length === 0) throw new Error(`token ${id} continues none of the choices`);
    this.live = live;
    this.at += bytes!.length;
  }
}
