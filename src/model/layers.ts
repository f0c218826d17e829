/**
 * Building blocks shared by both decoder families: the per-graph context (weights as named inputs,
 * LoRA inputs, attention inputs), linear maps with optional LoRA, rotary embedding and attention
 * over an optional KV cache.
 *
 * Conventions inside a graph: hidden states are [B, T, D]; heads are [B, H, T, Dh]; caches are
 * [B, Hkv, Past, Dh]. RoPE tables and LoRA tensors are graph inputs; base weights are graph inputs
 * too (every session reads the one copy the process holds) unless the graph is built with constant
 * weights (Ctx's `constWeights`, the serving graphs by default: model.ts ModelOptions.constWeights),
 * which ONNX Runtime packs for its matmul kernels once instead of at every call.
 */
import type { Graph, Value } from '../graph/ir.js';
import * as ops from '../graph/ops.js';
import { SLICE_END, mulDims } from '../graph/shape.js';
import type { Dim } from '../graph/types.js';
import type { ModelConfig } from './config.js';
import { mapFeatures } from './weights.js';

export type GraphKind = 'train' | 'prefill' | 'decode' | 'extend';

/** Whether graphs of this kind read a cache (`past_k.{l}`/`past_v.{l}`): decode, and extend (a prompt's new tokens after a cached prefix). */
export const readsPast = (kind: GraphKind): boolean => kind === 'decode' || kind === 'extend';
/** Whether graphs of this kind return one position's logits per row, chosen by `last_index`: prefill and extend. */
export const picksLast = (kind: GraphKind): boolean => kind === 'prefill' || kind === 'extend';

/**
 * How LoRA enters the feed-forward maps.
 * - `single`: one adapter for the whole batch: `lora.{l}.{map}.A` [R{l}, in], `lora.{l}.{map}.B`
 *   [out, R{l}] and a scalar `lora_scale`; h = W x + scale (x A^T) B^T. With `bt`, the adapter as
 *   served: `lora.{l}.{map}.Bt` [R{l}, out] (B transposed) in place of B, the same product.
 * - `pool`: a pool of adapter slots, one per row: `pool.{l}.{map}.A` [S, PR, in], `pool.{l}.{map}.B`
 *   [S, out, PR] (scale folded into B, ranks zero-padded to PR) and `slot` int64 [B].
 * - `rows`: each row's own adapter, cut per layer into rank units of width W (row-pool.ts). Per
 *   adapted layer l: `unit.{l}.{map}.A` [U{l}, W, in] (W rows of A), `unit.{l}.{map}.Bt` [U{l}, W, out]
 *   (the same rows of B^T), `rows.{l}` int64 [U{l}] (the batch row of each unit) and `sel.{l}`
 *   [B, 1, U{l}] (row b's scaling where unit u belongs to row b, else 0). The units gather their rows'
 *   activations (small), multiply by their own weights in place (no adapter is gathered per call; ORT
 *   folds the transpose of A into MatMul), and `sel` sums each row's units into its output; a row
 *   without units on a layer gets nothing there. A batch pays for its rows' own ranks on their own
 *   layers, with the same few ops however mixed the ranks are.
 * `layers[l]` says whether layer l carries LoRA.
 */
export interface LoraSpec {
  mode: 'single' | 'pool' | 'rows';
  layers: readonly boolean[];
  /** Mode `single` only: B is fed transposed, as `lora.{l}.{map}.Bt` [R{l}, out]. */
  bt?: boolean;
}

export interface GraphSpec {
  kind: GraphKind;
  lora?: LoraSpec;
  /** prefill and extend only: also output `logits_all` [B, T, V] (every new position's logits). */
  allLogits?: boolean;
}

/** The data of a base weight by name (row-major, the shape the graph declares), for baking it into a graph. */
export type WeightSource = (name: string) => Float32Array | undefined;

