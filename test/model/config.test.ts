import { describe, expect, it } from 'vitest';
import { ModelConfigError, configFingerprint, parseHfConfig, toHfConfig, validateConfig } from '../../src/model/config.js';
import { tinyGpt2, tinyLlama } from './fixtures.js';

// Field names and defaults as transformers writes them (GPT2Config / LlamaConfig.to_dict()).
const gpt2Json = {
  architectures: ['GPT2LMHeadModel'],
  model_type: 'gpt2',
  vocab_size: 50257,
  n_positions: 1024,
  n_ctx: 1024,
  n_embd: 768,
  n_layer: 12,
  n_head: 12,
  n_inner: null,
  activation_function: 'gelu_new',
  layer_norm_epsilon: 1e-5,
  bos_token_id: 50256,
  eos_token_id: 50256,
  resid_pdrop: 0.1,
};

const llamaJson = {
  architectures: ['LlamaForCausalLM'],
  model_type: 'llama',
  vocab_size: 32000,
  hidden_size: 4096,
  intermediate_size: 11008,
  num_hidden_layers: 32,
  num_attention_heads: 32,
  num_key_value_heads: 8,
  hidden_act: 'silu',
  max_position_embeddings: 4096,
  rms_norm_eps: 1e-5,
  rope_theta: 10000.0,
  rope_scaling: null,
  tie_word_embeddings: false,
  bos_token_id: 1,
  eos_token_id: 2,
  torch_dtype: 'float16',
};

describe('parseHfConfig', () => {
  it('reads a GPT2Config with its defaults (n_inner null = 4 d, tied head, gelu_new = tanh GELU)', () => {
    const c = parseHfConfig(gpt2Json);
    expect(c).toMatchObject({ family: 'gpt2', vocabSize: 50257, dModel: 768, nLayers: 12, nHeads: 12, nKvHeads: 12, headDim: 64, dFf: 3072, maxPositions: 1024 });
    expect(c).toMatchObject({ tieEmbeddings: true, activation: 'gelu_tanh', bosId: 50256, eosId: 50256, normEps: 1e-5 });
  });

  it('reads a LlamaConfig with grouped-query attention', () => {
    const c = parseHfConfig(llamaJson);
    expect(c).toMatchObject({ family: 'llama', dModel: 4096, nHeads: 32, nKvHeads: 8, headDim: 128, dFf: 11008, ropeStyle: 'half', tieEmbeddings: false });
    expect(parseHfConfig({ ...llamaJson, num_key_value_heads: undefined }).nKvHeads).toBe(32);
    expect(parseHfConfig({ ...llamaJson, eos_token_id: [2, 31999] }).eosId).toBe(2);
  });

  it('round-trips through toHfConfig for both families and both RoPE styles', () => {
    for (const cfg of [tinyGpt2, tinyLlama, { ...tinyLlama, ropeStyle: 'interleaved' as const, chatTemplate: 'plain' }]) {
      expect(parseHfConfig(JSON.parse(JSON.stringify(toHfConfig(cfg))))).toEqual(cfg);
    }
  });

  it('rejects unknown model types and unsupported options with a code', () => {
    const code = (f: () => unknown): string | undefined => {
      try {
        f();
      } catch (e) {
        return (e as ModelConfigError).code;
      }
      return undefined;
    };
    expect(code(() => parseHfConfig({ model_type: 'bert' }))).toBe('unsupported_model_type');
    expect(code(() => parseHfConfig({ ...llamaJson, rope_scaling: { type: 'linear', factor: 2 } }))).toBe('unsupported_config');
    expect(code(() => parseHfConfig({ ...gpt2Json, activation_function: 'relu' }))).toBe('unsupported_config');
    expect(code(() => parseHfConfig({ ...gpt2Json, n_embd: 'big' }))).toBe('bad_config');
    expect(code(() => parseHfConfig({ ...llamaJson, num_key_value_heads: 5 }))).toBe('bad_config');
    expect(code(() => validateConfig({ ...tinyLlama, headDim: 3 }))).toBe('bad_config');
  });

  it('fingerprints differ when the structure differs', () => {
    expect(configFingerprint(tinyGpt2)).toBe(configFingerprint({ ...tinyGpt2 }));
    expect(configFingerprint(tinyGpt2)).not.toBe(configFingerprint({ ...tinyGpt2, dFf: 32 }));
    expect(configFingerprint(tinyLlama)).not.toBe(configFingerprint({ ...tinyLlama, ropeStyle: 'interleaved' }));
  });
});
