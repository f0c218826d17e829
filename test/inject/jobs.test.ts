/**
 * Injection jobs below HTTP: the runner in inline mode over a real SQLite file and a tiny random
 * GPT-2 model directory. Success and what it leaves behind, the quality gate (unit and end to end),
 * re-injection warm start (configurations and weights), cancellation, faults while writing the
 * adapter (disk full through a failing store, an unwritable adapter directory), and a child process
 * killed with SIGKILL in the middle of a trial, then resumed without training any trial twice.
 */
import { execFileSync, spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, readFileSync, readdirSync, unlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { repoRoot } from '../../src/config.js';
import { openDb, type Db } from '../../src/db/client.js';
import { getActiveAdapter, listAdapterVersions } from '../../src/db/queries/adapters.js';
import { deleteHistoryItem, deleteHistoryItems } from '../../src/db/queries/forgetting.js';
import { createJob, getJob, type Job } from '../../src/db/queries/jobs.js';
import { listTrialsForJob } from '../../src/db/queries/trials.js';
import { openInjectContext } from '../../src/inject/context.js';
import { DEFAULT_GATE, gateDecision } from '../../src/inject/job-gate.js';
import type { JobEvent, JobRunSettings } from '../../src/inject/job-runner.js';
import { trialAdapterRoot } from '../../src/inject/job-trial-adapters.js';
import { JobService } from '../../src/inject/jobs.js';
import { rowToTrial } from '../../src/inject/trial-store.js';
import { userDirName } from '../../src/lora/paths.js';
import { AdapterStore } from '../../src/lora/store.js';
import { FAST_INJECTOR, FAST_SETTINGS, type JobsEnv, makeJobsEnv, seedUser } from './jobs-fixtures.js';

let env: JobsEnv;
let db: Db;

beforeAll(() => {
  env = makeJobsEnv();
  db = openDb(env.config.dbFile);
});
afterAll(() => {
  db.close();
  env.cleanup();
});

interface Run {
  job: Job;
  events: JobEvent[];
}

/** Run one job for `userId` through an inline service and return the final row and the events. */
async function runInline(userId: string, params: Record<string, unknown> = {}, settings: Partial<JobRunSettings> = {}, extra: Partial<ConstructorParameters<typeof JobService>[0]> = {}): Promise<Run> {
  const svc = new JobService({ config: env.config, db, mode: 'inline', settings: { ...FAST_SETTINGS, ...settings }, injector: FAST_INJECTOR, checkStore: false, ...extra });
  const events: JobEvent[] = [];
  svc.on('event', (_id, e) => events.push(e));
  const created = createJob(db, { userId, params: params as never });
  svc.enqueue(created);
  await svc.idle();
  return { job: getJob(db, created.id)!, events };
}

/** Every file and directory below root (relative), so an empty `.tmp-*` directory shows too. */
function entries(root: string): string[] {
  if (!existsSync(root)) return [];
  return (readdirSync(root, { recursive: true }) as string[]).map(String).sort();
}

const keys = (events: JobEvent[], type: 'trial' | 'trial-start') => events.filter((e) => e.type === type).map((e) => (e as { key: string }).key);

describe('gate rule', () => {
  const cur = { valLoss: 3, valRougeL: 0.2 };
  it('accepts a clearly lower loss with ROUGE-L within tolerance', () => {
    expect(gateDecision({ valLoss: 2.9, valRougeL: 0.19 }, cur).accepted).toBe(true);
  });
  it('rejects an equal or barely lower loss', () => {
    expect(gateDecision({ valLoss: 3, valRougeL: 0.5 }, cur).accepted).toBe(false);
    expect(gateDecision({ valLoss: 3 - DEFAULT_GATE.minLossGain / 2, valRougeL: 0.5 }, cur).accepted).toBe(false);
  });
  it('lets ROUGE-L veto a lower loss that costs reply quality', () => {
    const d = gateDecision({ valLoss: 2, valRougeL: 0.2 - DEFAULT_GATE.rougeTolerance - 0.01 }, cur);
    expect(d.accepted).toBe(false);
    expect(d.reason).toMatch(/ROUGE-L/);
  });
  it('force accepts and says what the gate would have done', () => {
    const d = gateDecision({ valLoss: 4, valRougeL: 0 }, cur, { force: true });
    expect(d).toMatchObject({ accepted: true, forced: true });
    expect(d.reason).toMatch(/would have rejected/);
  });
  it('never accepts a non-finite candidate unless forced', () => {
    expect(gateDecision({ valLoss: Number.NaN, valRougeL: 0.3 }, cur).accepted).toBe(false);
  });
});

describe('a job on a small user', () => {
  let run: Run;
  beforeAll(async () => {
    seedUser(db, 'ann', 0);
    run = await runInline('ann', { budget: 3, seed: 2 });
  });

  it('succeeds, and the new adapter is the active version, recorded once with the job in its metrics', () => {
    expect(run.job.state, JSON.stringify([run.job.error, run.job.result])).toBe('succeeded');
    const versions = listAdapterVersions(db, 'ann');
    expect(versions).toHaveLength(1);
    expect(versions[0]).toMatchObject({ version: 1, active: 1, status: 'ready' });
    expect(versions[0].metrics.jobId).toBe(run.job.id);
    expect(run.job.result).toMatchObject({ adapterVersion: 1, activated: true, mode: 'injected' });
    expect(run.job.startedAt).not.toBeNull();
    expect(run.job.finishedAt).toBeGreaterThanOrEqual(run.job.startedAt!);
  });

  it('persists every trial once, in order, with objectives and cost', () => {
    const rows = listTrialsForJob(db, run.job.id);
    expect(rows.map((r) => r.idx)).toEqual([0, 1, 2]);
    for (const t of rows.map(rowToTrial)) {
      expect(t.status).toBe('ok');
      expect(Number.isFinite(t.loss)).toBe(true);
      expect(t.cost?.steps).toBeGreaterThanOrEqual(0);
    }
    // No configuration was trained twice, and each trained trial reported one result.
    expect(new Set(keys(run.events, 'trial')).size).toBe(3);
    expect(keys(run.events, 'trial-start')).toEqual(keys(run.events, 'trial'));
  });

  it('chose a Pareto-optimal trial and passed the gate against the base model with both figures recorded', () => {
    const gate = (run.job.result as any).gate;
    expect(gate.accepted, JSON.stringify(run.job.result)).toBe(true);
    expect(gate.current.mode).toBe('vanilla');
    expect(gate.candidate.valLoss).toBeLessThan(gate.current.valLoss - DEFAULT_GATE.minLossGain);
    const chosen = (run.job.result as any).trial;
    expect((run.job.result as any).front.map((f: any) => f.trial)).toContain(chosen);
    const progress = run.job.progress as any;
    expect(progress).toMatchObject({ phase: 'succeeded', trial: 3, trials: 3 });
    expect(progress.data.historyUpTo).toBeGreaterThan(0);
  });

  it('stores the exact chosen adapter (no retraining) and leaves no trial adapter or temp file behind', async () => {
    const active = getActiveAdapter(db, 'ann')!;
    const ctx = openInjectContext(env.config, { db, injector: FAST_INJECTOR });
    try {
      const adapter = await ctx.store.read(active.filePath, active.sha256, { userId: 'ann' });
      // The version's loss is the chosen trial's validation loss, measured again here from the file.
      const { prepareUserData } = await import('../../src/inject/user-data.js');
      const { userHistory } = await import('../../src/inject/context.js');
      const data = prepareUserData(ctx.injector, userHistory(db, 'ann'));
      expect(await ctx.injector.loss(data.val, adapter)).toBeCloseTo(active.metrics.valLoss as number, 5);
    } finally {
      await ctx.close();
    }
    expect((run.job.result as any).retrained).toBeUndefined();
    expect(listTrialsForJob(db, run.job.id).every((r) => r.adapterPath === null)).toBe(true);
    expect(entries(join(trialAdapterRoot(env.config), userDirName('ann')))).toEqual([]);
    expect(entries(env.config.adapterDir).filter((f) => f.includes('.tmp-'))).toEqual([]);
  });
});

describe('quality gate and re-injection', () => {
  let first: Run;
  beforeAll(async () => {
    seedUser(db, 'bea', 1);
    first = await runInline('bea', { budget: 3, seed: 3 });
  });

  it('rejects an adapter that cannot beat the base model (lr 0 leaves B = 0) and records nothing', async () => {
    seedUser(db, 'cid', 2);
    const run = await runInline('cid', { budget: 2 }, { train: { epochs: 1, lr: 0 } });
    expect(run.job.state, JSON.stringify(run.job.error)).toBe('rejected');
    const gate = (run.job.result as any).gate;
    expect(gate.accepted).toBe(false);
    expect(gate.current).toMatchObject({ mode: 'vanilla', adapterVersion: null });
    expect(Math.abs(gate.candidate.valLoss - gate.current.valLoss)).toBeLessThan(DEFAULT_GATE.minLossGain);
    expect(listAdapterVersions(db, 'cid')).toEqual([]);
    expect(run.events.some((e) => e.type === 'gate' && !e.decision.accepted)).toBe(true);
  });

  it('a re-injection starts from the serving adapter (configuration and weights); not better, so the old version keeps serving', async () => {
    expect(first.job.state).toBe('succeeded');
    const v1 = getActiveAdapter(db, 'bea')!;
    const run = await runInline('bea', { budget: 2, seed: 3 }, { train: { epochs: 1, lr: 0 } });
    const start = run.events.find((e) => e.type === 'trial-start') as Extract<JobEvent, { type: 'trial-start' }>;
    expect(start.config).toEqual({ layers: (v1.config as any).layers, n: (v1.config as any).n, r: (v1.config as any).r });
    expect(start.warmWeights).toBe(true);
    const rows = listTrialsForJob(db, run.job.id).map(rowToTrial);
    expect(rows[0].phase).toBe('warm-start');
    expect(run.job.state).toBe('rejected');
    const gate = (run.job.result as any).gate;
    expect(gate.current).toMatchObject({ mode: 'injected', adapterVersion: v1.version });
    // Trained with lr 0 from v1's weights, the warm-start trial is v1 itself: the same loss to the bit.
    expect(rows[0].loss).toBe(gate.current.valLoss);
    expect(getActiveAdapter(db, 'bea')!.version).toBe(v1.version);
    expect((run.job.progress as any).warmStart).toMatchObject({ weightsFromVersion: v1.version });
  });

  it('force skips the gate: the new version becomes active even though it is not better', async () => {
    const run = await runInline('bea', { budget: 2, seed: 4, force: true }, { train: { epochs: 1, lr: 0 } });
    expect(run.job.state, JSON.stringify(run.job.error)).toBe('succeeded');
    expect((run.job.result as any).gate).toMatchObject({ accepted: true, forced: true });
    expect(getActiveAdapter(db, 'bea')!.version).toBe((run.job.result as any).adapterVersion);
    expect(listAdapterVersions(db, 'bea')).toHaveLength(2);
  });
});

describe('forgetting deleted history', () => {
  it('a re-injection after a deletion neither starts from nor compares with the version trained on it, and that version stops serving even when the new adapter is rejected', async () => {
    seedUser(db, 'dee', 3);
    const first = await runInline('dee', { budget: 3, seed: 3 });
    expect(first.job.state, JSON.stringify(first.job.error)).toBe('succeeded');
    const v1 = getActiveAdapter(db, 'dee')!;
    const read = (first.job.progress as any).data.historyUpTo as number;
    const item = (db.sqlite.prepare('SELECT id FROM history_items WHERE user_id = ? AND id <= ? ORDER BY id LIMIT 1').get('dee', read) as { id: number }).id;
    expect(deleteHistoryItem(db, 'dee', item)).toBe(true);
    // lr 0 cannot beat the base model: rejected, yet v1 (which read the deleted item) no longer serves.
    const run = await runInline('dee', { budget: 2, seed: 3 }, { train: { epochs: 1, lr: 0 } });
    expect(run.job.state, JSON.stringify(run.job.error)).toBe('rejected');
    expect(run.events.filter((e) => e.type === 'trial-start').every((e) => !(e as Extract<JobEvent, { type: 'trial-start' }>).warmWeights)).toBe(true);
    const result = run.job.result as any;
    expect(result.gate.current).toMatchObject({ mode: 'vanilla', adapterVersion: null });
    expect(result.gate.current.note).toContain(`version ${v1.version} was trained on deleted history`);
    expect(result.deactivated).toBe(v1.version);
    expect(getActiveAdapter(db, 'dee')).toBeUndefined();
    expect((run.job.progress as any).warmStart).toMatchObject({ weightsFromVersion: null });
  });

  it('a re-injection that fails (the user deleted all their history) still stops the version trained on it serving', async () => {
    seedUser(db, 'fin', 5);
    const first = await runInline('fin', { budget: 2, seed: 3 });
    expect(first.job.state, JSON.stringify(first.job.error)).toBe('succeeded');
    const v1 = getActiveAdapter(db, 'fin')!;
    expect(deleteHistoryItems(db, 'fin', {}).length).toBeGreaterThan(0);
    const run = await runInline('fin', { budget: 2 });
    expect(run.job.state).toBe('failed');
    expect(run.job.error).toMatchObject({ code: 'not_enough_history' });
    expect(run.job.result).toEqual({ deactivated: v1.version });
    expect(getActiveAdapter(db, 'fin')).toBeUndefined();
  });

  it('history deleted while a job runs fails the job (history_deleted): nothing trained on it is activated', async () => {
    seedUser(db, 'eve', 4);
    const svc = new JobService({ config: env.config, db, mode: 'inline', settings: FAST_SETTINGS, injector: FAST_INJECTOR, checkStore: false });
    const created = createJob(db, { userId: 'eve', params: { budget: 2, seed: 5 } as never });
    let deleted = false;
    svc.on('event', (_id, e) => {
      if (e.type !== 'trial-start' || deleted) return;
      deleted = deleteHistoryItem(db, 'eve', (db.sqlite.prepare("SELECT id FROM history_items WHERE user_id = 'eve' ORDER BY id LIMIT 1").get() as { id: number }).id);
    });
    svc.enqueue(created);
    await svc.idle();
    const job = getJob(db, created.id)!;
    expect(deleted).toBe(true);
    expect(job.state).toBe('failed');
    expect(job.error).toMatchObject({ code: 'history_deleted', details: { items: 1 } });
    expect(listAdapterVersions(db, 'eve')).toEqual([]);
  });
});

describe('cancellation', () => {
  it('stops within one training step, keeps the finished trials, and ends cancelled', async () => {
    seedUser(db, 'dan', 3);
    const svc = new JobService({ config: env.config, db, mode: 'inline', settings: { ...FAST_SETTINGS, train: { epochs: 6, lr: 1e-2 } }, injector: FAST_INJECTOR, checkStore: false });
    const job = createJob(db, { userId: 'dan', params: { budget: 4 } });
    const events: JobEvent[] = [];
    let cut = -1;
    let cancelledAt = -1;
    svc.on('event', (_id, e) => {
      events.push(e);
      if (e.type === 'training' && e.trial >= 1 && cut < 0) {
        cut = e.trial;
        cancelledAt = events.length;
        void svc.cancel(job.id);
      }
    });
    svc.enqueue(job);
    await svc.idle();
    const done = getJob(db, job.id)!;
    expect(cut).toBeGreaterThanOrEqual(1);
    expect(done.state).toBe('cancelled');
    expect(done.finishedAt).not.toBeNull();
    // The trials that finished before the cancel are kept; the one cut short is not a trial.
    expect(listTrialsForJob(db, job.id).map((r) => r.idx)).toEqual([...Array(cut).keys()]);
    // Not one more training report or trial after the cancel: the step in progress was the last.
    const after = events.slice(cancelledAt);
    expect(after.filter((e) => e.type === 'training' || e.type === 'trial')).toEqual([]);
    expect(after.at(-1)).toEqual({ type: 'state', state: 'cancelled' });
    expect(listAdapterVersions(db, 'dan')).toEqual([]);
    expect(entries(join(trialAdapterRoot(env.config), userDirName('dan')))).toEqual([]);
  });
});

describe('faults while writing the adapter', () => {
  let before: ReturnType<typeof getActiveAdapter>;
  beforeAll(async () => {
    seedUser(db, 'eve', 4);
    const r = await runInline('eve', { budget: 2, seed: 5 });
    expect(r.job.state).toBe('succeeded');
    before = getActiveAdapter(db, 'eve');
  });

  it('disk full (a store whose write fails with ENOSPC): failed with adapter_write_failed, nothing written, old adapter active', async () => {
    const filesBefore = entries(env.config.adapterDir);
    const run = await runInline('eve', { budget: 2, seed: 6, force: true }, {}, {
      openContext: (config, cdb) => {
        const ctx = openInjectContext(config, { db: cdb, injector: FAST_INJECTOR });
        const full = Object.create(ctx.store) as AdapterStore;
        full.write = async () => {
          throw Object.assign(new Error('ENOSPC: no space left on device, write'), { code: 'ENOSPC', errno: -28, syscall: 'write' });
        };
        return { ...ctx, store: full };
      },
    });
    expect(run.job.state).toBe('failed');
    expect(run.job.error).toMatchObject({ code: 'adapter_write_failed', details: { errno: 'ENOSPC' } });
    expect((run.job.error as any).message).toMatch(/no space left.*previous adapter stays active/);
    expect(getActiveAdapter(db, 'eve')).toEqual(before);
    expect(listAdapterVersions(db, 'eve')).toHaveLength(1);
    expect(entries(env.config.adapterDir)).toEqual(filesBefore);
    expect(entries(join(trialAdapterRoot(env.config), userDirName('eve')))).toEqual([]);
  });

  it('unwritable adapter directory: failed with adapter_write_failed, no temp or half-written adapter, old adapter active', async (t) => {
    const dir = join(env.config.adapterDir, userDirName('eve'));
    const filesBefore = entries(env.config.adapterDir);
    const canWrite = (): boolean => {
      try {
        writeFileSync(join(dir, 'probe'), 'x');
        unlinkSync(join(dir, 'probe'));
        return true;
      } catch {
        return false;
      }
    };
    chmodSync(dir, 0o555);
    let immutable = false;
    try {
      // Root ignores permission bits; the immutable attribute stops it too, where the filesystem has one.
      if (canWrite()) {
        try {
          execFileSync('chattr', ['+i', dir], { stdio: 'ignore' });
          immutable = true;
        } catch {
          // no chattr, or not permitted
        }
      }
      if (canWrite()) t.skip('cannot make a directory unwritable here (root without chattr)');
      const run = await runInline('eve', { budget: 2, seed: 7, force: true });
      expect(run.job.state).toBe('failed');
      expect(run.job.error).toMatchObject({ code: 'adapter_write_failed' });
      expect(['EACCES', 'EPERM', 'EROFS']).toContain((run.job.error as any).details.errno);
      expect(getActiveAdapter(db, 'eve')).toEqual(before);
    } finally {
      if (immutable) execFileSync('chattr', ['-i', dir], { stdio: 'ignore' });
      chmodSync(dir, 0o755);
    }
    expect(entries(env.config.adapterDir)).toEqual(filesBefore);
    expect(listAdapterVersions(db, 'eve')).toHaveLength(1);
  });
});

describe('crash safety', () => {
  const settings = { ...FAST_SETTINGS, train: { epochs: 4, lr: 1e-2 } };

  /** Runs the job runner in a child process until it logs `ready-to-die`, then SIGKILLs it; returns its log. */
  async function killChildAt(mode: 'mid-trial' | 'after-write', ...extra: string[]): Promise<any[]> {
    const cfgFile = join(env.dir, 'child.json');
    const log = join(env.dir, `child-${mode}.log`);
    writeFileSync(cfgFile, JSON.stringify({ config: env.config, settings, injector: FAST_INJECTOR }));
    writeFileSync(log, '');
    const child = spawn(process.execPath, ['--import', 'tsx', join(repoRoot, 'test', 'inject', 'jobs-crash-child.ts'), cfgFile, log, mode, ...extra], {
      cwd: repoRoot,
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    let stderr = '';
    child.stderr.on('data', (d) => (stderr += d));
    const exited = new Promise<NodeJS.Signals | number | null>((r) => child.on('exit', (code, sig) => r(sig ?? code)));
    const lines = () => readFileSync(log, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l));
    for (let i = 0; !lines().some((l) => l.type === 'ready-to-die'); i++) {
      if (i > 1200 || child.exitCode !== null) throw new Error(`the child never got there: ${stderr}\n${readFileSync(log, 'utf8')}`);
      await new Promise((r) => setTimeout(r, 50));
    }
    child.kill('SIGKILL');
    expect(await exited).toBe('SIGKILL');
    return lines();
  }

  /** The next start: the store checks, then the interrupted job is picked up and resumed. */
  async function restart(jobId: string) {
    const svc = new JobService({ config: env.config, db, mode: 'inline', settings, injector: FAST_INJECTOR });
    const events: JobEvent[] = [];
    svc.on('event', (_id, e) => events.push(e));
    const report = await svc.start();
    expect(report.resumed).toContain(jobId);
    await svc.idle();
    return { report, events, job: getJob(db, jobId)! };
  }

  it('a process killed with SIGKILL mid-trial resumes at the next start: no trial trained twice, one version', async () => {
    seedUser(db, 'fay', 5);
    const job = createJob(db, { userId: 'fay', params: { budget: 4, seed: 8 } });
    const before = await killChildAt('mid-trial', '2');
    const killed = before.find((l) => l.type === 'ready-to-die').trial as number;
    expect(killed).toBeGreaterThanOrEqual(2);
    expect(getJob(db, job.id)!.state).toBe('running');
    expect(listTrialsForJob(db, job.id).map((r) => r.idx)).toEqual([...Array(killed).keys()]);

    const { events: after, job: done } = await restart(job.id);
    expect(done.state, JSON.stringify(done.error)).toBe('succeeded');
    expect(listTrialsForJob(db, job.id).map((r) => r.idx)).toEqual([0, 1, 2, 3]);

    // Trainings per configuration across both processes: each finished exactly once; only the
    // interrupted trial was started twice (it never finished in the child).
    const finished = [...keys(before as JobEvent[], 'trial'), ...keys(after, 'trial')];
    expect(finished).toHaveLength(4);
    expect(new Set(finished).size).toBe(4);
    const startedAfter = after.filter((e) => e.type === 'trial-start').map((e) => (e as { trial: number }).trial);
    expect(startedAfter).toEqual([...Array(4 - killed).keys()].map((i) => killed + i));
    expect(listAdapterVersions(db, 'fay')).toHaveLength(1);
    expect(listAdapterVersions(db, 'fay')[0].metrics.jobId).toBe(job.id);
    // The chosen adapter came from the kept file, whichever process trained it.
    expect((done.result as any).retrained).toBeUndefined();
    expect(entries(join(trialAdapterRoot(env.config), userDirName('fay')))).toEqual([]);
    expect(entries(env.config.adapterDir).filter((f) => f.includes('.tmp-'))).toEqual([]);
  });

  it('killed after the adapter file is written but before the commit: the orphan is removed, the job commits once, nothing retrained', async () => {
    seedUser(db, 'gus', 6);
    const job = createJob(db, { userId: 'gus', params: { budget: 3, seed: 10 } });
    const before = await killChildAt('after-write');
    const orphan = before.find((l) => l.type === 'ready-to-die').path as string;
    expect(existsSync(join(env.config.adapterDir, ...orphan.split('/')))).toBe(true);
    expect(listAdapterVersions(db, 'gus')).toEqual([]);
    expect(getJob(db, job.id)!.state).toBe('running');
    expect(keys(before as JobEvent[], 'trial')).toHaveLength(3);

    const { report, events: after, job: done } = await restart(job.id);
    expect(report.store!.orphans).toEqual([orphan]);
    expect(done.state, JSON.stringify(done.error)).toBe('succeeded');
    expect(after.filter((e) => e.type === 'trial-start' || e.type === 'training')).toEqual([]);
    const versions = listAdapterVersions(db, 'gus');
    expect(versions).toHaveLength(1);
    expect(versions[0]).toMatchObject({ active: 1, metrics: { jobId: job.id } });
    expect(versions[0].filePath).not.toBe(orphan);
    expect(existsSync(join(env.config.adapterDir, ...orphan.split('/')))).toBe(false);
    expect((done.result as any).retrained).toBeUndefined();
  });

  it('start-up repairs what a crash around the final commit leaves: orphan adapter, temp dir, stale trial adapter', async () => {
    const ran = await runInline('fay', { budget: 1, seed: 9, force: true });
    expect(ran.job.state).toBe('succeeded');
    const versions = listAdapterVersions(db, 'fay');
    const ctx = openInjectContext(env.config, { db, injector: FAST_INJECTOR });
    let orphan: string;
    let staleTrial: string;
    try {
      const adapter = await ctx.store.read(versions[0].filePath, versions[0].sha256, { userId: 'fay' });
      // Death between the file write and the commit: a complete adapter no row names, and a temp dir.
      orphan = (await ctx.store.write('fay', adapter)).path;
      mkdirSync(join(env.config.adapterDir, userDirName('fay'), `.tmp-${randomUUID()}`));
      // Death between the commit and the trial-adapter cleanup: a finished job's trial still names a file.
      const trialStore = new AdapterStore(trialAdapterRoot(env.config), { config: ctx.model.config, name: ctx.modelName });
      staleTrial = (await trialStore.write('fay', adapter)).path;
      db.sqlite.prepare('UPDATE trials SET adapter_path = ? WHERE job_id = ? AND idx = 0').run(staleTrial, ran.job.id);
    } finally {
      await ctx.close();
    }
    const svc = new JobService({ config: env.config, db, mode: 'inline', settings: FAST_SETTINGS, injector: FAST_INJECTOR });
    const report = await svc.start();
    expect(report.resumed).toEqual([]);
    expect(report.store!.orphans).toEqual([orphan]);
    expect(report.store!.temps).toHaveLength(1);
    expect(report.trialAdapters).toMatchObject({ removed: [staleTrial], cleared: 1 });
    expect(listTrialsForJob(db, ran.job.id).every((r) => r.adapterPath === null)).toBe(true);
    expect(listAdapterVersions(db, 'fay')).toEqual(versions);
    expect(getJob(db, ran.job.id)!.state).toBe('succeeded');
    expect(entries(join(env.config.adapterDir, userDirName('fay'))).filter((f) => !f.includes('/') && !f.includes('\\'))).toEqual(
      versions.map((v) => v.filePath.split('/')[1]).sort(),
    );
  });
});
