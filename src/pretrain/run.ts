/**
 * `memlora pretrain`: the embedded default model, end to end on this machine. A byte-level BPE
 * tokenizer is trained on the pretraining corpus (MedDia dialogues of the non-test users and the
 * unlinked profiles, see docs/DATA.md), a GPT-2-style model is trained on all its parameters with
 * our autodiff and the one trainer, and the result is written in Hugging Face layout with a model
 * card (recipe, data, held-out loss against a unigram baseline, sample replies).
 */
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { grad } from '../graph/autodiff.js';
import { Runner } from '../graph/runner.js';
import type { HostTensor } from '../graph/types.js';
import { loadMedDia } from '../eval/meddia.js';
import { MASKED } from '../model/batch.js';
import { buildGraph, sessionKey, weightInputs } from '../model/builder.js';
import { saveTokenizer, trainBpe } from '../model/bpe-train.js';
import { encodeChat, stopTokenIds } from '../model/chat-format.js';
import { type ModelConfig, toHfConfig, validateConfig } from '../model/config.js';
import { generate } from '../model/generate.js';
import { Model } from '../model/model.js';
import { writeSafetensors } from '../model/safetensors.js';
import { loadTokenizer } from '../model/tokenizer.js';
import { parameterCount } from '../model/weights.js';
import type { Param } from '../train/params.js';
import { type TrainBatch, type TrainResult, type TrainerOptions, train } from '../train/trainer.js';
import { importCheckpoint } from '../model/import.js';
import { type Corpus, type Document, buildCorpus, isHeldOut, unigramCrossEntropy } from './corpus.js';
import { loadTrainerState, saveTrainerState } from './checkpoint.js';
import { initWeights } from './init.js';
import { withDefaults } from '../util/options.js';

export interface PretrainOptions {
  out: string;
  checkpointDir: string;
  vocabSize: number;
  dModel: number;
  nLayers: number;
  nHeads: number;
  dFf: number;
  maxPositions: number;
  seqLen: number;
  batchSize: number;
  epochs: number;
  maxSteps?: number;
  lr: number;
  warmupFrac: number;
  minLrFrac: number;
  weightDecay: number;
  patience: number;
  evalEvery: number;
  heldOutFraction: number;
  seed: number;
  threads: number;
  resume: boolean;
  /** Limit the corpus to this many documents (smoke tests). */
  maxDocuments?: number;
  /**
   * Do not train: take the weights already in `out` and recompute the report and model card
   * (held-out loss, unigram baseline, greedy samples).
   */
  cardOnly?: boolean;
  log: (line: string) => void;
}

export const defaultPretrainOptions: PretrainOptions = {
  out: 'models/default',
  checkpointDir: '.tmp/pretrain-checkpoint',
  vocabSize: 2048,
  dModel: 256,
  nLayers: 6,
  nHeads: 4,
  dFf: 1024,
  maxPositions: 512,
  seqLen: 256,
  batchSize: 8,
  epochs: 12,
  lr: 1e-3,
  warmupFrac: 0.03,
  minLrFrac: 0.1,
  weightDecay: 0.1,
  patience: 2,
  evalEvery: 0,
  heldOutFraction: 0.05,
  seed: 1,
  threads: 0,
  resume: true,
  log: (line) => console.log(line),
};

/**
 * The GPT-2 configuration `pretrain` builds (the default model's shape, from `o`) for a tokenizer's
 * vocabulary: also what benches use to stand in for models/default with random weights.
 */
export function defaultModelConfig(
  tokenizer: { vocabSize: number; bosId: number; eosId: number },
  o: Pick<PretrainOptions, 'dModel' | 'nLayers' | 'nHeads' | 'dFf' | 'maxPositions'> = defaultPretrainOptions,
): ModelConfig {
  return validateConfig({
    family: 'gpt2',
    vocabSize: tokenizer.vocabSize,
    dModel: o.dModel,
    nLayers: o.nLayers,
    nHeads: o.nHeads,
    nKvHeads: o.nHeads,
    headDim: o.dModel / o.nHeads,
    dFf: o.dFf,
    maxPositions: o.maxPositions,
    normEps: 1e-5,
    ropeTheta: 10000,
    ropeStyle: 'half',
    tieEmbeddings: true,
    activation: 'gelu_tanh',
    bosId: tokenizer.bosId,
    eosId: tokenizer.eosId,
    chatTemplate: 'memlora',
  });
}

interface PreviousRun {
  steps: number;
  stopReason?: TrainResult['stopReason'];
  history: TrainResult['history'];
  elapsedMs: number;
}

