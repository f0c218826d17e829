/**
 * What other users of the server pay while it does work that is not a decode step: the serving
 * thread's stalls while a new, large grammar compiles (`--what grammar`) or while an operator's
 * adapter upload is checked, encoded and written (`--what upload`), with that work on its own thread
 * (as the server runs: the guide-compile thread, guide-compiler.ts; the load thread, loader.ts) and
 * on the serving thread (as before: the engine's `guideThread: false`; uploadAdapterBody called here);
 * or while a long prompt is read (`--what prompt`: a 460-token prompt, near the default model's
 * 512-token window), a chunk at a time between decode steps (chunked prefill, as the server runs:
 * MEMLORA_PREFILL_CHUNK's default of 128) and whole in one call (as before: prefillChunk 0); or
 * while a scoring request with such a context is read (`--what score`: POST /v1/score's work, a
 * 4-token text after the 460-token context, with the base model's pass beside it), the same two ways.
 * Two real engines (createServeServices, the default model, adapters off) in one process, each driven
 * in interleaved slices by `--connections` clients streaming plain greedy replies of 32 tokens while
 * one more client, every `--every` ms, sends a guided request with a grammar never seen before (200
 * rules of 300-byte literals: about 60,000 states, hundreds of ms to compile), or uploads an adapter
 * of rank 384 on all six layers (23.6 MB, about the largest an upload may be) as multipart/form-data,
 * as a PEFT client sends it (its bytes copied before the slice, as a request body arrives before the
 * upload starts). Per engine: the longest and the
 * 99th-percentile delay of the serving thread's event loop (perf_hooks), the plain rows' gaps between
 * tokens (p50 / p99 / max), their tokens per second, and the intrusions' own time; the ratios
 * serving/thread are measured in one run.
 *
 *   npx tsx bench/serving-stalls.ts [--what grammar|upload|prompt|score] [--rounds 4] [--seconds 6] [--connections 8] [--every 1000]
 *                                   [--chunk 128] (prompt, score: the chunked engine's chunk; results then in serving-stalls-<what>-chunk<N>.*)
 *
 * Writes bench/results/serving-stalls-<what>.json and serving-stalls-<what>.svg (the tail of the gaps
 * between plain tokens: the share of gaps at least so long, both axes logarithmic).
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { loadConfig, repoRoot } from '../src/config.js';
import { openDb } from '../src/db/client.js';
import { Registry } from '../src/metrics.js';
import { initAdapter } from '../src/lora/adapter.js';
import { encodeAdapter } from '../src/lora/format.js';
import { readHfConfig } from '../src/model/import.js';
import { loraTargets } from '../src/model/weights.js';
import { uploadAdapterBody } from '../src/serve/adapter-upload.js';
import { lineChart } from '../src/plot/svg.js';
import { type ServeServices, createServeServices } from '../src/serve/services.js';
import type { ServeRequest } from '../src/serve/types.js';
import { flag, numberArg, stringArg } from './args.js';
import { runUnderServeFlags } from './in-process.js';

runUnderServeFlags();
const ROUNDS = numberArg('rounds', 4);
const SECONDS = numberArg('seconds', 6);
const CONNECTIONS = numberArg('connections', 8);
const EVERY_MS = numberArg('every', 1000);
const WHAT = stringArg('what', 'grammar');
if (!['grammar', 'upload', 'prompt', 'score'].includes(WHAT)) throw new Error(`--what is grammar, upload, prompt or score, got ${WHAT}`);
/** Prompts read a chunk at a time, or whole: --what prompt and score. */
const CHUNKING = WHAT === 'prompt' || WHAT === 'score';
/** The chunk of chunked prefill (`--what prompt|score`): the server's default, or `--chunk`. */
const CHUNK = numberArg('chunk', Number(loadConfig({}).prefillChunk));
/** A chunk other than the default writes results of their own. */
const OUT_TAG = CHUNKING && flag('chunk') ? `-chunk${CHUNK}` : '';
const progress = (msg: string) => process.stderr.write(`${msg}\n`);

