export * from './types.js';
export * from './ir.js';
export * as ops from './ops.js';
export { SLICE_END, broadcastShapes, broadcastAxes, mulDims } from './shape.js';
export { emitOnnx, toModelProto, liveNodes, OPSET } from './onnx.js';
export { Runner, CompiledGraph, runOnce, type RunnerOptions, type Feeds, type ExecutionProvider } from './runner.js';
export { grad, gradientPath, VJP_RULES, BROADCAST_TOLERANT, type GradOptions, type GradientPath, type VjpRule } from './autodiff.js';
