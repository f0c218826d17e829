/**
 * Forms of the LoRA unit products of a decode step (issue 7's analysis): which way of computing every
 * row's own adapter costs least next to the base model. A graph shaped like a decode step of the
 * default model (8 rows; per layer the two feed-forward maps with their base weights baked in, a ReLU
 * between them), each map carrying U units of width W = 16 (default 15 units a layer, the server's
 * mean), timed per form interleaved, warm (weights in cache) and cold (the last-level cache flushed by
 * reading 32 MB before each step, as the base model's weights and the other rows' units do in the
 * server). Forms:
 *   - none: the base maps alone;
 *   - batched: the form served (layers.ts loraRows): gather each unit's row, batched matmuls with the
 *     units as the right operand (M = 1 per unit), `sel` sums each row's units;
 *   - dense-left: every row against every unit in one GEMM per side with the units as the LEFT operand
 *     (A_cat [U*W, in] x X^T, masked to each unit's own row and scaled, then H^T x Bt_cat), so no unit
 *     is packed or gathered and the per-row sum comes free;
 *   - dequant-u8: units held as uint8 (a quarter of the bytes, one scale per unit) and turned to float
 *     by DequantizeLinear before the batched matmuls;
 *   - int-u8: units as uint8 through MatMulInteger (no weight conversion at all), the activations
 *     quantized by DynamicQuantizeLinear: the byte floor of ONNX Runtime's CPU integer kernels.
 *     (Per tensor, so a row's result would depend on the batch; a served form would need a scale per
 *     row. Reported with its error against the float form.)
 *   - conv: the unit products as grouped 1x1 convolutions (group = U).
 *   - hybrid: dense-left's A side (one GEMM, A_cat unpacked; each unit's own row picked by a scaled
 *     mask and a ReduceSum), batched's B side;
 *   - left-a: batched with the A side turned round, A_u [W, in] x x_u^T [in, 1] per unit (the unit as
 *     the left operand, read as stored), batched's B side.
 *   - nbits-u8: ONNX Runtime's contrib MatMulNBits (8-bit weights, blockwise scales, float
 *     activations; its weight is one matrix, so dense-left's layout: every row against every unit,
 *     masked): a quarter of the bytes, and the same weights as the float forms (one block of 16 per
 *     unit on the B side, the unit's scale in every block of its rows on the A side). Its kernel packs
 *     a weight fed as an input at every call, which is what it measures.
 * Every form's output must agree with batched's (the uint8 forms hold exactly the float forms'
 * weights); int-u8, whose activations are quantized, reports its error instead.
 *
 *   npx tsx bench/unit-forms.ts [--units U] [--rounds N] [--threads T] [--forms f1,f2]
 *
 * --threads: ONNX Runtime intra-op threads (default: one per core); --forms: time only these forms
 * next to none and batched.
 *
 * Writes bench/results/unit-forms.json.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { repoRoot } from '../src/config.js';
import { Graph, attr } from '../src/graph/ir.js';
import type { Value } from '../src/graph/ir.js';
import * as ops from '../src/graph/ops.js';
import { Runner } from '../src/graph/runner.js';
import type { AnyTypedArray, DType } from '../src/graph/types.js';
import { readHfConfig } from '../src/model/import.js';
import { transposeInto } from '../src/util/transpose.js';
import { flag, numberArg, stringArg } from './args.js';

const cfg = readHfConfig(join(repoRoot, 'models', 'default'));
const U = numberArg('units', 15);
const ROUNDS = numberArg('rounds', 6);
const W = 16;
const B = 8;
const L = cfg.nLayers;
const D = cfg.dModel;
const F = cfg.dFf;
const MAPS: Array<[number, number]> = [
  [D, F],
  [F, D],
];
const ALL_FORMS = ['none', 'batched', 'dense-left', 'dequant-u8', 'int-u8', 'conv', 'hybrid', 'left-a', 'nbits-u8'] as const;
const formsArg = flag('forms') ? stringArg('forms', '').split(',') : null;
/** The forms timed: all, or with --forms the named ones next to none and batched (the reference). */
const FORMS = formsArg ? ALL_FORMS.filter((f) => f === 'none' || f === 'batched' || formsArg.includes(f)) : ALL_FORMS;
type Form = (typeof ALL_FORMS)[number];
const SCALE = 0.5; // the LoRA scaling of every row
const NB_BLOCK = 16; // nbits-u8's block along K: one unit's rank rows on the B side

