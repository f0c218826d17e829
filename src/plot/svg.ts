/**
 * Tiny dependency-free SVG charts for benches and CLI reports: scatter plots (with an optional
 * highlighted Pareto front drawn as a staircase), multi-series line charts (optionally log-x), bar
 * charts and histograms. Each returns a complete SVG document as a string.
 */

export interface AxisOptions {
  label?: string;
  /** Logarithmic scale (base 10); non-positive values are dropped. */
  log?: boolean;
  min?: number;
  max?: number;
}

export interface ChartOptions {
  title?: string;
  width?: number;
  height?: number;
  x?: AxisOptions;
  y?: AxisOptions;
}

export interface Series {
  name: string;
  points: ReadonlyArray<readonly [number, number]>;
  color?: string;
}

export interface FrontOptions {
  name: string;
  points: ReadonlyArray<readonly [number, number]>;
  /** Whether smaller x is better ('min', default) or larger: sets which way the staircase turns. */
  xSense?: 'min' | 'max';
  color?: string;
}

export const PALETTE = ['#1f77b4', '#ff7f0e', '#2ca02c', '#d62728', '#9467bd', '#8c564b', '#e377c2', '#7f7f7f', '#bcbd22', '#17becf'];

export function escapeXml(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;').replace(/'/g, '&apos;');
}

const num = (v: number) => (Number.isInteger(v) ? String(v) : v.toFixed(2));

/** "Nice" tick values (1, 2, 5 × 10^k) covering [lo, hi]. */
export function niceTicks(lo: number, hi: number, target = 6): number[] {
  if (!(hi > lo)) return [lo];
  const raw = (hi - lo) / Math.max(1, target);
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((m) => m * mag).find((s) => s >= raw) ?? 10 * mag;
  const out: number[] = [];
  for (let v = Math.ceil(lo / step - 1e-9) * step; v <= hi + step * 1e-9; v += step) out.push(Math.abs(v) < step * 1e-9 ? 0 : +v.toPrecision(12));
  return out;
}

function logTicks(lo: number, hi: number): number[] {
  const out: number[] = [];
  const a = Math.floor(Math.log10(lo));
  const b = Math.ceil(Math.log10(hi));
  const mults = b - a <= 2 ? [1, 2, 5] : [1];
  for (let e = a; e <= b; e++) for (const m of mults) {
    const v = m * 10 ** e;
    if (v >= lo * (1 - 1e-9) && v <= hi * (1 + 1e-9)) out.push(+v.toPrecision(12));
  }
  return out;
}

function formatTick(v: number): string {
  if (v === 0) return '0';
  const a = Math.abs(v);
  if (a >= 1e5 || a < 1e-3) return v.toExponential(1);
  return String(+v.toPrecision(6));
}

interface Scale {
  map(v: number): number;
  ticks: number[];
}

function makeScale(values: number[], opts: AxisOptions | undefined, pixLo: number, pixHi: number, padFrac = 0.05): Scale {
  const log = opts?.log === true;
  const vals = values.filter((v) => Number.isFinite(v) && (!log || v > 0));
  let lo = opts?.min ?? (vals.length ? Math.min(...vals) : 0);
  let hi = opts?.max ?? (vals.length ? Math.max(...vals) : 1);
  if (log) {
    lo = Math.max(lo, Number.MIN_VALUE);
    if (!(hi > lo)) hi = lo * 10;
    const l0 = Math.log10(lo);
    const l1 = Math.log10(hi);
    return { map: (v) => pixLo + ((Math.log10(v) - l0) / (l1 - l0)) * (pixHi - pixLo), ticks: logTicks(lo, hi) };
  }
  if (!(hi > lo)) {
    const c = lo;
    lo = c - (Math.abs(c) || 1) * 0.5;
    hi = c + (Math.abs(c) || 1) * 0.5;
  }
  if (opts?.min === undefined) lo -= (hi - lo) * padFrac;
  if (opts?.max === undefined) hi += (hi - lo) * padFrac;
  return { map: (v) => pixLo + ((v - lo) / (hi - lo)) * (pixHi - pixLo), ticks: niceTicks(lo, hi) };
}

interface Frame {
  width: number;
  height: number;
  left: number;
  right: number;
  top: number;
  bottom: number;
}

function frame(o: ChartOptions, legendRows: number): Frame {
  const width = o.width ?? 720;
  const height = o.height ?? 440;
  return { width, height, left: 72, right: width - 20 - (legendRows > 0 ? 150 : 0), top: o.title ? 40 : 16, bottom: height - 52 };
}

