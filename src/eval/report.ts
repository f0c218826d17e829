/** The evaluation table in the layout of the paper's Table 3, with per-user bootstrap intervals. */
import { type Interval, bootstrapDifference, bootstrapMean } from './bootstrap.js';
import type { Method, Scores, UserResult } from './runner.js';

export const METHOD_LABEL: Record<Method, string> = {
  vanilla: 'Vanilla',
  memory: 'w Mem (bm25 top-k)',
  default: 'Fixed LoRA (all layers, n=1, r=8)',
  milp: 'MiLP (searched)',
  'milp+memory': 'MiLP + Mem',
};

const METRICS: (keyof Scores)[] = ['rouge1F', 'rougeLF', 'personaF1', 'rouge1R', 'rougeLR'];

export interface MethodSummary {
  method: Method;
  users: number;
  metrics: Record<keyof Scores, Interval>;
}

export interface EvalSummary {
  methods: MethodSummary[];
  /** MiLP's mean ROUGE-L F relative to the best of vanilla and memory, with a paired bootstrap interval of the difference. */
  milpGain: { over: Method; relative: number; difference: Interval & { pBelowZero: number } } | null;
}

export function summarise(results: readonly UserResult[], methods: readonly Method[]): EvalSummary {
  const rows: MethodSummary[] = methods.map((m) => {
    const users = results.filter((r) => r.scores[m]);
    const metrics = Object.fromEntries(METRICS.map((k) => [k, bootstrapMean(users.map((u) => u.scores[m]![k]), { seed: 7 })])) as Record<keyof Scores, Interval>;
    return { method: m, users: users.length, metrics };
  });
  let milpGain: EvalSummary['milpGain'] = null;
  const milp = rows.find((r) => r.method === 'milp');
  const baselines = rows.filter((r) => r.method === 'vanilla' || r.method === 'memory');
  if (milp && baselines.length > 0) {
    const best = baselines.reduce((a, b) => (b.metrics.rougeLF.mean > a.metrics.rougeLF.mean ? b : a));
    const both = results.filter((r) => r.scores.milp && r.scores[best.method]);
    milpGain = {
      over: best.method,
      relative: milp.metrics.rougeLF.mean / best.metrics.rougeLF.mean - 1,
      difference: bootstrapDifference(
        both.map((r) => r.scores.milp!.rougeLF),
        both.map((r) => r.scores[best.method]!.rougeLF),
        { seed: 7 },
      ),
    };
  }
  return { methods: rows, milpGain };
}

const pct = (v: number): string => (100 * v).toFixed(2);
const cell = (i: Interval): string => `${pct(i.mean)} [${pct(i.lo)}, ${pct(i.hi)}]`;

export function markdownTable(s: EvalSummary): string {
  const lines = [
    '| method | users | ROUGE-1 F | ROUGE-L F | Persona-F1 | ROUGE-1 R | ROUGE-L R |',
    '| --- | --- | --- | --- | --- | --- | --- |',
    ...s.methods.map((r) => `| ${METHOD_LABEL[r.method]} | ${r.users} | ${METRICS.map((k) => cell(r.metrics[k])).join(' | ')} |`),
  ];
  if (s.milpGain) {
    const g = s.milpGain;
    lines.push(
      '',
      `MiLP ROUGE-L F relative to the best baseline (${METHOD_LABEL[g.over]}): ${g.relative >= 0 ? '+' : ''}${(100 * g.relative).toFixed(1)}%; ` +
        `paired difference ${pct(g.difference.mean)} points, 95% CI [${pct(g.difference.lo)}, ${pct(g.difference.hi)}], bootstrap P(diff <= 0) = ${g.difference.pBelowZero.toFixed(3)}.`,
    );
  }
  return lines.join('\n');
}
