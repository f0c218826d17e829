/**
 * The MiLP search space for a model with L transformer layers (DESIGN.md, "The LoRA search space"):
 * a bit per layer (inject it or not), n ∈ 0..32 parallel LoRA modules per injected layer, and their
 * rank r ∈ {8, 16, 32, 64, 96}. n = 0 or no injected layer is the vanilla model.
 *
 * Encoding to the unit cube, one coordinate per free part, in this order:
 *   layer_l  ∈ {0, 1}          (decoded as x ≥ 0.5)
 *   n / nMax ∈ {0, 1/32, …, 1} (decoded as round(x·nMax))
 *   r        = index in the rank list / (count − 1), i.e. 8→0, 16→¼, 32→½, 64→¾, 96→1: the
 *              ordinal index rather than log2(r), so neighbouring ranks sit at equal distances.
 * Parts can be fixed (for ablations that search over layers only, n only, …): fixed parts have no
 * coordinate. Every vanilla configuration is one point, the canonical vanilla, with key "vanilla".
 */
import { type AdapterSpec, RANKS, type Rank } from '../../lora/spec.js';
import { SearchError } from './errors.js';
import type { Rng } from '../../util/rng.js';

export { RANKS, type Rank };

/** A point of the space: the adapter spec without its (fixed) alpha. */
export type LoraConfig = Omit<AdapterSpec, 'alpha'>;

export interface FixedParts {
  layers?: readonly boolean[];
  n?: number;
  r?: Rank;
}

export interface SpaceOptions {
  /** Number of transformer layers L. */
  layers: number;
  /** Largest n (default 32). */
  nMax?: number;
  /** Allowed ranks, ascending (default 8, 16, 32, 64, 96). */
  ranks?: readonly Rank[];
  /** Parts held constant (not searched). */
  fixed?: FixedParts;
}

export class SearchSpace {
  readonly numLayers: number;
  readonly nMax: number;
  readonly ranks: readonly Rank[];
  readonly fixed: Readonly<FixedParts>;
  /** Number of unit-cube coordinates. */
  readonly dims: number;
  /** A name per coordinate: layer0 … layer{L−1}, n, r (free parts only). */
  readonly dimNames: readonly string[];
  private readonly layersFree: boolean;
  private readonly nFree: boolean;
  private readonly rFree: boolean;

  constructor(opts: SpaceOptions) {
    const L = opts.layers;
    if (!Number.isInteger(L) || L < 1) throw new SearchError('bad_space', `layers must be a positive integer, got ${L}`, { layers: L });
    const nMax = opts.nMax ?? 32;
    if (!Number.isInteger(nMax) || nMax < 1) throw new SearchError('bad_space', `nMax must be a positive integer, got ${nMax}`, { nMax });
    const ranks = opts.ranks ?? RANKS;
    if (ranks.length === 0 || ranks.some((r, i) => !RANKS.includes(r) || (i > 0 && r <= ranks[i - 1]))) {
      throw new SearchError('bad_space', `ranks must be ascending values from ${RANKS.join(', ')}, got ${ranks.join(', ')}`, { ranks });
    }
    const fixed = opts.fixed ?? {};
    if (fixed.layers && fixed.layers.length !== L) throw new SearchError('bad_space', `fixed.layers has ${fixed.layers.length} entries for ${L} layers`, { fixed });
    if (fixed.n !== undefined && !(Number.isInteger(fixed.n) && fixed.n >= 0 && fixed.n <= nMax)) throw new SearchError('bad_space', `fixed.n must be an integer in 0..${nMax}, got ${fixed.n}`, { fixed });
    if (fixed.r !== undefined && !ranks.includes(fixed.r)) throw new SearchError('bad_space', `fixed.r must be one of ${ranks.join(', ')}, got ${fixed.r}`, { fixed });
    this.numLayers = L;
    this.nMax = nMax;
    this.ranks = ranks;
    this.fixed = { ...fixed, layers: fixed.layers ? [...fixed.layers] : undefined };
    this.layersFree = !fixed.layers;
    this.nFree = fixed.n === undefined;
    this.rFree = fixed.r === undefined && ranks.length > 1;
    const names: string[] = [];
    if (this.layersFree) for (let l = 0; l < L; l++) names.push(`layer${l}`);
    if (this.nFree) names.push('n');
    if (this.rFree) names.push('r');
    this.dimNames = names;
    this.dims = names.length;
  }

