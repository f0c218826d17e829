/**
 * Quasi-random initial designs: a Sobol' sequence with Matoušek's random linear scrambling and a
 * random digital shift (both preserve the net property, so the first 2^m points of every coordinate
 * still fall one per interval of width 2^−m: with 8 initial points each layer bit is on exactly 4
 * times and n and r are spread over their ranges).
 *
 * Direction numbers: primitive polynomials over GF(2) are enumerated by degree (found by testing the
 * order of x, not taken from a table), with initial odd numbers m_k < 2^k drawn once from a fixed seed.
 * That gives a valid Sobol' sequence in any dimension; its 2-D projections are less tuned than
 * Joe & Kuo's published numbers, which matters little for a handful of initial points.
 */
import { Rng } from '../../util/rng.js';
import type { LoraConfig, SearchSpace } from './space.js';

const BITS = 32;
const TWO32 = 4294967296;
/** Seed of the unscrambled sequence's initial direction numbers (any fixed value will do). */
const DIRECTION_SEED = 0x50b01;

function polyMulMod(a: number, b: number, p: number, deg: number): number {
  let r = 0;
  const top = 1 << deg;
  while (b) {
    if (b & 1) r ^= a;
    b >>>= 1;
    a <<= 1;
    if (a & top) a ^= p;
  }
  return r;
}

function polyPowMod(base: number, e: number, p: number, deg: number): number {
  let r = 1;
  let b = base;
  while (e > 0) {
    if (e & 1) r = polyMulMod(r, b, p, deg);
    b = polyMulMod(b, b, p, deg);
    e = Math.floor(e / 2);
  }
  return r;
}

function primeFactors(v: number): number[] {
  const out: number[] = [];
  for (let f = 2; f * f <= v; f++) {
    if (v % f === 0) {
      out.push(f);
      while (v % f === 0) v /= f;
    }
  }
  if (v > 1) out.push(v);
  return out;
}

/** Primitive polynomials of GF(2)[x] as bit masks (bit k = coefficient of x^k), by degree then value. */
export function primitivePolynomials(count: number): Array<{ poly: number; degree: number }> {
  const out: Array<{ poly: number; degree: number }> = [];
  for (let deg = 1; out.length < count && deg <= 24; deg++) {
    const order = 2 ** deg - 1;
    const factors = primeFactors(order);
    for (let mid = 0; mid < 1 << (deg - 1) && out.length < count; mid++) {
      const p = (1 << deg) | (mid << 1) | 1;
      // x has order 2^deg − 1 modulo p exactly when p is primitive.
      if (deg === 1 || (polyPowMod(2, order, p, deg) === 1 && factors.every((f) => polyPowMod(2, order / f, p, deg) !== 1))) {
        out.push({ poly: p, degree: deg });
      }
    }
  }
  return out;
}

/** Direction numbers V_k = m_k·2^(32−k), k = 1..32, for each of `dims` coordinates. */
function directionNumbers(dims: number): Uint32Array[] {
  const out: Uint32Array[] = [];
  const rng = new Rng(DIRECTION_SEED);
  const polys = primitivePolynomials(Math.max(0, dims - 1));
  for (let j = 0; j < dims; j++) {
    const v = new Uint32Array(BITS);
    if (j === 0) {
      // The first coordinate is van der Corput's sequence.
      for (let k = 1; k <= BITS; k++) v[k - 1] = 2 ** (BITS - k);
      out.push(v);
      continue;
    }
    const { poly, degree: s } = polys[j - 1];
    const m = new Array<number>(BITS + 1).fill(0);
    for (let k = 1; k <= s && k <= BITS; k++) m[k] = k === 1 ? 1 : 2 * rng.int(2 ** (k - 1)) + 1;
    for (let k = s + 1; k <= BITS; k++) {
      // Bratley–Fox recurrence: m_k = 2a₁m_{k−1} ⊕ 4a₂m_{k−2} ⊕ … ⊕ 2^s m_{k−s} ⊕ m_{k−s}.
      let mk = m[k - s] ^ (m[k - s] * 2 ** s);
      for (let i = 1; i < s; i++) if ((poly >> (s - i)) & 1) mk ^= m[k - i] * 2 ** i;
      m[k] = mk;
    }
    for (let k = 1; k <= BITS; k++) v[k - 1] = (m[k] * 2 ** (BITS - k)) >>> 0;
    out.push(v);
  }
  return out;
}

