/**
 * Downloading an adapter version's files and uploading a weights file as a new version, through the
 * real server (startServer over a tiny model directory, a real SQLite file and adapter store): the
 * round trip serves a second user exactly as the first, an upload is a hot swap (or waits with
 * activate=false, tried meanwhile by requests that name it), and every bad upload is refused with
 * its code while nothing is stored.
 */
import { createHash } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { request as httpRequest } from 'node:http';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config.js';
import { createAdapterVersion, listAdapterVersions } from '../../src/db/queries/adapters.js';
import { createJob, updateJob } from '../../src/db/queries/jobs.js';
import { memoryLogger } from '../../src/http/logger.js';
import { adapterActivationSchema, adapterImportSchema, generateResultSchema } from '../../src/http/schemas.js';
import type { Adapter } from '../../src/lora/adapter.js';
import { encodeAdapter, loraTensorName, maxAdapterWeightsBytes } from '../../src/lora/format.js';
import { userDirName } from '../../src/lora/paths.js';
import { AdapterStore } from '../../src/lora/store.js';
import { encodeSafetensors } from '../../src/model/safetensors.js';
import { startServer, type RunningServer } from '../../src/server.js';
import { ADMIN_TOKEN, expectError } from '../http/helpers.js';
import { forcingAdapter, type ModelDir, randomStoredAdapter, tokenOf, writeModelDir } from './fixtures.js';

let root: string;
let md: ModelDir;
let server: RunningServer;
let store: AdapterStore;
let adapterDir: string;
const logger = memoryLogger();
const admin = { authorization: `Bearer ${ADMIN_TOKEN}` };

const upload = (userId: string, body: Uint8Array | string, query = '', headers: Record<string, string> = admin) =>
  fetch(`${server.url}/v1/admin/users/${userId}/adapters${query}`, { method: 'POST', headers: { 'content-type': 'application/octet-stream', ...headers }, body });
const download = (userId: string, version: number | string, file: string, headers: Record<string, string> = admin) =>
  fetch(`${server.url}/v1/admin/users/${userId}/adapters/${version}/files/${file}`, { headers });
const generate = async (userId: string): Promise<ReturnType<typeof generateResultSchema.parse>> => {
  const res = await fetch(`${server.url}/v1/generate`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ userId, prompt: 'Hello', maxTokens: 4 }) });
  expect(res.status).toBe(200);
  return generateResultSchema.parse(await res.json());
};

async function giveAdapter(userId: string, adapter: Adapter): Promise<string> {
  await fetch(`${server.url}/v1/users/${userId}`, { method: 'PUT' });
  const w = await store.write(userId, adapter);
  createAdapterVersion(server.db, { userId, config: { ...adapter.spec }, filePath: w.path, sha256: w.sha256, metrics: {}, status: 'ready', activate: true });
  return w.path;
}

/** What the store and the database hold of a user: their version rows and every entry of their adapter directory (temps included). */
function holdings(userId: string): { rows: Array<[number, string, number]>; entries: string[] } {
  const dir = join(adapterDir, userDirName(userId));
  return {
    rows: listAdapterVersions(server.db, userId).map((v) => [v.version, v.status, v.active]),
    entries: existsSync(dir) ? readdirSync(dir).sort() : [],
  };
}

const forcing = (ch: string) => forcingAdapter(md.cfg, md.weights, tokenOf(md.tokenizer, ch));

beforeAll(async () => {
  root = mkdtempSync(join(tmpdir(), 'memlora-adapter-transfer-'));
  md = writeModelDir(root, 128);
  adapterDir = join(root, 'adapters');
  const config = loadConfig({
    MEMLORA_PORT: '0',
    MEMLORA_DATA_DIR: join(root, 'data'),
    MEMLORA_ADAPTER_DIR: adapterDir,
    MEMLORA_MODEL_PATH: md.dir,
    MEMLORA_ADMIN_TOKEN: ADMIN_TOKEN,
    // Smaller than any adapter's weights file here: uploads are bounded by the model's largest adapter instead.
    MEMLORA_BODY_LIMIT_BYTES: '2KiB',
  });
  server = await startServer(config, { handleSignals: false, logger });
  store = new AdapterStore(adapterDir, { config: md.cfg, name: basename(md.dir) });
  for (let i = 0; (await fetch(`${server.url}/readyz`)).status !== 200; i++) {
    if (i > 500) throw new Error('model never became ready');
    await new Promise((r) => setTimeout(r, 10));
  }
  await giveAdapter('alice', forcing('q'));
});

