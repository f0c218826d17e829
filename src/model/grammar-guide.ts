/**
 * Guided decoding to a context-free grammar (vLLM's guided_grammar, compiled by grammar.ts): the
 * reply's bytes are run as a set of parses, each a stack of states (the top where the parse stands in
 * its rule, below it where each caller resumes). At each step the tokens whose bytes keep some parse
 * alive; the end tokens where a parse has finished rule `root`, and the reply ends by itself when one
 * has and none can go on.
 *
 * Stacks are shared: a frame is (state, the frame below), made once per grammar, so a set of parses is
 * a set of frame numbers, and the masks of a set are cached under those numbers (mask-cache.ts). The
 * steps from a set by a byte are kept too: the tokens of a vocabulary share their first bytes, and
 * replies revisit the same sets, so most bytes are a lookup.
 */
import type { CompiledGrammar } from './grammar.js';
import type { Guide } from './guide.js';
import { cachedMask, withEnds } from './mask-cache.js';

/** A parse's stack: a state, and below it the frame its rule returns to (null: rule `root`'s). */
interface Frame {
  readonly state: number;
  readonly below: Frame | null;
  /** Unique per grammar, never reused. */
  readonly id: number;
  /** The frames made on top of this one, by state. */
  above?: Map<number, Frame>;
}

/** Where the reply stands: the parses that can take another byte, and whether one has finished. */
interface Position {
  /** The frames whose state has byte moves, by id. */
  readonly tops: readonly Frame[];
  /** The tops' ids: the position's mask depends on them alone. */
  readonly key: string;
  /** The key of its mask (mask-cache.ts): the ids, or where they are long a number of this position's own, so that keys stay small beside their masks. */
  readonly maskKey: string;
  /** A parse has finished rule `root`: the reply may end here. */
  readonly accepts: boolean;
}

/**
 * Most frames one set of parses may hold: an ambiguous grammar can multiply them (a rule that may end
 * in two ways after each of n bytes holds 2^n stacks). Past it the set is cut: every parse kept can
 * still finish, so the reply stays a string of the grammar, only some of its ways are no longer offered.
 */
export const MAX_PARSES = 2048;
/** Frames made per grammar before its table starts afresh (frames in use stay valid): about 8 MB. */
export const MAX_FRAMES = 50_000;
/** Bytes of steps kept per grammar (their positions' keys and tops, roughly) before they are dropped and computed again. */
const MAX_STEP_BYTES = 8 * 1024 * 1024;

const DEAD: Position = { tops: [], key: 'dead', maskKey: 'dead', accepts: false };
/** Longest key of ids a mask is cached under. */
const MAX_MASK_KEY = 64;

/** The frames and steps of one grammar, shared by its guides. */
class Parses {
  private bottom = new Map<number, Frame>();
  private nextId = 0;
  private made = 0;
  private steps = new Map<string, Map<number, Position>>();
  private stepBytes = 0;
  /** Numbers the positions of long keys are cached under (never reused). */
  private nextLong = 0;
  /** Where a reply starts; made again after the frames start afresh, so that the old ones can go. */
  private first: Position | null = null;

  constructor(private readonly g: CompiledGrammar) {}

  get start(): Position {
    return (this.first ??= this.close([this.frame(this.g.start, null)]));
  }

  private frame(state: number, below: Frame | null): Frame {
    let table = this.bottom;
    if (below) table = below.above ??= new Map();
    let f = table.get(state);
    if (!f) {
      f = { state, below, id: this.nextId++ };
      table.set(state, f);
      if (++this.made > MAX_FRAMES) {
        this.bottom = new Map();
        this.made = 0;
        this.steps = new Map();
        this.stepBytes = 0;
        this.first = null;
      }
    }
    return f;
  }

