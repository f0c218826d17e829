/**
 * Load test of a running memlora server (yours: a GPU host, a staging deployment), where
 * bench/swap.ts starts its own servers on a generated workspace.
 *
 *   npx tsx bench/load.ts [--url http://127.0.0.1:8080] [--token $MEMLORA_ADMIN_TOKEN] [--api-key $MEMLORA_API_KEY]
 *                         [--users alice,bob,...] [--max-users 1000] [--seconds 30] [--slice 5]
 *                         [--connections 16] [--max-tokens 16] [--fixed-length] [--seed 1] [--draws 1] [--cold | --warm]
 *                         [--out bench/results/load]
 *
 * The users are the ids given, or the server's first `max-users` users (GET /v1/users); requests draw
 * them with Zipf(1.0) popularity (rank k weighted 1/k, ranks in a random order drawn from `seed`; the
 * requests' draws from `draws`, so a second run can keep the popular users and draw other requests) and
 * post /v1/generate (a short chat prompt, greedy, `max-tokens` tokens at most; with --fixed-length
 * exactly that many, `ignoreEos`, so that every request does the same work whatever each user's
 * model answers) on `connections` closed-loop connections. With the admin token the adapter cache is prepared first (`--cold`: emptied with
 * DELETE /v1/admin/cache; `--warm`: every user's adapter loaded with POST /v1/admin/cache/warm) and
 * read with GET /v1/admin/cache after every slice of `slice` seconds, so the run shows how the hit rate
 * and throughput move as the cache fills. At the end it reads the cache's hit curve (GET
 * /v1/admin/cache/curve: the hit rate every cache size would have had, from the last full drop, so
 * --cold measures this load alone). Prints a line per slice and a summary; writes `<out>.json`,
 * `<out>.svg` (throughput and hit rate per slice) and `<out>-curve.svg` (hit rate by cache size).
 *
 * It measures one server as it is configured; the throughput ratio against adapters disabled (issue
 * 7's targets) is bench/swap.ts's, which starts such a server itself (a server without adapters, which
 * answers the cache routes 409 adapters_disabled, is measured here without cache figures).
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { cacheContentsSchema, cacheCurveSchema, cacheDropSchema, userPageSchema, warmResultSchema } from '../src/http/schemas.js';
import { lineChart } from '../src/plot/svg.js';
import { Rng } from '../src/util/rng.js';
import { flag, numberArg, stringArg } from './args.js';
import { type AutocannonResult, driveGenerate } from './http-load.js';
import { prompts, zipfSampler } from './swap-workspace.js';

const URL_ = stringArg('url', 'http://127.0.0.1:8080').replace(/\/$/, '');
const TOKEN = stringArg('token', process.env.MEMLORA_ADMIN_TOKEN ?? '');
/** The server's client key (MEMLORA_API_KEY), sent with the client routes' requests when given. */
const API_KEY = stringArg('api-key', process.env.MEMLORA_API_KEY ?? '');
const client = (): Record<string, string> => (API_KEY ? { authorization: `Bearer ${API_KEY}` } : {});
const MAX_USERS = numberArg('max-users', 1000);
const SECONDS = numberArg('seconds', 30);
const SLICE = numberArg('slice', 5);
const CONNECTIONS = numberArg('connections', 16);
const MAX_TOKENS = numberArg('max-tokens', 16);
const FIXED_LENGTH = flag('fixed-length');
const SEED = numberArg('seed', 1);
/** Seed of the request draws; the users' popularity order comes from --seed (the same users stay popular across runs). */
const DRAWS = numberArg('draws', SEED);
const OUT = stringArg('out', 'bench/results/load');

const progress = (line: string): void => void process.stderr.write(`${line}\n`);
const r3 = (x: number): number => Math.round(x * 1000) / 1000;
const admin = (): Record<string, string> => ({ authorization: `Bearer ${TOKEN}` });

async function call(path: string, init: RequestInit = {}): Promise<unknown> {
  const res = await fetch(`${URL_}${path}`, init);
  const body = await res.json().catch(() => null);
  if (!res.ok) throw new Error(`${init.method ?? 'GET'} ${path} answered ${res.status}: ${JSON.stringify(body)}`);
  return body;
}

/** The ids given with --users, or the server's first MAX_USERS users. */
async function users(): Promise<string[]> {
  const given = stringArg('users', '');
  if (given) {
    const ids = [...new Set(given.split(',').filter(Boolean))];
    const unknown: string[] = [];
    for (const id of ids) if ((await fetch(`${URL_}/v1/users/${encodeURIComponent(id)}`, { headers: client() })).status !== 200) unknown.push(id);
    if (unknown.length > 0) throw new Error(`no such users on ${URL_}: ${unknown.slice(0, 10).join(', ')}${unknown.length > 10 ? ` and ${unknown.length - 10} more` : ''}`);
    return ids;
  }
  const ids: string[] = [];
  let cursor: string | null = null;
  do {
    const q: string = `?limit=${Math.min(1000, MAX_USERS - ids.length)}${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`;
    const page = userPageSchema.parse(await call(`/v1/users${q}`, { headers: client() }));
    ids.push(...page.items.map((u) => u.id));
    cursor = page.nextCursor;
  } while (cursor && ids.length < MAX_USERS);
  return ids;
}