  /** Throws SearchError('bad_config') unless `c` is structurally a configuration of this space. */
  validate(c: LoraConfig): void {
    if (!c || !Array.isArray(c.layers) || c.layers.length !== this.numLayers || c.layers.some((b) => typeof b !== 'boolean')) {
      throw new SearchError('bad_config', `layers must be ${this.numLayers} booleans`, { config: c });
    }
    if (!Number.isInteger(c.n) || c.n < 0 || c.n > this.nMax) throw new SearchError('bad_config', `n must be an integer in 0..${this.nMax}, got ${c.n}`, { config: c });
    if (!this.ranks.includes(c.r)) throw new SearchError('bad_config', `r must be one of ${this.ranks.join(', ')}, got ${c.r}`, { config: c });
  }

  /** The canonical vanilla configuration: no module anywhere, encoded at the low corner. */
  vanilla(): LoraConfig {
    const layers = this.fixed.layers ? [...this.fixed.layers] : new Array<boolean>(this.numLayers).fill(false);
    const n = this.fixed.n ?? 0;
    return { layers, n: layers.some(Boolean) ? 0 : n, r: this.fixed.r ?? this.ranks[0] };
  }

  /** Validates, applies the fixed parts, and maps every vanilla configuration to the canonical one. */
  canonical(c: LoraConfig): LoraConfig {
    this.validate(c);
    const out: LoraConfig = {
      layers: this.fixed.layers ? [...this.fixed.layers] : [...c.layers],
      n: this.fixed.n ?? c.n,
      r: this.fixed.r ?? (this.ranks.length === 1 ? this.ranks[0] : c.r),
    };
    return this.isVanillaRaw(out) ? this.vanilla() : out;
  }

  private isVanillaRaw(c: LoraConfig): boolean {
    return c.n === 0 || !c.layers.some(Boolean);
  }

  /** n = 0 or no injected layer (after fixed parts): the base model without adapters. */
  isVanilla(c: LoraConfig): boolean {
    return this.isVanillaRaw(this.canonical(c));
  }

  /** A string that is equal for two configurations exactly when they are the same model. */
  key(c: LoraConfig): string {
    const k = this.canonical(c);
    if (this.isVanillaRaw(k)) return 'vanilla';
    return `${k.layers.map((b) => (b ? '1' : '0')).join('')}:n${k.n}:r${k.r}`;
  }

  encode(c: LoraConfig): Float64Array {
    const k = this.canonical(c);
    const x = new Float64Array(this.dims);
    let i = 0;
    if (this.layersFree) for (let l = 0; l < this.numLayers; l++) x[i++] = k.layers[l] ? 1 : 0;
    if (this.nFree) x[i++] = k.n / this.nMax;
    if (this.rFree) x[i++] = this.ranks.indexOf(k.r) / (this.ranks.length - 1);
    return x;
  }

  /** Rounds a point of the unit cube (values outside are clamped) to the canonical configuration. */
  decode(x: ArrayLike<number>): LoraConfig {
    if (x.length !== this.dims) throw new SearchError('bad_point', `point has ${x.length} coordinates, space has ${this.dims}`, { length: x.length, dims: this.dims });
    const clamp = (v: number) => (v < 0 ? 0 : v > 1 ? 1 : Number.isFinite(v) ? v : 0);
    let i = 0;
    const layers = this.layersFree ? Array.from({ length: this.numLayers }, () => clamp(x[i++]) >= 0.5) : [...(this.fixed.layers as boolean[])];
    const n = this.nFree ? Math.round(clamp(x[i++]) * this.nMax) : (this.fixed.n as number);
    const r = this.rFree ? this.ranks[Math.round(clamp(x[i++]) * (this.ranks.length - 1))] : (this.fixed.r ?? this.ranks[0]);
    return this.canonical({ layers, n, r });
  }

