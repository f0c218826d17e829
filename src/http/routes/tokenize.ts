/**
 * POST /tokenize and POST /detokenize, as vLLM serves them: a raw prompt or chat messages as the token
 * ids the model is fed (memory aside), with their count and the context window, so clients can budget
 * and truncate exactly before they generate; and token ids back as text.
 */
import type { Hono } from 'hono';
import type { AppEnv, RouteDeps } from '../context.js';
import { ApiError } from '../errors.js';
import { serveMessages, toolsPrompt, withToolsPrompt } from '../tools.js';
import { detokenizeRequestSchema, tokenizeRequestSchema } from '../schemas.js';
import type { GenerateService } from '../services.js';
import { readJson } from '../validate.js';
import { requireGenerate } from './generate.js';

/** The service, or 503 `model_unavailable` where it cannot tokenize. */
export function requireTokenizer(deps: RouteDeps): Required<Pick<GenerateService, 'tokenize' | 'detokenize'>> {
  const gen = requireGenerate(deps);
  if (!gen.tokenize || !gen.detokenize) throw new ApiError(503, 'model_unavailable', 'this server does not tokenize', null, { 'retry-after': '30' });
  return gen as Required<Pick<GenerateService, 'tokenize' | 'detokenize'>>;
}

export function registerTokenizeRoutes(app: Hono<AppEnv>, deps: RouteDeps): void {
  const { config } = deps;

  app.post('/tokenize', async (c) => {
    const body = await readJson(c, tokenizeRequestSchema, config.bodyLimitBytes);
    const r = requireTokenizer(deps).tokenize({
      ...(body.messages !== undefined ? { messages: withToolsPrompt(serveMessages(body.messages), toolsPrompt(body)) } : { prompt: body.prompt }),
      addSpecialTokens: body.add_special_tokens ?? undefined,
      addGenerationPrompt: body.add_generation_prompt ?? undefined,
      continueFinalMessage: body.continue_final_message ?? undefined,
      returnTokenStrings: body.return_token_strs ?? undefined,
    });
    return c.json({ count: r.count, max_model_len: r.maxModelLen, tokens: r.tokens, token_strs: r.tokenStrings });
  });

  app.post('/detokenize', async (c) => {
    const body = await readJson(c, detokenizeRequestSchema, config.bodyLimitBytes);
    return c.json({ prompt: requireTokenizer(deps).detokenize(body.tokens) });
  });
}
