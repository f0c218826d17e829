/**
 * The adapter spec of the MiLP search space (DESIGN.md): per layer a bit (inject it or not), n parallel
 * LoRA modules of rank r on each feed-forward linear map of an injected layer. n parallel rank-r modules
 * are exactly one module of rank n*r (stack the A's, concatenate the B's), which is how they are stored
 * and fed; n = 0 or no injected layer is the vanilla model.
 */
import { z } from 'zod';

export const RANKS = [8, 16, 32, 64, 96] as const;
export type Rank = (typeof RANKS)[number];
export const MAX_MODULES = 32;

export interface AdapterSpec {
  layers: boolean[];
  n: number;
  r: Rank;
  /** LoRA alpha per module; the scaling is alpha / r. Defaults to r (scaling 1). */
  alpha?: number;
}

export const adapterSpecSchema = z
  .object({
    layers: z.array(z.boolean()).min(1).max(256),
    n: z.number().int().min(0).max(MAX_MODULES),
    r: z.number().refine((v) => (RANKS as readonly number[]).includes(v), { message: `r must be one of ${RANKS.join(', ')}` }),
    alpha: z.number().positive().max(1024).optional(),
  })
  .strict();

export class AdapterSpecError extends Error {
  constructor(
    readonly code: string,
    message: string,
    readonly details?: unknown,
  ) {
    super(message);
    this.name = 'AdapterSpecError';
  }
}

/** Parse and check a spec against a model with `nLayers` layers. */
export function parseAdapterSpec(value: unknown, nLayers: number): AdapterSpec {
  const r = adapterSpecSchema.safeParse(value);
  if (!r.success) {
    throw new AdapterSpecError('invalid_adapter_spec', `invalid adapter spec: ${r.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ')}`, r.error.issues);
  }
  if (r.data.layers.length !== nLayers) {
    throw new AdapterSpecError('layer_count', `adapter spec has ${r.data.layers.length} layer bits, the model has ${nLayers} layers`, {
      got: r.data.layers.length,
      expected: nLayers,
    });
  }
  return r.data as AdapterSpec;
}

export const isVanilla = (s: AdapterSpec): boolean => s.n === 0 || !s.layers.some(Boolean);

/** Rank of the merged module on each map: n * r. */
export const totalRank = (s: AdapterSpec): number => s.n * s.r;

export const alphaOf = (s: AdapterSpec): number => s.alpha ?? s.r;

/** The factor applied to B A x: alpha / r, the same for the merged rank-n*r module. */
export const scalingOf = (s: AdapterSpec): number => alphaOf(s) / s.r;

export const injectedLayers = (s: AdapterSpec): number[] => s.layers.flatMap((on, i) => (on ? [i] : []));

/** The configuration the paper's comparisons call the fixed default: all layers, one module, rank 8. */
export function defaultSpec(nLayers: number): AdapterSpec {
  return { layers: Array(nLayers).fill(true), n: 1, r: 8 };
}

/** A canonical string for a spec (dedup, logs, trial keys). */
export function specKey(s: AdapterSpec): string {
  if (isVanilla(s)) return 'vanilla';
  return `L${s.layers.map((b) => (b ? '1' : '0')).join('')}-n${s.n}-r${s.r}${s.alpha !== undefined ? `-a${s.alpha}` : ''}`;
}
