/**
 * The on-disk adapter format: the Hugging Face PEFT layout, so a memlora adapter loads in PEFT (and
 * vLLM, where the base model is supported) on the same base model.
 *
 *   adapter_model.safetensors   base_model.model.<HF module path>.lora_A.weight [n*r, in]
 *                               base_model.model.<HF module path>.lora_B.weight [out, n*r]
 *                               __metadata__: format=pt plus our record (memlora.*)
 *   adapter_config.json         PEFT LoraConfig: r = n*r, lora_alpha = n*alpha (so lora_alpha / r is
 *                               our alpha / r), target_modules = a regex naming exactly the injected maps
 *   memlora_adapter.json        our record again, readable without a safetensors parser
 *
 * n parallel rank-r modules are stored as the one merged rank-(n*r) module they equal (spec.ts); n and
 * r themselves live only in our metadata, which PEFT ignores. PEFT stores lora_A / lora_B as
 * nn.Linear weights ([out, in]) even for GPT-2's Conv1D, so both families share the tensor layout;
 * only `fan_in_fan_out` (true for Conv1D) differs, and it concerns merging into the base weight.
 *
 * PEFT refuses `layers_to_transform` together with a regex `target_modules` (LoraConfig raises), and
 * ignores it for a regex anyway: the injected layer indices are therefore spelled inside the regex.
 *
 * Encoding is deterministic (safetensors orders tensors by name, JSON keys are written in a fixed
 * order), so decode -> encode reproduces the files byte for byte.
 */
import { createHash } from 'node:crypto';
import { configFingerprint, type ModelConfig, type ModelFamily } from '../model/config.js';
import { decodeSafetensors, decodeSafetensorsHeader, encodeSafetensors, SafetensorsError } from '../model/safetensors.js';
import { LORA_MAPS, gpt2Name, llamaName, loraTargets, type LoraTarget } from '../model/weights.js';
import { type Adapter, type LoraPair, pairKey } from './adapter.js';
import { type AdapterSpec, AdapterSpecError, MAX_MODULES, RANKS, injectedLayers, isVanilla, parseAdapterSpec, scalingOf, totalRank } from './spec.js';

export const ADAPTER_WEIGHTS_FILE = 'adapter_model.safetensors';
export const ADAPTER_CONFIG_FILE = 'adapter_config.json';
export const MEMLORA_ADAPTER_FILE = 'memlora_adapter.json';
export const ADAPTER_FORMAT_VERSION = 1;

/** The base model an adapter belongs to: its config, and the name PEFT records as base_model_name_or_path. */
export interface AdapterModel {
  config: ModelConfig;
  name: string;
}

/** The three files of one adapter, as bytes. */
export interface EncodedAdapter {
  weights: Uint8Array;
  adapterConfig: Uint8Array;
  memlora: Uint8Array;
}

export const ADAPTER_FILES: Readonly<Record<keyof EncodedAdapter, string>> = {
  weights: ADAPTER_WEIGHTS_FILE,
  adapterConfig: ADAPTER_CONFIG_FILE,
  memlora: MEMLORA_ADAPTER_FILE,
};

export type AdapterFormatErrorCode =
  | 'vanilla_adapter'
  | 'invalid_adapter_spec'
  | 'scaling_mismatch'
  | 'missing_tensor'
  | 'unexpected_tensor'
  | 'tensor_shape'
  | 'tensor_dtype'
  | 'rank_mismatch'
  | 'non_finite'
  | 'bad_safetensors'
  | 'bad_metadata'
  | 'bad_adapter_config'
  | 'config_mismatch'
  | 'model_mismatch'
  /** A PEFT adapter that uses what memlora cannot serve (DoRA, biases, other modules, patterns). */
  | 'unsupported_peft';

export class AdapterFormatError extends Error {
  constructor(
    readonly code: AdapterFormatErrorCode,
    message: string,
    readonly details?: unknown,
  ) {
    super(message);
    this.name = 'AdapterFormatError';
  }
}

/** The model's module path of one map, e.g. transformer.h.3.mlp.c_fc or model.layers.3.mlp.up_proj. */
export function modulePath(family: ModelFamily, layer: number, map: string): string {
  return family === 'gpt2' ? gpt2Name.layer(layer, map) : llamaName.layer(layer, map);
}

