/**
 * A base model's injection recipe: the training settings measured to inject memory well into that
 * model, kept beside its weights as `injection.json`. The paper's defaults (lr 5e-4, the full n range)
 * were tuned for a 7B model; a 5M-parameter model wants a larger learning rate, and n·r above its
 * width adds no expressiveness (a rank-k product on a 256-wide map has rank at most 256) while it
 * multiplies the training cost. Every entry is optional; an absent file is an empty recipe, and
 * explicit settings (CLI flags, job settings) always win over it.
 *
 *     { "lr": 0.005, "epochs": 4, "nMax": 4, "evidence": "why these values" }
 */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { z } from 'zod';

export const injectionRecipeSchema = z
  .object({
    lr: z.number().positive().max(1).optional(),
    epochs: z.number().int().positive().max(1000).optional(),
    nMax: z.number().int().min(1).max(32).optional(),
    evidence: z.string().optional(),
  })
  .strict();

export type InjectionRecipe = z.infer<typeof injectionRecipeSchema>;

export const RECIPE_FILE = 'injection.json';

export class RecipeError extends Error {
  readonly code = 'bad_injection_recipe';
}

/** The recipe in `<modelPath>/injection.json`, or `{}` when the model has none. */
export function loadInjectionRecipe(modelPath: string): InjectionRecipe {
  const file = join(modelPath, RECIPE_FILE);
  if (!existsSync(file)) return {};
  let json: unknown;
  try {
    json = JSON.parse(readFileSync(file, 'utf8'));
  } catch (e) {
    throw new RecipeError(`${file}: not JSON (${e instanceof Error ? e.message : String(e)})`);
  }
  const r = injectionRecipeSchema.safeParse(json);
  if (!r.success) throw new RecipeError(`${file}: ${r.error.issues.map((i) => `${i.path.join('.') || '(root)'}: ${i.message}`).join('; ')}`);
  return r.data;
}
