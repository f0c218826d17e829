/**
 * The Responses API's typed events of a reply (replyEvents), against the response object read from
 * the whole reply (responseOf, which reads calls with readCalls on the whole text): however the reply
 * is cut into tokens, the events' deltas add up to the items of that object, each item is opened
 * before its deltas and done after them, and the last event is the response as finished.
 */
import { describe, expect, it } from 'vitest';
import { type Asked, type ResponseObject, responseOf } from '../../src/http/response-object.js';
import { type ResponseEvent, replyEvents } from '../../src/http/response-events.js';
import type { GenerateResult, StreamEvent } from '../../src/http/services.js';
import { type ToolOffer, toolOffer } from '../../src/http/tools.js';

const asked = (body: Asked['body'] = { input: 'x' } as Asked['body']): Asked => ({ id: 'k1', created: 1, model: 'memlora', body, maxTokens: 16, temperature: 0, topP: 1, store: true, background: false });
const tools = [
  { type: 'function' as const, function: { name: 'get_time' } },
  { type: 'function' as const, function: { name: 'get_weather', parameters: { type: 'object', properties: { city: { type: 'string' } } } } },
];
const PLAIN: ToolOffer = toolOffer({});
const OFFERED: ToolOffer = toolOffer({ tools, tool_choice: 'auto' });

function result(text: string, finishReason: GenerateResult['finishReason'], completionTokens = 3): GenerateResult {
  return {
    id: 'gen_1',
    userId: 'alice',
    text,
    finishReason,
    usage: { promptTokens: 5, completionTokens, cachedTokens: 0 },
    timings: { queueMs: 0, prefillMs: 1, decodeMs: 1, totalMs: 2 },
    personalization: { mode: 'vanilla', adapterVersion: null },
  };
}

/** A small seeded generator (mulberry32), so every cut is reproduced. */
function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** The text cut into token pieces of 1-4 characters at random. */
function pieces(text: string, random: () => number): string[] {
  const out: string[] = [];
  for (let i = 0; i < text.length; ) {
    const n = 1 + Math.floor(random() * 4);
    out.push(text.slice(i, i + n));
    i += n;
  }
  return out;
}

async function* streamOf(parts: string[], done: GenerateResult): AsyncGenerator<StreamEvent> {
  for (const text of parts) yield { type: 'token', text };
  yield { type: 'done', result: done };
}

async function run(a: Asked, offer: ToolOffer, parts: string[], done: GenerateResult) {
  const finished: ResponseObject[] = [];
  const events: ResponseEvent[] = [];
  for await (const ev of replyEvents(a, offer, streamOf(parts, done), (r) => {
    const response = responseOf(a, r, offer);
    finished.push(response);
    return response;
  })) {
    events.push(ev);
  }
  return { events, finished };
}

/** What the events say of each output item: opened, its deltas joined, done (in the order they came). */
function replay(events: ResponseEvent[]) {
  const items = new Map<number, { added: number; deltas: string; done: number | null; item: unknown }>();
  events.forEach((ev, at) => {
    const index = ev.fields.output_index as number | undefined;
    if (ev.type === 'response.output_item.added') {
      expect(items.has(index!), `item ${index} opened twice`).toBe(false);
      items.set(index!, { added: at, deltas: '', done: null, item: null });
      return;
    }
    if (index === undefined) return;
    const open = items.get(index);
    expect(open, `${ev.type} of item ${index} before it was opened`).toBeDefined();
    expect(open!.done, `${ev.type} of item ${index} after it was done`).toBeNull();
    if (ev.type === 'response.output_text.delta' || ev.type === 'response.function_call_arguments.delta') open!.deltas += ev.fields.delta as string;
    if (ev.type === 'response.output_item.done') {
      open!.done = at;
      open!.item = ev.fields.item;
    }
  });
  return items;
}

/** The text an output item holds: a message's text, or a call's arguments. */
const itemText = (item: ResponseObject['output'][number]): string => (item.type === 'message' ? item.content[0].text : item.arguments);

describe('replyEvents (the Responses API events of a reply)', () => {
  const cases: Array<{ name: string; offer: ToolOffer; text: string; finish: GenerateResult['finishReason'] }> = [
    { name: 'plain text', offer: PLAIN, text: 'A mushroom risotto, as you like it.', finish: 'stop' },
    { name: 'plain text cut by its budget', offer: PLAIN, text: 'Once upon a time there', finish: 'length' },
    { name: 'text with tools offered, no call', offer: OFFERED, text: 'It is noon {not a call}.', finish: 'stop' },
    { name: 'one call', offer: OFFERED, text: '{"get_time": {}}', finish: 'stop' },
    { name: 'two calls, then text', offer: OFFERED, text: '[{"get_weather": {"city": "Ly}on"}}, {"get_time": {}}] Checking both.', finish: 'stop' },
    { name: 'a call cut by its budget', offer: OFFERED, text: '{"get_weather": {"city": "Par', finish: 'length' },
    { name: 'an empty reply', offer: PLAIN, text: '', finish: 'stop' },
  ];

  for (const c of cases) {
    it(`${c.name}: whatever the token cuts, the deltas add up to the whole reply's items, each opened before its deltas and done after`, async () => {
      const a = asked();
      const done = result(c.text, c.finish);
      const whole = responseOf(a, done, c.offer);
      const random = rng(7);
      for (let trial = 0; trial < 25; trial++) {
        const { events, finished } = await run(a, c.offer, pieces(c.text, random), done);
        expect(finished).toHaveLength(1);
        expect(finished[0]).toEqual(whole);
        const last = events.at(-1)!;
        expect(last.type).toBe(c.finish === 'length' ? 'response.incomplete' : 'response.completed');
        expect(last.fields.response).toEqual(whole);
        const items = replay(events);
        // Every output item of the whole reply, and nothing else, was opened and done, in order.
        expect([...items.keys()].sort()).toEqual(whole.output.map((_, i) => i));
        for (const [index, seen] of items) {
          expect(seen.done, `item ${index} never done`).not.toBeNull();
          expect(seen.item).toEqual(whole.output[index]);
          expect(seen.deltas).toBe(itemText(whole.output[index]));
        }
        // Items open in output order.
        const opened = [...items.entries()].sort((x, y) => x[1].added - y[1].added).map(([i]) => i);
        expect(opened).toEqual(whole.output.map((_, i) => i));
      }
    });
  }

  it('a reply cancelled by the engine is finished once and its stream just ends: no done events', async () => {
    const a = asked();
    const { events, finished } = await run(a, PLAIN, ['Once', ' upon'], result('Once upon', 'cancelled', 2));
    expect(finished).toHaveLength(1);
    expect(finished[0].status).toBe('cancelled');
    expect(events.map((e) => e.type)).toEqual(['response.output_item.added', 'response.content_part.added', 'response.output_text.delta', 'response.output_text.delta']);
  });

  it('a stream that ends without its done event is an error, and nothing is finished', async () => {
    const a = asked();
    let finished = 0;
    async function* cut(): AsyncGenerator<StreamEvent> {
      yield { type: 'token', text: 'Once' };
    }
    const drain = async () => {
      for await (const _ of replyEvents(a, PLAIN, cut(), (r) => (finished++, responseOf(a, r, PLAIN))));
    };
    await expect(drain()).rejects.toThrow(/without a done event/);
    expect(finished).toBe(0);
  });
});