const dir = mkdtempSync(join(tmpdir(), 'memlora-guide-compile-'));
const config = { ...loadConfig({ MEMLORA_DATA_DIR: dir, MEMLORA_ADAPTER_DIR: join(dir, 'adapters'), MEMLORA_CACHE_RESTORE: 'off', MEMLORA_PREFIX_CACHE_BYTES: '0' }) };
const logger = { info() {}, warn: (msg: string) => progress(`engine warning: ${msg}`), error: (msg: string) => progress(`engine error: ${msg}`) };
/** thread: the work done apart (its own thread; for prompts, a chunk at a time), as the server runs; serving: as before. */
type Phase = 'thread' | 'serving';
const LABEL: Record<Phase, string> = CHUNKING ? { thread: 'chunked', serving: 'whole' } : { thread: 'thread', serving: 'serving' };
async function engine(guideThread: boolean): Promise<ServeServices> {
  const prefillChunk = !CHUNKING || guideThread ? CHUNK : 0;
  const s = await createServeServices({ config, db: openDb(config.dbFile), metrics: new Registry(), logger }, { adapters: false, consistency: false, engine: { guideThread, prefillChunk } });
  if (!s?.generate || !(await s.loaded)) throw new Error(`no model at ${config.modelPath}`);
  return s;
}
const engines: Record<Phase, ServeServices> = { thread: await engine(true), serving: await engine(false) };
const cfg = readHfConfig(config.modelPath);
// The upload as a PEFT-style client sends it: multipart/form-data.
const form = new FormData();
form.append('adapter_model.safetensors', new Blob([encodeAdapter(initAdapter({ layers: Array(cfg.nLayers).fill(true), n: 4, r: 96 }, loraTargets(cfg), 1), engines.thread.store!.model).weights]));
const uploadRequest = new Request('http://upload/', { method: 'POST', body: form });
const upload = { body: new Uint8Array(await uploadRequest.arrayBuffer()), contentType: uploadRequest.headers.get('content-type')! };

let grammars = 0;
/** A grammar never compiled before in this process. */
function freshGrammar(): string {
  const tag = `g${grammars++}`;
  return ['root ::= ' + Array.from({ length: 200 }, (_, i) => `r${i}`).join(' | '), ...Array.from({ length: 200 }, (_, i) => `r${i} ::= "${tag} ${'abcdefghij'.repeat(30)}" [a-z]{1,8} "${i}"`)].join('\n');
}
/** About 460 tokens of text, each request's its own (no prefix cache here anyway), cut to its last 460 tokens. */
let prompts = 0;
const longPrompt = (): ServeRequest => ({
  ...plain(-1),
  userId: 'reader',
  stream: false,
  maxTokens: 4,
  prompt: Array.from({ length: 400 }, (_, i) => `word${(i * 7 + prompts++) % 997}`).join(' '),
  truncatePromptTokens: 460,
});
const plain = (k: number): ServeRequest => ({ userId: `plain-${k}`, prompt: 'Once upon a time', maxTokens: 32, ignoreEos: true, temperature: 0, topP: 1, stop: [], stream: true, mode: 'vanilla' });