// Deterministic data: uint8 codes q, the float units are (q - 128) * s with one scale s per unit, so the
// uint8 forms hold exactly the weights of the float forms.
const codes = (n: number, seed: number): Uint8Array => {
  const a = new Uint8Array(n);
  let x = seed >>> 0;
  for (let i = 0; i < n; i++) {
    x = (Math.imul(x, 1664525) + 1013904223) >>> 0;
    a[i] = x >>> 24;
  }
  return a;
};
const unitScale = (u: number, side: number): number => (0.002 * (1 + ((u * 7 + side) % 5))) / 4;
const dequant = (q: Uint8Array, per: number, side: number): Float32Array => Float32Array.from(q, (v, k) => (v - 128) * unitScale(Math.floor(k / per), side));
const floats = (n: number, seed: number, amp: number): Float32Array => Float32Array.from(codes(n, seed), (v) => ((v - 128) / 128) * amp);

const rowOf = (u: number): number => u % B;
/** Each unit's [W, n] block of src transposed to [n, W]. */
function unitsTransposed<T extends Float32Array | Uint8Array>(src: T, n: number): T {
  const dst = new (src.constructor as new (len: number) => T)(src.length);
  for (let u = 0; u < U; u++) transposeInto(src.subarray(u * W * n, (u + 1) * W * n) as T, W, n, dst.subarray(u * W * n, (u + 1) * W * n) as T);
  return dst;
}
const weights = new Map<string, { q: Uint8Array; f: Float32Array }>();
for (let l = 0; l < L; l++)
  for (const [i, o] of MAPS) {
    const qa = codes(U * W * i, 11 + l * 31 + i);
    const qb = codes(U * W * o, 17 + l * 37 + o);
    weights.set(`a.${l}.${i}`, { q: qa, f: dequant(qa, W * i, 0) });
    weights.set(`b.${l}.${i}`, { q: qb, f: dequant(qb, W * o, 1) });
  }

