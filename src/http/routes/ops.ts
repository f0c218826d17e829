/** Operations: liveness, readiness, Prometheus metrics, the OpenAPI document and its HTML rendering. */
import type { Hono } from 'hono';
import { EXPOSITION_CONTENT_TYPE } from '../../metrics.js';
import type { AppEnv, RouteDeps } from '../context.js';

export interface ApiDocument {
  yaml: string;
  html: () => string;
}

export function registerOpsRoutes(app: Hono<AppEnv>, deps: RouteDeps, apiDoc: ApiDocument): void {
  const { db, services, metrics, lifecycle } = deps;

  app.get('/healthz', (c) => c.json({ status: 'ok' }));

  app.get('/readyz', (c) => {
    let dbOk = true;
    try {
      db.sqlite.prepare('SELECT 1').get();
    } catch {
      dbOk = false;
    }
    const gen = services.generate;
    const modelError = gen?.loadError?.() ?? null;
    // No engine wired in is a deliberate configuration (users/history/admin still serve), not "loading".
    const model = !gen ? 'absent' : modelError !== null ? 'failed' : !gen.ready || gen.ready() ? 'loaded' : 'loading';
    const ready = dbOk && (model === 'loaded' || model === 'absent') && !lifecycle.draining;
    return c.json(
      {
        status: ready ? 'ready' : 'not_ready',
        checks: { db: dbOk ? 'ok' : 'error', model, draining: lifecycle.draining },
        ...(modelError !== null ? { modelError } : {}),
      },
      ready ? 200 : 503,
    );
  });

  app.get('/metrics', (c) => c.body(metrics.expose(), 200, { 'content-type': EXPOSITION_CONTENT_TYPE }));

  app.get('/openapi.yaml', (c) => c.body(apiDoc.yaml, 200, { 'content-type': 'application/yaml; charset=utf-8' }));

  app.get('/docs', (c) => c.html(apiDoc.html()));
}
