/** POST /v1/completions through the real app and a real SQLite file, generation and scoring faked (the real engine behind it: test/serve/http.test.ts). */
import { afterEach, describe, expect, it } from 'vitest';
import { completionChunkSchema, completionResponseSchema } from '../../src/http/schemas.js';
import { ServiceError } from '../../src/http/services.js';
import { fakeGenerateApp, parseSse, type FakeGenerate } from './fake-generate.js';
import { expectError, json, type Harness } from './helpers.js';

let h: Harness;
let gen: FakeGenerate;
afterEach(() => h?.cleanup());

async function setup() {
  ({ h, gen } = await fakeGenerateApp());
}

const post = (body: unknown) => h.req('POST', '/v1/completions', body);

describe('POST /v1/completions', () => {
  it('maps a prompt onto /v1/generate (OpenAI\'s 16 tokens by default, the shared sampling fields) and answers a text_completion', async () => {
    await setup();
    const res = await post({ model: 'davinci-002', user: 'alice', prompt: 'one two', temperature: 0.5, seed: 3, frequency_penalty: 0.2, top_k: 4, min_p: 0.2, stop: '.', include_stop_str_in_output: true, bad_words: ['no'] });
    expect(res.status).toBe(200);
    const body = completionResponseSchema.parse(await json(res));
    expect(body).toMatchObject({ object: 'text_completion', model: 'davinci-002', choices: [{ index: 0, text: 'echo one two', logprobs: null, finish_reason: 'stop' }] });
    expect(body.usage).toEqual({ prompt_tokens: 7, completion_tokens: 3, total_tokens: 10, prompt_tokens_details: { cached_tokens: 0 } });
    expect(gen.calls[0].req).toMatchObject({ userId: 'alice', prompt: 'one two', maxTokens: 16, temperature: 0.5, seed: 3, frequencyPenalty: 0.2, topK: 4, minP: 0.2, stop: ['.'], includeStopStrInOutput: true, badWords: ['no'], logprobs: false });
    expect(gen.scoreCalls).toHaveLength(0);
  });

  it('several prompts: one choice each, in order, usage summed', async () => {
    await setup();
    const body = completionResponseSchema.parse(await json(await post({ user: 'alice', prompt: ['a b c', 'd'], max_tokens: 2 })));
    expect(body.choices.map((c) => [c.index, c.text, c.finish_reason])).toEqual([[0, 'echo a', 'length'], [1, 'echo d', 'stop']]);
    expect(body.usage.completion_tokens).toBe(4);
    expect(body.usage.prompt_tokens).toBe(14);
  });

  it('n choices per prompt, ordered prompt by prompt; the prompt scored once for all its choices; streamed per choice', async () => {
    await setup();
    const body = completionResponseSchema.parse(await json(await post({ user: 'alice', prompt: ['a b', 'c'], n: 2, seed: 5, echo: true, logprobs: 0, max_tokens: 3 })));
    expect(body.choices.map((c) => [c.index, c.text])).toEqual([[0, 'a becho a b'], [1, 'a becho a b'], [2, 'cecho c'], [3, 'cecho c']]);
    expect(gen.calls.map((x) => [x.req.prompt, x.req.seed])).toEqual([['a b', 5], ['a b', 6], ['c', 5], ['c', 6]]);
    expect(gen.scoreCalls).toHaveLength(2);
    expect(body.usage).toMatchObject({ prompt_tokens: 14, completion_tokens: 3 + 3 + 2 + 2 });
    const res = await post({ user: 'alice', prompt: 'x y', n: 2, max_tokens: 4, stream: true });
    const chunks = parseSse(await res.text()).slice(0, -1).map((e) => completionChunkSchema.parse(JSON.parse(e.data)));
    for (const index of [0, 1]) expect(chunks.flatMap((ch) => ch.choices.filter((c) => c.index === index).map((c) => c.text)).join('')).toBe('echo x y');
  });

  it('prompt_logprobs (vLLM\'s): each choice has its prompt\'s, scored once per prompt as the generation reads it (a text after BOS, token ids as they are)', async () => {
    await setup();
    const body = completionResponseSchema.parse(await json(await post({ user: 'alice', prompt: ['a b', 'c'], n: 2, prompt_logprobs: 1, max_tokens: 1 })));
    const code = (s: string) => [...s].map((ch) => ch.charCodeAt(0));
    expect(gen.scoreCalls).toEqual([
      { userId: 'alice', mode: 'auto', prompt: [1], text: code('a b'), topLogprobs: 1, compare: false },
      { userId: 'alice', mode: 'auto', prompt: [1], text: code('c'), topLogprobs: 1, compare: false },
    ]);
    const alt = { '1000': { logprob: -0.01, rank: 1, decoded_token: 'alt0' } };
    const ab = [null, { '0': { logprob: -0.1, rank: 2, decoded_token: 'a' }, ...alt }, { '1': { logprob: -0.2, rank: 3, decoded_token: ' b' }, ...alt }];
    const c = [null, { '0': { logprob: -0.1, rank: 2, decoded_token: 'c' }, ...alt }];
    expect(body.choices.map((ch) => ch.prompt_logprobs)).toEqual([ab, ab, c, c]);
    expect(gen.calls).toHaveLength(4);

    // Token ids as they are, cut to truncate_prompt_tokens; a single token has nothing before it (no scoring pass).
    gen.scoreCalls.length = 0;
    const ids = completionResponseSchema.parse(await json(await post({ user: 'alice', prompt: [7, 70, 71, 72], truncate_prompt_tokens: 3, prompt_logprobs: 0, max_tokens: 1 })));
    expect(gen.scoreCalls).toEqual([{ userId: 'alice', mode: 'auto', prompt: [70], text: [71, 72], topLogprobs: 0, compare: false }]);
    expect(ids.choices[0].prompt_logprobs).toEqual([null, { '0': { logprob: -0.1, rank: 2, decoded_token: 'GH' } }]);
    const one = completionResponseSchema.parse(await json(await post({ user: 'alice', prompt: [7], prompt_logprobs: 3, max_tokens: 1 })));
    expect(one.choices[0].prompt_logprobs).toEqual([null]);
    expect(gen.scoreCalls).toHaveLength(1);
  });

  it('return_token_ids (vLLM\'s): each choice\'s prompt ids as the model read them and its reply\'s, plain and streamed; with nothing generated the prompt as it would be read', async () => {
    await setup();
    // The fake's prompt is ids 101-107; word i is token 500 + i; its tokenizer reads a text as BOS 1 and one id per character.
    const body = completionResponseSchema.parse(await json(await post({ user: 'alice', prompt: ['a b', 'c'], return_token_ids: true, max_tokens: 2 })));
    expect(body.choices.map((c) => [c.prompt_token_ids, c.token_ids])).toEqual([[[101, 102, 103, 104, 105, 106, 107], [500, 501]], [[101, 102, 103, 104, 105, 106, 107], [500, 501]]]);
    const scored = completionResponseSchema.parse(await json(await post({ user: 'alice', prompt: 'ab', return_token_ids: true, max_tokens: 0, echo: true })));
    expect([scored.choices[0].prompt_token_ids, scored.choices[0].token_ids]).toEqual([[1, 97, 98], []]);
    const events = parseSse(await (await post({ user: 'alice', prompt: 'a b', return_token_ids: true, max_tokens: 3, stream: true })).text());
    const chunks = events.slice(0, -1).map((e) => completionChunkSchema.parse(JSON.parse(e.data)));
    expect(chunks.flatMap((c) => c.choices.flatMap((x) => x.token_ids ?? []))).toEqual([500, 501, 502]);
    expect(chunks.flatMap((c) => c.choices.flatMap((x) => (x.prompt_token_ids ? [x.prompt_token_ids] : [])))).toEqual([[101, 102, 103, 104, 105, 106, 107]]);
  });

  it('stream_options.continuous_usage_stats (vLLM\'s, with include_usage): every chunk carries its choice\'s usage so far', async () => {
    await setup();
    const res = await post({ user: 'alice', prompt: 'a b', max_tokens: 3, echo: true, stream: true, stream_options: { include_usage: true, continuous_usage_stats: true } });
    const chunks = parseSse(await res.text()).slice(0, -1).map((e) => completionChunkSchema.parse(JSON.parse(e.data)));
    const last = chunks.pop()!;
    expect(last.usage).toMatchObject({ prompt_tokens: 7, completion_tokens: 3 });
    // The echo (0), each word (the fake's prompt is 7 tokens, each word a token), the finish.
    expect(chunks.map((c) => [c.choices[0].text, c.usage])).toEqual(
      [['a b', 0], ['echo', 1], [' a', 2], [' b', 3], ['', 3]].map(([text, k]) => [text, { prompt_tokens: 7, completion_tokens: k, total_tokens: 7 + (k as number) }]),
    );
    expect(chunks.every((c) => c.choices[0].token_ids === undefined)).toBe(true);
  });

  it('echo with logprobs: the prompt\'s tokens scored, then the completion\'s; offsets into the returned text', async () => {
    await setup();
    const body = completionResponseSchema.parse(await json(await post({ user: 'alice', prompt: 'to the sea', max_tokens: 2, echo: true, logprobs: 2 })));
    const c = body.choices[0];
    expect(c.text).toBe('to the seaecho to');
    expect(gen.scoreCalls).toEqual([{ userId: 'alice', text: 'to the sea', mode: 'auto', topLogprobs: 2, compare: false }]);
    expect(gen.calls[0].req).toMatchObject({ logprobs: true, topLogprobs: 2 });
    expect(c.logprobs!.tokens).toEqual(['to', ' the', ' sea', 'echo', ' to']);
    expect(c.logprobs!.token_logprobs).toEqual([-0.1, -0.2, -0.3, -0.1, -0.2]);
    expect(c.logprobs!.text_offset).toEqual([0, 2, 6, 10, 14]);
    c.logprobs!.tokens.forEach((t, i) => expect(c.text.slice(c.logprobs!.text_offset[i]).startsWith(t)).toBe(true));
    expect(c.logprobs!.top_logprobs[0]).toEqual({ alt0: -0.01, alt1: -0.02 });

    // vLLM's return_tokens_as_token_ids: the tokens and alternatives by id; the offsets still into the text.
    const asIds = completionResponseSchema.parse(await json(await post({ user: 'alice', prompt: 'to the sea', max_tokens: 2, echo: true, logprobs: 2, return_tokens_as_token_ids: true })));
    const a = asIds.choices[0].logprobs!;
    expect(a.tokens).toEqual(['token_id:0', 'token_id:1', 'token_id:2', 'token_id:0', 'token_id:1']);
    expect(a.top_logprobs[0]).toEqual({ 'token_id:1000': -0.01, 'token_id:1001': -0.02 });
    expect([a.token_logprobs, a.text_offset]).toEqual([c.logprobs!.token_logprobs, c.logprobs!.text_offset]);
    // A prompt of ids: its first token, unscored, by id too; streamed the same.
    const ids = completionResponseSchema.parse(await json(await post({ user: 'alice', prompt: [7, 97], max_tokens: 0, echo: true, logprobs: 0, return_tokens_as_token_ids: true })));
    expect(ids.choices[0].logprobs!.tokens).toEqual(['token_id:7', 'token_id:0']);
    const events = parseSse(await (await post({ user: 'alice', prompt: 'to the sea', max_tokens: 2, logprobs: 0, stream: true, return_tokens_as_token_ids: true })).text());
    const streamed = events.slice(0, -1).flatMap((e) => completionChunkSchema.parse(JSON.parse(e.data)).choices.flatMap((ch) => ch.logprobs?.tokens ?? []));
    expect(streamed).toEqual(['token_id:0', 'token_id:1']);
  });

  it('max_tokens 0 with echo scores the prompt and generates nothing (a log-likelihood query)', async () => {
    await setup();
    const body = completionResponseSchema.parse(await json(await post({ user: 'alice', prompt: ['x y', 'z'], max_tokens: 0, echo: true, logprobs: 0 })));
    expect(gen.calls).toHaveLength(0);
    expect(body.choices.map((c) => [c.text, c.finish_reason, c.logprobs!.token_logprobs])).toEqual([['x y', 'length', [-0.1, -0.2]], ['z', 'length', [-0.1]]]);
    expect(body.usage).toMatchObject({ prompt_tokens: 1 + 2 + (1 + 1), completion_tokens: 0 }); // BOS and the tokens of each prompt
    // Echo without logprobs and max_tokens 0 still counts the prompt's tokens.
    const plain = completionResponseSchema.parse(await json(await post({ user: 'alice', prompt: 'x y', max_tokens: 0, echo: true })));
    expect(plain.choices[0]).toMatchObject({ text: 'x y', logprobs: null });
  });

  it('streams one prompt: the echo first, then each piece, the finish and usage, then [DONE]', async () => {
    await setup();
    const res = await post({ user: 'alice', prompt: 'one two', max_tokens: 5, echo: true, logprobs: 0, stream: true, stream_options: { include_usage: true } });
    expect(res.headers.get('content-type')).toMatch(/text\/event-stream/);
    const events = parseSse(await res.text());
    expect(events.at(-1)!.data).toBe('[DONE]');
    const chunks = events.slice(0, -1).map((e) => completionChunkSchema.parse(JSON.parse(e.data)));
    const text = chunks.flatMap((ch) => ch.choices.map((c) => c.text)).join('');
    expect(text).toBe('one twoecho one two');
    expect(chunks[0].choices[0].logprobs!.tokens).toEqual(['one', ' two']);
    const offsets = chunks.flatMap((ch) => ch.choices.flatMap((c) => c.logprobs?.text_offset ?? []));
    expect(offsets).toEqual([0, 3, 7, 11, 15]);
    expect(chunks.flatMap((ch) => ch.choices.map((c) => c.finish_reason)).filter(Boolean)).toEqual(['stop']);
    expect(chunks.at(-1)!.usage).toMatchObject({ completion_tokens: 3 });
  });

  it('token-id prompts: fed as they are; echoed as their text, scored after their first token (null, as OpenAI has it)', async () => {
    await setup();
    const body = completionResponseSchema.parse(await json(await post({ user: 'alice', prompt: [1, 104, 32, 105], max_tokens: 0, echo: true, logprobs: 1 })));
    expect(gen.scoreCalls).toEqual([{ userId: 'alice', prompt: [1], text: [104, 32, 105], mode: 'auto', topLogprobs: 1, compare: false }]);
    const c = body.choices[0];
    expect(c.text).toBe('<s>h i');
    expect(c.logprobs).toEqual({
      tokens: ['<s>', 'h', ' i'],
      token_logprobs: [null, -0.1, -0.2],
      top_logprobs: [null, { alt0: -0.01 }, { alt0: -0.01 }],
      text_offset: [0, 3, 4],
    });
    // Several prompts of ids, one choice each; a one-token prompt has nothing to score but is echoed.
    const many = completionResponseSchema.parse(await json(await post({ user: 'alice', prompt: [[104, 105], [106]], max_tokens: 2, echo: true, logprobs: 0 })));
    expect(gen.calls.map((x) => x.req.prompt).sort()).toEqual([[104, 105], [106]]);
    expect(many.choices.map((ch) => [ch.index, ch.text])).toEqual([[0, 'hiecho hi'], [1, 'jecho j']]);
    expect(many.choices[1].logprobs!.token_logprobs).toEqual([null, -0.1, -0.2]);
    expect(gen.scoreCalls).toHaveLength(2);
    // One prompt of ids streams.
    const res = await post({ user: 'alice', prompt: [104, 105], max_tokens: 3, stream: true, echo: true });
    const chunks = parseSse(await res.text()).slice(0, -1).map((e) => completionChunkSchema.parse(JSON.parse(e.data)));
    expect(chunks.flatMap((ch) => ch.choices.map((x) => x.text)).join('')).toBe('hiecho hi');
    // An id outside the vocabulary, echoed: 422 token_out_of_range before anything runs.
    const before = gen.calls.length;
    const err = await expectError(await post({ user: 'alice', prompt: [104, 5000], echo: true }), 422, 'token_out_of_range');
    expect(err.details).toEqual({ tokenId: 5000, vocabSize: 2048 });
    expect(gen.calls).toHaveLength(before);
  });

  it('rejects what it cannot honour with 422, unknown users with 404, and maps the service\'s errors', async () => {
    await setup();
    for (const body of [
      { user: 'alice' },
      { user: 'alice', prompt: '' },
      { user: 'alice', prompt: [] },
      { user: 'alice', prompt: [1, 'a'] },
      { user: 'alice', prompt: [[1, 2], 'a'] },
      { user: 'alice', prompt: [[]] },
      { user: 'alice', prompt: [-1, 2] },
      { user: 'alice', prompt: [1.5] },
      { user: 'alice', prompt: [[104, 105], [106]], max_tokens: 0, echo: true },
      { user: 'alice', prompt: [[1], [2]], stream: true },
      { user: 'alice', prompt: Array.from({ length: 17 }, () => 'x') },
      { user: 'alice', prompt: 'x', max_tokens: 0 },
      { user: 'alice', prompt: ['x', 'y'], stream: true },
      { user: 'alice', prompt: 'x', logprobs: 21 },
      { user: 'alice', prompt: 'x', logprobs: true },
      { user: 'alice', prompt: 'x', best_of: 2 },
      { user: 'alice', prompt: 'x', suffix: 'end' },
      { user: 'alice', prompt: 'x', n: 17 },
      { user: 'alice', prompt: 'x', min_tokens: 20 },
      { user: 'alice', prompt: 'x', bad_words: [''] },
      { user: 'alice', prompt: 'x', prompt_logprobs: -1 },
      { user: 'alice', prompt: 'x', priority: -3 },
      { user: 'alice', prompt: 'x', logprob_token_ids: [1] },
      { user: 'alice', prompt: 'x', prompt_logprobs: 1.5 },
      { user: 'alice', prompt: 'x', prompt_logprobs: 1, stream: true },
      { user: 'alice', prompt: 'x', truncate_prompt_tokens: 1.5 },
    ]) {
      await expectError(await post(body), 422, 'validation_failed');
    }
    await expectError(await post({ user: 'bob', prompt: 'x' }), 404, 'user_not_found');
    expect(gen.calls).toHaveLength(0);
    gen.failWith = new ServiceError('queue_full', 'full', { retryAfterS: 1 });
    await expectError(await post({ user: 'alice', prompt: ['x', 'y'] }), 429, 'queue_full');
  });
});
