import { describe, expect, it } from 'vitest';
import type { Adapter } from '../../src/lora/adapter.js';
import {
  AdapterFormatError,
  decodeAdapter,
  decodeAdapterWeights,
  encodeAdapter,
  maxAdapterWeightsBytes,
  loraTensorName,
  modelConfigHash,
  targetModulesRegex,
  type EncodedAdapter,
} from '../../src/lora/format.js';
import { type AdapterSpec, MAX_MODULES, RANKS, scalingOf } from '../../src/lora/spec.js';
import type { ModelConfig } from '../../src/model/config.js';
import { decodeSafetensors, encodeSafetensors } from '../../src/model/safetensors.js';
import { expectedTensors } from '../../src/model/weights.js';
import { expectFormatError } from './fixtures/format-errors.js';
import { gpt2Tiny, llamaTiny, modelOf, trainedAdapter } from './fixtures/models.js';

/** Header of a safetensors file parsed by hand (not by our decoder): an independent reference. */
function rawHeader(bytes: Uint8Array): { header: Record<string, { dtype: string; shape: number[]; data_offsets: [number, number] }>; dataStart: number } {
  const n = Number(new DataView(bytes.buffer, bytes.byteOffset).getBigUint64(0, true));
  const header = JSON.parse(Buffer.from(bytes.subarray(8, 8 + n)).toString('utf8'));
  return { header, dataStart: 8 + n };
}

const bytesOf = (a: Float32Array): Uint8Array => new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
const json = (b: Uint8Array): Record<string, unknown> => JSON.parse(Buffer.from(b).toString('utf8'));
const jsonBytes = (v: unknown): Uint8Array => new TextEncoder().encode(JSON.stringify(v));


function expectBitIdentical(a: Adapter, b: Adapter): void {
  expect(b.spec).toEqual(a.spec);
  expect('alpha' in b.spec).toBe('alpha' in a.spec);
  expect(b.scaling).toBe(a.scaling);
  expect(b.pairs.map((p) => p.target)).toEqual(a.pairs.map((p) => p.target));
  for (let i = 0; i < a.pairs.length; i++) {
    expect(b.pairs[i].rank).toBe(a.pairs[i].rank);
    expect(Buffer.compare(bytesOf(b.pairs[i].A), bytesOf(a.pairs[i].A))).toBe(0);
    expect(Buffer.compare(bytesOf(b.pairs[i].B), bytesOf(a.pairs[i].B))).toBe(0);
  }
}

describe('encodeAdapter / decodeAdapter round trip', () => {
  it('GPT-2: bit-identical tensors and spec, and re-encoding reproduces all three files byte for byte', () => {
    const a = trainedAdapter({ layers: [true, false, true], n: 3, r: 8 }, gpt2Tiny, 7);
    // Values that a lossy path would change: -0, subnormals, extremes.
    a.pairs[0].A[0] = -0;
    a.pairs[0].A[1] = 1e-45;
    a.pairs[0].B[2] = 3.4028234663852886e38;
    const model = modelOf(gpt2Tiny);
    const files = encodeAdapter(a, model);
    const b = decodeAdapter(files, gpt2Tiny);
    expectBitIdentical(a, b);
    expect(Object.is(b.pairs[0].A[0], -0)).toBe(true);
    const again = encodeAdapter(b, model);
    for (const k of ['weights', 'adapterConfig', 'memlora'] as const) expect(Buffer.compare(again[k], files[k])).toBe(0);
  });

  it('Llama with alpha set and a sparse layer set', () => {
    const a = trainedAdapter({ layers: [false, true, false, true], n: 2, r: 16, alpha: 24 }, llamaTiny, 3);
    const model = modelOf(llamaTiny, '/models/llama-tiny');
    const files = encodeAdapter(a, model);
    const b = decodeAdapter(files, llamaTiny);
    expectBitIdentical(a, b);
    expect(b.scaling).toBe(24 / 16);
    const again = encodeAdapter(b, model);
    for (const k of ['weights', 'adapterConfig', 'memlora'] as const) expect(Buffer.compare(again[k], files[k])).toBe(0);
  });

  it('decoded tensors view the weights buffer (no copy)', () => {
    const files = encodeAdapter(trainedAdapter({ layers: [true, true, true], n: 1, r: 8 }, gpt2Tiny), modelOf(gpt2Tiny));
    const b = decodeAdapter(files, gpt2Tiny);
    for (const p of b.pairs) {
      expect(p.A.buffer).toBe(files.weights.buffer);
      expect(p.B.buffer).toBe(files.weights.buffer);
    }
  });
});

