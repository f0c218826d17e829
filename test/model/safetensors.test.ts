import { existsSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import type { HostTensor } from '../../src/graph/types.js';
import {
  SafetensorsError,
  decodeSafetensors,
  encodeSafetensors,
  readCheckpoint,
  readSafetensors,
  readSafetensorsHeader,
  writeSafetensors,
} from '../../src/model/safetensors.js';
import { tempDir } from './fixtures.js';

/** A file built by hand from the format's definition (not by our writer). */
function handMade(header: object, data: number[]): Uint8Array {
  const json = Buffer.from(JSON.stringify(header), 'utf8');
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(json.length));
  return new Uint8Array(Buffer.concat([len, json, Buffer.from(data)]));
}

const f32 = (xs: number[]): number[] => [...new Uint8Array(Float32Array.from(xs).buffer)];

function errCode(f: () => unknown): string | undefined {
  try {
    f();
  } catch (e) {
    return (e as SafetensorsError).code;
  }
  return undefined;
}

describe('decodeSafetensors', () => {
  it('reads F32, I64 and metadata from a hand-made file', () => {
    const i64 = [...new Uint8Array(BigInt64Array.of(-3n, 7n).buffer)];
    const buf = handMade(
      {
        __metadata__: { format: 'pt' },
        b: { dtype: 'I64', shape: [2], data_offsets: [0, 16] },
        a: { dtype: 'F32', shape: [2, 2], data_offsets: [16, 32] },
      },
      [...i64, ...f32([1, 2.5, -3, 4])],
    );
    const { tensors, metadata } = decodeSafetensors(buf);
    expect(metadata).toEqual({ format: 'pt' });
    expect(tensors.get('a')).toMatchObject({ dtype: 'float32', dims: [2, 2] });
    expect([...(tensors.get('a')!.data as Float32Array)]).toEqual([1, 2.5, -3, 4]);
    expect([...(tensors.get('b')!.data as BigInt64Array)]).toEqual([-3n, 7n]);
  });

  it('converts F16 and BF16 to float32 exactly', () => {
    // f16: 1.0 = 0x3c00, -2.0 = 0xc000, 65504 = 0x7bff, smallest subnormal 2^-24 = 0x0001, inf = 0x7c00
    const f16 = [0x3c00, 0xc000, 0x7bff, 0x0001, 0x7c00];
    // bf16: 1.0 = 0x3f80, -0.5 = 0xbf00, 3.140625 = 0x4049
    const bf16 = [0x3f80, 0xbf00, 0x4049];
    const bytes = [...new Uint8Array(Uint16Array.from([...f16, ...bf16]).buffer)];
    const buf = handMade(
      { h: { dtype: 'F16', shape: [5], data_offsets: [0, 10] }, b: { dtype: 'BF16', shape: [3], data_offsets: [10, 16] } },
      bytes,
    );
    const { tensors } = decodeSafetensors(buf);
    expect([...(tensors.get('h')!.data as Float32Array)]).toEqual([1, -2, 65504, 2 ** -24, Infinity]);
    expect([...(tensors.get('b')!.data as Float32Array)]).toEqual([1, -0.5, 3.140625]);
    expect(tensors.get('h')!.dtype).toBe('float32');
  });

  it('rejects truncated data, bad offsets and unknown dtypes with codes', () => {
    expect(errCode(() => decodeSafetensors(handMade({ a: { dtype: 'F32', shape: [4], data_offsets: [0, 16] } }, f32([1, 2]))))).toBe('truncated');
    expect(errCode(() => decodeSafetensors(handMade({ a: { dtype: 'F32', shape: [3], data_offsets: [0, 8] } }, f32([1, 2]))))).toBe('bad_safetensors');
    expect(errCode(() => decodeSafetensors(handMade({ a: { dtype: 'C64', shape: [1], data_offsets: [0, 8] } }, f32([1, 2]))))).toBe('unsupported_dtype');
    expect(errCode(() => decodeSafetensors(new Uint8Array(5)))).toBe('truncated');
    const bad = handMade({}, []);
    bad[8] = 0x7b + 1; // not JSON any more
    expect(errCode(() => decodeSafetensors(bad))).toBe('bad_safetensors');
  });
});

