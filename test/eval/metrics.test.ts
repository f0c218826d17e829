import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import {
  corpusScores,
  lcsLength,
  mean,
  meanScores,
  personaF1,
  personaTokens,
  rouge1,
  rougeL,
  rougeTokenize,
  scoreSample,
} from '../../src/eval/metrics.js';

const close = (actual: number, expected: number) => expect(actual).toBeCloseTo(expected, 12);

describe('rougeTokenize (rouge-score default tokenizer)', () => {
  it('lower-cases, turns every non-[a-z0-9] run into a space, splits', () => {
    expect(rougeTokenize("Don't STOP-me now!! 3.5mg")).toEqual(['don', 't', 'stop', 'me', 'now', '3', '5mg']);
    // Non-ASCII letters are not [a-z0-9]: they vanish and split the word, as in rouge-score.
    expect(rougeTokenize('Café naïve')).toEqual(['caf', 'na', 've']);
    expect(rougeTokenize('  \n\t ')).toEqual([]);
    expect(rougeTokenize('...!?')).toEqual([]);
  });
});

describe('ROUGE-1', () => {
  it('matches the hand computation on a simple pair', () => {
    // ref: the cat sat on the mat (6 tokens); cand: the cat on the mat (5 tokens).
    // overlap: the min(2,2)=2 + cat 1 + on 1 + mat 1 = 5. P = 5/5 = 1, R = 5/6,
    // F = 2 * 1 * 5/6 / (1 + 5/6) = (10/6) / (11/6) = 10/11.
    const s = rouge1('The cat sat on the mat.', 'the cat on the mat');
    close(s.precision, 1);
    close(s.recall, 5 / 6);
    close(s.fmeasure, 10 / 11);
  });

  it('clips repeated candidate tokens at the reference count', () => {
    // ref: the the cat; cand: the the the the. overlap = min(4, 2) = 2.
    // P = 2/4 = 1/2, R = 2/3, F = 2 * 1/2 * 2/3 / (1/2 + 2/3) = (2/3) / (7/6) = 4/7.
    const s = rouge1('the the cat', 'the the the the');
    close(s.precision, 1 / 2);
    close(s.recall, 2 / 3);
    close(s.fmeasure, 4 / 7);
  });

  it('is zero for empty or punctuation-only sides', () => {
    for (const [ref, cand] of [
      ['', 'words here'],
      ['words here', ''],
      ['!!!', '...'],
      ['', ''],
    ]) {
      expect(rouge1(ref, cand)).toEqual({ precision: 0, recall: 0, fmeasure: 0 });
    }
  });

  it('ignores case and punctuation differences', () => {
    expect(rouge1('Take 2 tablets, daily!', 'take 2 TABLETS daily').fmeasure).toBe(1);
  });
});

describe('ROUGE-L', () => {
  it('uses the longest common subsequence, so order matters', () => {
    // ref a b c d, cand d c b a: unigram overlap 4 (ROUGE-1 = 1) but LCS = 1.
    // P = 1/4, R = 1/4, F = 1/4.
    expect(rouge1('a b c d', 'd c b a').fmeasure).toBe(1);
    const s = rougeL('a b c d', 'd c b a');
    close(s.precision, 1 / 4);
    close(s.recall, 1 / 4);
    close(s.fmeasure, 1 / 4);
  });

  it('matches the hand computation with a gap', () => {
    // ref: police killed the gunman (4); cand: police kill the gunman now (5).
    // LCS = police, the, gunman = 3. P = 3/5, R = 3/4, F = 2 * 0.6 * 0.75 / 1.35 = 0.9 / 1.35 = 2/3.
    const s = rougeL('police killed the gunman', 'police kill the gunman now');
    close(s.precision, 3 / 5);
    close(s.recall, 3 / 4);
    close(s.fmeasure, 2 / 3);
  });

  it('clips repeats through the LCS too', () => {
    // ref: the the cat; cand: the the the the -> LCS "the the" = 2, so as ROUGE-1: F = 4/7.
    close(rougeL('the the cat', 'the the the the').fmeasure, 4 / 7);
  });

  it('is zero for empty sides', () => {
    expect(rougeL('', 'x')).toEqual({ precision: 0, recall: 0, fmeasure: 0 });
    expect(rougeL('?!', '')).toEqual({ precision: 0, recall: 0, fmeasure: 0 });
  });

  it('LCS length: textbook cases and bounds', () => {
    expect(lcsLength([...'ABCBDAB'], [...'BDCABA'])).toBe(4);
    expect(lcsLength([], ['a'])).toBe(0);
    fc.assert(
      fc.property(fc.array(fc.constantFrom('a', 'b', 'c'), { maxLength: 12 }), fc.array(fc.constantFrom('a', 'b', 'c'), { maxLength: 12 }), (a, b) => {
        const l = lcsLength(a, b);
        expect(l).toBe(lcsLength(b, a));
        expect(l).toBeLessThanOrEqual(Math.min(a.length, b.length));
        expect(lcsLength(a, a)).toBe(a.length);
        // LCS never exceeds the clipped unigram overlap.
        const ca = new Map<string, number>();
        for (const x of a) ca.set(x, (ca.get(x) ?? 0) + 1);
        const cb = new Map<string, number>();
        for (const x of b) cb.set(x, (cb.get(x) ?? 0) + 1);
        let overlap = 0;
        for (const [k, v] of ca) overlap += Math.min(v, cb.get(k) ?? 0);
        expect(l).toBeLessThanOrEqual(overlap);
      }),
    );
  });

  it('scores stay in [0, 1] and a text scores 1 against itself', () => {
    fc.assert(
      fc.property(fc.string({ maxLength: 40 }), fc.string({ maxLength: 40 }), (a, b) => {
        for (const s of [rouge1(a, b), rougeL(a, b)]) {
          for (const v of [s.precision, s.recall, s.fmeasure]) expect(v >= 0 && v <= 1).toBe(true);
        }
        if (rougeTokenize(a).length > 0) expect(rougeL(a, a).fmeasure).toBe(1);
      }),
    );
  });
});