export interface PretrainReport {
  config: ModelConfig;
  parameters: number;
  trainTokens: number;
  heldOutTokens: number;
  heldOutLoss: number;
  unigramLoss: number;
  reduction: number;
  steps: number;
  elapsedMs: number;
  samples: { prompt: string; reply: string }[];
}

function causalBias(seq: number): Float32Array {
  const bias = new Float32Array(seq * seq);
  for (let q = 0; q < seq; q++) bias.fill(MASKED, q * seq + q + 1, (q + 1) * seq);
  return bias;
}

/** Train feeds for a set of full blocks: inputs are block[0..T), labels block[1..T]. */
function blockFeeds(blocks: readonly Int32Array[], seq: number, bias: Float32Array, positions: BigInt64Array): Record<string, HostTensor> {
  const b = blocks.length;
  const ids = new BigInt64Array(b * seq);
  const labels = new BigInt64Array(b * seq);
  blocks.forEach((blk, r) => {
    for (let t = 0; t < seq; t++) {
      ids[r * seq + t] = BigInt(blk[t]);
      labels[r * seq + t] = BigInt(blk[t + 1]);
    }
  });
  const fullBias = new Float32Array(b * seq * seq);
  const fullPos = new BigInt64Array(b * seq);
  for (let r = 0; r < b; r++) {
    fullBias.set(bias, r * seq * seq);
    fullPos.set(positions, r * seq);
  }
  return {
    input_ids: { dtype: 'int64', dims: [b, seq], data: ids },
    labels: { dtype: 'int64', dims: [b, seq], data: labels },
    positions: { dtype: 'int64', dims: [b, seq], data: fullPos },
    attn_bias: { dtype: 'float32', dims: [b, 1, seq, seq], data: fullBias },
  };
}