describe('encodeSafetensors', () => {
  const tensors = (): Record<string, HostTensor> => ({
    'z.weight': { dtype: 'float32', dims: [3], data: Float32Array.of(1, 2, 3) },
    'a.idx': { dtype: 'int64', dims: [1], data: BigInt64Array.of(42n) },
    'm.i32': { dtype: 'int32', dims: [2], data: Int32Array.of(-1, 5) },
    'b.weight': { dtype: 'float32', dims: [1, 1], data: Float32Array.of(-7) },
  });

  it('round-trips and is deterministic whatever the insertion order', () => {
    const t = tensors();
    const one = encodeSafetensors(t, { k2: 'v', k1: 'w' });
    const reversed = Object.fromEntries(Object.entries(t).reverse());
    expect(Buffer.from(encodeSafetensors(reversed, { k1: 'w', k2: 'v' })).equals(Buffer.from(one))).toBe(true);
    const back = decodeSafetensors(one);
    expect(back.metadata).toEqual({ k1: 'w', k2: 'v' });
    for (const [n, x] of Object.entries(t)) {
      expect(back.tensors.get(n)!.dims).toEqual(x.dims);
      expect([...back.tensors.get(n)!.data]).toEqual([...x.data]);
    }
  });

  it('pads the header to 8 bytes and aligns every tensor to its element size, with no holes', () => {
    const buf = encodeSafetensors(tensors());
    const n = Number(new DataView(buf.buffer).getBigUint64(0, true));
    expect(n % 8).toBe(0);
    const header = JSON.parse(Buffer.from(buf.subarray(8, 8 + n)).toString('utf8')) as Record<string, { dtype: string; data_offsets: [number, number] }>;
    const spans = Object.values(header).map((h) => h.data_offsets).sort((a, b) => a[0] - b[0]);
    spans.forEach(([s], i) => expect(s).toBe(i === 0 ? 0 : spans[i - 1][1]));
    expect(spans[spans.length - 1][1]).toBe(buf.byteLength - 8 - n);
    for (const h of Object.values(header)) expect(h.data_offsets[0] % (h.dtype === 'I64' ? 8 : 4)).toBe(0);
  });

  it('writes atomically (no temp file left) and reads back from disk, header first', () => {
    const dir = tempDir('st');
    const path = join(dir, 'x.safetensors');
    writeSafetensors(path, tensors(), { a: 'b' });
    writeSafetensors(path, tensors()); // overwrite in place
    expect(readdirSync(dir)).toEqual(['x.safetensors']);
    const h = readSafetensorsHeader(path);
    expect([...h.tensors.keys()].sort()).toEqual(['a.idx', 'b.weight', 'm.i32', 'z.weight']);
    const f = readSafetensors(path, (name) => name.endsWith('.weight'));
    expect([...f.tensors.keys()].sort()).toEqual(['b.weight', 'z.weight']);
    expect([...(f.tensors.get('z.weight')!.data as Float32Array)]).toEqual([1, 2, 3]);
    expect(Buffer.from(readFileSync(path)).equals(Buffer.from(encodeSafetensors(tensors())))).toBe(true);
  });

  it('reads a sharded checkpoint through its index, and names a missing shard', () => {
    const dir = tempDir('shards');
    const t = tensors();
    writeSafetensors(join(dir, 'model-00001-of-00002.safetensors'), { 'z.weight': t['z.weight'], 'a.idx': t['a.idx'] });
    writeSafetensors(join(dir, 'model-00002-of-00002.safetensors'), { 'b.weight': t['b.weight'] });
    const map = { 'z.weight': 'model-00001-of-00002.safetensors', 'a.idx': 'model-00001-of-00002.safetensors', 'b.weight': 'model-00002-of-00002.safetensors' };
    writeFileSync(join(dir, 'model.safetensors.index.json'), JSON.stringify({ metadata: {}, weight_map: map }));
    const all = readCheckpoint(dir);
    expect([...all.keys()].sort()).toEqual(['a.idx', 'b.weight', 'z.weight']);
    writeFileSync(join(dir, 'model.safetensors.index.json'), JSON.stringify({ weight_map: { ...map, 'q.weight': 'model-00003-of-00003.safetensors' } }));
    expect(errCode(() => readCheckpoint(dir))).toBe('missing_shard');
    expect(existsSync(join(dir, 'model.safetensors'))).toBe(false);
    expect(errCode(() => readCheckpoint(tempDir('empty')))).toBe('file_not_found');
  });
});
