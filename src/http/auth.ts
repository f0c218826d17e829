/** Bearer-token check for /v1/admin: constant-time over SHA-256 digests, so neither content nor length leaks. */
import { createHash, timingSafeEqual } from 'node:crypto';
import type { MiddlewareHandler } from 'hono';
import type { AppEnv } from './context.js';
import { ApiError } from './errors.js';

const digest = (s: string): Buffer => createHash('sha256').update(s, 'utf8').digest();

/** True when `given` equals `expected`; compares fixed-size digests with timingSafeEqual. */
export function tokenMatches(given: string, expected: string): boolean {
  return timingSafeEqual(digest(given), digest(expected));
}

const UNAUTHORIZED_MESSAGE = 'admin routes need "Authorization: Bearer <MEMLORA_ADMIN_TOKEN>"; the token was missing or wrong';

/** `expected` null means no token is configured: every admin request is refused. */
export function requireAdmin(expected: string | null): MiddlewareHandler<AppEnv> {
  // Compare against something even when unconfigured, so the refusal takes the same time.
  const reference = expected ?? `unconfigured:${Math.random()}`;
  return async (c, next) => {
    const header = c.req.header('authorization') ?? '';
    const m = /^Bearer[ ]+(\S+)\s*$/i.exec(header);
    const ok = tokenMatches(m ? m[1] : '', reference) && m !== null && expected !== null;
    // One answer for every refusal (missing, malformed, wrong): the response must not tell a prober
    // which of its guesses got further than another.
    if (!ok) throw new ApiError(401, 'unauthorized', UNAUTHORIZED_MESSAGE, null, { 'www-authenticate': 'Bearer realm="memlora-admin"' });
    await next();
  };
}
