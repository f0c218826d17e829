import { afterAll, describe, expect, it } from 'vitest';
import { Runner } from '../../src/graph/runner.js';
import type { ModelConfig } from '../../src/model/config.js';
import { type GenerateRequest, generate, generateStream } from '../../src/model/generate.js';
import { SlotPool } from '../../src/model/lora-feeds.js';
import { Model } from '../../src/model/model.js';
import { argmax } from '../../src/model/sampling.js';
import { randomAdapter, randomRows, randomWeights, tinyGpt2, tinyLlama } from './fixtures.js';

const runner = new Runner({ intraOpThreads: 1 });
afterAll(() => runner.close());

const families: [string, ModelConfig][] = [
  ['gpt2', tinyGpt2],
  ['llama', tinyLlama],
];

describe.each(families)('%s generation', (_n, cfg) => {
  // Random weights give near-flat logits; scale them up so greedy choices are well separated.
  const model = new Model(cfg, randomWeights(cfg, 41, 0.6), { runner });
  const prompts = randomRows(cfg, [3, 8, 1], 42);

  it('greedy KV-cache generation equals greedy by full recomputation, batched rows of different lengths', async () => {
    const results = await generate(
      model,
      prompts.map((prompt) => ({ prompt, maxTokens: 8, sampling: { temperature: 0 } })),
    );
    for (const [i, prompt] of prompts.entries()) {
      const seq = [...prompt];
      const want: number[] = [];
      for (let s = 0; s < 8; s++) {
        const all = (await model.forwardLogits([seq]))[0];
        const next = argmax(all.subarray(all.length - cfg.vocabSize));
        want.push(next);
        seq.push(next);
        if (next === cfg.eosId) break;
      }
      expect(results[i].tokens).toEqual(want);
      const eos = want[want.length - 1] === cfg.eosId;
      expect(results[i]).toMatchObject({ finishReason: eos ? 'eos' : 'length', promptTokens: prompt.length, completionTokens: want.length });
    }
  });

  it('a seeded request gets the same tokens alone and inside a batch; seeds matter', async () => {
    const req = (prompt: number[], seed: number): GenerateRequest => ({ prompt, maxTokens: 10, seed, sampling: { temperature: 1, topK: 20, topP: 0.9, repetitionPenalty: 1.1, frequencyPenalty: 0.4, presencePenalty: 0.3, logitBias: new Map([[3, 1]]) } });
    const batched = await generate(model, prompts.map((p, i) => req(p, 100 + i)));
    for (const [i, p] of prompts.entries()) {
      const [alone] = await generate(model, [req(p, 100 + i)]);
      expect(alone.tokens).toEqual(batched[i].tokens);
    }
    const other = await generate(model, [req(prompts[1], 999)]);
    expect(other[0].tokens).not.toEqual(batched[1].tokens);
  });

  it('greedy with logit bias, frequency and presence penalties equals the penalised argmax of full recomputation (the reply counted, not the prompt)', async () => {
    const sampling = { temperature: 0, frequencyPenalty: 0.7, presencePenalty: 0.9, logitBias: new Map([[cfg.eosId, -100], [5, 1.5], [9, -2]]) };
    const results = await generate(model, prompts.map((prompt) => ({ prompt, maxTokens: 10, sampling })));
    for (const [i, prompt] of prompts.entries()) {
      const seq = [...prompt];
      const counts = new Map<number, number>();
      const want: number[] = [];
      for (let s = 0; s < 10; s++) {
        const all = (await model.forwardLogits([seq]))[0];
        const row = Array.from(all.subarray(all.length - cfg.vocabSize));
        const scored = row.map((x, id) => {
          const n = counts.get(id) ?? 0;
          return x + (sampling.logitBias.get(id) ?? 0) - n * 0.7 - (n > 0 ? 0.9 : 0);
        });
        const next = argmax(scored);
        want.push(next);
        seq.push(next);
        counts.set(next, (counts.get(next) ?? 0) + 1);
      }
      expect(results[i].tokens).toEqual(want);
      // The penalties moved the choice: plain greedy repeats more.
      expect(new Set(want).size).toBeGreaterThan(3);
    }
    await expect(generate(model, [{ prompt: prompts[0], maxTokens: 2, sampling: { logitBias: new Map([[cfg.vocabSize, 1]]) } }])).rejects.toMatchObject({
      code: 'bad_logit_bias',
      details: { tokenId: cfg.vocabSize, vocabSize: cfg.vocabSize },
    });
  });

  it('minTokens: end tokens cannot be drawn before it, then may end the reply', async () => {
    // A bias of +100 makes EOS the greedy choice at every step.
    const sampling = { temperature: 0, logitBias: new Map([[cfg.eosId, 100]]) };
    const [early, held, never, ignored] = await generate(model, [
      { prompt: prompts[0], maxTokens: 8, sampling },
      { prompt: prompts[0], maxTokens: 8, minTokens: 3, sampling },
      { prompt: prompts[0], maxTokens: 5, minTokens: 5, sampling },
      { prompt: prompts[0], maxTokens: 7, ignoreEos: true, sampling },
    ]);
    expect(early.tokens).toEqual([cfg.eosId]);
    expect(held.tokens).toHaveLength(4);
    expect(held.tokens.slice(0, 3)).not.toContain(cfg.eosId);
    expect(held.tokens[3]).toBe(cfg.eosId);
    expect(held.finishReason).toBe('eos');
    // Held back, each step takes the plain greedy choice among the other tokens.
    const seq = [...prompts[0]];
    for (let s = 0; s < 3; s++) {
      const all = (await model.forwardLogits([seq]))[0];
      const row = Array.from(all.subarray(all.length - cfg.vocabSize));
      row[cfg.eosId] = -Infinity;
      expect(held.tokens[s]).toBe(argmax(row));
      seq.push(held.tokens[s]);
    }
    expect(never.tokens).toHaveLength(5);
    expect(never.tokens).not.toContain(cfg.eosId);
    expect(never.finishReason).toBe('length');
    expect(ignored.tokens).toHaveLength(7);
    expect(ignored.tokens).not.toContain(cfg.eosId);
    expect(ignored.tokens.slice(0, 5)).toEqual(never.tokens);
    await expect(generate(model, [{ prompt: prompts[0], maxTokens: 2, minTokens: -1 }])).rejects.toMatchObject({ code: 'bad_min_tokens' });
  });

  it('logprobs: each token\'s log-softmax under the model (before penalty and temperature), as full recomputation gives it', async () => {
    const sampling = { temperature: 1.3, topK: 20, repetitionPenalty: 1.5 };
    const results = await generate(model, prompts.map((prompt, i) => ({ prompt, maxTokens: 6, seed: 7 + i, sampling, logprobs: 3 })));
    for (const [i, prompt] of prompts.entries()) {
      const r = results[i];
      expect(r.logprobs!.map((lp) => lp.tokenId)).toEqual(r.tokens);
      const all = (await model.forwardLogits([[...prompt, ...r.tokens]]))[0];
      r.tokens.forEach((token, s) => {
        const row = Array.from(all.subarray((prompt.length - 1 + s) * cfg.vocabSize, (prompt.length + s) * cfg.vocabSize));
        const m = Math.max(...row);
        const lse = m + Math.log(row.reduce((a, x) => a + Math.exp(x - m), 0));
        const lp = r.logprobs![s];
        expect(lp.logprob).toBeCloseTo(row[token] - lse, 4);
        const best = row.map((x, id) => [x, id]).sort((p, q) => q[0] - p[0] || p[1] - q[1]).slice(0, 3);
        expect(lp.top.map((t) => t.tokenId)).toEqual(best.map(([, id]) => id));
        lp.top.forEach((t, k) => expect(t.logprob).toBeCloseTo(best[k][0] - lse, 4));
      });
    }
    // Without the option nothing is recorded; a bad count is refused.
    const [plain] = await generate(model, [{ prompt: prompts[0], maxTokens: 2 }]);
    expect(plain.logprobs).toBeUndefined();
    await expect(generate(model, [{ prompt: prompts[0], maxTokens: 2, logprobs: -1 }])).rejects.toMatchObject({ code: 'bad_logprobs' });
  });

  it('mixed adapters in one batch give each row what it gets alone with its adapter', async () => {
    const a = randomAdapter(cfg, [0, 1], 2, 43, 2);
    const b = randomAdapter(cfg, [1], 3, 44, 2);
    const pool = new SlotPool(cfg, 3, 4);
    pool.set(1, a);
    pool.set(2, b);
    const slots = [2, 0, 1];
    const mixed = await generate(
      model,
      prompts.map((prompt, i) => ({ prompt, maxTokens: 6, sampling: { temperature: 0 }, slot: slots[i] })),
      { lora: { pool } },
    );
    const adapters = [b, null, a];
    for (const [i, prompt] of prompts.entries()) {
      const ad = adapters[i];
      const [alone] = await generate(model, [{ prompt, maxTokens: 6, sampling: { temperature: 0 } }], ad ? { lora: { adapter: ad } } : {});
      expect(mixed[i].tokens).toEqual(alone.tokens);
    }
    const [plain] = await generate(model, [{ prompt: prompts[0], maxTokens: 6, sampling: { temperature: 0 } }]);
    expect(mixed[0].tokens).not.toEqual(plain.tokens);
  });
});

