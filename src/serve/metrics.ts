/** The engine's Prometheus metrics, on the server's shared registry. Labels: `mode` is the served mode. */
import type { Counter, Gauge, Histogram, Registry } from '../metrics.js';

const LATENCY_BUCKETS = [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60];
const STEP_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1];
const ROW_BUCKETS = [1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 128];
const RANK_BUCKETS = [0, 16, 64, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768];

export interface EngineMetrics {
  queueDepth: Gauge;
  activeRows: Gauge;
  poolRankLayers: Histogram;
  poolBytes: Gauge;
  batchRows: Histogram;
  stepSeconds: Histogram;
  prefillSeconds: Histogram;
  prefillChunks: Counter;
  tokens: Counter;
  scoredTokens: Counter;
  promptTokens: Counter;
  requests: Counter;
  rejected: Counter;
  fallbacks: Counter;
  poolUnitWrites: Counter;
  poolUnitMoves: Counter;
  requestSeconds: Histogram;
  ttftSeconds: Histogram;
  queueSeconds: Histogram;
  guideCompileSeconds: Histogram;
  guideCompileFallbacks: Counter;
}

export function engineMetrics(reg: Registry, prefix = 'memlora_generate'): EngineMetrics {
  return {
    queueDepth: reg.gauge(`${prefix}_queue_depth`, 'Requests waiting for a batch row.'),
    activeRows: reg.gauge(`${prefix}_active_rows`, 'Rows in the decode batch.'),
    poolRankLayers: reg.histogram(`${prefix}_pool_rank_layers`, 'LoRA work per decode step: the sum over layers of the rows\' ranks, each rounded up to the pool unit (0: no adapter in the batch).', [], RANK_BUCKETS),
    poolBytes: reg.gauge(`${prefix}_pool_bytes`, 'Bytes allocated for the adapter unit pool of the decode batch.'),
    batchRows: reg.histogram(`${prefix}_batch_rows`, 'Rows per decode step.', [], ROW_BUCKETS),
    stepSeconds: reg.histogram(`${prefix}_step_seconds`, 'Time of one decode step of the whole batch, seconds.', [], STEP_BUCKETS),
    prefillSeconds: reg.histogram(`${prefix}_prefill_seconds`, 'Time of one admission of joiners (their batched prefill, and the extend call of those continuing a cached conversation) or of one chunk of a long prompt, seconds.', [], STEP_BUCKETS),
    prefillChunks: reg.counter(`${prefix}_prefill_chunks_total`, 'Pieces of long prompts run between decode steps (chunked prefill): a prompt with more new tokens than the chunk size is read a chunk at a time, one chunk per step of the batch.'),
    tokens: reg.counter(`${prefix}_tokens_total`, 'Tokens generated.', ['mode']),
    scoredTokens: reg.counter(`${prefix}_scored_tokens_total`, 'Tokens scored (POST /v1/score: their log-probabilities computed, none generated).', ['mode']),
    promptTokens: reg.counter(`${prefix}_prompt_tokens_total`, 'Prompt tokens admitted: computed by a prefill or extend call, or cached (keys and values reused from the prefix cache).', ['source']),
    requests: reg.counter(`${prefix}_requests_total`, 'Requests finished, by served mode and finish reason (scored: a scoring request).', ['mode', 'finish']),
    rejected: reg.counter(`${prefix}_rejected_total`, 'Requests refused, by error code: before queueing, or when the adapter version a request named failed to load.', ['code']),
    fallbacks: reg.counter(`${prefix}_fallbacks_total`, 'Requests served with a fallback, by reason.', ['reason']),
    poolUnitWrites: reg.counter(`${prefix}_pool_unit_writes_total`, 'Adapter rank units written into the pool when their row joined.'),
    poolUnitMoves: reg.counter(`${prefix}_pool_unit_moves_total`, 'Adapter rank units copied within a layer pool to fill the place of a row that left.'),
    requestSeconds: reg.histogram(`${prefix}_request_seconds`, 'Request latency from arrival to the last token, seconds.', ['mode'], LATENCY_BUCKETS),
    ttftSeconds: reg.histogram(`${prefix}_ttft_seconds`, 'Time from arrival to the first token, seconds.', ['mode'], LATENCY_BUCKETS),
    queueSeconds: reg.histogram(`${prefix}_queue_seconds`, 'Time waiting for a batch row (and the adapter), seconds.', ['mode'], LATENCY_BUCKETS),
    guideCompileSeconds: reg.histogram(`${prefix}_guide_compile_seconds`, "Time the guide-compile thread took to compile a request's guide (a JSON schema, pattern, grammar or tools' calls not compiled before), seconds; the request is queued after it.", [], STEP_BUCKETS),
    guideCompileFallbacks: reg.counter(`${prefix}_guide_compile_fallbacks_total`, "Requests whose guide compiled on the serving thread because the guide-compile thread could not compile it."),
  };
}
