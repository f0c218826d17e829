import { type AnyTypedArray, type DType, type Dim, type Shape, GraphError, elementCount } from './types.js';

/** A typed attribute value; the tag decides how it is written to ONNX. */
export type Attr =
  | { kind: 'int'; value: number }
  | { kind: 'float'; value: number }
  | { kind: 'ints'; value: number[] }
  | { kind: 'floats'; value: number[] }
  | { kind: 'string'; value: string };

export const attr = {
  int: (value: number): Attr => ({ kind: 'int', value }),
  float: (value: number): Attr => ({ kind: 'float', value }),
  ints: (value: number[]): Attr => ({ kind: 'ints', value }),
  floats: (value: number[]): Attr => ({ kind: 'floats', value }),
  string: (value: string): Attr => ({ kind: 'string', value }),
};

export type Attrs = Record<string, Attr>;

export type ValueSource =
  | { kind: 'input' }
  | { kind: 'initializer'; data: AnyTypedArray }
  | { kind: 'node'; node: Node; index: number };

/** One tensor-valued edge of the graph. Shapes may hold symbols; dtypes are always known. */
export class Value {
  constructor(
    readonly graph: Graph,
    readonly id: number,
    readonly dtype: DType,
    readonly shape: Shape,
    readonly source: ValueSource,
    public name: string,
  ) {}

  get rank(): number {
    return this.shape.length;
  }

  /** The producing node, if the value is computed. */
  get node(): Node | undefined {
    return this.source.kind === 'node' ? this.source.node : undefined;
  }

  toString(): string {
    return `${this.name}:${this.dtype}[${this.shape.join(',')}]`;
  }
}

export interface Node {
  readonly id: number;
  readonly op: string;
  readonly domain: string;
  /** null marks an omitted optional input. */
  readonly inputs: (Value | null)[];
  readonly attrs: Attrs;
  readonly outputs: Value[];
}

export interface OutputSpec {
  dtype: DType;
  shape: Shape;
}

/**
 * A graph under construction. Ops are appended in topological order by construction (a node can only
 * use values that already exist), which the emitter and autodiff rely on.
 */
export class Graph {
  readonly inputs: Value[] = [];
  readonly initializers: Value[] = [];
  readonly nodes: Node[] = [];
  readonly outputs: { name: string; value: Value }[] = [];
  private nextId = 0;
  private readonly names = new Set<string>();
  private readonly scalarCache = new Map<string, Value>();

  constructor(readonly name = 'memlora') {}

  private claimName(name: string): string {
    if (this.names.has(name)) throw new GraphError('duplicate_name', `name "${name}" is already used in graph`, { name });
    this.names.add(name);
    return name;
  }

  input(name: string, dtype: DType, shape: Shape): Value {
    const v = new Value(this, this.nextId++, dtype, [...shape], { kind: 'input' }, this.claimName(name));
    this.inputs.push(v);
    return v;
  }

  /** A constant tensor stored in the model (weights, tables, small constants). */
  initializer(name: string | undefined, dtype: DType, shape: number[], data: AnyTypedArray): Value {
    if (data.length !== elementCount(shape)) {
      throw new GraphError('tensor_size', `initializer ${name ?? ''} has ${data.length} elements, shape [${shape}]`, {
        shape,
        length: data.length,
      });
    }
    const id = this.nextId++;
    const v = new Value(this, id, dtype, [...shape], { kind: 'initializer', data }, this.claimName(name ?? `c${id}`));
    this.initializers.push(v);
    return v;
  }

  /** A constant of the given dtype and shape (scalar by default), deduplicated per graph. */
  constant(values: number | number[], dtype: DType, shape?: number[]): Value {
    const arr = typeof values === 'number' ? [values] : values;
    const dims = shape ?? (typeof values === 'number' ? [] : [arr.length]);
    const key = `${dtype}|${dims.join(',')}|${arr.join(',')}`;
    const hit = this.scalarCache.get(key);
    if (hit) return hit;
    let data: AnyTypedArray;
    switch (dtype) {
      case 'float32':
        data = Float32Array.from(arr);
        break;
      case 'float64':
        data = Float64Array.from(arr);
        break;
      case 'int64':
        data = BigInt64Array.from(arr.map((x) => BigInt(Math.trunc(x))));
        break;
      case 'int32':
        data = Int32Array.from(arr);
        break;
      default:
        data = Uint8Array.from(arr);
    }
    const v = this.initializer(undefined, dtype, dims, data);
    this.scalarCache.set(key, v);
    return v;
  }

  /** Append a node; `outs` gives the inferred type of each output. */
  addNode(op: string, inputs: (Value | null)[], attrs: Attrs, outs: OutputSpec[], domain = ''): Value[] {
    for (const v of inputs) {
      if (v && v.graph !== this) throw new GraphError('foreign_value', `${op}: input ${v.name} belongs to another graph`);
    }
    const outputs: Value[] = [];
    const node: Node = { id: this.nextId++, op, domain, inputs, attrs, outputs };
    outs.forEach((spec, index) => {
      const id = this.nextId++;
      outputs.push(new Value(this, id, spec.dtype, [...spec.shape], { kind: 'node', node, index }, this.claimName(`v${id}`)));
    });
    this.nodes.push(node);
    return outputs;
  }

  output(name: string, value: Value): void {
    if (value.graph !== this) throw new GraphError('foreign_value', `output ${name} belongs to another graph`);
    if (this.outputs.some((o) => o.name === name)) throw new GraphError('duplicate_name', `output "${name}" declared twice`);
    this.outputs.push({ name, value });
  }

  /** Rename a computed value (for readable ONNX); inputs and initializers keep their names. */
  rename(value: Value, name: string): Value {
    this.names.delete(value.name);
    value.name = this.claimName(name);
    return value;
  }
}

export function sameDim(a: Dim, b: Dim): boolean {
  return a === b;
}
