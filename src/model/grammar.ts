/**
 * Context-free grammars for guided decoding (vLLM's guided_grammar): a grammar in GBNF, the
 * grammar format of llama.cpp that xgrammar reads too, parsed and compiled to one byte automaton per
 * rule whose edges may call other rules (a recursive transition network). grammar-guide.ts runs it
 * over a reply's bytes with a stack of return states per parse.
 *
 * GBNF: rules `name ::= body`, a body of alternatives `|` of sequences of string literals `"..."`,
 * character classes `[a-z0-9_]` and `[^...]`, `.` (any character), rule names and groups `(...)`, each
 * repeated by `* + ?`, `{m}`, `{m,}`, `{m,n}` or `{,n}`; `#` comments; escapes `\n \r \t \\ \" \[ \]`,
 * `\xHH`, `\uHHHH`, `\UHHHHHHHH`. The reply is a string of rule `root`. Characters are Unicode code
 * points written as UTF-8 (classes over any range, not only ASCII). A rule may run over several lines:
 * the next rule begins at the next `name ::=`.
 *
 * Refused (GrammarError): syntax errors, rules named twice, names of no rule, no `root`, left recursion
 * (a rule that can call itself before writing a byte, which no stack-based parse can run), token
 * references (`<[id]>`), and grammars past MAX_GRAMMAR_STATES. Alternatives that can never finish (a
 * rule that derives no finite string) are dropped, so a guided reply never walks into one; a root
 * that derives none is refused.
 */
import { TextCache } from '../util/text-cache.js';

export class GrammarError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'GrammarError';
  }
}

/** Most automaton states a grammar may compile to (counted repetitions copy their operand). */
export const MAX_GRAMMAR_STATES = 65_536;
/** Most groups one inside another, and most repetitions of one item (`"a"*?`): the parser and the compiler recurse into each. */
const MAX_DEPTH = 128;
const MAX_REPEATS = 8;
/** Largest count of a repetition `{m,n}`. */
const MAX_COUNT = 1000;
const MAX_CODE_POINT = 0x10ffff;

/**
 * A list of numbers per state, packed into two typed arrays (a compiled grammar is data only, so it
 * is handed between threads as a few buffers): state s's list is items[start[s]] .. items[start[s + 1] - 1].
 */
export interface StateLists {
  readonly start: Int32Array;
  readonly items: Int32Array;
}

/** A grammar compiled: per state its byte edges, empty moves and rule calls. */
export interface CompiledGrammar {
  /** A process-wide number: masks of guides of the same grammar are shared. */
  readonly id: number;
  /** Per state: byte edges as flat [lo, hi, to] triples (inclusive byte range). */
  readonly bytes: StateLists;
  /** Per state: the states it moves to without a byte. */
  readonly eps: StateLists;
  /** Per state: rule calls as flat [callee's start, return state] pairs. */
  readonly calls: StateLists;
  /** Per state: 1 where it ends its rule (then the parse returns to the caller). */
  readonly ends: Uint8Array;
  /**
   * Per state: 1 where nothing but the rule's end can follow it without a byte (a call returning there
   * is a tail call: it returns straight to the caller's caller, and the stack does not grow).
   */
  readonly tail: Uint8Array;
  /** The start state of rule `root`. */
  readonly start: number;
}

/** Inclusive byte ranges, one per byte of a UTF-8 sequence. */
type ByteSeq = Array<[number, number]>;

type Expr =
  /** Alternatives of byte sequences: a literal (one sequence), a character class (the UTF-8 forms of its ranges). */
  | { t: 'bytes'; seqs: ByteSeq[] }
  | { t: 'ref'; name: string }
  | { t: 'cat'; items: Expr[] }
  | { t: 'alt'; items: Expr[] }
  | { t: 'rep'; item: Expr; min: number; max: number };

// ---------------------------------------------------------------------------------------------
// Code points as UTF-8 byte ranges.

function utf8(cp: number): number[] {
  if (cp < 0x80) return [cp];
  if (cp < 0x800) return [0xc0 | (cp >> 6), 0x80 | (cp & 0x3f)];
  if (cp < 0x10000) return [0xe0 | (cp >> 12), 0x80 | ((cp >> 6) & 0x3f), 0x80 | (cp & 0x3f)];
  return [0xf0 | (cp >> 18), 0x80 | ((cp >> 12) & 0x3f), 0x80 | ((cp >> 6) & 0x3f), 0x80 | (cp & 0x3f)];
}