describe('Persona-F1', () => {
  it('matches the hand computation', () => {
    // H: "I take metformin for my diabetes", "My dog Rex" -> minus stop words (i, for, my):
    //    {take, metformin, diabetes, dog, rex}, |H| = 5.
    // R: "Metformin helps diabetes; walk Rex daily." -> {metformin, helps, diabetes, walk, rex, daily}, |R| = 6.
    // H∩R = {metformin, diabetes, rex} = 3. P = 3/6 = 1/2, Rc = 3/5, F1 = 2 * 1/2 * 3/5 / (1/2 + 3/5) = (3/5) / (11/10) = 6/11.
    const s = personaF1(['I take metformin for my diabetes', 'My dog Rex'], 'Metformin helps diabetes; walk Rex daily.');
    close(s.precision, 1 / 2);
    close(s.recall, 3 / 5);
    close(s.f1, 6 / 11);
  });

  it('counts sets, not occurrences', () => {
    // H = {rex}, R = {rex}: P = R = F1 = 1 however often "Rex" is said.
    expect(personaF1('Rex Rex Rex', 'rex, REX!').f1).toBe(1);
  });

  it('is zero when either side has only stop words or nothing', () => {
    expect(personaF1('my metformin', 'It is what it is.')).toEqual({ precision: 0, recall: 0, f1: 0 });
    expect(personaF1('', 'metformin')).toEqual({ precision: 0, recall: 0, f1: 0 });
    expect(personaF1('metformin', 'insulin')).toEqual({ precision: 0, recall: 0, f1: 0 });
  });

  it('accepts a prepared token set', () => {
    const h = personaTokens(['I take metformin for my diabetes', 'My dog Rex']);
    expect([...h].sort()).toEqual(['diabetes', 'dog', 'metformin', 'rex', 'take']);
    expect(personaF1(h, 'Metformin helps diabetes; walk Rex daily.')).toEqual(
      personaF1(['I take metformin for my diabetes', 'My dog Rex'], 'Metformin helps diabetes; walk Rex daily.'),
    );
  });
});

describe('corpus means', () => {
  it('averages each figure over samples', () => {
    const samples = [
      { reference: 'The cat sat on the mat.', candidate: 'the cat on the mat', history: 'cat mat' },
      { reference: 'a b c d', candidate: 'd c b a', history: '' },
    ];
    const c = corpusScores(samples);
    expect(c.n).toBe(2);
    // ROUGE-1 F: (10/11 + 1) / 2; ROUGE-L F: (10/11 + 1/4) / 2; recall: (5/6 + 1) / 2 and (5/6 + 1/4) / 2.
    close(c.rouge1F, (10 / 11 + 1) / 2);
    close(c.rouge1R, (5 / 6 + 1) / 2);
    close(c.rougeLF, (10 / 11 + 1 / 4) / 2);
    close(c.rougeLR, (5 / 6 + 1 / 4) / 2);
    // Persona-F1: sample 1 H = {cat, mat}, R = {cat, mat} -> 1; sample 2 H empty -> 0. Mean 1/2.
    close(c.personaF1, 1 / 2);
    expect(meanScores(samples.map(scoreSample))).toEqual(c);
  });

  it('is zero over no samples', () => {
    expect(mean([])).toBe(0);
    expect(corpusScores([])).toEqual({ n: 0, rouge1F: 0, rouge1R: 0, rougeLF: 0, rougeLR: 0, personaF1: 0 });
  });
});
