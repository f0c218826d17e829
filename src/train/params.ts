/** Trainable parameters: named float32 buffers updated in place by the optimiser. */
export interface Param {
  name: string;
  data: Float32Array;
  dims: number[];
  /** Whether AdamW's decoupled weight decay applies (not to biases, norms, or embeddings by choice). */
  decay: boolean;
}

export type Grads = Map<string, Float32Array>;

export function cloneParams(params: Param[]): Map<string, Float32Array> {
  return new Map(params.map((p) => [p.name, p.data.slice()]));
}

export function restoreParams(params: Param[], saved: Map<string, Float32Array>): void {
  for (const p of params) {
    const s = saved.get(p.name);
    if (s) p.data.set(s);
  }
}

/** Global L2 norm of all gradients. */
export function globalNorm(grads: Grads): number {
  let sum = 0;
  for (const g of grads.values()) for (let i = 0; i < g.length; i++) sum += g[i] * g[i];
  return Math.sqrt(sum);
}

/** Scale gradients in place so that their global norm is at most maxNorm; returns the norm before. */
export function clipGradients(grads: Grads, maxNorm: number): number {
  const norm = globalNorm(grads);
  if (maxNorm > 0 && norm > maxNorm) {
    const s = maxNorm / (norm + 1e-6);
    for (const g of grads.values()) for (let i = 0; i < g.length; i++) g[i] *= s;
  }
  return norm;
}