/**
 * The UTF-8 forms of the code points lo..hi (no surrogates) as sequences of byte ranges: the range is
 * split until, within each piece, every byte position runs over one contiguous range.
 */
function utf8Ranges(lo: number, hi: number, out: ByteSeq[]): void {
  // Pieces of one encoded length each, surrogates left out.
  for (const [a, b] of [
    [0, 0x7f],
    [0x80, 0x7ff],
    [0x800, 0xd7ff],
    [0xe000, 0xffff],
    [0x10000, MAX_CODE_POINT],
  ]) {
    const from = Math.max(lo, a);
    const to = Math.min(hi, b);
    if (from <= to) splitSameLength(from, to, out);
  }
}

function splitSameLength(lo: number, hi: number, out: ByteSeq[]): void {
  const n = utf8(lo).length;
  for (let i = 1; i < n; i++) {
    const m = (1 << (6 * i)) - 1;
    if ((lo & ~m) !== (hi & ~m)) {
      if ((lo & m) !== 0) {
        splitSameLength(lo, lo | m, out);
        splitSameLength((lo | m) + 1, hi, out);
        return;
      }
      if ((hi & m) !== m) {
        splitSameLength(lo, (hi & ~m) - 1, out);
        splitSameLength(hi & ~m, hi, out);
        return;
      }
    }
  }
  const a = utf8(lo);
  const b = utf8(hi);
  out.push(a.map((x, k) => [x, b[k]]));
}

/** Sorted, merged code point ranges. */
function mergeRanges(ranges: Array<[number, number]>): Array<[number, number]> {
  const sorted = ranges.filter(([a, b]) => a <= b).sort((x, y) => x[0] - y[0]);
  const out: Array<[number, number]> = [];
  for (const [a, b] of sorted) {
    const last = out[out.length - 1];
    if (last && a <= last[1] + 1) last[1] = Math.max(last[1], b);
    else out.push([a, b]);
  }
  return out;
}

function classExpr(ranges: Array<[number, number]>, negated: boolean): Expr {
  let set = mergeRanges(ranges);
  if (negated) {
    const out: Array<[number, number]> = [];
    let from = 0;
    for (const [a, b] of set) {
      if (a > from) out.push([from, a - 1]);
      from = b + 1;
    }
    if (from <= MAX_CODE_POINT) out.push([from, MAX_CODE_POINT]);
    set = out;
  }
  const seqs: ByteSeq[] = [];
  for (const [a, b] of set) utf8Ranges(a, b, seqs);
  return { t: 'bytes', seqs };
}

// ---------------------------------------------------------------------------------------------
// GBNF parsing.

const NAME = /[A-Za-z0-9_-]/;
/** A rule's head, `name ::=`, matched where the parser stands (sticky). */
const RULE_HEAD = /[A-Za-z0-9_-]+[ \t\r\n]*::=/y;

/** Where offset `at` of `src` is, as a person finds it: line and column, from 1. */
export function where(src: string, at: number): string {
  const before = src.slice(0, at);
  return `line ${before.split('\n').length}, column ${at - before.lastIndexOf('\n')}`;
}
const SIMPLE_ESCAPES: Record<string, number> = { n: 0x0a, r: 0x0d, t: 0x09, '0': 0 };

class Parser {
  private i = 0;
  private depth = 0;
  readonly rules = new Map<string, Expr>();
  readonly refs: Array<{ name: string; at: number }> = [];

  constructor(private readonly src: string) {}

  parse(): void {
    this.space();
    while (this.i < this.src.length) {
      const at = this.i;
      const name = this.name();
      this.space();
      if (!this.src.startsWith('::=', this.i)) throw this.error('expected "::=" after a rule name');
      this.i += 3;
      const body = this.alternation(false);
      if (this.rules.has(name)) throw this.error(`rule "${name}" is defined twice`, at);
      this.rules.set(name, body);
      this.space();
      if (this.src[this.i] === ')') throw this.error('unmatched ")"');
    }
  }

  private error(message: string, at = this.i): GrammarError {
    return new GrammarError(`${message} at ${where(this.src, at)}`);
  }

  /** White space (new lines included) and `#` comments. */
  private space(): void {
    const s = this.src;
    while (this.i < s.length) {
      const c = s[this.i];
      if (c === ' ' || c === '\t' || c === '\n' || c === '\r') this.i++;
      else if (c === '#') while (this.i < s.length && s[this.i] !== '\n') this.i++;
      else break;
    }
  }

