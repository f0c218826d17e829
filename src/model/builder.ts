/**
 * One entry point for every model graph: `buildGraph(cfg, spec)` and the session key that caches it.
 *
 * Inputs of every kind: `input_ids` int64 [B, T], `positions` int64 [B, T] (each token's position,
 * so left- and right-padded rows batch together), `attn_bias` float32 [B, 1, T, K] (additive:
 * 0 = may attend, large negative = masked; K = T, or Past+1 in decode), the base weights by their HF
 * names, `rope.cos`/`rope.sin` [maxPositions, Dh/2] (Llama), and the LoRA inputs of the spec.
 *
 * - train:   + `labels` int64 [B, T] (the token expected after each position; -100 = ignored)
 *            -> `loss` (scalar mean cross-entropy over labelled positions)
 * - prefill: + `last_index` int64 [B] (flat index b*T + t of the position whose logits each row wants)
 *            -> `logits` [B, V], `present_k.{l}`/`present_v.{l}` [B, Hkv, T, Dh]
 *               (+ `logits_all` [B, T, V] with allLogits); without allLogits the last block computes
 *               its attention output and feed-forward maps at the last_index positions only (Ctx.trimsBlock)
 * - decode:  T = 1; + `past_k.{l}`/`past_v.{l}` [B, Hkv, Past, Dh]; attn_bias [B, 1, 1, Past+1]
 *            (the cache's slots, then the new token) -> `logits` [B, V], `present_k.{l}`/`present_v.{l}`
 *            [B, Hkv, 1, Dh] (the new token's key/value; the caller appends them to its cache).
 * - extend:  a prompt's new tokens after a cached prefix (prefix caching): the inputs of prefill and the
 *            past of decode, attn_bias [B, 1, T, Past+T] (each row's cached slots, then its new tokens
 *            causally) -> `logits` [B, V] at last_index, `present_k.{l}`/`present_v.{l}` [B, Hkv, T, Dh]
 *            (the new tokens' keys/values); the last block is trimmed as in prefill.
 */
import { Graph, type Value } from '../graph/ir.js';
import * as ops from '../graph/ops.js';
import { addDims } from '../graph/shape.js';
import { type ModelConfig, configFingerprint } from './config.js';
import { gpt2Block, gpt2Embed, gpt2Final } from './gpt2.js';
import { Ctx, DIM, type GraphSpec, type LoraSpec, linearOutIn, picksLast, readsPast, ropeInputs, type WeightSource } from './layers.js';
import { llamaBlock, llamaEmbed, llamaFinal } from './llama.js';
import { lmHeadName } from './weights.js';

export type { GraphKind, GraphSpec, LoraSpec } from './layers.js';
export { DIM, picksLast, readsPast, ROPE_COS, ROPE_SIN, ropeTables } from './layers.js';

export class BuilderError extends Error {
  constructor(
    readonly code: string,
    message: string,
    readonly details?: unknown,
  ) {
    super(message);
    this.name = 'BuilderError';
  }
}

/** A spec with LoRA on no layer is the plain model: one session, not one per empty layer mask. */
export function normaliseSpec(cfg: ModelConfig, spec: GraphSpec): GraphSpec {
  const lora = spec.lora;
  if (lora && lora.layers.length !== cfg.nLayers) {
    throw new BuilderError('layer_count', `LoRA layer mask has ${lora.layers.length} entries, the model has ${cfg.nLayers} layers`, {
      got: lora.layers.length,
      expected: cfg.nLayers,
    });
  }
  if (spec.allLogits && !picksLast(spec.kind)) throw new BuilderError('bad_spec', `allLogits applies to prefill and extend graphs, not ${spec.kind}`);
  const out: GraphSpec = { kind: spec.kind };
  if (lora && lora.layers.some(Boolean)) {
    out.lora = { mode: lora.mode, layers: [...lora.layers] };
    if (lora.bt) {
      if (lora.mode !== 'single') throw new BuilderError('bad_spec', `a transposed B (bt) applies to LoRA mode single, not ${lora.mode}`);
      out.lora.bt = true;
    }
  }
  if (spec.allLogits) out.allLogits = true;
  return out;
}

const maskBits = (l: LoraSpec): string => l.layers.map((b) => (b ? '1' : '0')).join('');

/** The runner cache key: the config's structure plus everything in the spec that changes the graph. */
export function sessionKey(cfg: ModelConfig, spec: GraphSpec, opts: { constWeights?: boolean } = {}): string {
  const s = normaliseSpec(cfg, spec);
  const lora = s.lora ? `${s.lora.mode}${s.lora.bt ? '+bt' : ''}:${maskBits(s.lora)}` : 'nolora';
  return `${configFingerprint(cfg)}#${s.kind}${s.allLogits ? '+all' : ''}#${lora}${opts.constWeights ? '#const' : ''}`;
}

