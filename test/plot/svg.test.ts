import { describe, expect, it } from 'vitest';
import { barChart, escapeXml, frontStaircase, histogram, lineChart, niceTicks, scatterChart } from '../../src/plot/svg.js';

interface XmlNode {
  name: string;
  attrs: Record<string, string>;
  children: XmlNode[];
  text: string;
}

/**
 * A strict little XML parser, written for this test: it throws on unbalanced or mismatched tags,
 * unquoted or duplicate attributes, stray '<' or '&', and unknown entities.
 */
function parseXml(src: string): XmlNode {
  let i = 0;
  const fail = (msg: string): never => {
    throw new Error(`${msg} at ${i}: ${JSON.stringify(src.slice(i, i + 40))}`);
  };
  const checkText = (t: string) => {
    if (t.includes('<')) fail('stray <');
    for (const m of t.matchAll(/&([^;]*);?/g)) if (!/^(amp|lt|gt|quot|apos|#\d+|#x[0-9a-f]+)$/i.test(m[1]) || !m[0].endsWith(';')) fail(`bad entity ${m[0]}`);
  };
  const skipWs = () => {
    while (i < src.length && /\s/.test(src[i])) i++;
  };
  if (src.startsWith('<?xml')) {
    const end = src.indexOf('?>');
    if (end < 0) fail('unterminated declaration');
    i = end + 2;
  }
  skipWs();
  const parseElement = (): XmlNode => {
    if (src[i] !== '<') fail('expected <');
    i++;
    const name = /^[A-Za-z_][\w:.-]*/.exec(src.slice(i))?.[0] ?? fail('bad tag name');
    i += name.length;
    const attrs: Record<string, string> = {};
    for (;;) {
      skipWs();
      if (src.startsWith('/>', i)) {
        i += 2;
        return { name, attrs, children: [], text: '' };
      }
      if (src[i] === '>') {
        i++;
        break;
      }
      const an = /^[A-Za-z_][\w:.-]*/.exec(src.slice(i))?.[0] ?? fail('bad attribute name');
      i += an.length;
      skipWs();
      if (src[i] !== '=') fail('expected =');
      i++;
      skipWs();
      const q = src[i];
      if (q !== '"' && q !== "'") fail('unquoted attribute');
      const end = src.indexOf(q, i + 1);
      if (end < 0) fail('unterminated attribute');
      const value = src.slice(i + 1, end);
      checkText(value);
      if (an in attrs) fail(`duplicate attribute ${an}`);
      attrs[an] = value;
      i = end + 1;
    }
    const node: XmlNode = { name, attrs, children: [], text: '' };
    for (;;) {
      const lt = src.indexOf('<', i);
      if (lt < 0) fail(`unclosed <${name}>`);
      const text = src.slice(i, lt);
      checkText(text);
      node.text += text;
      i = lt;
      if (src.startsWith('</', i)) {
        const close = /^<\/([\w:.-]+)\s*>/.exec(src.slice(i)) ?? fail('bad closing tag');
        if (close[1] !== name) fail(`</${close[1]}> closes <${name}>`);
        i += close[0].length;
        return node;
      }
      node.children.push(parseElement());
    }
  };
  const root = parseElement();
  skipWs();
  if (i !== src.length) fail('content after the root element');
  return root;
}

function all(node: XmlNode, name: string): XmlNode[] {
  return [...(node.name === name ? [node] : []), ...node.children.flatMap((c) => all(c, name))];
}

function texts(node: XmlNode): string[] {
  return all(node, 'text').map((t) => t.text);
}

describe('the test parser itself', () => {
  it('rejects malformed documents', () => {
    expect(() => parseXml('<svg><g></svg>')).toThrow(/closes/);
    expect(() => parseXml('<svg a=1/>')).toThrow(/unquoted/);
    expect(() => parseXml('<svg><text>a < b</text></svg>')).toThrow();
    expect(() => parseXml('<svg><text>a & b</text></svg>')).toThrow(/entity/);
    expect(() => parseXml('<svg/><svg/>')).toThrow(/after the root/);
    expect(parseXml('<svg x="1"><text>a &amp; b</text></svg>').children[0].text).toBe('a &amp; b');
  });
});

describe('SVG charts', () => {
  it('scatter: well-formed, one dot per point, the front outlined and joined by a staircase', () => {
    const svg = scatterChart({
      title: 'Pareto <front> & trials',
      x: { label: 'validation loss' },
      y: { label: 'ROUGE-L' },
      series: [{ name: 'trials', points: [[1.2, 0.2], [1.1, 0.25], [1.0, 0.18], [1.3, 0.1]] }],
      front: { name: 'Pareto front', points: [[1.0, 0.18], [1.1, 0.25]] },
    });
    const root = parseXml(svg);
    expect(root.name).toBe('svg');
    expect(root.attrs.xmlns).toBe('http://www.w3.org/2000/svg');
    const circles = all(root, 'circle');
    // 4 trial dots, 2 front outlines, 2 legend dots.
    expect(circles.filter((c) => c.attrs.fill !== 'none' && c.attrs.r === '3.5')).toHaveLength(4);
    expect(circles.filter((c) => c.attrs.fill === 'none')).toHaveLength(2);
    const stairs = all(root, 'polyline');
    expect(stairs).toHaveLength(1);
    expect(stairs[0].attrs.points.split(' ')).toHaveLength(3);
    expect(texts(root)).toContain('Pareto &lt;front&gt; &amp; trials');
    expect(texts(root)).toContain('Pareto front');
    expect(texts(root)).toContain('validation loss');
    // Higher ROUGE-L is drawn higher (smaller SVG y).
    const front = circles.filter((c) => c.attrs.fill === 'none').map((c) => [+c.attrs.cx, +c.attrs.cy]);
    expect(front[1][0]).toBeGreaterThan(front[0][0]);
    expect(front[1][1]).toBeLessThan(front[0][1]);
  });

  it('line chart: one polyline per series, legend entries, log-x ticks at powers of ten', () => {
    const svg = lineChart({
      title: 'hypervolume',
      x: { label: 'evaluations', log: true },
      y: { label: 'HV' },
      series: [
        { name: 'BO', points: [[1, 0.1], [10, 0.5], [100, 0.9]] },
        { name: 'random', points: [[1, 0.1], [10, 0.3], [100, 0.6], [0, 0.7]] },
      ],
    });
    const root = parseXml(svg);
    const lines = all(root, 'polyline');
    expect(lines).toHaveLength(2);
    expect(lines[0].attrs.points.split(' ')).toHaveLength(3);
    // x = 0 cannot be drawn on a log axis and is dropped.
    expect(lines[1].attrs.points.split(' ')).toHaveLength(3);
    expect(texts(root)).toEqual(expect.arrayContaining(['BO', 'random', '1', '10', '100']));
    // Equal ratios are equal distances on a log axis.
    const xs = lines[0].attrs.points.split(' ').map((p) => +p.split(',')[0]);
    expect(xs[2] - xs[1]).toBeCloseTo(xs[1] - xs[0], 1);
  });

  it('bar chart and histogram: one rect per bar / bin with heights proportional to values', () => {
    const bars = parseXml(barChart({ title: 'ablation', bars: [{ label: 'layers', value: 2 }, { label: 'n', value: 4 }, { label: 'all', value: 1 }] }));
    const rects = all(bars, 'rect').filter((r) => r.children.some((c) => c.name === 'title'));
    expect(rects).toHaveLength(3);
    expect(+rects[1].attrs.height / +rects[0].attrs.height).toBeCloseTo(2, 1);
    expect(texts(bars)).toEqual(expect.arrayContaining(['layers', 'n', 'all']));
    const hist = parseXml(histogram({ values: [0, 0.1, 0.2, 0.9, 1], bins: 2 }));
    const bins = all(hist, 'rect').filter((r) => r.attrs.fill === '#1f77b4');
    expect(bins).toHaveLength(2);
    expect(+bins[0].attrs.height / +bins[1].attrs.height).toBeCloseTo(3 / 2, 1);
  });

  it('helpers: nice ticks, staircase, escaping', () => {
    expect(niceTicks(0, 1)).toEqual([0, 0.2, 0.4, 0.6, 0.8, 1]);
    expect(niceTicks(0.93, 1.27, 4)).toEqual([1, 1.1, 1.2]);
    expect(frontStaircase([[2, 2], [1, 1]])).toEqual([[1, 1], [2, 1], [2, 2]]);
    expect(frontStaircase([[1, 1], [2, 2]], 'max')).toEqual([[1, 1], [1, 2], [2, 2]]);
    expect(escapeXml(`<a href="x">'&'</a>`)).toBe('&lt;a href=&quot;x&quot;&gt;&apos;&amp;&apos;&lt;/a&gt;');
  });

  it('survives empty and degenerate data', () => {
    expect(() => parseXml(lineChart({ series: [] }))).not.toThrow();
    expect(() => parseXml(scatterChart({ series: [{ name: 'one', points: [[1, 1]] }] }))).not.toThrow();
    expect(() => parseXml(histogram({ values: [] }))).not.toThrow();
  });
});
