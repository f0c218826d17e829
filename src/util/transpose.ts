/**
 * dst = src^T for a row-major src [rows, cols]: dst is [cols, rows]. Sequential writes and strided
 * reads, about 2x faster in V8 than the other way round (the serving path transposes adapter B's).
 * src and dst must not overlap.
 */
export function transposeInto<T extends Float32Array | Uint8Array>(src: T, rows: number, cols: number, dst: T): void {
  for (let c = 0; c < cols; c++) {
    const d = c * rows;
    for (let r = 0; r < rows; r++) dst[d + r] = src[r * cols + c];
  }
}