/** Declare an output under the computed value's own name, so that ONNX needs no Identity copy. */
function output(g: Graph, name: string, v: Value): void {
  if (v.node && !g.outputs.some((o) => o.value === v)) g.rename(v, name);
  g.output(name, v);
}

/**
 * The graph of `spec`. With `constWeights`, the base weights are initializers read from it (ONNX
 * Runtime then packs each matrix for its matmul kernel once, when the session is created, instead of
 * at every call; the session holds its own copy); otherwise they are graph inputs fed at every run.
 */
export function buildGraph(cfg: ModelConfig, spec: GraphSpec, opts: { constWeights?: WeightSource } = {}): Graph {
  const s = normaliseSpec(cfg, spec);
  const g = new Graph(`${cfg.family}_${s.kind}${s.lora ? `_${s.lora.mode}${s.lora.bt ? '_bt' : ''}_${maskBits(s.lora)}` : ''}`);
  const ctx = new Ctx(g, cfg, s, opts.constWeights);
  const { nLayers, nKvHeads: hkv, headDim: dh, dModel: d, vocabSize: v } = cfg;
  const seq = ctx.seq;

  const ids = g.input('input_ids', 'int64', [DIM.batch, seq]);
  ctx.positions = g.input('positions', 'int64', [DIM.batch, seq]);
  if (readsPast(s.kind)) {
    ctx.past = [];
    for (let l = 0; l < nLayers; l++) {
      ctx.past.push({
        k: g.input(`past_k.${l}`, 'float32', [DIM.batch, hkv, DIM.past, dh]),
        v: g.input(`past_v.${l}`, 'float32', [DIM.batch, hkv, DIM.past, dh]),
      });
    }
  }
  if (picksLast(s.kind)) ctx.lastIndex = g.input('last_index', 'int64', [DIM.batch]);
  const keys = s.kind === 'decode' ? addDims(DIM.past, 1) : s.kind === 'extend' ? addDims(DIM.past, DIM.seq) : DIM.seq;
  ctx.bias = g.input('attn_bias', 'float32', [DIM.batch, 1, seq, keys]);
  if (cfg.family === 'llama') ctx.rope = ropeInputs(ctx);

  let x = cfg.family === 'gpt2' ? gpt2Embed(ctx, ids) : llamaEmbed(ctx, ids);
  for (let l = 0; l < nLayers; l++) x = cfg.family === 'gpt2' ? gpt2Block(ctx, x, l) : llamaBlock(ctx, x, l);
  x = cfg.family === 'gpt2' ? gpt2Final(ctx, x) : llamaFinal(ctx, x);
  const head = ctx.weight(lmHeadName(cfg), [v, d]);

  if (s.kind === 'train') {
    const labels = g.input('labels', 'int64', [DIM.batch, DIM.seq]);
    const logits = linearOutIn(ops.reshape(x, [-1, d]), head);
    output(g, 'loss', ops.crossEntropy(logits, ops.reshape(labels, [-1])).loss);
    return g;
  }
  if (picksLast(s.kind)) {
    // The last block already kept each row's query position only (ctx.trimsBlock), unless every position's logits are wanted.
    const rows = ctx.seq === 1 ? ops.reshape(x, [DIM.batch, d]) : ops.gather(ops.reshape(x, [-1, d]), ctx.lastIndex!, 0);
    output(g, 'logits', linearOutIn(rows, head));
    if (s.allLogits) output(g, 'logits_all', linearOutIn(x, head));
  } else {
    output(g, 'logits', linearOutIn(ops.reshape(x, [DIM.batch, d]), head));
  }
  ctx.presents.forEach((p, l) => {
    output(g, `present_k.${l}`, p.k);
    output(g, `present_v.${l}`, p.v);
  });
  return g;
}

/** The graph's base-weight inputs (the parameters of pretraining), in graph order. */
export function weightInputs(g: Graph): Value[] {
  return g.inputs.filter((i) => i.dtype === 'float32' && !/^(lora\.|pool\.|past_|attn_bias$|lora_scale$|rope\.)/.test(i.name));
}

/** The graph's single-adapter LoRA inputs (`lora.{l}.{map}.A/B`): the parameters of injection. */
export function loraInputs(g: Graph): Value[] {
  return g.inputs.filter((i) => i.name.startsWith('lora.'));
}