function parity32(x: number): number {
  x ^= x >>> 16;
  x ^= x >>> 8;
  x ^= x >>> 4;
  x ^= x >>> 2;
  x ^= x >>> 1;
  return x & 1;
}

/** Applies a random unit-lower-triangular binary matrix (in digit order, most significant first). */
function scrambleMatrix(rng: Rng): Uint32Array {
  const rows = new Uint32Array(BITS);
  for (let j = 0; j < BITS; j++) {
    // Row j: the digit itself plus random more-significant digits.
    let mask = (1 << (BITS - 1 - j)) >>> 0;
    for (let i = 0; i < j; i++) if (rng.uniform() < 0.5) mask = (mask | (1 << (BITS - 1 - i))) >>> 0;
    rows[j] = mask;
  }
  return rows;
}

function applyMatrix(rows: Uint32Array, v: number): number {
  let out = 0;
  for (let j = 0; j < BITS; j++) if (parity32(rows[j] & v)) out = (out | (1 << (BITS - 1 - j))) >>> 0;
  return out >>> 0;
}

/**
 * The first `count` points of a scrambled Sobol' sequence in [0,1)^dims (each a Float64Array).
 * The same rng seed always gives the same points.
 */
export function sobolPoints(dims: number, count: number, rng: Rng): Float64Array[] {
  const dirs = directionNumbers(dims);
  const scrambled: Uint32Array[] = [];
  const shift = new Uint32Array(dims);
  for (let j = 0; j < dims; j++) {
    const rows = scrambleMatrix(rng);
    scrambled.push(dirs[j].map((v) => applyMatrix(rows, v)));
    shift[j] = rng.nextU32();
  }
  const state = new Uint32Array(dims);
  const points: Float64Array[] = [];
  for (let i = 0; i < count; i++) {
    const p = new Float64Array(dims);
    // Random bits below the 32 digits keep points off the exact grid without disturbing the strata.
    for (let j = 0; j < dims; j++) p[j] = (((state[j] ^ shift[j]) >>> 0) + rng.uniform()) / TWO32;
    points.push(p);
    // Gray-code order: the next point differs by the direction number of i's lowest zero bit.
    let c = 0;
    let t = i;
    while (t & 1) {
      t >>>= 1;
      c++;
    }
    if (c >= BITS) break;
    for (let j = 0; j < dims; j++) state[j] = (state[j] ^ scrambled[j][c]) >>> 0;
  }
  return points;
}

/**
 * `count` distinct configurations from the scrambled Sobol' sequence, skipping keys in `exclude`
 * (already evaluated) and repeats after rounding; fewer when the space runs out.
 */
export function initialDesign(space: SearchSpace, count: number, rng: Rng, exclude: ReadonlySet<string> = new Set()): LoraConfig[] {
  if (count <= 0) return [];
  if (space.dims === 0) {
    const only = space.decode([]);
    return exclude.has(space.key(only)) ? [] : [only];
  }
  const seen = new Set(exclude);
  const out: LoraConfig[] = [];
  // Draw generously: rounding maps several cube points to one configuration in small spaces.
  let want = Math.max(16, 4 * count);
  for (let attempt = 0; attempt < 6 && out.length < count; attempt++) {
    out.length = 0;
    seen.clear();
    for (const k of exclude) seen.add(k);
    const points = sobolPoints(space.dims, want, new Rng(rng.seed));
    for (const p of points) {
      const c = space.decode(p);
      const k = space.key(c);
      if (seen.has(k)) continue;
      seen.add(k);
      out.push(c);
      if (out.length === count) break;
    }
    want *= 4;
  }
  return out;
}