export const ROPE_COS = 'rope.cos';
export const ROPE_SIN = 'rope.sin';
/** Symbolic dims of graph inputs. */
export const DIM = { batch: 'B', seq: 'T', past: 'Past', slots: 'S', poolRank: 'PR', unit: 'W', rank: (l: number): string => `R${l}`, units: (l: number): string => `U${l}` } as const;

/** State of one graph under construction. */
export class Ctx {
  private readonly inputs = new Map<string, Value>();
  readonly presents: { k: Value; v: Value }[] = [];
  /** Attention bias [B, 1, Tq, K] (additive; 0 where allowed, large negative where masked). */
  bias!: Value;
  /** Position of each token, int64 [B, T]. */
  positions!: Value;
  /** Past keys/values per layer (decode and extend). */
  past: { k: Value; v: Value }[] | null = null;
  /** cos/sin per token, [B, T, 1, Dh/2] (Llama only). */
  rope: { cos: Value; sin: Value } | null = null;

  constructor(
    readonly g: Graph,
    readonly cfg: ModelConfig,
    readonly spec: GraphSpec,
    /** When given, base weights are baked into the graph as initializers instead of graph inputs. */
    private readonly constWeights?: WeightSource,
  ) {}

  /** Prefill and extend: `last_index` int64 [B], the flat index b*T + t of each row's query position. */
  lastIndex: Value | null = null;
  /** Set once the last block keeps only each row's query position (see keepQueriesOnly). */
  private queriesOnly = false;

  /** Sequence length of the states being built: 1 in decode graphs (static) and once queriesOnly is set, symbolic otherwise. */
  get seq(): Dim {
    return this.spec.kind === 'decode' || this.queriesOnly ? 1 : DIM.seq;
  }

  /**
   * Whether block l computes its attention output and feed-forward maps at each row's query position
   * only: the last block of a prefill that returns one position's logits. Its keys and values (the
   * presents) still cover every position; nothing after that block reads the other positions, so
   * their attention, output projection, feed-forward maps and LoRA terms would be work thrown away.
   */
  trimsBlock(l: number): boolean {
    return picksLast(this.spec.kind) && !this.spec.allLogits && this.lastIndex !== null && l === this.cfg.nLayers - 1;
  }

  /** Each row's query position of t [B, T, ...rest]: [B, 1, ...rest]. */
  queryRows(t: Value): Value {
    if (!this.lastIndex) throw new Error('queryRows() needs a prefill or extend graph with last_index');
    return ops.unsqueeze(ops.gather(ops.reshape(t, [-1, ...t.shape.slice(2)]), this.lastIndex, 0), [1]);
  }

  /**
   * From here on the graph computes the query positions only (seq 1): the attention bias and the
   * rotary tables are cut to those positions. Call it in a trimmed block (trimsBlock) after its keys
   * and values, with the block's residual and query inputs cut by queryRows.
   */
  keepQueriesOnly(): void {
    if (this.queriesOnly) return;
    this.bias = ops.unsqueeze(this.queryRows(ops.squeeze(this.bias, [1])), [1]); // [B, 1, 1, K]
    if (this.rope) this.rope = { cos: this.queryRows(this.rope.cos), sin: this.queryRows(this.rope.sin) };
    this.queriesOnly = true;
  }

  /** A float32 graph input, created on first use (weights, tables). */
  input(name: string, shape: Dim[]): Value {
    let v = this.inputs.get(name);
    if (!v) {
      v = this.g.input(name, 'float32', shape);
      this.inputs.set(name, v);
    }
    return v;
  }

  weight(name: string, shape: number[]): Value {
    if (!this.constWeights) return this.input(name, shape);
    let v = this.inputs.get(name);
    if (!v) {
      const data = this.constWeights(name);
      const n = shape.reduce((a, b) => a * b, 1);
      if (!data || data.length !== n) throw new Error(`weight ${name}: expected ${n} values [${shape}], got ${data?.length ?? 'none'}`);
      v = this.g.initializer(name, 'float32', shape, data);
      this.inputs.set(name, v);
    }
    return v;
  }

