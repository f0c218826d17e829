import type { Grads, Param } from './params.js';
import { TrainError } from './errors.js';

export interface AdamWOptions {
  beta1: number;
  beta2: number;
  eps: number;
  weightDecay: number;
}

export interface AdamWState {
  t: number;
  m: Map<string, Float32Array>;
  v: Map<string, Float32Array>;
}

/** AdamW (Loshchilov & Hutter): Adam moments with weight decay decoupled from the gradient. */
export class AdamW {
  private t = 0;
  private readonly m = new Map<string, Float32Array>();
  private readonly v = new Map<string, Float32Array>();

  constructor(
    private readonly params: Param[],
    private readonly opts: AdamWOptions,
  ) {
    for (const p of params) {
      this.m.set(p.name, new Float32Array(p.data.length));
      this.v.set(p.name, new Float32Array(p.data.length));
    }
  }

  step(grads: Grads, lr: number): void {
    const { beta1, beta2, eps, weightDecay } = this.opts;
    this.t++;
    const bc1 = 1 - beta1 ** this.t;
    const bc2 = 1 - beta2 ** this.t;
    for (const p of this.params) {
      const g = grads.get(p.name);
      if (!g) throw new TrainError('missing_grad', `no gradient for parameter ${p.name}`, { param: p.name });
      if (g.length !== p.data.length) {
        throw new TrainError('grad_size', `gradient for ${p.name} has ${g.length} elements, parameter ${p.data.length}`);
      }
      const m = this.m.get(p.name)!;
      const v = this.v.get(p.name)!;
      const w = p.data;
      const decay = p.decay ? 1 - lr * weightDecay : 1;
      const stepSize = lr / bc1;
      const inv2 = 1 / bc2;
      for (let i = 0; i < w.length; i++) {
        const gi = g[i];
        const mi = beta1 * m[i] + (1 - beta1) * gi;
        const vi = beta2 * v[i] + (1 - beta2) * gi * gi;
        m[i] = mi;
        v[i] = vi;
        w[i] = w[i] * decay - (stepSize * mi) / (Math.sqrt(vi * inv2) + eps);
      }
    }
  }

  state(): AdamWState {
    return {
      t: this.t,
      m: new Map([...this.m].map(([k, a]) => [k, a.slice()])),
      v: new Map([...this.v].map(([k, a]) => [k, a.slice()])),
    };
  }

  load(s: AdamWState): void {
    this.t = s.t;
    for (const [k, a] of s.m) this.m.get(k)?.set(a);
    for (const [k, a] of s.v) this.v.get(k)?.set(a);
  }
}
