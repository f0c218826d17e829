/**
 * An adapter uploaded by an operator, written to the store as a new version's files; the caller
 * records the version's row, and removes the files if that fails. Either a weights file as memlora
 * writes it (downloaded from this or another memlora server on the same base model: a backup
 * restored, a user moved), checked as every load checks a stored adapter; or a LoRA adapter trained
 * with Hugging Face PEFT on the same base model (its weights and adapter_config.json), converted
 * exactly (lora/peft.ts).
 */
import type { Adapter } from '../lora/adapter.js';
import { AdapterFormatError, decodeAdapterWeights, specRecord, weightsMetadata } from '../lora/format.js';
import { adapterFromPeft } from '../lora/peft.js';
import type { AdapterStore, WrittenAdapter } from '../lora/store.js';
import { ServeError } from './errors.js';

export interface UploadedAdapter extends WrittenAdapter {
  /** The version's LoRA configuration, as a row records it: layers, n, r (and alpha when set). */
  config: { layers: boolean[]; n: number; r: number; alpha?: number };
  /** Where it came from: memlora's own format, or PEFT's converted. */
  source: 'memlora' | 'peft';
}

/** Whether a weights file carries memlora's record (else it may be PEFT's own); its header alone is read. */
function isMemloraWeights(weights: Uint8Array): boolean {
  return weightsMetadata(weights)['memlora.format_version'] !== undefined;
}

/**
 * Checks the upload against the store's model and writes it for `userId`: `peftConfig` is PEFT's
 * adapter_config.json, needed for weights without memlora's record. invalid_adapter or
 * adapter_model_mismatch where it cannot serve.
 */
export async function uploadAdapter(store: AdapterStore, userId: string, weights: Uint8Array, peftConfig?: Uint8Array): Promise<UploadedAdapter> {
  let adapter: Adapter;
  let source: UploadedAdapter['source'] = 'memlora';
  try {
    if (peftConfig && !isMemloraWeights(weights)) {
      adapter = adapterFromPeft(weights, peftConfig, store.model.config);
      source = 'peft';
    } else {
      adapter = decodeAdapterWeights(weights, store.model);
    }
  } catch (e) {
    if (!(e instanceof AdapterFormatError)) throw e;
    const details = { reason: e.code, ...(e.details !== undefined ? { detail: e.details } : {}) };
    if (e.code === 'model_mismatch') throw new ServeError('adapter_model_mismatch', `the adapter was made for another base model: ${e.message}`, { details });
    const hint = e.code === 'bad_metadata' && !peftConfig ? " (a PEFT adapter: send its adapter_config.json with it, as multipart/form-data)" : '';
    throw new ServeError('invalid_adapter', `not an adapter memlora can serve on this base model: ${e.message}${hint}`, { details });
  }
  // Written as memlora encodes it (deterministic): a file downloaded from a memlora server comes back byte for byte.
  const written = await store.write(userId, adapter);
  return { ...written, config: specRecord(adapter.spec), source };
}
