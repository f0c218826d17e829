/**
 * What storing Responses API responses costs a request (POST /v1/responses stores by default): the
 * write of a response with its conversation (one transaction: the retention's purge, then the insert),
 * and the read of a stored response that a request continues (previous_response_id), on a database of
 * `users` users holding `rows` stored responses (WAL, synchronous NORMAL, as the server opens it);
 * and a background response's second write (stored queued when taken, its response replaced when done).
 * Conversations of `items` messages of `chars` characters, as a chain of turns grows them; timed over
 * `calls` writes and reads, next to the serving time a request takes (from
 * bench/serving-time.ts). Then the purge at its worst:
 * `expired` rows fell out of the retention at once (a server down for a while), worked off by the
 * next writes, PURGE_BATCH each: the slowest of those writes and their mean.
 *
 *   npx tsx bench/response-store.ts [--users 1000] [--rows 20000] [--items 16] [--chars 200] [--calls 5000] [--expired 20000]
 *
 * Writes bench/results/response-store.json.
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { openDb } from '../src/db/client.js';
import { PURGE_BATCH, type StoredResponse, getStoredResponse, storeResponse, updateStoredResponse } from '../src/db/queries/responses.js';
import { createUser } from '../src/db/queries/users.js';
import { numberArg } from './args.js';
import { servingTimePerRequest } from './serving-time.js';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const USERS = numberArg('users', 1000);
const ROWS = numberArg('rows', 20_000);
const ITEMS = numberArg('items', 16);
const CHARS = numberArg('chars', 200);
const CALLS = numberArg('calls', 5000);
const EXPIRED = numberArg('expired', 20_000);
const DAY_MS = 86_400_000;

const dir = mkdtempSync(join(tmpdir(), 'memlora-bench-responses-'));
const db = openDb(join(dir, 'memlora.db'));
for (let i = 0; i < USERS; i++) createUser(db, { id: `u${i}` });

const text = (i: number) => `${i} `.padEnd(CHARS, 'lorem ipsum ');
const items = Array.from({ length: ITEMS }, (_, i) => ({ type: 'message', id: `msg_x_in${i}`, status: 'completed', role: i % 2 ? 'assistant' : 'user', content: [{ type: i % 2 ? 'output_text' : 'input_text', text: text(i) }] }));
const responseOf = (id: string) => ({
  id,
  object: 'response',
  created_at: 1,
  status: 'completed',
  output: [{ type: 'message', id: `msg_${id}`, status: 'completed', role: 'assistant', content: [{ type: 'output_text', text: text(0), annotations: [], logprobs: [] }] }],
  usage: { input_tokens: 400, output_tokens: 32, total_tokens: 432 },
});
let n = 0;
const row = (createdAt: number): StoredResponse => {
  const id = `resp_${(n++).toString(16).padStart(24, '0')}`;
  return { id, userId: `u${n % USERS}`, createdAt, previousResponseId: null, response: responseOf(id), items };
};

const now = Date.now();
const keepSince = now - 30 * DAY_MS;
for (let i = 0; i < ROWS; i++) storeResponse(db, row(now - i), keepSince);

// Writes: JSON of the response and its conversation, then the transaction.
// The slowest write is SQLite's WAL checkpoint (every 1,000 pages), whoever's write it falls on.
const ids: string[] = [];
let usPerWriteMax = 0;
let t0 = performance.now();
for (let i = 0; i < CALLS; i++) {
  const r = row(Date.now());
  const t1 = performance.now();
  storeResponse(db, r, keepSince);
  usPerWriteMax = Math.max(usPerWriteMax, (performance.now() - t1) * 1000);
  ids.push(r.id);
}
const usPerWrite = ((performance.now() - t0) * 1000) / CALLS;

// Reads: a continuation's lookup and parse.
let sink = 0;
t0 = performance.now();
for (let i = 0; i < CALLS; i++) sink += getStoredResponse(db, ids[(i * 7919) % ids.length], keepSince)!.items.length;
const usPerRead = ((performance.now() - t0) * 1000) / CALLS;
if (sink !== CALLS * ITEMS) throw new Error('a stored response was not read back whole');

// A background response's end: its response object replaced (output and usage now in it).
t0 = performance.now();
for (let i = 0; i < CALLS; i++) {
  const id = ids[(i * 7919) % ids.length];
  if (!updateStoredResponse(db, id, responseOf(id))) throw new Error('a stored response to update was not found');
}
const usPerUpdate = ((performance.now() - t0) * 1000) / CALLS;

// The purge at its worst: EXPIRED rows past the retention at once, worked off by the next writes.
const old = now - 31 * DAY_MS;
for (let i = 0; i < EXPIRED; i++) storeResponse(db, row(old - i), 0);
const expiredLeft = () => (db.sqlite.prepare('SELECT count(*) AS n FROM stored_responses WHERE created_at < ?').get(keepSince) as { n: number }).n;
const purgeWrites: number[] = [];
while (expiredLeft() > 0) {
  t0 = performance.now();
  storeResponse(db, row(Date.now()), keepSince);
  purgeWrites.push((performance.now() - t0) * 1000);
  if (purgeWrites.length > EXPIRED) throw new Error('the purge does not advance');
}
const usPurgeWriteMax = Math.max(...purgeWrites);
const usPurgeWriteMean = purgeWrites.reduce((a, b) => a + b, 0) / purgeWrites.length;
const bytesPerRow = JSON.stringify(responseOf('resp_0')).length + JSON.stringify(items).length;
db.close();
rmSync(dir, { recursive: true, force: true });

const { usServing, maxTokens } = servingTimePerRequest();
const share = (usPerWrite + usPerRead) / usServing;
process.stderr.write(
  `store ${usPerWrite.toFixed(1)} us (the slowest ${usPerWriteMax.toFixed(0)} us) and continuation read ${usPerRead.toFixed(1)} us per request (${ITEMS} items of ${CHARS} characters, ${bytesPerRow} bytes a row, ${ROWS} rows, ${USERS} users); ` +
    `a ${maxTokens}-token request's serving time ${(usServing / 1000).toFixed(1)} ms: ${(100 * share).toFixed(2)}%; a background response's second write ${usPerUpdate.toFixed(1)} us (${((100 * usPerUpdate) / usServing).toFixed(2)}% more); ${EXPIRED} rows expired at once: worked off by ${purgeWrites.length} writes (${PURGE_BATCH} each), ${usPurgeWriteMean.toFixed(0)} us a write, the slowest ${usPurgeWriteMax.toFixed(0)} us\n`,
);
mkdirSync(join(root, 'bench', 'results'), { recursive: true });
writeFileSync(
  join(root, 'bench', 'results', 'response-store.json'),
  `${JSON.stringify(
    {
      date: new Date().toISOString(),
      setup: { users: USERS, rows: ROWS, items: ITEMS, chars: CHARS, calls: CALLS, expired: EXPIRED, bytesPerRow },
      usPerWrite: Math.round(usPerWrite * 10) / 10,
      usPerWriteMax: Math.round(usPerWriteMax),
      usPerRead: Math.round(usPerRead * 10) / 10,
      usPerBackgroundUpdate: Math.round(usPerUpdate * 10) / 10,
      usServingPerRequest: Math.round(usServing),
      share: Math.round(share * 1e5) / 1e5,
      purge: { batch: PURGE_BATCH, writes: purgeWrites.length, usPerWriteMean: Math.round(usPurgeWriteMean), usPerWriteMax: Math.round(usPurgeWriteMax) },
    },
    null,
    2,
  )}\n`,
);