  /** Every frame reachable from `seeds` without a byte: empty moves, calls (a frame pushed) and rule ends (popped). */
  private close(seeds: Frame[]): Position {
    const g = this.g;
    const seen = new Set<Frame>();
    const tops: Frame[] = [];
    let accepts = false;
    const work = seeds;
    while (work.length > 0) {
      const f = work.pop()!;
      if (seen.has(f)) continue;
      if (seen.size >= MAX_PARSES) break;
      seen.add(f);
      const s = f.state;
      if (g.bytes.start[s + 1] > g.bytes.start[s]) tops.push(f);
      const eps = g.eps.items;
      for (let k = g.eps.start[s]; k < g.eps.start[s + 1]; k++) work.push(this.frame(eps[k], f.below));
      const calls = g.calls.items;
      for (let k = g.calls.start[s]; k < g.calls.start[s + 1]; k += 2) {
        const back = calls[k + 1];
        work.push(this.frame(calls[k], g.tail[back] ? f.below : this.frame(back, f.below)));
      }
      if (g.ends[s]) {
        if (f.below) work.push(f.below);
        else accepts = true;
      }
    }
    if (tops.length === 0 && !accepts) return DEAD;
    tops.sort((a, b) => a.id - b.id);
    const key = tops.map((f) => f.id).join(',');
    return { tops, key, maskKey: key.length <= MAX_MASK_KEY ? key : `#${this.nextLong++}`, accepts };
  }

  /** Where `byte` leads from `pos` (DEAD where no parse takes it). */
  step(pos: Position, byte: number): Position {
    const key = pos.key;
    let known = this.steps.get(key);
    const hit = known?.get(byte);
    if (hit) return hit;
    const seeds: Frame[] = [];
    for (const f of pos.tops) {
      const by = this.g.bytes.items;
      for (let k = this.g.bytes.start[f.state]; k < this.g.bytes.start[f.state + 1]; k += 3) if (byte >= by[k] && byte <= by[k + 1]) seeds.push(this.frame(by[k + 2], f.below));
    }
    const next = seeds.length > 0 ? this.close(seeds) : DEAD;
    this.stepBytes += 64 + 2 * next.key.length + 8 * next.tops.length + (known ? 0 : 2 * key.length);
    if (this.stepBytes > MAX_STEP_BYTES) {
      this.steps = new Map();
      this.stepBytes = 0;
      known = undefined;
    }
    if (!known) this.steps.set(key, (known = new Map()));
    known.set(byte, next);
    return next;
  }
}

const parsesOf = new WeakMap<CompiledGrammar, Parses>();

function parses(g: CompiledGrammar): Parses {
  let p = parsesOf.get(g);
  if (!p) parsesOf.set(g, (p = new Parses(g)));
  return p;
}

export class GrammarGuide implements Guide {
  private readonly parses: Parses;
  private pos: Position;

  constructor(
    private readonly grammar: CompiledGrammar,
    private readonly vocab: ReadonlyArray<Uint8Array | null>,
    private readonly ends: readonly number[],
  ) {
    this.parses = parses(grammar);
    this.pos = this.parses.start;
  }

  /** The reply is a string of the grammar and cannot grow. */
  get done(): boolean {
    return this.pos.accepts && this.pos.tops.length === 0;
  }

  /** Where `bytes` lead from here (DEAD: nowhere). */
  private run(bytes: Uint8Array): Position {
    let p = this.pos;
    for (let i = 0; i < bytes.length && p !== DEAD; i++) p = this.parses.step(p, bytes[i]);
    return p;
  }

  allowed(): Uint8Array {
    const tokens = cachedMask(this.vocab, `grammar ${this.grammar.id}|${this.pos.maskKey}`, (bytes) => this.run(bytes) !== DEAD);
    // A whole string of the grammar may end here.
    return withEnds(tokens, this.ends, this.pos.accepts);
  }

  advance(id: number): void {
    if (this.ends.includes(id)) return;
    const bytes = this.vocab[id];
    const next = bytes ? this.run(bytes) : DEAD;
    if (next === DEAD) throw new Error(`token ${id} does not continue a string of the grammar`);
    this.pos = next;
  }
}
