/**
 * Guided decoding: a guide masks, at each step, the tokens a reply may go on with, and says when the
 * reply is whole. JSON (schema-guide.ts: any JSON object, OpenAI's JSON mode, or the documents of a
 * JSON schema, compiled by json-schema.ts), a regular expression (regex-guide.ts: vLLM's guided_regex)
 * a context-free grammar (grammar-guide.ts: vLLM's guided_grammar, in llama.cpp's GBNF) and a choice
 * among given strings (choice-guide.ts: vLLM's guided_choice) are the kinds, and free text
 * that may open a document of a schema (text-or-json-guide.ts: tool calls under tool_choice auto); a
 * Sequence holds one per request that asks, and sampling draws among the allowed tokens with the
 * model's own probabilities.
 */
import { ChoiceGuide } from './choice-guide.js';
import type { CompiledGrammar } from './grammar.js';
import { GrammarGuide } from './grammar-guide.js';
import type { CompiledSchema } from './json-schema.js';
import { type CompiledRegex, RegexGuide } from './regex-guide.js';
import { SchemaGuide } from './schema-guide.js';
import { TextOrJsonGuide } from './text-or-json-guide.js';
import type { Tokenizer } from './tokenizer.js';

export interface Guide {
  /** 1 for each token that may come next (at least one, unless the vocabulary cannot go on), or null where any may; do not write to it. */
  allowed(): Uint8Array | null;
  /** Take the drawn token (one the mask allowed). */
  advance(id: number): void;
  /** The reply is whole: it ends here. */
  readonly done: boolean;
}

export type GuideSpec =
  | { type: 'json_object' }
  | { type: 'json_schema'; schema: CompiledSchema }
  | { type: 'regex'; regex: CompiledRegex }
  | { type: 'grammar'; grammar: CompiledGrammar }
  | { type: 'choice'; choices: readonly string[] }
  /** Free text, or (when the reply opens with one of `openers`) one document of the schema. */
  | { type: 'text_or_json'; schema: CompiledSchema; openers: readonly string[] };

/** A fresh guide of `spec` over a vocabulary's token bytes (guideVocabulary); `ends` end a reply where the guide allows it. */
export function createGuide(spec: GuideSpec, vocab: ReadonlyArray<Uint8Array | null>, ends: readonly number[]): Guide {
  switch (spec.type) {
    case 'json_object':
      return SchemaGuide.jsonObject(vocab);
    case 'json_schema':
      return new SchemaGuide(spec.schema, vocab);
    case 'regex':
      return new RegexGuide(spec.regex, vocab, ends);
    case 'grammar':
      return new GrammarGuide(spec.grammar, vocab, ends);
    case 'text_or_json':
      return new TextOrJsonGuide(spec.schema, vocab, spec.openers);
    default:
      return new ChoiceGuide(spec.choices, vocab, ends);
  }
}
const vocabCache = new WeakMap<Tokenizer, Map<number, ReadonlyArray<Uint8Array | null>>>();

/** Each token's bytes for guiding (null: never drawn: special tokens, and ids past the tokenizer's vocabulary). */
export function guideVocabulary(tokenizer: Tokenizer, vocabSize: number): ReadonlyArray<Uint8Array | null> {
  let bySize = vocabCache.get(tokenizer);
  if (!bySize) vocabCache.set(tokenizer, (bySize = new Map()));
  let vocab = bySize.get(vocabSize);
  if (!vocab) {
    const special = new Set(Object.values(tokenizer.specialIds));
    special.add(tokenizer.bosId).add(tokenizer.eosId).add(tokenizer.padId);
    vocab = Array.from({ length: vocabSize }, (_, id) => {
      if (id >= tokenizer.vocabSize || special.has(id)) return null;
      const bytes = tokenizer.tokenBytes(id);
      return bytes && bytes.length > 0 ? bytes : null;
    });
    bySize.set(vocabSize, vocab);
  }
  return vocab;
}

