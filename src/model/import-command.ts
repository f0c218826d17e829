/**
 * `memlora import <dir> [--out models/<name>]`: check a Hugging Face checkpoint folder (config,
 * every tensor's name and shape, the tokenizer) and copy it into a model folder that `serve` can use.
 * Nothing is copied unless everything checks out; files land under temporary names first.
 */
import { copyFileSync, existsSync, mkdirSync, renameSync, rmSync, statSync } from 'node:fs';
import { basename, join, resolve } from 'node:path';
import { repoRoot } from '../config.js';
import { inspectCheckpoint } from './import.js';
import { SAFETENSORS_INDEX } from './safetensors.js';
import { loadTokenizer } from './tokenizer.js';
import { parameterCount } from './weights.js';

/** Same shape as src/cli.ts's Command (kept structural so this module does not import the CLI). */
export interface ImportCommand {
  name: 'import';
  describe: string;
  run(argv: string[]): Promise<number>;
}

const USAGE = `usage: memlora import <checkpoint-dir> [--out <model-dir>] [--force]

Checks a Hugging Face checkpoint folder (config.json, model.safetensors or sharded
model-*.safetensors with model.safetensors.index.json, tokenizer.json) for a GPT-2 or Llama model
and copies it to <model-dir> (default models/<name of checkpoint-dir>). --force replaces an
existing model folder.
`;

const OPTIONAL_FILES = ['tokenizer_config.json', 'special_tokens_map.json', 'generation_config.json', 'README.md'];

interface Args {
  src: string;
  out?: string;
  force: boolean;
}

function parseArgs(argv: string[]): Args | string {
  let src: string | undefined;
  let out: string | undefined;
  let force = false;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--out') {
      out = argv[++i];
      if (!out) return '--out needs a directory';
    } else if (a.startsWith('--out=')) out = a.slice(6);
    else if (a === '--force') force = true;
    else if (a.startsWith('-')) return `unknown option ${a}`;
    else if (src === undefined) src = a;
    else return `unexpected argument ${a}`;
  }
  if (!src) return 'missing <checkpoint-dir>';
  return { src, out, force };
}

function fmtCount(n: number): string {
  if (n >= 1e9) return `${(n / 1e9).toFixed(2)}B`;
  if (n >= 1e6) return `${(n / 1e6).toFixed(2)}M`;
  if (n >= 1e3) return `${(n / 1e3).toFixed(1)}K`;
  return String(n);
}

export const importCommand: ImportCommand = {
  name: 'import',
  describe: 'check a Hugging Face GPT-2/Llama checkpoint folder and copy it into models/',
  async run(argv) {
    if (argv.includes('--help') || argv.includes('-h')) {
      process.stdout.write(USAGE);
      return 0;
    }
    const args = parseArgs(argv);
    if (typeof args === 'string') {
      process.stderr.write(`memlora import: ${args}\n\n${USAGE}`);
      return 2;
    }
    const src = resolve(args.src);
    const out = resolve(args.out ?? join(repoRoot, 'models', basename(src)));
    try {
      if (!existsSync(src) || !statSync(src).isDirectory()) throw Object.assign(new Error(`${src} is not a directory`), { code: 'not_a_directory' });
      process.stdout.write(`checking ${src}\n`);
      const { config, unused, files } = inspectCheckpoint(src);
      const tokFile = join(src, 'tokenizer.json');
      if (!existsSync(tokFile)) throw Object.assign(new Error(`no tokenizer.json in ${src}`), { code: 'missing_tokenizer' });
      const tok = loadTokenizer(src);
      if (tok.vocabSize > config.vocabSize) {
        throw Object.assign(new Error(`tokenizer has ${tok.vocabSize} ids, the model's embedding only ${config.vocabSize}`), { code: 'vocab_mismatch' });
      }
      if (resolve(out) === src) throw Object.assign(new Error('the output folder is the checkpoint folder'), { code: 'same_folder' });
      if (existsSync(out) && !args.force) throw Object.assign(new Error(`${out} exists (use --force to replace it)`), { code: 'exists' });

      const copy = [join(src, 'config.json'), tokFile, ...files];
      if (existsSync(join(src, SAFETENSORS_INDEX))) copy.push(join(src, SAFETENSORS_INDEX));
      for (const f of OPTIONAL_FILES) if (existsSync(join(src, f))) copy.push(join(src, f));
      // Build the folder beside its final place, then swap it in: a failed copy leaves nothing half-made.
      const tmp = `${out}.importing-${process.pid}`;
      rmSync(tmp, { recursive: true, force: true });
      mkdirSync(tmp, { recursive: true });
      let bytes = 0;
      for (const f of copy) {
        process.stdout.write(`  copying ${basename(f)}\n`);
        copyFileSync(f, join(tmp, basename(f)));
        bytes += statSync(f).size;
      }
      if (existsSync(out)) rmSync(out, { recursive: true, force: true });
      renameSync(tmp, out);

      const lines = [
        `imported ${config.family} model to ${out}`,
        `  parameters  ${fmtCount(parameterCount(config))}`,
        `  layers      ${config.nLayers}, d_model ${config.dModel}, heads ${config.nHeads}${config.nKvHeads !== config.nHeads ? ` (kv ${config.nKvHeads})` : ''}, ffn ${config.dFf}`,
        `  vocabulary  ${config.vocabSize} (tokenizer ${tok.vocabSize}), positions ${config.maxPositions}`,
        `  files       ${copy.length} (${(bytes / 1e6).toFixed(1)} MB)`,
      ];
      if (unused.length) lines.push(`  unused      ${unused.length} tensors not used by the model (e.g. ${unused.slice(0, 3).join(', ')})`);
      process.stdout.write(`${lines.join('\n')}\n`);
      return 0;
    } catch (e) {
      const err = e as Error & { code?: string };
      process.stderr.write(`memlora import: ${err.code ? `[${err.code}] ` : ''}${err.message}\n`);
      return 1;
    }
  },
};
