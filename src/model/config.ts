/**
 * The model configuration: one shape-and-hyperparameter record for both decoder families, read from
 * (and written back to) a Hugging Face `config.json` with GPT2Config or LlamaConfig field names.
 */
import { z } from 'zod';

export type ModelFamily = 'gpt2' | 'llama';
/** HF's rotate_half (first half pairs with second half) vs llama2.c's adjacent pairs (2i, 2i+1). */
export type RopeStyle = 'half' | 'interleaved';
export type Activation = 'gelu_tanh' | 'gelu' | 'silu';

export interface ModelConfig {
  family: ModelFamily;
  vocabSize: number;
  dModel: number;
  nLayers: number;
  nHeads: number;
  /** Key/value heads; equal to nHeads unless the model uses grouped-query attention. */
  nKvHeads: number;
  headDim: number;
  /** Inner width of the feed-forward block. */
  dFf: number;
  maxPositions: number;
  normEps: number;
  /** RoPE base (Llama only; carried for GPT-2 but unused). */
  ropeTheta: number;
  ropeStyle: RopeStyle;
  tieEmbeddings: boolean;
  activation: Activation;
  bosId: number;
  eosId: number;
  /** Name of the chat template the model was trained with (see chat-format.ts), if any. */
  chatTemplate?: string;
}

export class ModelConfigError extends Error {
  constructor(
    readonly code: string,
    message: string,
    readonly details?: unknown,
  ) {
    super(message);
    this.name = 'ModelConfigError';
  }
}

const posInt = z.number().int().positive();
const tokenId = z.union([z.number().int().nonnegative(), z.array(z.number().int().nonnegative()).min(1)]);

export const modelConfigSchema = z
  .object({
    family: z.enum(['gpt2', 'llama']),
    vocabSize: posInt,
    dModel: posInt,
    nLayers: posInt,
    nHeads: posInt,
    nKvHeads: posInt,
    headDim: posInt,
    dFf: posInt,
    maxPositions: posInt,
    normEps: z.number().positive().max(1),
    ropeTheta: z.number().positive(),
    ropeStyle: z.enum(['half', 'interleaved']),
    tieEmbeddings: z.boolean(),
    activation: z.enum(['gelu_tanh', 'gelu', 'silu']),
    bosId: z.number().int().nonnegative(),
    eosId: z.number().int().nonnegative(),
    chatTemplate: z.string().optional(),
  })
  .strict();

const gpt2Schema = z.object({
  model_type: z.literal('gpt2'),
  vocab_size: posInt,
  n_embd: posInt,
  n_layer: posInt,
  n_head: posInt,
  n_inner: posInt.nullish(),
  n_positions: posInt.optional(),
  n_ctx: posInt.optional(),
  layer_norm_epsilon: z.number().positive().default(1e-5),
  activation_function: z.string().default('gelu_new'),
  bos_token_id: tokenId.default(50256),
  eos_token_id: tokenId.default(50256),
  tie_word_embeddings: z.boolean().default(true),
  scale_attn_weights: z.boolean().default(true),
  scale_attn_by_inverse_layer_idx: z.boolean().default(false),
  memlora_chat_template: z.string().optional(),
});

const llamaSchema = z.object({
  model_type: z.literal('llama'),
  vocab_size: posInt,
  hidden_size: posInt,
  intermediate_size: posInt,
  num_hidden_layers: posInt,
  num_attention_heads: posInt,
  num_key_value_heads: posInt.nullish(),
  head_dim: posInt.nullish(),
  hidden_act: z.string().default('silu'),
  max_position_embeddings: posInt.default(2048),
  rms_norm_eps: z.number().positive().default(1e-6),
  rope_theta: z.number().positive().default(10000),
  rope_scaling: z.unknown().optional(),
  attention_bias: z.boolean().default(false),
  mlp_bias: z.boolean().default(false),
  tie_word_embeddings: z.boolean().default(false),
  bos_token_id: tokenId.nullish(),
  eos_token_id: tokenId.nullish(),
  memlora_rope_style: z.enum(['half', 'interleaved']).optional(),
  memlora_chat_template: z.string().optional(),
});

const firstId = (v: number | number[] | null | undefined, fallback: number): number =>
  v === null || v === undefined ? fallback : Array.isArray(v) ? v[0] : v;

