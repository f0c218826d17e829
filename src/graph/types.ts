/** Element types the IR knows. The ONNX enum values live in onnx.ts. */
export type DType = 'float32' | 'float64' | 'int64' | 'int32' | 'bool' | 'uint8';

/** A dimension: a number, or a symbol (a name such as "B", or a derived expression such as "B*T"). */
export type Dim = number | string;
export type Shape = readonly Dim[];

export type TypedArrayOf<D extends DType> = D extends 'float32'
  ? Float32Array
  : D extends 'float64'
    ? Float64Array
    : D extends 'int64'
      ? BigInt64Array
      : D extends 'int32'
        ? Int32Array
        : Uint8Array;

export type AnyTypedArray = Float32Array | Float64Array | BigInt64Array | Int32Array | Uint8Array;

/** A tensor in host memory: what graphs are fed and what they return. */
export interface HostTensor {
  dtype: DType;
  dims: number[];
  data: AnyTypedArray;
}

export const isFloat = (d: DType): boolean => d === 'float32' || d === 'float64';

export function elementCount(dims: readonly number[]): number {
  let n = 1;
  for (const d of dims) n *= d;
  return n;
}

export function allocate(dtype: DType, n: number): AnyTypedArray {
  switch (dtype) {
    case 'float32':
      return new Float32Array(n);
    case 'float64':
      return new Float64Array(n);
    case 'int64':
      return new BigInt64Array(n);
    case 'int32':
      return new Int32Array(n);
    case 'bool':
    case 'uint8':
      return new Uint8Array(n);
  }
}

export function hostTensor(dtype: DType, dims: number[], data?: AnyTypedArray | number[]): HostTensor {
  const n = elementCount(dims);
  let buf: AnyTypedArray;
  if (data === undefined) buf = allocate(dtype, n);
  else if (Array.isArray(data)) {
    buf = allocate(dtype, n);
    if (buf instanceof BigInt64Array) data.forEach((v, i) => ((buf as BigInt64Array)[i] = BigInt(Math.trunc(v))));
    else (buf as Float32Array).set(data);
  } else buf = data;
  if (buf.length !== n) {
    throw new GraphError('tensor_size', `data has ${buf.length} elements, dims [${dims}] need ${n}`, { dims, length: buf.length });
  }
  return { dtype, dims, data: buf };
}

/** Every error raised while building or running graphs carries a machine-readable code. */
export class GraphError extends Error {
  constructor(
    readonly code: string,
    message: string,
    readonly details?: unknown,
  ) {
    super(message);
    this.name = 'GraphError';
  }
}