export async function pretrain(options: Partial<PretrainOptions> = {}): Promise<PretrainReport> {
  const o: PretrainOptions = withDefaults(defaultPretrainOptions, options);
  const log = o.log;
  const t0 = performance.now();

  // Data: the pretraining corpus never contains a test user's dialogue (docs/DATA.md).
  const med = loadMedDia();
  let docs: Document[] = med.pretrainDocuments('memlora').map((d) => ({ id: d.id, text: d.text }));
  if (o.maxDocuments) docs = docs.slice(0, o.maxDocuments);
  log(`pretrain: ${docs.length} documents (${med.pretrainUserIds.length} pretraining users' dialogues + profiles), ${med.testUserIds.length} test users held out`);

  // Tokenizer, trained on the training documents only.
  const heldOutProbe = buildCorpusSplitIds(docs, o);
  if (!o.cardOnly) {
    const bpe = trainBpe(
      docs.filter((d) => !heldOutProbe.has(d.id)).map((d) => d.text),
      { vocabSize: o.vocabSize },
    );
    mkdirSync(o.out, { recursive: true });
    saveTokenizer(o.out, bpe, { modelMaxLength: o.maxPositions, chatTemplate: 'memlora' });
  }
  const tokenizer = loadTokenizer(o.out);
  log(`pretrain: tokenizer ${tokenizer.vocabSize} ids (byte-level BPE)`);

  const corpus: Corpus = buildCorpus(docs, tokenizer, { seqLen: o.seqLen, heldOutFraction: o.heldOutFraction, seed: o.seed });
  log(
    `pretrain: ${corpus.train.tokens} training tokens in ${corpus.train.blocks.length} blocks of ${o.seqLen}, ` +
      `${corpus.heldOut.tokens} held-out tokens (${corpus.heldOutDocumentIds.length} documents) in ${corpus.heldOut.blocks.length} blocks`,
  );

  const config = defaultModelConfig(tokenizer, o);
  const previous = o.cardOnly ? (JSON.parse(readFileSync(join(o.out, 'pretrain-report.json'), 'utf8')) as PreviousRun) : null;
  const weights = previous ? importCheckpoint(o.out).weights : initWeights(config, o.seed);
  log(`pretrain: GPT-2 style, d_model ${config.dModel}, ${config.nLayers} layers, ${config.nHeads} heads, FFN ${config.dFf}, ${parameterCount(config)} parameters`);

  const runner = new Runner({ intraOpThreads: o.threads });
  const model = new Model(config, weights, { runner });
  const trainSpec = { kind: 'train' as const };
  // Compiled on first use (card-only runs never train).
  const stepGraph = () => runner.compile(`${sessionKey(config, trainSpec)}#grad-all`, () => {
    const g = buildGraph(config, trainSpec);
    const params = weightInputs(g);
    const loss = g.outputs.find((x) => x.name === 'loss')!.value;
    grad(loss, params).forEach((gv, i) => g.output(`grad.${params[i].name}`, gv));
    return g;
  });
  const params: Param[] = [...weights].map(([name, t]) => ({ name, data: t.data as Float32Array, dims: t.dims, decay: t.dims.length >= 2 }));
  const gradNames = params.map((p) => `grad.${p.name}`);
  const baseFeeds = model.baseFeeds();
  const bias = causalBias(o.seqLen);
  const positions = BigInt64Array.from({ length: o.seqLen }, (_, i) => BigInt(i));

  const batchesOf = (blocks: readonly Int32Array[], order: number[]): TrainBatch[] => {
    const out: TrainBatch[] = [];
    for (let i = 0; i + o.batchSize <= order.length; i += o.batchSize) {
      const rows = order.slice(i, i + o.batchSize).map((k) => blocks[k]);
      out.push({ feeds: blockFeeds(rows, o.seqLen, bias, positions), tokens: rows.length * o.seqLen });
    }
    return out;
  };
  const heldOutBatches = batchesOf(corpus.heldOut.blocks, [...corpus.heldOut.blocks.keys()]);
  const heldOutLoss = async (): Promise<number> => {
    let sum = 0;
    let n = 0;
    for (const b of heldOutBatches) {
      const out = await model.run(trainSpec, b.feeds, ['loss']);
      sum += (out.loss.data as Float32Array)[0] * b.tokens;
      n += b.tokens;
    }
    return sum / Math.max(1, n);
  };

  const resume = o.resume && !previous ? loadTrainerState(o.checkpointDir) : null;
  if (resume) log(`pretrain: resuming from ${o.checkpointDir} at step ${resume.state.step}`);
  const trainerOptions: Partial<TrainerOptions> = {
    lr: o.lr,
    warmupFrac: o.warmupFrac,
    schedule: 'cosine',
    minLrFrac: o.minLrFrac,
    weightDecay: o.weightDecay,
    clipNorm: 1,
    epochs: o.epochs,
    maxSteps: o.maxSteps,
    evalEvery: o.evalEvery,
    patience: o.patience,
    seed: o.seed,
    progressEvery: 20,
    resume: resume?.state,
    checkpointEvery: 200,
    onCheckpoint: (s) => saveTrainerState(o.checkpointDir, s),
    onProgress: (p) => {
      const val = p.valLoss !== undefined ? ` | held-out ${p.valLoss.toFixed(4)} (best ${p.bestValLoss?.toFixed(4)})` : '';
      log(
        `pretrain: step ${p.step}/${p.totalSteps} epoch ${p.epoch + 1} | loss ${p.smoothLoss.toFixed(4)} | lr ${p.lr.toExponential(2)} | ` +
          `|g| ${p.gradNorm.toFixed(2)} | ${Math.round(p.tokensPerSec)} tok/s | eta ${Math.round(p.etaMs / 60000)} min${val}`,
      );
    },
  };
  const result: Pick<TrainResult, 'steps' | 'stopReason' | 'history' | 'elapsedMs'> = previous
    ? { steps: previous.steps, stopReason: previous.stopReason ?? 'early_stopped', history: previous.history, elapsedMs: previous.elapsedMs }
    : await train(
    {
      params,
      batches: (_epoch, rng) => batchesOf(corpus.train.blocks, rng.shuffle([...corpus.train.blocks.keys()])),
      step: async (batch) => {
        const out = await (await stepGraph()).run([batch.feeds, baseFeeds], ['loss', ...gradNames]);
        const grads = new Map(params.map((p) => [p.name, out[`grad.${p.name}`].data as Float32Array]));
        return { loss: (out.loss.data as Float32Array)[0], grads };
      },
      evaluate: heldOutLoss,
    },
    trainerOptions,
  );

  const finalHeldOut = await heldOutLoss();
  const unigram = unigramCrossEntropy(corpus.train, corpus.heldOut, tokenizer.vocabSize);
  const reduction = 1 - finalHeldOut / unigram;
  log(`pretrain: held-out cross-entropy ${finalHeldOut.toFixed(4)} nats/token vs unigram ${unigram.toFixed(4)} (${(100 * reduction).toFixed(1)}% lower)`);

  // Sample replies to the first patient message of three held-out (test) users.
  const stops = stopTokenIds(tokenizer, 'memlora');
  const prompts = med.testUserIds.slice(0, 3).map((id) => med.user(id)!.conversations[0].turns[0].patient);
  const results = await generate(
    model,
    prompts.map((p) => ({
      prompt: encodeChat(tokenizer, [{ role: 'user', content: p }], { addGenerationPrompt: true }),
      maxTokens: 96,
      stopTokenIds: stops,
      sampling: { temperature: 0 },
    })),
    { tokenizer },
  );
  const samples = prompts.map((prompt, i) => ({ prompt, reply: results[i].text.trim() }));
  for (const s of samples) log(`pretrain: sample | patient: ${s.prompt}\n          | model: ${s.reply}`);

  if (!previous) {
    writeSafetensors(join(o.out, 'model.safetensors'), weights, { format: 'pt', producer: 'memlora pretrain' });
    writeFileSync(join(o.out, 'config.json'), JSON.stringify(toHfConfig(config), null, 2) + '\n');
  }
  const report: PretrainReport = {
    config,
    parameters: parameterCount(config),
    trainTokens: corpus.train.tokens,
    heldOutTokens: corpus.heldOut.tokens,
    heldOutLoss: finalHeldOut,
    unigramLoss: unigram,
    reduction,
    steps: result.steps,
    elapsedMs: previous ? previous.elapsedMs : performance.now() - t0,
    samples,
  };
  writeFileSync(join(o.out, 'pretrain-report.json'), JSON.stringify({ ...report, stopReason: result.stopReason, history: result.history, options: { ...o, log: undefined } }, null, 2) + '\n');
  writeFileSync(join(o.out, 'MODEL_CARD.md'), modelCard(report, o, corpus, result.stopReason));
  await runner.close();
  return report;
}

