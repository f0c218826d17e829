/**
 * Whole decoder stacks built from graph ops pass the gradient check: a 2-layer GPT-2-style stack and
 * a 2-layer Llama-style stack (RMSNorm, rotary, SwiGLU), float64, with LoRA tensors on their
 * feed-forward maps, symbolic batch and sequence fed at two sizes, cross-entropy with ignored labels.
 */
import { describe, it } from 'vitest';
import { Graph, type Value } from '../../src/graph/ir.js';
import * as ops from '../../src/graph/ops.js';
import type { HostTensor } from '../../src/graph/types.js';
import { Rng } from '../../src/util/rng.js';
import { type FeedSet, expectGradcheck, int64s, normal, randomInts } from './gradcheck.js';

const F = 'float64';
const CFG = { vocab: 11, d: 8, heads: 2, ffn: 12, maxT: 8, rank: 2, layers: 2 };
const rng = new Rng(4242);

interface Stack {
  loss: Value;
  lora: Value[];
  named: Record<string, Value>;
  shapes: Record<string, number[]>;
}

function weights(g: Graph) {
  const named: Record<string, Value> = {};
  const shapes: Record<string, number[]> = {};
  const lora: Value[] = [];
  const w = (name: string, shape: number[], isLora = false): Value => {
    const v = g.input(name, F, shape);
    named[name] = v;
    shapes[name] = shape;
    if (isLora) lora.push(v);
    return v;
  };
  /** x W (+ b) + (x A) B: a linear map with one LoRA module. */
  const linear = (x: Value, name: string, i: number, o: number, opts: { bias?: boolean; lora?: boolean } = {}): Value => {
    let y = ops.matmul(x, w(`${name}.weight`, [i, o]));
    if (opts.bias) y = ops.add(y, w(`${name}.bias`, [o]));
    if (opts.lora) y = ops.add(y, ops.matmul(ops.matmul(x, w(`${name}.lora_A`, [i, CFG.rank], true)), w(`${name}.lora_B`, [CFG.rank, o], true)));
    return y;
  };
  return { w, linear, named, shapes, lora };
}

function causalMask(g: Graph, tLen: Value): Value {
  const t = CFG.maxT;
  const table = g.constant(
    Array.from({ length: t * t }, (_, i) => (i % t > Math.floor(i / t) ? -1e9 : 0)),
    F,
    [t, t],
  );
  const zero = g.constant([0], 'int64', [1]);
  return ops.sliceDynamic(ops.sliceDynamic(table, 0, zero, tLen, 'T'), 1, zero, tLen, 'T');
}

function attention(q: Value, k: Value, v: Value, mask: Value): Value {
  const hd = CFG.d / CFG.heads;
  const s = ops.add(ops.mul(ops.matmul(q, ops.transposeLast2(k)), 1 / Math.sqrt(hd)), mask);
  const y = ops.matmul(ops.softmax(s), v);
  return ops.reshape(ops.transpose(y, [0, 2, 1, 3]), ['B', 'T', CFG.d]);
}

const heads = (v: Value): Value => ops.transpose(ops.reshape(v, ['B', 'T', CFG.heads, CFG.d / CFG.heads]), [0, 2, 1, 3]);

function lossHead(g: Graph, h: Value, head: Value, labels: Value): Value {
  const logits = ops.matmul(ops.reshape(h, [-1, CFG.d]), head);
  return ops.crossEntropy(logits, ops.reshape(labels, [-1])).loss;
}

function gpt2(g: Graph): Stack {
  const { d, ffn } = CFG;
  const W = weights(g);
  const ids = g.input('ids', 'int64', ['B', 'T']);
  const labels = g.input('labels', 'int64', ['B', 'T']);
  const tLen = ops.slice(ops.shapeOf(ids), { axes: [0], starts: [1], ends: [2] });
  const wte = W.w('wte', [CFG.vocab, d]);
  const zero = g.constant([0], 'int64', [1]);
  let x = ops.add(ops.gather(wte, ids), ops.sliceDynamic(W.w('wpe', [CFG.maxT, d]), 0, zero, tLen, 'T'));
  const mask = causalMask(g, tLen);
  for (let l = 0; l < CFG.layers; l++) {
    const p = `h.${l}`;
    const ln1 = ops.layerNorm(x, W.w(`${p}.ln_1.weight`, [d]), W.w(`${p}.ln_1.bias`, [d]));
    const [q, k, v] = ops.split(W.linear(ln1, `${p}.attn.c_attn`, d, 3 * d, { bias: true }), [d, d, d], -1).map(heads);
    x = ops.add(x, W.linear(attention(q, k, v, mask), `${p}.attn.c_proj`, d, d, { bias: true }));
    const ln2 = ops.layerNorm(x, W.w(`${p}.ln_2.weight`, [d]), W.w(`${p}.ln_2.bias`, [d]));
    const fc = W.linear(ln2, `${p}.mlp.c_fc`, d, ffn, { bias: true, lora: true });
    x = ops.add(x, W.linear(ops.geluTanh(fc), `${p}.mlp.c_proj`, ffn, d, { bias: true, lora: true }));
  }
  const hf = ops.layerNorm(x, W.w('ln_f.weight', [d]), W.w('ln_f.bias', [d]));
  return { loss: lossHead(g, hf, ops.transposeLast2(wte), labels), lora: W.lora, named: W.named, shapes: W.shapes };
}

