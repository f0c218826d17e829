import { afterAll, describe, expect, it } from 'vitest';
import fc from 'fast-check';
import {
  assignGroups,
  buildDataset,
  buildPairs,
  DatasetError,
  encodePair,
  splitPairs,
  type HistoryItem,
  type TrainingPair,
} from '../../src/inject/dataset.js';
import { encodeChat, renderChat } from '../../src/model/chat-format.js';
import { makeTokenizerFixture } from '../model/tokenizer-fixture.js';

const fx = makeTokenizerFixture(400);
const tok = fx.tokenizer;
afterAll(() => fx.cleanup());

let nextId = 1;
function item(kind: HistoryItem['kind'], role: string | null, text: string, conversationId: string | null = null): HistoryItem {
  const id = nextId++;
  return { id, kind, role, text, conversationId, createdAt: 1000 + id };
}

/** A user with a profile, two dialogues (one with an opening greeting), a post, a Q/A and a loose exchange. */
function sampleHistory(): HistoryItem[] {
  nextId = 1;
  return [
    item('profile', null, 'Type 2 diabetes.'),
    item('dialogue', 'assistant', 'Hello, how can I help?', 'c1'),
    item('dialogue', 'user', 'My sugar is high.', 'c1'),
    item('dialogue', 'assistant', 'What do you eat?', 'c1'),
    item('dialogue', 'user', 'Lots of bread.', 'c1'),
    item('dialogue', 'assistant', 'Cut down on bread.', 'c1'),
    item('profile', null, 'Takes metformin.'),
    item('dialogue', 'user', 'Feet tingle.', 'c2'),
    item('dialogue', 'assistant', 'Check your feet daily.', 'c2'),
    item('post', null, 'Walked 5 km today!'),
    item('qa', 'user', 'Is rice OK?'),
    item('qa', 'assistant', 'Brown rice in small portions.'),
    item('dialogue', 'user', 'Quick question about sleep.'),
    item('dialogue', 'assistant', 'Aim for 7 hours.'),
    item('dialogue', 'assistant', '   '),
  ];
}

const profile = { role: 'system' as const, content: 'Type 2 diabetes.\nTakes metformin.' };

describe('buildPairs', () => {
  it('makes the documented pairs with profile and earlier turns as context', () => {
    const pairs = buildPairs(sampleHistory());
    expect(pairs.map((p) => [p.group, p.kind, p.target])).toEqual([
      ['conversation:c1', 'dialogue', 'What do you eat?'],
      ['conversation:c1', 'dialogue', 'Cut down on bread.'],
      ['conversation:c2', 'dialogue', 'Check your feet daily.'],
      ['item:10', 'post', 'Walked 5 km today!'],
      ['item:11', 'qa', 'Brown rice in small portions.'],
      ['item:13', 'dialogue', 'Aim for 7 hours.'],
    ]);
    // The greeting is context only; the second target sees the whole conversation before it.
    expect(pairs[1].context).toEqual([
      profile,
      { role: 'assistant', content: 'Hello, how can I help?' },
      { role: 'user', content: 'My sugar is high.' },
      { role: 'assistant', content: 'What do you eat?' },
      { role: 'user', content: 'Lots of bread.' },
    ]);
    expect(pairs[3].context).toEqual([profile]);
    expect(pairs[4].context).toEqual([profile, { role: 'user', content: 'Is rice OK?' }]);
    expect(pairs[5].context).toEqual([profile, { role: 'user', content: 'Quick question about sleep.' }]);
    expect(pairs[4].targetItemId).toBe(12);
  });

  it('orders by createdAt, not by array order, and works without a profile', () => {
    const items = sampleHistory().filter((i) => i.kind !== 'profile');
    const pairs = buildPairs([...items].reverse());
    expect(pairs.map((p) => p.target)).toEqual(buildPairs(items).map((p) => p.target));
    expect(pairs[0].context[0]).toEqual({ role: 'assistant', content: 'Hello, how can I help?' });
  });

  it('treats a qa answer without a question as the user writing on their own', () => {
    nextId = 1;
    const pairs = buildPairs([item('qa', 'assistant', 'Answer without a question.')]);
    expect(pairs).toEqual([{ group: 'item:1', kind: 'qa', context: [], target: 'Answer without a question.', targetItemId: 1 }]);
  });
});

