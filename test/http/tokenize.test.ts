/** POST /tokenize and /detokenize through the real app, the tokenizer faked (the engine's tokenizing is tested in test/serve). */
import { afterEach, describe, expect, it } from 'vitest';
import { detokenizeResponseSchema, tokenizeResponseSchema } from '../../src/http/schemas.js';
import { toolsPrompt } from '../../src/http/tools.js';
import { fakeGenerateApp, type FakeGenerate } from './fake-generate.js';
import { expectError, json, type Harness } from './helpers.js';

let h: Harness;
let gen: FakeGenerate;
afterEach(() => h?.cleanup());

async function setup(withService = true) {
  ({ h, gen } = await fakeGenerateApp(withService));
}

describe('POST /tokenize', () => {
  it("maps vLLM's body onto the service (a developer message is a system one, text parts joined) and answers vLLM's fields", async () => {
    await setup();
    const res = await h.req('POST', '/tokenize', { model: 'memlora', prompt: 'hi', return_token_strs: true });
    expect(res.status).toBe(200);
    expect(tokenizeResponseSchema.parse(await json(res))).toEqual({ count: 3, max_model_len: 512, tokens: [1, 104, 105], token_strs: ['<s>', 'h', 'i'] });
    const plain = tokenizeResponseSchema.parse(await json(await h.req('POST', '/tokenize', { prompt: 'hi', add_special_tokens: false })));
    expect(plain).toEqual({ count: 2, max_model_len: 512, tokens: [104, 105], token_strs: null });
    await h.req('POST', '/tokenize', {
      messages: [
        { role: 'developer', content: 'be brief' },
        { role: 'user', content: [{ type: 'text', text: 'a' }, { type: 'text', text: 'b' }] },
      ],
      add_generation_prompt: false,
    });
    expect(gen.tokenizeCalls).toEqual([
      { prompt: 'hi', addSpecialTokens: undefined, addGenerationPrompt: undefined, returnTokenStrings: true },
      { prompt: 'hi', addSpecialTokens: false, addGenerationPrompt: undefined, returnTokenStrings: undefined },
      {
        messages: [
          { role: 'system', content: 'be brief' },
          { role: 'user', content: 'ab' },
        ],
        addSpecialTokens: undefined,
        addGenerationPrompt: false,
        returnTokenStrings: undefined,
      },
    ]);
  });

  it('tokenizes messages with tools as a chat completion offering them is fed: the tools described in the system message', async () => {
    await setup();
    const tools = [{ type: 'function', function: { name: 'get_time', description: 'The time now.' } }];
    const messages = [{ role: 'user', content: 'time?' }];
    for (const tool_choice of [undefined, 'required', 'none'] as const) {
      expect((await h.req('POST', '/tokenize', { messages, tools, tool_choice })).status).toBe(200);
      const fed = gen.tokenizeCalls.at(-1)!.messages;
      expect(fed).toEqual(tool_choice === 'none' ? messages : [{ role: 'system', content: toolsPrompt({ tools: tools as never }) }, ...messages]);
    }
    // The same messages a chat completion with these tools generates from.
    await h.req('POST', '/v1/chat/completions', { user: 'alice', messages, tools });
    expect(gen.calls[0].req.messages).toEqual(gen.tokenizeCalls[0].messages);
  });

  it('rejects a body with neither or both of prompt and messages, or a bad field, with 422 before the service', async () => {
    await setup();
    for (const [body, path] of [
      [{}, 'prompt'],
      [{ prompt: 'a', messages: [{ role: 'user', content: 'b' }] }, 'prompt'],
      [{ messages: [] }, 'messages'],
      [{ messages: [{ role: 'function', content: 'x' }] }, 'messages.0.role'],
      [{ messages: [{ role: 'tool', content: 'x' }] }, 'messages.0.tool_call_id'],
      [{ prompt: 'a', return_token_strs: 'yes' }, 'return_token_strs'],
      [{ messages: [{ role: 'user', content: 'b' }], continue_final_message: true }, 'continue_final_message'],
      [{ messages: [{ role: 'assistant', content: 'b' }], continue_final_message: true, add_generation_prompt: true }, 'add_generation_prompt'],
      [{ prompt: 'a', tools: [{ type: 'function', function: { name: 'f' } }] }, 'tools'],
      [{ messages: [{ role: 'user', content: 'b' }], tool_choice: 'required' }, 'tool_choice'],
    ] as const) {
      const err = await expectError(await h.req('POST', '/tokenize', body), 422, 'validation_failed');
      expect(err.details.issues.map((i: { path: string }) => i.path), JSON.stringify(body)).toContain(path);
    }
    expect(gen.tokenizeCalls).toHaveLength(0);
  });

  it('answers 503 model_unavailable without a model, or while it loads', async () => {
    await setup(false);
    await expectError(await h.req('POST', '/tokenize', { prompt: 'x' }), 503, 'model_unavailable');
    await expectError(await h.req('POST', '/detokenize', { tokens: [1] }), 503, 'model_unavailable');
    h.cleanup();
    await setup();
    gen.loaded = false;
    await expectError(await h.req('POST', '/tokenize', { prompt: 'x' }), 503, 'model_unavailable');
  });
});

describe('POST /detokenize', () => {
  it('answers the text of token ids; an id outside the vocabulary is 422 token_out_of_range with its details', async () => {
    await setup();
    expect(detokenizeResponseSchema.parse(await json(await h.req('POST', '/detokenize', { model: 'x', tokens: [1, 104, 105] })))).toEqual({ prompt: '<s>hi' });
    expect(await json(await h.req('POST', '/detokenize', { tokens: [] }))).toEqual({ prompt: '' });
    const err = await expectError(await h.req('POST', '/detokenize', { tokens: [104, 2048] }), 422, 'token_out_of_range');
    expect(err.details).toEqual({ tokenId: 2048, vocabSize: 2048 });
    for (const tokens of [[-1], [1.5], 'abc', undefined]) {
      await expectError(await h.req('POST', '/detokenize', tokens === undefined ? {} : { tokens }), 422, 'validation_failed');
    }
  });
});
