/**
 * GET /v1/models and GET /v1/models/{model}: the OpenAI model listing, so chat clients that list
 * models before they chat (and SDKs' `models.list()`) find the one model memlora serves. Which user's
 * adapter answers is chosen by the chat request's `user`, not by the model id; /v1/chat/completions
 * echoes whatever `model` a client sends.
 */
import { statSync } from 'node:fs';
import { basename } from 'node:path';
import type { Hono } from 'hono';
import type { AppEnv, RouteDeps } from '../context.js';
import { ApiError } from '../errors.js';

/** The model id memlora lists and answers with when a chat request names none. */
export const SERVED_MODEL_ID = 'memlora';

/** Seconds since the epoch at which the base model directory was last written; 0 if it cannot be read. */
function modelCreated(modelPath: string): number {
  try {
    return Math.floor(statSync(modelPath).mtimeMs / 1000);
  } catch {
    return 0;
  }
}

export function registerModelRoutes(app: Hono<AppEnv>, deps: RouteDeps): void {
  const model = {
    id: SERVED_MODEL_ID,
    object: 'model' as const,
    created: modelCreated(deps.config.modelPath),
    owned_by: 'memlora',
    memlora: { baseModel: basename(deps.config.modelPath) },
  };

  app.get('/v1/models', (c) => c.json({ object: 'list', data: [model] }));

  app.get('/v1/models/:model', (c) => {
    const id = c.req.param('model');
    if (id !== SERVED_MODEL_ID) {
      throw new ApiError(404, 'model_not_found', `model ${JSON.stringify(id)} not found; memlora serves ${JSON.stringify(SERVED_MODEL_ID)}`, { model: id });
    }
    return c.json(model);
  });
}
