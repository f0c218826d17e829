/**
 * What the job tests share: a temp directory holding a tiny random GPT-2 model directory (config,
 * safetensors, a small trained BPE tokenizer), the service configuration pointing at it, and users
 * with a synthetic dialogue history. The history is generated here rather than taken from the
 * persona generator so that its split is fixed: 20 conversations with distinct replies always give
 * 14 training, 2 validation and 4 test conversations (no reply repeated across splits).
 */
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { smallGpt2For } from '../model/fixtures.js';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadConfig, type Config } from '../../src/config.js';
import type { Db } from '../../src/db/client.js';
import { appendHistory, type NewHistoryItem } from '../../src/db/queries/history.js';
import { createUser } from '../../src/db/queries/users.js';
import type { JobRunSettings } from '../../src/inject/job-runner.js';
import type { InjectorOptions } from '../../src/inject/injector.js';
import { saveTokenizer, trainBpe } from '../../src/model/bpe-train.js';
import { loadTokenizer } from '../../src/model/tokenizer.js';
import type { ModelConfig } from '../../src/model/config.js';
import { saveCheckpoint } from '../../src/model/save.js';
import { initWeights } from '../../src/pretrain/init.js';
import { fixtureTexts } from '../model/tokenizer-fixture.js';

export const ADMIN_TOKEN = 'test-admin-token-0123456789';

/**
 * Small and fast: 1 epoch, n <= 2, short rows and replies. The gate decides on loss alone here: a
 * tiny random model's greedy replies are noise, so their ROUGE-L would veto at random (the ROUGE-L
 * part of the rule has its own unit tests).
 */
export const FAST_SETTINGS: Partial<JobRunSettings> = {
  budget: 3,
  initialPoints: 2,
  nMax: 2,
  train: { epochs: 1, lr: 1e-2 },
  progressIntervalMs: 0,
  gate: { minLossGain: 1e-3, rougeTolerance: 1 },
};
export const FAST_INJECTOR: Partial<InjectorOptions> = { maxLen: 96, maxNewTokens: 6 };

export interface JobsEnv {
  dir: string;
  modelDir: string;
  config: Config;
  cleanup(): void;
}

/** A fresh temp directory with the model directory and a configuration pointing into it. */
export function makeJobsEnv(env: Record<string, string> = {}): JobsEnv {
  const dir = mkdtempSync(join(tmpdir(), 'memlora-jobs-'));
  const modelDir = join(dir, 'model');
  mkdirSync(modelDir, { recursive: true });
  const bpe = trainBpe(fixtureTexts(), { vocabSize: 400 });
  saveTokenizer(modelDir, bpe);
  const tokenizer = loadTokenizer(modelDir);
  const cfg: ModelConfig = smallGpt2For(tokenizer);
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

const PETS = ['Biscuit', 'Pepper', 'Mango', 'Ziggy', 'Noodle', 'Waffle', 'Pickles', 'Juniper'];
const CITIES = ['Lyon', 'Oslo', 'Porto', 'Krakow', 'Dublin', 'Seville', 'Tallinn', 'Bergen'];
const TOPICS = ['headache', 'blood pressure', 'coffee', 'walking', 'sleep', 'water', 'breakfast', 'medication'];

/** A profile and 20 two-exchange conversations; every reply is distinct (it names its day). */
export function syntheticHistory(user: number): NewHistoryItem[] {
  const pet = PETS[user % PETS.length];
  const city = CITIES[(user * 3) % CITIES.length];
  const items: NewHistoryItem[] = [{ kind: 'profile', text: `I live in ${city} and my dog is called ${pet}.`, createdAt: 1_700_000_000_000 }];
  for (let c = 0; c < 20; c++) {
    const topic = TOPICS[(c + user) % TOPICS.length];
    const conversationId = `u${user}-day${c}`;
    const at = 1_700_000_000_000 + (c + 1) * 60_000;
    items.push(
      { kind: 'dialogue', role: 'user', text: `Day ${c}: should I worry about my ${topic}?`, conversationId, createdAt: at },
      { kind: 'dialogue', role: 'assistant', text: `On day ${c}, your ${topic} is fine; walk ${pet} in ${city} and drink water.`, conversationId, createdAt: at + 1000 },
      { kind: 'dialogue', role: 'user', text: `Thank you. Can ${pet} come along on day ${c}?`, conversationId, createdAt: at + 2000 },
      { kind: 'dialogue', role: 'assistant', text: `Yes, ${pet} can come on day ${c}; ${city} has many parks.`, conversationId, createdAt: at + 3000 },
    );
  }
  return items;
}

/** Creates `userId` with the synthetic history of user number `user`. Returns the items' count. */
export function seedUser(db: Db, userId: string, user = 0): number {
  createUser(db, { id: userId });
  const items = syntheticHistory(user);
  appendHistory(db, userId, items);
  return items.length;
}