function issues(err: z.ZodError): string {
  return err.issues.map((i) => `${i.path.join('.') || '(root)'}: ${i.message}`).join('; ');
}

function gpt2Activation(name: string): Activation {
  switch (name) {
    case 'gelu_new':
    case 'gelu_pytorch_tanh':
      return 'gelu_tanh';
    case 'gelu':
      return 'gelu';
    case 'silu':
    case 'swish':
      return 'silu';
    default:
      throw new ModelConfigError('unsupported_config', `activation_function "${name}" is not supported (gelu_new, gelu, silu)`, { activation_function: name });
  }
}

/** Parse a Hugging Face config.json object (GPT2Config or LlamaConfig). */
export function parseHfConfig(json: unknown): ModelConfig {
  const type = (json as { model_type?: unknown } | null)?.model_type;
  let cfg: ModelConfig;
  if (type === 'gpt2') {
    const r = gpt2Schema.safeParse(json);
    if (!r.success) throw new ModelConfigError('bad_config', `config.json (gpt2): ${issues(r.error)}`, r.error.issues);
    const c = r.data;
    if (c.scale_attn_by_inverse_layer_idx || !c.scale_attn_weights) {
      throw new ModelConfigError('unsupported_config', 'GPT-2 attention scaling variants (scale_attn_by_inverse_layer_idx, scale_attn_weights=false) are not supported');
    }
    const maxPositions = c.n_positions ?? c.n_ctx;
    if (maxPositions === undefined) throw new ModelConfigError('bad_config', 'config.json (gpt2): n_positions is missing');
    cfg = {
      family: 'gpt2',
      vocabSize: c.vocab_size,
      dModel: c.n_embd,
      nLayers: c.n_layer,
      nHeads: c.n_head,
      nKvHeads: c.n_head,
      headDim: c.n_embd / c.n_head,
      dFf: c.n_inner ?? 4 * c.n_embd,
      maxPositions,
      normEps: c.layer_norm_epsilon,
      ropeTheta: 10000,
      ropeStyle: 'half',
      tieEmbeddings: c.tie_word_embeddings,
      activation: gpt2Activation(c.activation_function),
      bosId: firstId(c.bos_token_id, 50256),
      eosId: firstId(c.eos_token_id, 50256),
      ...(c.memlora_chat_template !== undefined ? { chatTemplate: c.memlora_chat_template } : {}),
    };
  } else if (type === 'llama') {
    const r = llamaSchema.safeParse(json);
    if (!r.success) throw new ModelConfigError('bad_config', `config.json (llama): ${issues(r.error)}`, r.error.issues);
    const c = r.data;
    if (c.rope_scaling !== undefined && c.rope_scaling !== null) {
      throw new ModelConfigError('unsupported_config', 'rope_scaling is not supported', { rope_scaling: c.rope_scaling });
    }
    if (c.attention_bias || c.mlp_bias) throw new ModelConfigError('unsupported_config', 'attention_bias / mlp_bias are not supported');
    if (c.hidden_act !== 'silu') throw new ModelConfigError('unsupported_config', `hidden_act "${c.hidden_act}" is not supported (silu)`, { hidden_act: c.hidden_act });
    cfg = {
      family: 'llama',
      vocabSize: c.vocab_size,
      dModel: c.hidden_size,
      nLayers: c.num_hidden_layers,
      nHeads: c.num_attention_heads,
      nKvHeads: c.num_key_value_heads ?? c.num_attention_heads,
      headDim: c.head_dim ?? c.hidden_size / c.num_attention_heads,
      dFf: c.intermediate_size,
      maxPositions: c.max_position_embeddings,
      normEps: c.rms_norm_eps,
      ropeTheta: c.rope_theta,
      ropeStyle: c.memlora_rope_style ?? 'half',
      tieEmbeddings: c.tie_word_embeddings,
      activation: 'silu',
      bosId: firstId(c.bos_token_id, 1),
      eosId: firstId(c.eos_token_id, 2),
      ...(c.memlora_chat_template !== undefined ? { chatTemplate: c.memlora_chat_template } : {}),
    };
  } else {
    throw new ModelConfigError('unsupported_model_type', `config.json model_type ${JSON.stringify(type)} is not supported (gpt2, llama)`, { model_type: type });
  }
  return validateConfig(cfg);
}

