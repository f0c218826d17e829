/**
 * A real pretrained checkpoint proves the Llama path end to end: llama2.c's stories260K (GQA,
 * interleaved RoPE, shared classifier) imported from its binary format must reproduce the greedy
 * output its README documents, token for token, through prefill + KV-cache decode.
 */
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { Runner } from '../../src/graph/runner.js';
import { generate, generateStream } from '../../src/model/generate.js';
import { guideVocabulary } from '../../src/model/guide.js';
import { SchemaGuide } from '../../src/model/schema-guide.js';
import { Llama2cError, loadLlama2c } from '../../src/model/llama2c.js';
import { loadLlama2cTokenizer } from '../../src/model/llama2c-tokenizer.js';
import { Model } from '../../src/model/model.js';
import { sharedDir, tempDir } from './fixtures.js';

const dir = join(sharedDir(), 'models', 'stories260K');
const runner = new Runner({ intraOpThreads: 1 });
afterAll(() => runner.close());

/** The greedy continuation quoted in the checkpoint's README (line breaks there are spaces). */
function documentedGreedy(): string {
  const m = /begins:\s*"([\s\S]*?)"\s*$/m.exec(readFileSync(join(dir, 'README.md'), 'utf8'));
  if (!m) throw new Error('README has no quoted greedy output');
  return m[1].replace(/\s*\n\s*/g, ' ');
}

