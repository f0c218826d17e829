/**
 * Where trials persist, so that a search resumes without re-evaluating anything. The loop calls
 * `load()` once at start and `save()` after every evaluation. Here: in memory (tests, benches) and a
 * JSON file (the CLI); a SQLite-backed store lives with the database code.
 */
import { mkdir, open, readFile, rename, unlink } from 'node:fs/promises';
import { dirname } from 'node:path';
import { SearchError } from './errors.js';
import type { Trial } from './trial.js';

export interface TrialStore {
  load(): Promise<Trial[]>;
  save(trial: Trial): Promise<void>;
}

export class MemoryTrialStore implements TrialStore {
  readonly trials: Trial[];

  constructor(initial: Trial[] = []) {
    this.trials = initial.map((t) => structuredClone(t));
  }

  async load(): Promise<Trial[]> {
    return this.trials.map((t) => structuredClone(t));
  }

  async save(trial: Trial): Promise<void> {
    this.trials.push(structuredClone(trial));
  }
}

interface JsonFileFormat {
  version: 1;
  trials: Trial[];
}

/**
 * All trials in one JSON file `{ "version": 1, "trials": [...] }`, rewritten on every save through a
 * temporary file, fsync and rename, so a crash leaves either the old or the new file, never half of one.
 */
export class JsonFileTrialStore implements TrialStore {
  private cache: Trial[] | null = null;
  private chain: Promise<void> = Promise.resolve();

  constructor(readonly path: string) {}

  async load(): Promise<Trial[]> {
    let text: string;
    try {
      text = await readFile(this.path, 'utf8');
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') {
        this.cache = [];
        return [];
      }
      throw e;
    }
    let parsed: JsonFileFormat;
    try {
      parsed = JSON.parse(text) as JsonFileFormat;
    } catch (e) {
      throw new SearchError('store_corrupt', `trial file ${this.path} is not valid JSON: ${(e as Error).message}`, { path: this.path });
    }
    if (!parsed || parsed.version !== 1 || !Array.isArray(parsed.trials)) {
      throw new SearchError('store_corrupt', `trial file ${this.path} is not a version-1 trial list`, { path: this.path, version: parsed?.version });
    }
    this.cache = parsed.trials;
    return parsed.trials.map((t) => structuredClone(t));
  }

  save(trial: Trial): Promise<void> {
    // Saves are serialised so two quick saves cannot interleave their rename.
    const next = this.chain.then(async () => {
      if (this.cache === null) await this.load();
      const trials = [...(this.cache as Trial[]), structuredClone(trial)];
      await this.writeAtomically({ version: 1, trials });
      this.cache = trials;
    });
    this.chain = next.catch(() => undefined);
    return next;
  }

  private async writeAtomically(data: JsonFileFormat): Promise<void> {
    await mkdir(dirname(this.path), { recursive: true });
    const tmp = `${this.path}.${process.pid}.${Date.now()}.tmp`;
    const fh = await open(tmp, 'w');
    try {
      await fh.writeFile(JSON.stringify(data, null, 1));
      await fh.sync();
    } finally {
      await fh.close();
    }
    try {
      await rename(tmp, this.path);
    } catch (e) {
      await unlink(tmp).catch(() => undefined);
      throw e;
    }
  }
}
