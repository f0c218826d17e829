/**
 * A LoRA adapter trained elsewhere with Hugging Face PEFT (its adapter_model.safetensors and
 * adapter_config.json) as a memlora adapter of the same base model, computing exactly what PEFT
 * computes, so that memlora serves it beside the adapters it trains.
 *
 * PEFT adds scaling * B A x to a module, with B [out, r] and A [r, in] (also for GPT-2's Conv1D) and
 * scaling lora_alpha / r (lora_alpha / sqrt(r) with rsLoRA). A memlora adapter carries the same on
 * every feed-forward map of its injected layers, at a merged rank n * r with r in RANKS and scaling
 * alpha / r. The conversion is exact (but for the float64 rounding of (scaling * r) / r, which is
 * exact for r a power of two):
 * - the rank is padded with zero rows of A and zero columns of B to the smallest valid n * r at least
 *   PEFT's (a zero rank adds nothing), and alpha is chosen so that alpha / r is PEFT's scaling (past
 *   memlora's bound on alpha, the scaling is multiplied into B instead, and alpha is r);
 * - a feed-forward map PEFT left alone, in a layer where it adapted another, gets a zero pair.
 * What memlora cannot serve is refused, never dropped: LoRA on other modules (attention, embeddings),
 * DoRA, trained biases, modules_to_save, per-module rank or alpha patterns, other PEFT types.
 */
import type { ModelConfig } from '../model/config.js';
import type { HostTensor } from '../graph/types.js';
import { loraTargets } from '../model/weights.js';
import type { Adapter, LoraPair, LoraTarget } from './adapter.js';
import { ADAPTER_CONFIG_FILE, ADAPTER_WEIGHTS_FILE, AdapterFormatError, checkFinite, loraTensorName, parseJson, readWeights } from './format.js';
import { type AdapterSpec, MAX_MODULES, RANKS, type Rank, scalingOf } from './spec.js';

/** The largest alpha memlora's spec takes (spec.ts). */
const MAX_ALPHA = 1024;
/** PEFT LoraConfig's defaults for r and lora_alpha. */
const PEFT_DEFAULT_R = 8;
const PEFT_DEFAULT_ALPHA = 8;

const unsupported = (message: string, details: Record<string, unknown>): AdapterFormatError => new AdapterFormatError('unsupported_peft', message, details);

/** PEFT's scaling from its adapter_config.json, after refusing what memlora cannot serve. */
function peftScaling(config: Record<string, unknown>): { r: number; scaling: number } {
  if (config.peft_type !== 'LORA') throw unsupported(`${ADAPTER_CONFIG_FILE}: peft_type ${JSON.stringify(config.peft_type)}; memlora serves LoRA adapters`, { field: 'peft_type' });
  // Absent fields take LoraConfig's defaults (PEFT writes them all, but a hand-written config may not).
  const r = config.r ?? PEFT_DEFAULT_R;
  const alpha = config.lora_alpha ?? PEFT_DEFAULT_ALPHA;
  if (typeof r !== 'number' || !Number.isInteger(r) || r < 1) throw new AdapterFormatError('bad_adapter_config', `${ADAPTER_CONFIG_FILE}: r is ${JSON.stringify(r)}, not a positive integer`, { field: 'r' });
  if (typeof alpha !== 'number' || !Number.isFinite(alpha) || alpha <= 0) throw new AdapterFormatError('bad_adapter_config', `${ADAPTER_CONFIG_FILE}: lora_alpha is ${JSON.stringify(alpha)}, not a positive number`, { field: 'lora_alpha' });
  if (config.use_dora === true) throw unsupported('DoRA adapters (use_dora) are not served: memlora adds B A x only', { field: 'use_dora' });
  if (config.bias !== undefined && config.bias !== null && config.bias !== 'none') throw unsupported(`trained biases (bias ${JSON.stringify(config.bias)}) are not served`, { field: 'bias' });
  const saved = config.modules_to_save;
  if (Array.isArray(saved) ? saved.length > 0 : saved !== undefined && saved !== null) throw unsupported('modules_to_save (whole modules trained beside the LoRA) are not served', { field: 'modules_to_save' });
  for (const field of ['rank_pattern', 'alpha_pattern'] as const) {
    const v = config[field];
    if (v !== undefined && v !== null && (typeof v !== 'object' || Object.keys(v).length > 0)) throw unsupported(`${field} (a rank or alpha per module) is not served: one r and lora_alpha for every module`, { field });
  }
  return { r, scaling: config.use_rslora === true ? alpha / Math.sqrt(r) : alpha / r };
}

/** The smallest merged rank n * r (r in RANKS, n <= MAX_MODULES) that holds `rank`, with the fewest modules. */
export function paddedRank(rank: number): { n: number; r: Rank } | null {
  let best: { n: number; r: Rank } | null = null;
  for (const r of RANKS) {
    const n = Math.max(1, Math.ceil(rank / r));
    if (n > MAX_MODULES) continue;
    if (!best || n * r < best.n * best.r || (n * r === best.n * best.r && n < best.n)) best = { n, r };
  }
  return best;
}

