import { afterEach, describe, expect, it } from 'vitest';
import { ServiceError } from '../../src/http/services.js';
import { generateDoneEventSchema, generateResultSchema, generateTokenEventSchema } from '../../src/http/schemas.js';
import { fakeGenerateApp, parseSse, type FakeGenerate } from './fake-generate.js';
import { expectError, json, until, type Harness } from './helpers.js';

let h: Harness;
let gen: FakeGenerate;
afterEach(() => h?.cleanup());

async function setup(withService = true) {
  ({ h, gen } = await fakeGenerateApp(withService));
}

describe('POST /v1/generate without a model', () => {
  it('answers 503 model_unavailable with Retry-After', async () => {
    await setup(false);
    const res = await h.req('POST', '/v1/generate', { userId: 'alice', prompt: 'hi' });
    expect(res.headers.get('retry-after')).toBeTruthy();
    await expectError(res, 503, 'model_unavailable');
  });

  it('answers 503 while the model loads and while the server drains', async () => {
    await setup();
    gen.loaded = false;
    await expectError(await h.req('POST', '/v1/generate', { userId: 'alice', prompt: 'hi' }), 503, 'model_unavailable');
    gen.loaded = true;
    h.lifecycle.draining = true;
    await expectError(await h.req('POST', '/v1/generate', { userId: 'alice', prompt: 'hi' }), 503, 'shutting_down');
    expect(gen.calls).toHaveLength(0);
  });
});

