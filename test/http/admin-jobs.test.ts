/**
 * Injection jobs through the real server: a loopback port, a real SQLite file in a temp directory,
 * a tiny random GPT-2 model directory, and the job service running jobs in worker threads. Covers
 * concurrent inject requests, a job to `succeeded` followed over Server-Sent Events, its trials and
 * Pareto front (JSON and SVG), cancel, the quality gate rejecting, and shutdown pausing a running job
 * durably so that the next start resumes it without training any trial twice.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { openDb } from '../../src/db/client.js';
import { listTrialsForJob } from '../../src/db/queries/trials.js';
import { memoryLogger } from '../../src/http/logger.js';
import { jobDoneEventSchema, jobProgressEventSchema, jobSchema, jobStateEventSchema, jobTrialEventSchema, trialsResponseSchema } from '../../src/http/schemas.js';
import type { JobEvent, JobRunSettings } from '../../src/inject/job-runner.js';
import { type JobService, startJobService } from '../../src/inject/jobs.js';
import { createServeServices } from '../../src/serve/services.js';
import { startServer, type RunningServer } from '../../src/server.js';
import { ADMIN_TOKEN, FAST_INJECTOR, FAST_SETTINGS, type JobsEnv, makeJobsEnv, syntheticHistory } from '../inject/jobs-fixtures.js';
import { parseSse } from './fake-generate.js';

let env: JobsEnv;
let server: RunningServer | undefined;
let jobs: JobService;
let loaded: Promise<unknown>;
const events: Array<{ jobId: string; e: JobEvent }> = [];

beforeAll(() => {
  env = makeJobsEnv();
});
afterEach(async () => {
  await server?.close();
  server = undefined;
});
afterAll(() => env.cleanup());

async function start(settings: Partial<JobRunSettings> = FAST_SETTINGS): Promise<RunningServer> {
  server = await startServer(env.config, {
    handleSignals: false,
    logger: memoryLogger(),
    services: async (ctx) => {
      // The real generation engine (as defaultServices builds it), and the job service with test settings.
      const serve = await createServeServices(ctx);
      loaded = serve!.loaded;
      jobs = await startJobService({ config: ctx.config, db: ctx.db, logger: ctx.logger, metrics: ctx.metrics, settings, injector: FAST_INJECTOR });
      jobs.on('event', (jobId, e) => events.push({ jobId, e }));
      return { generate: serve!.generate, adapterFiles: serve!.adapterFiles, jobs };
    },
  });
  expect(await loaded).not.toBeNull();
  return server;
}

const auth = { authorization: `Bearer ${ADMIN_TOKEN}`, 'content-type': 'application/json' };
const call = (method: string, path: string, body?: unknown) =>
  fetch(`${server!.url}${path}`, { method, headers: auth, body: body === undefined ? undefined : JSON.stringify(body) });

/** A user with synthetic history number i, through the API. */
async function seedUser(userId: string, user: number): Promise<void> {
  expect((await call('PUT', `/v1/users/${userId}`)).status).toBe(201);
  const items = syntheticHistory(user).map((i) => ({ ...i, createdAt: new Date(i.createdAt!).toISOString() }));
  expect((await call('POST', `/v1/users/${userId}/history`, { items })).status).toBe(201);
}

/** Reads the job's whole event stream (it ends when the job does). */
async function follow(jobId: string): Promise<Array<{ event?: string; data: any }>> {
  const res = await call('GET', `/v1/admin/jobs/${jobId}/events`);
  expect(res.status).toBe(200);
  expect(res.headers.get('content-type')).toMatch(/^text\/event-stream/);
  return parseSse(await res.text()).map((e) => ({ event: e.event, data: JSON.parse(e.data) }));
}