  private slot?: Value;
  private scale?: Value;
  private pastLen?: Value;

  /** The cache length Past as an int64 [1] tensor, computed once per graph. */
  pastLength(): Value {
    if (!this.past) throw new Error('pastLength() needs a decode or extend graph');
    this.pastLen ??= ops.slice(ops.shapeOf(this.past[0].k), { axes: [0], starts: [2], ends: [3] });
    return this.pastLen;
  }

  /** The LoRA term for map `map` of layer `l` on input x [B, T, in], or null if the layer has none. */
  loraDelta(l: number, map: string, x: Value): Value | null {
    const lora = this.spec.lora;
    if (!lora || !lora.layers[l]) return null;
    const { inFeatures: i, outFeatures: o } = mapFeatures(this.cfg, map);
    if (lora.mode === 'single') {
      const r = DIM.rank(l);
      const a = this.input(`lora.${l}.${map}.A`, [r, i]);
      const bt = lora.bt ? this.input(`lora.${l}.${map}.Bt`, [r, o]) : ops.transposeLast2(this.input(`lora.${l}.${map}.B`, [o, r]));
      this.scale ??= this.g.input('lora_scale', 'float32', []);
      // Scale the rank-R intermediate: the smallest tensor on the path.
      return ops.matmul(ops.mul(ops.matmul(x, ops.transposeLast2(a)), this.scale), bt);
    }
    if (lora.mode === 'rows') throw new Error('rows-mode LoRA is applied by loraRows(), not as a delta');
    const a = this.input(`pool.${l}.${map}.A`, [DIM.slots, DIM.poolRank, i]);
    const b = this.input(`pool.${l}.${map}.B`, [DIM.slots, o, DIM.poolRank]);
    this.slot ??= this.g.input('slot', 'int64', [DIM.batch]);
    // Gather each row's slot, then batched matmuls (Punica's SGMV in two plain steps).
    const ar = ops.gather(a, this.slot, 0); // [B, PR, in]
    const br = ops.gather(b, this.slot, 0); // [B, out, PR]
    return ops.matmul(ops.matmul(x, ops.transposeLast2(ar)), ops.transposeLast2(br));
  }
}

/** The unit rows `rows.{l}` int64 [U{l}] and selection `sel.{l}` [B, 1, U{l}] of layer l, created once per graph. */
function unitRows(ctx: Ctx, l: number): { rows: Value; sel: Value } {
  const u = DIM.units(l);
  const name = `rows.${l}`;
  return {
    rows: ctx.g.inputs.find((v) => v.name === name) ?? ctx.g.input(name, 'int64', [u]),
    sel: ctx.input(`sel.${l}`, [DIM.batch, 1, u]), // float inputs are cached by Ctx.input
  };
}

/** base + the rows' LoRA terms (mode `rows`): each unit on its row's input, summed per row by `sel`; null for other modes. */
function loraRows(ctx: Ctx, l: number, map: string, x: Value, base: Value): Value | null {
  const lora = ctx.spec.lora;
  if (!lora || lora.mode !== 'rows') return null;
  if (!lora.layers[l]) return base;
  const { inFeatures: i, outFeatures: o } = mapFeatures(ctx.cfg, map);
  const u = DIM.units(l);
  const { rows, sel } = unitRows(ctx, l);
  const a = ctx.input(`unit.${l}.${map}.A`, [u, DIM.unit, i]);
  const bt = ctx.input(`unit.${l}.${map}.Bt`, [u, DIM.unit, o]);
  // The units keep the served adapter's layout (rows of A and of B^T): ORT folds A's transpose into MatMul.
  const z = ops.matmul(ops.matmul(ops.gather(x, rows, 0), ops.transposeLast2(a)), bt); // [U, T, out]
  // Sum each row's units: sel [B, 1, U] x z [U, T*out] -> [B, 1, T*out], which in a decode step
  // (T = 1) is already the shape of base.
  const summed = ops.matmul(sel, ops.reshape(z, [u, -1]));
  return ops.add(base, ctx.seq === 1 ? summed : ops.reshape(summed, [DIM.batch, ctx.seq, o]));
}

