/**
 * Train-step cost vs forward cost for a small GPT-2-style model (issue 3).
 *
 * Model (the default model's size, models/default): vocab 2048, d_model 256, 6 layers, 4 heads, FFN 1024,
 * learned positions, tied LM head, tanh GELU, fused LayerNormalization, float32; batch 8, sequence 128.
 * LoRA rank 8 on both FFN linear maps of every layer. Three graphs over the same weights:
 *   forward     loss only
 *   LoRA step   loss + gradients w.r.t. the 24 LoRA tensors (A and B of 2 maps x 6 layers) (base weights frozen)
 *   full step   loss + gradients w.r.t. every weight (pretraining; for information)
 * Timed in one process, interleaved round by round after warm-up; the median of each is reported.
 * Target: LoRA step <= 3.5x forward.
 *
 * Run: npx tsx bench/graph.ts [--rounds 7] [--warmup 2] [--threads 0] [--batch 8] [--seq 128] [--profile lora]
 * Writes bench/results/graph.json. --profile <forward|lora|full> instead prints ONNX Runtime's per-op
 * time for that graph (a few runs, profiling on) and writes nothing.
 */
import { mkdirSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { grad, gradientPath } from '../src/graph/autodiff.js';
import { Graph, type Value } from '../src/graph/ir.js';
import * as ort from 'onnxruntime-node';
import { emitOnnx, liveNodes } from '../src/graph/onnx.js';
import * as ops from '../src/graph/ops.js';
import { type CompiledGraph, type Feeds, Runner } from '../src/graph/runner.js';
import type { HostTensor } from '../src/graph/types.js';
import { Rng } from '../src/util/rng.js';
import { stringArg } from './args.js';

const ROUNDS = Number(stringArg('rounds', '7'));
const WARMUP = Number(stringArg('warmup', '2'));
const THREADS = Number(stringArg('threads', '0'));
const BATCH = Number(stringArg('batch', '8'));
const SEQ = Number(stringArg('seq', '128'));
const CFG = { vocab: 2048, dModel: 256, layers: 6, heads: 4, ffn: 1024, maxSeq: 256, loraRank: 8 };

interface Model {
  loss: Value;
  base: Value[];
  lora: Value[];
}

/** GPT-2-style decoder built from graph ops; every weight and LoRA tensor is a graph input. */
function buildGpt2(g: Graph): Model {
  const { vocab, dModel: D, layers, heads: H, ffn, maxSeq, loraRank: r } = CFG;
  const hd = D / H;
  const base: Value[] = [];
  const lora: Value[] = [];
  const w = (name: string, shape: number[], list = base): Value => {
    const v = g.input(name, 'float32', shape);
    list.push(v);
    return v;
  };
  const ids = g.input('ids', 'int64', ['B', 'T']);
  const labels = g.input('labels', 'int64', ['B', 'T']);
  const wte = w('wte', [vocab, D]);
  const wpe = w('wpe', [maxSeq, D]);
  const zero = g.constant([0], 'int64', [1]);
  const tLen = ops.slice(ops.shapeOf(ids), { axes: [0], starts: [1], ends: [2] });
  const causal = new Float32Array(maxSeq * maxSeq).map((_, i) => (i % maxSeq > Math.floor(i / maxSeq) ? -1e9 : 0));
  const maskTable = g.initializer('causal_mask', 'float32', [maxSeq, maxSeq], causal);
  const mask = ops.sliceDynamic(ops.sliceDynamic(maskTable, 0, zero, tLen, 'T'), 1, zero, tLen, 'T');

  let x = ops.add(ops.gather(wte, ids), ops.sliceDynamic(wpe, 0, zero, tLen, 'T'));
  const linear = (v: Value, wt: Value, b: Value): Value => ops.add(ops.matmul(v, wt), b);
  const withLora = (v: Value, wt: Value, b: Value, name: string, inDim: number, outDim: number): Value => {
    const a = w(`${name}.lora_A`, [inDim, r], lora);
    const bb = w(`${name}.lora_B`, [r, outDim], lora);
    return ops.add(linear(v, wt, b), ops.matmul(ops.matmul(v, a), bb));
  };
  const heads = (v: Value): Value => ops.transpose(ops.reshape(v, ['B', 'T', H, hd]), [0, 2, 1, 3]);
  for (let l = 0; l < layers; l++) {
    const p = `h.${l}`;
    const ln1 = ops.layerNorm(x, w(`${p}.ln_1.weight`, [D]), w(`${p}.ln_1.bias`, [D]));
    const qkv = linear(ln1, w(`${p}.attn.c_attn.weight`, [D, 3 * D]), w(`${p}.attn.c_attn.bias`, [3 * D]));
    const [q, k, v] = ops.split(qkv, [D, D, D], -1).map(heads);
    const scores = ops.add(ops.mul(ops.matmul(q, ops.transposeLast2(k)), 1 / Math.sqrt(hd)), mask);
    const att = ops.matmul(ops.softmax(scores), v);
    const merged = ops.reshape(ops.transpose(att, [0, 2, 1, 3]), ['B', 'T', D]);
    x = ops.add(x, linear(merged, w(`${p}.attn.c_proj.weight`, [D, D]), w(`${p}.attn.c_proj.bias`, [D])));
    const ln2 = ops.layerNorm(x, w(`${p}.ln_2.weight`, [D]), w(`${p}.ln_2.bias`, [D]));
    const fc = withLora(ln2, w(`${p}.mlp.c_fc.weight`, [D, ffn]), w(`${p}.mlp.c_fc.bias`, [ffn]), `${p}.mlp.c_fc`, D, ffn);
    const proj = withLora(ops.geluTanh(fc), w(`${p}.mlp.c_proj.weight`, [ffn, D]), w(`${p}.mlp.c_proj.bias`, [D]), `${p}.mlp.c_proj`, ffn, D);
    x = ops.add(x, proj);
  }
  const hf = ops.layerNorm(x, w('ln_f.weight', [D]), w('ln_f.bias', [D]));
  const logits = ops.matmul(ops.reshape(hf, [-1, D]), ops.transposeLast2(wte));
  const { loss } = ops.crossEntropy(logits, ops.reshape(labels, [-1]));
  return { loss, base, lora };
}

function feedsFor(model: Model, rng: Rng): Feeds {
  const feeds: Record<string, HostTensor> = {};
  for (const v of [...model.base, ...model.lora]) {
    const n = (v.shape as number[]).reduce((a, b) => a * b, 1);
    const data = new Float32Array(n);
    const isScale = v.name.endsWith('ln_1.weight') || v.name.endsWith('ln_2.weight') || v.name === 'ln_f.weight';
    for (let i = 0; i < n; i++) data[i] = isScale ? 1 : rng.normal() * 0.02;
    feeds[v.name] = { dtype: 'float32', dims: v.shape as number[], data };
  }
  const tokens = (): HostTensor => ({
    dtype: 'int64',
    dims: [BATCH, SEQ],
    data: BigInt64Array.from({ length: BATCH * SEQ }, () => BigInt(rng.int(CFG.vocab))),
  });
  feeds.ids = tokens();
  feeds.labels = tokens();
  return feeds;
}

type Kind = 'forward' | 'lora' | 'full';

function build(kind: Kind): { g: Graph; model: Model; backwardNodes: number; pathNodes: number } {
  const g = new Graph(`bench_${kind}`);
  const model = buildGpt2(g);
  g.output('loss', model.loss);
  const before = g.nodes.length;
  let pathNodes = 0;
  if (kind !== 'forward') {
    const params = kind === 'lora' ? model.lora : [...model.base, ...model.lora];
    pathNodes = gradientPath(model.loss, params).nodes.length;
    grad(model.loss, params).forEach((gv, i) => g.output(`grad_${params[i].name}`, gv));
  }
  const live = new Set(liveNodes(g));
  return { g, model, pathNodes, backwardNodes: g.nodes.slice(before).filter((n) => live.has(n)).length };
}

/** Per-op time of one graph from ONNX Runtime's profiler, largest first. */
async function profile(kind: Kind): Promise<void> {
  const b = build(kind);
  const feeds = feedsFor(b.model, new Rng(3));
  const prefix = `memlora-bench-${kind}-${process.pid}`;
  const session = await ort.InferenceSession.create(emitOnnx(b.g), {
    executionProviders: ['cpu'],
    graphOptimizationLevel: 'all',
    enableProfiling: true,
    profileFilePrefix: join(tmpdir(), prefix),
    ...(THREADS > 0 ? { intraOpNumThreads: THREADS } : {}),
  });
  const ortFeeds: Record<string, ort.Tensor> = {};
  for (const name of session.inputNames) {
    const t = feeds[name] as HostTensor;
    ortFeeds[name] = new ort.Tensor(t.dtype as ort.Tensor.Type, t.data as ort.Tensor.DataType, t.dims);
  }
  const runs = 3;
  for (let i = 0; i < runs + 1; i++) await session.run(ortFeeds);
  session.endProfiling(); // the node binding returns nothing: find the file by its prefix
  const name = readdirSync(tmpdir()).find((f) => f.startsWith(prefix) && f.endsWith('.json'));
  if (!name) throw new Error(`no profile file ${prefix}* in ${tmpdir()}`);
  const file = join(tmpdir(), name);
  await session.release();
  const events = JSON.parse(readFileSync(file, 'utf8')) as { cat: string; name: string; dur: number; args?: { op_name?: string } }[];
  rmSync(file, { force: true });
  const byOp = new Map<string, { us: number; count: number }>();
  let total = 0;
  for (const e of events) {
    if (e.cat !== 'Node' || !e.name.endsWith('_kernel_time') || !e.args?.op_name) continue;
    const s = byOp.get(e.args.op_name) ?? { us: 0, count: 0 };
    s.us += e.dur;
    s.count++;
    total += e.dur;
    byOp.set(e.args.op_name, s);
  }
  console.log(`${kind}: kernel time per run ${(total / (runs + 1) / 1000).toFixed(1)} ms (first run included)`);
  for (const [op, s] of [...byOp].sort((a, b) => b[1].us - a[1].us)) {
    console.log(`  ${op.padEnd(28)} ${(s.us / (runs + 1) / 1000).toFixed(2).padStart(8)} ms  ${(s.count / (runs + 1)).toFixed(0).padStart(4)} nodes  ${((100 * s.us) / total).toFixed(1)}%`);
  }
}

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

async function main(): Promise<void> {
  const runner = new Runner({ intraOpThreads: THREADS, optimization: 'all' });
  const kinds: Kind[] = ['forward', 'lora', 'full'];
  const built = Object.fromEntries(kinds.map((k) => [k, build(k)])) as Record<Kind, ReturnType<typeof build>>;
  const feeds = feedsFor(built.forward.model, new Rng(3));
  const sessions = {} as Record<Kind, CompiledGraph>;
  for (const k of kinds) {
    const t0 = performance.now();
    sessions[k] = await runner.compile(k, () => built[k].g);
    const b = built[k];
    console.log(
      `compiled ${k.padEnd(7)} in ${(performance.now() - t0).toFixed(0)} ms: ${b.g.nodes.length} IR nodes, ` +
        `${b.pathNodes} differentiated, ${b.backwardNodes} live backward nodes`,
    );
  }
  const times: Record<Kind, number[]> = { forward: [], lora: [], full: [] };
  const losses: Record<Kind, number> = { forward: 0, lora: 0, full: 0 };
  for (let round = 0; round < WARMUP + ROUNDS; round++) {
    for (const k of kinds) {
      const t0 = performance.now();
      const out = await sessions[k].run(feeds);
      const dt = performance.now() - t0;
      losses[k] = (out.loss.data as Float32Array)[0];
      if (round >= WARMUP) times[k].push(dt);
    }
    const label = round < WARMUP ? `warm-up ${round + 1}/${WARMUP}` : `round ${round - WARMUP + 1}/${ROUNDS}`;
    console.log(`${label}: ${kinds.map((k) => `${k} ${times[k].at(-1)?.toFixed(1) ?? '-'} ms`).join(', ')}`);
  }
  await runner.close();
  if (Math.abs(losses.forward - losses.lora) > 1e-4 || Math.abs(losses.forward - losses.full) > 1e-4) {
    throw new Error(`loss differs between graphs: ${JSON.stringify(losses)}`);
  }
  const fwd = median(times.forward);
  const lora = median(times.lora);
  const full = median(times.full);
  const result = {
    model: CFG,
    batch: BATCH,
    seq: SEQ,
    threads: THREADS || 'ORT default',
    rounds: ROUNDS,
    loss: losses.forward,
    forwardMs: +fwd.toFixed(2),
    loraStepMs: +lora.toFixed(2),
    fullStepMs: +full.toFixed(2),
    loraRatio: +(lora / fwd).toFixed(3),
    fullRatio: +(full / fwd).toFixed(3),
    target: 3.5,
    meetsTarget: lora / fwd <= 3.5,
    nodes: Object.fromEntries(kinds.map((k) => [k, { ir: built[k].g.nodes.length, differentiated: built[k].pathNodes, backwardLive: built[k].backwardNodes }])),
    samplesMs: times,
  };
  console.log(
    `\nforward ${fwd.toFixed(1)} ms | LoRA train step ${lora.toFixed(1)} ms (${result.loraRatio}x forward, target <= 3.5x: ${result.meetsTarget ? 'met' : 'MISSED'}) | full train step ${full.toFixed(1)} ms (${result.fullRatio}x)`,
  );
  const out = join(dirname(fileURLToPath(import.meta.url)), 'results', 'graph.json');
  mkdirSync(dirname(out), { recursive: true });
  writeFileSync(out, `${JSON.stringify(result, null, 2)}\n`);
  console.log(`wrote ${out}`);
}

const profiled = stringArg('profile', '');
if (profiled) await profile(profiled as Kind);
else await main();
