/**
 * An independent reference forward pass for tests: plain loops in float64, one sequence at a time,
 * written from the architectures' definitions (HF GPT2LMHeadModel / LlamaForCausalLM, llama2.c's
 * run.c for interleaved RoPE), sharing nothing with the graph builders but the config type.
 */
import type { HostTensor } from '../../src/graph/types.js';
import type { ModelConfig } from '../../src/model/config.js';

export interface RefLora {
  scale: number;
  /** key `${layer}.${map}` -> A [rank, in], B [out, rank] */
  pairs: Map<string, { rank: number; A: Float32Array; B: Float32Array }>;
}

type W = Map<string, HostTensor>;

function get(w: W, name: string): Float32Array {
  const t = w.get(name);
  if (!t) throw new Error(`reference: no weight ${name}`);
  return t.data as Float32Array;
}

/** y = x W for W stored [in, out]. */
function mulInOut(x: Float64Array, w: Float32Array, out: number, bias?: Float32Array): Float64Array {
  const n = x.length;
  const y = new Float64Array(out);
  for (let o = 0; o < out; o++) {
    let s = bias ? bias[o] : 0;
    for (let i = 0; i < n; i++) s += x[i] * w[i * out + o];
    y[o] = s;
  }
  return y;
}

/** y = W x for W stored [out, in]. */
function mulOutIn(x: Float64Array, w: Float32Array, out: number): Float64Array {
  const n = x.length;
  const y = new Float64Array(out);
  for (let o = 0; o < out; o++) {
    let s = 0;
    for (let i = 0; i < n; i++) s += w[o * n + i] * x[i];
    y[o] = s;
  }
  return y;
}

function addLora(y: Float64Array, x: Float64Array, lora: RefLora | undefined, key: string): Float64Array {
  const p = lora?.pairs.get(key);
  if (!p) return y;
  const n = x.length;
  const mid = new Float64Array(p.rank);
  for (let r = 0; r < p.rank; r++) {
    let s = 0;
    for (let i = 0; i < n; i++) s += p.A[r * n + i] * x[i];
    mid[r] = s;
  }
  for (let o = 0; o < y.length; o++) {
    let s = 0;
    for (let r = 0; r < p.rank; r++) s += p.B[o * p.rank + r] * mid[r];
    y[o] += lora!.scale * s;
  }
  return y;
}

function layerNorm(x: Float64Array, g: Float32Array, b: Float32Array, eps: number): Float64Array {
  let mean = 0;
  for (const v of x) mean += v;
  mean /= x.length;
  let varc = 0;
  for (const v of x) varc += (v - mean) ** 2;
  varc /= x.length;
  const inv = 1 / Math.sqrt(varc + eps);
  return x.map((v, i) => (v - mean) * inv * g[i] + b[i]);
}

function rmsNorm(x: Float64Array, g: Float32Array, eps: number): Float64Array {
  let ms = 0;
  for (const v of x) ms += v * v;
  const inv = 1 / Math.sqrt(ms / x.length + eps);
  return x.map((v, i) => v * inv * g[i]);
}

function act(kind: ModelConfig['activation'], v: number): number {
  if (kind === 'silu') return v / (1 + Math.exp(-v));
  if (kind === 'gelu_tanh') return 0.5 * v * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * (v + 0.044715 * v ** 3)));
  return 0.5 * v * (1 + erf(v / Math.SQRT2));
}

/** Abramowitz-Stegun 7.1.26 is too coarse for 1e-4 tests; use a series / continued fraction instead. */
function erf(x: number): number {
  const s = Math.sign(x);
  const a = Math.abs(x);
  if (a < 3) {
    let sum = 0;
    let term = a;
    for (let n = 0; n < 100; n++) {
      sum += term / (2 * n + 1);
      term *= (-a * a) / (n + 1);
    }
    return (s * 2 * sum) / Math.sqrt(Math.PI);
  }
  return s * (1 - Math.exp(-a * a) / (a * Math.sqrt(Math.PI)));
}

/** Causal attention of one sequence; q [T][H*Dh], k/v [T][Hkv*Dh]. */
function attention(cfg: ModelConfig, q: Float64Array[], k: Float64Array[], v: Float64Array[]): Float64Array[] {
  const { nHeads: h, nKvHeads: hkv, headDim: dh } = cfg;
  const group = h / hkv;
  const out: Float64Array[] = [];
  for (let t = 0; t < q.length; t++) {
    const o = new Float64Array(h * dh);
    for (let hh = 0; hh < h; hh++) {
      const kh = Math.floor(hh / group);
      const scores: number[] = [];
      for (let u = 0; u <= t; u++) {
        let s = 0;
        for (let i = 0; i < dh; i++) s += q[t][hh * dh + i] * k[u][kh * dh + i];
        scores.push(s / Math.sqrt(dh));
      }
      const m = Math.max(...scores);
      const e = scores.map((s) => Math.exp(s - m));
      const z = e.reduce((a, b) => a + b, 0);
      for (let u = 0; u <= t; u++) for (let i = 0; i < dh; i++) o[hh * dh + i] += (e[u] / z) * v[u][kh * dh + i];
    }
    out.push(o);
  }
  return out;
}

