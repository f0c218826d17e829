/**
 * An adapter version uploaded by an operator (a version downloaded from this or another memlora
 * server on the same base model: a backup restored, a user moved): its weights file is checked as
 * every load checks a stored adapter, then written to the store as a new version's files. The
 * caller records the version's row, and removes the files if that fails.
 */
import type { Adapter } from '../lora/adapter.js';
import { AdapterFormatError, decodeAdapterWeights, specRecord } from '../lora/format.js';
import type { AdapterStore, WrittenAdapter } from '../lora/store.js';
import { ServeError } from './errors.js';

export interface UploadedAdapter extends WrittenAdapter {
  /** The version's LoRA configuration, as a row records it: layers, n, r (and alpha when set). */
  config: { layers: boolean[]; n: number; r: number; alpha?: number };
}

/** Checks `weights` against the store's model and writes it for `userId`: invalid_adapter or adapter_model_mismatch where it cannot serve. */
export async function uploadAdapter(store: AdapterStore, userId: string, weights: Uint8Array): Promise<UploadedAdapter> {
  let adapter: Adapter;
  try {
    adapter = decodeAdapterWeights(weights, store.model);
  } catch (e) {
    if (!(e instanceof AdapterFormatError)) throw e;
    const details = { reason: e.code, ...(e.details !== undefined ? { detail: e.details } : {}) };
    if (e.code === 'model_mismatch') throw new ServeError('adapter_model_mismatch', `the adapter was made for another base model: ${e.message}`, { details });
    throw new ServeError('invalid_adapter', `not a memlora adapter of this base model: ${e.message}`, { details });
  }
  // Written as memlora encodes it (deterministic): a file downloaded from a memlora server comes back byte for byte.
  const written = await store.write(userId, adapter);
  return { ...written, config: specRecord(adapter.spec) };
}