describe('PEFT layout', () => {
  it('GPT-2: tensor names, shapes and bytes as PEFT saves them (checked with a hand-parsed header)', () => {
    const spec = { layers: [true, false, true], n: 2, r: 8 as const };
    const a = trainedAdapter(spec, gpt2Tiny);
    const files = encodeAdapter(a, modelOf(gpt2Tiny));
    const { header, dataStart } = rawHeader(files.weights);
    const names = Object.keys(header).filter((k) => k !== '__metadata__').sort();
    expect(names).toEqual(
      [0, 2]
        .flatMap((l) => ['c_fc', 'c_proj'].flatMap((m) => ['A', 'B'].map((w) => `base_model.model.transformer.h.${l}.mlp.${m}.lora_${w}.weight`)))
        .sort(),
    );
    const d = gpt2Tiny.dModel;
    const f = gpt2Tiny.dFf;
    expect(header['base_model.model.transformer.h.0.mlp.c_fc.lora_A.weight'].shape).toEqual([16, d]);
    expect(header['base_model.model.transformer.h.0.mlp.c_fc.lora_B.weight'].shape).toEqual([f, 16]);
    expect(header['base_model.model.transformer.h.2.mlp.c_proj.lora_A.weight'].shape).toEqual([16, f]);
    expect(header['base_model.model.transformer.h.2.mlp.c_proj.lora_B.weight'].shape).toEqual([d, 16]);
    for (const p of a.pairs) {
      for (const w of ['A', 'B'] as const) {
        const e = header[loraTensorName('gpt2', p.target.layer, p.target.map, w)];
        expect(e.dtype).toBe('F32');
        const got = files.weights.subarray(dataStart + e.data_offsets[0], dataStart + e.data_offsets[1]);
        expect(Buffer.compare(got, bytesOf(p[w]))).toBe(0);
      }
    }
    const meta = (header as unknown as { __metadata__: Record<string, string> }).__metadata__;
    expect(meta).toMatchObject({ format: 'pt', 'memlora.n': '2', 'memlora.r': '8', 'memlora.layers': '101', 'memlora.family': 'gpt2', 'memlora.rank': '16' });
    expect(meta['memlora.config_hash']).toBe(modelConfigHash(gpt2Tiny));
  });

  it('adapter_config.json: merged rank, lora_alpha/r equals alpha/r, fan_in_fan_out per family', () => {
    const gpt = json(encodeAdapter(trainedAdapter({ layers: [true, false, true], n: 3, r: 8, alpha: 12 }, gpt2Tiny), modelOf(gpt2Tiny, 'gpt2-tiny')).adapterConfig);
    expect(gpt).toMatchObject({ peft_type: 'LORA', task_type: 'CAUSAL_LM', r: 24, lora_alpha: 36, lora_dropout: 0, bias: 'none', fan_in_fan_out: true, base_model_name_or_path: 'gpt2-tiny', layers_to_transform: null, layers_pattern: null });
    expect((gpt.lora_alpha as number) / (gpt.r as number)).toBe(scalingOf({ layers: [true], n: 3, r: 8, alpha: 12 }));
    const llama = json(encodeAdapter(trainedAdapter({ layers: [true, true, true, true], n: 4, r: 8 }, llamaTiny), modelOf(llamaTiny)).adapterConfig);
    expect(llama).toMatchObject({ r: 32, lora_alpha: 32, fan_in_fan_out: false });
  });

  it('target_modules matches exactly the injected feed-forward maps among all of the model\'s modules', () => {
    const moduleNames = (cfg: typeof gpt2Tiny): string[] => [...new Set(expectedTensors(cfg).map((t) => t.name.replace(/\.(weight|bias)$/, '')))];
    for (const [cfg, layers, want, trap] of [
      [gpt2Tiny, [0, 2], ['transformer.h.0.mlp.c_fc', 'transformer.h.0.mlp.c_proj', 'transformer.h.2.mlp.c_fc', 'transformer.h.2.mlp.c_proj'], 'transformer.h.0.attn.c_proj'],
      [llamaTiny, [3], ['model.layers.3.mlp.gate_proj', 'model.layers.3.mlp.up_proj', 'model.layers.3.mlp.down_proj'], 'model.layers.3.self_attn.o_proj'],
    ] as const) {
      // PEFT uses re.fullmatch; the pattern uses only syntax Python and JavaScript read alike.
      const re = new RegExp(`^(?:${targetModulesRegex(cfg.family, [...layers])})$`);
      const names = moduleNames(cfg);
      expect(names).toContain(trap);
      expect(names.filter((n) => re.test(n)).sort()).toEqual([...want].sort());
    }
  });

  it('memlora_adapter.json records n, r, alpha, layers and the model', () => {
    const m = json(encodeAdapter(trainedAdapter({ layers: [false, true, true], n: 2, r: 16, alpha: 8 }, gpt2Tiny), modelOf(gpt2Tiny, 'tiny')).memlora);
    expect(m).toMatchObject({
      format: 'memlora-adapter',
      spec: { layers: [false, true, true], n: 2, r: 16, alpha: 8 },
      rank: 32,
      scaling: 0.5,
      injectedLayers: [1, 2],
      model: { name: 'tiny', family: 'gpt2', configHash: modelConfigHash(gpt2Tiny), nLayers: 3 },
    });
  });
});