describe('POST /v1/generate (JSON)', () => {
  it('passes a normalised request and returns the result', async () => {
    await setup();
    const res = await h.req('POST', '/v1/generate', { userId: 'alice', prompt: 'one two three' });
    expect(res.status).toBe(200);
    const body = generateResultSchema.parse(await json(res));
    expect(body).toMatchObject({ userId: 'alice', text: 'echo one two three', finishReason: 'stop', personalization: { mode: 'injected', adapterVersion: 3 } });
    expect(gen.calls[0].req).toEqual({
      userId: 'alice',
      prompt: 'one two three',
      maxTokens: 128,
      temperature: 0,
      topP: 1,
      stop: [],
      stream: false,
      mode: 'auto',
      logprobs: false,
    });
    expect(gen.calls[0].signal).toBeInstanceOf(AbortSignal);
  });

  it('accepts every documented field', async () => {
    await setup();
    const req = {
      userId: 'alice',
      messages: [{ role: 'system', content: 'be brief' }, { role: 'user', content: 'a b c d e' }],
      maxTokens: 3,
      temperature: 0.7,
      topP: 0.9,
      topK: 40,
      minP: 0.1,
      repetitionPenalty: 1.1,
      stop: '\n',
      stopTokenIds: [3],
      includeStopStrInOutput: true,
      responseFormat: { type: 'json_object' },
      seed: 42,
      mode: 'vanilla',
      logprobs: true,
      topLogprobs: 5,
    };
    const body = await json(await h.req('POST', '/v1/generate', req));
    expect(body).toMatchObject({ text: 'echo a b', finishReason: 'length', personalization: { mode: 'vanilla', adapterVersion: null } });
    expect(gen.calls[0].req).toEqual({ ...req, stop: ['\n'], stream: false });
    // allowedTokenIds (with no guide).
    await h.req('POST', '/v1/generate', { userId: 'alice', prompt: 'x', allowedTokenIds: [4, 5], badWords: ['no', 'never'], truncatePromptTokens: 64 });
    expect(gen.calls.at(-1)!.req).toMatchObject({ allowedTokenIds: [4, 5], badWords: ['no', 'never'], truncatePromptTokens: 64 });
    // A prompt of token ids (POST /tokenize's) goes to the engine as it is.
    await h.req('POST', '/v1/generate', { userId: 'alice', prompt: [1, 104, 105], maxTokens: 2 });
    expect(gen.calls.at(-1)!.req.prompt).toEqual([1, 104, 105]);
  });

  it('rejects invalid requests with 422 naming the path', async () => {
    await setup();
    const base = { userId: 'alice', prompt: 'x' };
    const cases: Array<[Record<string, unknown>, string]> = [
      [{ userId: 'alice' }, 'messages'],
      [{ ...base, messages: [{ role: 'user', content: 'x' }] }, 'messages'],
      [{ ...base, maxTokens: 0 }, 'maxTokens'],
      [{ ...base, maxTokens: 2049 }, 'maxTokens'],
      [{ ...base, maxTokens: 1.5 }, 'maxTokens'],
      [{ ...base, temperature: -0.1 }, 'temperature'],
      [{ ...base, temperature: 5.1 }, 'temperature'],
      [{ ...base, topP: 0 }, 'topP'],
      [{ ...base, topP: 1.01 }, 'topP'],
      [{ ...base, topK: -1 }, 'topK'],
      [{ ...base, minP: 1.01 }, 'minP'],
      [{ ...base, minP: -0.5 }, 'minP'],
      [{ ...base, allowedTokenIds: [] }, 'allowedTokenIds'],
      [{ ...base, allowedTokenIds: [1], guidedChoice: ['a'] }, 'allowedTokenIds'],
      [{ ...base, badWords: ['a'], guidedRegex: 'a+' }, 'badWords'],
      [{ ...base, badWords: ['\t'] }, 'badWords.0'],
      [{ ...base, truncatePromptTokens: 0 }, 'truncatePromptTokens'],
      [{ ...base, repetitionPenalty: 0 }, 'repetitionPenalty'],
      [{ ...base, frequencyPenalty: 2.1 }, 'frequencyPenalty'],
      [{ ...base, maxTokens: 4, minTokens: 5 }, 'minTokens'],
      [{ ...base, minTokens: -1 }, 'minTokens'],
      [{ ...base, ignoreEos: 1 }, 'ignoreEos'],
      [{ ...base, presencePenalty: -3 }, 'presencePenalty'],
      [{ ...base, logitBias: { x: 1 } }, 'logitBias.x'],
      [{ ...base, logitBias: { '7': -101 } }, 'logitBias.7'],
      [{ ...base, logitBias: { '7': 'ban' } }, 'logitBias.7'],
      [{ ...base, logitBias: [1] }, 'logitBias'],
      [{ ...base, stop: ['a', 'b', 'c', 'd', 'e'] }, 'stop'],
      [{ ...base, stop: '' }, 'stop'],
      [{ ...base, stopTokenIds: [-1] }, 'stopTokenIds.0'],
      [{ ...base, responseFormat: { type: 'json_schema' } }, 'responseFormat.jsonSchema'],
      [{ ...base, responseFormat: { type: 'json_schema', jsonSchema: { name: 'x', schema: [] } } }, 'responseFormat.jsonSchema.schema'],
      [{ ...base, responseFormat: { type: 'xml' } }, 'responseFormat.type'],
      [{ ...base, guidedChoice: ['a'], responseFormat: { type: 'json_schema', jsonSchema: { name: 'x', schema: {} } } }, 'guidedChoice'],
      [{ ...base, guidedChoice: ['a'], guidedRegex: 'a+' }, 'guidedRegex'],
      [{ ...base, guidedRegex: 'a'.repeat(4097) }, 'guidedRegex'],
      [{ ...base, guidedRegex: 'a+', guidedGrammar: 'root ::= "a"' }, 'guidedGrammar'],
      [{ ...base, guidedGrammar: '' }, 'guidedGrammar'],
      [{ ...base, guidedGrammar: 'x'.repeat(65_537) }, 'guidedGrammar'],
      [{ ...base, guidedChoice: [] }, 'guidedChoice'],
      [{ ...base, continueFinalMessage: true }, 'continueFinalMessage'],
      [{ userId: 'alice', messages: [{ role: 'user', content: 'x' }], continueFinalMessage: true }, 'continueFinalMessage'],
      [{ ...base, guidedChoice: ['a'], responseFormat: { type: 'json_object' } }, 'guidedChoice'],
      [{ ...base, stopTokenIds: Array.from({ length: 65 }, (_, i) => i) }, 'stopTokenIds'],
      [{ ...base, seed: 1e300 }, 'seed'],
      [{ ...base, stream: 'yes' }, 'stream'],
      [{ ...base, mode: 'magic' }, 'mode'],
      [{ ...base, logprobs: 'yes' }, 'logprobs'],
      [{ ...base, logprobs: true, topLogprobs: 21 }, 'topLogprobs'],
      [{ ...base, logprobs: true, topLogprobs: 1.5 }, 'topLogprobs'],
      [{ ...base, topLogprobs: 2 }, 'topLogprobs'],
      [{ ...base, prompt: '' }, 'prompt'],
      [{ ...base, prompt: [] }, 'prompt'],
      [{ ...base, prompt: [1, -2] }, 'prompt.1'],
      [{ ...base, prompt: [1, 'a'] }, 'prompt'],
      [{ ...base, prompt: [[1]] }, 'prompt'],
      [{ ...base, userId: '../x' }, 'userId'],
      [{ ...base, messages: undefined, prompt: undefined, extra: 1 }, ''],
      [{ userId: 'alice', messages: [{ role: 'tool', content: 'x' }] }, 'messages.0.role'],
      [{ userId: 'alice', messages: [] }, 'messages'],
    ];
    for (const [body, path] of cases) {
      const err = await expectError(await h.req('POST', '/v1/generate', body), 422, 'validation_failed');
      expect(err.details.issues.map((i: { path: string }) => i.path), JSON.stringify(body)).toContain(path);
    }
    expect(gen.calls).toHaveLength(0);
  });

  it('404s unknown users before calling the engine', async () => {
    await setup();
    await expectError(await h.req('POST', '/v1/generate', { userId: 'bob', prompt: 'x' }), 404, 'user_not_found');
    expect(gen.calls).toHaveLength(0);
  });

  it('maps engine errors: queue_full -> 429 with Retry-After, prompt_too_long -> 422, others -> 500', async () => {
    await setup();
    gen.failWith = new ServiceError('queue_full', 'generation queue is full', { retryAfterS: 2 });
    const res = await h.req('POST', '/v1/generate', { userId: 'alice', prompt: 'x' });
    expect(res.headers.get('retry-after')).toBe('2');
    await expectError(res, 429, 'queue_full');
    gen.failWith = new ServiceError('prompt_too_long', 'prompt is 5000 tokens, context is 1024', { details: { tokens: 5000, limit: 1024 } });
    const err = await expectError(await h.req('POST', '/v1/generate', { userId: 'alice', prompt: 'x' }), 422, 'prompt_too_long');
    expect(err.details).toEqual({ tokens: 5000, limit: 1024 });
    gen.failWith = new TypeError('boom');
    await expectError(await h.req('POST', '/v1/generate', { userId: 'alice', prompt: 'x' }), 500, 'internal');
  });

  it('aborts the engine signal when the client goes away', async () => {
    await setup();
    const ac = new AbortController();
    const res = await h.app.request(
      new Request('http://localhost/v1/generate', { method: 'POST', body: JSON.stringify({ userId: 'alice', prompt: 'x' }), signal: ac.signal }),
    );
    expect(res.status).toBe(200);
    const signal = gen.calls[0].signal;
    expect(signal.aborted).toBe(false);
    ac.abort();
    expect(signal.aborted).toBe(true);
  });
});