export function loraTensorName(family: ModelFamily, layer: number, map: string, which: 'A' | 'B'): string {
  return `base_model.model.${modulePath(family, layer, map)}.lora_${which}.weight`;
}

const escapeRe = (s: string): string => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

/**
 * PEFT's target_modules regex (re.fullmatch against module names of the bare HF model): the
 * feed-forward maps of the injected layers, nothing else (GPT-2's attn.c_proj shares a name with
 * mlp.c_proj, so the `mlp.` part is spelled out).
 */
export function targetModulesRegex(family: ModelFamily, layers: number[]): string {
  const prefix = escapeRe(modulePath(family, 0, 'x').slice(0, -'0.x'.length));
  const maps = LORA_MAPS[family].map(escapeRe).join('|');
  return `${prefix}(${layers.join('|')})\\.(${maps})`;
}

/** A short hash of everything in the model config that shapes the graph: adapters are tied to it. */
export function modelConfigHash(cfg: ModelConfig): string {
  return createHash('sha256').update(configFingerprint(cfg)).digest('hex').slice(0, 16);
}

const META = {
  version: 'memlora.format_version',
  family: 'memlora.family',
  configHash: 'memlora.config_hash',
  layers: 'memlora.layers',
  n: 'memlora.n',
  r: 'memlora.r',
  alpha: 'memlora.alpha',
  rank: 'memlora.rank',
} as const;

function adapterConfigJson(spec: AdapterSpec, model: AdapterModel): Record<string, unknown> {
  const rank = totalRank(spec);
  const alpha = spec.alpha ?? spec.r;
  // Keys as PEFT's LoraConfig.to_dict() writes them (sorted); fields we do not use keep PEFT's defaults.
  return {
    alpha_pattern: {},
    auto_mapping: null,
    base_model_name_or_path: model.name,
    bias: 'none',
    fan_in_fan_out: model.config.family === 'gpt2',
    inference_mode: true,
    init_lora_weights: true,
    layers_pattern: null,
    layers_to_transform: null,
    lora_alpha: spec.n * alpha,
    lora_dropout: 0,
    modules_to_save: null,
    peft_type: 'LORA',
    r: rank,
    rank_pattern: {},
    revision: null,
    target_modules: targetModulesRegex(model.config.family, injectedLayers(spec)),
    task_type: 'CAUSAL_LM',
    use_dora: false,
    use_rslora: false,
  };
}

function memloraJson(spec: AdapterSpec, model: AdapterModel): Record<string, unknown> {
  const cfg = model.config;
  return {
    format: 'memlora-adapter',
    formatVersion: ADAPTER_FORMAT_VERSION,
    spec: specRecord(spec),
    rank: totalRank(spec),
    scaling: scalingOf(spec),
    injectedLayers: injectedLayers(spec),
    maps: [...LORA_MAPS[cfg.family]],
    model: {
      name: model.name,
      family: cfg.family,
      configHash: modelConfigHash(cfg),
      nLayers: cfg.nLayers,
      dModel: cfg.dModel,
      dFf: cfg.dFf,
    },
  };
}

/** The spec with keys in a fixed order and alpha only when set (round trips keep its absence). */
export function specRecord(spec: AdapterSpec): AdapterSpec {
  return { layers: [...spec.layers], n: spec.n, r: spec.r, ...(spec.alpha !== undefined ? { alpha: spec.alpha } : {}) };
}

const jsonBytes = (v: unknown): Uint8Array => new TextEncoder().encode(`${JSON.stringify(v, null, 2)}\n`);

function checkSpec(value: unknown, nLayers: number): AdapterSpec {
  try {
    return parseAdapterSpec(value, nLayers);
  } catch (e) {
    if (e instanceof AdapterSpecError) throw new AdapterFormatError('invalid_adapter_spec', e.message, e.details);
    throw e;
  }
}

/** The targets an adapter of this spec must carry, in the model's order. */
function expectedTargets(spec: AdapterSpec, cfg: ModelConfig): LoraTarget[] {
  const layers = new Set(injectedLayers(spec));
  return loraTargets(cfg).filter((t) => layers.has(t.layer));
}

