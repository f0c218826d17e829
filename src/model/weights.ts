/**
 * Base weights by their Hugging Face names, and what each family expects: the names, the shapes,
 * and the feed-forward maps that carry LoRA. Canonical names carry the `transformer.` (GPT-2) or
 * `model.` (Llama) prefix that the *ForCausalLM classes save; checkpoints of the bare models omit it
 * and are renamed on import.
 *
 * Layouts are HF's: GPT-2's Conv1D weights are [in, out] (x W), Llama's Linear weights are [out, in]
 * (x W^T; ONNX Runtime fuses the transpose into the MatMul, so nothing is copied).
 */
import type { HostTensor } from '../graph/types.js';
import type { ModelConfig, ModelFamily } from './config.js';

/** HF tensor name -> float32 tensor. */
export type Weights = Map<string, HostTensor>;

export interface TensorSpec {
  name: string;
  shape: number[];
}

export class WeightsError extends Error {
  constructor(
    readonly code: string,
    message: string,
    readonly details?: unknown,
  ) {
    super(message);
    this.name = 'WeightsError';
  }
}

export const gpt2Name = {
  wte: 'transformer.wte.weight',
  wpe: 'transformer.wpe.weight',
  lnF: 'transformer.ln_f',
  layer: (l: number, part: string): string => `transformer.h.${l}.${part}`,
};

export const llamaName = {
  embed: 'model.embed_tokens.weight',
  norm: 'model.norm.weight',
  layer: (l: number, part: string): string => `model.layers.${l}.${part}`,
};

export const LM_HEAD = 'lm_head.weight';

/** The feed-forward linear maps that take LoRA, in the family's naming (lora.{l}.{map}.A/B). */
export const LORA_MAPS: Readonly<Record<ModelFamily, readonly string[]>> = {
  gpt2: ['mlp.c_fc', 'mlp.c_proj'],
  llama: ['mlp.gate_proj', 'mlp.up_proj', 'mlp.down_proj'],
};

/** One LoRA-capable map (structurally the same as src/lora's LoraTarget). */
export interface LoraTarget {
  layer: number;
  map: string;
  inFeatures: number;
  outFeatures: number;
}

export function mapFeatures(cfg: ModelConfig, map: string): { inFeatures: number; outFeatures: number } {
  const { dModel: d, dFf: f } = cfg;
  switch (map) {
    case 'mlp.c_fc':
    case 'mlp.gate_proj':
    case 'mlp.up_proj':
      return { inFeatures: d, outFeatures: f };
    case 'mlp.c_proj':
    case 'mlp.down_proj':
      return { inFeatures: f, outFeatures: d };
    default:
      throw new WeightsError('unknown_map', `no LoRA map "${map}" in ${cfg.family}`, { map });
  }
}

/** Every LoRA target of the model: each layer's feed-forward maps with their in/out widths. */
export function loraTargets(cfg: ModelConfig): LoraTarget[] {
  const out: LoraTarget[] = [];
  for (let l = 0; l < cfg.nLayers; l++) for (const map of LORA_MAPS[cfg.family]) out.push({ layer: l, map, ...mapFeatures(cfg, map) });
  return out;
}