/** Check a ModelConfig's internal consistency; returns it unchanged. */
export function validateConfig(cfg: ModelConfig): ModelConfig {
  const r = modelConfigSchema.safeParse(cfg);
  if (!r.success) throw new ModelConfigError('bad_config', `model config: ${issues(r.error)}`, r.error.issues);
  const fail = (msg: string): never => {
    throw new ModelConfigError('bad_config', msg, cfg);
  };
  if (cfg.nHeads % cfg.nKvHeads !== 0) fail(`nHeads ${cfg.nHeads} is not a multiple of nKvHeads ${cfg.nKvHeads}`);
  if (cfg.family === 'gpt2') {
    if (cfg.nKvHeads !== cfg.nHeads) fail('GPT-2 has no grouped-query attention (nKvHeads must equal nHeads)');
    if (cfg.headDim * cfg.nHeads !== cfg.dModel) fail(`GPT-2 needs dModel ${cfg.dModel} = nHeads ${cfg.nHeads} x headDim ${cfg.headDim}`);
  } else {
    if (cfg.headDim % 2 !== 0) fail(`RoPE needs an even headDim, got ${cfg.headDim}`);
    if (cfg.activation !== 'silu') fail(`Llama uses silu, got ${cfg.activation}`);
  }
  if (cfg.bosId >= cfg.vocabSize || cfg.eosId >= cfg.vocabSize) fail(`bosId ${cfg.bosId} / eosId ${cfg.eosId} outside vocabulary ${cfg.vocabSize}`);
  return cfg;
}

/** The Hugging Face config.json object for a ModelConfig (loads in transformers, except our extra keys). */
export function toHfConfig(cfg: ModelConfig): Record<string, unknown> {
  validateConfig(cfg);
  const extra = cfg.chatTemplate !== undefined ? { memlora_chat_template: cfg.chatTemplate } : {};
  if (cfg.family === 'gpt2') {
    return {
      architectures: ['GPT2LMHeadModel'],
      model_type: 'gpt2',
      vocab_size: cfg.vocabSize,
      n_positions: cfg.maxPositions,
      n_embd: cfg.dModel,
      n_layer: cfg.nLayers,
      n_head: cfg.nHeads,
      n_inner: cfg.dFf,
      activation_function: { gelu_tanh: 'gelu_new', gelu: 'gelu', silu: 'silu' }[cfg.activation],
      layer_norm_epsilon: cfg.normEps,
      bos_token_id: cfg.bosId,
      eos_token_id: cfg.eosId,
      tie_word_embeddings: cfg.tieEmbeddings,
      torch_dtype: 'float32',
      ...extra,
    };
  }
  return {
    architectures: ['LlamaForCausalLM'],
    model_type: 'llama',
    vocab_size: cfg.vocabSize,
    hidden_size: cfg.dModel,
    intermediate_size: cfg.dFf,
    num_hidden_layers: cfg.nLayers,
    num_attention_heads: cfg.nHeads,
    num_key_value_heads: cfg.nKvHeads,
    head_dim: cfg.headDim,
    hidden_act: 'silu',
    max_position_embeddings: cfg.maxPositions,
    rms_norm_eps: cfg.normEps,
    rope_theta: cfg.ropeTheta,
    rope_scaling: null,
    attention_bias: false,
    mlp_bias: false,
    tie_word_embeddings: cfg.tieEmbeddings,
    bos_token_id: cfg.bosId,
    eos_token_id: cfg.eosId,
    torch_dtype: 'float32',
    // transformers ignores this key and would apply rotate_half: an interleaved checkpoint is only
    // correct here (or after permuting q/k rows the way HF's llama conversion script does).
    ...(cfg.ropeStyle === 'interleaved' ? { memlora_rope_style: 'interleaved' } : {}),
    ...extra,
  };
}

/** A short stable string of everything that changes a graph's structure (session keys). */
export function configFingerprint(cfg: ModelConfig): string {
  return [
    cfg.family,
    `V${cfg.vocabSize}`,
    `D${cfg.dModel}`,
    `L${cfg.nLayers}`,
    `H${cfg.nHeads}/${cfg.nKvHeads}x${cfg.headDim}`,
    `F${cfg.dFf}`,
    `P${cfg.maxPositions}`,
    `e${cfg.normEps}`,
    `r${cfg.ropeTheta}${cfg.ropeStyle[0]}`,
    cfg.tieEmbeddings ? 'tied' : 'untied',
    cfg.activation,
  ].join('|');
}
