/**
 * Regular expressions for guided decoding (a JSON schema's `pattern` and `format`, vLLM's
 * guided_regex): an ECMAScript pattern parsed and compiled to a Thompson NFA over UTF-8 bytes, run as
 * a set of states, so a guide can ask after every byte whether the text can still match the whole
 * pattern. A reply is generated to match the pattern whole (anchors `^` and `$` at its ends are
 * implied): every such string also matches a JSON schema's unanchored pattern, so a guided reply is
 * always valid.
 *
 * Supported: literals (any Unicode character, `\uXXXX`, `\n`, `\t`...), `.`, classes `[a-z0-9_]`,
 * `[^...]`, `\d \w \s \D \W \S`, groups `(...)`, `(?:...)`, `(?<name>...)`, alternation, the quantifiers
 * `? * + {n} {n,} {n,m}` (lazy forms too: same strings). `.`, negated classes and `\D \W \S` stand for
 * printable ASCII only, and a class range beyond ASCII for its ASCII part: the reply draws from fewer
 * characters than the pattern allows, never from more. Lookarounds, backreferences, anchors inside
 * the pattern and flags are refused (RegexError), as are patterns past MAX_NFA_STATES.
 */

export class RegexError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'RegexError';
  }
}

/** Most groups one inside another (the parser and the compiler recurse into each). */
export const MAX_GROUP_DEPTH = 128;
/** Most NFA states a pattern may compile to (counted repetitions copy their operand). */
export const MAX_NFA_STATES = 4096;

/** Sorted, disjoint inclusive byte ranges. */
type ByteSet = Array<[number, number]>;

/** A parsed pattern (parseRegex): ASCII characters as byte sets, others as their UTF-8 bytes in a row. */
export type RegexNode = Node;
type Node =
  | { t: 'bytes'; set: ByteSet }
  /** A character outside ASCII: its UTF-8 bytes in a row. */
  | { t: 'seq'; bytes: number[] }
  | { t: 'cat'; items: Node[] }
  | { t: 'alt'; items: Node[] }
  | { t: 'rep'; item: Node; min: number; max: number };

const PRINTABLE: ByteSet = [[0x20, 0x7e]];
const DIGIT: ByteSet = [[0x30, 0x39]];
const WORD: ByteSet = [
  [0x30, 0x39],
  [0x41, 0x5a],
  [0x5f, 0x5f],
  [0x61, 0x7a],
];
const SPACE: ByteSet = [
  [0x09, 0x0d],
  [0x20, 0x20],
];

function normalize(set: ByteSet): ByteSet {
  const sorted = set.filter(([lo, hi]) => lo <= hi).sort((a, b) => a[0] - b[0]);
  const out: ByteSet = [];
  for (const [lo, hi] of sorted) {
    const last = out[out.length - 1];
    if (last && lo <= last[1] + 1) last[1] = Math.max(last[1], hi);
    else out.push([lo, hi]);
  }
  return out;
}

/** `within` minus `set`. */
function complement(set: ByteSet, within: ByteSet): ByteSet {
  const out: ByteSet = [];
  for (const [lo, hi] of within) {
    let from = lo;
    for (const [a, b] of normalize(set)) {
      if (b < from || a > hi) continue;
      if (a > from) out.push([from, a - 1]);
      from = Math.max(from, b + 1);
    }
    if (from <= hi) out.push([from, hi]);
  }
  return out;
}

const CLASS_ESCAPES: Record<string, ByteSet> = {
  d: DIGIT,
  w: WORD,
  s: SPACE,
  D: complement(DIGIT, PRINTABLE),
  W: complement(WORD, PRINTABLE),
  S: complement(SPACE, PRINTABLE),
};
const CHAR_ESCAPES: Record<string, number> = { n: 0x0a, t: 0x09, r: 0x0d, f: 0x0c, v: 0x0b, '0': 0 };

class Parser {
  private i = 0;
  private depth = 0;
  constructor(private readonly src: string) {}

