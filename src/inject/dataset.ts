/**
 * A user's history as supervised (context, target) pairs for memory injection, split 70/10/20.
 *
 * Pairs (items ordered by createdAt, then id; empty texts ignored; profile items of all kinds
 * are joined by newlines into one system message placed first in every context):
 * - dialogue with a conversationId: every assistant item that has a user-side item (role user, other
 *   or null) before it in its conversation is a target; its context is the profile plus all earlier
 *   items of that conversation (so it ends with the user's message). An assistant item with no user
 *   message before it (an opening greeting) is context only. Group: `conversation:<id>`.
 * - qa: a non-assistant item is a question, the assistant items after it are its answers; context =
 *   profile + the question (or, with a conversationId, all earlier items of that conversation).
 * - dialogue or qa without a conversationId: each user-side item opens a one-exchange conversation
 *   that the following assistant items answer. Group: `item:<id of the opening item>`.
 * - post: context = profile only, target = the post (the user's own writing). Group: `item:<id>`.
 * - A dialogue assistant item with no user message before it is context only; a qa answer with no
 *   question is still a target (context: profile and whatever came before in its conversation).
 * Contexts only ever hold the profile and items of the target's own group, so no text of one split
 * reaches another split through a context.
 *
 * Split: groups (never single pairs) are ranked by a seeded 32-bit hash of their name; the lowest
 * round(20%) go to test, the next round(10%) to validation, the rest to train. With three or more
 * groups validation and test get at least one each; with fewer, everything is train. The same seed and
 * the same group names give the same split wherever it is computed. Then a target text (compared
 * after trimming, collapsing whitespace and lower-casing) that occurs in an earlier split (train, then
 * validation) is dropped from the later one, so no target text is shared between splits.
 *
 * Encoding (`encodePair`): [BOS] + context + generation prompt, then the target + end-of-turn;
 * `lossMask[i] = 1` exactly where ids[i] is a target token (the trainer predicts ids[i] from the
 * logits at position i - 1). Too long for maxLen: the context is cut from the left (BOS and the
 * generation prompt are kept). If the target alone does not fit beside BOS and the prompt, the whole
 * context is dropped and the target is cut from the right, losing its end token (the model is then
 * not taught to stop there); `targetTokensDropped` says by how much.
 */
import { hashString } from '../util/rng.js';
import type { Tokenizer } from '../model/tokenizer.js';
import { encodeSegments, getChatTemplate, renderChatSegments, type ChatMessage, type ChatTemplateName } from '../model/chat-format.js';

export type HistoryKind = 'profile' | 'dialogue' | 'post' | 'qa';

export type HistoryItem = {
  id: number;
  kind: HistoryKind;
  role: string | null;
  text: string;
  conversationId: string | null;
  createdAt: number;
};

export interface TrainingPair {
  /** The split unit: `conversation:<id>` or `item:<id>`. */
  group: string;
  kind: 'dialogue' | 'post' | 'qa';
  context: ChatMessage[];
  target: string;
  /** Id of the history item whose text is the target. */
  targetItemId: number;
}

export type SplitName = 'train' | 'val' | 'test';

export interface SplitOptions {
  seed?: number;
  /** Shares of groups; default 0.7 / 0.1 / 0.2. */
  fractions?: { train: number; val: number; test: number };
}

export interface DatasetSplit {
  train: TrainingPair[];
  val: TrainingPair[];
  test: TrainingPair[];
  groups: Record<SplitName, string[]>;
  /** Pairs removed from val/test because their target text occurs in an earlier split. */
  droppedDuplicateTargets: number;
}

export interface EncodedPair {
  ids: number[];
  lossMask: number[];
  contextTokensDropped: number;
  targetTokensDropped: number;
}

export class DatasetError extends Error {
  constructor(
    readonly code: string,
    message: string,
    readonly value?: unknown,
  ) {
    super(message);
    this.name = 'DatasetError';
  }
}

const DEFAULT_FRACTIONS = { train: 0.7, val: 0.1, test: 0.2 };

const isAssistant = (item: HistoryItem) => item.role === 'assistant';
const isSystem = (item: HistoryItem) => item.role === 'system';

function toMessage(item: HistoryItem): ChatMessage {
  return { role: isAssistant(item) ? 'assistant' : isSystem(item) ? 'system' : 'user', content: item.text };
}

/** All (context, target) pairs of a history, in history order. */
export function buildPairs(items: readonly HistoryItem[]): TrainingPair[] {
  const sorted = items.filter((i) => i.text.trim().length > 0).sort((a, b) => a.createdAt - b.createdAt || a.id - b.id);
  const profileText = sorted
    .filter((i) => i.kind === 'profile')
    .map((i) => i.text)
    .join('\n');
  const profile: ChatMessage[] = profileText ? [{ role: 'system', content: profileText }] : [];

  const conversations = new Map<string, { items: HistoryItem[]; userSpoke: boolean }>();
  // The conversation that an assistant item without a conversationId answers, per kind.
  const open: Record<'dialogue' | 'qa', string | null> = { dialogue: null, qa: null };
  const pairs: TrainingPair[] = [];
  const standalone = (item: HistoryItem, kind: 'post' | 'qa'): TrainingPair => ({
    group: `item:${item.id}`,
    kind,
    context: [...profile],
    target: item.text,
    targetItemId: item.id,
  });
  for (const item of sorted) {
    if (item.kind === 'profile') continue;
    if (item.kind === 'post') {
      pairs.push(standalone(item, 'post'));
      continue;
    }
    let key: string | null;
    if (item.conversationId !== null) key = `conversation:${item.conversationId}`;
    else if (!isAssistant(item)) key = open[item.kind] = `item:${item.id}`;
    else key = open[item.kind];
    if (key === null) {
      if (item.kind === 'qa') pairs.push(standalone(item, 'qa'));
      continue;
    }
    let conv = conversations.get(key);
    if (!conv) conversations.set(key, (conv = { items: [], userSpoke: false }));
    if (isAssistant(item)) {
      // A qa answer with no question before it still counts (as the user's own writing).
      if (conv.userSpoke || item.kind === 'qa') {
        pairs.push({ group: key, kind: item.kind, context: [...profile, ...conv.items.map(toMessage)], target: item.text, targetItemId: item.id });
      }
    } else if (!isSystem(item)) conv.userSpoke = true;
    conv.items.push(item);
  }
  return pairs;
}

