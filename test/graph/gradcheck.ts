/**
 * Gradient checking for graphs: the gradient that grad() emits, run in ONNX Runtime, against central
 * finite differences of the same function. Reusable by any test that builds a graph (model stacks
 * import it).
 *
 * A function with a tensor output `out` is checked through the scalar f(x) = <out(x), R> with a fixed
 * random cotangent R (fed to grad() as its seed), so a wrong transpose or a wrong broadcast cannot hide
 * behind a uniform sum. Each parameter is checked coordinate by coordinate (all of them, or a random
 * sample for large tensors) and along random +-1 directions, which touch every coordinate at once.
 *
 * Finite differences run in float64: on the float64 graph itself, or, for ops that ONNX Runtime only
 * has in float32 (Erf, LayerNormalization), on a float64 TypeScript reference of `out`.
 *
 * Error measure: |analytic - numeric| / max(|analytic|, |numeric|, floor), with floor a fraction of the
 * parameter's largest gradient (1e-3 in float64, 1e-2 for a float32 analytic gradient) so that
 * coordinates whose true gradient is ~0 are judged on an absolute scale. Central differences with
 * eps = 1e-6 in float64 are accurate to ~1e-9 relative (truncation eps^2 f''' plus rounding 1e-16/eps);
 * a float64 analytic gradient agrees to ~1e-7 in practice. A float32 analytic gradient carries
 * ~2^-24 rounding per op, a few 1e-6 relative over these small graphs (observed <= 3e-6), and its
 * absolute error scales with the largest terms, hence the larger floor. The default tolerance, 1e-3,
 * is therefore >= 300x above honest error in both modes, while a wrong rule gives errors of order 1.
 */
import { grad, gradientPath, type VjpRule } from '../../src/graph/autodiff.js';
import { type Graph, Graph as GraphClass, type Value } from '../../src/graph/ir.js';
import { type CompiledGraph, Runner } from '../../src/graph/runner.js';
import { type AnyTypedArray, type DType, type HostTensor, elementCount } from '../../src/graph/types.js';
import { Rng } from '../../src/util/rng.js';

export type FeedSet = Record<string, HostTensor>;

export interface GradCheckSpec {
  /** Builds the function on a fresh graph; `params` are graph inputs (fed in every feed set). */
  build: (g: Graph) => { out: Value; params: Value[] };
  /** Values for every graph input; several sets (e.g. different symbolic batch sizes) share one compile. */
  feeds: FeedSet | FeedSet[];
  /** float64 reference of `out` (row-major); finite differences then differentiate it instead of the graph. */
  reference?: (feeds: FeedSet) => ArrayLike<number>;
  /** Finite-difference step (default 1e-6). */
  eps?: number;
  /** Largest accepted relative error (default 1e-3). */
  tolerance?: number;
  /** Coordinates checked per parameter (default 12); smaller tensors are checked entirely. */
  maxCoords?: number;
  /** Random directional checks per parameter (default 2). */
  directions?: number;
  seed?: number;
  /** Passed to grad(): replaces rules (for tests that a broken rule is caught). */
  rules?: Readonly<Record<string, VjpRule>>;
}

export interface ParamReport {
  name: string;
  maxRelError: number;
  worst: { where: string; analytic: number; numeric: number };
}

export interface GradCheckReport {
  maxRelError: number;
  params: ParamReport[];
  /** Op types on the differentiated path (whose rules this check exercised). */
  ops: string[];
  /** Number of analytic/numeric comparisons made. */
  checks: number;
}

let counter = 0;

function toFloat64(t: HostTensor): HostTensor {
  if (t.dtype !== 'float32') return t;
  return { dtype: 'float64', dims: [...t.dims], data: Float64Array.from(t.data as Float32Array) };
}

function dot(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) throw new Error(`gradcheck: length mismatch ${a.length} vs ${b.length}`);
  let s = 0;
  for (let i = 0; i < a.length; i++) s += a[i] * b[i];
  return s;
}