/** Names and shapes every checkpoint of this config must hold, in a fixed order (errors name the first). */
export function expectedTensors(cfg: ModelConfig): TensorSpec[] {
  const { dModel: d, dFf: f, vocabSize: v } = cfg;
  const specs: TensorSpec[] = [];
  const t = (name: string, shape: number[]): void => {
    specs.push({ name, shape });
  };
  if (cfg.family === 'gpt2') {
    t(gpt2Name.wte, [v, d]);
    t(gpt2Name.wpe, [cfg.maxPositions, d]);
    for (let l = 0; l < cfg.nLayers; l++) {
      const n = (p: string): string => gpt2Name.layer(l, p);
      t(n('ln_1.weight'), [d]);
      t(n('ln_1.bias'), [d]);
      t(n('attn.c_attn.weight'), [d, 3 * d]);
      t(n('attn.c_attn.bias'), [3 * d]);
      t(n('attn.c_proj.weight'), [d, d]);
      t(n('attn.c_proj.bias'), [d]);
      t(n('ln_2.weight'), [d]);
      t(n('ln_2.bias'), [d]);
      t(n('mlp.c_fc.weight'), [d, f]);
      t(n('mlp.c_fc.bias'), [f]);
      t(n('mlp.c_proj.weight'), [f, d]);
      t(n('mlp.c_proj.bias'), [d]);
    }
    t(`${gpt2Name.lnF}.weight`, [d]);
    t(`${gpt2Name.lnF}.bias`, [d]);
  } else {
    const q = cfg.nHeads * cfg.headDim;
    const kv = cfg.nKvHeads * cfg.headDim;
    t(llamaName.embed, [v, d]);
    for (let l = 0; l < cfg.nLayers; l++) {
      const n = (p: string): string => llamaName.layer(l, p);
      t(n('input_layernorm.weight'), [d]);
      t(n('self_attn.q_proj.weight'), [q, d]);
      t(n('self_attn.k_proj.weight'), [kv, d]);
      t(n('self_attn.v_proj.weight'), [kv, d]);
      t(n('self_attn.o_proj.weight'), [d, q]);
      t(n('post_attention_layernorm.weight'), [d]);
      t(n('mlp.gate_proj.weight'), [f, d]);
      t(n('mlp.up_proj.weight'), [f, d]);
      t(n('mlp.down_proj.weight'), [d, f]);
    }
    t(llamaName.norm, [d]);
  }
  if (!cfg.tieEmbeddings) t(LM_HEAD, [v, d]);
  return specs;
}

/** The tensor that multiplies the final hidden state into logits ([V, D], used as h W^T). */
export function lmHeadName(cfg: ModelConfig): string {
  if (!cfg.tieEmbeddings) return LM_HEAD;
  return cfg.family === 'gpt2' ? gpt2Name.wte : llamaName.embed;
}

/**
 * A checkpoint's tensor name in canonical form, or null for tensors we deliberately drop (GPT-2's
 * stored causal-mask buffers, old Llama rotary tables, a tied lm_head).
 */
export function canonicalName(cfg: ModelConfig, name: string): string | null {
  if (name === LM_HEAD) return cfg.tieEmbeddings ? null : name;
  if (cfg.family === 'gpt2') {
    if (/(^|\.)h\.\d+\.attn\.(masked_)?bias$/.test(name)) return null;
    if (name.startsWith('transformer.')) return name;
    if (/^(wte|wpe|ln_f|h\.\d+)\./.test(name)) return `transformer.${name}`;
    return name;
  }
  if (/\.rotary_emb\.inv_freq$/.test(name)) return null;
  if (name.startsWith('model.')) return name;
  if (/^(embed_tokens|norm|layers\.\d+)\./.test(name)) return `model.${name}`;
  return name;
}

const sameShape = (a: readonly number[], b: readonly number[]): boolean => a.length === b.length && a.every((x, i) => x === b[i]);

/**
 * Check tensor shapes (by canonical name) against the config. Throws on the first missing or
 * misshaped tensor in expectedTensors() order; returns the names that the model does not use.
 */
export function checkShapes(cfg: ModelConfig, shapes: ReadonlyMap<string, readonly number[]>): { unused: string[] } {
  const expected = expectedTensors(cfg);
  for (const { name, shape } of expected) {
    const got = shapes.get(name);
    if (!got) {
      throw new WeightsError('missing_tensor', `missing tensor "${name}" (expected shape [${shape}])`, { name, expected: shape });
    }
    if (!sameShape(got, shape)) {
      throw new WeightsError('tensor_shape', `tensor "${name}" has shape [${got}], expected [${shape}]`, { name, expected: shape, got: [...got] });
    }
  }
  const known = new Set(expected.map((s) => s.name));
  return { unused: [...shapes.keys()].filter((n) => !known.has(n)).sort() };
}

/** Validate an in-memory weight set (float32 everywhere). */
export function validateWeights(cfg: ModelConfig, weights: Weights): { unused: string[] } {
  for (const [name, t] of weights) {
    if (t.dtype !== 'float32') throw new WeightsError('tensor_dtype', `tensor "${name}" is ${t.dtype}, expected float32`, { name, dtype: t.dtype });
  }
  return checkShapes(cfg, new Map([...weights].map(([n, t]) => [n, t.dims])));
}

/** Number of parameters the model uses (tied embeddings counted once). */
export function parameterCount(cfg: ModelConfig): number {
  return expectedTensors(cfg).reduce((s, t) => s + t.shape.reduce((a, b) => a * b, 1), 0);
}