interface Slice {
  loopMaxMs: number;
  loopP99Ms: number;
  gaps: number[];
  tokens: number;
  guidedMs: number[];
  seconds: number;
}
async function slice(phase: Phase): Promise<Slice> {
  const svc = engines[phase];
  const g = svc.generate!;
  // The upload's body, copied before the slice (a request's body arrives before its upload starts).
  const bodies = WHAT === 'upload' ? Array.from({ length: Math.ceil((SECONDS * 1000) / EVERY_MS) + 1 }, () => ({ ...upload, body: upload.body.slice() })) : [];
  /** One intrusion: a guided request with a new grammar, or an upload (its files removed after). */
  const intrude = async (): Promise<void> => {
    if (WHAT === 'grammar') {
      await g.generate({ ...plain(-1), userId: 'guided', stream: false, ignoreEos: false, maxTokens: 4, guidedGrammar: freshGrammar() }, new AbortController().signal);
      return;
    }
    if (WHAT === 'prompt') {
      const r = await g.generate(longPrompt(), new AbortController().signal);
      if (r.usage.promptTokens < 400) throw new Error(`the long prompt has only ${r.usage.promptTokens} tokens`);
      return;
    }
    if (WHAT === 'score') {
      // The context as ids: the long prompt's last 460 tokens, as /tokenize gives them.
      const ids = g.tokenize({ prompt: longPrompt().prompt }).tokens.slice(-460);
      const r = await g.score({ userId: 'scorer', prompt: ids, text: ' and the boats came home.', mode: 'vanilla', compare: true }, new AbortController().signal);
      if (r.usage.contextTokens < 400) throw new Error(`the long context has only ${r.usage.contextTokens} tokens`);
      return;
    }
    const body = bodies.pop()!;
    const written = phase === 'thread' ? await svc.reader!.upload('uploader', body) : await uploadAdapterBody(svc.store!, 'uploader', body);
    rmSync(join(svc.store!.root, written.path), { recursive: true, force: true });
  };
  const gaps: number[] = [];
  const guidedMs: number[] = []; // each intrusion's own time
  let tokens = 0;
  let stop = false;
  const client = async (k: number): Promise<void> => {
    while (!stop) {
      let last = 0;
      for await (const ev of g.stream(plain(k), new AbortController().signal)) {
        if (ev.type !== 'token') continue;
        const t = performance.now();
        if (last > 0 && !stop) gaps.push(t - last);
        last = t;
        if (!stop) tokens++;
      }
    }
  };
  const guided = async (): Promise<void> => {
    while (!stop) {
      await new Promise((r) => setTimeout(r, EVERY_MS));
      if (stop) break;
      const t = performance.now();
      await intrude();
      guidedMs.push(performance.now() - t);
    }
  };
  const clients = [...Array.from({ length: CONNECTIONS }, (_, k) => client(k)), guided()];
  const h = monitorEventLoopDelay({ resolution: 1 });
  h.enable();
  const t0 = performance.now();
  await new Promise((r) => setTimeout(r, SECONDS * 1000));
  stop = true;
  h.disable();
  const seconds = (performance.now() - t0) / 1000;
  await Promise.all(clients);
  return { loopMaxMs: h.max / 1e6, loopP99Ms: h.percentile(99) / 1e6, gaps, tokens, guidedMs, seconds };
}

/** The largest of many (a spread of 100,000 gaps overflows the stack). */
const longest = (xs: number[]): number => xs.reduce((a, b) => Math.max(a, b), Number.NEGATIVE_INFINITY);
const pct = (xs: number[], p: number): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length ? s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))] : Number.NaN;
};
// The scoring graphs (every position's logits) compile at their first use, not at the server's start:
// one scoring request per engine first, so that the slices measure what every later one costs.
if (WHAT === 'score') {
  for (const phase of ['thread', 'serving'] as Phase[]) {
    const ids = engines[phase].generate!.tokenize({ prompt: longPrompt().prompt }).tokens.slice(-460);
    for (const mode of ['vanilla', 'auto'] as const) await engines[phase].generate!.score({ userId: 'scorer', prompt: ids, text: ' and the boats came home.', mode, compare: true }, new AbortController().signal);
  }
}
const slices: Record<Phase, Slice[]> = { thread: [], serving: [] };
for (let r = 0; r < ROUNDS; r++) {
  for (const phase of (r % 2 === 0 ? ['thread', 'serving'] : ['serving', 'thread']) as Phase[]) {
    const s = await slice(phase);
    slices[phase].push(s);
    progress(`round ${r + 1}/${ROUNDS} ${LABEL[phase].padEnd(7)}: loop delay max ${s.loopMaxMs.toFixed(1)} ms, token gaps p99 ${pct(s.gaps, 99).toFixed(1)} ms, max ${longest(s.gaps).toFixed(1)} ms, ${(s.tokens / s.seconds).toFixed(0)} tok/s, ${s.guidedMs.length} ${{ grammar: 'guided requests', upload: 'uploads', prompt: 'long prompts', score: 'long scoring requests' }[WHAT]}`);
  }
}
const summary = (phase: Phase) => {
  const ss = slices[phase];
  const gaps = ss.flatMap((s) => s.gaps);
  const guided = ss.flatMap((s) => s.guidedMs);
  return {
    loopDelayMaxMs: +Math.max(...ss.map((s) => s.loopMaxMs)).toFixed(1),
    loopDelayP99Ms: +pct(ss.map((s) => s.loopP99Ms), 50).toFixed(1),
    tokenGapP50Ms: +pct(gaps, 50).toFixed(2),
    tokenGapP99Ms: +pct(gaps, 99).toFixed(1),
    tokenGapMaxMs: +longest(gaps).toFixed(1),
    /** The median over slices of each slice's longest gap: less at the mercy of one pause than the longest of all. */
    tokenGapSliceMaxMedianMs: +pct(ss.map((s) => longest(s.gaps)), 50).toFixed(1),
    plainTokensPerS: +(ss.reduce((a, s) => a + s.tokens, 0) / ss.reduce((a, s) => a + s.seconds, 0)).toFixed(1),
    intrusions: guided.length,
    intrusionP50Ms: +pct(guided, 50).toFixed(0),
  };
};
const thread = summary('thread');
const serving = summary('serving');
const result = {
  command: `npx tsx bench/serving-stalls.ts --what ${WHAT} --rounds ${ROUNDS} --seconds ${SECONDS} --connections ${CONNECTIONS} --every ${EVERY_MS}${OUT_TAG ? ` --chunk ${CHUNK}` : ''}`,
  date: new Date().toISOString().slice(0, 10),
  note:
    WHAT === 'grammar'
      ? 'serving: guides compiled on the serving thread (guideThread false); thread: on the guide-compile thread, as the server runs. Intrusion: a guided request with a new grammar, its time to the reply. Loop delay p99 is the median over slices.'
      : WHAT === 'upload'
        ? "serving: multipart uploads read apart, checked, encoded and written on the serving thread (uploadAdapterBody); thread: on the load thread (the loader's upload), as the server runs. Intrusion: a 23.6 MB multipart upload, its time until written. Loop delay p99 is the median over slices."
        : `whole: each prompt read in one call before the next decode step (prefillChunk 0); chunked: ${CHUNK} tokens at a time, one chunk before each decode step (MEMLORA_PREFILL_CHUNK's default), as the server runs. Intrusion: ${WHAT === 'prompt' ? 'a request with a 460-token prompt and a 4-token reply, its time to the reply' : 'a scoring request of a 460-token context and a short text, with compare (a vanilla user: one pass), its time to the result'}. Loop delay p99 is the median over slices.`,
  [LABEL.thread]: thread,
  [LABEL.serving]: serving,
  ratios: {
    loopDelayMax: +(serving.loopDelayMaxMs / thread.loopDelayMaxMs).toFixed(2),
    tokenGapP99: +(serving.tokenGapP99Ms / thread.tokenGapP99Ms).toFixed(2),
    tokenGapMax: +(serving.tokenGapMaxMs / thread.tokenGapMaxMs).toFixed(2),
    plainTokensPerS: +(thread.plainTokensPerS / serving.plainTokensPerS).toFixed(3),
  },
};
console.log(JSON.stringify(result, null, 2));
mkdirSync(join(repoRoot, 'bench', 'results'), { recursive: true });
writeFileSync(join(repoRoot, 'bench', 'results', `serving-stalls-${WHAT}${OUT_TAG}.json`), `${JSON.stringify(result, null, 2)}\n`);

