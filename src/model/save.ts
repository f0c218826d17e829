/**
 * Writing a model folder in Hugging Face layout (config.json + model.safetensors under canonical
 * names), the inverse of importCheckpoint: pretraining saves the default model through it, and
 * transformers can load the result (GPT2LMHeadModel / LlamaForCausalLM).
 */
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { type ModelConfig, toHfConfig } from './config.js';
import { SAFETENSORS_FILE, writeFileAtomic, writeSafetensors } from './safetensors.js';
import { type Weights, expectedTensors, validateWeights } from './weights.js';

/** Save config.json and model.safetensors (only the tensors the config uses; each file atomically). */
export function saveCheckpoint(dir: string, config: ModelConfig, weights: Weights, metadata: Record<string, string> = {}): void {
  validateWeights(config, weights);
  mkdirSync(dir, { recursive: true });
  const tensors = new Map(expectedTensors(config).map((t) => [t.name, weights.get(t.name)!]));
  writeSafetensors(join(dir, SAFETENSORS_FILE), tensors, { format: 'pt', ...metadata });
  writeFileAtomic(join(dir, 'config.json'), new TextEncoder().encode(`${JSON.stringify(toHfConfig(config), null, 2)}\n`));
}
