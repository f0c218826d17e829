/**
 * Guides compiled off the serving thread (serve/guide-compiler.ts, guide-worker.ts): a request's
 * grammar, Lark grammar, pattern, JSON schema or tools' calls compiled on the compile thread and kept
 * here, exactly as this thread compiles them; refusals as the arrival refuses; a failed thread leaves
 * the compile to the arrival. Through the engine: a large grammar compiles while other users' rows
 * decode, and its reply is the one a compile on the serving thread gives.
 */
import type { Worker } from 'node:worker_threads';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { GuideSpec } from '../../src/model/guide.js';
import { ServeError } from '../../src/serve/errors.js';
import { GuideCompiler } from '../../src/serve/guide-compiler.js';
import { guideOf } from '../../src/serve/reply-guide.js';
import type { ServeRequest } from '../../src/serve/types.js';
import { peekKept } from '../../src/util/text-cache.js';
import { makeServeFixture, never, req, type ServeFixture } from './fixtures.js';

const base = { userId: 'u', prompt: 'x', maxTokens: 4, temperature: 0, topP: 1, stop: [], stream: false, mode: 'auto' } as ServeRequest;
const kept = (r: ServeRequest): boolean => peekKept(() => guideOf(r)).kept;
/** A grammar of 200 long rules: about 300 ms to compile on this machine, 60,000 states. */
const bigGrammar = (tag: string): string =>
  ['root ::= ' + Array.from({ length: 200 }, (_, i) => `r${i}`).join(' | '), ...Array.from({ length: 200 }, (_, i) => `r${i} ::= "${tag}${'abcdefghij'.repeat(30)}" [a-z]{1,8} "${i}"`)].join('\n');
/** What a guide spec compiled to, without the process-wide ids (compared across threads). */
function withoutIds(spec: GuideSpec | undefined): unknown {
  if (!spec) return spec;
  if (spec.type === 'grammar') return { ...spec, grammar: { ...spec.grammar, id: 0 } };
  if (spec.type === 'regex') return { ...spec, regex: { ...spec.regex, id: 0 } };
  if (spec.type === 'json_schema' || spec.type === 'text_or_json') return { ...spec, schema: { ...spec.schema, id: 0 } };
  return spec;
}
/** A compiled guide's identity, as masks are cached by it: its kind and its id. */
const idOf = (spec: GuideSpec | undefined): string =>
  spec?.type === 'grammar' ? `grammar ${spec.grammar.id}` : spec?.type === 'regex' ? `regex ${spec.regex.id}` : spec?.type === 'json_schema' || spec?.type === 'text_or_json' ? `schema ${spec.schema.id}` : 'none';