function build(form: Form): Graph {
  const g = new Graph();
  let h = g.input('x', 'float32', [B, 1, D]);
  const rows = g.input('rows', 'int64', [U]);
  const sel = g.input('sel', 'float32', [B, 1, U]);
  const mask = g.input('mask', 'float32', [U * W, B]);
  const pick = g.input('pick', 'float32', [B, 1, U]); // sel without the scaling (hybrid scales in its mask)
  const scaleA = g.input('scaleA', 'float32', [U]);
  const scaleB = g.input('scaleB', 'float32', [U]);
  const zp = g.constant([128], 'uint8', []);
  const zpU = g.constant(Array(U).fill(128), 'uint8', [U]); // per-axis zero points
  const node = (op: string, inputs: Array<Value | null>, attrs: Record<string, ReturnType<typeof attr.int>>, dtype: DType, shape: Array<number>): Value =>
    g.addNode(op, inputs, attrs, [{ dtype, shape }])[0];
  for (let l = 0; l < L; l++)
    for (const [i, o] of MAPS) {
      const base = ops.matmul(h, g.initializer(`w.${l}.${i}`, 'float32', [i, o], floats(i * o, 5 + l * 13 + i, 0.05)));
      let y = base;
      const an = `a.${l}.${i}`;
      const bn = `b.${l}.${i}`;
      const xg = (): Value => ops.gather(h, rows, 0); // [U, 1, i]
      const rowSum = (z: Value): Value => ops.add(base, ops.matmul(sel, ops.reshape(z, [U, -1])));
      if (form === 'batched' || form === 'dequant-u8') {
        const a = form === 'batched' ? g.input(an, 'float32', [U, W, i]) : node('DequantizeLinear', [g.input(an, 'uint8', [U, W, i]), scaleA, zpU], { axis: attr.int(0) }, 'float32', [U, W, i]);
        const bt = form === 'batched' ? g.input(bn, 'float32', [U, W, o]) : node('DequantizeLinear', [g.input(bn, 'uint8', [U, W, o]), scaleB, zpU], { axis: attr.int(0) }, 'float32', [U, W, o]);
        y = rowSum(ops.matmul(ops.matmul(xg(), ops.transposeLast2(a)), bt));
      } else if (form === 'dense-left') {
        const a = g.input(an, 'float32', [U * W, i]);
        const bt = g.input(bn, 'float32', [U * W, o]);
        const hm = ops.mul(ops.matmul(a, ops.transpose(ops.reshape(h, [B, i]), [1, 0])), mask); // [U*W, B]
        y = ops.add(base, ops.reshape(ops.matmul(ops.transpose(hm, [1, 0]), bt), [B, 1, o]));
      } else if (form === 'hybrid') {
        // A side dense-left (every unit against every row, one GEMM, A_cat read unpacked), each unit's own row picked
        // by the mask (scaled) and a ReduceSum; B side as batched (M = 1 per unit).
        const a = g.input(an, 'float32', [U * W, i]);
        const bt = g.input(bn, 'float32', [U, W, o]);
        const hm = ops.mul(ops.matmul(a, ops.transpose(ops.reshape(h, [B, i]), [1, 0])), mask); // [U*W, B]
        const hu = ops.reshape(ops.reduceSum(hm, [1]), [U, 1, W]);
        y = ops.add(base, ops.matmul(pick, ops.reshape(ops.matmul(hu, bt), [U, -1])));
      } else if (form === 'left-a') {
        // A side per unit with the unit as the LEFT operand: A_u [W, i] x x_u^T [i, 1] (A read unpacked), B side as batched.
        const a = g.input(an, 'float32', [U, W, i]);
        const bt = g.input(bn, 'float32', [U, W, o]);
        const hu = ops.reshape(ops.matmul(a, ops.reshape(xg(), [U, i, 1])), [U, 1, W]);
        y = rowSum(ops.matmul(hu, bt));
      } else if (form === 'int-u8') {
        // A side: x_q (per tensor) times A^T held as [U, i, W] codes; B side: h_q times Bt codes.
        const side = (x: Value, w: Value, n: number, unitScales: Value): Value => {
          const [xq, xs, xz] = g.addNode('DynamicQuantizeLinear', [x], {}, [
            { dtype: 'uint8', shape: x.shape },
            { dtype: 'float32', shape: [] },
            { dtype: 'uint8', shape: [] },
          ]);
          const acc = node('MatMulInteger', [xq, w, xz, zp], {}, 'int32', [U, 1, n]);
          return ops.mul(ops.mul(ops.cast(acc, 'float32'), xs), ops.reshape(unitScales, [U, 1, 1]));
        };
        const hA = side(xg(), g.input(an, 'uint8', [U, i, W]), W, scaleA);
        y = rowSum(side(hA, g.input(bn, 'uint8', [U, W, o]), o, scaleB));
      } else if (form === 'nbits-u8') {
        // MatMulNBits's weight is [N, K] in blocks along K: the A side's is A_cat [U*W, i] as stored, the B side's
        // Bt_cat^T [o, U*W] (a block of 16 is one unit's rank rows). Zero points default to 128, as the codes have it.
        const nbits = (x: Value, w: Value, scales: Value, k: number, n: number): Value =>
          g.addNode('MatMulNBits', [x, w, scales], { K: attr.int(k), N: attr.int(n), bits: attr.int(8), block_size: attr.int(NB_BLOCK) }, [{ dtype: 'float32', shape: [B, 1, n] }], 'com.microsoft')[0];
        const blocks = (k: number): number => Math.ceil(k / NB_BLOCK);
        const ha = nbits(h, g.input(an, 'uint8', [U * W, blocks(i), NB_BLOCK]), g.input(`${an}.s`, 'float32', [U * W * blocks(i)]), i, U * W);
        const hm = ops.mul(ha, ops.reshape(ops.transpose(mask, [1, 0]), [B, 1, U * W]));
        y = ops.add(base, nbits(hm, g.input(bn, 'uint8', [o, U, NB_BLOCK]), g.input(`${bn}.s`, 'float32', [o * U]), U * W, o));
      } else if (form === 'conv') {
        const a = g.input(an, 'float32', [U * W, i, 1]);
        const bt = g.input(bn, 'float32', [U * o, W, 1]);
        const z = node('Conv', [ops.reshape(xg(), [1, U * i, 1]), a, null], { group: attr.int(U), kernel_shape: attr.ints([1]) }, 'float32', [1, U * W, 1]);
        const zz = node('Conv', [z, bt, null], { group: attr.int(U), kernel_shape: attr.ints([1]) }, 'float32', [1, U * o, 1]);
        y = rowSum(zz);
      }
      h = i === D ? ops.relu(y) : y;
    }
  g.output('y', h);
  return g;
}