export async function gradcheck(spec: GradCheckSpec): Promise<GradCheckReport> {
  const eps = spec.eps ?? 1e-6;
  const maxCoords = spec.maxCoords ?? 12;
  const directions = spec.directions ?? 2;
  const rng = new Rng(spec.seed ?? 1234);
  const id = ++counter;

  const gf = new GraphClass(`gc${id}_fwd`);
  const fwd = spec.build(gf);
  gf.output('out', fwd.out);

  const gg = new GraphClass(`gc${id}_grad`);
  const b = spec.build(gg);
  const ops = [...new Set(gradientPath(b.out, b.params).nodes.map((n) => n.op))].sort();
  const cot = gg.input('__cot', b.out.dtype, b.out.shape);
  const grads = grad(b.out, b.params, { seed: cot, rules: spec.rules });
  grads.forEach((v, i) => gg.output(`__grad${i}`, v));
  const lowPrecision = b.params.some((p) => p.dtype !== 'float64') || b.out.dtype !== 'float64';
  if (lowPrecision && !spec.reference) {
    throw new Error('gradcheck: float32 graphs need a float64 `reference` for the finite differences');
  }
  // float32 analytic gradients carry ~1e-7 relative rounding per op: compare them above a larger floor.
  const floorFrac = lowPrecision ? 1e-2 : 1e-3;

  // One thread: these graphs are tiny, and test files run side by side on few cores. float64 graphs
  // get basic optimisation only: level "all" fuses patterns such as x*sigmoid(x) into contrib ops
  // (QuickGelu) that have float32 kernels only.
  const runner = new Runner({ intraOpThreads: 1, optimization: lowPrecision ? 'all' : 'basic' });
  const [sf, sg] = await Promise.all([runner.compile(gf.name, () => gf), runner.compile(gg.name, () => gg)]);
  const report: GradCheckReport = { maxRelError: 0, params: [], ops, checks: 0 };
  const reports = new Map<string, ParamReport>();
  try {
    for (const feeds of Array.isArray(spec.feeds) ? spec.feeds : [spec.feeds]) {
      await checkFeeds(spec, feeds, sf, sg, b.params, rng, { eps, maxCoords, directions, floorFrac }, reports, report);
    }
  } finally {
    await runner.close();
  }
  report.params = [...reports.values()];
  report.maxRelError = Math.max(0, ...report.params.map((p) => p.maxRelError));
  return report;
}

async function checkFeeds(
  spec: GradCheckSpec,
  feeds: FeedSet,
  sf: CompiledGraph,
  sg: CompiledGraph,
  params: Value[],
  rng: Rng,
  o: { eps: number; maxCoords: number; directions: number; floorFrac: number },
  reports: Map<string, ParamReport>,
  report: GradCheckReport,
): Promise<void> {
  const out = (await sf.run(feeds)).out;
  const n = elementCount(out.dims);
  const cotData = out.dtype === 'float32' ? new Float32Array(n) : new Float64Array(n);
  for (let i = 0; i < n; i++) cotData[i] = rng.normal();
  const analytic = await sg.run({ ...feeds, __cot: { dtype: out.dtype, dims: out.dims, data: cotData } });

  // The scalar being differentiated: <out(feeds'), R>, always evaluated in float64.
  const base: FeedSet = spec.reference ? Object.fromEntries(Object.entries(feeds).map(([k, t]) => [k, toFloat64(t)])) : feeds;
  const f = async (fs: FeedSet): Promise<number> => dot(spec.reference ? spec.reference(fs) : ((await sf.run(fs)).out.data as Float64Array), cotData);

  for (const [pi, p] of params.entries()) {
    const feed = base[p.name];
    if (!feed) throw new Error(`gradcheck: no feed for parameter ${p.name}`);
    const x = feed.data as Float64Array;
    const a = analytic[`__grad${pi}`].data as Float32Array | Float64Array;
    if (a.length !== x.length) throw new Error(`gradcheck: gradient of ${p.name} has ${a.length} elements, parameter ${x.length}`);
    const work = Float64Array.from(x);
    const at = (data: AnyTypedArray): FeedSet => ({ ...base, [p.name]: { dtype: feed.dtype as DType, dims: feed.dims, data } });
    let scale = 0;
    for (const v of a) scale = Math.max(scale, Math.abs(v));
    const floor = Math.max(o.floorFrac * scale, 1e-9);
    const rep = reports.get(p.name) ?? { name: p.name, maxRelError: 0, worst: { where: '-', analytic: 0, numeric: 0 } };
    reports.set(p.name, rep);
    const record = (where: string, an: number, num: number, fl: number): void => {
      const err = Math.abs(an - num) / Math.max(Math.abs(an), Math.abs(num), fl);
      report.checks++;
      if (!(err <= rep.maxRelError)) {
        rep.maxRelError = Number.isNaN(err) ? Infinity : err;
        rep.worst = { where, analytic: an, numeric: num };
      }
    };

    const coords = sample(x.length, o.maxCoords, rng);
    for (const j of coords) {
      work[j] = x[j] + o.eps;
      const fp = await f(at(work));
      work[j] = x[j] - o.eps;
      const fm = await f(at(work));
      work[j] = x[j];
      record(`[${j}]`, a[j], (fp - fm) / (2 * o.eps), floor);
    }
    for (let d = 0; d < o.directions; d++) {
      const v = Array.from({ length: x.length }, () => (rng.next() < 0.5 ? -1 : 1));
      for (let j = 0; j < x.length; j++) work[j] = x[j] + o.eps * v[j];
      const fp = await f(at(work));
      for (let j = 0; j < x.length; j++) work[j] = x[j] - o.eps * v[j];
      const fm = await f(at(work));
      work.set(x);
      record(`direction ${d}`, dot(a, v), (fp - fm) / (2 * o.eps), floor * Math.sqrt(x.length));
    }
  }
}

