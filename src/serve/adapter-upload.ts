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

/** An upload as it arrived: the request's body and its content type. */
export interface UploadBody {
  body: Uint8Array;
  contentType: string;
}

/** An upload whose body holds no adapter files (400 invalid_adapter): empty, or multipart that cannot be read. */
export class UploadBodyError extends Error {
  readonly details: { reason: 'empty_body' | 'bad_multipart' };
  constructor(reason: 'empty_body' | 'bad_multipart', message: string) {
    super(message);
    this.name = 'UploadBodyError';
    this.details = { reason };
  }
}

/** The parts of a multipart upload, by name. */
const PARTS = { weights: 'adapter_model.safetensors', peftConfig: 'adapter_config.json' } as const;

/**
 * The uploaded files: the body itself (memlora's weights file), or multipart/form-data with the
 * parts adapter_model.safetensors and, for a PEFT adapter, adapter_config.json. UploadBodyError for
 * an empty or malformed upload. Reading a multipart body apart blocks its thread (15-320 ms for
 * 23.6 MB on this machine): the server does it on the adapter-load thread.
 */
export async function uploadedFiles({ body, contentType }: UploadBody): Promise<{ weights: Uint8Array; peftConfig?: Uint8Array }> {
  const refuse = (reason: 'empty_body' | 'bad_multipart', message: string): never => {
    throw new UploadBodyError(reason, message);
  };
  if (!/^multipart\/form-data\b/i.test(contentType)) {
    if (body.byteLength === 0) refuse('empty_body', `the body is empty: send a memlora ${PARTS.weights}, or a PEFT adapter's two files as multipart/form-data`);
    return { weights: body };
  }
  let form: FormData;
  try {
    form = await new Response(body as Uint8Array<ArrayBuffer>, { headers: { 'content-type': contentType } }).formData();
  } catch (e) {
    return refuse('bad_multipart', `the multipart body cannot be read: ${(e as Error).message}`);
  }
  const parts: Record<string, Uint8Array> = {};
  for (const [name, value] of form.entries()) {
    if (name !== PARTS.weights && name !== PARTS.peftConfig) refuse('bad_multipart', `unknown part ${JSON.stringify(name.slice(0, 80))}: send ${PARTS.weights} and, for a PEFT adapter, ${PARTS.peftConfig}`);
    if (name in parts) refuse('bad_multipart', `part ${name} is sent twice`);
    parts[name] = typeof value === 'string' ? new TextEncoder().encode(value) : new Uint8Array(await value.arrayBuffer());
  }
  const weights = parts[PARTS.weights];
  if (!weights || weights.byteLength === 0) return refuse('empty_body', `the part ${PARTS.weights} is missing or empty`);
  return { weights, peftConfig: parts[PARTS.peftConfig] };
}

/** An upload as it arrived, its files read apart (uploadedFiles), then checked and written (uploadAdapter). */
export async function uploadAdapterBody(store: AdapterStore, userId: string, upload: UploadBody): Promise<UploadedAdapter> {
  const { weights, peftConfig } = await uploadedFiles(upload);
  return uploadAdapter(store, userId, weights, peftConfig);
}

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