/** Which split each group belongs to (see the file comment for the rule). */
export function assignGroups(groups: readonly string[], opts: SplitOptions = {}): Map<string, SplitName> {
  const seed = opts.seed ?? 0;
  const f = opts.fractions ?? DEFAULT_FRACTIONS;
  const sum = f.train + f.val + f.test;
  if (!(f.train >= 0 && f.val >= 0 && f.test >= 0 && Math.abs(sum - 1) < 1e-9)) {
    throw new DatasetError('bad_fractions', 'split fractions must be non-negative and sum to 1', f);
  }
  const unique = [...new Set(groups)];
  const salt = hashString(`memlora-split:${seed}`);
  const ranked = unique
    .map((g) => ({ g, h: hashString(g, salt) }))
    .sort((a, b) => a.h - b.h || (a.g < b.g ? -1 : a.g > b.g ? 1 : 0))
    .map((x) => x.g);
  const n = ranked.length;
  let nTest = Math.round(f.test * n);
  let nVal = Math.round(f.val * n);
  if (n >= 3) {
    nTest = Math.max(1, nTest);
    nVal = Math.max(1, nVal);
    if (nTest + nVal > n - 1) nTest = Math.max(1, n - 1 - nVal);
  } else {
    nTest = 0;
    nVal = 0;
  }
  const out = new Map<string, SplitName>();
  ranked.forEach((g, i) => out.set(g, i < nTest ? 'test' : i < nTest + nVal ? 'val' : 'train'));
  return out;
}

function normaliseTarget(text: string): string {
  return text.trim().replace(/\s+/g, ' ').toLowerCase();
}

/** Splits pairs by group, then removes targets already present in an earlier split. */
export function splitPairs(pairs: readonly TrainingPair[], opts: SplitOptions = {}): DatasetSplit {
  const assignment = assignGroups(
    pairs.map((p) => p.group),
    opts,
  );
  const out: DatasetSplit = { train: [], val: [], test: [], groups: { train: [], val: [], test: [] }, droppedDuplicateTargets: 0 };
  for (const [g, s] of assignment) out.groups[s].push(g);
  for (const s of ['train', 'val', 'test'] as const) out.groups[s].sort();
  const seen = new Set<string>();
  for (const s of ['train', 'val', 'test'] as const) {
    const here = new Set<string>();
    for (const p of pairs) {
      if (assignment.get(p.group) !== s) continue;
      const key = normaliseTarget(p.target);
      if (seen.has(key)) {
        out.droppedDuplicateTargets++;
        continue;
      }
      here.add(key);
      out[s].push(p);
    }
    for (const k of here) seen.add(k);
  }
  return out;
}

/** buildPairs + splitPairs. */
export function buildDataset(items: readonly HistoryItem[], opts: SplitOptions = {}): DatasetSplit {
  return splitPairs(buildPairs(items), opts);
}

/** Token ids and loss mask of one pair under a chat template (see the file comment). */
export function encodePair(tokenizer: Tokenizer, pair: TrainingPair, maxLen: number, template: ChatTemplateName = 'memlora'): EncodedPair {
  const t = getChatTemplate(template);
  const bos = t.addBos ? [tokenizer.bosId] : [];
  const body = encodeSegments(tokenizer, renderChatSegments(pair.context, { addGenerationPrompt: false, template }));
  const prompt = encodeSegments(tokenizer, t.open('assistant'));
  const target = encodeSegments(tokenizer, [{ text: t.contentPrefix + pair.target, special: false }, ...t.close('assistant')]);
  const fixed = bos.length + prompt.length;
  if (!Number.isInteger(maxLen) || maxLen < fixed + 1) {
    throw new DatasetError('max_len_too_small', `maxLen must be an integer of at least ${fixed + 1} (BOS + generation prompt + one target token)`, maxLen);
  }
  let keptBody = body;
  let keptTarget = target;
  if (fixed + target.length > maxLen) {
    keptTarget = target.slice(0, maxLen - fixed);
    keptBody = [];
  } else if (fixed + body.length + target.length > maxLen) {
    keptBody = body.slice(body.length - (maxLen - fixed - target.length));
  }
  const prefix = [...bos, ...keptBody, ...prompt];
  return {
    ids: [...prefix, ...keptTarget],
    lossMask: [...new Array<number>(prefix.length).fill(0), ...new Array<number>(keptTarget.length).fill(1)],
    contextTokensDropped: body.length - keptBody.length,
    targetTokensDropped: target.length - keptTarget.length,
  };
}