const until = async (cond: () => boolean, what: string, ms = 60_000) => {
  const t0 = Date.now();
  while (!cond()) {
    if (Date.now() - t0 > ms) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
};

describe('injection jobs through the server', () => {
  it('concurrent inject requests make one job; it runs in a worker to succeeded, followed over SSE, and its adapter becomes active', async () => {
    await start();
    await seedUser('ann', 0);
    const before = (await (await call('POST', '/v1/generate', { userId: 'ann', prompt: 'Should I worry about my sleep?', maxTokens: 4, mode: 'auto' })).json()) as any;
    expect(before.personalization.mode).not.toBe('injected');
    const answers = await Promise.all(Array.from({ length: 6 }, () => call('POST', '/v1/admin/users/ann/inject', { budget: 3, seed: 2 })));
    const bodies = await Promise.all(answers.map((r) => r.json() as Promise<any>));
    const created = answers.map((r, i) => [r.status, bodies[i]] as const).filter(([s]) => s === 202);
    expect(created).toHaveLength(1);
    const job = jobSchema.parse(created[0][1]);
    expect(answers.find((r) => r.status === 202)!.headers.get('location')).toBe(`/v1/admin/jobs/${job.id}`);
    for (const [status, body] of answers.map((r, i) => [r.status, bodies[i]] as const).filter(([s]) => s !== 202)) {
      expect(status).toBe(409);
      expect(body.error).toMatchObject({ code: 'job_active', details: { jobId: job.id } });
    }

    const stream = await follow(job.id);
    // Replay first: the job as it was when the stream opened.
    expect(stream[0].event).toBe('state');
    jobStateEventSchema.parse(stream[0].data);
    const byType = (t: string) => stream.filter((e) => e.event === t);
    for (const e of byType('state')) jobStateEventSchema.parse(e.data);
    for (const e of byType('progress')) jobProgressEventSchema.parse(e.data);
    const trials = byType('trial').map((e) => jobTrialEventSchema.parse(e.data).trial);
    expect(trials.map((t) => t.index)).toEqual([0, 1, 2]);
    const last = stream.at(-1)!;
    expect(last.event).toBe('done');
    const done = jobDoneEventSchema.parse(last.data);
    expect(done).toMatchObject({ reason: 'finished', job: { state: 'succeeded' } });
    expect(byType('state').map((e) => e.data.job.state)).toContain('succeeded');
    expect(done.job.startedAt).not.toBeNull();
    expect(done.job.progress).toMatchObject({ trial: 3, trials: 3 });

    // The new version is what the user is served with now.
    const version = (done.job.result as any).adapterVersion;
    expect(version).toBe(1);
    const gen = (await (await call('POST', '/v1/generate', { userId: 'ann', prompt: 'Should I worry about my sleep?', maxTokens: 4 })).json()) as any;
    expect(gen.personalization, JSON.stringify(gen)).toMatchObject({ mode: 'injected', adapterVersion: version });
    const adapter = (await (await call('GET', '/v1/users/ann/adapter')).json()) as any;
    expect(adapter).toMatchObject({ version, config: (done.job.result as any).config });
    expect(adapter.metrics.jobId).toBe(job.id);
    // It ran in a worker thread, not on the server's thread: the service reported it from one. The
    // worker commits its result before it posts the event, so the stream may see the end first.
    await until(() => events.some((x) => x.jobId === job.id && x.e.type === 'state' && x.e.state === 'succeeded'), 'the worker to report success');

    await jobs.idle(); // the worker has exited and the service has counted the job
    const metrics = await (await fetch(`${server!.url}/metrics`)).text();
    expect(metrics).toMatch(/^memlora_injection_jobs_finished_total\{state="succeeded"\} 1$/m);
    expect(metrics).toMatch(/^memlora_injection_trials_total\{status="ok"\} 3$/m);

    // Trials and the Pareto front.
    const list = trialsResponseSchema.parse(await (await call('GET', '/v1/admin/users/ann/trials')).json());
    expect(list.frontJobId).toBe(job.id);
    expect(list.trials.map((t) => t.index)).toEqual([0, 1, 2]);
    expect(list.trials.every((t) => !t.adapterKept)).toBe(true);
    expect(list.front.length).toBeGreaterThan(0);
    expect(list.front.map((t) => t.index)).toContain((done.job.result as any).trial);
    for (const f of list.front) {
      // Nothing in the list dominates a front member.
      expect(list.trials.some((t) => t.valLoss! <= f.valLoss! && t.valRougeL! >= f.valRougeL! && (t.valLoss! < f.valLoss! || t.valRougeL! > f.valRougeL!))).toBe(false);
    }
    const svg = await call('GET', `/v1/admin/users/ann/trials?format=svg&jobId=${job.id}`);
    expect(svg.headers.get('content-type')).toMatch(/^image\/svg\+xml/);
    expect(await svg.text()).toMatch(/^(<\?xml[^>]*>\s*)?<svg[\s\S]*Pareto front[\s\S]*<\/svg>\s*$/);

    // A stream opened after the end replays the state and the trials, then ends.
    const replay = await follow(job.id);
    expect(replay.map((e) => e.event)).toEqual(['state', 'trial', 'trial', 'trial', 'done']);

    // The job is finished: a new request creates a new job (cancelled at once; it trains nothing).
    const again = await call('POST', '/v1/admin/users/ann/inject', { budget: 1 });
    expect(again.status).toBe(202);
    const againId = ((await again.json()) as any).id;
    expect([200, 202]).toContain((await call('POST', `/v1/admin/jobs/${againId}/cancel`)).status);
    expect((await follow(againId)).at(-1)!.data.job.state).toBe('cancelled');
  });

  it('answers 404 and 422 for unknown jobs, users and bad queries', async () => {
    await start();
    expect((await call('GET', '/v1/admin/jobs/job_0000000000aaaaaaaaaaaaaaaa/events')).status).toBe(404);
    expect((await call('GET', '/v1/admin/users/nobody/trials')).status).toBe(404);
    const otherJob = ((await (await call('GET', '/v1/admin/jobs?userId=ann')).json()) as any).items[0].id;
    await seedUser('zed', 6);
    expect(((await (await call('GET', `/v1/admin/users/zed/trials?jobId=${otherJob}`)).json()) as any).error.code).toBe('job_not_found');
    expect((await call('GET', '/v1/admin/users/zed/trials?format=png')).status).toBe(422);
    expect(((await (await call('GET', '/v1/admin/users/zed/trials')).json()) as any)).toMatchObject({ trials: [], front: [], frontJobId: null });
  });

  it('cancel stops a running job and keeps its finished trials', async () => {
    await start({ ...FAST_SETTINGS, train: { epochs: 6, lr: 1e-2 } });
    await seedUser('bob', 1);
    const job = (await (await call('POST', '/v1/admin/users/bob/inject', { budget: 4, seed: 3 })).json()) as any;
    await until(() => events.some((x) => x.jobId === job.id && x.e.type === 'training' && x.e.trial >= 1), 'trial 1 to train');
    const res = await call('POST', `/v1/admin/jobs/${job.id}/cancel`);
    expect([200, 202]).toContain(res.status);
    const stream = await follow(job.id);
    expect(stream.at(-1)!.data.job.state).toBe('cancelled');
    const db = openDb(env.config.dbFile, { migrate: false });
    try {
      const rows = listTrialsForJob(db, job.id);
      expect(rows.length).toBeGreaterThanOrEqual(1);
      expect(rows.length).toBeLessThan(4);
      expect(rows.every((r) => r.status === 'ok' && r.adapterPath === null)).toBe(true);
    } finally {
      db.close();
    }
    expect((await call('GET', '/v1/users/bob/adapter')).status).toBe(404);
    expect((await call('POST', `/v1/admin/jobs/${job.id}/cancel`)).status).toBe(409);
  });

  it('the quality gate rejects an adapter that cannot beat the base model; nothing is activated', async () => {
    await start({ ...FAST_SETTINGS, train: { epochs: 1, lr: 0 } });
    await seedUser('cid', 2);
    const job = (await (await call('POST', '/v1/admin/users/cid/inject', { budget: 2 })).json()) as any;
    const done = (await follow(job.id)).at(-1)!.data.job;
    expect(done.state).toBe('rejected');
    expect(done.result.gate).toMatchObject({ accepted: false, current: { mode: 'vanilla', adapterVersion: null } });
    expect(typeof done.result.gate.candidate.valLoss).toBe('number');
    expect((await call('GET', '/v1/users/cid/adapter')).status).toBe(404);
  });

  it('shutdown pauses a running job durably (queued, trials kept); the next start resumes it without retraining a trial', async () => {
    const settings = { ...FAST_SETTINGS, budget: 4, train: { epochs: 6, lr: 1e-2 } };
    await start(settings);
    await seedUser('dee', 3);
    const job = (await (await call('POST', '/v1/admin/users/dee/inject', { seed: 5 })).json()) as any;
    await until(() => events.some((x) => x.jobId === job.id && x.e.type === 'training' && x.e.trial >= 1), 'trial 1 to train');
    await server!.close();
    server = undefined;
    const db = openDb(env.config.dbFile, { migrate: false });
    let kept: number;
    try {
      const paused = (await import('../../src/db/queries/jobs.js')).getJob(db, job.id)!;
      expect(paused.state).toBe('queued');
      expect(paused.progress).toMatchObject({ phase: 'paused', paused: true });
      kept = listTrialsForJob(db, job.id).length;
      expect(kept).toBeGreaterThanOrEqual(1);
    } finally {
      db.close();
    }
    const firstRun = events.filter((x) => x.jobId === job.id).map((x) => x.e);
    events.length = 0;

    await start(settings);
    const done = (await follow(job.id)).at(-1)!.data.job;
    expect(done.state).toBe('succeeded');
    const secondRun = events.filter((x) => x.jobId === job.id).map((x) => x.e);
    const finishedKeys = [...firstRun, ...secondRun].filter((e) => e.type === 'trial').map((e) => (e as { key: string }).key);
    expect(finishedKeys).toHaveLength(4);
    expect(new Set(finishedKeys).size).toBe(4);
    expect(secondRun.filter((e) => e.type === 'trial-start').map((e) => (e as { trial: number }).trial)).toEqual([...Array(4 - kept).keys()].map((i) => kept + i));
    expect(((await (await call('GET', '/v1/users/dee/adapter')).json()) as any).metrics.jobId).toBe(job.id);
  });
});
