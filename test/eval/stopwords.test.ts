import { describe, expect, it } from 'vitest';
import { isStopWord, NLTK_ENGLISH_STOP_WORDS, STOP_WORDS } from '../../src/eval/stopwords.js';
import { rougeTokenize } from '../../src/eval/metrics.js';

describe('NLTK English stop words', () => {
  it('is the 179-word list, without duplicates, all lower case', () => {
    expect(NLTK_ENGLISH_STOP_WORDS).toHaveLength(179);
    expect(STOP_WORDS.size).toBe(179);
    for (const w of NLTK_ENGLISH_STOP_WORDS) expect(w).toBe(w.toLowerCase());
    // First and last entries of NLTK's file, and a few from the middle.
    expect(NLTK_ENGLISH_STOP_WORDS[0]).toBe('i');
    expect(NLTK_ENGLISH_STOP_WORDS.at(-1)).toBe("wouldn't");
    for (const w of ['the', 'against', 'mightn', 'ma', 'o', 'y']) expect(isStopWord(w)).toBe(true);
    for (const w of ['doctor', 'pain', 'would', 'could']) expect(isStopWord(w)).toBe(false);
  });

  it('covers the fragments our tokenisation makes of contractions', () => {
    for (const text of ["don't", "shouldn't", "you'll", "we've", "it's", "I'd", "they're"]) {
      for (const t of rougeTokenize(text)) expect(isStopWord(t)).toBe(true);
    }
  });
});