afterAll(async () => {
  await server?.close();
  rmSync(root, { recursive: true, force: true });
});

describe('adapter files: download', () => {
  it('serves each of the three files as stored, with its type, name and the version checksum', async () => {
    const [row] = listAdapterVersions(server.db, 'alice');
    const dir = join(adapterDir, ...row.filePath.split('/'));
    for (const [file, type] of [
      ['adapter_model.safetensors', 'application/octet-stream'],
      ['adapter_config.json', 'application/json'],
      ['memlora_adapter.json', 'application/json'],
    ]) {
      const res = await download('alice', 1, file);
      expect(res.status).toBe(200);
      expect(res.headers.get('content-type')).toBe(type);
      expect(res.headers.get('content-disposition')).toBe(`attachment; filename="${file}"`);
      expect(res.headers.get('x-adapter-sha256')).toBe(row.sha256);
      expect(Buffer.from(await res.arrayBuffer()).equals(readFileSync(join(dir, file)))).toBe(true);
    }
    // PEFT's adapter config: what PEFT needs to load the weights on the same base model.
    const peft = (await (await download('alice', 1, 'adapter_config.json')).json()) as Record<string, unknown>;
    expect(peft).toMatchObject({ peft_type: 'LORA', r: 8, base_model_name_or_path: basename(md.dir) });
  });

  it('refuses what it cannot serve: unknown file, version, user; a bad version number; no token', async () => {
    await expectError(await download('alice', 1, 'model.safetensors'), 404, 'adapter_file_not_found');
    await expectError(await download('alice', 1, '..%2Fadapter_model.safetensors'), 404, 'adapter_file_not_found');
    await expectError(await download('alice', 9, 'adapter_model.safetensors'), 404, 'adapter_not_found');
    await expectError(await download('nobody', 1, 'adapter_model.safetensors'), 404, 'user_not_found');
    await expectError(await download('alice', 'x', 'adapter_model.safetensors'), 422, 'invalid_version');
    await expectError(await download('alice', 1, 'adapter_model.safetensors', {}), 401, 'unauthorized');
  });

  it('a version whose weights went bad is not downloaded: 409 adapter_unusable, and it is taken out of service', async () => {
    const path = await giveAdapter('carol', forcing('c'));
    const file = join(adapterDir, ...path.split('/'), 'adapter_model.safetensors');
    const bytes = readFileSync(file);
    bytes[bytes.length - 3] ^= 0x40;
    writeFileSync(file, bytes);
    const err = await expectError(await download('carol', 1, 'adapter_config.json'), 409, 'adapter_unusable');
    expect(err.details).toMatchObject({ userId: 'carol', version: 1, reason: 'adapter_corrupt' });
    expect(holdings('carol').rows).toEqual([[1, 'quarantined', 0]]);
    // Out of service now: refused for its status, before any file is read.
    expect((await expectError(await download('carol', 1, 'adapter_model.safetensors'), 409, 'adapter_unusable')).details.reason).toBe('quarantined');
  });
});