function checkPairShape(p: LoraPair, t: LoraTarget, rank: number): void {
  const key = pairKey(t);
  if (p.target.inFeatures !== t.inFeatures || p.target.outFeatures !== t.outFeatures) {
    throw new AdapterFormatError('tensor_shape', `${key}: target is ${p.target.inFeatures}->${p.target.outFeatures}, the model's map is ${t.inFeatures}->${t.outFeatures}`, {
      target: key,
      got: [p.target.inFeatures, p.target.outFeatures],
      expected: [t.inFeatures, t.outFeatures],
    });
  }
  if (p.rank !== rank) throw new AdapterFormatError('rank_mismatch', `${key}: rank ${p.rank}, the spec's merged rank n*r is ${rank}`, { target: key, got: p.rank, expected: rank });
  if (!(p.A instanceof Float32Array) || p.A.length !== rank * t.inFeatures) {
    throw new AdapterFormatError('tensor_shape', `${key}: A has ${p.A.length} elements, [${rank}, ${t.inFeatures}] needs ${rank * t.inFeatures}`, { target: key, got: p.A.length });
  }
  if (!(p.B instanceof Float32Array) || p.B.length !== t.outFeatures * rank) {
    throw new AdapterFormatError('tensor_shape', `${key}: B has ${p.B.length} elements, [${t.outFeatures}, ${rank}] needs ${t.outFeatures * rank}`, { target: key, got: p.B.length });
  }
  checkFinite(p);
}

/** non_finite unless every weight of the pair is finite. */
export function checkFinite(p: LoraPair): void {
  for (const [which, arr] of [['A', p.A], ['B', p.B]] as const) {
    if (allFinite(arr)) continue;
    const i = arr.findIndex((v) => !Number.isFinite(v));
    const key = pairKey(p.target);
    throw new AdapterFormatError('non_finite', `${key}: ${which}[${i}] is ${arr[i]}; a trained adapter must be finite`, { target: key, tensor: which, index: i });
  }
}

/**
 * Whether every value is finite: x * 0 is 0 for finite x and NaN for NaN and +-Infinity, so four
 * running sums of it stay 0 exactly when all are finite (2.3x faster than Number.isFinite per value:
 * it is on every adapter write and upload; a stored file's loads rely on its checksum instead).
 */
function allFinite(a: Float32Array): boolean {
  let s0 = 0;
  let s1 = 0;
  let s2 = 0;
  let s3 = 0;
  const n = a.length - (a.length % 4);
  for (let i = 0; i < n; i += 4) {
    s0 += a[i] * 0;
    s1 += a[i + 1] * 0;
    s2 += a[i + 2] * 0;
    s3 += a[i + 3] * 0;
  }
  for (let i = n; i < a.length; i++) s0 += a[i] * 0;
  return s0 + s1 + s2 + s3 === 0;
}

