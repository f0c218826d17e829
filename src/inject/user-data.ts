/**
 * A user's injection data: history -> (context, target) pairs -> 70/10/20 split -> encoded rows.
 * The training history an adapter may see is the train split's conversations; validation and test
 * pairs stay out of it (they are what the objectives and evaluations are measured on).
 */
import { type DatasetSplit, type HistoryItem, buildDataset } from './dataset.js';
import type { Example } from './examples.js';
import type { Injector } from './injector.js';

export interface UserData {
  split: DatasetSplit;
  train: Example[];
  val: Example[];
  test: Example[];
}

export class UserDataError extends Error {
  constructor(
    readonly code: string,
    message: string,
    readonly details?: unknown,
  ) {
    super(message);
    this.name = 'UserDataError';
  }
}

/** Minimum pairs for a meaningful injection: something to train on and something to validate on. */
export const MIN_TRAIN_PAIRS = 2;

export function prepareUserData(injector: Injector, items: readonly HistoryItem[], seed = 1): UserData {
  const split = buildDataset(items, { seed });
  if (split.train.length < MIN_TRAIN_PAIRS || split.val.length === 0) {
    throw new UserDataError(
      'not_enough_history',
      `the history yields ${split.train.length} training and ${split.val.length} validation pairs; injection needs at least ${MIN_TRAIN_PAIRS} and 1 (add dialogue turns or posts)`,
      { train: split.train.length, val: split.val.length, test: split.test.length },
    );
  }
  return { split, train: injector.examples(split.train), val: injector.examples(split.val), test: injector.examples(split.test) };
}

/** History items of the training split only (what retrieval baselines may search, so nothing leaks from val/test). */
export function trainHistory(items: readonly HistoryItem[], split: DatasetSplit): HistoryItem[] {
  const allowed = new Set(split.groups.train);
  return items.filter((i) => {
    if (i.kind === 'profile') return true;
    const group = i.conversationId !== null ? `conversation:${i.conversationId}` : `item:${i.id}`;
    return allowed.has(group);
  });
}
