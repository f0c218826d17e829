/**
 * PEFT adapters as memlora adapters (lora/peft.ts): the weight change of every feed-forward map equals
 * PEFT's own, scaling * B A, computed densely from the PEFT tensors as an independent reference; and
 * what memlora cannot serve is refused with its code.
 */
import { describe, expect, it } from 'vitest';
import type { Adapter } from '../../src/lora/adapter.js';
import { encodeAdapter, decodeAdapterWeights, loraTensorName } from '../../src/lora/format.js';
import { adapterFromPeft, paddedRank } from '../../src/lora/peft.js';
import { MAX_MODULES, RANKS } from '../../src/lora/spec.js';
import type { ModelConfig } from '../../src/model/config.js';
import { decodeSafetensors, encodeSafetensors } from '../../src/model/safetensors.js';
import { loraTargets } from '../../src/model/weights.js';
import { Rng } from '../../src/util/rng.js';
import { expectFormatError } from './fixtures/format-errors.js';
import { gpt2Tiny, llamaTiny, modelOf } from './fixtures/models.js';

type Module = { layer: number; map: string };
interface PeftAdapter {
  weights: Uint8Array;
  config: Uint8Array;
  /** The tensors as written, by module key. */
  tensors: Map<string, { A: Float32Array; B: Float32Array }>;
  scaling: number;
}

const json = (v: unknown): Uint8Array => new TextEncoder().encode(JSON.stringify(v));
const key = (m: Module): string => `${m.layer}.${m.map}`;

/** A PEFT LoRA adapter of `modules` at rank r, as PEFT saves it, with random weights. */
function peftAdapter(cfg: ModelConfig, modules: Module[], r: number, opts: { alpha?: number; rslora?: boolean; seed?: number; config?: Record<string, unknown>; extra?: Record<string, Float32Array>; bf16?: boolean } = {}): PeftAdapter {
  const rng = new Rng(opts.seed ?? 3);
  const tensors = new Map<string, { A: Float32Array; B: Float32Array }>();
  const st = new Map<string, { dtype: 'float32'; dims: number[]; data: Float32Array }>();
  for (const m of modules) {
    const t = loraTargets(cfg).find((x) => x.layer === m.layer && x.map === m.map)!;
    // bf16: values bfloat16 holds exactly (each float32's low half cleared).
    const value = () => (opts.bf16 ? new Float32Array(new Uint32Array([new Uint32Array(new Float32Array([rng.normal() * 0.3]).buffer)[0] & 0xffff0000]).buffer)[0] : rng.normal() * 0.3);
    const A = Float32Array.from({ length: r * t.inFeatures }, value);
    const B = Float32Array.from({ length: t.outFeatures * r }, value);
    tensors.set(key(m), { A, B });
    st.set(loraTensorName(cfg.family, m.layer, m.map, 'A'), { dtype: 'float32', dims: [r, t.inFeatures], data: A });
    st.set(loraTensorName(cfg.family, m.layer, m.map, 'B'), { dtype: 'float32', dims: [t.outFeatures, r], data: B });
  }
  for (const [name, data] of Object.entries(opts.extra ?? {})) st.set(name, { dtype: 'float32', dims: [data.length], data });
  const alpha = opts.alpha ?? 16;
  const config = { peft_type: 'LORA', task_type: 'CAUSAL_LM', r, lora_alpha: alpha, use_rslora: opts.rslora ?? false, use_dora: false, bias: 'none', modules_to_save: null, rank_pattern: {}, alpha_pattern: {}, target_modules: ['c_fc'], ...opts.config };
  return { weights: encodeSafetensors(st, { format: 'pt' }), config: json(config), tensors, scaling: opts.rslora ? alpha / Math.sqrt(r) : alpha / r };
}

/** scaling * B [out, r] A [r, in] as a dense [out, in] matrix, in float64. */
function delta(A: Float32Array, B: Float32Array, r: number, inF: number, outF: number, scaling: number): Float64Array {
  const d = new Float64Array(outF * inF);
  for (let o = 0; o < outF; o++) for (let i = 0; i < inF; i++) {
    let s = 0;
    for (let k = 0; k < r; k++) s += B[o * r + k] * A[k * inF + i];
    d[o * inF + i] = scaling * s;
  }
  return d;
}

/** Every feed-forward map's weight change under `a` equals PEFT's (zero where PEFT adapted nothing). */
function expectSameChange(cfg: ModelConfig, a: Adapter, peft: PeftAdapter, r: number): void {
  for (const t of loraTargets(cfg)) {
    const ours = a.pairs.find((p) => p.target.layer === t.layer && p.target.map === t.map);
    const theirs = peft.tensors.get(key(t));
    const want = theirs ? delta(theirs.A, theirs.B, r, t.inFeatures, t.outFeatures, peft.scaling) : new Float64Array(t.outFeatures * t.inFeatures);
    if (!ours) {
      expect(theirs, `layer ${t.layer} ${t.map}: PEFT adapts it, memlora does not`).toBeUndefined();
      continue;
    }
    const got = delta(ours.A, ours.B, ours.rank, t.inFeatures, t.outFeatures, a.scaling);
    for (let i = 0; i < got.length; i++) expect(Math.abs(got[i] - want[i])).toBeLessThanOrEqual(1e-6 * (1 + Math.abs(want[i])));
  }
}