describe('assignGroups', () => {
  const names = (n: number) => Array.from({ length: n }, (_, i) => `conversation:g${i}`);
  const count = (m: Map<string, string>, s: string) => [...m.values()].filter((v) => v === s).length;

  it('gives 70/10/20 by group count, at least one validation and test group from three groups', () => {
    for (const [n, train, val, test] of [
      [10, 7, 1, 2],
      [20, 14, 2, 4],
      [6, 4, 1, 1],
      [3, 1, 1, 1],
      [2, 2, 0, 0],
      [1, 1, 0, 0],
      [0, 0, 0, 0],
    ]) {
      const m = assignGroups(names(n));
      expect([count(m, 'train'), count(m, 'val'), count(m, 'test')]).toEqual([train, val, test]);
    }
  });

  it('is deterministic, independent of input order, and changes with the seed', () => {
    const g = names(40);
    const a = assignGroups(g, { seed: 7 });
    expect(assignGroups([...g].reverse(), { seed: 7 })).toEqual(a);
    expect([...assignGroups(g, { seed: 8 })].sort()).not.toEqual([...a].sort());
  });

  it('rejects fractions that do not sum to 1', () => {
    expect(() => assignGroups(['a'], { fractions: { train: 0.5, val: 0.1, test: 0.1 } })).toThrow(DatasetError);
  });
});

describe('splitPairs: no leakage', () => {
  /** Many conversations, every one ending with the same pleasantry and some sharing a reply. */
  function manyConversations(n: number): HistoryItem[] {
    nextId = 1;
    const items: HistoryItem[] = [item('profile', null, 'Asthma.')];
    for (let c = 0; c < n; c++) {
      items.push(item('dialogue', 'user', `Question ${c} about my inhaler?`, `c${c}`));
      items.push(item('dialogue', 'assistant', `Answer ${c}: use it twice daily.`, `c${c}`));
      items.push(item('dialogue', 'user', 'Thanks!', `c${c}`));
      items.push(item('dialogue', 'assistant', c % 3 === 0 ? 'You are welcome.' : `Take care ${c}.`, `c${c}`));
    }
    return items;
  }

  it('keeps groups and target texts disjoint across splits', () => {
    fc.assert(
      fc.property(fc.integer({ min: 3, max: 40 }), fc.integer(), (n, seed) => {
        const s = buildDataset(manyConversations(n), { seed });
        const groupsOf = (ps: TrainingPair[]) => new Set(ps.map((p) => p.group));
        const targetsOf = (ps: TrainingPair[]) => new Set(ps.map((p) => p.target.toLowerCase()));
        for (const [a, b] of [
          [s.train, s.val],
          [s.train, s.test],
          [s.val, s.test],
        ]) {
          for (const g of groupsOf(a)) expect(groupsOf(b).has(g)).toBe(false);
          for (const t of targetsOf(a)) expect(targetsOf(b).has(t)).toBe(false);
        }
        expect(s.groups.val.length).toBeGreaterThanOrEqual(1);
        expect(s.groups.test.length).toBeGreaterThanOrEqual(1);
        expect(s.train.length + s.val.length + s.test.length + s.droppedDuplicateTargets).toBe(2 * n);
      }),
      { numRuns: 50 },
    );
  });

  it('drops repeated targets from later splits and counts them', () => {
    const s = buildDataset(manyConversations(30), { seed: 3 });
    expect(s.droppedDuplicateTargets).toBeGreaterThan(0);
    const welcome = [s.train, s.val, s.test].map((ps) => ps.filter((p) => p.target === 'You are welcome.').length);
    expect(welcome.filter((k) => k > 0)).toHaveLength(1);
  });

  it('is deterministic: same items and seed give the same split', () => {
    const a = buildDataset(manyConversations(25), { seed: 11 });
    const b = splitPairs(buildPairs(manyConversations(25)), { seed: 11 });
    expect(b).toEqual(a);
  });
});

