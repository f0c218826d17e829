/**
 * Llama family: RMSNorm, rotary position embedding (rotate_half or llama2.c's adjacent pairs),
 * grouped-query attention, SwiGLU MLP; Linear weights [out, in] as Hugging Face stores them.
 */
import type { Value } from '../graph/ir.js';
import * as ops from '../graph/ops.js';
import { type Ctx, applyRope, headsFirst, linearOutIn, mergeHeads, selfAttention, splitHeads, withLora } from './layers.js';
import { llamaName } from './weights.js';

export function llamaEmbed(ctx: Ctx, ids: Value): Value {
  return ops.gather(ctx.weight(llamaName.embed, [ctx.cfg.vocabSize, ctx.cfg.dModel]), ids, 0);
}

function rmsNorm(ctx: Ctx, x: Value, name: string): Value {
  return ops.rmsNorm(x, ctx.weight(name, [ctx.cfg.dModel]), ctx.cfg.normEps);
}

export function llamaBlock(ctx: Ctx, x: Value, l: number): Value {
  const { dModel: d, dFf: f, nHeads: h, nKvHeads: hkv, headDim: dh } = ctx.cfg;
  const n = (part: string): string => llamaName.layer(l, part);
  const w = (part: string, shape: number[]): Value => ctx.weight(n(part), shape);

  const h1 = rmsNorm(ctx, x, n('input_layernorm.weight'));
  const weight = (name: string, heads: number): Value => w(`self_attn.${name}.weight`, [heads * dh, d]);
  const proj = (hx: Value, wx: Value, heads: number): Value => splitHeads(ctx, linearOutIn(hx, wx), heads);
  const wq = weight('q_proj', h); // declared first, as the weights' order in the graph has always been q, k, v
  const k = headsFirst(ctx, applyRope(ctx, proj(h1, weight('k_proj', hkv), hkv)), hkv);
  const v = headsFirst(ctx, proj(h1, weight('v_proj', hkv), hkv), hkv);
  let hq = h1;
  if (ctx.trimsBlock(l)) {
    // Keys and values at every position (the presents); the rest at each row's query position only.
    [hq, x] = [ctx.queryRows(h1), ctx.queryRows(x)];
    ctx.keepQueriesOnly();
  }
  const q = headsFirst(ctx, applyRope(ctx, proj(hq, wq, h)), h);
  const att = selfAttention(ctx, l, q, k, v);
  x = ops.add(x, linearOutIn(mergeHeads(ctx, att), w('self_attn.o_proj.weight', [d, h * dh])));

  const h2 = rmsNorm(ctx, x, n('post_attention_layernorm.weight'));
  const gate = withLora(ctx, l, 'mlp.gate_proj', h2, linearOutIn(h2, w('mlp.gate_proj.weight', [f, d])));
  const up = withLora(ctx, l, 'mlp.up_proj', h2, linearOutIn(h2, w('mlp.up_proj.weight', [f, d])));
  const m = ops.mul(ops.silu(gate), up);
  return ops.add(x, withLora(ctx, l, 'mlp.down_proj', m, linearOutIn(m, w('mlp.down_proj.weight', [d, f]))));
}

export function llamaFinal(ctx: Ctx, x: Value): Value {
  return rmsNorm(ctx, x, llamaName.norm);
}