/** Encode an adapter for the model. Throws AdapterFormatError on anything the model could not load. */
export function encodeAdapter(adapter: Adapter, model: AdapterModel): EncodedAdapter {
  const cfg = model.config;
  const spec = checkSpec(adapter.spec, cfg.nLayers);
  if (isVanilla(spec)) throw new AdapterFormatError('vanilla_adapter', 'a vanilla spec (n = 0 or no injected layer) has no adapter to store', { spec });
  if (adapter.scaling !== scalingOf(spec)) {
    throw new AdapterFormatError('scaling_mismatch', `scaling ${adapter.scaling} differs from the spec's alpha / r = ${scalingOf(spec)}`, { got: adapter.scaling, expected: scalingOf(spec) });
  }
  const rank = totalRank(spec);
  const targets = expectedTargets(spec, cfg);
  const byKey = new Map<string, LoraPair>();
  for (const p of adapter.pairs) {
    const key = pairKey(p.target);
    if (byKey.has(key)) throw new AdapterFormatError('unexpected_tensor', `two pairs for ${key}`, { target: key });
    byKey.set(key, p);
  }
  const tensors = new Map<string, { dtype: 'float32'; dims: number[]; data: Float32Array }>();
  for (const t of targets) {
    const p = byKey.get(pairKey(t));
    if (!p) throw new AdapterFormatError('missing_tensor', `no pair for ${pairKey(t)}, which the spec injects`, { target: pairKey(t) });
    byKey.delete(pairKey(t));
    checkPairShape(p, t, rank);
    tensors.set(loraTensorName(cfg.family, t.layer, t.map, 'A'), { dtype: 'float32', dims: [rank, t.inFeatures], data: p.A });
    tensors.set(loraTensorName(cfg.family, t.layer, t.map, 'B'), { dtype: 'float32', dims: [t.outFeatures, rank], data: p.B });
  }
  if (byKey.size > 0) {
    const extra = [...byKey.keys()];
    throw new AdapterFormatError('unexpected_tensor', `pairs for maps the spec does not inject or the model lacks: ${extra.join(', ')}`, { targets: extra });
  }
  const metadata: Record<string, string> = {
    format: 'pt',
    [META.version]: String(ADAPTER_FORMAT_VERSION),
    [META.family]: cfg.family,
    [META.configHash]: modelConfigHash(cfg),
    [META.layers]: spec.layers.map((b) => (b ? '1' : '0')).join(''),
    [META.n]: String(spec.n),
    [META.r]: String(spec.r),
    [META.rank]: String(rank),
  };
  if (spec.alpha !== undefined) metadata[META.alpha] = String(spec.alpha);
  return {
    weights: encodeSafetensors(tensors, metadata),
    adapterConfig: jsonBytes(adapterConfigJson(spec, model)),
    memlora: jsonBytes(memloraJson(spec, model)),
  };
}

function need(meta: Record<string, string>, key: string): string {
  const v = meta[key];
  if (v === undefined) throw new AdapterFormatError('bad_metadata', `safetensors __metadata__ lacks "${key}" (not a memlora adapter?)`, { key });
  return v;
}

function numberField(meta: Record<string, string>, key: string): number {
  const s = need(meta, key);
  const v = Number(s);
  if (s.trim() === '' || !Number.isFinite(v)) throw new AdapterFormatError('bad_metadata', `metadata "${key}" is ${JSON.stringify(s)}, not a number`, { key, value: s });
  return v;
}

/** The spec recorded in the safetensors metadata, checked against the model. */
function specFromMetadata(meta: Record<string, string>, cfg: ModelConfig): AdapterSpec {
  const version = need(meta, META.version);
  if (version !== String(ADAPTER_FORMAT_VERSION)) {
    throw new AdapterFormatError('bad_metadata', `adapter format version ${JSON.stringify(version)}, this build reads ${ADAPTER_FORMAT_VERSION}`, { version });
  }
  const family = need(meta, META.family);
  if (family !== cfg.family) throw new AdapterFormatError('model_mismatch', `adapter is for a ${family} model, the model is ${cfg.family}`, { got: family, expected: cfg.family });
  const hash = need(meta, META.configHash);
  if (hash !== modelConfigHash(cfg)) {
    throw new AdapterFormatError('model_mismatch', `adapter was made for model config ${hash}, the model's is ${modelConfigHash(cfg)} (${configFingerprint(cfg)})`, {
      got: hash,
      expected: modelConfigHash(cfg),
    });
  }
  const bits = need(meta, META.layers);
  if (!/^[01]+$/.test(bits)) throw new AdapterFormatError('bad_metadata', `metadata "${META.layers}" is ${JSON.stringify(bits)}, not a bit string`, { value: bits });
  const raw: Record<string, unknown> = { layers: [...bits].map((c) => c === '1'), n: numberField(meta, META.n), r: numberField(meta, META.r) };
  if (meta[META.alpha] !== undefined) raw.alpha = numberField(meta, META.alpha);
  const spec = checkSpec(raw, cfg.nLayers);
  if (isVanilla(spec)) throw new AdapterFormatError('vanilla_adapter', 'the file records a vanilla spec', { spec });
  const rank = numberField(meta, META.rank);
  if (rank !== totalRank(spec)) throw new AdapterFormatError('rank_mismatch', `metadata rank ${rank} differs from n*r = ${totalRank(spec)}`, { got: rank, expected: totalRank(spec) });
  return spec;
}