  parse(): Node {
    let src = this.src;
    // Anchors at the ends are what a whole match means anyway.
    if (src.startsWith('^')) this.i = 1;
    // A final $ is an anchor unless an odd run of backslashes escapes it.
    const slashes = src.length - 1 - src.slice(0, -1).replace(/\\+$/, '').length;
    const end = src.endsWith('$') && slashes % 2 === 0 ? src.length - 1 : src.length;
    src = src.slice(0, end);
    const node = this.alternation(src);
    if (this.i < src.length) throw new RegexError(`unexpected ${JSON.stringify(src[this.i])} at ${this.i}`);
    return node;
  }

  private alternation(src: string): Node {
    const items = [this.sequence(src)];
    while (src[this.i] === '|') {
      this.i++;
      items.push(this.sequence(src));
    }
    return items.length === 1 ? items[0] : { t: 'alt', items };
  }

  private sequence(src: string): Node {
    const items: Node[] = [];
    while (this.i < src.length && src[this.i] !== '|' && src[this.i] !== ')') items.push(this.quantified(src, this.atom(src)));
    return { t: 'cat', items };
  }

  private quantified(src: string, atom: Node): Node {
    let node = atom;
    for (;;) {
      const ch = src[this.i];
      let min: number;
      let max: number;
      if (ch === '*' || ch === '+' || ch === '?') {
        this.i++;
        [min, max] = ch === '*' ? [0, Infinity] : ch === '+' ? [1, Infinity] : [0, 1];
      } else if (ch === '{' && /^\{\d+(,\d*)?\}/.test(src.slice(this.i))) {
        const m = /^\{(\d+)(,(\d*))?\}/.exec(src.slice(this.i))!;
        this.i += m[0].length;
        min = Number(m[1]);
        max = m[2] === undefined ? min : m[3] === '' ? Infinity : Number(m[3]);
        if (min > max) throw new RegexError(`quantifier ${m[0]}: min above max`);
        if (min > 1000 || (max !== Infinity && max > 1000)) throw new RegexError(`quantifier ${m[0]}: counts above 1000 are not supported`);
      } else return node;
      if (src[this.i] === '?') this.i++; // lazy: the same strings
      node = { t: 'rep', item: node, min, max };
    }
  }

  private atom(src: string): Node {
    const ch = src[this.i];
    if (ch === '(') {
      this.i++;
      if (src.startsWith('?:', this.i)) this.i += 2;
      else if (/^\?<[A-Za-z_$][\w$]*>/.test(src.slice(this.i))) this.i = src.indexOf('>', this.i) + 1;
      else if (src[this.i] === '?') throw new RegexError(`lookarounds are not supported (at ${this.i - 1})`);
      if (++this.depth > MAX_GROUP_DEPTH) throw new RegexError(`groups nested more than ${MAX_GROUP_DEPTH} deep`);
      const inner = this.alternation(src);
      this.depth--;
      if (src[this.i] !== ')') throw new RegexError('unclosed group');
      this.i++;
      return inner;
    }
    if (ch === '[') return this.charClass(src);
    if (ch === '.') {
      this.i++;
      return { t: 'bytes', set: PRINTABLE };
    }
    if (ch === '^' || ch === '$') throw new RegexError(`anchors inside the pattern are not supported (at ${this.i})`);
    if (ch === '*' || ch === '+' || ch === '?' || ch === ')' || ch === '|') throw new RegexError(`unexpected ${JSON.stringify(ch)} at ${this.i}`);
    if (ch === '\\') {
      const esc = this.escape(src);
      return typeof esc === 'number' ? charNode(esc) : { t: 'bytes', set: esc };
    }
    const cp = src.codePointAt(this.i)!;
    this.i += cp > 0xffff ? 2 : 1;
    return charNode(cp);
  }

  /** After a backslash: a character (its code point) or a class. */
  private escape(src: string): number | ByteSet {
    const e = src[this.i + 1];
    if (e === undefined) throw new RegexError('a pattern cannot end with a backslash');
    this.i += 2;
    if (e in CLASS_ESCAPES) return CLASS_ESCAPES[e];
    if (e in CHAR_ESCAPES) return CHAR_ESCAPES[e];
    if (e === 'u' || e === 'x') {
      const m = (e === 'u' ? /^[0-9a-fA-F]{4}/ : /^[0-9a-fA-F]{2}/).exec(src.slice(this.i));
      if (!m) throw new RegexError(`bad \\${e} escape`);
      this.i += m[0].length;
      return parseInt(m[0], 16);
    }
    if (/[1-9]/.test(e)) throw new RegexError('backreferences are not supported');
    if (/[bBpPkc]/.test(e)) throw new RegexError(`\\${e} is not supported`);
    return e.codePointAt(0)!;
  }