  /**
   * One-change neighbours for local search: a single layer flipped, n ± 1 and n ± 4, r one step up or
   * down; canonical, without duplicates or `c` itself. Vanilla's neighbours are the smallest adapters
   * (one layer with n = 1 at the smallest rank, or n = 1 when the layers are fixed).
   */
  neighbours(c: LoraConfig): LoraConfig[] {
    const k = this.canonical(c);
    const self = this.key(k);
    const out = new Map<string, LoraConfig>();
    const add = (cand: LoraConfig) => {
      const key = this.key(cand);
      if (key !== self && !out.has(key)) out.set(key, this.canonical(cand));
    };
    if (this.isVanillaRaw(k)) {
      const n = this.fixed.n && this.fixed.n > 0 ? this.fixed.n : 1;
      const r = this.fixed.r ?? this.ranks[0];
      if (this.layersFree) {
        for (let l = 0; l < this.numLayers; l++) add({ layers: k.layers.map((_, j) => j === l), n, r });
      } else if (this.nFree) {
        add({ layers: [...k.layers], n, r });
      }
      return [...out.values()];
    }
    if (this.layersFree) {
      for (let l = 0; l < this.numLayers; l++) add({ ...k, layers: k.layers.map((b, j) => (j === l ? !b : b)) });
    }
    if (this.nFree) {
      for (const step of [-4, -1, 1, 4]) {
        const n = k.n + step;
        if (n >= 0 && n <= this.nMax) add({ ...k, n });
      }
    }
    if (this.rFree) {
      const ri = this.ranks.indexOf(k.r);
      for (const step of [-1, 1]) {
        const j = ri + step;
        if (j >= 0 && j < this.ranks.length) add({ ...k, r: this.ranks[j] });
      }
    }
    return [...out.values()];
  }

  /**
   * A random configuration: uniform over the encoding (each layer on with probability ½, n and r
   * uniform) unless `layerDensity` sets the probability of a layer being on.
   */
  random(rng: Rng, layerDensity = 0.5): LoraConfig {
    const layers = this.layersFree ? Array.from({ length: this.numLayers }, () => rng.uniform() < layerDensity) : [...(this.fixed.layers as boolean[])];
    const n = this.nFree ? rng.int(this.nMax + 1) : (this.fixed.n as number);
    const r = this.rFree ? this.ranks[rng.int(this.ranks.length)] : (this.fixed.r ?? this.ranks[0]);
    return this.canonical({ layers, n, r });
  }

  /** Every distinct configuration (vanilla first, when reachable); only sensible for small spaces. */
  *enumerate(): Generator<LoraConfig> {
    const seen = new Set<string>();
    const layerSets: boolean[][] = [];
    if (this.layersFree) {
      for (let mask = 0; mask < 2 ** this.numLayers; mask++) layerSets.push(Array.from({ length: this.numLayers }, (_, l) => Math.floor(mask / 2 ** l) % 2 === 1));
    } else layerSets.push([...(this.fixed.layers as boolean[])]);
    const ns = this.nFree ? Array.from({ length: this.nMax + 1 }, (_, i) => i) : [this.fixed.n as number];
    const rs = this.rFree ? [...this.ranks] : [this.fixed.r ?? this.ranks[0]];
    for (const layers of layerSets)
      for (const n of ns)
        for (const r of rs) {
          const c = this.canonical({ layers, n, r });
          const k = this.key(c);
          if (seen.has(k)) continue;
          seen.add(k);
          yield c;
        }
  }

  /** Number of distinct models in the space (vanilla counted once); may exceed 2^53 for large L. */
  get size(): number {
    const layerSets = this.layersFree ? 2 ** this.numLayers - 1 : this.fixed.layers?.some(Boolean) ? 1 : 0;
    const ns = this.nFree ? this.nMax : (this.fixed.n ?? 0) > 0 ? 1 : 0;
    const rs = this.rFree ? this.ranks.length : 1;
    const vanillaReachable = this.layersFree || this.nFree || layerSets === 0 || ns === 0;
    return layerSets * ns * rs + (vanillaReachable ? 1 : 0);
  }

  /** A plain description, for logs and stored search records. */
  describe(): { layers: number; nMax: number; ranks: number[]; fixed: FixedParts; dims: number } {
    return { layers: this.numLayers, nMax: this.nMax, ranks: [...this.ranks], fixed: { ...this.fixed }, dims: this.dims };
  }
}

export function createSpace(opts: SpaceOptions): SearchSpace {
  return new SearchSpace(opts);
}