function buildCorpusSplitIds(docs: readonly Document[], o: PretrainOptions): Set<string> {
  // Same rule as buildCorpus, applied before the tokenizer exists.
  return new Set(docs.filter((d) => isHeldOutDoc(d.id, o)).map((d) => d.id));
}

const isHeldOutDoc = (id: string, o: PretrainOptions): boolean => isHeldOut(id, o.heldOutFraction, o.seed);

function modelCard(r: PretrainReport, o: PretrainOptions, c: Corpus, stop: string): string {
  const c2 = r.config;
  return `# memlora default model

A small GPT-2-style dialogue model trained from scratch by \`memlora pretrain\` on this repository's
own stack: graphs built in TypeScript, gradients from our autodiff, ONNX Runtime on CPU, the one
trainer (AdamW). It is the shared base model that \`npm start\` serves and that users' adapters sit on.

## Architecture
GPT-2 family: learned positions, pre-LayerNorm blocks, GELU (tanh) MLP, multi-head attention, tied
embeddings. d_model ${c2.dModel}, ${c2.nLayers} layers, ${c2.nHeads} heads of ${c2.headDim}, FFN ${c2.dFf},
${c2.maxPositions} positions, vocabulary ${c2.vocabSize}. ${r.parameters.toLocaleString('en-US')} parameters (float32).

## Tokenizer
Byte-level BPE trained by us (\`src/model/bpe-train.ts\`) on the training documents: ${c2.vocabSize} ids
(5 special tokens, 256 bytes, merges), so no input is ever unknown. Chat template \`memlora\`:
\`<|system|>…<|end|><|user|>…<|end|><|assistant|>…<|end|>\`.

## Data
The pretraining corpus of \`docs/DATA.md\`: the MedDia dialogues of the 48 pretraining users and the
unlinked patient profiles (MIT licence). The 16 evaluation test users are excluded entirely.
${Math.round(o.heldOutFraction * 100)}% of the documents (seeded hash of the document id) are held out:
${c.train.tokens.toLocaleString('en-US')} training tokens, ${c.heldOut.tokens.toLocaleString('en-US')} held-out tokens, blocks of ${o.seqLen}.

## Recipe
All parameters trained; AdamW lr ${o.lr}, betas (0.9, 0.999), weight decay ${o.weightDecay} on matrices,
${o.warmupFrac * 100}% linear warm-up then cosine decay to ${o.minLrFrac * 100}% of the peak, gradient
clipping at 1.0, batch ${o.batchSize} x ${o.seqLen} tokens, up to ${o.epochs} epochs with early stopping
on held-out loss (patience ${o.patience} evaluations; best weights kept). Seed ${o.seed}.
Stopped: ${stop} after ${r.steps} steps, ${(r.elapsedMs / 60000).toFixed(1)} minutes on this machine.

Reproduce: \`npx tsx src/cli.ts pretrain\` (writes this folder).

## Held-out cross-entropy
| model | nats / token |
| --- | --- |
| this model | ${r.heldOutLoss.toFixed(4)} |
| unigram (add-one, same tokenizer, same held-out targets) | ${r.unigramLoss.toFixed(4)} |
| reduction | ${(100 * r.reduction).toFixed(1)}% |

## Sample outputs
Greedy replies to the first patient message of three held-out test users (never seen in training):

${r.samples.map((s, i) => `${i + 1}. **Patient:** ${s.prompt}\n   **Model:** ${s.reply}`).join('\n\n')}

## Limits
A 5M-parameter model trained on about half a million tokens of synthetic medical dialogue: it writes
on-topic, grammatical-looking doctor replies but is not a source of medical advice.
`;
}
