import { afterAll, describe, expect, it } from 'vitest';
import { memoryBlock, memoryQuery, messagesWithMemory, promptWithMemory, retrieveMemory } from '../../src/serve/memory.js';
import { makeServeFixture } from './fixtures.js';

const f = makeServeFixture();
afterAll(() => f.cleanup());

describe('memory layout', () => {
  it('is a header line and one "- item" line per item, whitespace collapsed', () => {
    expect(memoryBlock(['  I live in\n Lyon ', 'vegetarian'])).toBe('Relevant history of this user:\n- I live in Lyon\n- vegetarian');
  });

  it('becomes a leading system message, or joins the one the request has', () => {
    const block = 'Relevant history of this user:\n- a';
    expect(messagesWithMemory([{ role: 'user', content: 'hi' }], ['a'])).toEqual([
      { role: 'system', content: block },
      { role: 'user', content: 'hi' },
    ]);
    expect(messagesWithMemory([{ role: 'system', content: 'Be brief.' }, { role: 'user', content: 'hi' }], ['a'])).toEqual([
      { role: 'system', content: `Be brief.\n${block}` },
      { role: 'user', content: 'hi' },
    ]);
    expect(messagesWithMemory([{ role: 'user', content: 'hi' }], [])).toEqual([{ role: 'user', content: 'hi' }]);
    expect(promptWithMemory('My city is', ['a'])).toBe(`${block}\n\nMy city is`);
    expect(promptWithMemory('My city is', [])).toBe('My city is');
  });

  it('queries with the last user message, or the prompt', () => {
    const decode = (ids: readonly number[]) => ids.map((i) => String.fromCharCode(96 + i)).join('');
    expect(memoryQuery({ prompt: 'p' }, decode)).toBe('p');
    expect(memoryQuery({ prompt: [1, 2, 3] }, decode)).toBe('abc'); // token ids are searched as their text
    expect(memoryQuery({ messages: [{ role: 'user', content: 'first' }, { role: 'user', content: 'last' }, { role: 'assistant', content: 'reply' }] }, decode)).toBe('last');
    expect(memoryQuery({ messages: [{ role: 'system', content: 'only system' }] }, decode)).toBe('only system');
  });
});

describe('retrieveMemory', () => {
  it("returns the user's own best matches, best first, at most k, and never another user's", () => {
    f.addHistory('ann', ['I cook risotto on Sundays', 'risotto with mushrooms and risotto rice', 'I run in the park']);
    f.addHistory('ben', ['risotto risotto risotto mushrooms', 'ben private risotto note']);
    const got = retrieveMemory(f.db, 'ann', 'mushrooms risotto', 5);
    expect(got).toEqual(['risotto with mushrooms and risotto rice', 'I cook risotto on Sundays']);
    expect(retrieveMemory(f.db, 'ann', 'mushrooms risotto', 1)).toEqual(['risotto with mushrooms and risotto rice']);
    expect(retrieveMemory(f.db, 'ann', 'mushrooms risotto', 0)).toEqual([]);
    expect(retrieveMemory(f.db, 'nobody', 'risotto', 5)).toEqual([]);
    expect(retrieveMemory(f.db, 'ann', 'NEAR(" OR *', 5)).toEqual([]); // hostile query text is plain words
  });
});
