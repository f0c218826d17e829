/** `memlora pretrain`: train the embedded default model (see run.ts). */
import { parseArgs } from 'node:util';
import type { Command } from '../cli.js';
import { defaultPretrainOptions, pretrain } from './run.js';

const USAGE = `usage: memlora pretrain [--out models/default] [--epochs N] [--max-steps N] [--threads N]
                        [--layers N] [--d-model N] [--heads N] [--ffn N] [--vocab N] [--seq-len N]
                        [--batch N] [--lr X] [--seed N] [--no-resume] [--card-only]

Trains the byte-level BPE tokenizer and the GPT-2-style default model on the MedDia pretraining
corpus (test users held out, docs/DATA.md) and writes config.json, model.safetensors,
tokenizer.json and MODEL_CARD.md to --out. Progress is printed every 20 steps; a checkpoint is kept
in .tmp/pretrain-checkpoint and a rerun resumes from it unless --no-resume. --card-only trains
nothing: it recomputes the report and model card for the weights already in --out.
`;

export const pretrainCommand: Command = {
  name: 'pretrain',
  describe: 'train the embedded default base model and its tokenizer from scratch',
  async run(argv) {
    const { values } = parseArgs({
      args: argv,
      options: {
        out: { type: 'string' },
        epochs: { type: 'string' },
        'max-steps': { type: 'string' },
        threads: { type: 'string' },
        layers: { type: 'string' },
        'd-model': { type: 'string' },
        heads: { type: 'string' },
        ffn: { type: 'string' },
        vocab: { type: 'string' },
        'seq-len': { type: 'string' },
        batch: { type: 'string' },
        lr: { type: 'string' },
        seed: { type: 'string' },
        'no-resume': { type: 'boolean' },
        'card-only': { type: 'boolean' },
        help: { type: 'boolean', short: 'h' },
      },
      strict: true,
    });
    if (values.help) {
      process.stdout.write(USAGE);
      return 0;
    }
    const num = (v: string | undefined, name: string): number | undefined => {
      if (v === undefined) return undefined;
      const n = Number(v);
      if (!Number.isFinite(n) || n <= 0) throw new Error(`--${name} must be a positive number, got ${JSON.stringify(v)}`);
      return n;
    };
    const d = defaultPretrainOptions;
    await pretrain({
      out: values.out ?? d.out,
      epochs: num(values.epochs, 'epochs') ?? d.epochs,
      maxSteps: num(values['max-steps'], 'max-steps'),
      threads: num(values.threads, 'threads') ?? d.threads,
      nLayers: num(values.layers, 'layers') ?? d.nLayers,
      dModel: num(values['d-model'], 'd-model') ?? d.dModel,
      nHeads: num(values.heads, 'heads') ?? d.nHeads,
      dFf: num(values.ffn, 'ffn') ?? d.dFf,
      vocabSize: num(values.vocab, 'vocab') ?? d.vocabSize,
      seqLen: num(values['seq-len'], 'seq-len') ?? d.seqLen,
      batchSize: num(values.batch, 'batch') ?? d.batchSize,
      lr: num(values.lr, 'lr') ?? d.lr,
      seed: num(values.seed, 'seed') ?? d.seed,
      resume: !values['no-resume'],
      cardOnly: values['card-only'],
    });
    return 0;
  },
};