function sample(n: number, k: number, rng: Rng): number[] {
  const all = [...Array(n).keys()];
  if (n <= k) return all;
  for (let i = 0; i < k; i++) {
    const j = i + rng.int(n - i);
    [all[i], all[j]] = [all[j], all[i]];
  }
  return all.slice(0, k);
}

/** Run gradcheck and throw a readable error when any parameter's relative error reaches the tolerance. */
export async function expectGradcheck(spec: GradCheckSpec): Promise<GradCheckReport> {
  const r = await gradcheck(spec);
  const tol = spec.tolerance ?? 1e-3;
  const bad = r.params.filter((p) => !(p.maxRelError < tol));
  if (bad.length) {
    const lines = bad.map(
      (p) => `${p.name}: rel error ${p.maxRelError.toExponential(2)} at ${p.worst.where} (analytic ${p.worst.analytic}, numeric ${p.worst.numeric})`,
    );
    throw new Error(`gradcheck failed (tolerance ${tol}; ops ${r.ops.join(',')}):\n${lines.join('\n')}`);
  }
  return r;
}

// ---------------------------------------------------------------- random feeds

export function normal(rng: Rng, dims: number[], dtype: 'float32' | 'float64' = 'float64', scale = 1): HostTensor {
  const n = elementCount(dims);
  const data = dtype === 'float32' ? new Float32Array(n) : new Float64Array(n);
  for (let i = 0; i < n; i++) data[i] = rng.normal() * scale;
  return { dtype, dims, data };
}

export function uniform(rng: Rng, dims: number[], lo: number, hi: number, dtype: 'float32' | 'float64' = 'float64'): HostTensor {
  const n = elementCount(dims);
  const data = dtype === 'float32' ? new Float32Array(n) : new Float64Array(n);
  for (let i = 0; i < n; i++) data[i] = lo + (hi - lo) * rng.next();
  return { dtype, dims, data };
}

/** Values of magnitude in [lo, hi] with random sign: away from zero, for kinks and poles. */
export function awayFromZero(rng: Rng, dims: number[], lo: number, hi: number, dtype: 'float32' | 'float64' = 'float64'): HostTensor {
  const t = uniform(rng, dims, lo, hi, dtype);
  const d = t.data as Float64Array;
  for (let i = 0; i < d.length; i++) if (rng.next() < 0.5) d[i] = -d[i];
  return t;
}

export function int64s(dims: number[], values: number[]): HostTensor {
  return { dtype: 'int64', dims, data: BigInt64Array.from(values.map((v) => BigInt(v))) };
}

export function randomInts(rng: Rng, dims: number[], lo: number, hi: number): HostTensor {
  return int64s(dims, Array.from({ length: elementCount(dims) }, () => lo + rng.int(hi - lo)));
}