describe('GuideCompiler', () => {
  const c = new GuideCompiler();
  afterAll(() => c.close());

  it("compiles grammars (GBNF and Lark), patterns, JSON schemas and tools' calls on its thread; this thread keeps them, each with an id of its own, as it would compile them itself", async () => {
    const props = { name: { type: 'string', maxLength: 12 }, n: { type: 'integer', minimum: 3, maximum: 4000 } };
    const cases: Array<[ServeRequest, ServeRequest]> = [
      // Each request, and one whose text differs but compiles the same (compiled here, on this thread;
      // the Lark grammar's other layout translates to the same GBNF, so it takes the kept compile).
      [{ ...base, guidedGrammar: 'root ::= "(" item ("," item)* ")"\nitem ::= [a-z]+ | root' }, { ...base, guidedGrammar: 'root ::= "(" item ("," item)* ")"\nitem ::= [a-z]+ | root\n# the same' }],
      [{ ...base, guidedGrammar: 'start: "(" item ("," item)* ")"\nitem: /[a-z]+/ | start' }, { ...base, guidedGrammar: 'start: "(" item ("," item)* ")"\nitem: /[a-z]+/ | start\n// the same' }],
      [{ ...base, guidedRegex: '[a-c]{2,5}(-[0-9]+)?' }, { ...base, guidedRegex: '(?:[a-c]{2,5}(-[0-9]+)?)' }],
      [{ ...base, responseFormat: { type: 'json_schema', jsonSchema: { name: 'a', schema: { type: 'object', properties: props, required: ['n'] } } } }, { ...base, responseFormat: { type: 'json_schema', jsonSchema: { name: 'a', schema: { required: ['n'], type: 'object', properties: props } } } }],
      [{ ...base, toolCalls: { schema: { type: 'object', properties: { f: { type: 'object', properties: props } } }, several: true, strict: true } }, { ...base, toolCalls: { schema: { properties: { f: { type: 'object', properties: props } }, type: 'object' }, several: true, strict: true } }],
    ];
    const ids = new Set<string>();
    for (const [r, same] of cases) {
      expect(kept(r)).toBe(false);
      const ready = c.prepare(r);
      expect(ready).not.toBeNull();
      expect(kept(r)).toBe(false); // nothing was compiled here meanwhile
      await ready;
      expect(kept(r)).toBe(true);
      expect(c.prepare(r)).toBeNull(); // kept: nothing to wait for
      const adopted = guideOf(r);
      expect(idOf(guideOf(r))).toBe(idOf(adopted)); // the same kept compile each time
      const here = guideOf(same); // compiled on this thread
      expect(withoutIds(adopted)).toEqual(withoutIds(here));
      if (r.guidedGrammar?.startsWith('start:')) expect(idOf(here)).toBe(idOf(adopted)); // the thread's GBNF of it was kept too
      else expect(idOf(here)).not.toBe(idOf(adopted));
      ids.add(idOf(adopted)).add(idOf(here));
    }
    expect(ids.size).toBe(2 * cases.length - 1); // masks are cached by id: every compile has its own
    // Two requests with the same new grammar at once: both wait, and both find the one compile kept.
    const twice = { ...base, guidedGrammar: 'root ::= "twice" [0-9]' };
    const both = [c.prepare(twice), c.prepare({ ...twice })];
    expect(both.every((p) => p !== null)).toBe(true);
    await Promise.all(both);
    expect(idOf(guideOf(twice))).toBe(idOf(guideOf({ ...twice })));
    expect(c.prepare(base)).toBeNull(); // nothing to compile
    expect(c.prepare({ ...base, guidedChoice: ['yes', 'no'] })).toBeNull();
  });

  it("refuses what the arrival refuses, with its code, message and details; the refusal is kept here, so the text's next request is refused at once, without the thread", async () => {
    const refusing = (e: unknown) => (e instanceof ServeError ? e : null);
    const arrival = (r: ServeRequest): ServeError | null => {
      try {
        guideOf(r);
        return null;
      } catch (e) {
        return refusing(e);
      }
    };
    // Each refused text, and an equivalent one whose refusal reads the same (refused here, on this thread).
    const cases: Array<[ServeRequest, ServeRequest]> = [
      [{ ...base, guidedGrammar: 'root ::= root "a" | "a"' }, { ...base, guidedGrammar: 'root ::= root "a" | "a"\n# the same' }],
      [{ ...base, guidedGrammar: 'start: a\na: b "x" | "y"\nb: a "z"' }, { ...base, guidedGrammar: 'start: a\na: b "x" | "y"\nb: a "z"\n// the same' }],
      [{ ...base, guidedRegex: '(' }, { ...base, guidedRegex: '(?:(' }],
      [
        { ...base, responseFormat: { type: 'json_schema', jsonSchema: { name: 'a', schema: { type: 'string', format: 'iri' } } } },
        { ...base, responseFormat: { type: 'json_schema', jsonSchema: { name: 'a', schema: { format: 'iri', type: 'string' } } } },
      ],
    ];
    for (const [r, same] of cases) {
      const there = await c.prepare(r)!.then(() => null, refusing);
      const here = arrival(same);
      expect(there).toBeInstanceOf(ServeError);
      expect(here).toBeInstanceOf(ServeError);
      expect(there).toMatchObject({ code: here!.code, message: here!.message, details: here!.details });
      // Kept: no thread, and the arrival refuses it as the thread did.
      expect(c.prepare(r)).toBeNull();
      expect(() => peekKept(() => guideOf(r))).toThrow(there!.message);
      expect(arrival(r)).toMatchObject({ code: there!.code, message: there!.message, details: there!.details });
    }
    // A non-strict tool whose parameters cannot guide: no refusal, the reply unguided; kept as that too.
    const loose = { ...base, toolCalls: { schema: { type: 'object', properties: { d: { type: 'string', format: 'iri' }, n: { type: 'integer' } } }, several: false, strict: false } };
    await c.prepare(loose);
    expect(c.prepare(loose)).toBeNull();
    expect(peekKept(() => guideOf(loose))).toEqual({ kept: true, result: undefined });
  });

  it('refuses a request past `maxWaiting` waiting for the thread with queue_full and Retry-After; kept guides and guideless requests never wait', async () => {
    const d = new GuideCompiler({}, 2);
    const waiting = [d.prepare({ ...base, guidedGrammar: bigGrammar('w1') }), d.prepare({ ...base, guidedGrammar: bigGrammar('w2') })];
    expect(waiting.every((p) => p !== null)).toBe(true);
    const third = await d.prepare({ ...base, guidedGrammar: bigGrammar('w3') })!.then(() => null, (e: unknown) => e);
    expect(third).toBeInstanceOf(ServeError);
    expect(third).toMatchObject({ code: 'queue_full', retryAfterS: 1, details: { compiling: 2, maxCompiling: 2 } });
    expect(d.prepare(base)).toBeNull();
    await Promise.all(waiting);
    expect(d.prepare({ ...base, guidedGrammar: bigGrammar('w1') })).toBeNull(); // kept now
    await d.prepare({ ...base, guidedGrammar: bigGrammar('w3') }); // room again
    expect(kept({ ...base, guidedGrammar: bigGrammar('w3') })).toBe(true);
    await d.close();
  });

  it('where the thread dies mid-compile, the guide is left to the arrival (reported), and the next guide starts a fresh thread', async () => {
    const why: string[] = [];
    const d = new GuideCompiler({ fellBack: (w) => why.push(w) });
    await d.start();
    const first = d.threadId;
    const r = { ...base, guidedGrammar: bigGrammar('dies') };
    const ready = d.prepare(r)!;
    await (d as unknown as { worker: Worker }).worker.terminate(); // as a crash would end it
    await ready; // resolved, not rejected: the arrival compiles it
    expect(why).toEqual([expect.stringMatching(/exited/)]);
    expect(kept(r)).toBe(false);
    const next = { ...base, guidedRegex: 'after[0-9]' };
    await d.prepare(next);
    expect(kept(next)).toBe(true);
    expect(d.threadId).not.toBeNull();
    expect(d.threadId).not.toBe(first);
    await d.close();
    expect(d.prepare({ ...base, guidedRegex: 'closed[0-9]' })).toBeNull(); // closed: the arrival compiles
  });
});