  private charClass(src: string): Node {
    this.i++;
    const negated = src[this.i] === '^';
    if (negated) this.i++;
    const set: ByteSet = [];
    const multi: number[][] = [];
    // As in ECMAScript, [] matches nothing and [^] any character.
    while (src[this.i] !== ']') {
      if (this.i >= src.length) throw new RegexError('unclosed character class');
      const lo = this.classChar(src);
      if (typeof lo !== 'number') {
        set.push(...lo);
        continue;
      }
      let hi = lo;
      if (src[this.i] === '-' && src[this.i + 1] !== ']' && this.i + 1 < src.length) {
        this.i++;
        const h = this.classChar(src);
        if (typeof h !== 'number') throw new RegexError('a class escape cannot end a range');
        if (h < lo) throw new RegexError('a range out of order in a character class');
        hi = h;
      }
      if (lo < 0x80) set.push([lo, Math.min(hi, 0x7f)]);
      // Characters beyond ASCII: single ones kept (their bytes in a row), ranges cut to their ASCII part.
      else if (lo === hi && !negated) multi.push([...new TextEncoder().encode(String.fromCodePoint(lo))]);
    }
    this.i++;
    if (negated) return { t: 'bytes', set: complement(set, PRINTABLE) };
    const bytes: Node = { t: 'bytes', set: normalize(set) };
    return multi.length === 0 ? bytes : { t: 'alt', items: [bytes, ...multi.map((b) => ({ t: 'seq' as const, bytes: b }))] };
  }

  private classChar(src: string): number | ByteSet {
    if (src[this.i] === '\\') {
      const e = src[this.i + 1];
      if (e === 'b') {
        this.i += 2;
        return 0x08;
      }
      return this.escape(src);
    }
    const cp = src.codePointAt(this.i)!;
    this.i += cp > 0xffff ? 2 : 1;
    return cp;
  }
}

function charNode(cp: number): Node {
  if (cp < 0x80) return { t: 'bytes', set: [[cp, cp]] };
  return { t: 'seq', bytes: [...new TextEncoder().encode(String.fromCodePoint(cp))] };
}

/** A compiled pattern: NFA states, each a byte transition (ranges, next) or empty moves. */
export interface Nfa {
  readonly ranges: ReadonlyArray<ByteSet | null>;
  readonly next: readonly number[];
  readonly eps: ReadonlyArray<readonly number[]>;
  readonly accept: number;
  /** The closure of the start state. */
  readonly start: readonly number[];
  /** Per state, whether a match can still be reached from it. */
  readonly live: readonly boolean[];
  /** Per state, the fewest characters from it to a match (UTF-8 continuation bytes count none); Infinity where none can be reached. */
  readonly fewest: readonly number[];
}

/** Whether a byte move writes (the start of) a character: anything but UTF-8 continuation bytes alone. */
const writesCharacter = (set: ByteSet): boolean => !set.every(([lo, hi]) => lo >= 0x80 && hi <= 0xbf);

/** The moves into each state, each with its cost in characters: [from, cost]. */
function movesInto(nfa: { ranges: ReadonlyArray<ByteSet | null>; next: readonly number[]; eps: ReadonlyArray<readonly number[]> }): Array<Array<[number, number]>> {
  const into: Array<Array<[number, number]>> = nfa.ranges.map(() => []);
  nfa.eps.forEach((to, s) => to.forEach((t) => into[t].push([s, 0])));
  nfa.next.forEach((t, s) => {
    const set = nfa.ranges[s];
    if (t >= 0 && set && set.length > 0) into[t].push([s, writesCharacter(set) ? 1 : 0]);
  });
  return into;
}

