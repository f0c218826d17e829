/**
 * A request's serving time as bench/sampling-options.ts last measured it (bench/results/
 * sampling-options.json: microseconds per token, plain sampling at 16 connections, times its reply
 * length): what the benches of per-request bookkeeping (metering, stored responses) compare with.
 */
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');

export function servingTimePerRequest(): { usServing: number; maxTokens: number } {
  const sampling = JSON.parse(readFileSync(join(root, 'bench', 'results', 'sampling-options.json'), 'utf8')) as {
    setup: { maxTokens: number };
    summary: Array<{ setting: string; usPerTokenWall: number }>;
  };
  const plain = sampling.summary.find((s) => s.setting === 'plain');
  if (!plain) throw new Error('bench/results/sampling-options.json has no plain setting: run npx tsx bench/sampling-options.ts');
  return { usServing: plain.usPerTokenWall * sampling.setup.maxTokens, maxTokens: sampling.setup.maxTokens };
}