export function parseJson(bytes: Uint8Array, file: string): Record<string, unknown> {
  let v: unknown;
  try {
    v = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(bytes));
  } catch (e) {
    throw new AdapterFormatError('bad_adapter_config', `${file} is not valid UTF-8 JSON: ${(e as Error).message}`, { file });
  }
  if (!v || typeof v !== 'object' || Array.isArray(v)) throw new AdapterFormatError('bad_adapter_config', `${file} is not a JSON object`, { file });
  return v as Record<string, unknown>;
}

const sameJson = (a: unknown, b: unknown): boolean => JSON.stringify(a) === JSON.stringify(b);

/** adapter_config.json and memlora_adapter.json must say what the weights' metadata says. */
function checkSideFiles(files: EncodedAdapter, spec: AdapterSpec, cfg: ModelConfig): void {
  const peft = parseJson(files.adapterConfig, ADAPTER_CONFIG_FILE);
  const expected = adapterConfigJson(spec, { config: cfg, name: '' });
  const mismatch = (field: string, got: unknown, want: unknown): never => {
    throw new AdapterFormatError('config_mismatch', `${ADAPTER_CONFIG_FILE}: ${field} is ${JSON.stringify(got)}, the weights say ${JSON.stringify(want)}`, { file: ADAPTER_CONFIG_FILE, field, got, expected: want });
  };
  if (typeof peft.base_model_name_or_path !== 'string') mismatch('base_model_name_or_path', peft.base_model_name_or_path, 'a string');
  for (const field of ['peft_type', 'task_type', 'r', 'lora_alpha', 'target_modules', 'fan_in_fan_out', 'bias', 'use_dora', 'use_rslora'] as const) {
    if (!sameJson(peft[field], expected[field])) mismatch(field, peft[field], expected[field]);
  }
  for (const field of ['layers_to_transform', 'layers_pattern'] as const) {
    if (peft[field] !== null && peft[field] !== undefined) mismatch(field, peft[field], null);
  }
  for (const field of ['rank_pattern', 'alpha_pattern'] as const) {
    const v = peft[field];
    if (v !== undefined && v !== null && !sameJson(v, {})) mismatch(field, v, {});
  }

  const ours = parseJson(files.memlora, MEMLORA_ADAPTER_FILE);
  const model = ours.model as Record<string, unknown> | undefined;
  if (ours.format !== 'memlora-adapter' || ours.formatVersion !== ADAPTER_FORMAT_VERSION) {
    throw new AdapterFormatError('bad_adapter_config', `${MEMLORA_ADAPTER_FILE}: format ${JSON.stringify(ours.format)} v${JSON.stringify(ours.formatVersion)}, expected memlora-adapter v${ADAPTER_FORMAT_VERSION}`, {
      file: MEMLORA_ADAPTER_FILE,
    });
  }
  if (!sameJson(ours.spec, specRecord(spec))) {
    throw new AdapterFormatError('config_mismatch', `${MEMLORA_ADAPTER_FILE}: spec ${JSON.stringify(ours.spec)} differs from the weights' ${JSON.stringify(specRecord(spec))}`, {
      file: MEMLORA_ADAPTER_FILE,
      got: ours.spec,
    });
  }
  if (model?.configHash !== modelConfigHash(cfg) || model?.family !== cfg.family) {
    throw new AdapterFormatError('config_mismatch', `${MEMLORA_ADAPTER_FILE}: model ${JSON.stringify(model?.family)}/${JSON.stringify(model?.configHash)} differs from the weights'`, {
      file: MEMLORA_ADAPTER_FILE,
    });
  }
}

/** `read()` of a weights file, its SafetensorsError as bad_safetensors. */
function safetensorsRead<T>(read: () => T): T {
  try {
    return read();
  } catch (e) {
    if (e instanceof SafetensorsError) throw new AdapterFormatError('bad_safetensors', e.message, { code: e.code, details: e.details });
    throw e;
  }
}

/** The weights file's tensors and metadata; bad_safetensors where it is not a safetensors file. */
export const readWeights = (weights: Uint8Array): ReturnType<typeof decodeSafetensors> => safetensorsRead(() => decodeSafetensors(weights, ADAPTER_WEIGHTS_FILE));