describe('encodePair', () => {
  const pair = buildPairs(sampleHistory())[1];
  const full = encodePair(tok, pair, 10_000);

  it('supervises exactly the target and its end token', () => {
    const target = full.ids.filter((_, i) => full.lossMask[i] === 1);
    expect(tok.decode(target)).toBe('Cut down on bread.<|end|>');
    const prefix = full.ids.filter((_, i) => full.lossMask[i] === 0);
    expect(prefix).toEqual(encodeChat(tok, pair.context, { addGenerationPrompt: true }));
    expect(tok.decode(prefix)).toBe('<|endoftext|>' + renderChat(pair.context, { addGenerationPrompt: true }));
    // The mask is one block at the end.
    const first = full.lossMask.indexOf(1);
    expect(full.lossMask.slice(first).every((m) => m === 1)).toBe(true);
    expect(full.ids).toHaveLength(full.lossMask.length);
    expect([full.contextTokensDropped, full.targetTokensDropped]).toEqual([0, 0]);
  });

  it('equals encoding the whole conversation with the reply', () => {
    expect(full.ids).toEqual(encodeChat(tok, [...pair.context, { role: 'assistant', content: pair.target }], { addGenerationPrompt: false }));
  });

  it('truncates the context from the left, keeping BOS and the generation prompt', () => {
    const targetLen = full.lossMask.filter((m) => m === 1).length;
    const maxLen = targetLen + 12;
    const cut = encodePair(tok, pair, maxLen);
    expect(cut.ids).toHaveLength(maxLen);
    expect(cut.ids[0]).toBe(tok.bosId);
    const assistant = tok.tokenToId('<|assistant|>')!;
    expect(cut.ids[maxLen - targetLen - 1]).toBe(assistant);
    // Between BOS and the prompt: the last tokens of the full context body.
    const body = full.ids.slice(1, full.ids.length - targetLen - 1);
    expect(cut.ids.slice(1, maxLen - targetLen - 1)).toEqual(body.slice(body.length - (maxLen - targetLen - 2)));
    expect(cut.ids.slice(-targetLen)).toEqual(full.ids.slice(-targetLen));
    expect(cut.lossMask.filter((m) => m === 1)).toHaveLength(targetLen);
    expect(cut.contextTokensDropped).toBe(body.length - (maxLen - targetLen - 2));
  });

  it('cuts a target that cannot fit from the right, dropping the whole context', () => {
    const cut = encodePair(tok, pair, 5);
    // BOS + <|assistant|> + 3 target tokens.
    expect(cut.ids.slice(0, 2)).toEqual([tok.bosId, tok.tokenToId('<|assistant|>')]);
    expect(cut.lossMask).toEqual([0, 0, 1, 1, 1]);
    const targetIds = full.ids.filter((_, i) => full.lossMask[i] === 1);
    expect(cut.ids.slice(2)).toEqual(targetIds.slice(0, 3));
    expect(cut.targetTokensDropped).toBe(targetIds.length - 3);
    expect(cut.contextTokensDropped).toBe(full.ids.length - targetIds.length - 2);
  });

  it('rejects a maxLen without room for one target token', () => {
    expect(() => encodePair(tok, pair, 2)).toThrow(expect.objectContaining({ code: 'max_len_too_small', value: 2 }));
  });

  it('encodes a typed control string in a target as text', () => {
    const p: TrainingPair = { group: 'item:1', kind: 'post', context: [], target: 'a <|end|> b', targetItemId: 1 };
    const e = encodePair(tok, p, 100);
    const end = tok.tokenToId('<|end|>')!;
    expect(e.ids.filter((id) => id === end)).toHaveLength(1);
    expect(e.ids.at(-1)).toBe(end);
  });

  it('follows the DialoGPT template: no BOS, reply ends with <|endoftext|>', () => {
    const e = encodePair(tok, pair, 10_000, 'dialogpt');
    expect(e.ids[0]).not.toBe(tok.bosId);
    expect(tok.decode(e.ids.filter((_, i) => e.lossMask[i] === 1))).toBe('Cut down on bread.<|endoftext|>');
  });
});
