/**
 * Adapter loads off the serving thread: the same `read(path, sha256, {userId})` as AdapterStore,
 * answered by a worker thread (load-worker.ts) that owns its own store. Errors come back as
 * AdapterStoreError with their code, so callers handle them as they would the store's. An
 * operator's upload is read apart, checked and written by the same thread (`upload`, as
 * uploadAdapterBody). A server boots the thread while it starts (`start`), so that its first cache
 * miss does not wait the ~150 ms a thread takes to import its modules; reads and uploads start it
 * themselves otherwise (or when it has died since).
 */
import type { Adapter } from '../lora/adapter.js';
import type { AdapterModel } from '../lora/format.js';
import { AdapterStoreError, type AdapterStoreErrorCode, type ReadOptions, type VerifyMode } from '../lora/store.js';
import { RequestThread } from '../util/request-thread.js';
import { type UploadBody, UploadBodyError, type UploadedAdapter } from './adapter-upload.js';
import { ServeError, type ServeErrorCode } from './errors.js';
import type { LoadReply, LoadRequest, UploadRequest } from './load-worker.js';

export interface AdapterReader {
  read(path: string, sha256: string, options?: ReadOptions): Promise<Adapter>;
}

export class WorkerAdapterLoader extends RequestThread<LoadReply> implements AdapterReader {
  constructor(root: string, model: AdapterModel, verify: VerifyMode = 'once') {
    const died = (why: string) => new AdapterStoreError('adapter_io', `adapter load thread ${why}`);
    super({
      from: import.meta.url,
      module: 'load-worker',
      workerData: { root, model, verify },
      settle(reply, waiting) {
        if (reply.ok) waiting.resolve('adapter' in reply ? reply.adapter : reply.uploaded);
        else if (reply.error.name === 'ServeError') waiting.reject(new ServeError(reply.error.code as ServeErrorCode, reply.error.message, { details: reply.error.details }));
        else if (reply.error.name === 'UploadBodyError') waiting.reject(new UploadBodyError((reply.error.details as UploadBodyError['details']).reason, reply.error.message));
        else waiting.reject(new AdapterStoreError((reply.error.code ?? 'adapter_io') as AdapterStoreErrorCode, reply.error.message, reply.error.details as Record<string, unknown> | undefined));
      },
      orphaned: (waiting, why) => waiting.reject(died(why)),
      bootError: died,
      closedError: () => new AdapterStoreError('adapter_io', 'the adapter loader is closed'),
    });
  }

  read(path: string, sha256: string, options: ReadOptions = {}): Promise<Adapter> {
    const userId = options.userId;
    if (userId === undefined) return Promise.reject(new AdapterStoreError('bad_adapter_path', 'a serving load names its user', { path }));
    return this.request<Adapter>((id) => ({ id, path, sha256, userId }) satisfies LoadRequest);
  }

  /**
   * An upload as it arrived, read apart, checked and written as `userId`'s new version's files on the
   * load thread, as uploadAdapterBody does it: its refusals come back as the same UploadBodyError and
   * ServeErrors, a failed write as AdapterStoreError. The body's buffer is handed to the thread where
   * the body is all of it (no copy): the caller must not use it afterwards.
   */
  upload(userId: string, upload: UploadBody): Promise<UploadedAdapter> {
    const { body } = upload;
    const whole = body.byteOffset === 0 && body.byteLength === body.buffer.byteLength ? [body.buffer as ArrayBuffer] : [];
    return this.request<UploadedAdapter>((id) => ({ id, userId, upload }) satisfies UploadRequest, whole);
  }
}
