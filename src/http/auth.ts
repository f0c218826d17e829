/**
 * Bearer-token checks: the admin token for /v1/admin, the API key (when one is configured) for the
 * client routes. Constant-time over SHA-256 digests, so neither content nor length leaks.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import type { MiddlewareHandler } from 'hono';
import type { AppEnv } from './context.js';
import { ApiError } from './errors.js';

const digest = (s: string): Buffer => createHash('sha256').update(s, 'utf8').digest();

/** True when `given` equals `expected`; compares fixed-size digests with timingSafeEqual. */
export function tokenMatches(given: string, expected: string): boolean {
  return timingSafeEqual(digest(given), digest(expected));
}

/** The bearer token of a request's Authorization header ('' when there is none). */
function bearer(header: string | undefined): string {
  const m = /^Bearer[ ]+(\S+)\s*$/i.exec(header ?? '');
  return m ? m[1] : '';
}

/**
 * Refuse requests whose bearer token is none of `accepted` with 401 unauthorized; one answer for every
 * refusal (missing, malformed, wrong), so that a prober cannot tell which of its guesses got further.
 */
function requireBearer(accepted: readonly string[], message: string, realm: string): MiddlewareHandler<AppEnv> {
  // Compare against something even when nothing is configured, so the refusal takes the same time.
  const references = accepted.length > 0 ? accepted : [`unconfigured:${Math.random()}`];
  return async (c, next) => {
    const given = bearer(c.req.header('authorization'));
    // Every reference is compared, whichever matches.
    const matches = references.map((r) => tokenMatches(given, r));
    if (!(given !== '' && accepted.length > 0 && matches.includes(true))) {
      throw new ApiError(401, 'unauthorized', message, null, { 'www-authenticate': `Bearer realm="${realm}"` });
    }
    await next();
  };
}

/** `expected` null means no token is configured: every admin request is refused. */
export function requireAdmin(expected: string | null): MiddlewareHandler<AppEnv> {
  return requireBearer(expected === null ? [] : [expected], 'admin routes need "Authorization: Bearer <MEMLORA_ADMIN_TOKEN>"; the token was missing or wrong', 'memlora-admin');
}

/** The client routes with an API key configured: that key, or the admin token. */
export function requireApiKey(apiKey: string, adminToken: string | null): MiddlewareHandler<AppEnv> {
  const accepted = adminToken === null ? [apiKey] : [apiKey, adminToken];
  return requireBearer(accepted, 'this server needs "Authorization: Bearer <MEMLORA_API_KEY>" (an OpenAI client\'s api key); the key was missing or wrong', 'memlora');
}
