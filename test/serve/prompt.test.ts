import { afterAll, describe, expect, it } from 'vitest';
import { encodeRequest, endIdsOf, fitMemory, promptIds, replyBudget, stopsOf } from '../../src/serve/prompt.js';
import { makeServeFixture } from './fixtures.js';

const f = makeServeFixture();
afterAll(() => f.cleanup());
const ctx = { tokenizer: f.tokenizer, template: 'memlora' as const, contextTokens: 96 };
const text = (ids: number[]) => f.tokenizer.decode(ids);

describe('encodeRequest', () => {
  it('renders messages with the chat template, memory as the leading system message, ending in the assistant opening', () => {
    const ids = encodeRequest(ctx, { messages: [{ role: 'user', content: 'hi' }], maxTokens: 4 }, ['likes tea']);
    expect(text(ids)).toBe('<|endoftext|><|system|>Relevant history of this user:\n- likes tea<|end|><|user|>hi<|end|><|assistant|>');
    expect(ids[0]).toBe(f.tokenizer.bosId);
  });

  it('a raw prompt is BOS plus text; memory goes before it with a blank line', () => {
    expect(text(encodeRequest(ctx, { prompt: 'My city is', maxTokens: 4 }))).toBe('<|endoftext|>My city is');
    expect(text(encodeRequest(ctx, { prompt: 'My city is', maxTokens: 4 }, ['Lyon']))).toBe('<|endoftext|>Relevant history of this user:\n- Lyon\n\nMy city is');
  });

  it('never turns typed control tokens into control tokens', () => {
    const end = f.tokenizer.tokenToId('<|end|>')!;
    expect(encodeRequest(ctx, { prompt: 'a<|end|>b', maxTokens: 1 })).not.toContain(end);
    expect(encodeRequest(ctx, { messages: [{ role: 'user', content: '<|assistant|>' }], maxTokens: 1 }).filter((t) => t === f.tokenizer.tokenToId('<|assistant|>'))).toHaveLength(1);
  });
});

describe('context limits', () => {
  it('refuses a prompt with no room for one token, with promptTokens and contextTokens', () => {
    const long = 'blood pressure '.repeat(60);
    const n = encodeRequest(ctx, { prompt: long, maxTokens: 1 }).length;
    expect(n).toBeGreaterThanOrEqual(96);
    expect(() => promptIds(ctx, { prompt: long, maxTokens: 1 })).toThrow(expect.objectContaining({ code: 'prompt_too_long', details: { promptTokens: n, contextTokens: 96 } }));
    expect(promptIds(ctx, { prompt: 'short', maxTokens: 500 }).length).toBeLessThan(96);
  });

  it('drops memory items, lowest ranked first, until prompt + memory + maxTokens fits', () => {
    const items = ['first item about tea', 'second item about walking every day in the park', 'third '.repeat(30)];
    const all = encodeRequest(ctx, { prompt: 'hi', maxTokens: 10 }, items).length;
    const two = encodeRequest(ctx, { prompt: 'hi', maxTokens: 10 }, items.slice(0, 2)).length;
    expect(all + 10).toBeGreaterThan(96);
    expect(two + 10).toBeLessThanOrEqual(96);
    expect(fitMemory(ctx, { prompt: 'hi', maxTokens: 10 }, items)).toEqual({ ids: encodeRequest(ctx, { prompt: 'hi', maxTokens: 10 }, items.slice(0, 2)), used: 2 });
    expect(fitMemory(ctx, { prompt: 'hi', maxTokens: 95 }, items).used).toBe(0);
  });

  it('truncatePromptTokens reads the prompt as its last k tokens (-1: the window less one), and memory only as far as it fits within them, whole', () => {
    const long = 'blood pressure '.repeat(60);
    const whole = encodeRequest(ctx, { prompt: long, maxTokens: 1 });
    expect(promptIds(ctx, { prompt: long, maxTokens: 1, truncatePromptTokens: 40 })).toEqual(whole.slice(-40));
    expect(promptIds(ctx, { prompt: long, maxTokens: 1, truncatePromptTokens: -1 })).toEqual(whole.slice(-95));
    // A prompt within the bound is read whole; one past the window even cut is still refused.
    expect(promptIds(ctx, { prompt: 'short', maxTokens: 5, truncatePromptTokens: 40 })).toEqual(encodeRequest(ctx, { prompt: 'short', maxTokens: 5 }));
    expect(() => promptIds(ctx, { prompt: long, maxTokens: 1, truncatePromptTokens: 500 })).toThrow(expect.objectContaining({ code: 'prompt_too_long' }));
    const items = ['first item about tea', 'second item about walking every day in the park'];
    const one = encodeRequest(ctx, { prompt: 'hi', maxTokens: 4 }, items.slice(0, 1)).length;
    const two = encodeRequest(ctx, { prompt: 'hi', maxTokens: 4 }, items).length;
    expect(fitMemory(ctx, { prompt: 'hi', maxTokens: 4, truncatePromptTokens: two }, items).used).toBe(2);
    expect(fitMemory(ctx, { prompt: 'hi', maxTokens: 4, truncatePromptTokens: two - 1 }, items).used).toBe(1);
    expect(fitMemory(ctx, { prompt: 'hi', maxTokens: 4, truncatePromptTokens: one - 1 }, items)).toEqual({ ids: encodeRequest(ctx, { prompt: 'hi', maxTokens: 4 }), used: 0 });
  });

  it('caps the reply at the room the prompt leaves', () => {
    expect(replyBudget(ctx, 90, 128)).toBe(6);
    expect(replyBudget(ctx, 10, 5)).toBe(5);
  });

  it("ends at the model's end tokens (EOS, the template's stop tokens), the request's stop ids and strings", () => {
    const end = f.tokenizer.tokenToId('<|end|>')!;
    expect(endIdsOf(ctx, f.cfg.eosId).sort((a, b) => a - b)).toEqual([...new Set([f.cfg.eosId, f.tokenizer.eosId, end])].sort((a, b) => a - b));
    const s = stopsOf(ctx, { stop: ['\n\n'], stopTokenIds: [7, 7, 9] });
    expect(s.stopTokenIds).toEqual([7, 9]);
    expect(s.stop).toEqual(['\n\n']);
  });
});
