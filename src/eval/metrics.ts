/**
 * Response-quality metrics of the paper: ROUGE-1, ROUGE-L and Persona-F1. Values are fractions in
 * [0, 1]; tables multiply by 100.
 *
 * ROUGE follows Google's `rouge-score` package with its defaults (`RougeScorer(['rouge1','rougeL'])`,
 * no stemmer): lower-case, every run of characters outside [a-z0-9] becomes a space, split on
 * whitespace. So "Don't" gives "don", "t", and non-ASCII letters vanish. ROUGE-1 counts unigram
 * overlap with clipping (min of the two counts); ROUGE-L is sentence-level LCS over the whole token
 * sequence (not rougeLsum). precision = overlap / candidate length, recall = overlap / reference
 * length, F = 2PR/(P+R), and 0 when either side has no tokens. We report F-measure, with recall beside
 * it (MSP reported recall).
 *
 * Persona-F1 follows MSP's evaluation (`cal_f1`): H = set of tokens of the user's history minus stop
 * words, R = set of tokens of the response minus stop words; P = |H∩R|/|R|, Rc = |H∩R|/|H|,
 * F1 = 2·P·Rc/(P+Rc), 0 when either set is empty or they do not meet. MSP's text was pre-segmented and
 * split on spaces; we tokenise as ROUGE does above, and remove NLTK's English stop words
 * (stopwords.ts).
 */
import { STOP_WORDS } from './stopwords.js';

export interface RougeScore {
  precision: number;
  recall: number;
  fmeasure: number;
}

/** rouge-score's default tokenizer (no stemming). */
export function rougeTokenize(text: string): string[] {
  return text
    .toLowerCase()
    .replace(/[^a-z0-9]+/g, ' ')
    .split(/\s+/)
    .filter((t) => t.length > 0);
}

function fmeasure(precision: number, recall: number): number {
  return precision + recall > 0 ? (2 * precision * recall) / (precision + recall) : 0;
}

function score(overlap: number, candidateLength: number, referenceLength: number): RougeScore {
  const precision = overlap / Math.max(candidateLength, 1);
  const recall = overlap / Math.max(referenceLength, 1);
  return { precision, recall, fmeasure: fmeasure(precision, recall) };
}

function counts(tokens: readonly string[]): Map<string, number> {
  const m = new Map<string, number>();
  for (const t of tokens) m.set(t, (m.get(t) ?? 0) + 1);
  return m;
}

/** ROUGE-1 of a candidate against a reference. */
export function rouge1(reference: string, candidate: string): RougeScore {
  const ref = rougeTokenize(reference);
  const cand = rougeTokenize(candidate);
  const refCounts = counts(ref);
  let overlap = 0;
  for (const [t, c] of counts(cand)) overlap += Math.min(c, refCounts.get(t) ?? 0);
  return score(overlap, cand.length, ref.length);
}

/** Length of the longest common subsequence (two-row dynamic programme). */
export function lcsLength(a: readonly string[], b: readonly string[]): number {
  if (a.length === 0 || b.length === 0) return 0;
  let prev = new Uint32Array(b.length + 1);
  let cur = new Uint32Array(b.length + 1);
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) {
      cur[j] = a[i - 1] === b[j - 1] ? prev[j - 1] + 1 : Math.max(prev[j], cur[j - 1]);
    }
    [prev, cur] = [cur, prev];
  }
  return prev[b.length];
}

/** Sentence-level ROUGE-L of a candidate against a reference. */
export function rougeL(reference: string, candidate: string): RougeScore {
  const ref = rougeTokenize(reference);
  const cand = rougeTokenize(candidate);
  if (ref.length === 0 || cand.length === 0) return { precision: 0, recall: 0, fmeasure: 0 };
  return score(lcsLength(ref, cand), cand.length, ref.length);
}

/** Content-word set for Persona-F1: ROUGE tokens minus stop words. */
export function personaTokens(text: string | readonly string[]): Set<string> {
  const out = new Set<string>();
  for (const t of typeof text === 'string' ? [text] : text) {
    for (const tok of rougeTokenize(t)) if (!STOP_WORDS.has(tok)) out.add(tok);
  }
  return out;
}

export interface PersonaF1 {
  precision: number;
  recall: number;
  f1: number;
}

/** Persona-F1 of a response against the user's history (its texts, or a prepared token set). */
export function personaF1(history: string | readonly string[] | ReadonlySet<string>, response: string): PersonaF1 {
  const h = history instanceof Set ? (history as ReadonlySet<string>) : personaTokens(history as string | readonly string[]);
  const r = personaTokens(response);
  if (h.size === 0 || r.size === 0) return { precision: 0, recall: 0, f1: 0 };
  let common = 0;
  for (const t of r) if (h.has(t)) common++;
  const precision = common / r.size;
  const recall = common / h.size;
  return { precision, recall, f1: fmeasure(precision, recall) };
}

export interface EvalSample {
  reference: string;
  candidate: string;
  /** The user's own content (texts or a prepared `personaTokens` set). */
  history: string | readonly string[] | ReadonlySet<string>;
}

export interface SampleScores {
  rouge1: RougeScore;
  rougeL: RougeScore;
  personaF1: PersonaF1;
}

export function scoreSample(s: EvalSample): SampleScores {
  return { rouge1: rouge1(s.reference, s.candidate), rougeL: rougeL(s.reference, s.candidate), personaF1: personaF1(s.history, s.candidate) };
}

/** Corpus figures: each the mean over samples. */
export interface CorpusScores {
  n: number;
  rouge1F: number;
  rouge1R: number;
  rougeLF: number;
  rougeLR: number;
  personaF1: number;
}

export function mean(xs: readonly number[]): number {
  if (xs.length === 0) return 0;
  let s = 0;
  for (const x of xs) s += x;
  return s / xs.length;
}

export function meanScores(scores: readonly SampleScores[]): CorpusScores {
  return {
    n: scores.length,
    rouge1F: mean(scores.map((s) => s.rouge1.fmeasure)),
    rouge1R: mean(scores.map((s) => s.rouge1.recall)),
    rougeLF: mean(scores.map((s) => s.rougeL.fmeasure)),
    rougeLR: mean(scores.map((s) => s.rougeL.recall)),
    personaF1: mean(scores.map((s) => s.personaF1.f1)),
  };
}

export function corpusScores(samples: readonly EvalSample[]): CorpusScores {
  return meanScores(samples.map(scoreSample));
}