describe('generate: ending and streaming', () => {
  const cfg = tinyGpt2;
  const model = new Model(cfg, randomWeights(cfg, 45, 0.6), { runner });
  const prompt = [3, 4, 5];
  const greedy = (maxTokens: number, extra: Partial<GenerateRequest> = {}): GenerateRequest => ({ prompt, maxTokens, sampling: { temperature: 0 }, ...extra });

  it('ends at a stop token (kept in tokens) with finishReason eos', async () => {
    const [free] = await generate(model, [greedy(6)]);
    const stopAt = free.tokens.findIndex((t, i) => free.tokens.indexOf(t) === i && i >= 2);
    const [r] = await generate(model, [greedy(6, { stopTokenIds: [free.tokens[stopAt]] })]);
    expect(r.finishReason).toBe('eos');
    expect(r.tokens).toEqual(free.tokens.slice(0, stopAt + 1));
  });

  it('ends with length when the context is full', async () => {
    const long = Array.from({ length: cfg.maxPositions - 2 }, (_, i) => i % cfg.vocabSize);
    const [r] = await generate(model, [{ prompt: long, maxTokens: 10, sampling: { temperature: 0 } }]);
    expect(r.finishReason).toBe('length');
    expect(r.completionTokens).toBe(3); // positions maxPositions-2 and -1 are fed, the third token is not
    await expect(generate(model, [{ prompt: [...long, 1, 2], maxTokens: 1 }])).rejects.toMatchObject({ code: 'prompt_too_long' });
    await expect(generate(model, [{ prompt: [], maxTokens: 1 }])).rejects.toMatchObject({ code: 'empty_prompt' });
  });

  it('streams tokens as they come, rows interleaved, and stops on cancel', async () => {
    const order: number[] = [];
    const results = await generate(model, [greedy(4), greedy(2, { prompt: [7] })], { onToken: (e) => order.push(e.index) });
    expect(order).toEqual([0, 1, 0, 1, 0, 0]);
    expect(results.map((r) => r.completionTokens)).toEqual([4, 2]);

    const ac = new AbortController();
    const seen: string[] = [];
    for await (const e of generateStream(model, [greedy(50)], { signal: ac.signal })) {
      if (e.type === 'token') {
        if (seen.length === 2) ac.abort();
        seen.push('t');
      } else {
        expect(e.result.finishReason).toBe('cancelled');
        expect(e.result.completionTokens).toBe(3);
      }
    }
  });
});
