/**
 * The HTTP load generator of the serving benches: autocannon's closed-loop connections posting
 * /v1/generate for users drawn by the caller (Zipf popularity in bench/swap.ts and bench/load.ts),
 * each request with a prompt drawn from `prompts`, greedy, at most `maxTokens` tokens (exactly that
 * many with `ignoreEos`).
 */
import { createRequire } from 'node:module';
import type { Rng } from '../src/util/rng.js';

export interface AutocannonResult {
  duration: number;
  errors: number;
  timeouts: number;
  non2xx: number;
  requests: { total: number; average: number };
  latency: { p50: number; p90: number; p99: number; average: number; max: number };
  statusCodeStats: Record<string, { count: number }>;
}

type Autocannon = (opts: Record<string, unknown>) => Promise<AutocannonResult>;
const autocannon = createRequire(import.meta.url)('autocannon') as Autocannon;

export interface GenerateLoad {
  url: string;
  connections: number;
  seconds: number;
  maxTokens: number;
  /** Every reply runs to maxTokens (the end token held back), so all requests do the same work. */
  ignoreEos?: boolean;
  /** The user id of the next request. */
  user: () => string;
  prompts: readonly string[];
  rng: Rng;
  /** The server's MEMLORA_API_KEY, when it has one. */
  apiKey?: string;
}

/** Post /v1/generate on `connections` connections for `seconds` seconds. */
export function driveGenerate(load: GenerateLoad): Promise<AutocannonResult> {
  const { prompts, rng } = load;
  return autocannon({
    url: load.url,
    connections: load.connections,
    duration: load.seconds,
    timeout: 60,
    requests: [
      {
        method: 'POST',
        path: '/v1/generate',
        headers: { 'content-type': 'application/json', ...(load.apiKey ? { authorization: `Bearer ${load.apiKey}` } : {}) },
        setupRequest: (r: Record<string, unknown>) => ({
          ...r,
          body: JSON.stringify({ userId: load.user(), prompt: prompts[rng.int(prompts.length)], maxTokens: load.maxTokens, temperature: 0, ...(load.ignoreEos ? { ignoreEos: true } : {}) }),
        }),
      },
    ],
  });
}