type Feed = { dtype: DType; dims: number[]; data: AnyTypedArray };
/** [B, 1, U]: `value` where unit u belongs to row b, else 0. */
const selection = (value: number): Float32Array => Float32Array.from({ length: B * U }, (_, k) => (rowOf(k % U) === Math.floor(k / U) ? value : 0));
function feedsFor(form: Form): Record<string, Feed> {
  const f: Record<string, Feed> = {
    x: { dtype: 'float32', dims: [B, 1, D], data: floats(B * D, 3, 1) },
    rows: { dtype: 'int64', dims: [U], data: BigInt64Array.from({ length: U }, (_, u) => BigInt(rowOf(u))) },
    sel: { dtype: 'float32', dims: [B, 1, U], data: selection(SCALE) },
    mask: { dtype: 'float32', dims: [U * W, B], data: Float32Array.from({ length: U * W * B }, (_, k) => (rowOf(Math.floor(k / (W * B))) === k % B ? SCALE : 0)) },
    pick: { dtype: 'float32', dims: [B, 1, U], data: selection(1) },
    scaleA: { dtype: 'float32', dims: [U], data: Float32Array.from({ length: U }, (_, u) => unitScale(u, 0)) },
    scaleB: { dtype: 'float32', dims: [U], data: Float32Array.from({ length: U }, (_, u) => unitScale(u, 1)) },
  };
  for (let l = 0; l < L; l++)
    for (const [i, o] of MAPS) {
      const a = weights.get(`a.${l}.${i}`)!;
      const b = weights.get(`b.${l}.${i}`)!;
      if (form === 'none') continue;
      if (form === 'dequant-u8') {
        f[`a.${l}.${i}`] = { dtype: 'uint8', dims: [U, W, i], data: a.q };
        f[`b.${l}.${i}`] = { dtype: 'uint8', dims: [U, W, o], data: b.q };
      } else if (form === 'int-u8') {
        f[`a.${l}.${i}`] = { dtype: 'uint8', dims: [U, i, W], data: unitsTransposed(a.q, i) }; // A^T per unit
        f[`b.${l}.${i}`] = { dtype: 'uint8', dims: [U, W, o], data: b.q };
      } else if (form === 'nbits-u8') {
        // A side: A_cat's codes as stored, in blocks of NB_BLOCK along i (i is a multiple of it); B side: Bt_cat^T.
        if (i % NB_BLOCK !== 0 || W !== NB_BLOCK) throw new Error('nbits-u8 needs in % 16 == 0 and W == 16');
        const bT = new Uint8Array(o * U * W);
        for (let r = 0; r < U * W; r++) for (let c = 0; c < o; c++) bT[c * U * W + r] = b.q[r * o + c];
        f[`a.${l}.${i}`] = { dtype: 'uint8', dims: [U * W, i / NB_BLOCK, NB_BLOCK], data: a.q };
        f[`a.${l}.${i}.s`] = { dtype: 'float32', dims: [U * W * (i / NB_BLOCK)], data: Float32Array.from({ length: U * W * (i / NB_BLOCK) }, (_, k) => unitScale(Math.floor(k / (W * (i / NB_BLOCK))), 0)) };
        f[`b.${l}.${i}`] = { dtype: 'uint8', dims: [o, U, NB_BLOCK], data: bT };
        f[`b.${l}.${i}.s`] = { dtype: 'float32', dims: [o * U], data: Float32Array.from({ length: o * U }, (_, k) => unitScale(k % U, 1)) };
      } else if (form === 'conv') {
        // Conv weights [U*out, W, 1]: per unit, output o reads the unit's W rank rows: Bt^T.
        f[`a.${l}.${i}`] = { dtype: 'float32', dims: [U * W, i, 1], data: a.f };
        f[`b.${l}.${i}`] = { dtype: 'float32', dims: [U * o, W, 1], data: unitsTransposed(b.f, o) };
      } else {
        const perUnitA = form === 'batched' || form === 'left-a';
        const perUnitB = perUnitA || form === 'hybrid';
        f[`a.${l}.${i}`] = { dtype: 'float32', dims: perUnitA ? [U, W, i] : [U * W, i], data: a.f };
        f[`b.${l}.${i}`] = { dtype: 'float32', dims: perUnitB ? [U, W, o] : [U * W, o], data: b.f };
      }
    }
  return f;
}

