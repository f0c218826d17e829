import type { Node, Value } from '../ir.js';

/**
 * A vector-Jacobian rule: given a node, the loss gradient of each of its outputs (null where none
 * flows back; a gradient may be smaller than its output when it broadcasts to it, see
 * BROADCAST_TOLERANT) and which inputs need a gradient, emit IR for the inputs' gradients.
 * It returns one entry per input; entries for inputs not needed may be null. A returned gradient
 * has the input's dtype and a shape that broadcasts to the input's shape.
 */
export type VjpRule = (node: Node, grads: readonly (Value | null)[], needs: readonly boolean[]) => (Value | null)[];
