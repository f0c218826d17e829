/**
 * Bayesian optimisation vs random search on a synthetic MiLP-shaped problem (issue 6).
 *
 * Space: 8 layers → 10 coordinates (8 layer bits, n, r). Both objectives depend on 3 of them only:
 * whether layer 5 is injected (a), n and r; everything else is irrelevant, the case SAAS is for.
 *   u = n/32, v = rank index/4, a = layer 5 on (and not vanilla)
 *   loss   = 1.5 − a·(0.4·(1 − e^{−4u}) + 0.1·v)              (more capacity fits better)
 *   ROUGE-L = 0.2 + a·0.08·exp(−(u − 0.3)²/0.02)·(1 − 0.5·v)   (but generation peaks at moderate n, small r)
 * Observations add Gaussian noise (sd 0.01 on loss, 0.005 on ROUGE-L); hypervolume is measured on the
 * noiseless values of the evaluated configurations, against the optimum from enumerating all
 * distinct configurations (40,801), with the reference point at the true front's nadir pushed out by 10% of
 * its range.
 *
 * Run: npx tsx bench/search.ts [--seeds 10] [--bo-budget 60] [--random-budget 2000] [--methods map,nuts]
 *      [--nuts-warmup 48] [--nuts-samples 32] [--nuts-thinning 4] [--fit-timing 20,50,100 | --fit-timing none]
 * First it times single SAAS fits (MAP, and NUTS with the default 256 warm-up / 128 samples / thinning 16)
 * on n = 20, 50, 100 points of this problem, one objective each.
 * Writes bench/results/search.json, bench/results/search-curves.svg and bench/results/search-front.svg.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { hypervolume2d } from '../src/inject/search/hypervolume.js';
import { DEFAULT_NUTS } from '../src/inject/search/nuts.js';
import { fitSaasModel } from '../src/inject/search/saas.js';
import { runSearch } from '../src/inject/search/loop.js';
import { paretoFront, toMinimization, type Objectives } from '../src/inject/search/pareto.js';
import { Rng } from '../src/util/rng.js';
import { createSpace, type LoraConfig } from '../src/inject/search/space.js';
import { lineChart, scatterChart } from '../src/plot/svg.js';
import { stringArg } from './args.js';

const SEEDS = Number(stringArg('seeds', '10'));
const BO_BUDGET = Number(stringArg('bo-budget', '60'));
const RANDOM_BUDGET = Number(stringArg('random-budget', '2000'));
const METHODS = stringArg('methods', 'map,nuts').split(',').filter(Boolean) as Array<'map' | 'nuts'>;
const NUTS = { warmup: Number(stringArg('nuts-warmup', '48')), samples: Number(stringArg('nuts-samples', '32')), thinning: Number(stringArg('nuts-thinning', '4')) };
const TARGET = 0.95;
const FIT_TIMING = stringArg('fit-timing', '20,50,100') === 'none' ? [] : stringArg('fit-timing', '20,50,100').split(',').map(Number);

const space = createSpace({ layers: 8 });
const RELEVANT_LAYER = 5;

function truth(c: LoraConfig): Objectives {
  const a = !space.isVanilla(c) && c.layers[RELEVANT_LAYER] ? 1 : 0;
  const u = c.n / space.nMax;
  const v = space.ranks.indexOf(c.r) / (space.ranks.length - 1);
  return {
    loss: 1.5 - a * (0.4 * (1 - Math.exp(-4 * u)) + 0.1 * v),
    rougeL: 0.2 + a * 0.08 * Math.exp(-((u - 0.3) ** 2) / 0.02) * (1 - 0.5 * v),
  };
}

// The optimum, by enumeration.
const everything = [...space.enumerate()].map(truth);
const allPts = everything.map((o) => toMinimization(o));
const frontIdx = paretoFront(allPts);
const frontPts = frontIdx.map((i) => allPts[i]);
const range = (k: 0 | 1) => Math.max(...frontPts.map((p) => p[k])) - Math.min(...frontPts.map((p) => p[k]));
const REF: [number, number] = [Math.max(...frontPts.map((p) => p[0])) + 0.1 * range(0), Math.max(...frontPts.map((p) => p[1])) + 0.1 * range(1)];
const OPT_HV = hypervolume2d(frontPts, REF);

function curveOf(configs: LoraConfig[]): number[] {
  const pts: Array<[number, number]> = [];
  return configs.map((c) => {
    pts.push(toMinimization(truth(c)));
    return hypervolume2d(pts, REF) / OPT_HV;
  });
}

function firstReach(curve: number[]): number {
  const i = curve.findIndex((v) => v >= TARGET);
  return i < 0 ? Infinity : i + 1;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

function medianCurve(curves: number[][]): number[] {
  const len = Math.min(...curves.map((c) => c.length));
  return Array.from({ length: len }, (_, i) => median(curves.map((c) => c[i])));
}

function randomSearch(seed: number, budget: number): LoraConfig[] {
  const rng = new Rng(1000 + seed);
  const seen = new Set<string>();
  const out: LoraConfig[] = [];
  while (out.length < budget) {
    const c = space.random(rng);
    const k = space.key(c);
    if (seen.has(k)) continue;
    seen.add(k);
    out.push(c);
  }
  return out;
}

async function boSearch(seed: number, fit: 'map' | 'nuts'): Promise<{ configs: LoraConfig[]; seconds: number; fitSeconds: number }> {
  const noise = new Rng(5000 + seed);
  const t0 = performance.now();
  let fitSeconds = 0;
  const res = await runSearch({
    space,
    budget: BO_BUDGET,
    seed,
    fit,
    nuts: NUTS,
    evaluate: async (c) => {
      const o = truth(c);
      return { loss: o.loss + 0.01 * noise.normal(), rougeL: o.rougeL + 0.005 * noise.normal() };
    },
    onProgress: (e) => {
      if (e.type === 'fitted') fitSeconds += e.seconds;
    },
  });
  return { configs: res.trials.map((t) => t.config), seconds: (performance.now() - t0) / 1000, fitSeconds };
}

/** Evaluations to the target, or "never" when a run did not get there within its budget. */
/** Seconds and gradient evaluations of one MAP and one default-settings NUTS fit on n random trials. */
function fitTiming(n: number) {
  const rng = new Rng(77 + n);
  const configs = randomSearch(77 + n, n);
  const x = new Float64Array(n * space.dims);
  configs.forEach((c, i) => x.set(space.encode(c), i * space.dims));
  const y = configs.map((c) => truth(c).loss + 0.01 * rng.normal());
  const map = fitSaasModel(x, n, space.dims, y, new Rng(1), { method: 'map' });
  const nuts = fitSaasModel(x, n, space.dims, y, new Rng(1), { method: 'nuts' });
  return {
    n,
    parameters: space.dims + 4,
    map: { seconds: map.diagnostics.seconds, gradients: map.diagnostics.gradientEvaluations },
    nuts: { seconds: nuts.diagnostics.seconds, gradients: nuts.diagnostics.gradientEvaluations, ...nuts.diagnostics.nuts },
  };
}

