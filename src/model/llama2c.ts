/**
 * Import of llama2.c checkpoints (Karpathy's "legacy" export: run.c's format) into our ModelConfig
 * and HF-named Weights.
 *
 * Layout: 7 int32 (dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, seq_len), then fp32
 * tensors grouped by kind across layers: token embedding [V, D], rms_att [L, D], wq [L, D, D],
 * wk [L, KV, D], wv [L, KV, D], wo [L, D, D], rms_ffn [L, D], w1 [L, F, D], w2 [L, D, F],
 * w3 [L, F, D], rms_final [D], two legacy RoPE tables (seq_len * head_size / 2 each, skipped), and
 * the classifier [V, D] only when vocab_size is negative (positive means shared with the embedding).
 * Each matrix is [out, in] like torch.nn.Linear, so they map onto HF names unchanged; only RoPE
 * differs: run.c rotates adjacent pairs (2i, 2i+1), hence ropeStyle 'interleaved'. w1/w3/w2 are
 * gate/up/down.
 */
import { readFileSync } from 'node:fs';
import type { ModelConfig } from './config.js';
import { validateConfig } from './config.js';
import { LM_HEAD, type Weights, llamaName, validateWeights } from './weights.js';

export class Llama2cError extends Error {
  constructor(
    readonly code: string,
    message: string,
    readonly details?: unknown,
  ) {
    super(message);
    this.name = 'Llama2cError';
  }
}

export interface Llama2cHeader {
  dim: number;
  hiddenDim: number;
  nLayers: number;
  nHeads: number;
  nKvHeads: number;
  vocabSize: number;
  seqLen: number;
  sharedClassifier: boolean;
}

const HEADER_BYTES = 28;

export function parseLlama2cHeader(buf: Uint8Array): Llama2cHeader {
  if (buf.byteLength < HEADER_BYTES) throw new Llama2cError('truncated', `llama2.c file of ${buf.byteLength} bytes has no header`);
  const dv = new DataView(buf.buffer, buf.byteOffset, HEADER_BYTES);
  const [dim, hiddenDim, nLayers, nHeads, nKvHeads, vocab, seqLen] = Array.from({ length: 7 }, (_, i) => dv.getInt32(i * 4, true));
  const h: Llama2cHeader = { dim, hiddenDim, nLayers, nHeads, nKvHeads, vocabSize: Math.abs(vocab), seqLen, sharedClassifier: vocab > 0 };
  for (const [k, v] of Object.entries(h)) {
    if (typeof v === 'number' && !(v > 0)) throw new Llama2cError('bad_header', `llama2.c header field ${k} is ${v}`, h);
  }
  if (dim % nHeads !== 0 || nHeads % nKvHeads !== 0) throw new Llama2cError('bad_header', `llama2.c header: dim ${dim}, ${nHeads} heads, ${nKvHeads} kv heads do not fit`, h);
  return h;
}

/** Load a llama2.c .bin checkpoint; BOS 1 and EOS 2 as in its sentencepiece tokenizer. */
export function loadLlama2c(path: string): { config: ModelConfig; weights: Weights } {
  const buf = readFileSync(path);
  const h = parseLlama2cHeader(buf);
  const headDim = h.dim / h.nHeads;
  const kvDim = h.nKvHeads * headDim;
  const config = validateConfig({
    family: 'llama',
    vocabSize: h.vocabSize,
    dModel: h.dim,
    nLayers: h.nLayers,
    nHeads: h.nHeads,
    nKvHeads: h.nKvHeads,
    headDim,
    dFf: h.hiddenDim,
    maxPositions: h.seqLen,
    normEps: 1e-5,
    ropeTheta: 10000,
    ropeStyle: 'interleaved',
    tieEmbeddings: h.sharedClassifier,
    activation: 'silu',
    bosId: 1,
    eosId: 2,
  });

  const floats = Math.floor((buf.byteLength - HEADER_BYTES) / 4);
  // Copy once into an aligned array; tensors below are views of it.
  const data = new Float32Array(floats);
  new Uint8Array(data.buffer).set(buf.subarray(HEADER_BYTES, HEADER_BYTES + floats * 4));
  let at = 0;
  const take = (n: number, what: string): Float32Array => {
    if (at + n > floats) throw new Llama2cError('truncated', `llama2.c file ends inside ${what} (needs ${n} floats at ${at}, has ${floats})`, { what });
    const v = data.subarray(at, at + n);
    at += n;
    return v;
  };
  const { dim: d, hiddenDim: f, nLayers: L, vocabSize: v } = h;
  const weights: Weights = new Map();
  const put = (name: string, dims: number[], arr: Float32Array): void => {
    weights.set(name, { dtype: 'float32', dims, data: arr });
  };
  const perLayer = (part: string, dims: number[], what: string): void => {
    const n = dims.reduce((a, b) => a * b, 1);
    const all = take(L * n, what);
    for (let l = 0; l < L; l++) put(llamaName.layer(l, part), dims, all.subarray(l * n, (l + 1) * n));
  };
  put(llamaName.embed, [v, d], take(v * d, 'token_embedding_table'));
  perLayer('input_layernorm.weight', [d], 'rms_att_weight');
  perLayer('self_attn.q_proj.weight', [d, d], 'wq');
  perLayer('self_attn.k_proj.weight', [kvDim, d], 'wk');
  perLayer('self_attn.v_proj.weight', [kvDim, d], 'wv');
  perLayer('self_attn.o_proj.weight', [d, d], 'wo');
  perLayer('post_attention_layernorm.weight', [d], 'rms_ffn_weight');
  perLayer('mlp.gate_proj.weight', [f, d], 'w1');
  perLayer('mlp.down_proj.weight', [d, f], 'w2');
  perLayer('mlp.up_proj.weight', [f, d], 'w3');
  put(llamaName.norm, [d], take(d, 'rms_final_weight'));
  take(h.seqLen * (headDim / 2) * 2, 'freq_cis tables');
  if (!h.sharedClassifier) put(LM_HEAD, [v, d], take(v * d, 'wcls'));
  if (at !== floats) throw new Llama2cError('trailing_data', `llama2.c file has ${floats - at} floats after the last tensor`, { extra: floats - at });
  validateWeights(config, weights);
  return { config, weights };
}