/** Rotary embedding, rotate_half layout, positions 0..T-1 read from cos/sin tables. */
function rotary(g: Graph, x: Value, tLen: Value): Value {
  const hd = CFG.d / CFG.heads;
  const cos = new Float64Array(CFG.maxT * hd);
  const sin = new Float64Array(CFG.maxT * hd);
  for (let t = 0; t < CFG.maxT; t++) {
    for (let i = 0; i < hd; i++) {
      const theta = t / 10000 ** ((2 * (i % (hd / 2))) / hd);
      cos[t * hd + i] = Math.cos(theta);
      sin[t * hd + i] = Math.sin(theta);
    }
  }
  const zero = g.constant([0], 'int64', [1]);
  const c = ops.sliceDynamic(g.initializer(undefined, F, [CFG.maxT, hd], cos), 0, zero, tLen, 'T');
  const s = ops.sliceDynamic(g.initializer(undefined, F, [CFG.maxT, hd], sin), 0, zero, tLen, 'T');
  const x1 = ops.slice(x, { axes: [-1], starts: [0], ends: [hd / 2] });
  const x2 = ops.slice(x, { axes: [-1], starts: [hd / 2], ends: [hd] });
  return ops.add(ops.mul(x, c), ops.mul(ops.concat([ops.neg(x2), x1], -1), s));
}

function llama(g: Graph): Stack {
  const { d, ffn } = CFG;
  const W = weights(g);
  const ids = g.input('ids', 'int64', ['B', 'T']);
  const labels = g.input('labels', 'int64', ['B', 'T']);
  const tLen = ops.slice(ops.shapeOf(ids), { axes: [0], starts: [1], ends: [2] });
  let x = ops.gather(W.w('embed_tokens', [CFG.vocab, d]), ids);
  const mask = causalMask(g, tLen);
  for (let l = 0; l < CFG.layers; l++) {
    const p = `layers.${l}`;
    const h = ops.rmsNorm(x, W.w(`${p}.input_layernorm.weight`, [d]), 1e-6);
    const q = rotary(g, heads(W.linear(h, `${p}.self_attn.q_proj`, d, d)), tLen);
    const k = rotary(g, heads(W.linear(h, `${p}.self_attn.k_proj`, d, d)), tLen);
    const v = heads(W.linear(h, `${p}.self_attn.v_proj`, d, d));
    x = ops.add(x, W.linear(attention(q, k, v, mask), `${p}.self_attn.o_proj`, d, d));
    const h2 = ops.rmsNorm(x, W.w(`${p}.post_attention_layernorm.weight`, [d]), 1e-6);
    const gate = ops.silu(W.linear(h2, `${p}.mlp.gate_proj`, d, ffn, { lora: true }));
    const up = W.linear(h2, `${p}.mlp.up_proj`, d, ffn, { lora: true });
    x = ops.add(x, W.linear(ops.mul(gate, up), `${p}.mlp.down_proj`, ffn, d, { lora: true }));
  }
  const hf = ops.rmsNorm(x, W.w('norm.weight', [d]), 1e-6);
  return { loss: lossHead(g, hf, W.w('lm_head.weight', [d, CFG.vocab]), labels), lora: W.lora, named: W.named, shapes: W.shapes };
}

/** Random weights (LoRA B non-zero, so A's gradient is not trivially zero) and token batches of two sizes. */
function feedSets(build: (g: Graph) => Stack): FeedSet[] {
  const probe = build(new Graph('probe'));
  const base: FeedSet = {};
  for (const [name, shape] of Object.entries(probe.shapes)) {
    const isNorm = /norm|ln_/.test(name) && name.endsWith('weight');
    const t = normal(rng, shape, F, isNorm ? 0.1 : 0.5);
    if (isNorm) (t.data as Float64Array).forEach((v, i, a) => (a[i] = 1 + v));
    base[name] = t;
  }
  return [
    [2, 3],
    [1, 5],
  ].map(([b, t]) => {
    const labels = randomInts(rng, [b, t], 0, CFG.vocab);
    (labels.data as BigInt64Array)[1] = -100n; // one ignored position
    return { ...base, ids: randomInts(rng, [b, t], 0, CFG.vocab), labels } as Record<string, HostTensor>;
  });
}

describe('decoder stacks pass the gradient check', () => {
  it('2-layer GPT-2-style stack: gradients w.r.t. the LoRA tensors on c_fc and c_proj', async () => {
    await expectGradcheck({
      build: (g) => {
        const s = gpt2(g);
        return { out: s.loss, params: s.lora };
      },
      feeds: feedSets(gpt2),
      maxCoords: 6,
      directions: 1,
    });
  });

  it('2-layer GPT-2-style stack: gradients w.r.t. base weights (tied embedding used twice, positions, norms, attention)', async () => {
    const names = ['wte', 'wpe', 'h.0.ln_1.weight', 'h.0.attn.c_attn.weight', 'h.1.attn.c_proj.bias', 'ln_f.bias'];
    await expectGradcheck({
      build: (g) => {
        const s = gpt2(g);
        return { out: s.loss, params: names.map((n) => s.named[n]) };
      },
      feeds: feedSets(gpt2),
      maxCoords: 6,
      directions: 1,
    });
  });

  it('2-layer Llama-style stack: gradients w.r.t. the LoRA tensors on gate, up and down projections', async () => {
    await expectGradcheck({
      build: (g) => {
        const s = llama(g);
        return { out: s.loss, params: s.lora };
      },
      feeds: feedSets(llama),
      maxCoords: 6,
      directions: 1,
    });
  });
});
