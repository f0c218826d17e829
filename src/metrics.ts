/**
 * A small dependency-free Prometheus registry: counters, gauges and histograms with labels,
 * rendered in the text exposition format 0.0.4. Modules get a Registry handed to them and
 * register their own metrics; asking twice for the same name returns the same metric, so
 * registration order does not matter.
 */

import { monitorEventLoopDelay } from 'node:perf_hooks';

export type Labels = Readonly<Record<string, string | number>>;

export const EXPOSITION_CONTENT_TYPE = 'text/plain; version=0.0.4; charset=utf-8';

const NAME_RE = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL_RE = /^[a-zA-Z_][a-zA-Z0-9_]*$/;

/** Prometheus' default buckets, in seconds. */
export const DEFAULT_BUCKETS: readonly number[] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

export class MetricError extends Error {
  constructor(
    readonly code: 'invalid_metric_name' | 'invalid_label' | 'metric_type_conflict' | 'invalid_buckets' | 'invalid_value',
    message: string,
  ) {
    super(message);
    this.name = 'MetricError';
  }
}

function escapeLabelValue(v: string): string {
  return v.replace(/\\/g, '\\\\').replace(/\n/g, '\\n').replace(/"/g, '\\"');
}

function escapeHelp(v: string): string {
  return v.replace(/\\/g, '\\\\').replace(/\n/g, '\\n');
}

function formatValue(v: number): string {
  if (Number.isNaN(v)) return 'NaN';
  if (v === Infinity) return '+Inf';
  if (v === -Infinity) return '-Inf';
  return String(v);
}

/** Label name and value pairs of one sample, in declaration order. */
type Pairs = ReadonlyArray<readonly [string, string]>;

function renderLabels(pairs: Pairs): string {
  if (pairs.length === 0) return '';
  return `{${pairs.map(([k, v]) => `${k}="${escapeLabelValue(v)}"`).join(',')}}`;
}

const NO_LABELS = Object.freeze({ key: JSON.stringify([]), pairs: Object.freeze([]) as Pairs });

/** Shared label handling: every sample must carry exactly the declared label names. */
abstract class Metric {
  abstract readonly type: 'counter' | 'gauge' | 'histogram';
  constructor(
    readonly name: string,
    readonly help: string,
    readonly labelNames: readonly string[],
  ) {
    if (!NAME_RE.test(name)) throw new MetricError('invalid_metric_name', `invalid metric name ${JSON.stringify(name)}`);
    for (const l of labelNames) {
      if (!LABEL_RE.test(l) || l.startsWith('__') || l === 'le') {
        throw new MetricError('invalid_label', `invalid label name ${JSON.stringify(l)} on ${name}`);
      }
    }
  }

  protected key(labels: Labels | undefined): { key: string; pairs: Pairs } {
    // Unlabelled metrics (most of the engine's, observed per step): no names to check or key to build.
    if (this.labelNames.length === 0 && (labels === undefined || Object.keys(labels).length === 0)) return NO_LABELS;
    const given = labels ?? {};
    const names = Object.keys(given);
    if (names.length !== this.labelNames.length || names.some((n) => !this.labelNames.includes(n))) {
      throw new MetricError(
        'invalid_label',
        `${this.name} expects labels [${this.labelNames.join(', ')}], got [${names.join(', ')}]`,
      );
    }
    const pairs = this.labelNames.map((n) => [n, String(given[n])] as const);
    return { key: JSON.stringify(pairs.map((p) => p[1])), pairs };
  }

  abstract render(): string[];

  header(): string[] {
    return [`# HELP ${this.name} ${escapeHelp(this.help)}`, `# TYPE ${this.name} ${this.type}`];
  }
}

/** A metric holding one number per label set (counters and gauges). */
abstract class ValueMetric extends Metric {
  private readonly values = new Map<string, { pairs: Pairs; value: number }>();

  protected add(labels: Labels | undefined, by: number): void {
    const { key, pairs } = this.key(labels);
    const cur = this.values.get(key);
    if (cur) cur.value += by;
    else this.values.set(key, { pairs, value: by });
  }

  protected put(labels: Labels | undefined, value: number): void {
    const { key, pairs } = this.key(labels);
    this.values.set(key, { pairs, value });
  }

  get(labels?: Labels): number {
    return this.values.get(this.key(labels).key)?.value ?? 0;
  }

  render(): string[] {
    const out = this.header();
    for (const { pairs, value } of this.values.values()) out.push(`${this.name}${renderLabels(pairs)} ${formatValue(value)}`);
    return out;
  }
}

export class Counter extends ValueMetric {
  readonly type = 'counter';

  inc(labels?: Labels, by = 1): void {
    if (!(by >= 0) || !Number.isFinite(by)) throw new MetricError('invalid_value', `${this.name}: counters only go up (got ${by})`);
    this.add(labels, by);
  }
}

export class Gauge extends ValueMetric {
  readonly type = 'gauge';

  set(labels: Labels | undefined, value: number): void {
    this.put(labels, value);
  }

  inc(labels?: Labels, by = 1): void {
    this.add(labels, by);
  }

  dec(labels?: Labels, by = 1): void {
    this.add(labels, -by);
  }
}

interface HistogramSeries {
  pairs: Pairs;
  counts: number[];
  sum: number;
  count: number;
}

export class Histogram extends Metric {
  readonly type = 'histogram';
  readonly buckets: readonly number[];
  private readonly series = new Map<string, HistogramSeries>();

  constructor(name: string, help: string, labelNames: readonly string[], buckets: readonly number[] = DEFAULT_BUCKETS) {
    super(name, help, labelNames);
    if (buckets.length === 0 || buckets.some((b, i) => !Number.isFinite(b) || (i > 0 && b <= buckets[i - 1]))) {
      throw new MetricError('invalid_buckets', `${name}: buckets must be finite and strictly increasing, got [${buckets.join(', ')}]`);
    }
    this.buckets = [...buckets];
  }

  observe(labels: Labels | undefined, value: number): void {
    if (Number.isNaN(value)) throw new MetricError('invalid_value', `${this.name}: cannot observe NaN`);
    const { key, pairs } = this.key(labels);
    let s = this.series.get(key);
    if (!s) {
      s = { pairs, counts: new Array(this.buckets.length).fill(0), sum: 0, count: 0 };
      this.series.set(key, s);
    }
    // Counts are stored per bucket and made cumulative when rendered.
    const i = this.buckets.findIndex((b) => value <= b);
    if (i >= 0) s.counts[i] += 1;
    s.sum += value;
    s.count += 1;
  }

  /** Starts a timer; the returned function observes the elapsed seconds and returns them. */
  startTimer(labels?: Labels): () => number {
    const t0 = process.hrtime.bigint();
    return () => {
      const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
      this.observe(labels, seconds);
      return seconds;
    };
  }

  snapshot(labels?: Labels): { count: number; sum: number; buckets: number[] } {
    const s = this.series.get(this.key(labels).key);
    if (!s) return { count: 0, sum: 0, buckets: this.buckets.map(() => 0) };
    let acc = 0;
    return { count: s.count, sum: s.sum, buckets: s.counts.map((c) => (acc += c)) };
  }

  render(): string[] {
    const out = this.header();
    for (const s of this.series.values()) {
      let acc = 0;
      this.buckets.forEach((b, i) => {
        acc += s.counts[i];
        out.push(`${this.name}_bucket${renderLabels([...s.pairs, ['le', formatValue(b)]])} ${acc}`);
      });
      out.push(`${this.name}_bucket${renderLabels([...s.pairs, ['le', '+Inf']])} ${s.count}`);
      out.push(`${this.name}_sum${renderLabels(s.pairs)} ${formatValue(s.sum)}`);
      out.push(`${this.name}_count${renderLabels(s.pairs)} ${s.count}`);
    }
    return out;
  }
}

export class Registry {
  private readonly metrics = new Map<string, Metric>();
  private readonly collectors: Array<() => void> = [];

  private getOrCreate<M extends Metric>(name: string, type: M['type'], make: () => M, labelNames: readonly string[]): M {
    const existing = this.metrics.get(name);
    if (existing) {
      const sameLabels =
        existing.labelNames.length === labelNames.length && existing.labelNames.every((l, i) => l === labelNames[i]);
      if (existing.type !== type || !sameLabels) {
        throw new MetricError(
          'metric_type_conflict',
          `${name} is already registered as ${existing.type}[${existing.labelNames.join(',')}], asked for ${type}[${labelNames.join(',')}]`,
        );
      }
      return existing as M;
    }
    const m = make();
    this.metrics.set(name, m);
    return m;
  }

  counter(name: string, help: string, labelNames: readonly string[] = []): Counter {
    return this.getOrCreate(name, 'counter', () => new Counter(name, help, labelNames), labelNames);
  }

  gauge(name: string, help: string, labelNames: readonly string[] = []): Gauge {
    return this.getOrCreate(name, 'gauge', () => new Gauge(name, help, labelNames), labelNames);
  }

  histogram(name: string, help: string, labelNames: readonly string[] = [], buckets?: readonly number[]): Histogram {
    return this.getOrCreate(name, 'histogram', () => new Histogram(name, help, labelNames, buckets), labelNames);
  }

  /** Runs before every exposition: the place to set gauges from live state (cache bytes, queue length). */
  onCollect(fn: () => void): void {
    this.collectors.push(fn);
  }

  get(name: string): Counter | Gauge | Histogram | undefined {
    return this.metrics.get(name) as Counter | Gauge | Histogram | undefined;
  }

  /** The text exposition format 0.0.4, metrics in registration order. */
  expose(): string {
    for (const c of this.collectors) c();
    const lines: string[] = [];
    for (const m of this.metrics.values()) lines.push(...m.render());
    return lines.length ? `${lines.join('\n')}\n` : '';
  }
}

/**
 * Process-level gauges refreshed on every scrape: memory, start time, and the main thread's
 * event-loop delay since the last scrape (prom-client's names). The main thread is the serving
 * thread: while one piece of work holds it (a decode step, a history write, a compile), every other
 * request waits, so the delay's maximum is the longest such stall. Returns what stops the delay's
 * monitor (a server calls it as it closes).
 */
export function registerProcessMetrics(registry: Registry): () => void {
  const rss = registry.gauge('process_resident_memory_bytes', 'Resident memory size in bytes.');
  const heap = registry.gauge('nodejs_heap_used_bytes', 'V8 heap in use, bytes.');
  const start = registry.gauge('process_start_time_seconds', 'Start time of the process since unix epoch in seconds.');
  const lag = {
    max: registry.gauge('nodejs_eventloop_lag_max_seconds', "The longest delay of the main (serving) thread's event loop since the last scrape, seconds: the longest time one piece of work held the thread while others waited (0: no sample yet)."),
    p99: registry.gauge('nodejs_eventloop_lag_p99_seconds', "The 99th percentile of the main thread's event-loop delay since the last scrape, seconds."),
    mean: registry.gauge('nodejs_eventloop_lag_mean_seconds', "The mean of the main thread's event-loop delay since the last scrape, seconds."),
  };
  start.set(undefined, Math.round(Date.now() / 1000 - process.uptime()));
  // Sampled every 10 ms (prom-client's default): a delay shorter than that reads as about 0.
  const loop = monitorEventLoopDelay({ resolution: 10 });
  loop.enable();
  registry.onCollect(() => {
    const mem = process.memoryUsage();
    rss.set(undefined, mem.rss);
    heap.set(undefined, mem.heapUsed);
    const sampled = loop.count > 0;
    lag.max.set(undefined, sampled ? loop.max / 1e9 : 0);
    lag.p99.set(undefined, sampled ? loop.percentile(99) / 1e9 : 0);
    lag.mean.set(undefined, sampled ? loop.mean / 1e9 : 0);
    loop.reset();
  });
  return () => loop.disable();
}
