import { describe, expect, it } from 'vitest';
import { transposeInto } from '../../src/util/transpose.js';

describe('transposeInto', () => {
  it('writes the transpose of a row-major matrix: dst[c][r] = src[r][c], non-square and degenerate shapes', () => {
    for (const [rows, cols] of [[3, 5], [5, 3], [1, 7], [7, 1], [4, 4]]) {
      const src = Float32Array.from({ length: rows * cols }, (_, i) => i * 1.5 - 3);
      const dst = new Float32Array(rows * cols).fill(NaN);
      transposeInto(src, rows, cols, dst);
      for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) expect(dst[c * rows + r]).toBe(src[r * cols + c]);
    }
  });
});
