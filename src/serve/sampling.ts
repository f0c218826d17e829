/**
 * A request's sampling settings as the model's Sequence takes them. The logit bias arrives keyed by
 * token ids written as decimal strings (JSON object keys); each must name a token of the model's
 * vocabulary, else the request is refused before it is queued (`token_out_of_range`, 422, details
 * the id as sent and the vocabulary size) rather than failing in the batch. Bad words arrive as text
 * and are tokenized here, as vLLM does: each word as written and after a space, since a word inside
 * a reply is most often a token that begins with one.
 */
import type { SamplingOptions } from '../model/sampling.js';
import type { Tokenizer } from '../model/tokenizer.js';
import { ServeError } from './errors.js';
import type { ServeRequest } from './types.js';

type SamplingFields = Pick<ServeRequest, 'temperature' | 'topP' | 'topK' | 'minP' | 'repetitionPenalty' | 'frequencyPenalty' | 'presencePenalty' | 'logitBias' | 'badWords'>;

/** The token sequences of bad words: each word without its leading white space, and after one space; each distinct sequence once. */
export function badWordIds(tokenizer: Tokenizer, words: readonly string[]): number[][] {
  const seen = new Set<string>();
  const out: number[][] = [];
  for (const word of words) {
    const bare = word.trimStart();
    for (const text of [bare, ` ${bare}`]) {
      const ids = tokenizer.encode(text, { parseSpecial: false });
      const key = ids.join(',');
      if (ids.length === 0 || seen.has(key)) continue;
      seen.add(key);
      out.push(ids);
    }
  }
  return out;
}

/** The Sequence's options of a request; its bad words need the tokenizer. */
export function samplingOf(req: SamplingFields, vocabSize: number, tokenizer?: Tokenizer): SamplingOptions {
  const out: SamplingOptions = { temperature: req.temperature, topP: req.topP, topK: req.topK, repetitionPenalty: req.repetitionPenalty };
  if (req.minP) out.minP = req.minP;
  if (req.badWords?.length) {
    if (!tokenizer) throw new Error('bad words need the tokenizer');
    out.badWords = badWordIds(tokenizer, req.badWords);
  }
  if (req.frequencyPenalty) out.frequencyPenalty = req.frequencyPenalty;
  if (req.presencePenalty) out.presencePenalty = req.presencePenalty;
  const entries = Object.entries(req.logitBias ?? {});
  if (entries.length > 0) {
    const bias = new Map<number, number>();
    for (const [key, value] of entries) {
      const id = /^\d+$/.test(key) ? Number(key) : NaN;
      if (!(Number.isSafeInteger(id) && id < vocabSize)) {
        throw new ServeError('token_out_of_range', `the logit bias names token ${key}; the model's token ids are 0-${vocabSize - 1}`, {
          details: { tokenId: key, vocabSize },
        });
      }
      bias.set(id, value);
    }
    out.logitBias = bias;
  }
  return out;
}
