/** Emission of an IR graph to an ONNX ModelProto (onnx-proto's protobuf definition). */
import onnxProto from 'onnx-proto';
import type { onnx as P } from 'onnx-proto';
import type { Attr, Graph, Node, Value } from './ir.js';
import { onnxTypeCode } from './ops.js';
import { type Dim, GraphError } from './types.js';

const { onnx } = onnxProto;

export const OPSET = 18;
export const IR_VERSION = 8;

export interface EmitOptions {
  /** Extra opset domains used by the graph (e.g. com.microsoft contrib ops). */
  extraOpsets?: { domain: string; version: number }[];
  docString?: string;
}

function valueInfo(name: string, v: Value): P.IValueInfoProto {
  return {
    name,
    type: {
      tensorType: {
        elemType: onnxTypeCode(v.dtype),
        shape: { dim: v.shape.map((d: Dim) => (typeof d === 'number' ? { dimValue: d } : { dimParam: d })) },
      },
    },
  };
}

function attrProto(name: string, a: Attr): P.IAttributeProto {
  const T = onnx.AttributeProto.AttributeType;
  switch (a.kind) {
    case 'int':
      return { name, type: T.INT, i: a.value };
    case 'float':
      return { name, type: T.FLOAT, f: a.value };
    case 'ints':
      return { name, type: T.INTS, ints: a.value };
    case 'floats':
      return { name, type: T.FLOATS, floats: a.value };
    case 'string':
      return { name, type: T.STRING, s: new TextEncoder().encode(a.value) };
  }
}

/** Nodes that the outputs depend on, in graph order (dead code is not emitted). */
export function liveNodes(g: Graph): Node[] {
  const live = new Set<Node>();
  const stack: Value[] = g.outputs.map((o) => o.value);
  const seen = new Set<Value>();
  while (stack.length) {
    const v = stack.pop()!;
    if (seen.has(v)) continue;
    seen.add(v);
    const n = v.node;
    if (n && !live.has(n)) {
      live.add(n);
      for (const i of n.inputs) if (i) stack.push(i);
    }
  }
  return g.nodes.filter((n) => live.has(n));
}

export function toModelProto(g: Graph, opts: EmitOptions = {}): P.ModelProto {
  if (g.outputs.length === 0) throw new GraphError('no_outputs', `graph ${g.name} has no outputs`);
  const nodes = liveNodes(g);
  const used = new Set<Value>();
  for (const n of nodes) for (const i of n.inputs) if (i) used.add(i);
  for (const o of g.outputs) used.add(o.value);

  const nodeProtos: P.INodeProto[] = nodes.map((n) => ({
    opType: n.op,
    domain: n.domain || undefined,
    name: `${n.op}_${n.id}`,
    input: n.inputs.map((i) => (i ? i.name : '')),
    output: n.outputs.map((o) => o.name),
    attribute: Object.entries(n.attrs).map(([k, a]) => attrProto(k, a)),
  }));
  // Graph outputs need their own names; a value output under another name (or twice, or an input
  // passed through) goes through Identity.
  const outputInfos: P.IValueInfoProto[] = [];
  for (const o of g.outputs) {
    if (o.value.name !== o.name) {
      nodeProtos.push({ opType: 'Identity', name: `out_${o.name}`, input: [o.value.name], output: [o.name] });
    }
    outputInfos.push(valueInfo(o.name, o.value));
  }
  const initializers: P.ITensorProto[] = g.initializers
    .filter((v) => used.has(v))
    .map((v) => {
      if (v.source.kind !== 'initializer') throw new Error('unreachable');
      const d = v.source.data;
      return {
        name: v.name,
        dataType: onnxTypeCode(v.dtype),
        dims: v.shape as number[],
        rawData: new Uint8Array(d.buffer, d.byteOffset, d.byteLength),
      };
    });
  const model = onnx.ModelProto.create({
    irVersion: IR_VERSION,
    producerName: 'memlora',
    docString: opts.docString,
    opsetImport: [{ domain: '', version: OPSET }, ...(opts.extraOpsets ?? [])],
    graph: {
      name: g.name,
      node: nodeProtos,
      // Only inputs that live nodes read are declared; the runner drops surplus feeds, so callers can
      // always feed a model's full weight set.
      input: g.inputs.filter((v) => used.has(v)).map((v) => valueInfo(v.name, v)),
      output: outputInfos,
      initializer: initializers,
    },
  });
  return model;
}

export function emitOnnx(g: Graph, opts: EmitOptions = {}): Uint8Array {
  return onnx.ModelProto.encode(toModelProto(g, opts)).finish();
}
