/**
 * Import of a Hugging Face checkpoint folder: config.json plus model.safetensors (or shards with
 * model.safetensors.index.json). Names and shapes are checked from the headers before any tensor data
 * is read, so a wrong checkpoint fails in milliseconds with the first bad tensor named.
 */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { HostTensor } from '../graph/types.js';
import { type ModelConfig, ModelConfigError, parseHfConfig } from './config.js';
import { readCheckpoint, readCheckpointHeader } from './safetensors.js';
import { type Weights, WeightsError, canonicalName, checkShapes } from './weights.js';

export interface ImportedCheckpoint {
  config: ModelConfig;
  weights: Weights;
  /** Tensors in the files that the model does not use (reported, not loaded). */
  unused: string[];
  /** Checkpoint files read. */
  files: string[];
}

/** Read and parse `<dir>/config.json`. */
export function readHfConfig(dir: string): ModelConfig {
  const path = join(dir, 'config.json');
  if (!existsSync(path)) throw new ModelConfigError('missing_config', `no config.json in ${dir}`, { dir });
  let json: unknown;
  try {
    json = JSON.parse(readFileSync(path, 'utf8'));
  } catch (e) {
    throw new ModelConfigError('bad_config', `${path}: ${(e as Error).message}`, { path });
  }
  return parseHfConfig(json);
}

/**
 * Check a checkpoint folder without loading tensor data: config, every expected tensor present with
 * its shape. Returns the config, the raw->canonical name map of used tensors and the unused names.
 */
export function inspectCheckpoint(dir: string): { config: ModelConfig; rename: Map<string, string>; unused: string[]; files: string[] } {
  const config = readHfConfig(dir);
  const header = readCheckpointHeader(dir);
  const shapes = new Map<string, number[]>();
  const rename = new Map<string, string>();
  const dropped: string[] = [];
  const byCanonical = new Map<string, string>();
  for (const [raw, info] of header) {
    const name = canonicalName(config, raw);
    if (name === null) {
      dropped.push(raw);
      continue;
    }
    const prior = byCanonical.get(name);
    if (prior !== undefined) {
      throw new WeightsError('duplicate_tensor', `tensors "${prior}" and "${raw}" both name "${name}"`, { name, raw: [prior, raw] });
    }
    rename.set(raw, name);
    byCanonical.set(name, raw);
    shapes.set(name, info.shape);
  }
  const { unused } = checkShapes(config, shapes);
  const unusedSet = new Set(unused);
  for (const [raw, name] of [...rename]) if (unusedSet.has(name)) rename.delete(raw);
  const files = [...new Set([...header.values()].map((i) => i.file))].sort();
  return { config, rename, unused: [...unused, ...dropped].sort(), files };
}

function toFloat32(t: HostTensor): HostTensor {
  if (t.dtype === 'float32') return t;
  if (t.dtype === 'float64') return { dtype: 'float32', dims: t.dims, data: Float32Array.from(t.data as Float64Array) };
  throw new WeightsError('tensor_dtype', `a weight tensor is ${t.dtype}; weights must be floating point`, { dtype: t.dtype });
}

/** Import a checkpoint folder: validated config and float32 weights under canonical HF names. */
export function importCheckpoint(dir: string): ImportedCheckpoint {
  const { config, rename, unused, files } = inspectCheckpoint(dir);
  const raw = readCheckpoint(dir, (n) => rename.has(n));
  const weights: Weights = new Map();
  for (const [name, t] of raw) {
    try {
      weights.set(rename.get(name)!, toFloat32(t));
    } catch (e) {
      if (e instanceof WeightsError) throw new WeightsError(e.code, `tensor "${name}": ${e.message}`, { name, dtype: t.dtype });
      throw e;
    }
  }
  return { config, weights, unused, files };
}