describe('the engine with a guide-compile thread', () => {
  let f: ServeFixture;
  beforeAll(() => {
    f = makeServeFixture({ maxPositions: 256 });
  });
  afterAll(() => f.cleanup());

  /** Tokens another user's row decodes while the engine compiles `grammar` for a request: from its arrival until the grammar is kept here. */
  async function tokensDuringCompile(guideThread: boolean, grammar: string): Promise<{ during: number; reply: string; compiling: number }> {
    const e = f.engine({ guideThread });
    let tokens = 0;
    const long = (async () => {
      for await (const ev of e.stream(req('other', { maxTokens: 200, ignoreEos: true }), never())) if (ev.type === 'token') tokens++;
    })();
    while (tokens < 3) await new Promise((r) => setImmediate(r)); // the other row is decoding
    const r = req('guided', { maxTokens: 6, guidedGrammar: grammar });
    const before = tokens;
    const reply = e.generate(r, never());
    const compiling = e.queue(10).compiling; // the operators' view: waiting for its guide, not yet queued
    while (!kept(r)) await new Promise((res) => setImmediate(res));
    const during = tokens - before;
    const text = (await reply).text;
    await long;
    expect(e.queue(10).compiling).toBe(0);
    return { during, reply: text, compiling };
  }

  it("decodes other users' rows while a large grammar compiles, and replies as a compile on the serving thread does", async () => {
    const threaded = await tokensDuringCompile(true, bigGrammar('x'));
    const inline = await tokensDuringCompile(false, `${bigGrammar('x')}\n# compiled on the serving thread`);
    expect(threaded.during).toBeGreaterThan(0);
    expect([threaded.compiling, inline.compiling]).toEqual([1, 0]);
    expect(inline.during).toBe(0); // the measure tells them apart: on the serving thread, no step runs while it compiles
    expect(threaded.reply).toBe(inline.reply);
    expect(threaded.reply.startsWith('x')).toBe(true);
    expect((f.registry.get('memlora_generate_guide_compile_seconds') as unknown as { snapshot(): { count: number } }).snapshot().count).toBe(1);

    // A grammar the compile thread refuses: the arrival's refusal, counted as one.
    const e = f.engine({ guideThread: true });
    const refusedBefore = f.counter('memlora_generate_rejected_total', { code: 'unsupported_grammar' });
    await expect(e.generate(req('guided', { guidedGrammar: 'root ::= root "a" | "a"' }), never())).rejects.toMatchObject({ code: 'unsupported_grammar', details: { reason: expect.stringMatching(/left-recursive/) } });
    expect(f.counter('memlora_generate_rejected_total', { code: 'unsupported_grammar' })).toBe(refusedBefore + 1);
    expect(f.counter('memlora_generate_guide_compile_fallbacks_total')).toBe(0);
  }, 60_000);
});
