import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { SearchError } from '../../../src/inject/search/errors.js';
import { Rng } from '../../../src/util/rng.js';
import { createSpace, type LoraConfig, type Rank } from '../../../src/inject/search/space.js';

const cfg = (bits: string, n: number, r: Rank): LoraConfig => ({ layers: [...bits].map((b) => b === '1'), n, r });

describe('LoRA search space', () => {
  const space = createSpace({ layers: 8 });

  it('encodes layer bits, n/32 and the rank index/4, in that order', () => {
    expect(space.dims).toBe(10);
    expect(space.dimNames).toEqual(['layer0', 'layer1', 'layer2', 'layer3', 'layer4', 'layer5', 'layer6', 'layer7', 'n', 'r']);
    expect(Array.from(space.encode(cfg('10000001', 8, 32)))).toEqual([1, 0, 0, 0, 0, 0, 0, 1, 0.25, 0.5]);
    expect(Array.from(space.encode(cfg('01000000', 32, 96)))).toEqual([0, 1, 0, 0, 0, 0, 0, 0, 1, 1]);
    expect(space.encode(cfg('11111111', 1, 16))[9]).toBe(0.25);
  });

  it('decodes by rounding and round-trips every non-vanilla configuration (property)', () => {
    expect(space.decode([0.7, 0.2, 0.5, 0, 0, 0, 0, 0.49, 0.26, 0.6])).toEqual(cfg('10100000', 8, 32));
    fc.assert(
      fc.property(fc.array(fc.boolean(), { minLength: 8, maxLength: 8 }), fc.integer({ min: 1, max: 32 }), fc.constantFrom(8, 16, 32, 64, 96), (layers, n, r) => {
        fc.pre(layers.some(Boolean));
        const c: LoraConfig = { layers, n, r: r as Rank };
        expect(space.decode(space.encode(c))).toEqual(c);
        expect(space.key(space.decode(space.encode(c)))).toBe(space.key(c));
      }),
    );
  });

  it('treats n = 0 or no injected layer as the one vanilla point', () => {
    expect(space.isVanilla(cfg('10110000', 0, 64))).toBe(true);
    expect(space.isVanilla(cfg('00000000', 5, 16))).toBe(true);
    expect(space.isVanilla(cfg('00000001', 1, 8))).toBe(false);
    expect(space.key(cfg('10110000', 0, 64))).toBe('vanilla');
    expect(space.key(cfg('00000000', 5, 16))).toBe('vanilla');
    expect(space.canonical(cfg('00000000', 5, 16))).toEqual(cfg('00000000', 0, 8));
    expect(Array.from(space.encode(cfg('11000000', 0, 96)))).toEqual(new Array(10).fill(0));
    expect(space.key(cfg('01000000', 4, 16))).toBe('01000000:n4:r16');
  });

  it('lists one-change neighbours: bit flips, n ±1 and ±4, r one step', () => {
    const c = cfg('10000000', 3, 8);
    const keys = space.neighbours(c).map((x) => space.key(x));
    // 8 flips (flipping the only bit gives vanilla), n 2, 4, 7 (−4 is out of range), r 16.
    expect(keys).toContain('vanilla');
    expect(keys).toContain('11000000:n3:r8');
    expect(keys).toContain('10000000:n2:r8');
    expect(keys).toContain('10000000:n4:r8');
    expect(keys).toContain('10000000:n7:r8');
    expect(keys).toContain('10000000:n3:r16');
    expect(keys).toHaveLength(8 + 3 + 1);
    expect(new Set(keys).size).toBe(keys.length);
    expect(keys).not.toContain(space.key(c));
    // Vanilla's neighbours are the smallest adapters.
    const v = space.neighbours(space.vanilla()).map((x) => space.key(x));
    expect(v).toHaveLength(8);
    expect(v).toContain('00100000:n1:r8');
  });

  it('supports fixed parts for ablations (search over n only)', () => {
    const nOnly = createSpace({ layers: 4, fixed: { layers: [true, true, true, true], r: 8 } });
    expect(nOnly.dims).toBe(1);
    expect(nOnly.dimNames).toEqual(['n']);
    expect(nOnly.decode([0.5])).toEqual(cfg('1111', 16, 8));
    expect(nOnly.canonical(cfg('1000', 3, 64))).toEqual(cfg('1111', 3, 8));
    expect(nOnly.size).toBe(33);
    const rOnly = createSpace({ layers: 4, fixed: { layers: [true, false, true, false], n: 2 } });
    expect(rOnly.dimNames).toEqual(['r']);
    expect(rOnly.neighbours(cfg('1010', 2, 16)).map((c) => c.r).sort((a, b) => a - b)).toEqual([8, 32]);
    expect(rOnly.size).toBe(5);
    expect(space.size).toBe(255 * 32 * 5 + 1);
  });

  it('rejects malformed spaces and configurations with codes', () => {
    const code = (f: () => unknown) => {
      try {
        f();
      } catch (e) {
        return (e as SearchError).code;
      }
      return null;
    };
    expect(code(() => createSpace({ layers: 0 }))).toBe('bad_space');
    expect(code(() => createSpace({ layers: 2, ranks: [16, 8] }))).toBe('bad_space');
    expect(code(() => space.key(cfg('101', 1, 8)))).toBe('bad_config');
    expect(code(() => space.key(cfg('10100000', 33, 8)))).toBe('bad_config');
    expect(code(() => space.key({ layers: new Array(8).fill(true), n: 1, r: 12 as Rank }))).toBe('bad_config');
    expect(code(() => space.decode([0.5]))).toBe('bad_point');
  });

  it('draws canonical random configurations reproducibly', () => {
    const a = Array.from({ length: 20 }, ((rng) => () => space.random(rng))(new Rng(3)));
    const b = Array.from({ length: 20 }, ((rng) => () => space.random(rng))(new Rng(3)));
    expect(a).toEqual(b);
    for (const c of a) expect(space.canonical(c)).toEqual(c);
  });
});

describe('enumerate', () => {
  it('lists every distinct model exactly once, matching size', () => {
    for (const sp of [createSpace({ layers: 3, nMax: 4, ranks: [8, 16] }), createSpace({ layers: 4, fixed: { layers: [true, true, false, false] } })]) {
      const all = [...sp.enumerate()];
      expect(all).toHaveLength(sp.size);
      expect(new Set(all.map((c) => sp.key(c))).size).toBe(all.length);
    }
  });
});