/** `data` [rows, cols] as [rows, cols + pad] (zero columns after each row's own). */
function padColumns(data: Float32Array, rows: number, cols: number, padded: number, times = 1): Float32Array {
  const out = new Float32Array(rows * padded);
  for (let i = 0; i < rows; i++) for (let j = 0; j < cols; j++) out[i * padded + j] = data[i * cols + j] * times;
  return out;
}

/** The tensor's values as float32 (F16 and BF16 are converted on reading; F64 here). */
function float32(name: string, t: HostTensor): Float32Array {
  if (t.data instanceof Float32Array) return t.data;
  if (t.data instanceof Float64Array) return Float32Array.from(t.data);
  throw new AdapterFormatError('tensor_dtype', `"${name}" is ${t.dtype}; LoRA weights are floating point`, { name, dtype: t.dtype });
}

/**
 * A PEFT LoRA adapter (its two files) as a memlora adapter of the model. AdapterFormatError:
 * bad_safetensors, bad_adapter_config, unsupported_peft (what memlora cannot serve), tensor_shape or
 * rank_mismatch (another model, or a file that disagrees with its config), non_finite.
 */
export function adapterFromPeft(weights: Uint8Array, configBytes: Uint8Array, cfg: ModelConfig): Adapter {
  const { r: peftRank, scaling } = peftScaling(parseJson(configBytes, ADAPTER_CONFIG_FILE));
  const st = readWeights(weights);
  const targets = loraTargets(cfg);
  const byName = new Map<string, LoraTarget>();
  for (const t of targets) for (const which of ['A', 'B'] as const) byName.set(loraTensorName(cfg.family, t.layer, t.map, which), t);
  const found = new Map<LoraTarget, { A?: Float32Array; B?: Float32Array }>();
  const others: string[] = [];
  for (const [name, tensor] of st.tensors) {
    const target = byName.get(name);
    if (!target) {
      others.push(name);
      continue;
    }
    const which = name.endsWith('.lora_A.weight') ? 'A' : 'B';
    const want = which === 'A' ? [peftRank, target.inFeatures] : [target.outFeatures, peftRank];
    if (tensor.dims.length !== 2 || tensor.dims[0] !== want[0] || tensor.dims[1] !== want[1]) {
      const rankOnly = tensor.dims.length === 2 && (which === 'A' ? tensor.dims[1] === want[1] : tensor.dims[0] === want[0]);
      throw new AdapterFormatError(rankOnly ? 'rank_mismatch' : 'tensor_shape', `"${name}" has shape [${tensor.dims}], the model and r ${peftRank} need [${want}]`, { name, got: tensor.dims, expected: want });
    }
    found.set(target, { ...found.get(target), [which]: float32(name, tensor) });
  }
  if (others.length > 0) {
    throw unsupported(`${ADAPTER_WEIGHTS_FILE} adapts modules memlora does not (LoRA is served on the feed-forward maps only): ${others.slice(0, 5).join(', ')}${others.length > 5 ? ', ...' : ''}`, { names: others });
  }
  if (found.size === 0) throw new AdapterFormatError('missing_tensor', `${ADAPTER_WEIGHTS_FILE} holds no LoRA weights of this model's feed-forward maps`, {});
  for (const [t, pair] of found) {
    if (!pair.A || !pair.B) throw new AdapterFormatError('missing_tensor', `${ADAPTER_WEIGHTS_FILE} has lora_${pair.A ? 'B' : 'A'} of layer ${t.layer} ${t.map} missing`, { layer: t.layer, map: t.map });
  }

  const padded = paddedRank(peftRank);
  if (!padded) throw unsupported(`rank ${peftRank} is past memlora's largest (${MAX_MODULES} x ${Math.max(...RANKS)})`, { field: 'r', r: peftRank });
  const rank = padded.n * padded.r;
  // alpha / r is PEFT's scaling where alpha stays within the spec's bound; else B carries the scaling.
  const alpha = scaling * padded.r;
  const folded = alpha > MAX_ALPHA;
  const layers = Array.from({ length: cfg.nLayers }, (_, l) => [...found.keys()].some((t) => t.layer === l));
  const spec: AdapterSpec = { layers, n: padded.n, r: padded.r, ...(folded || alpha === padded.r ? {} : { alpha }) };
  const pairs: LoraPair[] = targets
    .filter((t) => layers[t.layer])
    .map((t) => {
      const pair = found.get(t);
      const A = new Float32Array(rank * t.inFeatures); // rows past PEFT's rank stay zero
      if (pair) A.set(pair.A!);
      const B = pair ? padColumns(pair.B!, t.outFeatures, peftRank, rank, folded ? scaling : 1) : new Float32Array(t.outFeatures * rank);
      const p = { target: t, rank, A, B };
      checkFinite(p);
      return p;
    });
  return { spec, scaling: scalingOf(spec), pairs };
}