type CacheCounters = ReturnType<typeof cacheContentsSchema.parse>['counters'];

/** Whether the server has an adapter cache to read: not without the token, nor when it serves without adapters. */
let cacheReadable = TOKEN !== '';

async function cacheCounters(): Promise<CacheCounters | null> {
  if (!cacheReadable) return null;
  const res = await fetch(`${URL_}/v1/admin/cache?limit=1`, { headers: admin() });
  if (res.status === 409) {
    // adapters_disabled: a server started without adapters (the baseline of a throughput ratio).
    cacheReadable = false;
    progress('cache: this server serves without adapters; no cache figures');
    return null;
  }
  if (!res.ok) throw new Error(`GET /v1/admin/cache answered ${res.status}: ${await res.text()}`);
  return cacheContentsSchema.parse(await res.json()).counters;
}

interface Slice {
  /** End of the slice, seconds since the load started. */
  atS: number;
  durationS: number;
  /** Replies with status 200. */
  requests: number;
  rps: number;
  p50Ms: number;
  p99Ms: number;
  non2xx: number;
  /** Responses by status code. */
  statuses: Record<string, number>;
  errors: number;
  /** Hit rate of the cache lookups in this slice (null without the token, or no lookups). */
  hitRate: number | null;
  loads: number | null;
  evictions: number | null;
}

function sliceOf(atS: number, res: AutocannonResult, before: CacheCounters | null, after: CacheCounters | null): Slice {
  const d = (k: 'hits' | 'misses' | 'loads' | 'evictions'): number | null => (before && after ? after[k] - before[k] : null);
  const hits = d('hits');
  const misses = d('misses');
  const ok = res.statusCodeStats['200']?.count ?? 0;
  return {
    atS,
    durationS: res.duration,
    requests: ok,
    rps: r3(ok / res.duration),
    p50Ms: res.latency.p50,
    p99Ms: res.latency.p99,
    non2xx: res.non2xx,
    statuses: Object.fromEntries(Object.entries(res.statusCodeStats).map(([code, v]) => [code, v.count])),
    errors: res.errors + res.timeouts,
    hitRate: hits !== null && misses !== null && hits + misses > 0 ? r3(hits / (hits + misses)) : null,
    loads: d('loads'),
    evictions: d('evictions'),
  };
}

