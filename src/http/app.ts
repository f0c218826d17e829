/**
 * The Hono app: middleware (request id, metrics, body limit, admin auth), the routes, and the single
 * error mapping. Built from plain dependencies so tests drive it with app.request() and a temp db.
 */
import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Hono } from 'hono';
import { matchedRoutes, routePath } from 'hono/route';
import { parse as parseYaml } from 'yaml';
import { repoRoot } from '../config.js';
import { Registry } from '../metrics.js';
import { requireAdmin, requireApiKey } from './auth.js';
import type { AppDeps, AppEnv, RouteDeps } from './context.js';
import { renderDocsHtml } from './docs.js';
import { ApiError, errorResponse, toApiError } from './errors.js';
import { jsonLogger } from './logger.js';
import { ADAPTER_UPLOAD_PATH, registerAdapterRoutes } from './routes/adapter.js';
import { registerAdminRoutes } from './routes/admin.js';
import { registerCacheRoutes } from './routes/cache.js';
import { registerChatRoutes } from './routes/chat.js';
import { BackgroundResponses } from './background-responses.js';
import { ConversationLocks } from './conversation-locks.js';
import { resumeBackgroundResponses } from './response-runs.js';
import { registerResponsesRoutes } from './routes/responses.js';
import { registerUserExportRoutes } from './routes/user-export.js';
import { registerStoredResponsesRoutes } from './routes/stored-responses.js';
import { registerConversationRoutes } from './routes/conversations.js';
import { registerCompletionRoutes } from './routes/completions.js';
import { registerGenerateRoutes } from './routes/generate.js';
import { registerHistoryRoutes } from './routes/history.js';
import { registerModelRoutes } from './routes/models.js';
import { registerOpsRoutes } from './routes/ops.js';
import { registerScoreRoutes } from './routes/score.js';
import { registerTokenizeRoutes } from './routes/tokenize.js';
import { registerUsageRoutes } from './routes/usage.js';
import { registerUserRoutes } from './routes/users.js';
import { bodyTooLarge } from './validate.js';

export type { AppDeps, Lifecycle } from './context.js';

export const OPENAPI_FILE: string = join(repoRoot, 'openapi.yaml');

const REQUEST_ID_RE = /^[A-Za-z0-9._:+=/-]{1,128}$/;
const KNOWN_METHODS = new Set(['GET', 'HEAD', 'POST', 'PUT', 'DELETE', 'PATCH', 'OPTIONS']);

/** Route patterns to regexes, for telling 404 (no such path) from 405 (path exists, method does not). */
function methodTable(app: Hono<AppEnv>): Array<{ re: RegExp; method: string }> {
  return app.routes
    .filter((r) => r.method !== 'ALL')
    .map((r) => ({
      method: r.method,
      re: new RegExp(`^${r.path.split('/').map((seg) => (seg.startsWith(':') ? '[^/]+' : seg.replace(/[.*+?^${}()|[\]\\]/g, '\\$&'))).join('/')}$`),
    }));
}

