import { afterEach, describe, expect, it } from 'vitest';
import { ServiceError } from '../../src/http/services.js';
import { chatCompletionChunkSchema, chatCompletionResponseSchema } from '../../src/http/schemas.js';
import { fakeGenerateApp, parseSse, type FakeGenerate } from './fake-generate.js';
import { expectError, json, type Harness } from './helpers.js';

let h: Harness;
let gen: FakeGenerate;
afterEach(() => h?.cleanup());

async function setup(withService = true) {
  ({ h, gen } = await fakeGenerateApp(withService));
}

describe('POST /v1/chat/completions', () => {
  it('maps an OpenAI request onto GenerateService and answers a chat.completion', async () => {
    await setup();
    const res = await h.req('POST', '/v1/chat/completions', {
      model: 'gpt-4o-mini',
      user: 'alice',
      messages: [
        { role: 'developer', content: 'be kind' },
        { role: 'user', content: [{ type: 'text', text: 'good ' }, { type: 'text', text: 'morning' }] },
      ],
      max_tokens: 2,
      temperature: 0.5,
      top_p: 0.8,
      stop: ['.'],
      seed: 9,
      frequency_penalty: 0.3,
      presence_penalty: null,
      logit_bias: { '1': 2 },
      top_k: -1, // vLLM's "all tokens"
      min_p: 0.05,
      repetition_penalty: 1.1,
      min_tokens: 1,
      ignore_eos: null,
      stop_token_ids: [7, 9],
      include_stop_str_in_output: true,
      response_format: { type: 'json_object' },
      parallel_tool_calls: false, // unknown fields are ignored, as clients send many
    });
    expect(res.status).toBe(200);
    const body = chatCompletionResponseSchema.parse(await json(res));
    expect(body).toMatchObject({
      object: 'chat.completion',
      model: 'gpt-4o-mini',
      choices: [{ index: 0, message: { role: 'assistant', content: 'echo good' }, finish_reason: 'length' }],
      usage: { prompt_tokens: 7, completion_tokens: 2, total_tokens: 9 },
      memlora: { personalization: { mode: 'injected', adapterVersion: 3 } },
    });
    expect(gen.calls[0].req).toEqual({
      userId: 'alice',
      messages: [
        { role: 'system', content: 'be kind' },
        { role: 'user', content: 'good morning' },
      ],
      maxTokens: 2,
      temperature: 0.5,
      topP: 0.8,
      stop: ['.'],
      seed: 9,
      stream: false,
      mode: 'auto',
      logprobs: false,
      frequencyPenalty: 0.3,
      logitBias: { '1': 2 },
      minP: 0.05,
      repetitionPenalty: 1.1,
      minTokens: 1,
      stopTokenIds: [7, 9],
      includeStopStrInOutput: true,
      responseFormat: { type: 'json_object' },
      // vLLM's default: control tokens leave no text.
      skipSpecialTokens: true,
    });
  });

  it('uses memlora defaults for absent or null fields and accepts the mode extension', async () => {
    await setup();
    await h.req('POST', '/v1/chat/completions', { user: 'alice', messages: [{ role: 'user', content: 'x' }], temperature: null, max_completion_tokens: 5, mode: 'vanilla' });
    expect(gen.calls[0].req).toMatchObject({ maxTokens: 5, temperature: 0, topP: 1, stop: [], mode: 'vanilla' });
    await h.req('POST', '/v1/chat/completions', { user: 'alice', messages: [{ role: 'user', content: 'x' }], top_k: 5, min_p: 0, logit_bias: null, frequency_penalty: null, guided_choice: ['yes', 'no'] });
    expect(gen.calls[1].req).toMatchObject({ topK: 5, guidedChoice: ['yes', 'no'] });
    // vLLM's min_p 0: all tokens, as an absent minP.
    expect(gen.calls[1].req.minP).toBeUndefined();
    // vLLM's priority 0 and an empty logprob_token_ids ask nothing.
    const asked = await h.req('POST', '/v1/chat/completions', { user: 'alice', messages: [{ role: 'user', content: 'x' }], ignore_eos: true, priority: 0, logprob_token_ids: null });
    expect(asked.status).toBe(200);
    expect(gen.calls[2].req).toMatchObject({ ignoreEos: true, maxTokens: 128 });
    expect(gen.calls[1].req.logitBias).toBeUndefined();
    expect(gen.calls[1].req.frequencyPenalty).toBeUndefined();
    const prefilled = [{ role: 'user', content: 'x' }, { role: 'assistant', content: 'Sure,' }];
    await h.req('POST', '/v1/chat/completions', { user: 'alice', messages: prefilled, continue_final_message: true, add_generation_prompt: false });
    expect(gen.calls[3].req).toMatchObject({ messages: prefilled, continueFinalMessage: true });
    // Structured outputs: OpenAI's json_schema, and vLLM's guided_json as an object or as its text.
    const schema = { type: 'object', properties: { a: { type: 'integer' } } };
    await h.req('POST', '/v1/chat/completions', { user: 'alice', messages: [{ role: 'user', content: 'x' }], response_format: { type: 'json_schema', json_schema: { name: 'nums', schema, strict: true } } });
    expect(gen.calls[4].req.responseFormat).toEqual({ type: 'json_schema', jsonSchema: { name: 'nums', schema, strict: true } });
    await h.req('POST', '/v1/chat/completions', { user: 'alice', messages: [{ role: 'user', content: 'x' }], guided_json: schema });
    await h.req('POST', '/v1/chat/completions', { user: 'alice', messages: [{ role: 'user', content: 'x' }], guided_json: JSON.stringify(schema) });
    for (const call of gen.calls.slice(5, 7)) expect(call.req.responseFormat).toEqual({ type: 'json_schema', jsonSchema: { name: 'guided_json', schema } });
    await h.req('POST', '/v1/chat/completions', { user: 'alice', messages: [{ role: 'user', content: 'x' }], guided_regex: '[a-z]+' });
    expect(gen.calls[7].req.guidedRegex).toBe('[a-z]+');
    await h.req('POST', '/v1/chat/completions', { user: 'alice', messages: [{ role: 'user', content: 'x' }], guided_grammar: 'root ::= "a"+' });
    expect(gen.calls[8].req.guidedGrammar).toBe('root ::= "a"+');
    const body = await json(await h.req('POST', '/v1/chat/completions', { user: 'alice', messages: [{ role: 'user', content: 'x' }] }));
    expect(body.model).toBe('memlora');
    expect(gen.calls[9].req.guidedGrammar).toBeUndefined();
    // vLLM's structured_outputs (v0.12 on): the same guides, under one field.
    const so = async (structured_outputs: Record<string, unknown>) => {
      await h.req('POST', '/v1/chat/completions', { user: 'alice', messages: [{ role: 'user', content: 'x' }], structured_outputs });
      return gen.calls.at(-1)!.req;
    };
    expect((await so({ json: schema })).responseFormat).toEqual({ type: 'json_schema', jsonSchema: { name: 'structured_outputs', schema } });
    expect((await so({ json: JSON.stringify(schema), disable_fallback: true })).responseFormat).toEqual({ type: 'json_schema', jsonSchema: { name: 'structured_outputs', schema } });
    expect((await so({ json_object: true })).responseFormat).toEqual({ type: 'json_object' });
    expect(await so({ regex: '[a-z]+', json: null })).toMatchObject({ guidedRegex: '[a-z]+', responseFormat: undefined });
    expect((await so({ choice: ['yes', 'no'] })).guidedChoice).toEqual(['yes', 'no']);
    expect((await so({ grammar: 'root ::= "a"+', disable_any_whitespace: false })).guidedGrammar).toBe('root ::= "a"+');
    // A response_format of type text, as clients send by default, leaves the reply to the vLLM guide.
    const text = { type: 'text' };
    await h.req('POST', '/v1/chat/completions', { user: 'alice', messages: [{ role: 'user', content: 'x' }], response_format: text, guided_json: schema });
    expect(gen.calls.at(-1)!.req.responseFormat).toEqual({ type: 'json_schema', jsonSchema: { name: 'guided_json', schema } });
    await h.req('POST', '/v1/chat/completions', { user: 'alice', messages: [{ role: 'user', content: 'x' }], response_format: text, structured_outputs: { json_object: true } });
    expect(gen.calls.at(-1)!.req.responseFormat).toEqual({ type: 'json_object' });
    await h.req('POST', '/v1/chat/completions', { user: 'alice', messages: [{ role: 'user', content: 'x' }], response_format: text });
    expect(gen.calls.at(-1)!.req.responseFormat).toEqual({ type: 'text' });
    const none = await so({ json_object: false, disable_additional_properties: true });
    expect([none.responseFormat, none.guidedRegex, none.guidedChoice, none.guidedGrammar]).toEqual([undefined, undefined, undefined, undefined]);
    // allowed_token_ids, with tools offered under tool_choice none (no call is guided).
    await h.req('POST', '/v1/chat/completions', { user: 'alice', messages: [{ role: 'user', content: 'x' }], allowed_token_ids: [5, 9], bad_words: ['no'], tools: [{ type: 'function', function: { name: 'f' } }], tool_choice: 'none' });
    expect(gen.calls.at(-1)!.req).toMatchObject({ allowedTokenIds: [5, 9], badWords: ['no'] });
    await h.req('POST', '/v1/chat/completions', { user: 'alice', messages: [{ role: 'user', content: 'x' }], truncate_prompt_tokens: -1 });
    expect(gen.calls.at(-1)!.req.truncatePromptTokens).toBe(-1);
    // vLLM's fields sent empty, or at what memlora does anyway, ask for nothing: served.
    const quiet = { use_beam_search: false, best_of: 1, echo: false, bad_words: [], prompt_logprobs: null, chat_template_kwargs: { enable_thinking: false }, skip_special_tokens: true };
    expect((await h.req('POST', '/v1/chat/completions', { user: 'alice', messages: [{ role: 'user', content: 'x' }], ...quiet })).status).toBe(200);
  });

  it('n choices: one generation request each, seeds advanced per choice, the prompt counted once; streamed, chunks carry their choice', async () => {
    await setup();
    const msg = [{ role: 'user', content: 'one two three' }];
    const body = chatCompletionResponseSchema.parse(await json(await h.req('POST', '/v1/chat/completions', { user: 'alice', messages: msg, n: 3, seed: 10, temperature: 0.8 })));
    expect(body.choices.map((c) => c.index)).toEqual([0, 1, 2]);
    expect(gen.calls.map((x) => x.req.seed)).toEqual([10, 11, 12]);
    expect(body.usage).toMatchObject({ prompt_tokens: 7, completion_tokens: 3 * 4 });
    expect(body.memlora.choices).toHaveLength(3);
    await h.req('POST', '/v1/chat/completions', { user: 'alice', messages: msg, n: 2 });
    expect(gen.calls.slice(3).map((x) => x.req.seed)).toEqual([undefined, undefined]);
    const res = await h.req('POST', '/v1/chat/completions', { user: 'alice', messages: msg, n: 2, stream: true, stream_options: { include_usage: true } });
    const events = parseSse(await res.text());
    expect(events.at(-1)!.data).toBe('[DONE]');
    const chunks = events.slice(0, -1).map((e) => chatCompletionChunkSchema.parse(JSON.parse(e.data)));
    for (const index of [0, 1]) {
      const mine = chunks.flatMap((ch) => ch.choices.filter((c) => c.index === index));
      expect(mine.map((c) => c.delta.content ?? '').join('')).toBe('echo one two three');
      expect(mine.filter((c) => c.finish_reason !== null)).toHaveLength(1);
    }
    expect(chunks.at(-1)!.usage).toMatchObject({ prompt_tokens: 7, completion_tokens: 8 });
  });

  it('rejects what it cannot honour with 422', async () => {
    await setup();
    const msg = [{ role: 'user', content: 'x' }];
    for (const body of [
      { messages: msg },
      { user: 'a b', messages: msg },
      { user: 'alice', messages: msg, n: 17 },
      { user: 'alice', messages: [{ role: 'tool', content: 'x' }] },
      { user: 'alice', messages: [{ role: 'user', content: [{ type: 'image_url', image_url: { url: 'x' } }] }] },
      { user: 'alice', messages: [] },
      { user: 'alice', messages: msg, max_tokens: 0 },
      { user: 'alice', messages: msg, temperature: 9 },
      { user: 'alice', messages: msg, top_logprobs: 2 },
      { user: 'alice', messages: msg, logprobs: false, top_logprobs: 2 },
      { user: 'alice', messages: msg, logprobs: true, top_logprobs: 21 },
      { user: 'alice', messages: msg, logprobs: 'yes' },
      { user: 'alice', messages: msg, frequency_penalty: -2.5 },
      { user: 'alice', messages: msg, presence_penalty: 3 },
      { user: 'alice', messages: msg, logit_bias: { '-1': 1 } },
      { user: 'alice', messages: msg, logit_bias: { '01': 1 } },
      { user: 'alice', messages: msg, logit_bias: { '5': 101 } },
      { user: 'alice', messages: msg, logit_bias: Object.fromEntries(Array.from({ length: 1025 }, (_, i) => [String(i), 1])) },
      { user: 'alice', messages: msg, top_k: -2 },
      { user: 'alice', messages: msg, min_p: 1.5 },
      { user: 'alice', messages: msg, include_stop_str_in_output: 'yes' },
      { user: 'alice', messages: msg, allowed_token_ids: [] },
      { user: 'alice', messages: msg, allowed_token_ids: [-1] },
      { user: 'alice', messages: msg, allowed_token_ids: [1, 2], guided_regex: 'a+' },
      { user: 'alice', messages: msg, allowed_token_ids: [1, 2], response_format: { type: 'json_object' } },
      { user: 'alice', messages: msg, allowed_token_ids: [1, 2], tools: [{ type: 'function', function: { name: 'f' } }] },
      { user: 'alice', messages: msg, repetition_penalty: 0 },
      { user: 'alice', messages: msg, max_tokens: 3, min_tokens: 4 },
      { user: 'alice', messages: msg, ignore_eos: 'yes' },
      { user: 'alice', messages: msg, response_format: { type: 'json_schema', json_schema: { name: 'x' } } },
      { user: 'alice', messages: msg, response_format: { type: 'json_schema', json_schema: { name: 'a name', schema: {} } } },
      { user: 'alice', messages: msg, response_format: { type: 'json_schema', schema: {} } },
      { user: 'alice', messages: msg, guided_json: '{"type": ' },
      { user: 'alice', messages: msg, structured_outputs: { json: '[1]' } },
      { user: 'alice', messages: msg, structured_outputs: { regex: 'a+', choice: ['a'] } },
      { user: 'alice', messages: msg, structured_outputs: { grammar: 'root ::= "a"' }, guided_regex: 'a+' },
      { user: 'alice', messages: msg, structured_outputs: { json_object: true }, response_format: { type: 'json_object' } },
      { user: 'alice', messages: msg, structured_outputs: { structural_tag: '{"type": "structural_tag"}' } },
      { user: 'alice', messages: msg, structured_outputs: { json: {}, whitespace_pattern: '[ ]?' } },
      { user: 'alice', messages: msg, guided_json: {}, guided_whitespace_pattern: '[ ]?' },
      { user: 'alice', messages: msg, structured_outputs: { json: {}, disable_any_whitespace: true } },
      { user: 'alice', messages: msg, structured_outputs: { choice: [] } },
      { user: 'alice', messages: msg, structured_outputs: 'json' },
      { user: 'alice', messages: msg, structured_outputs: { choice: ['a'] }, tools: [{ type: 'function', function: { name: 'f' } }], tool_choice: 'required' },
      { user: 'alice', messages: msg, guided_json: '[1]' },
      { user: 'alice', messages: msg, guided_json: {}, guided_choice: ['a'] },
      { user: 'alice', messages: msg, guided_json: {}, response_format: { type: 'json_object' } },
      { user: 'alice', messages: msg, guided_regex: 'a+', guided_choice: ['a'] },
      { user: 'alice', messages: msg, guided_regex: '' },
      { user: 'alice', messages: msg, response_format: 'json' },
      { user: 'alice', messages: msg, guided_choice: [] },
      { user: 'alice', messages: msg, continue_final_message: true },
      { user: 'alice', messages: [...msg, { role: 'assistant', content: 'Sure' }], continue_final_message: true, add_generation_prompt: true },
      { user: 'alice', messages: msg, add_generation_prompt: false },
      { user: 'alice', messages: msg, guided_choice: ['yes', ''] },
      { user: 'alice', messages: msg, guided_choice: ['yes'], response_format: { type: 'json_object' } },
      // vLLM's fields that would change the reply, which memlora does not do.
      { user: 'alice', messages: msg, bad_words: [' '] },
      { user: 'alice', messages: msg, bad_words: ['no'], guided_choice: ['no', 'yes'] },
      { user: 'alice', messages: msg, bad_words: ['no'], tools: [{ type: 'function', function: { name: 'f' } }] },
      { user: 'alice', messages: msg, truncate_prompt_tokens: 0 },
      { user: 'alice', messages: msg, truncate_prompt_tokens: -2 },
      { user: 'alice', messages: msg, prompt_logprobs: -1 },
      { user: 'alice', messages: msg, prompt_logprobs: 21 },
      { user: 'alice', messages: msg, prompt_logprobs: 0, stream: true },
      { user: 'alice', messages: msg, use_beam_search: true },
      { user: 'alice', messages: msg, best_of: 2 },
      { user: 'alice', messages: msg, logits_processors: ['x'] },
      { user: 'alice', messages: msg, logprobs: true, logprob_token_ids: [5, 9] },
      { user: 'alice', messages: msg, priority: 1 },
      { user: 'alice', messages: msg, chat_template: '{{ messages }}' },
    ]) {
      await expectError(await h.req('POST', '/v1/chat/completions', body), 422, 'validation_failed');
    }
    await expectError(await h.req('POST', '/v1/chat/completions', { user: 'bob', messages: msg }), 404, 'user_not_found');
    expect(gen.calls).toHaveLength(0);
  });

  it('answers 503 without a model and 429 when the queue is full', async () => {
    await setup(false);
    await expectError(await h.req('POST', '/v1/chat/completions', { user: 'alice', messages: [{ role: 'user', content: 'x' }] }), 503, 'model_unavailable');
    h.cleanup();
    await setup();
    gen.failWith = new ServiceError('queue_full', 'full');
    await expectError(await h.req('POST', '/v1/chat/completions', { user: 'alice', messages: [{ role: 'user', content: 'x' }] }), 429, 'queue_full');
  });

  it('logprobs and top_logprobs: OpenAI\'s choices[0].logprobs.content, plain and per streamed delta; null when not asked', async () => {
    await setup();
    const msg = [{ role: 'user', content: 'hi you' }];
    const body = chatCompletionResponseSchema.parse(await json(await h.req('POST', '/v1/chat/completions', { user: 'alice', messages: msg, logprobs: true, top_logprobs: 1 })));
    expect(gen.calls[0].req).toMatchObject({ logprobs: true, topLogprobs: 1 });
    expect(body.choices[0].logprobs).toEqual({
      content: ['echo', ' hi', ' you'].map((token, i) => ({
        token,
        logprob: -(i + 1) / 10,
        bytes: [...Buffer.from(token)],
        top_logprobs: [{ token: 'alt0', logprob: -0.01, bytes: [...Buffer.from('alt0')] }],
      })),
    });
    const plain = chatCompletionResponseSchema.parse(await json(await h.req('POST', '/v1/chat/completions', { user: 'alice', messages: msg })));
    expect(plain.choices[0].logprobs).toBeNull();
    expect(gen.calls[1].req.logprobs).toBe(false);
    // vLLM's return_tokens_as_token_ids: tokens and alternatives named by id, their bytes their own.
    const asIds = chatCompletionResponseSchema.parse(await json(await h.req('POST', '/v1/chat/completions', { user: 'alice', messages: msg, logprobs: true, top_logprobs: 1, return_tokens_as_token_ids: true })));
    expect(asIds.choices[0].logprobs!.content.map((t) => [t.token, t.bytes, t.top_logprobs.map((a) => a.token)])).toEqual(
      ['echo', ' hi', ' you'].map((token, i) => [`token_id:${i}`, [...Buffer.from(token)], ['token_id:1000']]),
    );

    const events = parseSse(await (await h.req('POST', '/v1/chat/completions', { user: 'alice', messages: msg, stream: true, logprobs: true })).text());
    const chunks = events.slice(0, -1).map((e) => chatCompletionChunkSchema.parse(JSON.parse(e.data)));
    const withContent = chunks.filter((c) => c.choices[0]?.delta.content);
    expect(withContent.map((c) => c.choices[0].logprobs?.content.map((t) => [t.token, t.logprob, t.top_logprobs]))).toEqual([[['echo', -0.1, []]], [[' hi', -0.2, []]], [[' you', -0.3, []]]]);
    const idEvents = parseSse(await (await h.req('POST', '/v1/chat/completions', { user: 'alice', messages: msg, stream: true, logprobs: true, return_tokens_as_token_ids: true })).text());
    const idTokens = idEvents.slice(0, -1).flatMap((e) => chatCompletionChunkSchema.parse(JSON.parse(e.data)).choices.flatMap((c) => c.logprobs?.content.map((t) => t.token) ?? []));
    expect(idTokens).toEqual(['token_id:0', 'token_id:1', 'token_id:2']);
  });

  it('prompt_logprobs (vLLM\'s): the prompt as the generation reads it (rendered, cut to truncate_prompt_tokens) scored once for all choices; per token its log-probability, rank and most likely tokens, the first null', async () => {
    await setup();
    const msg = [{ role: 'user', content: 'to the sea' }];
    const res = await h.req('POST', '/v1/chat/completions', { user: 'alice', messages: msg, prompt_logprobs: 2, truncate_prompt_tokens: 6, mode: 'memory', n: 2, seed: 1 });
    const body = chatCompletionResponseSchema.parse(await json(res));
    // The fake renders BOS 1 and one id per character: the last 6 are "he sea".
    expect(gen.tokenizeCalls).toEqual([{ messages: [{ role: 'user', content: 'to the sea' }], continueFinalMessage: undefined, truncatePromptTokens: 6 }]);
    const ids = [...'he sea'].map((ch) => ch.charCodeAt(0));
    expect(gen.scoreCalls).toEqual([{ userId: 'alice', mode: 'memory', prompt: ids.slice(0, 1), text: ids.slice(1), topLogprobs: 2, compare: false }]);
    expect(gen.calls).toHaveLength(2);
    // The fake scores "e sea" as two words, word i of rank i + 2, with made-up alternatives alt0 and alt1 (ranks 1 and 2).
    const alts = { '1000': { logprob: -0.01, rank: 1, decoded_token: 'alt0' }, '1001': { logprob: -0.02, rank: 2, decoded_token: 'alt1' } };
    expect(body.prompt_logprobs).toEqual([null, { '0': { logprob: -0.1, rank: 2, decoded_token: 'e' }, ...alts }, { '1': { logprob: -0.2, rank: 3, decoded_token: ' sea' }, ...alts }]);
    expect(body.choices).toHaveLength(2);
    // truncation_side right: the first 6 ("<s>to th"), as the generation is asked to read them.
    gen.scoreCalls.length = 0;
    await h.req('POST', '/v1/chat/completions', { user: 'alice', messages: msg, prompt_logprobs: 0, truncate_prompt_tokens: 6, truncation_side: 'right' });
    expect(gen.scoreCalls[0]).toMatchObject({ prompt: [1], text: [...'to th'].map((ch) => ch.charCodeAt(0)) });
    expect(gen.calls.at(-1)!.req).toMatchObject({ truncatePromptTokens: 6, truncationSide: 'right' });

    // 0: each token alone; not asked: no field, no scoring pass.
    const alone = chatCompletionResponseSchema.parse(await json(await h.req('POST', '/v1/chat/completions', { user: 'alice', messages: [{ role: 'user', content: 'ab' }], prompt_logprobs: 0 })));
    expect(alone.prompt_logprobs).toEqual([null, { '0': { logprob: -0.1, rank: 2, decoded_token: 'ab' } }]);
    const plain = (await json(await h.req('POST', '/v1/chat/completions', { user: 'alice', messages: msg }))) as Record<string, unknown>;
    expect('prompt_logprobs' in plain).toBe(false);
    expect(gen.scoreCalls).toHaveLength(2);

    // The scoring pass's failure is the request's: a full queue is 429 with Retry-After.
    gen.failWith = new ServiceError('queue_full', 'full', { retryAfterS: 2 });
    const full = await h.req('POST', '/v1/chat/completions', { user: 'alice', messages: msg, prompt_logprobs: 1 });
    expect(full.headers.get('retry-after')).toBe('2');
    await expectError(full, 429, 'queue_full');
  });

  it('echo (vLLM\'s): each choice\'s content starts with the last message\'s text where it is the assistant\'s (a prefilled reply continued), plain and streamed', async () => {
    await setup();
    const prefilled = [{ role: 'user', content: 'x' }, { role: 'assistant', content: [{ type: 'text', text: 'Once ' }, { type: 'text', text: 'upon' }] }];
    const ask = (extra: Record<string, unknown>) => h.req('POST', '/v1/chat/completions', { user: 'alice', messages: prefilled, continue_final_message: true, add_generation_prompt: false, n: 2, ...extra });
    // The fake replies "echo <the last message's text>".
    const body = chatCompletionResponseSchema.parse(await json(await ask({ echo: true })));
    expect(body.choices.map((c) => c.message.content)).toEqual(['Once uponecho Once upon', 'Once uponecho Once upon']);
    const off = chatCompletionResponseSchema.parse(await json(await ask({ echo: false })));
    expect(off.choices[0].message.content).toBe('echo Once upon');
    const events = parseSse(await (await ask({ echo: true, stream: true })).text());
    const chunks = events.slice(0, -1).map((e) => chatCompletionChunkSchema.parse(JSON.parse(e.data)));
    for (const index of [0, 1]) {
      const pieces = chunks.flatMap((ch) => ch.choices.filter((c) => c.index === index).map((c) => c.delta.content ?? ''));
      expect(pieces.join('')).toBe('Once uponecho Once upon');
      expect(pieces.filter((p) => p !== '')[0]).toBe('Once upon');
    }
    // The last message the user's: nothing to echo.
    const user = chatCompletionResponseSchema.parse(await json(await h.req('POST', '/v1/chat/completions', { user: 'alice', messages: [{ role: 'user', content: 'hi' }], echo: true })));
    expect(user.choices[0].message.content).toBe('echo hi');
  });

  it('return_token_ids (vLLM\'s): the prompt\'s ids as the model read them and each choice\'s reply ids, plain and streamed (the prompt\'s on the first chunk)', async () => {
    await setup();
    const msg = [{ role: 'user', content: 'hi you' }];
    // The fake's prompt is ids 101-107; word i is token 500 + i.
    const body = chatCompletionResponseSchema.parse(await json(await h.req('POST', '/v1/chat/completions', { user: 'alice', messages: msg, n: 2, return_token_ids: true })));
    expect(body.prompt_token_ids).toEqual([101, 102, 103, 104, 105, 106, 107]);
    expect(body.choices.map((c) => c.token_ids)).toEqual([[500, 501, 502], [500, 501, 502]]);
    expect(gen.calls[0].req.returnTokenIds).toBe(true);
    const events = parseSse(await (await h.req('POST', '/v1/chat/completions', { user: 'alice', messages: msg, n: 2, stream: true, return_token_ids: true })).text());
    const chunks = events.slice(0, -1).map((e) => chatCompletionChunkSchema.parse(JSON.parse(e.data)));
    expect(chunks[0].prompt_token_ids).toEqual([101, 102, 103, 104, 105, 106, 107]);
    expect(chunks.slice(1).every((c) => c.prompt_token_ids === undefined)).toBe(true);
    for (const index of [0, 1]) expect(chunks.flatMap((c) => c.choices.filter((x) => x.index === index).flatMap((x) => x.token_ids ?? []))).toEqual([500, 501, 502]);
    const plain = (await json(await h.req('POST', '/v1/chat/completions', { user: 'alice', messages: msg }))) as { prompt_token_ids?: unknown; choices: Array<Record<string, unknown>> };
    expect(['prompt_token_ids' in plain, 'token_ids' in plain.choices[0]]).toEqual([false, false]);
    // vLLM's skip_special_tokens: true unless false.
    expect(gen.calls.at(-1)!.req.skipSpecialTokens).toBe(true);
    await h.req('POST', '/v1/chat/completions', { user: 'alice', messages: msg, skip_special_tokens: false });
    expect(gen.calls.at(-1)!.req.skipSpecialTokens).toBe(false);
  });

  it('stream_options.continuous_usage_stats (vLLM\'s, with include_usage): every chunk carries its choice\'s usage so far; no ids unless asked', async () => {
    await setup();
    const msg = [{ role: 'user', content: 'hi you' }];
    const ask = (stream_options: Record<string, unknown>) => h.req('POST', '/v1/chat/completions', { user: 'alice', messages: msg, n: 2, stream: true, stream_options });
    const chunks = parseSse(await (await ask({ include_usage: true, continuous_usage_stats: true })).text()).slice(0, -1).map((e) => chatCompletionChunkSchema.parse(JSON.parse(e.data)));
    const last = chunks.pop()!;
    expect(last.choices).toEqual([]);
    expect(last.usage).toEqual({ prompt_tokens: 7, completion_tokens: 6, total_tokens: 13, prompt_tokens_details: { cached_tokens: 0 } });
    // The fake's prompt is 7 tokens and each word a token: each choice counts 0 (its role), 1, 2, 3, then 3 at its finish.
    for (const index of [0, 1]) {
      const mine = chunks.filter((c) => c.choices[0].index === index);
      expect(mine.map((c) => c.usage)).toEqual([0, 1, 2, 3, 3].map((k) => ({ prompt_tokens: 7, completion_tokens: k, total_tokens: 7 + k })));
    }
    expect(chunks.every((c) => c.prompt_token_ids === undefined && c.choices.every((x) => x.token_ids === undefined))).toBe(true);
    expect(gen.calls[0].req.returnTokenIds).toBe(true);
    // Without include_usage it asks nothing (as in vLLM).
    const plain = parseSse(await (await ask({ continuous_usage_stats: true })).text()).slice(0, -1).map((e) => chatCompletionChunkSchema.parse(JSON.parse(e.data)));
    expect(plain.every((c) => c.usage === undefined)).toBe(true);
    expect(gen.calls.at(-1)!.req.returnTokenIds).toBeUndefined();
  });

  it('streams chat.completion.chunk events ending with [DONE]', async () => {
    await setup();
    const res = await h.req('POST', '/v1/chat/completions', {
      user: 'alice',
      model: 'm',
      messages: [{ role: 'user', content: 'hi you' }],
      stream: true,
      stream_options: { include_usage: true },
    });
    expect(res.headers.get('content-type')).toMatch(/^text\/event-stream/);
    const events = parseSse(await res.text());
    expect(events.every((e) => e.event === undefined)).toBe(true);
    expect(events[events.length - 1].data).toBe('[DONE]');
    const chunks = events.slice(0, -1).map((e) => chatCompletionChunkSchema.parse(JSON.parse(e.data)));
    expect(new Set(chunks.map((c) => c.id)).size).toBe(1);
    expect(chunks[0].choices[0].delta).toEqual({ role: 'assistant', content: '' });
    const text = chunks.map((c) => c.choices[0]?.delta.content ?? '').join('');
    expect(text).toBe('echo hi you');
    const final = chunks[chunks.length - 2];
    expect(final.choices[0].finish_reason).toBe('stop');
    expect(final.memlora?.personalization).toEqual({ mode: 'injected', adapterVersion: 3 });
    const usage = chunks[chunks.length - 1];
    expect(usage.choices).toEqual([]);
    expect(usage.usage).toEqual({ prompt_tokens: 7, completion_tokens: 3, total_tokens: 10, prompt_tokens_details: { cached_tokens: 0 } });
  });
});