/** The weights file's metadata alone (its header read, no tensor); bad_safetensors where it is not a safetensors file. */
export const weightsMetadata = (weights: Uint8Array): Record<string, string> => safetensorsRead(() => decodeSafetensorsHeader(weights, ADAPTER_WEIGHTS_FILE)).metadata;

/**
 * Decode and validate an adapter for the model: names, shapes and ranks against the model and the
 * recorded spec, and the two JSON files against the weights. A/B view the weights buffer when its
 * offsets are 4-byte aligned (our files always are), so nothing is copied.
 */
export function decodeAdapter(files: EncodedAdapter, modelConfig: ModelConfig): Adapter {
  const cfg = modelConfig;
  const st = readWeights(files.weights);
  const spec = specFromMetadata(st.metadata, cfg);
  checkSideFiles(files, spec, cfg);
  const rank = totalRank(spec);
  const seen = new Set<string>();
  const tensor = (name: string, dims: number[]): Float32Array => {
    const t = st.tensors.get(name);
    if (!t) throw new AdapterFormatError('missing_tensor', `${ADAPTER_WEIGHTS_FILE} lacks "${name}"`, { name, expected: dims });
    seen.add(name);
    if (t.dtype !== 'float32' || !(t.data instanceof Float32Array)) {
      throw new AdapterFormatError('tensor_dtype', `"${name}" is ${t.dtype}, expected float32`, { name, dtype: t.dtype });
    }
    if (!sameJson(t.dims, dims)) {
      // Right feature width, wrong rank: the file disagrees with its own n*r, not with the model.
      const isA = name.endsWith('.lora_A.weight');
      const rankOnly = t.dims.length === 2 && (isA ? t.dims[1] === dims[1] : t.dims[0] === dims[0]);
      throw new AdapterFormatError(rankOnly ? 'rank_mismatch' : 'tensor_shape', `"${name}" has shape [${t.dims}], expected [${dims}]`, { name, got: t.dims, expected: dims });
    }
    return t.data;
  };
  const pairs: LoraPair[] = expectedTargets(spec, cfg).map((t) => ({
    target: t,
    rank,
    A: tensor(loraTensorName(cfg.family, t.layer, t.map, 'A'), [rank, t.inFeatures]),
    B: tensor(loraTensorName(cfg.family, t.layer, t.map, 'B'), [t.outFeatures, rank]),
  }));
  const extra = [...st.tensors.keys()].filter((n) => !seen.has(n));
  if (extra.length > 0) {
    throw new AdapterFormatError('unexpected_tensor', `${ADAPTER_WEIGHTS_FILE} holds tensors the spec does not inject: ${extra.slice(0, 5).join(', ')}${extra.length > 5 ? ', ...' : ''}`, {
      names: extra,
    });
  }
  return { spec, scaling: scalingOf(spec), pairs };
}

/**
 * An adapter from its weights file alone, as memlora wrote it (its __metadata__ records the spec and
 * the model it was made for): the two JSON files are what memlora writes beside those weights, so
 * the file is checked as a stored adapter is on every load (decodeAdapter), and its weights for being
 * finite as memlora's encoder checks those it writes. What an operator uploads to restore or move a
 * version; AdapterFormatError where it is not such a file for this model.
 */
export function decodeAdapterWeights(weights: Uint8Array, model: AdapterModel): Adapter {
  const spec = specFromMetadata(weightsMetadata(weights), model.config);
  const adapter = decodeAdapter({ weights, adapterConfig: jsonBytes(adapterConfigJson(spec, model)), memlora: jsonBytes(memloraJson(spec, model)) }, model.config);
  // Not written by memlora's encoder (which checks it): the weights must be finite as well.
  for (const p of adapter.pairs) checkFinite(p);
  return adapter;
}

/**
 * The size of the largest weights file an adapter of this model can have: every layer injected at
 * the largest merged rank (MAX_MODULES modules of the largest rank), plus room for the safetensors
 * header. An upload past it cannot be an adapter of this model.
 */
export function maxAdapterWeightsBytes(cfg: ModelConfig): number {
  const rank = MAX_MODULES * Math.max(...RANKS);
  const floats = loraTargets(cfg).reduce((sum, t) => sum + rank * (t.inFeatures + t.outFeatures), 0);
  return 4 * floats + 64 * 1024;
}
