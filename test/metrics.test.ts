import { describe, expect, it } from 'vitest';
import { MetricError, Registry, registerProcessMetrics } from '../src/metrics.js';

describe('Registry', () => {
  it('renders counters and gauges in the 0.0.4 text format, escaping label values', () => {
    const r = new Registry();
    const c = r.counter('jobs_total', 'Jobs by state.', ['state']);
    c.inc({ state: 'ok' });
    c.inc({ state: 'ok' }, 2);
    c.inc({ state: 'a"b\\c\nd' });
    const g = r.gauge('queue_length', 'Waiting requests.\nSecond line.');
    g.set(undefined, 5);
    g.dec(undefined, 2);
    expect(r.expose()).toBe(
      [
        '# HELP jobs_total Jobs by state.',
        '# TYPE jobs_total counter',
        'jobs_total{state="ok"} 3',
        'jobs_total{state="a\\"b\\\\c\\nd"} 1',
        '# HELP queue_length Waiting requests.\\nSecond line.',
        '# TYPE queue_length gauge',
        'queue_length 3',
        '',
      ].join('\n'),
    );
  });

  it('renders histograms with cumulative buckets, +Inf, sum and count', () => {
    const r = new Registry();
    const h = r.histogram('load_seconds', 'Load time.', ['kind'], [0.1, 1, 10]);
    for (const v of [0.05, 0.1, 0.5, 2, 20]) h.observe({ kind: 'disk' }, v);
    expect(r.expose()).toBe(
      [
        '# HELP load_seconds Load time.',
        '# TYPE load_seconds histogram',
        'load_seconds_bucket{kind="disk",le="0.1"} 2',
        'load_seconds_bucket{kind="disk",le="1"} 3',
        'load_seconds_bucket{kind="disk",le="10"} 4',
        'load_seconds_bucket{kind="disk",le="+Inf"} 5',
        'load_seconds_sum{kind="disk"} 22.65',
        'load_seconds_count{kind="disk"} 5',
        '',
      ].join('\n'),
    );
    expect(h.snapshot({ kind: 'disk' })).toEqual({ count: 5, sum: 22.65, buckets: [2, 3, 4] });
  });

  it('returns the same metric when asked twice and refuses conflicting re-registration', () => {
    const r = new Registry();
    const a = r.counter('x_total', 'X.', ['a']);
    expect(r.counter('x_total', 'X again.', ['a'])).toBe(a);
    expect(() => r.gauge('x_total', 'X.', ['a'])).toThrow(MetricError);
    expect(() => r.counter('x_total', 'X.', ['b'])).toThrow(MetricError);
  });

  it('validates names, labels and values', () => {
    const r = new Registry();
    expect(() => r.counter('bad-name', 'x')).toThrow(MetricError);
    expect(() => r.counter('ok_total', 'x', ['le'])).toThrow(MetricError);
    expect(() => r.histogram('h', 'x', [], [1, 1])).toThrow(MetricError);
    const c = r.counter('c_total', 'x', ['a']);
    expect(() => c.inc({ b: '1' })).toThrow(MetricError);
    expect(() => c.inc({ a: '1' }, -1)).toThrow(MetricError);
    expect(() => c.inc()).toThrow(MetricError);
  });

  it('runs collectors before each exposition', () => {
    const r = new Registry();
    const g = r.gauge('cache_bytes', 'Bytes cached.');
    let bytes = 10;
    r.onCollect(() => g.set(undefined, bytes));
    expect(r.expose()).toContain('cache_bytes 10\n');
    bytes = 20;
    expect(r.expose()).toContain('cache_bytes 20\n');
  });

  it("reports the main thread's event-loop delay since the last scrape: a 120 ms block shows, and the next scrape starts afresh", async () => {
    const r = new Registry();
    const stop = registerProcessMetrics(r);
    const gauge = (text: string, name: string): number => Number(new RegExp(`^${name} (\\S+)$`, 'm').exec(text)![1]);
    try {
      await new Promise((res) => setTimeout(res, 40)); // the monitor samples
      const until = performance.now() + 120;
      while (performance.now() < until); // one piece of work holding the thread
      await new Promise((res) => setTimeout(res, 30));
      const first = r.expose();
      expect(gauge(first, 'nodejs_eventloop_lag_max_seconds')).toBeGreaterThanOrEqual(0.1);
      expect(gauge(first, 'nodejs_eventloop_lag_mean_seconds')).toBeGreaterThan(0);
      expect(gauge(first, 'nodejs_eventloop_lag_p99_seconds')).toBeLessThanOrEqual(gauge(first, 'nodejs_eventloop_lag_max_seconds'));
      // Scraped again at once: no sample since the reset.
      expect(gauge(r.expose(), 'nodejs_eventloop_lag_max_seconds')).toBe(0);
    } finally {
      stop();
    }
  });
});
