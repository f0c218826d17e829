/**
 * Fresh weights for pretraining, GPT-2's recipe: normal(0, 0.02) for matrices and embeddings, the
 * residual output projections scaled by 1/sqrt(2 L), zero biases, unit norm gains.
 */
import type { ModelConfig } from '../model/config.js';
import { type Weights, expectedTensors } from '../model/weights.js';
import { Rng } from '../util/rng.js';

const RESIDUAL_OUT = /(attn\.c_proj|mlp\.c_proj|self_attn\.o_proj|mlp\.down_proj)\.weight$/;

export function initWeights(cfg: ModelConfig, seed: number, std = 0.02): Weights {
  const rng = new Rng(seed);
  const w: Weights = new Map();
  for (const { name, shape } of expectedTensors(cfg)) {
    const n = shape.reduce((a, b) => a * b, 1);
    const data = new Float32Array(n);
    if (shape.length === 1) {
      if (/(ln_\d|ln_f|layernorm|norm)\.weight$/.test(name)) data.fill(1);
    } else {
      const s = RESIDUAL_OUT.test(name) ? std / Math.sqrt(2 * cfg.nLayers) : std;
      for (let i = 0; i < n; i++) data[i] = rng.normal() * s;
    }
    w.set(name, { dtype: 'float32', dims: shape, data });
  }
  return w;
}