describe('POST /v1/generate (stream)', () => {
  it('streams token events then one done event', async () => {
    await setup();
    const res = await h.req('POST', '/v1/generate', { userId: 'alice', prompt: 'hello there', stream: true });
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toMatch(/^text\/event-stream/);
    expect(res.headers.get('x-request-id')).toBeTruthy();
    const events = parseSse(await res.text());
    expect(events.map((e) => e.event)).toEqual(['token', 'token', 'token', 'done']);
    const text = events.filter((e) => e.event === 'token').map((e) => generateTokenEventSchema.parse(JSON.parse(e.data)).text).join('');
    const done = generateDoneEventSchema.parse(JSON.parse(events[3].data));
    expect(text).toBe('echo hello there');
    expect(done.result.text).toBe(text);
    expect(gen.calls[0].req.stream).toBe(true);
    expect(gen.returned).toBe(1);
  });

  it('with logprobs, each token event carries its token\'s log-probabilities and the done event all of them', async () => {
    await setup();
    const res = await h.req('POST', '/v1/generate', { userId: 'alice', prompt: 'hello there', stream: true, logprobs: true, topLogprobs: 2 });
    const events = parseSse(await res.text());
    const tokens = events.filter((e) => e.event === 'token').map((e) => generateTokenEventSchema.parse(JSON.parse(e.data)));
    expect(tokens.map((t) => t.logprobs?.map((lp) => [lp.token, lp.logprob, lp.top.length]))).toEqual([[['echo', -0.1, 2]], [[' hello', -0.2, 2]], [[' there', -0.3, 2]]]);
    const done = generateDoneEventSchema.parse(JSON.parse(events[events.length - 1].data));
    expect(done.result.logprobs).toEqual(tokens.flatMap((t) => t.logprobs));
    expect(gen.calls[0].req).toMatchObject({ logprobs: true, topLogprobs: 2 });
    // Without logprobs the events stay as they were: text only.
    const plain = parseSse(await (await h.req('POST', '/v1/generate', { userId: 'alice', prompt: 'hello there', stream: true })).text());
    expect(plain.filter((e) => e.event === 'token').map((e) => Object.keys(JSON.parse(e.data)))).toEqual([['text'], ['text'], ['text']]);
  });

  it('returnTokenIds: the result has the prompt\'s ids and the reply\'s; each token event its token, the first the prompt\'s too', async () => {
    await setup();
    // The fake's prompt is ids 101-107; word i is token 500 + i.
    const plain = generateResultSchema.parse(await json(await h.req('POST', '/v1/generate', { userId: 'alice', prompt: 'hello there', returnTokenIds: true })));
    expect([plain.promptTokenIds, plain.tokenIds]).toEqual([[101, 102, 103, 104, 105, 106, 107], [500, 501, 502]]);
    expect(gen.calls[0].req.returnTokenIds).toBe(true);
    const events = parseSse(await (await h.req('POST', '/v1/generate', { userId: 'alice', prompt: 'hello there', stream: true, returnTokenIds: true })).text());
    const tokens = events.filter((e) => e.event === 'token').map((e) => generateTokenEventSchema.parse(JSON.parse(e.data)));
    expect(tokens.map((t) => [t.tokenIds, t.promptTokenIds])).toEqual([[[500], [101, 102, 103, 104, 105, 106, 107]], [[501], undefined], [[502], undefined]]);
    const none = generateResultSchema.parse(await json(await h.req('POST', '/v1/generate', { userId: 'alice', prompt: 'hello there' })));
    expect([none.tokenIds, none.promptTokenIds]).toEqual([undefined, undefined]);
  });

  it('turns errors before the first event into HTTP errors', async () => {
    await setup();
    gen.failWith = new ServiceError('queue_full', 'full');
    await expectError(await h.req('POST', '/v1/generate', { userId: 'alice', prompt: 'x', stream: true }), 429, 'queue_full');
  });

  it('ends with an error event when generation fails midway', async () => {
    await setup();
    gen.failMidway = new Error('decoder crashed at /secret');
    const res = await h.req('POST', '/v1/generate', { userId: 'alice', prompt: 'a b c', stream: true });
    expect(res.status).toBe(200);
    const events = parseSse(await res.text());
    expect(events.map((e) => e.event)).toEqual(['token', 'error']);
    expect(JSON.parse(events[1].data)).toEqual({ error: { code: 'internal', message: 'internal server error', details: null } });
    expect(h.logger.lines.some((l) => l.level === 'error' && String(l.fields.err).includes('decoder crashed'))).toBe(true);
  });

  it('stops and releases the engine stream when the client disconnects', async () => {
    await setup();
    gen.hangAfterFirst = true;
    const ac = new AbortController();
    const res = await h.app.request(
      new Request('http://localhost/v1/generate', {
        method: 'POST',
        body: JSON.stringify({ userId: 'alice', prompt: 'a b c', stream: true }),
        signal: ac.signal,
      }),
    );
    const reader = res.body!.getReader();
    const first = new TextDecoder().decode((await reader.read()).value);
    expect(first).toContain('event: token');
    ac.abort();
    await reader.cancel();
    await until(() => gen.returned === 1);
    expect(gen.calls[0].signal.aborted).toBe(true);
    expect(gen.returned).toBe(1);
  });
});
