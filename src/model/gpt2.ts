/**
 * GPT-2 family: learned positions, pre-LayerNorm blocks (fused LayerNormalization), fused QKV
 * projection, multi-head attention, GELU MLP; Conv1D weights [in, out] as Hugging Face stores them.
 */
import type { Value } from '../graph/ir.js';
import * as ops from '../graph/ops.js';
import { type Ctx, activation, headsFirst, linearInOut, mergeHeads, selfAttention, splitHeads, withLora } from './layers.js';
import { gpt2Name } from './weights.js';

/** Token embedding plus learned position embedding at each token's own position. */
export function gpt2Embed(ctx: Ctx, ids: Value): Value {
  const { vocabSize: v, dModel: d, maxPositions: p } = ctx.cfg;
  return ops.add(ops.gather(ctx.weight(gpt2Name.wte, [v, d]), ids, 0), ops.gather(ctx.weight(gpt2Name.wpe, [p, d]), ctx.positions, 0));
}

function layerNorm(ctx: Ctx, x: Value, prefix: string): Value {
  const d = ctx.cfg.dModel;
  return ops.layerNorm(x, ctx.weight(`${prefix}.weight`, [d]), ctx.weight(`${prefix}.bias`, [d]), ctx.cfg.normEps);
}

export function gpt2Block(ctx: Ctx, x: Value, l: number): Value {
  const { dModel: d, dFf: f, nHeads: h } = ctx.cfg;
  const n = (part: string): string => gpt2Name.layer(l, part);
  const w = (part: string, shape: number[]): Value => ctx.weight(n(part), shape);

  const h1 = layerNorm(ctx, x, n('ln_1'));
  const qkv = linearInOut(h1, w('attn.c_attn.weight', [d, 3 * d]), w('attn.c_attn.bias', [3 * d]));
  let [q, k, v] = ops.split(qkv, [d, d, d], -1);
  [k, v] = [k, v].map((t) => headsFirst(ctx, splitHeads(ctx, t, h), h));
  if (ctx.trimsBlock(l)) {
    // Keys and values at every position (the presents); the rest at each row's query position only.
    [q, x] = [ctx.queryRows(q), ctx.queryRows(x)];
    ctx.keepQueriesOnly();
  }
  const att = selfAttention(ctx, l, headsFirst(ctx, splitHeads(ctx, q, h), h), k, v);
  x = ops.add(x, linearInOut(mergeHeads(ctx, att), w('attn.c_proj.weight', [d, d]), w('attn.c_proj.bias', [d])));

  const h2 = layerNorm(ctx, x, n('ln_2'));
  // The LoRA term joins x W before the bias, so that ORT fuses the c_fc bias into the activation as
  // it does in the plain graph (one op fewer per adapted layer).
  const fc = ops.add(withLora(ctx, l, 'mlp.c_fc', h2, linearInOut(h2, w('mlp.c_fc.weight', [d, f]))), w('mlp.c_fc.bias', [f]));
  const act = activation(ctx, fc);
  const proj = ops.add(withLora(ctx, l, 'mlp.c_proj', act, linearInOut(act, w('mlp.c_proj.weight', [f, d]))), w('mlp.c_proj.bias', [d]));
  return ops.add(x, proj);
}

export function gpt2Final(ctx: Ctx, x: Value): Value {
  return layerNorm(ctx, x, gpt2Name.lnF);
}