async function main(): Promise<void> {
  const health = await fetch(`${URL_}/readyz`).catch((e: unknown) => {
    throw new Error(`no server at ${URL_}: ${e instanceof Error ? e.message : String(e)}`);
  });
  if (health.status !== 200) throw new Error(`${URL_}/readyz answered ${health.status}: ${await health.text()}`);
  const ids = await users();
  if (ids.length === 0) throw new Error('no users: give --users or create some first');
  if ((flag('cold') || flag('warm')) && !TOKEN) throw new Error('--cold and --warm need the admin token (--token or MEMLORA_ADMIN_TOKEN)');
  if (flag('cold')) {
    const dropped = cacheDropSchema.parse(await call('/v1/admin/cache', { method: 'DELETE', headers: admin() })).dropped;
    progress(`cold: dropped ${dropped.adapters} adapters (${(dropped.bytes / 2 ** 20).toFixed(1)} MiB) from the cache`);
  }
  if (flag('warm')) {
    const t0 = performance.now();
    let loaded = 0;
    for (let i = 0; i < ids.length; i += 1000) {
      const body = warmResultSchema.parse(
        await call('/v1/admin/cache/warm', { method: 'POST', headers: { ...admin(), 'content-type': 'application/json' }, body: JSON.stringify({ userIds: ids.slice(i, i + 1000) }) }),
      );
      loaded += body.counts.loaded;
      progress(`warm: ${Math.min(i + 1000, ids.length)}/${ids.length} users, ${JSON.stringify(body.counts)}, cache ${(body.cache.bytes / 2 ** 20).toFixed(1)}/${(body.cache.maxBytes / 2 ** 20).toFixed(1)} MiB`);
    }
    progress(`warm: ${loaded} adapters loaded in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
  }

  const rng = new Rng(SEED);
  const sample = zipfSampler(ids, rng, DRAWS === SEED ? rng : new Rng(DRAWS));
  const texts = prompts(rng);
  progress(`load: ${ids.length} users (Zipf 1.0), ${CONNECTIONS} connections, ${FIXED_LENGTH ? 'exactly ' : 'up to '}${MAX_TOKENS} tokens a reply, ${SECONDS} s in slices of ${SLICE} s against ${URL_}${TOKEN ? '' : ' (no admin token: no cache figures)'}`);
  const slices: Slice[] = [];
  const first = await cacheCounters();
  let before = first;
  for (let at = 0; at < SECONDS; ) {
    const seconds = Math.min(SLICE, SECONDS - at);
    const res = await driveGenerate({ url: URL_, connections: CONNECTIONS, seconds, maxTokens: MAX_TOKENS, ignoreEos: FIXED_LENGTH, user: sample, prompts: texts, rng, apiKey: API_KEY || undefined });
    at += seconds;
    const after = await cacheCounters();
    const s = sliceOf(at, res, before, after);
    slices.push(s);
    before = after;
    progress(`${String(at).padStart(4)} s: ${s.rps} req/s, p50 ${s.p50Ms} ms, p99 ${s.p99Ms} ms, hit rate ${s.hitRate ?? '-'}, loads ${s.loads ?? '-'}, evictions ${s.evictions ?? '-'}, non-2xx ${s.non2xx}, errors ${s.errors}`);
  }

  const last = await cacheCounters();
  const whole = (k: 'hits' | 'misses' | 'loads' | 'evictions'): number | null => (first && last ? last[k] - first[k] : null);
  const hits = whole('hits');
  const lookups = hits === null ? null : hits + whole('misses')!;
  const result = {
    url: URL_,
    users: ids.length,
    connections: CONNECTIONS,
    maxTokens: MAX_TOKENS,
    fixedLength: FIXED_LENGTH,
    seconds: SECONDS,
    prepared: flag('cold') ? 'cold' : flag('warm') ? 'warm' : 'as found',
    rps: r3(slices.reduce((n, s) => n + s.requests, 0) / slices.reduce((n, s) => n + s.durationS, 0)),
    hitRate: lookups ? r3(hits! / lookups) : null,
    loads: whole('loads'),
    evictions: whole('evictions'),
    non2xx: slices.reduce((n, s) => n + s.non2xx, 0),
    statuses: slices.reduce<Record<string, number>>((acc, s) => {
      for (const [code, n] of Object.entries(s.statuses)) acc[code] = (acc[code] ?? 0) + n;
      return acc;
    }, {}),
    errors: slices.reduce((n, s) => n + s.errors, 0),
    slices,
  };
  // The hit rate every cache size would have had on this load (from the last full drop: --cold starts it here).
  const curve = cacheReadable ? cacheCurveSchema.parse(await call('/v1/admin/cache/curve', { headers: admin() })) : null;
  mkdirSync(dirname(OUT), { recursive: true });
  writeFileSync(`${OUT}.json`, `${JSON.stringify({ ...result, curve }, null, 2)}\n`);
  if (curve) writeFileSync(`${OUT}-curve.svg`, await (await fetch(`${URL_}/v1/admin/cache/curve?format=svg`, { headers: admin() })).text());
  const maxRps = Math.max(...slices.map((s) => s.rps), 1);
  writeFileSync(
    `${OUT}.svg`,
    lineChart({
      title: `${ids.length} users, Zipf 1.0, ${CONNECTIONS} connections, ${result.prepared} cache: best slice ${r3(maxRps)} req/s`,
      x: { label: 'seconds into the load', min: 0 },
      y: { label: 'share of the best slice / hit rate', min: 0, max: 1 },
      markers: true,
      series: [
        { name: 'req/s ÷ best slice', points: slices.map((s) => [s.atS, s.rps / maxRps]) },
        ...(cacheReadable ? [{ name: 'cache hit rate', points: slices.filter((s) => s.hitRate !== null).map((s) => [s.atS, s.hitRate!] as [number, number]) }] : []),
      ],
    }),
  );
  console.log(`\n${URL_}: ${result.rps} req/s over ${SECONDS} s (${result.prepared} cache), hit rate ${result.hitRate ?? '-'}, ${result.loads ?? '-'} loads, ${result.evictions ?? '-'} evictions, ${result.non2xx} non-2xx, ${result.errors} errors; responses by status ${JSON.stringify(result.statuses)}`);
  if (curve) {
    const mib = (b: number | null): string => (b === null ? 'unreachable' : `${(b / 2 ** 20).toFixed(1)} MiB`);
    console.log(`hit curve since ${curve.since} (${curve.lookups} lookups, ${curve.coldLookups} cold): ${curve.hitRateAtMaxBytes === null ? '-' : r3(curve.hitRateAtMaxBytes)} at the configured ${mib(curve.maxBytes)}; ${curve.sizeFor.map((t) => `${t.hitRate * 100}% at ${mib(t.bytes)}`).join(', ')}`);
  }
  console.log(`wrote ${OUT}.json and ${OUT}.svg${curve ? ` and ${OUT}-curve.svg` : ''}`);
}

main().catch((e) => {
  process.stderr.write(`${e instanceof Error ? e.message : String(e)}\n`);
  process.exit(1);
});