/** x W for Conv1D weights stored [in, out] (GPT-2). */
export const linearInOut = (x: Value, w: Value, bias?: Value): Value => {
  const y = ops.matmul(x, w);
  return bias ? ops.add(y, bias) : y;
};

/** x W^T for Linear weights stored [out, in] (Llama); ORT fuses the transpose into the MatMul. */
export const linearOutIn = (x: Value, w: Value): Value => ops.matmul(x, ops.transposeLast2(w));

/** base + LoRA delta, when the map carries one. */
export function withLora(ctx: Ctx, l: number, map: string, x: Value, base: Value): Value {
  const grouped = loraRows(ctx, l, map, x, base);
  if (grouped) return grouped;
  const d = ctx.loraDelta(l, map, x);
  return d ? ops.add(base, d) : base;
}

/** [B, T, n*Dh] -> [B, T, n, Dh]. */
export function splitHeads(ctx: Ctx, x: Value, n: number): Value {
  return ops.reshape(x, [DIM.batch, ctx.seq, n, ctx.cfg.headDim]);
}

/** [B, T, n, Dh] -> [B, n, T, Dh]; a reshape when T is 1 (same memory order). */
export function headsFirst(ctx: Ctx, x: Value, n: number): Value {
  if (ctx.seq === 1) return ops.reshape(x, [DIM.batch, n, 1, ctx.cfg.headDim]);
  return ops.transpose(x, [0, 2, 1, 3]);
}

/** [B, H, T, Dh] -> [B, T, H*Dh]. */
export function mergeHeads(ctx: Ctx, x: Value): Value {
  const width = ctx.cfg.nHeads * ctx.cfg.headDim;
  if (ctx.seq === 1) return ops.reshape(x, [DIM.batch, 1, width]);
  return ops.reshape(ops.transpose(x, [0, 2, 1, 3]), [DIM.batch, DIM.seq, width]);
}

/** RoPE tables [maxPositions, Dh/2]: cos and sin of position * theta^(-2i/Dh). */
export function ropeTables(cfg: ModelConfig): { cos: Float32Array; sin: Float32Array } {
  const half = cfg.headDim / 2;
  const cos = new Float32Array(cfg.maxPositions * half);
  const sin = new Float32Array(cfg.maxPositions * half);
  for (let p = 0; p < cfg.maxPositions; p++) {
    for (let i = 0; i < half; i++) {
      const angle = p * cfg.ropeTheta ** ((-2 * i) / cfg.headDim);
      cos[p * half + i] = Math.cos(angle);
      sin[p * half + i] = Math.sin(angle);
    }
  }
  return { cos, sin };
}

/** Gather the per-token cos/sin rows once per graph, shaped to broadcast over heads. */
export function ropeInputs(ctx: Ctx): { cos: Value; sin: Value } {
  const half = ctx.cfg.headDim / 2;
  const table = (name: string): Value => ops.unsqueeze(ops.gather(ctx.input(name, [ctx.cfg.maxPositions, half]), ctx.positions, 0), [2]);
  return { cos: table(ROPE_COS), sin: table(ROPE_SIN) };
}