  private name(): string {
    const from = this.i;
    while (this.i < this.src.length && NAME.test(this.src[this.i])) this.i++;
    if (this.i === from) throw this.error(this.i < this.src.length ? `unexpected ${JSON.stringify(this.src[this.i])}` : 'expected a rule name');
    return this.src.slice(from, this.i);
  }

  /** Whether a new rule (`name ::=`) begins here. */
  private atRule(): boolean {
    RULE_HEAD.lastIndex = this.i;
    return RULE_HEAD.test(this.src);
  }

  private alternation(nested: boolean): Expr {
    const items = [this.sequence(nested)];
    while (this.src[this.i] === '|') {
      this.i++;
      items.push(this.sequence(nested));
    }
    return items.length === 1 ? items[0] : { t: 'alt', items };
  }

  private sequence(nested: boolean): Expr {
    const items: Expr[] = [];
    for (;;) {
      this.space();
      const c = this.src[this.i];
      if (c === undefined || c === '|' || c === ')' || (!nested && this.atRule())) break;
      items.push(this.repeated(this.atom()));
    }
    return items.length === 1 ? items[0] : { t: 'cat', items };
  }

  private repeated(atom: Expr): Expr {
    let node = atom;
    for (let repeats = 0; ; repeats++) {
      this.space();
      const c = this.src[this.i];
      let min: number;
      let max: number;
      if (c === '*' || c === '+' || c === '?') {
        this.i++;
        [min, max] = c === '*' ? [0, Infinity] : c === '+' ? [1, Infinity] : [0, 1];
      } else if (c === '{') {
        const m = /^\{[ \t]*(\d*)[ \t]*(,[ \t]*(\d*)[ \t]*)?\}/.exec(this.src.slice(this.i, this.i + 40));
        if (!m || (m[1] === '' && m[2] === undefined)) throw this.error('expected a count {m}, {m,}, {m,n} or {,n}');
        min = m[1] === '' ? 0 : Number(m[1]);
        max = m[2] === undefined ? min : m[3] === '' ? Infinity : Number(m[3]);
        if (min > max) throw this.error(`repetition ${m[0]}: more at least than at most`);
        if (min > MAX_COUNT || (max !== Infinity && max > MAX_COUNT)) throw this.error(`repetition ${m[0]}: counts above ${MAX_COUNT} are not supported`);
        this.i += m[0].length;
      } else return node;
      if (repeats === MAX_REPEATS) throw this.error(`more than ${MAX_REPEATS} repetitions of one item`);
      node = { t: 'rep', item: node, min, max };
    }
  }

  private atom(): Expr {
    const s = this.src;
    const c = s[this.i];
    if (c === '"') {
      this.i++;
      const bytes: number[] = [];
      while (s[this.i] !== '"') {
        if (this.i >= s.length || s[this.i] === '\n') throw this.error('unterminated string literal');
        bytes.push(...utf8(this.char()));
      }
      this.i++;
      return { t: 'bytes', seqs: [bytes.map((b): [number, number] => [b, b])] };
    }
    if (c === '[') {
      this.i++;
      const negated = s[this.i] === '^';
      if (negated) this.i++;
      const ranges: Array<[number, number]> = [];
      while (s[this.i] !== ']') {
        if (this.i >= s.length) throw this.error('unterminated character class');
        const lo = this.char();
        let hi = lo;
        if (s[this.i] === '-' && s[this.i + 1] !== ']' && this.i + 1 < s.length) {
          this.i++;
          hi = this.char();
          if (hi < lo) throw this.error('character range out of order');
        }
        ranges.push([lo, hi]);
      }
      this.i++;
      if (ranges.length === 0 && !negated) throw this.error('empty character class');
      return classExpr(ranges, negated);
    }
    if (c === '.') {
      this.i++;
      return classExpr([], true);
    }
    if (c === '(') {
      if (++this.depth > MAX_DEPTH) throw this.error(`groups nested more than ${MAX_DEPTH} deep`);
      this.i++;
      const inner = this.alternation(true);
      this.depth--;
      this.space();
      if (s[this.i] !== ')') throw this.error('expected ")"');
      this.i++;
      return inner;
    }
    if (c === '<') throw this.error('token references (<...>) are not supported');
    const at = this.i;
    const name = this.name();
    this.refs.push({ name, at });
    return { t: 'ref', name };
  }