function rope(cfg: ModelConfig, x: Float64Array, heads: number, pos: number): Float64Array {
  const dh = cfg.headDim;
  const y = Float64Array.from(x);
  for (let hh = 0; hh < heads; hh++) {
    for (let i = 0; i < dh / 2; i++) {
      const ang = pos / cfg.ropeTheta ** ((2 * i) / dh);
      const [a, b] = cfg.ropeStyle === 'half' ? [hh * dh + i, hh * dh + i + dh / 2] : [hh * dh + 2 * i, hh * dh + 2 * i + 1];
      y[a] = x[a] * Math.cos(ang) - x[b] * Math.sin(ang);
      y[b] = x[b] * Math.cos(ang) + x[a] * Math.sin(ang);
    }
  }
  return y;
}

/** Logits [T][V] of one sequence (positions 0..T-1). */
export function referenceLogits(cfg: ModelConfig, w: W, ids: readonly number[], lora?: RefLora): Float64Array[] {
  const { dModel: d, dFf: f, vocabSize: vocab } = cfg;
  let xs: Float64Array[];
  const head = cfg.tieEmbeddings ? get(w, cfg.family === 'gpt2' ? 'transformer.wte.weight' : 'model.embed_tokens.weight') : get(w, 'lm_head.weight');
  if (cfg.family === 'gpt2') {
    const wte = get(w, 'transformer.wte.weight');
    const wpe = get(w, 'transformer.wpe.weight');
    xs = ids.map((id, t) => Float64Array.from({ length: d }, (_, i) => wte[id * d + i] + wpe[t * d + i]));
    for (let l = 0; l < cfg.nLayers; l++) {
      const p = (n: string): Float32Array => get(w, `transformer.h.${l}.${n}`);
      const h1 = xs.map((x) => layerNorm(x, p('ln_1.weight'), p('ln_1.bias'), cfg.normEps));
      const qkv = h1.map((x) => mulInOut(x, p('attn.c_attn.weight'), 3 * d, p('attn.c_attn.bias')));
      const att = attention(
        cfg,
        qkv.map((r) => r.slice(0, d)),
        qkv.map((r) => r.slice(d, 2 * d)),
        qkv.map((r) => r.slice(2 * d)),
      );
      xs = xs.map((x, t) => {
        const o = mulInOut(att[t], p('attn.c_proj.weight'), d, p('attn.c_proj.bias'));
        return x.map((v, i) => v + o[i]);
      });
      xs = xs.map((x) => {
        const h2 = layerNorm(x, p('ln_2.weight'), p('ln_2.bias'), cfg.normEps);
        const fc = addLora(mulInOut(h2, p('mlp.c_fc.weight'), f, p('mlp.c_fc.bias')), h2, lora, `${l}.mlp.c_fc`).map((v) => act(cfg.activation, v));
        const pr = addLora(mulInOut(fc, p('mlp.c_proj.weight'), d, p('mlp.c_proj.bias')), fc, lora, `${l}.mlp.c_proj`);
        return x.map((v, i) => v + pr[i]);
      });
    }
    xs = xs.map((x) => layerNorm(x, get(w, 'transformer.ln_f.weight'), get(w, 'transformer.ln_f.bias'), cfg.normEps));
  } else {
    const emb = get(w, 'model.embed_tokens.weight');
    const { nHeads: h, nKvHeads: hkv, headDim: dh } = cfg;
    xs = ids.map((id) => Float64Array.from({ length: d }, (_, i) => emb[id * d + i]));
    for (let l = 0; l < cfg.nLayers; l++) {
      const p = (n: string): Float32Array => get(w, `model.layers.${l}.${n}`);
      const h1 = xs.map((x) => rmsNorm(x, p('input_layernorm.weight'), cfg.normEps));
      const q = h1.map((x, t) => rope(cfg, mulOutIn(x, p('self_attn.q_proj.weight'), h * dh), h, t));
      const k = h1.map((x, t) => rope(cfg, mulOutIn(x, p('self_attn.k_proj.weight'), hkv * dh), hkv, t));
      const v = h1.map((x) => mulOutIn(x, p('self_attn.v_proj.weight'), hkv * dh));
      const att = attention(cfg, q, k, v);
      xs = xs.map((x, t) => {
        const o = mulOutIn(att[t], p('self_attn.o_proj.weight'), d);
        return x.map((val, i) => val + o[i]);
      });
      xs = xs.map((x) => {
        const h2 = rmsNorm(x, p('post_attention_layernorm.weight'), cfg.normEps);
        const gate = addLora(mulOutIn(h2, p('mlp.gate_proj.weight'), f), h2, lora, `${l}.mlp.gate_proj`);
        const up = addLora(mulOutIn(h2, p('mlp.up_proj.weight'), f), h2, lora, `${l}.mlp.up_proj`);
        const m = gate.map((g, i) => act('silu', g) * up[i]);
        const down = addLora(mulOutIn(m, p('mlp.down_proj.weight'), d), m, lora, `${l}.mlp.down_proj`);
        return x.map((val, i) => val + down[i]);
      });
    }
    xs = xs.map((x) => rmsNorm(x, get(w, 'model.norm.weight'), cfg.normEps));
  }
  return xs.map((x) => mulOutIn(x, head, vocab));
}