describe('paddedRank', () => {
  it('is the smallest n * r (r in RANKS, n <= MAX_MODULES) that holds the rank, with the fewest modules (checked against every pair)', () => {
    for (let rank = 1; rank <= MAX_MODULES * Math.max(...RANKS) + 1; rank++) {
      const all = RANKS.flatMap((r) => Array.from({ length: MAX_MODULES }, (_, i) => ({ n: i + 1, r }))).filter((x) => x.n * x.r >= rank);
      const best = all.sort((a, b) => a.n * a.r - b.n * b.r || a.n - b.n)[0] ?? null;
      expect(paddedRank(rank), `rank ${rank}`).toEqual(best);
    }
    expect(paddedRank(4)).toEqual({ n: 1, r: 8 });
    expect(paddedRank(200)).toEqual({ n: 25, r: 8 });
  });
});

describe('adapterFromPeft', () => {
  it('GPT-2, one map of one layer at rank 4: padded to 8, the other map of that layer zero, the same weight change everywhere', () => {
    const peft = peftAdapter(gpt2Tiny, [{ layer: 1, map: 'mlp.c_fc' }], 4, { alpha: 8 });
    const a = adapterFromPeft(peft.weights, peft.config, gpt2Tiny);
    expect(a.spec).toEqual({ layers: [false, true, false], n: 1, r: 8, alpha: 16 });
    expect(a.pairs.map((p) => [p.target.layer, p.target.map, p.rank])).toEqual([
      [1, 'mlp.c_fc', 8],
      [1, 'mlp.c_proj', 8],
    ]);
    expect(a.pairs[1].A.every((v) => v === 0) && a.pairs[1].B.every((v) => v === 0)).toBe(true);
    expectSameChange(gpt2Tiny, a, peft, 4);
    // What memlora stores of it reads back the same: the conversion is a memlora adapter like any other.
    const model = modelOf(gpt2Tiny);
    expectSameChange(gpt2Tiny, decodeAdapterWeights(encodeAdapter(a, model).weights, model), peft, 4);
  });

  it('Llama, several maps and layers at rank 12 (16 after padding), with rsLoRA scaling', () => {
    const modules = [
      { layer: 0, map: 'mlp.gate_proj' },
      { layer: 0, map: 'mlp.down_proj' },
      { layer: 2, map: 'mlp.up_proj' },
      { layer: 3, map: 'mlp.gate_proj' },
      { layer: 3, map: 'mlp.up_proj' },
      { layer: 3, map: 'mlp.down_proj' },
    ];
    const peft = peftAdapter(llamaTiny, modules, 12, { alpha: 24, rslora: true, seed: 9 });
    const a = adapterFromPeft(peft.weights, peft.config, llamaTiny);
    expect(a.spec.layers).toEqual([true, false, true, true]);
    expect([a.spec.n, a.spec.r]).toEqual([1, 16]);
    expect(a.scaling).toBeCloseTo(24 / Math.sqrt(12), 12);
    expectSameChange(llamaTiny, a, peft, 12);
  });

  it("a config without lora_alpha takes PEFT's default of 8, not r", () => {
    const peft = peftAdapter(gpt2Tiny, [{ layer: 1, map: 'mlp.c_proj' }], 16, { config: { lora_alpha: undefined } });
    const a = adapterFromPeft(peft.weights, peft.config, gpt2Tiny);
    expect(a.scaling).toBe(0.5);
    expectSameChange(gpt2Tiny, a, { ...peft, scaling: 8 / 16 }, 16);
  });

  it('a scaling past what alpha may carry is multiplied into B; a rank past 96 takes several modules', () => {
    const big = peftAdapter(gpt2Tiny, [{ layer: 2, map: 'mlp.c_proj' }], 1, { alpha: 4096 });
    const a = adapterFromPeft(big.weights, big.config, gpt2Tiny);
    expect(a.spec).toEqual({ layers: [false, false, true], n: 1, r: 8 });
    expect(a.scaling).toBe(1);
    expectSameChange(gpt2Tiny, a, big, 1);
    const wide = peftAdapter(gpt2Tiny, [{ layer: 0, map: 'mlp.c_fc' }, { layer: 0, map: 'mlp.c_proj' }], 128, { alpha: 256 });
    const b = adapterFromPeft(wide.weights, wide.config, gpt2Tiny);
    expect([b.spec.n, b.spec.r, b.spec.alpha]).toEqual([2, 64, 128]);
    expectSameChange(gpt2Tiny, b, wide, 128);
  });

  it('reads PEFT files saved in bfloat16 or float64 (as models in half precision save them) to the same adapter', () => {
    // Weights bfloat16 holds exactly, written again by hand in both dtypes.
    const peft = peftAdapter(gpt2Tiny, [{ layer: 0, map: 'mlp.c_proj' }, { layer: 2, map: 'mlp.c_fc' }], 4, { alpha: 4, seed: 21, bf16: true });
    const st = decodeSafetensors(peft.weights);
    const reference = adapterFromPeft(peft.weights, peft.config, gpt2Tiny);
    for (const dtype of ['BF16', 'F64'] as const) {
      const header: Record<string, unknown> = { __metadata__: { format: 'pt' } };
      const chunks: Uint8Array[] = [];
      let offset = 0;
      for (const [name, t] of st.tensors) {
        const f = t.data as Float32Array;
        const bytes = dtype === 'BF16' ? new Uint8Array(Uint16Array.from(new Uint32Array(f.buffer, f.byteOffset, f.length), (b) => b >>> 16).buffer) : new Uint8Array(Float64Array.from(f).buffer);
        header[name] = { dtype, shape: t.dims, data_offsets: [offset, offset + bytes.byteLength] };
        chunks.push(bytes);
        offset += bytes.byteLength;
      }
      const head = new TextEncoder().encode(JSON.stringify(header));
      const file = Buffer.concat([Buffer.from(new BigUint64Array([BigInt(head.byteLength)]).buffer), head, ...chunks]);
      const a = adapterFromPeft(new Uint8Array(file), peft.config, gpt2Tiny);
      expect(a.spec).toEqual(reference.spec);
      expect(a.pairs.map((p) => [[...p.A], [...p.B]])).toEqual(reference.pairs.map((p) => [[...p.A], [...p.B]]));
      expectSameChange(gpt2Tiny, a, peft, 4);
    }
  });

  it('refuses what memlora cannot serve, and files that disagree with the model or their config', () => {
    const ok = peftAdapter(gpt2Tiny, [{ layer: 1, map: 'mlp.c_fc' }], 4);
    const cfgWith = (extra: Record<string, unknown>) => json({ ...JSON.parse(new TextDecoder().decode(ok.config)), ...extra });
    expectFormatError(() => adapterFromPeft(ok.weights, cfgWith({ use_dora: true }), gpt2Tiny), 'unsupported_peft');
    expectFormatError(() => adapterFromPeft(ok.weights, cfgWith({ bias: 'lora_only' }), gpt2Tiny), 'unsupported_peft');
    expectFormatError(() => adapterFromPeft(ok.weights, cfgWith({ modules_to_save: ['lm_head'] }), gpt2Tiny), 'unsupported_peft');
    expectFormatError(() => adapterFromPeft(ok.weights, cfgWith({ rank_pattern: { 'transformer.h.1.mlp.c_fc': 8 } }), gpt2Tiny), 'unsupported_peft');
    expectFormatError(() => adapterFromPeft(ok.weights, cfgWith({ peft_type: 'IA3' }), gpt2Tiny), 'unsupported_peft');
    expectFormatError(() => adapterFromPeft(ok.weights, cfgWith({ r: 8 }), gpt2Tiny), 'rank_mismatch');
    expectFormatError(() => adapterFromPeft(ok.weights, cfgWith({ r: 'four' }), gpt2Tiny), 'bad_adapter_config');
    expectFormatError(() => adapterFromPeft(ok.weights, new TextEncoder().encode('{"r": 4,'), gpt2Tiny), 'bad_adapter_config');
    // LoRA on attention, which PEFT adapts by default: memlora serves feed-forward maps only.
    const attn = peftAdapter(gpt2Tiny, [{ layer: 1, map: 'mlp.c_fc' }], 4, { extra: { 'base_model.model.transformer.h.1.attn.c_attn.lora_A.weight': new Float32Array(4) } });
    expectFormatError(() => adapterFromPeft(attn.weights, attn.config, gpt2Tiny), 'unsupported_peft');
    // Another model: the maps' widths differ.
    expectFormatError(() => adapterFromPeft(ok.weights, ok.config, { ...gpt2Tiny, dFf: 48 }), 'tensor_shape');
    const lonely = encodeSafetensors(new Map([[loraTensorName('gpt2', 1, 'mlp.c_fc', 'A'), { dtype: 'float32', dims: [4, 16], data: new Float32Array(64) }]]), { format: 'pt' });
    expectFormatError(() => adapterFromPeft(lonely, ok.config, gpt2Tiny), 'missing_tensor');
    expectFormatError(() => adapterFromPeft(encodeSafetensors(new Map(), { format: 'pt' }), ok.config, gpt2Tiny), 'missing_tensor');
    const nan = ok.weights.slice();
    new DataView(nan.buffer).setFloat32(nan.byteLength - 4, Number.NaN, true);
    expectFormatError(() => adapterFromPeft(nan, ok.config, gpt2Tiny), 'non_finite');
    expectFormatError(() => adapterFromPeft(ok.weights.subarray(0, 20), ok.config, gpt2Tiny), 'bad_safetensors');
  });
});