const THREADS = numberArg('threads', 0);
const runner = new Runner({ intraOpThreads: THREADS });
const sessions = new Map<Form, { run: (f: Record<string, Feed>) => Promise<Record<string, { data: AnyTypedArray }>> }>();
const feeds = new Map<Form, Record<string, Feed>>();
for (const form of FORMS) {
  sessions.set(form, await runner.compile(`unit-forms-${form}`, () => build(form), form === 'nbits-u8' ? { extraOpsets: [{ domain: 'com.microsoft', version: 1 }] } : {}));
  feeds.set(form, feedsFor(form));
}
const run = (form: Form): Promise<Record<string, { data: AnyTypedArray }>> => sessions.get(form)!.run(feeds.get(form)!);

// Every form against the served one, relative to the size of the LoRA contribution.
const ref = (await run('batched')).y.data as Float32Array;
const plainOut = (await run('none')).y.data as Float32Array;
let loraSize = 0;
for (let k = 0; k < ref.length; k++) loraSize = Math.max(loraSize, Math.abs(ref[k] - plainOut[k]));
const relErr: Record<string, number> = {};
for (const form of FORMS) {
  if (form === 'none') continue;
  const out = (await run(form)).y.data as Float32Array;
  let e = 0;
  for (let k = 0; k < ref.length; k++) e = Math.max(e, Math.abs(out[k] - ref[k]));
  relErr[form] = e / loraSize;
  if (form !== 'int-u8' && relErr[form] > 1e-4) throw new Error(`form ${form} disagrees with batched: ${relErr[form]}`);
}

const flush = new Float32Array(8 << 20); // 32 MB, one read per cache line
let sink = 0;
const N = 60;
const times = new Map<Form, { warm: number[]; cold: number[] }>(FORMS.map((f) => [f, { warm: [], cold: [] }]));
for (let r = 0; r < ROUNDS; r++) {
  for (const form of FORMS) {
    for (let k = 0; k < 10; k++) await run(form);
    let t = performance.now();
    for (let k = 0; k < N; k++) await run(form);
    times.get(form)!.warm.push((performance.now() - t) / N);
    let cold = 0;
    for (let k = 0; k < N; k++) {
      for (let j = 0; j < flush.length; j += 16) sink += flush[j];
      t = performance.now();
      await run(form);
      cold += performance.now() - t;
    }
    times.get(form)!.cold.push(cold / N);
  }
  console.log(`round ${r + 1}/${ROUNDS}`);
}
if (Number.isNaN(sink)) console.log(sink); // keeps the flush reads
const med = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const unitBytes = (form: Form): number => (form === 'none' ? 0 : L * U * W * (D + F) * 2 * (form.endsWith('u8') ? 1 : 4));
const none = times.get('none')!;
const results: Record<string, { warmMs: number; coldMs: number; loraWarmMs: number; loraColdMs: number; unitMB: number; relErr?: number }> = {};
for (const form of FORMS) {
  const t = times.get(form)!;
  const warm = med(t.warm);
  const cold = med(t.cold);
  results[form] = { warmMs: +warm.toFixed(3), coldMs: +cold.toFixed(3), loraWarmMs: +(warm - med(none.warm)).toFixed(3), loraColdMs: +(cold - med(none.cold)).toFixed(3), unitMB: +(unitBytes(form) / 1e6).toFixed(2), ...(form in relErr ? { relErr: Number(relErr[form].toExponential(2)) } : {}) };
  console.log(form.padEnd(11), `warm ${warm.toFixed(3)} ms`, `cold ${cold.toFixed(3)} ms`, `LoRA part warm ${results[form].loraWarmMs} cold ${results[form].loraColdMs} ms`, `units ${results[form].unitMB} MB`, form in relErr ? `error ${relErr[form].toExponential(2)} of the LoRA term` : '');
}
mkdirSync(join(repoRoot, 'bench', 'results'), { recursive: true });
writeFileSync(
  join(repoRoot, 'bench', 'results', 'unit-forms.json'),
  `${JSON.stringify({ command: `npx tsx bench/unit-forms.ts --units ${U} --rounds ${ROUNDS}${THREADS ? ` --threads ${THREADS}` : ''}${formsArg ? ` --forms ${formsArg.join(',')}` : ''}`, intraOpThreads: THREADS || 'default (one per core)', rows: B, layers: L, dModel: D, dFf: F, unitsPerLayer: U, unitWidth: W, medianOf: ROUNDS, stepsPerTiming: N, forms: results }, null, 2)}\n`,
);
await runner.close();