describe('encode validation', () => {
  const spec = { layers: [true, false, true], n: 1, r: 8 as const };
  const model = modelOf(gpt2Tiny);

  it('rejects vanilla specs, a scaling that is not alpha/r, and specs the model cannot hold', () => {
    expectFormatError(() => encodeAdapter(trainedAdapter({ ...spec, n: 0 }, gpt2Tiny), model), 'vanilla_adapter');
    expectFormatError(() => encodeAdapter({ ...trainedAdapter(spec, gpt2Tiny), scaling: 2 }, model), 'scaling_mismatch');
    expectFormatError(() => encodeAdapter(trainedAdapter({ ...spec, layers: [true, true, true, true] }, llamaTiny), model), 'invalid_adapter_spec');
  });

  it('rejects missing, duplicate and extra pairs', () => {
    const a = trainedAdapter(spec, gpt2Tiny);
    expectFormatError(() => encodeAdapter({ ...a, pairs: a.pairs.slice(1) }, model), 'missing_tensor');
    expectFormatError(() => encodeAdapter({ ...a, pairs: [...a.pairs, a.pairs[0]] }, model), 'unexpected_tensor');
    const other = trainedAdapter({ ...spec, layers: [true, true, true] }, gpt2Tiny);
    expectFormatError(() => encodeAdapter({ ...a, pairs: other.pairs }, model), 'unexpected_tensor');
  });

  it('rejects wrong widths, ranks and non-finite values', () => {
    const a = trainedAdapter(spec, gpt2Tiny);
    const p = a.pairs[0];
    expectFormatError(() => encodeAdapter({ ...a, pairs: [{ ...p, target: { ...p.target, inFeatures: 17 } }, ...a.pairs.slice(1)] }, model), 'tensor_shape');
    expectFormatError(() => encodeAdapter({ ...a, pairs: [{ ...p, rank: 16 }, ...a.pairs.slice(1)] }, model), 'rank_mismatch');
    expectFormatError(() => encodeAdapter({ ...a, pairs: [{ ...p, A: p.A.subarray(1) }, ...a.pairs.slice(1)] }, model), 'tensor_shape');
    const B = p.B.slice();
    B[5] = NaN;
    expectFormatError(() => encodeAdapter({ ...a, pairs: [{ ...p, B }, ...a.pairs.slice(1)] }, model), 'non_finite');
    // Every position (the last ones past a multiple of 4 too), both infinities: the error names the value.
    for (const [i, v] of [[0, Infinity], [p.A.length - 1, -Infinity], [p.A.length - 2, NaN], [7, Infinity]] as const) {
      const A = p.A.slice();
      A[i] = v;
      const err = (() => {
        try {
          encodeAdapter({ ...a, pairs: [{ ...p, A }, ...a.pairs.slice(1)] }, model);
        } catch (e) {
          return e as AdapterFormatError;
        }
      })();
      expect(err?.code).toBe('non_finite');
      expect(err?.details).toMatchObject({ tensor: 'A', index: i });
    }
  });
});