const fmtN = (v: number) => (Number.isFinite(v) ? String(v) : 'never');

async function main() {
  console.log(`synthetic MiLP space: ${space.dims} dims (${space.size} configurations), objectives depend on layer ${RELEVANT_LAYER}, n, r`);
  console.log(`true Pareto front: ${frontPts.length} points; reference point (loss ${REF[0].toFixed(4)}, ROUGE-L ${(-REF[1]).toFixed(4)}); optimal HV ${OPT_HV.toExponential(4)}`);
  console.log(`${SEEDS} seeds; BO budget ${BO_BUDGET} (8 Sobol points, then q=1); random budget ${RANDOM_BUDGET}; NUTS ${JSON.stringify(NUTS)}, max tree depth 6, dense metric`);

  const timings = FIT_TIMING.map((n) => {
    const t = fitTiming(n);
    console.log(
      `fit timing n=${n} (${t.parameters} hyperparameters): MAP ${t.map.seconds.toFixed(2)}s (${t.map.gradients} gradients); ` +
        `NUTS ${DEFAULT_NUTS.warmup}/${DEFAULT_NUTS.samples}/${DEFAULT_NUTS.thinning} ${t.nuts.seconds.toFixed(2)}s (${t.nuts.gradients} gradients, ` +
        `step ${t.nuts.stepSize?.toFixed(3)}, mean depth ${t.nuts.meanTreeDepth?.toFixed(2)}, ${t.nuts.divergences} divergences)`,
    );
    return t;
  });

  const curves: Record<string, number[][]> = { random: [] };
  const reach: Record<string, number[]> = { random: [] };
  const seconds: Record<string, number[]> = {};
  const fitSecs: Record<string, number[]> = {};
  let exampleRun: LoraConfig[] | null = null;
  for (let s = 0; s < SEEDS; s++) {
    const c = curveOf(randomSearch(s, RANDOM_BUDGET));
    curves.random.push(c);
    reach.random.push(firstReach(c));
  }
  console.log(`random: evaluations to ${TARGET * 100}% per seed: ${reach.random.map(fmtN).join(' ')} → median ${fmtN(median(reach.random))}`);

  for (const m of METHODS) {
    const name = `bo-${m}`;
    curves[name] = [];
    reach[name] = [];
    seconds[name] = [];
    fitSecs[name] = [];
    for (let s = 0; s < SEEDS; s++) {
      const run = await boSearch(s, m);
      const c = curveOf(run.configs);
      curves[name].push(c);
      reach[name].push(firstReach(c));
      seconds[name].push(run.seconds);
      fitSecs[name].push(run.fitSeconds);
      if (m === METHODS[0] && s === 0) exampleRun = run.configs;
      console.log(`${name} seed ${s}: ${run.configs.length} evaluations, ${TARGET * 100}% at ${fmtN(firstReach(c))}, final ${(c[c.length - 1] * 100).toFixed(1)}%, ${run.seconds.toFixed(1)}s (fits ${run.fitSeconds.toFixed(1)}s)`);
    }
    console.log(`${name}: evaluations to ${TARGET * 100}% per seed: ${reach[name].map(fmtN).join(' ')} → median ${fmtN(median(reach[name]))}; median ${median(seconds[name]).toFixed(1)}s per search`);
  }

  const medians = Object.fromEntries(Object.entries(curves).map(([k, cs]) => [k, medianCurve(cs)]));
  const checkpoints = [5, 8, 10, 15, 20, 25, 30, 40, 50, 60, 80, 100, 150, 200, 300, 400, 600, 1000, 1500, 2000].filter((n) => n <= RANDOM_BUDGET);
  console.log(`\nmedian normalised hypervolume (fraction of optimum) after N evaluations:`);
  console.log(['N'.padStart(5), ...Object.keys(medians).map((k) => k.padStart(9))].join(' '));
  for (const n of checkpoints) {
    console.log([String(n).padStart(5), ...Object.values(medians).map((c) => (n <= c.length ? c[n - 1].toFixed(3) : '').padStart(9))].join(' '));
  }

  const summary: Record<string, unknown> = {};
  const randomMedian = median(reach.random);
  const randomCurveReach = firstReach(medians.random);
  console.log('');
  for (const m of METHODS) {
    const name = `bo-${m}`;
    // Infinity / Infinity is NaN: a ratio exists only when random search got there within its budget.
    const ratio = Number.isFinite(randomMedian) ? median(reach[name]) / randomMedian : NaN;
    const curveRatio = Number.isFinite(randomCurveReach) ? firstReach(medians[name]) / randomCurveReach : NaN;
    console.log(
      `${name}: median evaluations to ${TARGET * 100}% ${fmtN(median(reach[name]))} vs random ${fmtN(randomMedian)} → ratio ${Number.isFinite(ratio) ? ratio.toFixed(3) : 'undefined'} ` +
        `(median curves: ${fmtN(firstReach(medians[name]))} vs ${fmtN(randomCurveReach)} → ${Number.isFinite(curveRatio) ? curveRatio.toFixed(3) : 'undefined'}); target ≤ 0.5: ${ratio <= 0.5 ? 'met' : 'NOT met'}`,
    );
    summary[name] = {
      evaluationsTo95PerSeed: reach[name].map((v) => (Number.isFinite(v) ? v : null)),
      medianEvaluationsTo95: Number.isFinite(median(reach[name])) ? median(reach[name]) : null,
      ratioToRandom: Number.isFinite(ratio) ? ratio : null,
      medianCurveEvaluationsTo95: Number.isFinite(firstReach(medians[name])) ? firstReach(medians[name]) : null,
      medianCurveRatio: Number.isFinite(curveRatio) ? curveRatio : null,
      medianSecondsPerSearch: median(seconds[name]),
      medianFitSecondsPerSearch: median(fitSecs[name]),
    };
  }

  const here = dirname(fileURLToPath(import.meta.url));
  const out = join(here, 'results');
  mkdirSync(out, { recursive: true });
  writeFileSync(
    join(out, 'search.json'),
    JSON.stringify(
      {
        problem: {
          dims: space.dims,
          configurations: space.size,
          relevant: [`layer${RELEVANT_LAYER}`, 'n', 'r'],
          noise: { loss: 0.01, rougeL: 0.005 },
          referencePoint: { loss: REF[0], rougeL: -REF[1] },
          optimalHypervolume: OPT_HV,
          trueFrontSize: frontPts.length,
        },
        settings: { seeds: SEEDS, boBudget: BO_BUDGET, randomBudget: RANDOM_BUDGET, initialPoints: 8, batchSize: 1, nuts: { ...NUTS, maxTreeDepth: 6, metric: 'dense' }, target: TARGET },
        random: { evaluationsTo95PerSeed: reach.random.map((v) => (Number.isFinite(v) ? v : null)), medianEvaluationsTo95: Number.isFinite(randomMedian) ? randomMedian : null },
        ...summary,
        fitTiming: timings,
        medianCurves: medians,
      },
      null,
      1,
    ),
  );
  writeFileSync(
    join(out, 'search-curves.svg'),
    lineChart({
      title: `Median hypervolume over ${SEEDS} seeds (synthetic, 10 dims, 3 relevant)`,
      x: { label: 'evaluations', log: true },
      y: { label: 'fraction of optimal hypervolume', min: 0, max: 1 },
      series: [
        ...Object.entries(medians).map(([k, c]) => ({ name: k, points: c.map((v, i) => [i + 1, v] as [number, number]) })),
        { name: `${TARGET * 100}% target`, points: [[1, TARGET], [RANDOM_BUDGET, TARGET]] as Array<[number, number]>, color: '#999' },
      ],
    }),
  );
  if (exampleRun) {
    const seen = exampleRun.map(truth);
    writeFileSync(
      join(out, 'search-front.svg'),
      scatterChart({
        title: `bo-${METHODS[0]}, seed 0: evaluated configurations (noiseless values) and the true front`,
        x: { label: 'validation loss (lower is better)' },
        y: { label: 'ROUGE-L (higher is better)' },
        series: [{ name: 'evaluated', points: seen.map((o) => [o.loss, o.rougeL] as [number, number]) }],
        front: { name: 'true Pareto front', points: frontIdx.map((i) => [everything[i].loss, everything[i].rougeL] as [number, number]) },
      }),
    );
  }
  console.log(`\nwrote ${join(out, 'search.json')}, search-curves.svg, search-front.svg`);
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