  /** One character of a literal or class: a code point, or an escape. */
  private char(): number {
    const s = this.src;
    if (s[this.i] !== '\\') {
      const cp = s.codePointAt(this.i)!;
      if (cp >= 0xd800 && cp <= 0xdfff) throw this.error('a lone surrogate is not a character');
      this.i += cp > 0xffff ? 2 : 1;
      return cp;
    }
    const e = s[this.i + 1];
    if (e === undefined) throw this.error('escape at the end');
    this.i += 2;
    if (e in SIMPLE_ESCAPES) return SIMPLE_ESCAPES[e];
    const digits = e === 'x' ? 2 : e === 'u' ? 4 : e === 'U' ? 8 : 0;
    if (digits > 0) {
      const hex = s.slice(this.i, this.i + digits);
      if (!new RegExp(`^[0-9A-Fa-f]{${digits}}$`).test(hex)) throw this.error(`\\${e} needs ${digits} hexadecimal digits`);
      this.i += digits;
      const cp = parseInt(hex, 16);
      if (cp > MAX_CODE_POINT || (cp >= 0xd800 && cp <= 0xdfff)) throw this.error(`\\${e}${hex} is not a character`);
      return cp;
    }
    if (/[!-/:-@[-`{-~]/.test(e)) return e.charCodeAt(0);
    throw this.error(`unknown escape \\${e}`);
  }
}

// ---------------------------------------------------------------------------------------------
// Compilation to automata.

class Builder {
  readonly bytes: number[][] = [];
  readonly eps: number[][] = [];
  readonly calls: number[][] = [];
  readonly starts: number[] = [];
  readonly finals: number[] = [];

  constructor(private readonly index: Map<string, number>) {
    for (let r = 0; r < index.size; r++) {
      this.starts.push(this.state());
      this.finals.push(this.state());
    }
  }

  state(): number {
    if (this.bytes.length >= MAX_GRAMMAR_STATES) throw new GrammarError(`the grammar compiles to more than ${MAX_GRAMMAR_STATES} states (large repetition counts copy their operand)`);
    this.bytes.push([]);
    this.eps.push([]);
    this.calls.push([]);
    return this.bytes.length - 1;
  }

  /**
   * Emit `e` from state `from`; returns its end, a new state with no moves yet. No move leads back
   * into `from`, so alternatives may share it.
   */
  frag(e: Expr, from: number): number {
    switch (e.t) {
      case 'bytes': {
        const end = this.state();
        for (const seq of e.seqs) {
          if (seq.length === 0) {
            this.eps[from].push(end);
            continue;
          }
          let cur = from;
          seq.forEach(([lo, hi], k) => {
            const next = k === seq.length - 1 ? end : this.state();
            this.bytes[cur].push(lo, hi, next);
            cur = next;
          });
        }
        return end;
      }
      case 'ref': {
        const end = this.state();
        this.calls[from].push(this.starts[this.index.get(e.name)!], end);
        return end;
      }
      case 'cat': {
        let cur = from;
        for (const item of e.items) cur = this.frag(item, cur);
        if (cur !== from) return cur;
        const end = this.state();
        this.eps[from].push(end);
        return end;
      }
      case 'alt': {
        const end = this.state();
        for (const item of e.items) this.eps[this.frag(item, from)].push(end);
        return end;
      }
      case 'rep': {
        let cur = from;
        for (let k = 0; k < e.min; k++) cur = this.frag(e.item, cur);
        const end = this.state();
        if (e.max === Infinity) {
          const loop = this.state();
          this.eps[cur].push(loop);
          this.eps[this.frag(e.item, loop)].push(loop);
          this.eps[loop].push(end);
          return end;
        }
        for (let k = e.min; k < e.max; k++) {
          this.eps[cur].push(end);
          cur = this.frag(e.item, cur);
        }
        this.eps[cur].push(end);
        return end;
      }
    }
  }
}

let nextId = 1;
/** Grammars kept compiled, each with its parses' frames and steps (grammar-guide.ts: up to about 16 MB). */
const compiled = new TextCache<CompiledGrammar>(16, 'grammar', (g) => ({ ...g, id: nextId++ }), {
  is: (e): e is GrammarError => e instanceof GrammarError,
  revive: (f) => new GrammarError(f.message),
});

/** Compile a GBNF grammar for guiding (kept by its text); GrammarError where it cannot guide a reply. */
export function compileGrammar(text: string): CompiledGrammar {
  return compiled.get(text, () => compile(text));
}

function compile(text: string): CompiledGrammar {
  const parser = new Parser(text);
  parser.parse();
  const names = [...parser.rules.keys()];
  if (!parser.rules.has('root')) throw new GrammarError('the grammar has no rule "root"');
  for (const ref of parser.refs) if (!parser.rules.has(ref.name)) throw new GrammarError(`no rule is named "${ref.name}" (at ${where(text, ref.at)})`);
  const index = new Map(names.map((n, k) => [n, k]));
  const b = new Builder(index);
  names.forEach((name, r) => b.eps[b.frag(parser.rules.get(name)!, b.starts[r])].push(b.finals[r]));
  const ruleOf = new Map(b.starts.map((s, r) => [s, r]));
  const productive = prune(b, ruleOf);
  if (!productive[index.get('root')!]) throw new GrammarError('rule "root" derives no finite string');
  refuseLeftRecursion(b, ruleOf, names);
  const n = b.bytes.length;
  const ends = new Uint8Array(n);
  for (const f of b.finals) ends[f] = 1;
  return {
    id: nextId++,
    bytes: stateLists(b.bytes),
    eps: stateLists(b.eps),
    calls: stateLists(b.calls),
    ends,
    tail: tails(b, ends),
    start: b.starts[index.get('root')!],
  };
}

/** Per-state lists as StateLists. */
function stateLists(lists: readonly (readonly number[])[]): StateLists {
  const start = new Int32Array(lists.length + 1);
  for (let s = 0; s < lists.length; s++) start[s + 1] = start[s] + lists[s].length;
  const items = new Int32Array(start[lists.length]);
  for (let s = 0; s < lists.length; s++) items.set(lists[s], start[s]);
  return { start, items };
}

/** Lists of numbers per index, packed: list i is items[start[i]] .. items[start[i + 1] - 1]. `each` calls `add` for every (index, item), the same way both times it is called. */
function packed(n: number, each: (add: (i: number, item: number) => void) => void): { start: Int32Array; items: Int32Array } {
  const start = new Int32Array(n + 1);
  each((i) => start[i + 1]++);
  for (let i = 0; i < n; i++) start[i + 1] += start[i];
  const items = new Int32Array(start[n]);
  const at = start.slice(0, n);
  each((i, item) => {
    items[at[i]++] = item;
  });
  return { start, items };
}

/**
 * The states from which their rule's end can be reached, in one backward pass: through empty moves,
 * byte moves (with `bytes`), and calls of rules whose start is itself such a state (found as the pass
 * goes: a call is passed once both its return state and its callee's start are reached). Returns
 * those states and the rules whose start is one: with bytes, the rules that derive a finite string;
 * without, those that derive the empty string.
 */
function reachingEnds(b: Builder, ruleOf: Map<number, number>, bytes: boolean): { live: Uint8Array; rules: boolean[] } {
  const n = b.bytes.length;
  const back = packed(n, (add) => {
    for (let s = 0; s < n; s++) {
      if (bytes) {
        const by = b.bytes[s];
        for (let k = 2; k < by.length; k += 3) add(by[k], s);
      }
      for (const t of b.eps[s]) add(t, s);
    }
  });
  // Calls as [state, callee rule, return state] triples, and their numbers by return state and by callee.
  const calls: number[] = [];
  for (let s = 0; s < n; s++) {
    const c = b.calls[s];
    for (let k = 0; k < c.length; k += 2) calls.push(s, ruleOf.get(c[k])!, c[k + 1]);
  }
  const byReturn = packed(n, (add) => {
    for (let i = 0; i < calls.length; i += 3) add(calls[i + 2], i);
  });
  const byCallee = packed(b.starts.length, (add) => {
    for (let i = 0; i < calls.length; i += 3) add(calls[i + 1], i);
  });
  const live = new Uint8Array(n);
  const rules = b.starts.map(() => false);
  const work: number[] = [];
  const reach = (s: number) => {
    if (!live[s]) {
      live[s] = 1;
      work.push(s);
    }
  };
  for (const f of b.finals) reach(f);
  while (work.length > 0) {
    const t = work.pop()!;
    for (let k = back.start[t]; k < back.start[t + 1]; k++) reach(back.items[k]);
    for (let k = byReturn.start[t]; k < byReturn.start[t + 1]; k++) {
      const i = byReturn.items[k];
      if (rules[calls[i + 1]]) reach(calls[i]);
    }
    const r = ruleOf.get(t);
    if (r !== undefined && !rules[r]) {
      rules[r] = true;
      for (let k = byCallee.start[r]; k < byCallee.start[r + 1]; k++) {
        const i = byCallee.items[k];
        if (live[calls[i + 2]]) reach(calls[i]);
      }
    }
  }
  return { live, rules };
}

/**
 * Drop the moves into states from which the rule's end cannot be reached (through bytes, empty moves
 * and calls of rules that derive a finite string), and calls of rules that derive none: afterwards
 * every state a parse reaches can finish. Returns which rules derive a finite string.
 */
function prune(b: Builder, ruleOf: Map<number, number>): boolean[] {
  const { live, rules: productive } = reachingEnds(b, ruleOf, true);
  for (let s = 0; s < b.bytes.length; s++) {
    const by = b.bytes[s];
    const keep: number[] = [];
    for (let k = 0; k < by.length; k += 3) if (live[by[k + 2]]) keep.push(by[k], by[k + 1], by[k + 2]);
    b.bytes[s] = keep;
    b.eps[s] = b.eps[s].filter((t) => live[t]);
    const c = b.calls[s];
    const calls: number[] = [];
    for (let k = 0; k < c.length; k += 2) if (productive[ruleOf.get(c[k])!] && live[c[k + 1]]) calls.push(c[k], c[k + 1]);
    b.calls[s] = calls;
  }
  return productive;
}

/** A rule that can call itself before any byte is written would grow the stack for ever: refused. */
function refuseLeftRecursion(b: Builder, ruleOf: Map<number, number>, names: readonly string[]): void {
  const rules = b.starts.length;
  const nullable = reachingEnds(b, ruleOf, false).rules;
  // Per rule, the rules it may call before writing a byte: past empty moves and calls of nullable rules.
  const first: number[][] = Array.from({ length: rules }, () => []);
  for (let r = 0; r < rules; r++) {
    const seen = new Set([b.starts[r]]);
    const work = [b.starts[r]];
    while (work.length > 0) {
      const s = work.pop()!;
      const next = [...b.eps[s]];
      const c = b.calls[s];
      for (let k = 0; k < c.length; k += 2) {
        const callee = ruleOf.get(c[k])!;
        first[r].push(callee);
        if (nullable[callee]) next.push(c[k + 1]);
      }
      for (const t of next) {
        if (!seen.has(t)) {
          seen.add(t);
          work.push(t);
        }
      }
    }
  }
  // A cycle among them, by a depth-first walk kept on an explicit stack (grammars may have thousands of rules).
  const mark = new Uint8Array(rules); // 0 unvisited, 1 on the path, 2 done
  for (let root = 0; root < rules; root++) {
    if (mark[root] !== 0) continue;
    const path: number[] = [root];
    const next: number[] = [0];
    mark[root] = 1;
    while (path.length > 0) {
      const r = path[path.length - 1];
      const k = next[next.length - 1]++;
      if (k >= first[r].length) {
        mark[r] = 2;
        path.pop();
        next.pop();
        continue;
      }
      const c = first[r][k];
      if (mark[c] === 1) {
        const cycle = [...path.slice(path.indexOf(c)), c].map((x) => names[x]);
        throw new GrammarError(`rule "${names[c]}" is left-recursive (${cycle.join(' -> ')}): write the repetition with * or + instead`);
      }
      if (mark[c] === 0) {
        mark[c] = 1;
        path.push(c);
        next.push(0);
      }
    }
  }
}

/**
 * Per state, whether only empty moves to its rule's end can follow it: its rule's end, or a state
 * with nothing but empty moves, all to such states (found backwards from the ends, each state once
 * all its moves are known to lead to one).
 */
function tails(b: Builder, ends: Uint8Array): Uint8Array {
  const n = b.bytes.length;
  const out = new Uint8Array(n);
  const pending = new Int32Array(n).fill(-1);
  const onlyEmpty = (s: number) => b.bytes[s].length === 0 && b.calls[s].length === 0 && b.eps[s].length > 0;
  const back = packed(n, (add) => {
    for (let s = 0; s < n; s++) if (onlyEmpty(s)) for (const t of b.eps[s]) add(t, s);
  });
  for (let s = 0; s < n; s++) if (onlyEmpty(s)) pending[s] = b.eps[s].length;
  const work: number[] = [];
  for (let s = 0; s < n; s++) {
    if (ends[s]) {
      out[s] = 1;
      work.push(s);
    }
  }
  while (work.length > 0) {
    const t = work.pop()!;
    for (let k = back.start[t]; k < back.start[t + 1]; k++) {
      const s = back.items[k];
      if (--pending[s] === 0 && !out[s]) {
        out[s] = 1;
        work.push(s);
      }
    }
  }
  return out;
}
