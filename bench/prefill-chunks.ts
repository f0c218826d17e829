/**
 * What reading a long prompt costs the decode batch, in one process on the default model (its
 * serving graphs, weights baked in as the server runs them), timed directly through Model:
 *   - a 460-token prompt read whole (one prefill), alone and padded together with seven 35-token
 *     joiners (as the engine admitted them before chunked prefill), against the seven alone;
 *   - the same prompt read `--chunk` tokens at a time (a prefill, then extend calls after the tokens
 *     read so far, as the engine's readChunk does): each chunk's time (what a decode step waits for)
 *     and their sum;
 *   - a 128-token prompt (the chunk's length: the longest read whole) and seven 10-token ones arriving
 *     together: in one call padded to the longest, and in the engine's groups of like length
 *     (prefill-groups.ts: here the seven, then the one);
 *   - the first decode step of 8 rows after the 460-token row joins seven short ones: in a batch whose
 *     key/value buffers grew into fresh memory, and in one that grew into buffers it kept
 *     (KvBatch relays rows in place), against the steps after it.
 * Medians over `--rounds` interleaved rounds.
 *
 *   npx tsx bench/prefill-chunks.ts [--rounds 9] [--chunk 128]
 *
 * Writes bench/results/prefill-chunks.json.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { repoRoot } from '../src/config.js';
import { concatRowKv, KvBatch, type RowKv } from '../src/model/kv.js';
import { Model } from '../src/model/model.js';
import { lengthGroups } from '../src/serve/prefill-groups.js';
import { numberArg } from './args.js';

const ROUNDS = numberArg('rounds', 9);
const CHUNK = numberArg('chunk', 128);
const LONG = 460;
const SHORT = 35;
const model = Model.load(join(repoRoot, 'models', 'default'), { constWeights: 'auto' });
const ids = (n: number, salt: number): number[] => Array.from({ length: n }, (_, k) => 5 + ((k * 31 + salt * 17) % 2000));
const long = ids(LONG, 1);
const shorts = Array.from({ length: 7 }, (_, i) => ids(SHORT, i + 2));
const mixed = [ids(CHUNK, 9), ...Array.from({ length: 7 }, (_, i) => ids(10, i + 10))];
const mixedGroups = lengthGroups(mixed, (row) => row.length);

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const timed = async <T>(f: () => Promise<T>): Promise<[number, T]> => {
  const t = performance.now();
  const out = await f();
  return [performance.now() - t, out];
};

/** The long prompt a chunk at a time: each chunk's ms. */
async function chunked(): Promise<number[]> {
  const times: number[] = [];
  let past: RowKv | null = null;
  for (let at = 0; at < long.length; at += CHUNK) {
    const piece = long.slice(at, at + CHUNK);
    const [ms, kv] = await timed(async () => (past ? (await model.extend([{ past: past!, ids: piece }])).added[0] : (await model.prefill([piece])).kv[0]));
    times.push(ms);
    // The engine keeps one cache of the tokens read so far (joinParts); concatenating is outside the timing, as between steps.
    past = past ? concatRowKv(model.kvShape, past, kv) : kv;
  }
  return times;
}
const shortKv = (await model.prefill(shorts)).kv;
const longKv = (await model.prefill([long])).kv[0];
/** Decode steps of the seven short rows, then of all eight once the long row joined: ms of the first step after it and of the next three. */
async function afterJoin(batch: KvBatch): Promise<{ first: number; next: number }> {
  shortKv.forEach((kv, i) => batch.add(i, kv));
  for (let s = 0; s < 2; s++) await model.decodeStep(batch, Array(7).fill(7));
  batch.add('long', longKv);
  const [first] = await timed(() => model.decodeStep(batch, Array(8).fill(7)));
  const next: number[] = [];
  for (let s = 0; s < 3; s++) next.push((await timed(() => model.decodeStep(batch, Array(8).fill(7))))[0]);
  for (const id of [...batch.rows]) batch.remove(id);
  return { first, next: median(next) };
}
const kept = new KvBatch(model.kvShape, { maxLength: model.config.maxPositions });
await afterJoin(kept); // grows once into fresh memory; kept from here on

const series: Record<string, number[]> = { wholeAlone: [], wholePadded: [], shortsAlone: [], chunkedSum: [], chunkMax: [], firstStepFresh: [], firstStepKept: [], laterSteps: [], mixedPadded: [], mixedGrouped: [] };
for (let r = 0; r < ROUNDS + 1; r++) {
  const [alone] = await timed(() => model.prefill([long]));
  const [padded] = await timed(() => model.prefill([long, ...shorts]));
  const [few] = await timed(() => model.prefill(shorts));
  const chunks = await chunked();
  const [padMixed] = await timed(() => model.prefill(mixed));
  const [groupMixed] = await timed(async () => {
    for (const g of mixedGroups) await model.prefill(g);
  });
  const fresh = await afterJoin(new KvBatch(model.kvShape, { maxLength: model.config.maxPositions }));
  const reused = await afterJoin(kept);
  if (r === 0) continue; // warm-up
  series.wholeAlone.push(alone);
  series.wholePadded.push(padded);
  series.shortsAlone.push(few);
  series.chunkedSum.push(chunks.reduce((a, b) => a + b, 0));
  series.chunkMax.push(Math.max(...chunks));
  series.mixedPadded.push(padMixed);
  series.mixedGrouped.push(groupMixed);
  series.firstStepFresh.push(fresh.first);
  series.firstStepKept.push(reused.first);
  series.laterSteps.push(reused.next);
  process.stderr.write(`round ${r}/${ROUNDS}: whole ${alone.toFixed(1)} ms, padded with 7 short ${padded.toFixed(1)}, ${chunks.length} chunks max ${Math.max(...chunks).toFixed(1)}, ${CHUNK}+7x10 padded ${padMixed.toFixed(1)} grouped ${groupMixed.toFixed(1)}, first step fresh ${fresh.first.toFixed(1)} kept ${reused.first.toFixed(1)}\n`);
}
const ms = Object.fromEntries(Object.entries(series).map(([k, v]) => [k, +median(v).toFixed(2)]));
const result = {
  command: `npx tsx bench/prefill-chunks.ts --rounds ${ROUNDS} --chunk ${CHUNK}`,
  date: new Date().toISOString().slice(0, 10),
  model: 'models/default',
  longPromptTokens: LONG,
  shortPromptTokens: SHORT,
  chunk: CHUNK,
  note: 'Medians in ms. wholePadded: the long prompt and seven short ones in one prefill, padded to the longest; chunkMax: the longest chunk, what one decode step waits for with chunked prefill; mixedPadded/Grouped: a prompt of chunk length and seven 10-token ones in one padded call, and in the engine\'s groups of like length; firstStepFresh/Kept: the first decode step of 8 rows after the long row joined seven short ones, the batch\'s buffers grown into fresh memory or into buffers it kept; laterSteps: the steps after it.',
  ms,
};
console.log(JSON.stringify(result, null, 2));
mkdirSync(join(repoRoot, 'bench', 'results'), { recursive: true });
writeFileSync(join(repoRoot, 'bench', 'results', 'prefill-chunks.json'), `${JSON.stringify(result, null, 2)}\n`);
await model.close();