function axes(f: Frame, sx: Scale, sy: Scale, o: ChartOptions, xTickLabels?: Map<number, string>): string[] {
  const out: string[] = [];
  out.push(`<rect x="${f.left}" y="${f.top}" width="${f.right - f.left}" height="${f.bottom - f.top}" fill="none" stroke="#444" stroke-width="1"/>`);
  for (const t of sx.ticks) {
    const x = sx.map(t);
    if (x < f.left - 0.5 || x > f.right + 0.5) continue;
    out.push(`<line x1="${num(x)}" y1="${f.bottom}" x2="${num(x)}" y2="${f.bottom + 5}" stroke="#444"/>`);
    out.push(`<line x1="${num(x)}" y1="${f.top}" x2="${num(x)}" y2="${f.bottom}" stroke="#ddd" stroke-width="0.5"/>`);
    out.push(`<text x="${num(x)}" y="${f.bottom + 18}" font-size="11" text-anchor="middle">${escapeXml(xTickLabels?.get(t) ?? formatTick(t))}</text>`);
  }
  for (const t of sy.ticks) {
    const y = sy.map(t);
    if (y < f.top - 0.5 || y > f.bottom + 0.5) continue;
    out.push(`<line x1="${f.left - 5}" y1="${num(y)}" x2="${f.left}" y2="${num(y)}" stroke="#444"/>`);
    out.push(`<line x1="${f.left}" y1="${num(y)}" x2="${f.right}" y2="${num(y)}" stroke="#ddd" stroke-width="0.5"/>`);
    out.push(`<text x="${f.left - 8}" y="${num(y + 4)}" font-size="11" text-anchor="end">${escapeXml(formatTick(t))}</text>`);
  }
  if (o.title) out.push(`<text x="${f.width / 2}" y="24" font-size="15" font-weight="bold" text-anchor="middle">${escapeXml(o.title)}</text>`);
  if (o.x?.label) out.push(`<text x="${(f.left + f.right) / 2}" y="${f.height - 12}" font-size="12" text-anchor="middle">${escapeXml(o.x.label)}</text>`);
  if (o.y?.label) {
    const cy = (f.top + f.bottom) / 2;
    out.push(`<text x="16" y="${cy}" font-size="12" text-anchor="middle" transform="rotate(-90 16 ${cy})">${escapeXml(o.y.label)}</text>`);
  }
  return out;
}

function legend(f: Frame, items: Array<{ name: string; color: string; kind: 'line' | 'dot' | 'box' }>): string[] {
  const out: string[] = [];
  items.forEach((it, i) => {
    const x = f.right + 14;
    const y = f.top + 10 + i * 18;
    if (it.kind === 'line') out.push(`<line x1="${x}" y1="${y}" x2="${x + 18}" y2="${y}" stroke="${it.color}" stroke-width="2"/>`);
    else if (it.kind === 'dot') out.push(`<circle cx="${x + 9}" cy="${y}" r="4" fill="${it.color}"/>`);
    else out.push(`<rect x="${x + 3}" y="${y - 6}" width="12" height="12" fill="${it.color}"/>`);
    out.push(`<text x="${x + 24}" y="${y + 4}" font-size="11">${escapeXml(it.name)}</text>`);
  });
  return out;
}

function svgDocument(f: Frame, body: string[]): string {
  return [
    `<?xml version="1.0" encoding="UTF-8"?>`,
    `<svg xmlns="http://www.w3.org/2000/svg" width="${f.width}" height="${f.height}" viewBox="0 0 ${f.width} ${f.height}" font-family="sans-serif">`,
    `<rect width="100%" height="100%" fill="white"/>`,
    ...body,
    `</svg>`,
    '',
  ].join('\n');
}

function finite(points: ReadonlyArray<readonly [number, number]>, o: ChartOptions): Array<readonly [number, number]> {
  return points.filter(([x, y]) => Number.isFinite(x) && Number.isFinite(y) && (!o.x?.log || x > 0) && (!o.y?.log || y > 0));
}

/** Lines through each series' points (sorted by x as given); `markers` adds a dot per point. */
export function lineChart(o: ChartOptions & { series: Series[]; markers?: boolean }): string {
  const f = frame(o, o.series.length);
  const all = o.series.flatMap((s) => finite(s.points, o));
  const sx = makeScale(all.map((p) => p[0]), o.x, f.left, f.right, 0);
  const sy = makeScale(all.map((p) => p[1]), o.y, f.bottom, f.top);
  const body = axes(f, sx, sy, o);
  o.series.forEach((s, i) => {
    const color = s.color ?? PALETTE[i % PALETTE.length];
    const pts = finite(s.points, o);
    if (pts.length > 1) body.push(`<polyline fill="none" stroke="${color}" stroke-width="2" points="${pts.map(([x, y]) => `${num(sx.map(x))},${num(sy.map(y))}`).join(' ')}"/>`);
    if (o.markers || pts.length === 1) for (const [x, y] of pts) body.push(`<circle cx="${num(sx.map(x))}" cy="${num(sy.map(y))}" r="2.5" fill="${color}"/>`);
  });
  body.push(...legend(f, o.series.map((s, i) => ({ name: s.name, color: s.color ?? PALETTE[i % PALETTE.length], kind: 'line' as const }))));
  return svgDocument(f, body);
}

/** The staircase boundary of the region a front dominates, through its points. */
export function frontStaircase(points: ReadonlyArray<readonly [number, number]>, xSense: 'min' | 'max' = 'min'): Array<[number, number]> {
  const pts = [...points].sort((a, b) => a[0] - b[0]);
  const out: Array<[number, number]> = [];
  pts.forEach((p, i) => {
    if (i > 0) {
      const prev = pts[i - 1];
      // For smaller-is-better x the boundary leaves each point horizontally; otherwise vertically.
      out.push(xSense === 'min' ? [p[0], prev[1]] : [prev[0], p[1]]);
    }
    out.push([p[0], p[1]]);
  });
  return out;
}

