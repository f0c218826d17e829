/**
 * What the job tests share: a temp directory holding a tiny random GPT-2 model directory (config,
 * safetensors, a small trained BPE tokenizer), the service configuration pointing at it, and persona
 * users (src/eval/persona.ts) whose history goes into the database.
 */
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadConfig, type Config } from '../../src/config.js';
import type { Db } from '../../src/db/client.js';
import { appendHistory, type NewHistoryItem } from '../../src/db/queries/history.js';
import { createUser } from '../../src/db/queries/users.js';
import { makePersonaUsers } from '../../src/eval/persona.js';
import type { JobRunSettings } from '../../src/inject/job-runner.js';
import type { InjectorOptions } from '../../src/inject/injector.js';
import { saveTokenizer, trainBpe } from '../../src/model/bpe-train.js';
import { loadTokenizer } from '../../src/model/tokenizer.js';
import type { ModelConfig } from '../../src/model/config.js';
import { saveCheckpoint } from '../../src/model/save.js';
import { initWeights } from '../../src/pretrain/init.js';
import { fixtureTexts } from '../model/tokenizer-fixture.js';

export const ADMIN_TOKEN = 'test-admin-token-0123456789';

/** Small and fast: 1 epoch, n <= 2, short rows and replies. */
export const FAST_SETTINGS: Partial<JobRunSettings> = { budget: 3, initialPoints: 2, nMax: 2, train: { epochs: 1, lr: 1e-2 }, progressIntervalMs: 0 };
export const FAST_INJECTOR: Partial<InjectorOptions> = { maxLen: 96, maxNewTokens: 6 };

export interface JobsEnv {
  dir: string;
  modelDir: string;
  config: Config;
  cleanup(): void;
}

/** The model directory is built once per call; the history of persona user i goes to `userId`. */
export function makeJobsEnv(env: Record<string, string> = {}): JobsEnv {
  const dir = mkdtempSync(join(tmpdir(), 'memlora-jobs-'));
  const modelDir = join(dir, 'model');
  mkdirSync(modelDir, { recursive: true });
  const bpe = trainBpe(fixtureTexts(), { vocabSize: 400 });
  saveTokenizer(modelDir, bpe);
  const tokenizer = loadTokenizer(modelDir);
  const cfg: ModelConfig = {
    family: 'gpt2',
    vocabSize: tokenizer.vocabSize,
    dModel: 32,
    nLayers: 2,
    nHeads: 4,
    nKvHeads: 4,
    headDim: 8,
    dFf: 64,
    maxPositions: 128,
    normEps: 1e-5,
    ropeTheta: 10000,
    ropeStyle: 'half',
    tieEmbeddings: true,
    activation: 'gelu_tanh',
    bosId: tokenizer.bosId,
    eosId: tokenizer.eosId,
  };
  saveCheckpoint(modelDir, cfg, initWeights(cfg, 3, 0.1));
  const config = loadConfig({
    MEMLORA_PORT: '0',
    MEMLORA_DATA_DIR: join(dir, 'data'),
    MEMLORA_ADAPTER_DIR: join(dir, 'adapters'),
    MEMLORA_ADMIN_TOKEN: ADMIN_TOKEN,
    MEMLORA_MODEL_PATH: modelDir,
    MEMLORA_INTRA_OP_THREADS: '1',
    ...env,
  });
  return { dir, modelDir, config, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

/** Creates `userId` with the history of persona user `persona` (0-based). Returns the items' count. */
export function seedPersona(db: Db, userId: string, persona = 0): number {
  createUser(db, { id: userId });
  const items = makePersonaUsers(persona + 1, 5)[persona].history;
  appendHistory(
    db,
    userId,
    items.map((i) => ({ kind: i.kind, role: i.role as NewHistoryItem['role'], text: i.text, conversationId: i.conversationId, createdAt: i.createdAt })),
  );
  return items.length;
}