/** Per state, the fewest characters to the accepting state: a walk back from it in layers of one more character, free moves within a layer. */
function fewestToAccept(into: ReadonlyArray<ReadonlyArray<[number, number]>>, accept: number): number[] {
  const dist = into.map(() => Infinity);
  let layer = [accept];
  for (let d = 0; layer.length > 0; d++) {
    const next: number[] = [];
    const stack = layer.filter((s) => dist[s] > d);
    for (const s of stack) dist[s] = d;
    while (stack.length > 0) {
      const t = stack.pop()!;
      for (const [s, cost] of into[t]) {
        if (dist[s] <= d) continue;
        if (cost === 0) {
          dist[s] = d;
          stack.push(s);
        } else next.push(s);
      }
    }
    layer = next;
  }
  return dist;
}

/**
 * Per state, the most characters from it to a match, counted up to `cap` (a loop makes it `cap`);
 * -1 where no match can be reached. Null when the work (states times cap) would pass a bound.
 */
export function mostToAccept(nfa: Nfa, cap: number): Int32Array | null {
  if (nfa.ranges.length * (cap + 1) > 4_000_000) return null;
  const into = movesInto(nfa);
  const most = new Int32Array(nfa.ranges.length).fill(-1);
  most[nfa.accept] = 0;
  const work = [nfa.accept];
  while (work.length > 0) {
    const t = work.pop()!;
    for (const [s, cost] of into[t]) {
      const via = Math.min(cap, most[t] + cost);
      if (via <= most[s]) continue;
      most[s] = via;
      work.push(s);
    }
  }
  return most;
}

/**
 * Per state, every number of characters from it to a match, up to `cap` (bit r of a state's words:
 * a match r characters on). Null when the work (states times cap) would pass a bound.
 */
export function lengthsToAccept(nfa: Nfa, cap: number): Uint32Array[] | null {
  const words = (cap >> 5) + 1;
  if (nfa.ranges.length * words * 32 > 4_000_000) return null;
  const into = movesInto(nfa);
  const bits = nfa.ranges.map(() => new Uint32Array(words));
  bits[nfa.accept][0] = 1;
  const work = [nfa.accept];
  while (work.length > 0) {
    const t = work.pop()!;
    for (const [s, cost] of into[t]) {
      // Lengths from t, one more where the move writes a character: those not yet known from s.
      let grew = false;
      for (let w = 0; w < words; w++) {
        let v = bits[t][w];
        if (cost === 1) v = (v << 1) | (w > 0 ? bits[t][w - 1] >>> 31 : 0);
        if (w === words - 1 && (cap & 31) !== 31) v &= (1 << ((cap & 31) + 1)) - 1;
        const add = v & ~bits[s][w];
        if (add === 0) continue;
        bits[s][w] |= add;
        grew = true;
      }
      if (grew) work.push(s);
    }
  }
  return bits;
}

/** Whether any of the states has a match between `lo` and `hi` characters on (both included). */
export function matchWithin(lengths: readonly Uint32Array[], states: readonly number[], lo: number, hi: number): boolean {
  const from = Math.max(0, lo);
  for (const s of states) {
    const b = lengths[s];
    for (let r = from; r <= hi && r >> 5 < b.length; r++) if (b[r >> 5] & (1 << (r & 31))) return true;
  }
  return false;
}

class Builder {
  ranges: Array<ByteSet | null> = [];
  next: number[] = [];
  eps: number[][] = [];

  state(): number {
    if (this.ranges.length >= MAX_NFA_STATES) throw new RegexError(`the pattern needs more than ${MAX_NFA_STATES} states`);
    this.ranges.push(null);
    this.next.push(-1);
    this.eps.push([]);
    return this.ranges.length - 1;
  }