describe('decode validation', () => {
  const spec = { layers: [true, false, true], n: 2, r: 8 as const };
  const files = encodeAdapter(trainedAdapter(spec, gpt2Tiny), modelOf(gpt2Tiny));
  const st = decodeSafetensors(files.weights);
  /** Re-encode the weights with edits to the tensors or metadata. */
  const withWeights = (edit: (t: typeof st.tensors, m: Record<string, string>) => void): EncodedAdapter => {
    const t = new Map(st.tensors);
    const m = { ...st.metadata };
    edit(t, m);
    return { ...files, weights: encodeSafetensors(t, m) };
  };
  const nameA = loraTensorName('gpt2', 0, 'mlp.c_fc', 'A');

  it('rejects another model: different shape config or family', () => {
    expectFormatError(() => decodeAdapter(files, { ...gpt2Tiny, dFf: 48 }), 'model_mismatch');
    expectFormatError(() => decodeAdapter(files, { ...gpt2Tiny, vocabSize: 65 }), 'model_mismatch');
    expectFormatError(() => decodeAdapter(files, llamaTiny), 'model_mismatch');
  });

  it('rejects missing, extra, misshaped and wrong-rank tensors', () => {
    expectFormatError(() => decodeAdapter(withWeights((t) => t.delete(nameA)), gpt2Tiny), 'missing_tensor');
    expectFormatError(() => decodeAdapter(withWeights((t) => t.set(loraTensorName('gpt2', 1, 'mlp.c_fc', 'A'), t.get(nameA)!)), gpt2Tiny), 'unexpected_tensor');
    expectFormatError(() => decodeAdapter(withWeights((t) => t.set('base_model.model.transformer.h.0.attn.c_proj.lora_A.weight', t.get(nameA)!)), gpt2Tiny), 'unexpected_tensor');
    const a = st.tensors.get(nameA)!;
    expectFormatError(() => decodeAdapter(withWeights((t) => t.set(nameA, { ...a, dims: [8, 16], data: (a.data as Float32Array).subarray(0, 128) })), gpt2Tiny), 'rank_mismatch');
    expectFormatError(() => decodeAdapter(withWeights((t) => t.set(nameA, { ...a, dims: [16, 8], data: (a.data as Float32Array).subarray(0, 128) })), gpt2Tiny), 'tensor_shape');
    expectFormatError(() => decodeAdapter(withWeights((t) => t.set(nameA, { dtype: 'float64', dims: a.dims, data: Float64Array.from(a.data as Float32Array) })), gpt2Tiny), 'tensor_dtype');
  });

  it('rejects missing or inconsistent metadata', () => {
    expectFormatError(() => decodeAdapter(withWeights((_t, m) => delete m['memlora.n']), gpt2Tiny), 'bad_metadata');
    expectFormatError(() => decodeAdapter(withWeights((_t, m) => (m['memlora.rank'] = '24')), gpt2Tiny), 'rank_mismatch');
    expectFormatError(() => decodeAdapter(withWeights((_t, m) => (m['memlora.r'] = '12')), gpt2Tiny), 'invalid_adapter_spec');
    expectFormatError(() => decodeAdapter(withWeights((_t, m) => (m['memlora.layers'] = '1x1')), gpt2Tiny), 'bad_metadata');
    expectFormatError(() => decodeAdapter(withWeights((_t, m) => (m['memlora.format_version'] = '2')), gpt2Tiny), 'bad_metadata');
  });

  it('rejects damaged safetensors and side files that disagree with the weights', () => {
    expectFormatError(() => decodeAdapter({ ...files, weights: files.weights.subarray(0, files.weights.byteLength - 4) }, gpt2Tiny), 'bad_safetensors');
    const peft = json(files.adapterConfig);
    expectFormatError(() => decodeAdapter({ ...files, adapterConfig: jsonBytes({ ...peft, r: 8 }) }, gpt2Tiny), 'config_mismatch');
    expectFormatError(() => decodeAdapter({ ...files, adapterConfig: jsonBytes({ ...peft, target_modules: '.*mlp.*' }) }, gpt2Tiny), 'config_mismatch');
    expectFormatError(() => decodeAdapter({ ...files, adapterConfig: jsonBytes({ ...peft, layers_to_transform: [0] }) }, gpt2Tiny), 'config_mismatch');
    expectFormatError(() => decodeAdapter({ ...files, adapterConfig: files.adapterConfig.subarray(0, 10) }, gpt2Tiny), 'bad_adapter_config');
    const ours = json(files.memlora);
    expectFormatError(() => decodeAdapter({ ...files, memlora: jsonBytes({ ...ours, spec: { ...(ours.spec as object), n: 1 } }) }, gpt2Tiny), 'config_mismatch');
    expectFormatError(() => decodeAdapter({ ...files, memlora: jsonBytes({ ...ours, format: 'other' }) }, gpt2Tiny), 'bad_adapter_config');
  });
});