export function createApp(deps: AppDeps): Hono<AppEnv> {
  const d: RouteDeps = {
    config: deps.config,
    db: deps.db,
    services: deps.services,
    metrics: deps.metrics ?? new Registry(),
    logger: deps.logger ?? jsonLogger(),
    lifecycle: deps.lifecycle ?? { draining: false },
    background: new BackgroundResponses(),
    conversationLocks: new ConversationLocks(),
  };
  // Background responses run apart from their requests: the server's shutdown waits for them (settled) before it closes the database.
  d.lifecycle.settled = () => d.background.settled();
  d.lifecycle.resume = () => resumeBackgroundResponses(d);
  const app = new Hono<AppEnv>();

  const requests = d.metrics.counter('http_requests_total', 'HTTP requests by route and status.', ['method', 'route', 'status']);
  const latency = d.metrics.histogram('http_request_duration_seconds', 'HTTP request latency by route (until headers for streams).', [
    'method',
    'route',
  ]);

  app.use('*', async (c, next) => {
    const incoming = c.req.header('x-request-id');
    const requestId = incoming !== undefined && REQUEST_ID_RE.test(incoming) ? incoming : randomUUID();
    c.set('requestId', requestId);
    const t0 = performance.now();
    await next();
    c.res.headers.set('x-request-id', requestId);
    // While draining, every answer releases its keep-alive connection so clients reconnect elsewhere.
    if (d.lifecycle.draining) c.res.headers.set('connection', 'close');
    const handled = matchedRoutes(c).some((r) => r.method !== 'ALL');
    const labels = {
      method: KNOWN_METHODS.has(c.req.method) ? c.req.method : 'OTHER',
      route: handled ? routePath(c, -1) : '<unmatched>',
    };
    requests.inc({ ...labels, status: c.res.status });
    latency.observe(labels, (performance.now() - t0) / 1000);
  });

  app.use('*', async (c, next) => {
    const declared = c.req.header('content-length');
    // An adapter upload is bounded by the model's largest adapter instead, read after admin auth.
    const upload = c.req.method === 'POST' && ADAPTER_UPLOAD_PATH.test(c.req.path);
    if (!upload && declared !== undefined && Number(declared) > d.config.bodyLimitBytes) throw bodyTooLarge(d.config.bodyLimitBytes);
    await next();
  });

  // Requests that arrive once shutdown has begun (on a kept-alive connection) are refused, so the
  // drain converges; those already in flight passed this point and finish.
  app.use('/v1/*', async (c, next) => {
    if (d.lifecycle.draining) throw new ApiError(503, 'shutting_down', 'the server is shutting down', null, { 'retry-after': '5' });
    await next();
  });

  app.use('/v1/admin/*', requireAdmin(d.config.adminToken));
  if (d.config.apiKey !== null) {
    // The client routes: the rest of /v1 and vLLM's tokenizer paths (health, metrics and the docs stay open).
    const client = requireApiKey(d.config.apiKey, d.config.adminToken);
    app.use('/v1/*', (c, next) => (c.req.path.startsWith('/v1/admin/') ? next() : client(c, next)));
    app.use('/tokenize', client);
    app.use('/detokenize', client);
  }

  registerUserRoutes(app, d);
  registerHistoryRoutes(app, d);
  registerAdapterRoutes(app, d);
  registerAdminRoutes(app, d);
  registerCacheRoutes(app, d);
  registerGenerateRoutes(app, d);
  registerChatRoutes(app, d);
  registerResponsesRoutes(app, d);
  registerStoredResponsesRoutes(app, d);
  registerConversationRoutes(app, d);
  registerCompletionRoutes(app, d);
  registerScoreRoutes(app, d);
  registerTokenizeRoutes(app, d);
  registerUsageRoutes(app, d);
  registerUserExportRoutes(app, d);
  registerModelRoutes(app, d);

  const yamlText = readFileSync(OPENAPI_FILE, 'utf8');
  let html: string | undefined;
  registerOpsRoutes(app, d, {
    yaml: yamlText,
    html: () => (html ??= renderDocsHtml(parseYaml(yamlText) as Record<string, unknown>)),
  });

  const table = methodTable(app);
  app.notFound((c) => {
    const allowed = [...new Set(table.filter((t) => t.re.test(c.req.path)).map((t) => t.method))];
    if (allowed.length > 0) {
      if (allowed.includes('GET')) allowed.push('HEAD');
      return errorResponse(
        c,
        new ApiError(405, 'method_not_allowed', `${c.req.method} is not allowed on ${c.req.path}`, { allowed }, { allow: allowed.join(', ') }),
      );
    }
    return errorResponse(c, new ApiError(404, 'not_found', `no route for ${c.req.method} ${c.req.path}`));
  });

  app.onError((err, c) => {
    const { apiError, known } = toApiError(err);
    if (!known) {
      d.logger.error('unhandled error', {
        requestId: c.get('requestId'),
        method: c.req.method,
        path: c.req.path,
        err: err instanceof Error ? (err.stack ?? err.message) : String(err),
      });
    }
    return errorResponse(c, apiError);
  });

  return app;
}
