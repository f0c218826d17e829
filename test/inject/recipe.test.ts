import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { repoRoot } from '../../src/config.js';
import { withRecipe } from '../../src/inject/jobs.js';
import { RecipeError, loadInjectionRecipe } from '../../src/inject/recipe.js';

const dirs: string[] = [];
const dirWith = (text?: string): string => {
  const d = mkdtempSync(join(tmpdir(), 'memlora-recipe-'));
  dirs.push(d);
  if (text !== undefined) writeFileSync(join(d, 'injection.json'), text);
  return d;
};
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

describe('injection recipe', () => {
  it('is empty when the model has none', () => {
    expect(loadInjectionRecipe(dirWith())).toEqual({});
  });

  it('the shipped default model has one, and it parses', () => {
    const r = loadInjectionRecipe(join(repoRoot, 'models', 'default'));
    expect(r.lr).toBeGreaterThan(0);
    expect(r.nMax).toBeGreaterThanOrEqual(1);
  });

  it('refuses bad JSON, bad values and unknown keys with a coded error naming the file', () => {
    for (const text of ['{', '{"lr": -1}', '{"nMax": 40}', '{"epochs": 1.5}', '{"learningRate": 0.1}']) {
      const d = dirWith(text);
      let err: unknown;
      try {
        loadInjectionRecipe(d);
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(RecipeError);
      expect((err as RecipeError).code).toBe('bad_injection_recipe');
      expect((err as Error).message).toContain(join(d, 'injection.json'));
    }
  });

  it('fills job settings only where they are silent', () => {
    const recipe = { lr: 5e-3, epochs: 4, nMax: 4 };
    expect(withRecipe(recipe, {})).toEqual({ nMax: 4, train: { lr: 5e-3, epochs: 4 } });
    expect(withRecipe(recipe, { nMax: 2, budget: 3, train: { lr: 1e-4 } })).toEqual({ nMax: 2, budget: 3, train: { lr: 1e-4, epochs: 4 } });
    expect(withRecipe({}, { budget: 3 })).toEqual({ budget: 3, train: {} });
  });
});
