import { afterEach, describe, expect, it, vi } from 'vitest';
import { BackgroundResponses, Run } from '../../src/http/background-responses.js';
import type { ResponseObject } from '../../src/http/response-object.js';

const response = (id: string, status: string) => ({ id, status, background: true }) as unknown as ResponseObject;

/** A run whose work ends when `end` is called. */
function started(registry: BackgroundResponses, id: string): { run: Run; end: () => void } {
  let end!: () => void;
  const run = registry.start(new Run(id, 'alice', response(id, 'queued'), new AbortController()), async (r) => {
    await new Promise<void>((resolve) => (end = resolve));
    r.finish(response(id, 'completed'));
  });
  return { run, end };
}

afterEach(() => vi.useRealTimers());

describe('BackgroundResponses', () => {
  it('numbers events by their place; a reader from any point gets those after it, then those to come, until the run is done', async () => {
    const registry = new BackgroundResponses();
    const { run, end } = started(registry, 'resp_a');
    run.push('response.created', {});
    run.push('response.queued', {});
    const late: string[] = [];
    const reading = (async () => {
      for await (const ev of run.from(0, new AbortController().signal)) late.push(ev.data);
    })();
    run.push('response.in_progress', { n: 1 });
    await new Promise((r) => setImmediate(r));
    end();
    await run.done;
    await reading;
    expect(late.map((d) => JSON.parse(d))).toEqual([
      { type: 'response.queued', sequence_number: 1 },
      { type: 'response.in_progress', sequence_number: 2, n: 1 },
    ]);
  });

  it('a reader that goes away stops waiting at once', async () => {
    const registry = new BackgroundResponses();
    const { run, end } = started(registry, 'resp_b');
    const ac = new AbortController();
    const reading = (async () => {
      let n = 0;
      for await (const _ of run.from(-1, ac.signal)) n++;
      return n;
    })();
    run.push('response.created', {});
    await new Promise((r) => setImmediate(r));
    ac.abort();
    expect(await reading).toBe(1);
    end();
    await run.done;
  });

  it('keeps a finished run for KEEP_MS and the last `runs` finished; a stored pending response without a run reads as cut off', async () => {
    vi.useFakeTimers({ toFake: ['Date'] });
    const registry = new BackgroundResponses({ ms: 60_000, runs: 2 });
    for (const id of ['resp_1', 'resp_2', 'resp_3']) {
      const { run, end } = started(registry, id);
      end();
      await run.done;
      vi.advanceTimersByTime(1000);
    }
    // Starting the fourth prunes the oldest finished past two.
    const { run: fourth, end } = started(registry, 'resp_4');
    expect(registry.get('resp_1')).toBeUndefined();
    expect(registry.get('resp_2')?.response.status).toBe('completed');
    expect(registry.running).toBe(1);
    expect(registry.current({ id: 'resp_4', response: { status: 'queued' } })).toBe(fourth.response);
    vi.advanceTimersByTime(60_000);
    expect(registry.get('resp_3')).toBeUndefined();
    // Without its run, a response stored queued waits to run again if its request was kept, else was cut
    // off; one done reads as stored, background false where unsaid.
    expect(registry.current({ id: 'resp_3', response: { status: 'queued', background: true }, request: { input: 'x' } })).toEqual({ status: 'queued', background: true });
    expect(registry.current({ id: 'resp_3', response: { status: 'queued', background: true }, request: null })).toMatchObject({ status: 'failed', error: { code: 'server_error' } });
    expect(registry.current({ id: 'resp_x', response: { status: 'completed' } })).toEqual({ status: 'completed', background: false });
    end();
    await registry.settled();
    expect(registry.running).toBe(0);
  });

  it('cancel aborts a running run and waits until it is done; a finished one is left alone', async () => {
    const registry = new BackgroundResponses();
    const controller = new AbortController();
    const run = registry.start(new Run('resp_c', 'alice', response('resp_c', 'in_progress'), controller), async (r) => {
      await new Promise<void>((resolve) => controller.signal.addEventListener('abort', () => resolve()));
      r.finish(response('resp_c', r.cancelRequested ? 'cancelled' : 'failed'));
    });
    await registry.cancel('resp_c');
    expect(run.finishedAt).not.toBeNull();
    expect(run.response.status).toBe('cancelled');
    await registry.cancel('resp_c');
    await registry.cancel('resp_none');
  });
});