  /** States from `from` to a new end state matching `node`; returns the end. */
  build(node: Node, from: number): number {
    switch (node.t) {
      case 'bytes': {
        const to = this.state();
        this.edge(this.ranges[from] === null ? from : this.hop(from), node.set, to);
        return to;
      }
      case 'seq': {
        let at = from;
        for (const b of node.bytes) at = this.build({ t: 'bytes', set: [[b, b]] }, at);
        return at;
      }
      case 'cat': {
        let at = from;
        for (const item of node.items) at = this.build(item, at);
        return at;
      }
      case 'alt': {
        const end = this.state();
        for (const item of node.items) {
          const s = this.state();
          this.eps[from].push(s);
          this.eps[this.build(item, s)].push(end);
        }
        return end;
      }
      case 'rep': {
        let at = from;
        for (let k = 0; k < node.min; k++) at = this.build(node.item, at);
        if (node.max === Infinity) {
          // A loop: back to its start after each pass, out at any time.
          const loop = this.state();
          const out = this.state();
          this.eps[at].push(loop);
          this.eps[loop].push(out);
          const s = this.state();
          this.eps[loop].push(s);
          this.eps[this.build(node.item, s)].push(loop);
          return out;
        }
        const end = this.state();
        for (let k = node.min; k < node.max; k++) {
          this.eps[at].push(end);
          const s = this.state();
          this.eps[at].push(s);
          at = this.build(node.item, s);
        }
        this.eps[at].push(end);
        return end;
      }
    }
  }

  /** A fresh state reached from `from` by an empty move (a state holds one byte transition at most). */
  private hop(from: number): number {
    const s = this.state();
    this.eps[from].push(s);
    return s;
  }

  private edge(from: number, set: ByteSet, to: number): void {
    this.ranges[from] = set;
    this.next[from] = to;
  }
}

/** The states reached from `states` by empty moves, those from which no match can be reached left out. */
function closure(nfa: { eps: ReadonlyArray<readonly number[]>; live: readonly boolean[] }, states: Iterable<number>): number[] {
  const seen = new Set<number>();
  const stack = [...states];
  while (stack.length > 0) {
    const s = stack.pop()!;
    if (seen.has(s) || !nfa.live[s]) continue;
    seen.add(s);
    for (const e of nfa.eps[s]) stack.push(e);
  }
  return [...seen].sort((a, b) => a - b);
}

/** Per state, whether the accepting state can be reached from it (through byte moves of non-empty classes and empty moves). */
function liveStates(into: ReadonlyArray<ReadonlyArray<[number, number]>>, accept: number): boolean[] {
  const live = into.map(() => false);
  const stack = [accept];
  while (stack.length > 0) {
    const s = stack.pop()!;
    if (live[s]) continue;
    live[s] = true;
    for (const [from] of into[s]) stack.push(from);
  }
  return live;
}

/** An ECMAScript pattern (whole-match) parsed, as compileRegex reads it; RegexError where it is outside the subset. */
export function parseRegex(pattern: string): RegexNode {
  return new Parser(pattern).parse();
}

/** Compile an ECMAScript pattern (whole-match) to an NFA; RegexError where it is outside the subset. */
export function compileRegex(pattern: string): Nfa {
  const ast = parseRegex(pattern);
  const b = new Builder();
  const start = b.state();
  const accept = b.build(ast, start);
  // States that cannot reach a match are dropped from every set, so that a guide never walks into one.
  const into = movesInto(b);
  const live = liveStates(into, accept);
  if (!live[start]) throw new RegexError('the pattern matches nothing');
  return { ranges: b.ranges, next: b.next, eps: b.eps, live, accept, start: closure({ eps: b.eps, live }, [start]), fewest: fewestToAccept(into, accept) };
}

/** The states after byte `byte` from `states` (empty: no match can go on this way). */
export function stepRegex(nfa: Nfa, states: readonly number[], byte: number): number[] {
  const to: number[] = [];
  for (const s of states) {
    const set = nfa.ranges[s];
    if (set && set.some(([lo, hi]) => byte >= lo && byte <= hi)) to.push(nfa.next[s]);
  }
  return to.length === 0 ? to : closure(nfa, to);
}

/** Whether the text so far matches the whole pattern. */
export function regexAccepts(nfa: Nfa, states: readonly number[]): boolean {
  return states.includes(nfa.accept);
}

/** The fewest characters that take the text so far to a match. */
export function fewestToMatch(nfa: Nfa, states: readonly number[]): number {
  let n = Infinity;
  for (const s of states) n = Math.min(n, nfa.fewest[s]);
  return n;
}

/** Whether no byte can follow (the match cannot grow). */
export function regexStuck(nfa: Nfa, states: readonly number[]): boolean {
  return states.every((s) => nfa.ranges[s] === null);
}