/** The share of gaps at least x long, at every gap of the longest 200 and at 200 evenly ranked others. */
function tail(gaps: number[]): Array<[number, number]> {
  const g = [...gaps].sort((a, b) => a - b);
  const n = g.length;
  const ranks = new Set<number>();
  for (let k = 0; k < 200; k++) ranks.add(Math.floor((k / 200) * Math.max(0, n - 200)));
  for (let i = Math.max(0, n - 200); i < n; i++) ranks.add(i);
  return [...ranks].sort((a, b) => a - b).map((i) => [g[i], (n - i) / n]);
}
const label = { grammar: 'a new 60,000-state grammar every second', upload: 'a 23.6 MB multipart upload every second', prompt: 'a 460-token prompt every second', score: 'a 460-token scoring request every second' }[WHAT]!;
writeFileSync(
  join(repoRoot, 'bench', 'results', `serving-stalls-${WHAT}${OUT_TAG}.svg`),
  lineChart({
    title: `Gaps between plain rows' tokens, ${label}`,
    x: { label: 'gap between tokens (ms)', log: true },
    y: { label: 'share of gaps at least this long', log: true },
    series: [
      { name: `${{ grammar: 'compiled on its own thread', upload: 'uploaded on its own thread', prompt: `read ${CHUNK} tokens at a time`, score: `read ${CHUNK} tokens at a time` }[WHAT]} (max ${thread.tokenGapMaxMs} ms)`, points: tail(slices.thread.flatMap((s) => s.gaps)) },
      { name: `${CHUNKING ? 'read whole' : 'on the serving thread'} (max ${serving.tokenGapMaxMs} ms)`, points: tail(slices.serving.flatMap((s) => s.gaps)) },
    ],
  }),
);
rmSync(dir, { recursive: true, force: true });
process.exit(0);