/** Dots per series; `front` highlights Pareto points (larger, outlined) joined by a staircase. */
export function scatterChart(o: ChartOptions & { series: Series[]; front?: FrontOptions }): string {
  const items = o.series.length + (o.front ? 1 : 0);
  const f = frame(o, items);
  const all = [...o.series.flatMap((s) => finite(s.points, o)), ...(o.front ? finite(o.front.points, o) : [])];
  const sx = makeScale(all.map((p) => p[0]), o.x, f.left, f.right);
  const sy = makeScale(all.map((p) => p[1]), o.y, f.bottom, f.top);
  const body = axes(f, sx, sy, o);
  const leg: Array<{ name: string; color: string; kind: 'line' | 'dot' | 'box' }> = [];
  o.series.forEach((s, i) => {
    const color = s.color ?? PALETTE[i % PALETTE.length];
    for (const [x, y] of finite(s.points, o)) body.push(`<circle cx="${num(sx.map(x))}" cy="${num(sy.map(y))}" r="3.5" fill="${color}" fill-opacity="0.7"/>`);
    leg.push({ name: s.name, color, kind: 'dot' });
  });
  if (o.front) {
    const color = o.front.color ?? '#d62728';
    const pts = finite(o.front.points, o);
    const stairs = frontStaircase(pts, o.front.xSense);
    if (stairs.length > 1) body.push(`<polyline fill="none" stroke="${color}" stroke-width="1.5" points="${stairs.map(([x, y]) => `${num(sx.map(x))},${num(sy.map(y))}`).join(' ')}"/>`);
    for (const [x, y] of pts) body.push(`<circle cx="${num(sx.map(x))}" cy="${num(sy.map(y))}" r="5.5" fill="none" stroke="${color}" stroke-width="2"/>`);
    leg.push({ name: o.front.name, color, kind: 'line' });
  }
  body.push(...legend(f, leg));
  return svgDocument(f, body);
}

/** One bar per labelled value. */
export function barChart(o: ChartOptions & { bars: Array<{ label: string; value: number; color?: string }> }): string {
  const f = frame(o, 0);
  const n = Math.max(1, o.bars.length);
  const values = o.bars.map((b) => b.value).filter(Number.isFinite);
  const sy = makeScale([0, ...values], { ...o.y, min: o.y?.min ?? Math.min(0, ...values) }, f.bottom, f.top);
  const slot = (f.right - f.left) / n;
  const labels = new Map<number, string>();
  o.bars.forEach((b, i) => labels.set(i, b.label));
  const sx: Scale = { map: (i) => f.left + slot * (i + 0.5), ticks: o.bars.map((_, i) => i) };
  const body = axes(f, sx, sy, o, labels);
  const zero = sy.map(0);
  o.bars.forEach((b, i) => {
    if (!Number.isFinite(b.value)) return;
    const y = sy.map(b.value);
    const top = Math.min(y, zero);
    body.push(`<rect x="${num(f.left + slot * i + slot * 0.15)}" y="${num(top)}" width="${num(slot * 0.7)}" height="${num(Math.abs(zero - y))}" fill="${b.color ?? PALETTE[0]}"><title>${escapeXml(`${b.label}: ${b.value}`)}</title></rect>`);
  });
  return svgDocument(f, body);
}

/** Counts of `values` in `bins` equal-width bins. */
export function histogram(o: ChartOptions & { values: number[]; bins?: number; color?: string }): string {
  const vals = o.values.filter(Number.isFinite);
  const bins = Math.max(1, o.bins ?? Math.ceil(Math.sqrt(Math.max(1, vals.length))));
  const lo = o.x?.min ?? (vals.length ? Math.min(...vals) : 0);
  let hi = o.x?.max ?? (vals.length ? Math.max(...vals) : 1);
  if (!(hi > lo)) hi = lo + 1;
  const w = (hi - lo) / bins;
  const counts = new Array<number>(bins).fill(0);
  for (const v of vals) {
    if (v < lo || v > hi) continue;
    counts[Math.min(bins - 1, Math.floor((v - lo) / w))]++;
  }
  const f = frame(o, 0);
  const sx = makeScale([lo, hi], { ...o.x, min: lo, max: hi }, f.left, f.right, 0);
  const sy = makeScale([0, ...counts], { ...o.y, min: 0 }, f.bottom, f.top);
  const body = axes(f, sx, sy, { ...o, y: { label: 'count', ...o.y } });
  counts.forEach((c, i) => {
    const x0 = sx.map(lo + i * w);
    const x1 = sx.map(lo + (i + 1) * w);
    const y = sy.map(c);
    body.push(`<rect x="${num(x0)}" y="${num(y)}" width="${num(Math.max(0, x1 - x0 - 1))}" height="${num(sy.map(0) - y)}" fill="${o.color ?? PALETTE[0]}"/>`);
  });
  return svgDocument(f, body);
}