/** Rotary embedding of x [B, T, n, Dh] in the config's pairing style. */
export function applyRope(ctx: Ctx, x: Value): Value {
  const { cos, sin } = ctx.rope!;
  const dh = ctx.cfg.headDim;
  const half = dh / 2;
  if (ctx.cfg.ropeStyle === 'half') {
    // HF rotate_half: (x1, x2) = halves; (x1 c - x2 s, x2 c + x1 s).
    const x1 = ops.slice(x, { axes: [-1], starts: [0], ends: [half] });
    const x2 = ops.slice(x, { axes: [-1], starts: [half], ends: [dh] });
    return ops.concat([ops.sub(ops.mul(x1, cos), ops.mul(x2, sin)), ops.add(ops.mul(x2, cos), ops.mul(x1, sin))], -1);
  }
  // llama2.c: pairs (2i, 2i+1) rotate together.
  const n = x.shape[2];
  const pairs = ops.reshape(x, [DIM.batch, ctx.seq, n, half, 2]);
  const x1 = ops.slice(pairs, { axes: [-1], starts: [0], ends: [1] });
  const x2 = ops.slice(pairs, { axes: [-1], starts: [1], ends: [2] });
  const c = ops.unsqueeze(cos, [-1]);
  const s = ops.unsqueeze(sin, [-1]);
  const rot = ops.concat([ops.sub(ops.mul(x1, c), ops.mul(x2, s)), ops.add(ops.mul(x1, s), ops.mul(x2, c))], -1);
  return ops.reshape(rot, [DIM.batch, ctx.seq, n, dh]);
}

/**
 * Scaled dot-product attention of q [B, H, Tq, Dh] over keys/values given as one part (this call's
 * tokens) or two (the cache, then this call's tokens), each [B, Hkv, Tk, Dh]. Scores of the parts are concatenated (small) instead of
 * the caches (large); probabilities are split back and each part multiplies its own values. Grouped
 * query heads are folded into the row dimension, so K/V are never repeated.
 */
export function attend(ctx: Ctx, q: Value, parts: { k: Value; v: Value }[]): Value {
  const { nHeads: h, nKvHeads: hkv, headDim: dh } = ctx.cfg;
  const group = h / hkv;
  const tq = ctx.seq;
  const qs = ops.mul(q, 1 / Math.sqrt(dh));
  const qg = group > 1 ? ops.reshape(qs, [DIM.batch, hkv, -1, dh]) : qs; // [B, Hkv, g*Tq, Dh]
  const scoreParts = parts.map((p) => ops.matmul(qg, ops.transposeLast2(p.k)));
  let scores = scoreParts.length > 1 ? ops.concat(scoreParts, -1) : scoreParts[0]; // [B, Hkv, g*Tq, K]
  let probs: Value;
  if (group > 1) {
    const s5 = ops.reshape(scores, [DIM.batch, hkv, group, tq, -1]);
    const p5 = ops.softmax(ops.add(s5, ops.unsqueeze(ctx.bias, [1])), -1);
    probs = ops.reshape(p5, [DIM.batch, hkv, mulDims(group, tq), -1]);
  } else {
    scores = ops.add(scores, ctx.bias);
    probs = ops.softmax(scores, -1);
  }
  let out: Value;
  if (parts.length === 1) out = ops.matmul(probs, parts[0].v);
  else {
    // Two parts: the cache's Past slots, then this call's tokens (the split point is read once per graph).
    const [past, cur] = parts;
    const zero = ctx.g.constant([0], 'int64', [1]);
    const end = ctx.g.constant([SLICE_END], 'int64', [1]);
    const split = ctx.pastLength();
    const pPast = ops.sliceDynamic(probs, -1, zero, split, past.k.shape[2]);
    const pCur = ops.sliceDynamic(probs, -1, split, end, cur.k.shape[2]);
    out = ops.add(ops.matmul(pPast, past.v), ops.matmul(pCur, cur.v));
  }
  return group > 1 ? ops.reshape(out, [DIM.batch, h, tq, dh]) : out;
}

/** Attention over this call's keys/values, plus the cache in decode and extend graphs; records the presents. */
export function selfAttention(ctx: Ctx, l: number, q: Value, k: Value, v: Value): Value {
  ctx.presents[l] = { k, v };
  const parts = ctx.past ? [ctx.past[l], { k, v }] : [{ k, v }];
  return attend(ctx, q, parts);
}

export function activation(ctx: Ctx, x: Value): Value {
  switch (ctx.cfg.activation) {
    case 'gelu_tanh':
      return ops.geluTanh(x);
    case 'gelu':
      return ops.geluErf(x);
    case 'silu':
      return ops.silu(x);
  }
}
