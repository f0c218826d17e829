/**
 * What an injection needs, opened from the service configuration: the database, the base model and
 * its tokenizer, the injector and the adapter store. Shared by the CLI commands and the job worker.
 */
import { basename } from 'node:path';
import type { Config } from '../config.js';
import { type Db, openDb } from '../db/client.js';
import { allHistory } from '../db/queries/history.js';
import { AdapterStore } from '../lora/store.js';
import { Model } from '../model/model.js';
import { type Tokenizer, loadTokenizer } from '../model/tokenizer.js';
import type { HistoryItem } from './dataset.js';
import { Injector, type InjectorOptions } from './injector.js';

export interface InjectContext {
  db: Db;
  model: Model;
  tokenizer: Tokenizer;
  injector: Injector;
  store: AdapterStore;
  modelName: string;
  close(): Promise<void>;
}

export function openInjectContext(config: Config, opts: { migrate?: boolean; injector?: Partial<InjectorOptions>; db?: Db } = {}): InjectContext {
  const db = opts.db ?? openDb(config.dbFile, { migrate: opts.migrate ?? true });
  const model = Model.load(config.modelPath, {
    runnerOptions: { executionProvider: config.executionProvider, intraOpThreads: config.intraOpThreads },
  });
  const tokenizer = loadTokenizer(config.modelPath);
  const modelName = basename(config.modelPath);
  const store = new AdapterStore(config.adapterDir, { config: model.config, name: modelName });
  const injector = new Injector(model, tokenizer, { template: (model.config.chatTemplate as 'memlora' | undefined) ?? 'memlora', ...opts.injector });
  return {
    db,
    model,
    tokenizer,
    injector,
    store,
    modelName,
    async close() {
      await model.close();
      if (!opts.db) db.close();
    },
  };
}

/** A user's history from the database in the dataset's shape. */
export function userHistory(db: Db, userId: string): HistoryItem[] {
  return allHistory(db, userId).map((h) => ({
    id: h.id,
    kind: h.kind,
    role: h.role,
    text: h.text,
    conversationId: h.conversationId ?? null,
    createdAt: h.createdAt,
  }));
}
