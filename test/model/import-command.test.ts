import { existsSync, readdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { saveTokenizer, trainBpe } from '../../src/model/bpe-train.js';
import { importCommand } from '../../src/model/import-command.js';
import { importCheckpoint } from '../../src/model/import.js';
import { randomWeights, tempDir, tinyGpt2, writeCheckpoint } from './fixtures.js';

const cfg = { ...tinyGpt2, vocabSize: 300 };
let out = '';
let err = '';

beforeEach(() => {
  out = '';
  err = '';
  vi.spyOn(process.stdout, 'write').mockImplementation((s) => ((out += String(s)), true));
  vi.spyOn(process.stderr, 'write').mockImplementation((s) => ((err += String(s)), true));
});
afterEach(() => vi.restoreAllMocks());

function checkpoint(opts: { shards?: number; tokenizer?: boolean; drop?: string } = {}): string {
  const dir = tempDir('src');
  const w = randomWeights(cfg, 51);
  if (opts.drop) w.delete(opts.drop);
  writeCheckpoint(dir, cfg, w, { shards: opts.shards });
  if (opts.tokenizer ?? true) saveTokenizer(dir, trainBpe(['hello world, hello there'], { vocabSize: 270 }));
  return dir;
}

describe('memlora import', () => {
  it('checks and copies a sharded checkpoint, tokenizer included, and prints a summary', async () => {
    const src = checkpoint({ shards: 2 });
    const dest = join(tempDir('dest'), 'mini');
    expect(await importCommand.run([src, '--out', dest])).toBe(0);
    expect(readdirSync(dest).sort()).toEqual([
      'config.json',
      'model-00001-of-00002.safetensors',
      'model-00002-of-00002.safetensors',
      'model.safetensors.index.json',
      'tokenizer.json',
      'tokenizer_config.json',
    ]);
    expect(importCheckpoint(dest).config).toEqual(cfg);
    expect(out).toMatch(/imported gpt2 model to .*mini/);
    expect(out).toMatch(/layers\s+2, d_model 16, heads 4, ffn 24/);
    expect(out).toMatch(/vocabulary\s+300 \(tokenizer \d+\)/);
  });

  it('fails naming the first missing tensor and copies nothing', async () => {
    const src = checkpoint({ drop: 'transformer.h.1.ln_2.bias' });
    const dest = join(tempDir('dest'), 'bad');
    expect(await importCommand.run([src, '--out', dest])).toBe(1);
    expect(err).toContain('[missing_tensor] missing tensor "transformer.h.1.ln_2.bias" (expected shape [16])');
    expect(existsSync(dest)).toBe(false);
  });

  it('requires tokenizer.json, refuses to overwrite without --force, and explains usage', async () => {
    const dest = join(tempDir('dest'), 'm');
    expect(await importCommand.run([checkpoint({ tokenizer: false }), '--out', dest])).toBe(1);
    expect(err).toContain('[missing_tokenizer]');
    const src = checkpoint();
    expect(await importCommand.run([src, '--out', dest])).toBe(0);
    expect(await importCommand.run([src, '--out', dest])).toBe(1);
    expect(err).toContain('--force');
    expect(await importCommand.run([src, '--out', dest, '--force'])).toBe(0);
    expect(readdirSync(join(dest, '..'))).toEqual(['m']);
    expect(await importCommand.run([])).toBe(2);
    expect(await importCommand.run(['--help'])).toBe(0);
    expect(out).toContain('usage: memlora import');
    rmSync(dest, { recursive: true });
  });
});
