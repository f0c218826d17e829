/**
 * The adapter-load thread: reads, verifies and decodes adapters with the store and hands the tensors
 * back by transfer (no copy). It exists because the serving thread is busy inside ONNX Runtime for
 * most of each decode step; a load there is a chain of small fs operations that advances only
 * between steps, which made a 2 MB load take ~100 ms under load instead of ~2 ms. An operator's
 * upload is read apart, checked, encoded and written here too (adapter-upload.ts): on the serving
 * thread a 23.6 MB multipart upload held every user's decode steps for up to a few hundred ms.
 */
import { parentPort, workerData } from 'node:worker_threads';
import type { Adapter } from '../lora/adapter.js';
import type { AdapterModel } from '../lora/format.js';
import { AdapterStore, type VerifyMode } from '../lora/store.js';
import { type UploadBody, type UploadedAdapter, uploadAdapterBody } from './adapter-upload.js';

export interface LoadRequest {
  id: number;
  path: string;
  sha256: string;
  userId: string;
}

/** An upload as it arrived, to read apart, check and write as `userId`'s new version's files (uploadAdapterBody). */
export interface UploadRequest {
  id: number;
  userId: string;
  upload: UploadBody;
}

export type LoadReply =
  | { id: number; ok: true; adapter: Adapter }
  | { id: number; ok: true; uploaded: UploadedAdapter }
  | { id: number; ok: false; error: { name: string; code?: string; message: string; details?: unknown } };

const failed = (id: number, e: unknown): LoadReply => {
  const err = e as Error & { code?: string; details?: unknown };
  return { id, ok: false, error: { name: err?.name ?? 'Error', code: err?.code, message: err?.message ?? String(e), details: err?.details } };
};

/** What the thread posts once, first: its modules are imported and its store built, so a read is answered at once. */
export interface LoadReady {
  ready: true;
}

const data = workerData as { root: string; model: AdapterModel; verify?: VerifyMode };
const store = new AdapterStore(data.root, data.model, { verify: data.verify });

// Loads run one at a time with blocking file calls (store.readSync): this thread has nothing else to
// do, and a dozen small asynchronous file operations per load cost more in thread-pool round trips
// than the reads themselves.
parentPort!.on('message', (req: LoadRequest | UploadRequest) => {
  if ('upload' in req) {
    uploadAdapterBody(store, req.userId, req.upload).then(
      (uploaded) => parentPort!.postMessage({ id: req.id, ok: true, uploaded } satisfies LoadReply),
      (e: unknown) => parentPort!.postMessage(failed(req.id, e)),
    );
    return;
  }
  let adapter: Adapter;
  try {
    adapter = store.readSync(req.path, req.sha256, { userId: req.userId });
  } catch (e) {
    parentPort!.postMessage(failed(req.id, e));
    return;
  }
  const buffers = [...new Set(adapter.pairs.flatMap((p) => [p.A.buffer, p.B.buffer]))] as ArrayBuffer[];
  const reply: LoadReply = { id: req.id, ok: true, adapter };
  try {
    parentPort!.postMessage(reply, buffers);
  } catch {
    parentPort!.postMessage(reply); // a buffer that cannot be transferred is copied
  }
});

const ready: LoadReady = { ready: true };
parentPort!.postMessage(ready);