describe('adapter files: upload', () => {
  it('a downloaded weights file uploaded for another user serves them exactly as the first: same checksum, same files, same replies', async () => {
    const weights = new Uint8Array(await (await download('alice', 1, 'adapter_model.safetensors')).arrayBuffer());
    expect(weights.byteLength).toBeGreaterThan(2048); // past MEMLORA_BODY_LIMIT_BYTES
    await fetch(`${server.url}/v1/users/bob`, { method: 'PUT' });
    expect((await generate('bob')).personalization.mode).not.toBe('injected');
    const res = await upload('bob', weights);
    expect(res.status).toBe(201);
    const body = adapterImportSchema.parse(await res.json());
    const [aliceRow] = listAdapterVersions(server.db, 'alice');
    expect(body).toMatchObject({ adapter: { userId: 'bob', version: 1, status: 'ready', active: true, sha256: aliceRow.sha256, config: { n: 1, r: 8, layers: [false, true] }, metrics: { imported: true, source: 'memlora' } }, previousVersion: null });
    expect(res.headers.get('location')).toBe('/v1/admin/users/bob/adapters/1/files/adapter_model.safetensors');
    for (const file of ['adapter_model.safetensors', 'memlora_adapter.json', 'adapter_config.json']) {
      const mine = Buffer.from(await (await download('bob', 1, file)).arrayBuffer());
      expect(mine.equals(Buffer.from(await (await download('alice', 1, file)).arrayBuffer()))).toBe(true);
    }
    expect(body.bytes).toBe(readdirSync(join(adapterDir, ...listAdapterVersions(server.db, 'bob')[0].filePath.split('/'))).reduce((n, f) => n + readFileSync(join(adapterDir, ...listAdapterVersions(server.db, 'bob')[0].filePath.split('/'), f)).byteLength, 0));
    const alice = await generate('alice');
    const bob = await generate('bob');
    expect(alice.text).toBe('qqqq');
    expect(bob).toMatchObject({ text: alice.text, personalization: { mode: 'injected', adapterVersion: 1 } });
    expect(logger.lines.find((l) => l.msg === 'adapter version imported')?.fields).toMatchObject({ userId: 'bob', version: 1, activated: true, previousVersion: null });
  });

  it('is a hot swap: the next request is served with the new version; with activate=false it waits for PUT .../adapter', async () => {
    await giveAdapter('dave', forcing('d'));
    expect((await generate('dave')).text).toBe('dddd');
    const e = encodeAdapter(forcing('e'), store.model).weights;
    const swapped = adapterImportSchema.parse(await (await upload('dave', e)).json());
    expect(swapped).toMatchObject({ adapter: { version: 2, active: true }, previousVersion: 1 });
    expect(await generate('dave')).toMatchObject({ text: 'eeee', personalization: { adapterVersion: 2 } });

    const f = encodeAdapter(forcing('f'), store.model).weights;
    const res = await upload('dave', f, '?activate=false');
    expect(res.status).toBe(201);
    expect(adapterImportSchema.parse(await res.json())).toMatchObject({ adapter: { version: 3, active: false }, previousVersion: 2 });
    expect(await generate('dave')).toMatchObject({ text: 'eeee', personalization: { adapterVersion: 2 } });
    const put = await fetch(`${server.url}/v1/admin/users/dave/adapter`, { method: 'PUT', headers: { ...admin, 'content-type': 'application/json' }, body: JSON.stringify({ version: 3 }) });
    expect(adapterActivationSchema.parse(await put.json())).toMatchObject({ active: { version: 3 }, previousVersion: 2 });
    expect(await generate('dave')).toMatchObject({ text: 'ffff', personalization: { adapterVersion: 3 } });
  });

  it('keeps a multi-layer adapter of several modules whole: spec, alpha and every tensor', async () => {
    const a = randomStoredAdapter(md.cfg, [0, 1], 3, 11);
    await fetch(`${server.url}/v1/users/erin`, { method: 'PUT' });
    const body = adapterImportSchema.parse(await (await upload('erin', encodeAdapter(a, store.model).weights)).json());
    expect(body.adapter.config).toEqual({ layers: [true, true], n: 3, r: 8, alpha: 16 });
    const stored = await store.read(listAdapterVersions(server.db, 'erin')[0].filePath, body.adapter.sha256, { userId: 'erin' });
    expect(stored.spec).toEqual(a.spec);
    expect(stored.pairs.map((p) => [p.target.layer, p.target.map, [...p.A], [...p.B]])).toEqual(a.pairs.map((p) => [p.target.layer, p.target.map, [...p.A], [...p.B]]));
  });

  it('refuses a file that is not a memlora adapter of this model, with the reason, and stores nothing', async () => {
    await giveAdapter('frank', forcing('g'));
    const before = holdings('frank');
    const good = encodeAdapter(forcing('h'), store.model).weights;

    await expectError(await upload('frank', new Uint8Array(0)), 400, 'invalid_adapter');
    expect((await expectError(await upload('frank', 'not a safetensors file at all'), 422, 'invalid_adapter')).details.reason).toBe('bad_safetensors');
    // A safetensors file without memlora's record (a bare PEFT export, say).
    const bare = encodeSafetensors(new Map([['x', { dtype: 'float32', dims: [2], data: new Float32Array([1, 2]) }]]), { format: 'pt' });
    expect((await expectError(await upload('frank', bare), 422, 'invalid_adapter')).details.reason).toBe('bad_metadata');
    // Made for another base model (another context length: another config hash).
    const other = encodeAdapter(forcing('h'), { config: { ...md.cfg, maxPositions: md.cfg.maxPositions * 2 }, name: 'other' }).weights;
    expect((await expectError(await upload('frank', other), 422, 'adapter_model_mismatch')).details.reason).toBe('model_mismatch');
    // A weight that is not finite (the file's last float: B of the last map).
    const nan = good.slice();
    nan.set([0x00, 0x00, 0xc0, 0x7f], nan.byteLength - 4);
    expect((await expectError(await upload('frank', nan), 422, 'invalid_adapter')).details.reason).toBe('non_finite');
    // A truncated file.
    expect((await expectError(await upload('frank', good.subarray(0, good.byteLength - 100)), 422, 'invalid_adapter')).details.reason).toBe('bad_safetensors');
    // Past the largest adapter the model can have.
    // Past the largest adapter the model can have (and the room for PEFT's config and multipart framing).
    await expectError(await upload('frank', new Uint8Array(maxAdapterWeightsBytes(md.cfg) + 1024 * 1024 + 1)), 413, 'body_too_large');
    await expectError(await upload('frank', good, '?activate=maybe'), 422, 'validation_failed');
    await expectError(await upload('frank', good, '', {}), 401, 'unauthorized');
    await expectError(await upload('nobody', good), 404, 'user_not_found');
    // An injection job of the user is active: it would activate its own result, so no activation now.
    const job = createJob(server.db, { userId: 'frank', params: {} });
    await expectError(await upload('frank', good), 409, 'job_active');
    updateJob(server.db, job.id, { state: 'cancelled', finishedAt: Date.now() });
    expect(holdings('frank')).toEqual(before);
    expect((await generate('frank')).text).toBe('gggg');
  });

  it('a PEFT adapter (its two files, multipart) serves as the memlora adapter it equals: same stored bytes, same replies', async () => {
    // forcing('q') as PEFT would save it: rank 1 on the last layer's c_proj alone, lora_alpha 1.
    const native = forcing('q');
    const last = md.cfg.nLayers - 1;
    const proj = native.pairs.find((p) => p.target.map === 'mlp.c_proj')!;
    const A = proj.A.slice(0, proj.target.inFeatures);
    const B = Float32Array.from({ length: proj.target.outFeatures }, (_, o) => proj.B[o * proj.rank]);
    const weights = encodeSafetensors(
      new Map([
        [loraTensorName('gpt2', last, 'mlp.c_proj', 'A'), { dtype: 'float32', dims: [1, proj.target.inFeatures], data: A }],
        [loraTensorName('gpt2', last, 'mlp.c_proj', 'B'), { dtype: 'float32', dims: [proj.target.outFeatures, 1], data: B }],
      ]),
      { format: 'pt' },
    );
    const peftConfig = JSON.stringify({ peft_type: 'LORA', task_type: 'CAUSAL_LM', r: 1, lora_alpha: 1, target_modules: ['mlp.c_proj'], layers_to_transform: [last], bias: 'none', use_dora: false, use_rslora: false, fan_in_fan_out: true });
    const form = () => {
      const f = new FormData();
      f.append('adapter_model.safetensors', new Blob([weights]), 'adapter_model.safetensors');
      f.append('adapter_config.json', new Blob([peftConfig]), 'adapter_config.json');
      return f;
    };
    await fetch(`${server.url}/v1/users/hana`, { method: 'PUT' });
    const res = await fetch(`${server.url}/v1/admin/users/hana/adapters`, { method: 'POST', headers: admin, body: form() });
    expect(res.status).toBe(201);
    const body = adapterImportSchema.parse(await res.json());
    expect(body.adapter).toMatchObject({ version: 1, active: true, config: { layers: [false, true], n: 1, r: 8 }, metrics: { imported: true, source: 'peft' } });
    // Padded and zero-filled, it is the native adapter exactly: the same bytes in the store.
    expect(body.adapter.sha256).toBe(createHash('sha256').update(encodeAdapter(native, store.model).weights).digest('hex'));
    expect((await generate('hana')).text).toBe('qqqq');

    // The weights alone are not enough (no memlora record); the multipart body must hold what it says.
    expect((await expectError(await upload('hana', weights), 422, 'invalid_adapter')).message).toMatch(/send its adapter_config\.json with it, as multipart\/form-data/);
    const extra = form();
    extra.append('notes.txt', 'hello');
    expect((await expectError(await fetch(`${server.url}/v1/admin/users/hana/adapters`, { method: 'POST', headers: admin, body: extra }), 400, 'invalid_adapter')).details.reason).toBe('bad_multipart');
    const onlyConfig = new FormData();
    onlyConfig.append('adapter_config.json', new Blob([peftConfig]));
    expect((await expectError(await fetch(`${server.url}/v1/admin/users/hana/adapters`, { method: 'POST', headers: admin, body: onlyConfig }), 400, 'invalid_adapter')).details.reason).toBe('empty_body');
    const garbled = await fetch(`${server.url}/v1/admin/users/hana/adapters`, { method: 'POST', headers: { ...admin, 'content-type': 'multipart/form-data; boundary=xyz' }, body: 'not multipart at all' });
    expect((await expectError(garbled, 400, 'invalid_adapter')).details.reason).toBe('bad_multipart');
    const dora = new FormData();
    dora.append('adapter_model.safetensors', new Blob([weights]));
    dora.append('adapter_config.json', new Blob([JSON.stringify({ ...JSON.parse(peftConfig), use_dora: true })]));
    expect((await expectError(await fetch(`${server.url}/v1/admin/users/hana/adapters`, { method: 'POST', headers: admin, body: dora }), 422, 'invalid_adapter')).details.reason).toBe('unsupported_peft');
    expect(holdings('hana').rows).toEqual([[1, 'ready', 1]]);
  });

  it('a client that goes away mid-upload leaves nothing behind', async () => {
    await giveAdapter('gina', forcing('i'));
    const before = holdings('gina');
    const good = encodeAdapter(forcing('j'), store.model).weights;
    const { port } = new URL(server.url);
    await new Promise<void>((resolve) => {
      const r = httpRequest({ host: '127.0.0.1', port, method: 'POST', path: '/v1/admin/users/gina/adapters', headers: { ...admin, 'content-type': 'application/octet-stream', 'content-length': String(good.byteLength) } });
      r.on('error', () => resolve());
      r.write(good.subarray(0, 1000), () => setTimeout(() => {
        r.destroy();
        resolve();
      }, 50));
    });
    // The server has answered the cut request (499: the body ended before its length) before we look.
    const answered = 'http_requests_total{method="POST",route="/v1/admin/users/:userId/adapters",status="499"} 1';
    for (let i = 0; !(await (await fetch(`${server.url}/metrics`)).text()).includes(answered); i++) {
      if (i > 500) throw new Error('the cut upload was never answered');
      await new Promise((r) => setTimeout(r, 10));
    }
    expect(holdings('gina')).toEqual(before);
    expect((await generate('gina')).text).toBe('iiii');
  });
});