describe('decodeAdapterWeights (an uploaded weights file alone) and the largest adapter a model can have', () => {
  it('reads a memlora weights file alone, bit for bit, on both families; the side files it derives are those memlora writes', () => {
    const cases: Array<[ModelConfig, AdapterSpec]> = [
      [gpt2Tiny, { layers: [true, false, true], n: 3, r: 8 }],
      [llamaTiny, { layers: [false, true, false, true], n: 2, r: 16, alpha: 24 }],
    ];
    for (const [cfg, spec] of cases) {
      const a = trainedAdapter(spec, cfg, 5);
      const model = modelOf(cfg);
      const files = encodeAdapter(a, model);
      const b = decodeAdapterWeights(files.weights, model);
      expectBitIdentical(a, b);
      const again = encodeAdapter(b, model);
      for (const k of ['weights', 'adapterConfig', 'memlora'] as const) expect(Buffer.compare(again[k], files[k])).toBe(0);
    }
  });

  it('refuses what decodeAdapter refuses, and weights that are not finite (decodeAdapter trusts the checksum for those)', () => {
    const model = modelOf(gpt2Tiny);
    const good = encodeAdapter(trainedAdapter({ layers: [true, false, true], n: 1, r: 8 }, gpt2Tiny, 2), model).weights;
    expectFormatError(() => decodeAdapterWeights(good.subarray(0, good.byteLength - 4), model), 'bad_safetensors');
    expectFormatError(() => decodeAdapterWeights(good, modelOf(llamaTiny)), 'model_mismatch');
    const { header, dataStart } = rawHeader(good);
    const sides = encodeAdapter(decodeAdapterWeights(good, model), model);
    for (const bad of [Number.NaN, Number.POSITIVE_INFINITY, Number.NEGATIVE_INFINITY]) {
      const name = Object.keys(header).find((k) => k !== '__metadata__')!;
      const at = dataStart + header[name].data_offsets[0] + 4 * 5;
      const damaged = good.slice();
      new DataView(damaged.buffer).setFloat32(at, bad, true);
      expect(decodeAdapter({ ...sides, weights: damaged }, gpt2Tiny).pairs).toHaveLength(4);
      expectFormatError(() => decodeAdapterWeights(damaged, model), 'non_finite');
    }
  });

  it("bounds an upload by the model's largest adapter: every layer at MAX_MODULES modules of the largest rank fits, with under 64 KiB to spare", () => {
    for (const cfg of [gpt2Tiny, llamaTiny]) {
      const largest = trainedAdapter({ layers: Array(cfg.nLayers).fill(true), n: MAX_MODULES, r: Math.max(...RANKS) as 96 }, cfg, 1);
      const bytes = encodeAdapter(largest, modelOf(cfg)).weights.byteLength;
      const bound = maxAdapterWeightsBytes(cfg);
      expect(bytes).toBeLessThanOrEqual(bound);
      expect(bound - bytes).toBeLessThan(64 * 1024);
    }
  });
});
