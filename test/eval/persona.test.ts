import { describe, expect, it } from 'vitest';
import { FACT_KINDS, containsFact, makePersonaUsers } from '../../src/eval/persona.js';

describe('persona fixture', () => {
  it('is deterministic under a seed, with distinct facts per user', () => {
    const a = makePersonaUsers(6, 3);
    expect(makePersonaUsers(6, 3)).toEqual(a);
    expect(makePersonaUsers(6, 4).map((u) => u.facts)).not.toEqual(a.map((u) => u.facts));
    for (const k of FACT_KINDS) expect(new Set(a.map((u) => u.facts[k])).size).toBe(6);
  });

  it('states every fact in the history, and never asks a probe wording there', () => {
    for (const u of makePersonaUsers(4, 1)) {
      const text = u.history.map((h) => h.text);
      for (const k of FACT_KINDS) expect(text.some((t) => t.includes(u.facts[k]))).toBe(true);
      for (const p of u.probes) {
        expect(text).not.toContain(p.question);
        expect(containsFact(p.answer, p.fact)).toBe(true);
      }
      // Each conversation is one user turn and its answer.
      const convs = new Set(u.history.map((h) => h.conversationId));
      expect(convs.size * 2).toBe(u.history.length);
    }
  });

  it('matches facts as whole words, case-insensitively', () => {
    expect(containsFact('Your dog is called biscuit.', 'Biscuit')).toBe(true);
    expect(containsFact('Biscuits are tasty', 'Biscuit')).toBe(false);
    expect(containsFact('You live in Lyon, of course.', 'Lyon')).toBe(true);
  });
});

describe('persona targets', () => {
  it('never repeats a reply, so no validation or test pair is dropped as a duplicate', () => {
    for (const u of makePersonaUsers(12, 1)) {
      const replies = u.history.filter((h) => h.role === 'assistant').map((h) => h.text);
      expect(new Set(replies).size).toBe(replies.length);
    }
  });
});