describe('a version tried before it serves (adapterVersion)', () => {
  const post = (path: string, body: unknown) => fetch(`${server.url}${path}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });

  it('an upload kept inactive answers requests that name it, on every route, while the active version serves the rest', async () => {
    await giveAdapter('ivy', forcing('g'));
    const up = await upload('ivy', encodeAdapter(forcing('h'), store.model).weights, '?activate=false');
    expect(adapterImportSchema.parse(await up.json())).toMatchObject({ adapter: { version: 2, active: false } });

    const tried = generateResultSchema.parse(await (await post('/v1/generate', { userId: 'ivy', prompt: 'Hello', maxTokens: 4, adapterVersion: 2 })).json());
    expect(tried).toMatchObject({ text: 'hhhh', personalization: { mode: 'injected', adapterVersion: 2, pinned: true } });
    expect(await generate('ivy')).toMatchObject({ text: 'gggg', personalization: { mode: 'injected', adapterVersion: 1 } });

    // Streamed: the same reply as token events.
    const sse = await (await post('/v1/generate', { userId: 'ivy', prompt: 'Hello', maxTokens: 4, adapterVersion: 2, stream: true })).text();
    const tokens = [...sse.matchAll(/^event: token\ndata: (.*)$/gm)].map((m) => (JSON.parse(m[1]) as { text: string }).text);
    expect(tokens.join('')).toBe('hhhh');

    // OpenAI's chat completions (adapter_version) and Responses API, and scoring.
    const chat = (await (await post('/v1/chat/completions', { model: 'memlora:ivy', messages: [{ role: 'user', content: 'Hello' }], max_tokens: 4, adapter_version: 2 })).json()) as {
      choices: Array<{ message: { content: string } }>;
      memlora: { personalization: unknown };
    };
    expect(chat.choices[0].message.content).toBe('hhhh');
    expect(chat.memlora.personalization).toEqual({ mode: 'injected', adapterVersion: 2, pinned: true });
    // The version named by the model id, as tools that send only `model` name it.
    const resp = (await (await post('/v1/responses', { model: 'memlora:ivy@2', input: 'Hello', max_output_tokens: 4, store: false })).json()) as { output_text?: string; output: Array<{ content: Array<{ text: string }> }>; memlora: { personalization: unknown } };
    expect(resp.output[0].content[0].text).toBe('hhhh');
    expect(resp.memlora.personalization).toEqual({ mode: 'injected', adapterVersion: 2, pinned: true });
    const score = async (adapterVersion?: number) => ((await (await post('/v1/score', { userId: 'ivy', prompt: 'Hello', text: 'hhhh', adapterVersion })).json()) as { logprob: number; personalization: unknown });
    const [underActive, underTried] = [await score(), await score(2)];
    expect(underTried.personalization).toEqual({ mode: 'injected', adapterVersion: 2, pinned: true });
    expect(underTried.logprob).toBeGreaterThan(underActive.logprob + 10);

    // None of it activated anything.
    expect(holdings('ivy').rows).toEqual([
      [2, 'ready', 0],
      [1, 'ready', 1],
    ]);
    expect(await generate('ivy')).toMatchObject({ text: 'gggg', personalization: { adapterVersion: 1 } });
  });

  it('refuses a version that cannot serve with its code, as plain HTTP errors also when streaming; nothing changes', async () => {
    await giveAdapter('jo', forcing('k'));
    await upload('jo', encodeAdapter(forcing('l'), store.model).weights, '?activate=false');
    await upload('jo', encodeAdapter(forcing('m'), store.model).weights, '?activate=false');
    const del = await fetch(`${server.url}/v1/admin/users/jo/adapters/3`, { method: 'DELETE', headers: admin });
    expect(del.status).toBe(200);
    const before = holdings('jo');

    const body = { userId: 'jo', prompt: 'Hello', maxTokens: 4 };
    expect((await expectError(await post('/v1/generate', { ...body, adapterVersion: 9 }), 404, 'adapter_not_found')).details).toEqual({ userId: 'jo', version: 9 });
    expect((await expectError(await post('/v1/generate', { ...body, adapterVersion: 9, stream: true }), 404, 'adapter_not_found')).details).toEqual({ userId: 'jo', version: 9 });
    expect((await expectError(await post('/v1/generate', { ...body, adapterVersion: 3 }), 409, 'adapter_unusable')).details).toEqual({ userId: 'jo', version: 3, reason: 'deleted' });
    await expectError(await post('/v1/chat/completions', { user: 'jo', messages: [{ role: 'user', content: 'Hello' }], adapter_version: 3 }), 409, 'adapter_unusable');
    await expectError(await post('/v1/score', { userId: 'jo', text: 'Hello', adapterVersion: 9 }), 404, 'adapter_not_found');
    for (const [path, ask, field] of [
      ['/v1/generate', { ...body, adapterVersion: 2, mode: 'memory' }, 'adapterVersion'],
      ['/v1/generate', { ...body, adapterVersion: 0 }, 'adapterVersion'],
      ['/v1/score', { userId: 'jo', text: 'Hello', adapterVersion: 2, mode: 'vanilla' }, 'adapterVersion'],
      ['/v1/chat/completions', { user: 'jo', messages: [{ role: 'user', content: 'Hello' }], adapter_version: 2, mode: 'vanilla' }, 'adapter_version'],
      ['/v1/completions', { user: 'jo', prompt: 'Hello', adapter_version: 2, mode: 'memory' }, 'adapter_version'],
      ['/v1/responses', { user: 'jo', input: 'Hello', adapter_version: 'two' }, 'adapter_version'],
    ] as const) {
      const err = await expectError(await post(path, ask), 422, 'validation_failed');
      expect(err.details.issues.map((i: { path: string }) => i.path), `${path} ${JSON.stringify(ask)}`).toContain(field);
    }
    expect(holdings('jo')).toEqual(before);
    expect((await generate('jo')).text).toBe('kkkk');
    expect((await (await post('/v1/generate', { ...body, adapterVersion: 2 })).json()) as { text: string }).toMatchObject({ text: 'llll' });
  });
});
