/**
 * POST /v1/score: the log-probability of a text after a context under the user's model, token by
 * token, with its sum, mean and perplexity, and with `compare` the base model's beside it: how well a
 * user's adapter (or memory) models their kind of text, and how far it moved the base model.
 */
import type { Hono } from 'hono';
import { userExists } from '../../db/queries/users.js';
import { ApiError } from '../errors.js';
import type { AppEnv, RouteDeps } from '../context.js';
import { scoreRequestSchema } from '../schemas.js';
import { readJson } from '../validate.js';
import { clientSignal, requireGenerate } from './generate.js';
import { userNotFound } from './users.js';

export function registerScoreRoutes(app: Hono<AppEnv>, deps: RouteDeps): void {
  const { db, config } = deps;

  app.post('/v1/score', async (c) => {
    const req = await readJson(c, scoreRequestSchema, config.bodyLimitBytes);
    if (!userExists(db, req.userId)) throw userNotFound(req.userId);
    const gen = requireGenerate(deps);
    if (!gen.score) throw new ApiError(503, 'model_unavailable', 'this server does not score', null, { 'retry-after': '30' });
    return c.json(await gen.score(req, clientSignal(c).signal));
  });
}
