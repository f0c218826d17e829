/**
 * Training pairs as model rows: each pair is encoded once (context truncated from the left), then
 * becomes next-token inputs and labels where only the target tokens are scored.
 */
import { IGNORE_INDEX, type LmBatch } from '../model/batch.js';
import type { ChatTemplateName } from '../model/chat-format.js';
import type { Tokenizer } from '../model/tokenizer.js';
import type { Rng } from '../util/rng.js';
import { type TrainingPair, encodePair } from './dataset.js';

export interface Example {
  inputIds: number[];
  labels: number[];
  /** Scored tokens (target tokens plus the end token). */
  scored: number;
}

export function toExample(tokenizer: Tokenizer, pair: TrainingPair, maxLen: number, template: ChatTemplateName = 'memlora'): Example {
  // One more token than the model sees: the last token is only ever a label.
  const enc = encodePair(tokenizer, pair, maxLen + 1, template);
  const inputIds = enc.ids.slice(0, -1);
  const labels = enc.ids.slice(1).map((id, i) => (enc.lossMask[i + 1] ? id : IGNORE_INDEX));
  return { inputIds, labels, scored: enc.lossMask.reduce((s, m) => s + m, 0) };
}

/** Batches of `size` examples; shuffled with `rng` when given, else in order. */
export function batchExamples(examples: readonly Example[], size: number, rng?: Rng): { batch: LmBatch; scored: number }[] {
  const order = [...examples.keys()];
  if (rng) rng.shuffle(order);
  const out: { batch: LmBatch; scored: number }[] = [];
  for (let i = 0; i < order.length; i += size) {
    const rows = order.slice(i, i + size).map((k) => examples[k]);
    out.push({ batch: { inputIds: rows.map((r) => r.inputIds), labels: rows.map((r) => r.labels) }, scored: rows.reduce((s, r) => s + r.scored, 0) });
  }
  return out;
}
