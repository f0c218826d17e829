/**
 * GET /v1/models and GET /v1/models/{model}: the OpenAI model listing, so chat clients that list
 * models before they chat (and SDKs' `models.list()`) find the one model memlora serves. Which user's
 * adapter answers is chosen by the request's `user`, or by a model id `memlora:<user id>` for tools
 * that cannot send `user` (retrievable here for an existing user; users are not listed: there may be
 * millions), `memlora:<user id>@<version>` for one of their adapter versions, active or not
 * (retrievable while a request naming it would be served with it); the chat and completions routes
 * echo whatever `model` a client sends.
 */
import { statSync } from 'node:fs';
import { basename } from 'node:path';
import type { Hono } from 'hono';
import { userExists } from '../../db/queries/users.js';
import { ServeError } from '../../serve/errors.js';
import { pinnableVersion } from '../../serve/personalize.js';
import type { AppEnv, RouteDeps } from '../context.js';
import { ApiError } from '../errors.js';
import { USER_MODEL_PREFIX, modelRef } from '../schemas.js';

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

/** Whether a request naming this version would be served with it (personalize.ts pinnableVersion). */
function servable(deps: RouteDeps, userId: string, version: number): boolean {
  try {
    pinnableVersion(deps.db, userId, version);
    return true;
  } catch (e) {
    if (e instanceof ServeError) return false;
    throw e;
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
    const ref = modelRef(id);
    if (ref !== null && userExists(deps.db, ref.userId)) {
      const { userId, version } = ref;
      if (version === null) return c.json({ ...model, id, memlora: { ...model.memlora, userId } });
      if (servable(deps, userId, version)) return c.json({ ...model, id, memlora: { ...model.memlora, userId, adapterVersion: version } });
    }
    if (id !== SERVED_MODEL_ID) {
      throw new ApiError(
        404,
        'model_not_found',
        `model ${JSON.stringify(id)} not found; memlora serves ${JSON.stringify(SERVED_MODEL_ID)}, ${JSON.stringify(`${USER_MODEL_PREFIX}<user id>`)} for each of its users and ${JSON.stringify(`${USER_MODEL_PREFIX}<user id>@<version>`)} for each adapter version ready to serve`,
        { model: id },
      );
    }
    return c.json(model);
  });
}