describe('stories260K (llama2.c)', () => {
  it('is where the shared folder says', () => {
    expect(existsSync(join(dir, 'stories260K.bin')), `${dir}/stories260K.bin (set MEMLORA_SHARED_DIR)`).toBe(true);
  });

  const { config, weights } = loadLlama2c(join(dir, 'stories260K.bin'));
  const tok = loadLlama2cTokenizer(join(dir, 'tok512.bin'), config.vocabSize);
  const model = new Model(config, weights, { runner });

  it('reads the header into a Llama config with GQA, interleaved RoPE and a shared classifier', () => {
    expect(config).toMatchObject({ family: 'llama', dModel: 64, dFf: 172, nLayers: 5, nHeads: 8, nKvHeads: 4, headDim: 8, vocabSize: 512, maxPositions: 512 });
    expect(config).toMatchObject({ ropeStyle: 'interleaved', tieEmbeddings: true, bosId: 1, eosId: 2 });
    const params = [...weights.values()].reduce((s, t) => s + t.data.length, 0);
    expect(params).toBe(260_032); // the README's count
  });

  it('reproduces the documented greedy output from BOS', async () => {
    const expected = documentedGreedy();
    const [r] = await generate(model, [{ prompt: [config.bosId], maxTokens: 80, sampling: { temperature: 0 } }], { tokenizer: tok });
    expect(r.text.replace(/\n/g, ' ').slice(0, expected.length)).toBe(expected);
    expect(r.finishReason).toBe('length');
  });

  it('encodes the documented text to the very tokens the model generated', async () => {
    const [r] = await generate(model, [{ prompt: [config.bosId], maxTokens: 12, sampling: { temperature: 0 } }], { tokenizer: tok });
    expect(tok.encode(tok.decode([config.bosId, ...r.tokens]).replace(/^\n<s>\n/, ''), { addSpecialTokens: true })).toEqual([config.bosId, ...r.tokens]);
  });

  it('streams text that adds up to the result, and stops at a stop string (trimmed)', async () => {
    let streamed = '';
    let tokens = 0;
    for await (const e of generateStream(model, [{ prompt: [1], maxTokens: 60, sampling: { temperature: 0 }, stop: ['Lily'] }], { tokenizer: tok })) {
      if (e.type === 'token') {
        streamed += e.text;
        tokens++;
      } else {
        expect(e.result.text).toBe('Once upon a time, there was a little girl named ');
        expect(e.result.finishReason).toBe('stop');
        expect(e.result.completionTokens).toBe(tokens);
      }
    }
    expect(streamed).toBe('Once upon a time, there was a little girl named ');
  });

  it('minTokens: a stop string in the text of the first minTokens - 1 tokens does not end the reply (vLLM)', async () => {
    const [free] = await generate(model, [{ prompt: [1], maxTokens: 120, sampling: { temperature: 0 } }], { tokenizer: tok });
    const first = free.text.indexOf('Lily');
    const second = free.text.indexOf('Lily', first + 1);
    expect(first).toBeGreaterThan(0);
    expect(second).toBeGreaterThan(first);
    // The token whose text completes the first 'Lily'.
    let k = 1;
    while (!tok.decode([1, ...free.tokens.slice(0, k)]).includes('Lily')) k++;
    const run = (minTokens: number) => generate(model, [{ prompt: [1], maxTokens: 120, minTokens, sampling: { temperature: 0 }, stop: ['Lily'] }], { tokenizer: tok });
    // Held through token k, the first 'Lily' is released as text; the second ends the reply.
    const [held] = await run(k + 1);
    expect(held.text).toBe(free.text.slice(0, second));
    expect(held.finishReason).toBe('stop');
    // Armed from token k on, the first one does.
    const [armed] = await run(k);
    expect(armed.text).toBe(free.text.slice(0, first));
  });

  it('json: the reply is one JSON object (a prefix of one when cut), closed where the model closes it, beside free rows unchanged', async () => {
    const prompt = tok.encode('Once upon a time', { addSpecialTokens: true });
    const free = { prompt, maxTokens: 40, sampling: { temperature: 0 } };
    const [alone] = await generate(model, [free], { tokenizer: tok });
    const sampled = [1, 2, 3, 4].map((seed) => ({ prompt, maxTokens: 60, guide: { type: 'json_object' as const }, seed, sampling: { temperature: 0.7 } }));
    // A bias towards '}' makes the model close the object as soon as the grammar lets it.
    const close = Array.from({ length: tok.vocabSize }, (_, id) => id).find((id) => tok.tokenBytes(id)?.length === 1 && tok.tokenBytes(id)![0] === 0x7d)!;
    const closing = { prompt, maxTokens: 60, guide: { type: 'json_object' as const }, sampling: { temperature: 0, logitBias: new Map([[close, 100]]) } };
    const rs = await generate(model, [...sampled, closing, free], { tokenizer: tok });
    expect(rs.at(-1)!.text).toBe(alone.text);
    for (const r of rs.slice(0, -1)) {
      const prefix = SchemaGuide.jsonObject(guideVocabulary(tok, config.vocabSize));
      expect(prefix.accepts(new TextEncoder().encode(r.text)), r.text).toBe(true);
      expect(r.tokens).not.toContain(config.eosId); // the document, not an end token, ends it
      if (r.finishReason === 'stop') expect(JSON.parse(r.text)).toBeTypeOf('object');
      else expect(r.finishReason).toBe('length');
    }
    const closed = rs.at(-2)!;
    expect(closed.finishReason).toBe('stop');
    expect(closed.text.trim()).toBe('{}');
    // Unbiased, the model writes keys and values of its own (stories as dialogue) until maxTokens cuts it.
    expect(rs[0].text).toMatch(/^\s*\{\s*"/);
  });

  it('continues a prompt with correct spacing', async () => {
    const prompt = tok.encode('Once upon a time, there was a little girl named', { addSpecialTokens: true });
    const [r] = await generate(model, [{ prompt, maxTokens: 3, sampling: { temperature: 0 } }], { tokenizer: tok });
    expect(r.text).toBe(' Lily. She');
  });

  it('rejects a truncated file', () => {
    const buf = readFileSync(join(dir, 'stories260K.bin'));
    expect(() => loadLlama2cFromBuffer(buf.subarray(0, 5000))).toThrow(Llama2cError);
  });
});

function loadLlama2cFromBuffer(buf: Uint8Array): unknown {
  const tmp = join(tempDir('l2c'), 'model.bin');
  writeFileSync(tmp, buf);
  return loadLlama2c(tmp);
}
