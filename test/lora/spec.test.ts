import { describe, expect, it } from 'vitest';
import { AdapterSpecError, defaultSpec, injectedLayers, isVanilla, parseAdapterSpec, scalingOf, specKey, totalRank } from '../../src/lora/spec.js';

describe('adapter spec', () => {
  it('parses a valid spec and derives rank, scaling and layers', () => {
    const s = parseAdapterSpec({ layers: [true, false, true, false], n: 3, r: 16 }, 4);
    expect(totalRank(s)).toBe(48);
    expect(scalingOf(s)).toBe(1);
    expect(scalingOf({ ...s, alpha: 32 })).toBe(2);
    expect(injectedLayers(s)).toEqual([0, 2]);
    expect(specKey(s)).toBe('L1010-n3-r16');
  });

  it('treats n = 0 and no injected layer as the vanilla model', () => {
    expect(isVanilla({ layers: [true, true], n: 0, r: 8 })).toBe(true);
    expect(isVanilla({ layers: [false, false], n: 4, r: 8 })).toBe(true);
    expect(specKey({ layers: [false, false], n: 4, r: 8 })).toBe('vanilla');
    expect(isVanilla(defaultSpec(2))).toBe(false);
  });

  it('rejects ranks outside the space, n outside 0..32, unknown keys and wrong layer counts', () => {
    const bad: [unknown, string][] = [
      [{ layers: [true], n: 1, r: 12 }, 'invalid_adapter_spec'],
      [{ layers: [true], n: 33, r: 8 }, 'invalid_adapter_spec'],
      [{ layers: [true], n: 1.5, r: 8 }, 'invalid_adapter_spec'],
      [{ layers: [true], n: 1, r: 8, dropout: 0.1 }, 'invalid_adapter_spec'],
      [{ layers: [true, true], n: 1, r: 8 }, 'layer_count'],
    ];
    for (const [value, code] of bad) {
      try {
        parseAdapterSpec(value, 1);
        expect.unreachable(`accepted ${JSON.stringify(value)}`);
      } catch (e) {
        expect(e).toBeInstanceOf(AdapterSpecError);
        expect((e as AdapterSpecError).code).toBe(code);
      }
    }
  });
});
