/**
 * MedDia (MaLP's MedicalDialogue release) as per-user data: cleaning, a reproducible grouping of the
 * 704 single-patient dialogues into users, the held-out test users, and the pretraining corpus.
 * docs/DATA.md describes the construction and prints its statistics (`formatMedDiaStats`).
 *
 * Files: `dialogues2_cleaned.json` and `dialogues_3_cleaned.json` hold dialogues of 6 rounds; in
 * round r the doctor's line ("Assistant") comes before the patient's ("User"), so the doctor in round
 * r + 1 answers the patient in round r. A conversation is therefore: the doctor's opening (round 0),
 * five (patient, doctor) pairs, and the patient's closing line (round 5). `profiles_4.json` holds
 * 3,283 patient profiles that belong to an unreleased dialogue file: none is linked to a dialogue.
 *
 * Cleaning of every utterance, in order: drop it if it contains "Error Networking" (generator
 * failure); repeatedly strip a leading `Patient:`/`Doctor:` prefix and stray quotes (a leading `"`,
 * and a trailing `"` when the quotes left are odd in number); drop it if the prefix named the other
 * side (a doctor line written as `Patient: ...` is the generator speaking for the wrong role); drop
 * it if nothing is left. A pair is kept only when both of its sides survive; a conversation only if it
 * keeps at least one pair.
 *
 * Users: the files carry no user ids, so a "user" is built as a patient with one consistent
 * condition across several consultations. Each conversation's patient text becomes a TF-IDF vector;
 * seeded spherical k-means (k-means++ start, best of several restarts by total cosine) groups them
 * into `numUsers` topics; clusters below `minDialogues` merge into the cluster with the nearest
 * centroid (one that stays within `maxDialogues` if any), clusters above `maxDialogues` are cut in
 * two by a 2-means split whose cut point is clamped so both halves keep `minDialogues`; then, while
 * there are fewer than `numUsers`, the largest cluster of at least 2 × `minDialogues` is cut the same
 * way (merging leaves fewer clusters than k-means made). Users are
 * numbered by their first conversation in file order; their conversations keep file order, which is
 * also the order of their timestamps. A seeded shuffle picks `numTestUsers` test users; nothing of
 * theirs is in the pretraining corpus.
 */
import { readFileSync } from 'node:fs';
import { isAbsolute, join, resolve } from 'node:path';
import { repoRoot } from '../config.js';
import { Rng } from '../util/rng.js';
import { renderChat, type ChatMessage, type ChatTemplateName } from '../model/chat-format.js';
import { buildDataset, type HistoryItem } from '../inject/dataset.js';
import { rougeTokenize } from './metrics.js';
import { STOP_WORDS } from './stopwords.js';

export interface MedTurn {
  patient: string;
  doctor: string;
}

export interface MedConversation {
  /** `d2-0007` (dialogues2_cleaned.json, index 7) or `d3-0123` (dialogues_3_cleaned.json). */
  id: string;
  /** The doctor's opening line, when it survived cleaning. */
  opening: string | null;
  /** (patient, doctor reply) pairs in order. */
  turns: MedTurn[];
  /** The patient's last line, which no doctor line answers. */
  closing: string | null;
}

export interface MedUser {
  id: string;
  conversations: MedConversation[];
}

export interface MedProfile {
  id: string;
  personalInformation: string;
  symptoms: string;
  dialoguePreference: string;
}

export interface PretrainDocument {
  id: string;
  kind: 'dialogue' | 'profile';
  text: string;
}

export interface LoadMedDiaOptions {
  /** Directory with the MedDia files. Default: `$MEMLORA_SHARED_DIR/data/meddia`, else `<repo>/../shared/data/meddia`. */
  dir?: string;
  seed?: number;
  numUsers?: number;
  minDialogues?: number;
  maxDialogues?: number;
  numTestUsers?: number;
}

export interface Summary {
  min: number;
  median: number;
  mean: number;
  max: number;
}

export interface MedDiaStats {
  seed: number;
  files: { dialogues2: number; dialogues3: number; profiles: number };
  profiles: { generatorFailures: number; readLeniently: number; empty: number; kept: number; distinct: number };
  cleaning: CleanCounts & { conversationsKept: number };
  users: { total: number; test: number; pretrain: number; testIds: string[] };
  dialoguesPerUser: Summary;
  pairsPerUser: Summary;
  wordsPerPatientTurn: number;
  wordsPerDoctorTurn: number;
  test: { dialogues: number; pairs: number; split: { train: number; val: number; test: number; droppedDuplicateTargets: number } };
  pretrain: { dialogues: number; pairs: number; profiles: number; documents: number; characters: number };
}

export interface MedDia {
  users: MedUser[];
  testUserIds: string[];
  pretrainUserIds: string[];
  profiles: MedProfile[];
  user(id: string): MedUser;
  /** Non-test users' conversations, then every profile as a system message, rendered as chat text. */
  pretrainDocuments(template?: ChatTemplateName): PretrainDocument[];
  pretrainTexts(template?: ChatTemplateName): string[];
  stats: MedDiaStats;
}

export class MedDiaError extends Error {
  constructor(
    readonly code: string,
    message: string,
    readonly value?: unknown,
  ) {
    super(message);
    this.name = 'MedDiaError';
  }
}

export const MEDDIA_FILES = {
  dialogues2: 'dialogues2_cleaned.json',
  dialogues3: 'dialogues_3_cleaned.json',
  profiles: 'profiles_4.json',
} as const;

const DEFAULTS = { seed: 1, numUsers: 64, minDialogues: 6, maxDialogues: 20, numTestUsers: 16 };

/** Where the MedDia files are: MEMLORA_SHARED_DIR/data/meddia, else ../shared/data/meddia from the repo root. */
export function medDiaDir(env: Record<string, string | undefined> = process.env): string {
  const shared = env.MEMLORA_SHARED_DIR;
  if (shared) return join(isAbsolute(shared) ? shared : resolve(process.cwd(), shared), 'data', 'meddia');
  return resolve(repoRoot, '..', 'shared', 'data', 'meddia');
}

// ---------------------------------------------------------------- cleaning

type Side = 'patient' | 'doctor';

export type CleanResult = { text: string; strippedPrefix: boolean; strippedQuotes: boolean } | { text: null; reason: 'error_networking' | 'wrong_role' | 'empty' };

const PREFIX = /^(patient|doctor)\s*:\s*/i;

/** Cleans one utterance of the given side (see the file comment for the rules). */
export function cleanUtterance(raw: string, side: Side): CleanResult {
  if (raw.includes('Error Networking')) return { text: null, reason: 'error_networking' };
  let t = raw.trim();
  let strippedPrefix = false;
  let strippedQuotes = false;
  for (let changed = true; changed; ) {
    changed = false;
    const m = PREFIX.exec(t);
    if (m) {
      if (m[1].toLowerCase() !== side) return { text: null, reason: 'wrong_role' };
      t = t.slice(m[0].length).trim();
      strippedPrefix = changed = true;
    }
    if (t.startsWith('"')) {
      t = t.slice(1).trim();
      strippedQuotes = changed = true;
    }
    if (t.endsWith('"') && (t.split('"').length - 1) % 2 === 1) {
      t = t.slice(0, -1).trim();
      strippedQuotes = changed = true;
    }
  }
  if (t.length === 0) return { text: null, reason: 'empty' };
  return { text: t, strippedPrefix, strippedQuotes };
}

type RawDialogue = Array<Record<string, { Assistant?: unknown; User?: unknown }>>;

interface CleanCounts {
  utterances: number;
  droppedErrorNetworking: number;
  droppedWrongRole: number;
  droppedEmpty: number;
  strippedPrefix: number;
  strippedQuotes: number;
  embeddedTranscripts: number;
  pairsKept: number;
  pairsDropped: number;
}

function cleanDialogue(raw: RawDialogue, id: string, counts: CleanCounts): MedConversation | null {
  const rounds = raw.map((r, i) => {
    const round = r[String(i)];
    if (!round || typeof round !== 'object') throw new MedDiaError('bad_meddia_file', `dialogue ${id} round ${i} is missing`, r);
    return round;
  });
  const clean = (value: unknown, side: Side): string | null => {
    if (typeof value !== 'string') return null;
    counts.utterances++;
    const c = cleanUtterance(value, side);
    if (c.text === null) {
      if (c.reason === 'error_networking') counts.droppedErrorNetworking++;
      else if (c.reason === 'wrong_role') counts.droppedWrongRole++;
      else counts.droppedEmpty++;
      return null;
    }
    if (c.strippedPrefix) counts.strippedPrefix++;
    if (c.strippedQuotes) counts.strippedQuotes++;
    if (/\n\s*(Doctor|Patient|Me|Assistant)\s*:/.test(c.text)) counts.embeddedTranscripts++;
    return c.text;
  };
  const doctor = rounds.map((r) => clean(r.Assistant, 'doctor'));
  const patient = rounds.map((r) => clean(r.User, 'patient'));
  const turns: MedTurn[] = [];
  for (let r = 0; r + 1 < rounds.length; r++) {
    const p = patient[r];
    const d = doctor[r + 1];
    if (p !== null && d !== null) {
      turns.push({ patient: p, doctor: d });
      counts.pairsKept++;
    } else counts.pairsDropped++;
  }
  if (turns.length === 0) return null;
  return { id, opening: doctor[0] ?? null, turns, closing: patient[rounds.length - 1] ?? null };
}

function readJsonArray(file: string): unknown[] {
  let data: unknown;
  try {
    data = JSON.parse(readFileSync(file, 'utf8'));
  } catch (err) {
    throw new MedDiaError('meddia_unreadable', `cannot read ${file}: ${(err as Error).message}`, file);
  }
  if (!Array.isArray(data)) throw new MedDiaError('bad_meddia_file', `${file} does not hold a JSON array`, file);
  return data;
}

const PROFILE_FIELDS = ['personal_information', 'symptoms', 'dialogue_preference'] as const;
type ProfileFields = Record<(typeof PROFILE_FIELDS)[number], string>;

/** A field value as text: nested objects and lists (the generator sometimes wrote them) flattened. */
function flatten(v: unknown): string {
  if (v === null || v === undefined) return '';
  if (typeof v === 'string') return v.trim();
  if (typeof v === 'number' || typeof v === 'boolean') return String(v);
  if (Array.isArray(v)) return v.map(flatten).filter(Boolean).join('; ');
  if (typeof v === 'object') {
    return Object.entries(v as Record<string, unknown>)
      .map(([k, x]) => [k.replace(/_/g, ' '), flatten(x)])
      .filter(([, x]) => x)
      .map(([k, x]) => `${k}: ${x}`)
      .join('; ');
  }
  return '';
}

const FIELD_PATTERN = /"(personal_information|symptoms|dialogue_preference)"\s*:\s*("(?:[^"\\]|\\.)*"|null|\{[^{}]*\}|\[[^\[\]]*\])/g;

/**
 * The three fields of one profile entry, or null for a generator failure (an API error message or
 * "Error Networking" in place of a profile). Entries that are not valid JSON (a trailing comma, a
 * sentence before or after the object) are read field by field; an entry with no field at all is
 * kept whole as its symptoms.
 */
export function parseProfileEntry(raw: unknown): { fields: ProfileFields; lenient: boolean } | null {
  const text = typeof raw === 'string' ? raw : JSON.stringify(raw ?? '');
  if (text.includes('Error Networking') || text.includes('服务器异常') || /^\s*\{\s*'code'\s*:/.test(text)) return null;
  const fields: ProfileFields = { personal_information: '', symptoms: '', dialogue_preference: '' };
  let parsed: unknown;
  try {
    parsed = typeof raw === 'string' ? JSON.parse(raw) : raw;
  } catch {
    parsed = undefined;
  }
  if (Array.isArray(parsed)) parsed = parsed.find((x) => x && typeof x === 'object');
  if (parsed && typeof parsed === 'object') {
    const o = parsed as Record<string, unknown>;
    for (const f of PROFILE_FIELDS) fields[f] = flatten(o[f]);
    return { fields, lenient: false };
  }
  let found = false;
  for (const m of text.matchAll(FIELD_PATTERN)) {
    try {
      fields[m[1] as keyof ProfileFields] = flatten(JSON.parse(m[2]));
      found = true;
    } catch {
      // A value the pattern cut badly: leave the field empty.
    }
  }
  if (!found) fields.symptoms = text.trim();
  return { fields, lenient: true };
}

/** A profile as the text of one system message. */
export function profileText(p: MedProfile): string {
  const lines: string[] = [];
  if (p.personalInformation) lines.push(`Personal information: ${p.personalInformation}`);
  if (p.symptoms) lines.push(`Symptoms: ${p.symptoms}`);
  if (p.dialoguePreference) lines.push(`Dialogue preference: ${p.dialoguePreference}`);
  return lines.join('\n');
}

// ---------------------------------------------------------------- TF-IDF and clustering

interface SparseVec {
  idx: Int32Array;
  val: Float64Array;
}

/**
 * TF-IDF of each document: tokens as ROUGE tokenises, minus stop words, at least 3 characters with a
 * letter; terms in at least 2 and at most half of the documents; tf = 1 + ln(count),
 * idf = ln(N / df); each vector L2-normalised.
 */
export function tfidfVectors(docs: readonly string[]): { vectors: SparseVec[]; terms: string[] } {
  const tokenised = docs.map((d) => rougeTokenize(d).filter((t) => t.length >= 3 && /[a-z]/.test(t) && !STOP_WORDS.has(t)));
  const df = new Map<string, number>();
  for (const toks of tokenised) for (const t of new Set(toks)) df.set(t, (df.get(t) ?? 0) + 1);
  const n = docs.length;
  const terms = [...df]
    .filter(([, c]) => c >= 2 && c <= n / 2)
    .map(([t]) => t)
    .sort();
  const termIndex = new Map(terms.map((t, i) => [t, i]));
  const vectors = tokenised.map((toks) => {
    const tf = new Map<number, number>();
    for (const t of toks) {
      const i = termIndex.get(t);
      if (i !== undefined) tf.set(i, (tf.get(i) ?? 0) + 1);
    }
    const entries = [...tf].sort((a, b) => a[0] - b[0]);
    const val = new Float64Array(entries.map(([i, c]) => (1 + Math.log(c)) * Math.log(n / df.get(terms[i])!)));
    const norm = Math.hypot(...val) || 1;
    for (let k = 0; k < val.length; k++) val[k] /= norm;
    return { idx: new Int32Array(entries.map(([i]) => i)), val };
  });
  return { vectors, terms };
}

function dot(v: SparseVec, c: Float64Array): number {
  let s = 0;
  for (let k = 0; k < v.idx.length; k++) s += v.val[k] * c[v.idx[k]];
  return s;
}

function centroid(vectors: readonly SparseVec[], members: readonly number[], dim: number): Float64Array {
  const c = new Float64Array(dim);
  for (const m of members) {
    const v = vectors[m];
    for (let k = 0; k < v.idx.length; k++) c[v.idx[k]] += v.val[k];
  }
  let norm = 0;
  for (let i = 0; i < dim; i++) norm += c[i] * c[i];
  norm = Math.sqrt(norm) || 1;
  for (let i = 0; i < dim; i++) c[i] /= norm;
  return c;
}

function denseOf(v: SparseVec, dim: number): Float64Array {
  const c = new Float64Array(dim);
  for (let k = 0; k < v.idx.length; k++) c[v.idx[k]] = v.val[k];
  return c;
}

function cosDense(a: Float64Array, b: Float64Array): number {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += a[i] * b[i];
  return s;
}

/** Spherical k-means on unit vectors; returns member lists (some may be empty) and total cosine. */
export function sphericalKMeans(vectors: readonly SparseVec[], dim: number, k: number, rng: Rng, maxIter = 100): { clusters: number[][]; objective: number } {
  const n = vectors.length;
  // k-means++: the next centre is drawn with probability proportional to 1 - best cosine so far.
  const centres: Float64Array[] = [denseOf(vectors[rng.int(n)], dim)];
  const best = vectors.map((v) => dot(v, centres[0]));
  while (centres.length < Math.min(k, n)) {
    const weights = best.map((b) => Math.max(0, 1 - b));
    const total = weights.reduce((a, b) => a + b, 0);
    let pick = 0;
    if (total > 0) {
      let u = rng.next() * total;
      while (pick < n - 1 && u >= weights[pick]) u -= weights[pick++];
    } else pick = rng.int(n);
    const c = denseOf(vectors[pick], dim);
    centres.push(c);
    for (let i = 0; i < n; i++) best[i] = Math.max(best[i], dot(vectors[i], c));
  }
  const assign = new Int32Array(n).fill(-1);
  for (let iter = 0; iter < maxIter; iter++) {
    let changed = 0;
    for (let i = 0; i < n; i++) {
      let arg = 0;
      let bestCos = -Infinity;
      for (let c = 0; c < centres.length; c++) {
        const s = dot(vectors[i], centres[c]);
        if (s > bestCos) {
          bestCos = s;
          arg = c;
        }
      }
      if (assign[i] !== arg) {
        assign[i] = arg;
        changed++;
      }
    }
    const clusters = centres.map(() => [] as number[]);
    for (let i = 0; i < n; i++) clusters[assign[i]].push(i);
    for (let c = 0; c < centres.length; c++) if (clusters[c].length > 0) centres[c] = centroid(vectors, clusters[c], dim);
    if (changed === 0) break;
  }
  const clusters = centres.map(() => [] as number[]);
  let objective = 0;
  for (let i = 0; i < n; i++) {
    clusters[assign[i]].push(i);
    objective += dot(vectors[i], centres[assign[i]]);
  }
  return { clusters, objective };
}

/** Cuts one cluster in two by 2-means, each half keeping at least `minSize` members. */
function bisect(vectors: readonly SparseVec[], dim: number, members: number[], minSize: number): [number[], number[]] {
  const whole = centroid(vectors, members, dim);
  const farthestFrom = (c: Float64Array) => members.reduce((a, m) => (dot(vectors[m], c) < dot(vectors[a], c) ? m : a), members[0]);
  let c1 = denseOf(vectors[farthestFrom(whole)], dim);
  let c2 = denseOf(vectors[farthestFrom(c1)], dim);
  let margin: { m: number; d: number }[] = [];
  for (let iter = 0; iter < 20; iter++) {
    margin = members.map((m) => ({ m, d: dot(vectors[m], c1) - dot(vectors[m], c2) }));
    const a = margin.filter((x) => x.d >= 0).map((x) => x.m);
    const b = margin.filter((x) => x.d < 0).map((x) => x.m);
    if (a.length === 0 || b.length === 0) break;
    c1 = centroid(vectors, a, dim);
    c2 = centroid(vectors, b, dim);
  }
  margin.sort((x, y) => y.d - x.d || x.m - y.m);
  const natural = margin.filter((x) => x.d >= 0).length;
  const cut = Math.min(Math.max(natural, minSize), members.length - minSize);
  const part = (xs: { m: number }[]) => xs.map((x) => x.m).sort((p, q) => p - q);
  return [part(margin.slice(0, cut)), part(margin.slice(cut))];
}

/**
 * Merges undersized clusters into their nearest, bisects oversized ones, then bisects the largest
 * while there are fewer than `target` clusters and one can be halved (see file comment).
 */
export function balanceClusters(vectors: readonly SparseVec[], dim: number, input: number[][], minSize: number, maxSize: number, target = 0): number[][] {
  let clusters = input.filter((c) => c.length > 0).map((c) => [...c].sort((a, b) => a - b));
  for (;;) {
    let small = -1;
    for (let i = 0; i < clusters.length; i++) {
      if (clusters[i].length < minSize && (small < 0 || clusters[i].length < clusters[small].length)) small = i;
    }
    if (small < 0 || clusters.length < 2) break;
    const cs = clusters.map((c) => centroid(vectors, c, dim));
    let target = -1;
    let targetFits = false;
    let targetCos = -Infinity;
    for (let j = 0; j < clusters.length; j++) {
      if (j === small) continue;
      const fits = clusters[j].length + clusters[small].length <= maxSize;
      const s = cosDense(cs[small], cs[j]);
      if ((fits && !targetFits) || (fits === targetFits && s > targetCos)) {
        target = j;
        targetFits = fits;
        targetCos = s;
      }
    }
    clusters[target] = [...clusters[target], ...clusters[small]].sort((a, b) => a - b);
    clusters = clusters.filter((_, i) => i !== small);
  }
  for (;;) {
    let big = -1;
    for (let i = 0; i < clusters.length; i++) {
      if (clusters[i].length > maxSize && (big < 0 || clusters[i].length > clusters[big].length)) big = i;
    }
    if (big < 0) break;
    const [a, b] = bisect(vectors, dim, clusters[big], minSize);
    clusters = [...clusters.slice(0, big), a, b, ...clusters.slice(big + 1)];
  }
  while (clusters.length < target) {
    let big = -1;
    for (let i = 0; i < clusters.length; i++) {
      if (clusters[i].length >= 2 * minSize && (big < 0 || clusters[i].length > clusters[big].length)) big = i;
    }
    if (big < 0) break;
    const [a, b] = bisect(vectors, dim, clusters[big], minSize);
    clusters = [...clusters.slice(0, big), a, b, ...clusters.slice(big + 1)];
  }
  return clusters;
}

// ---------------------------------------------------------------- loading

function summary(xs: number[]): Summary {
  const s = [...xs].sort((a, b) => a - b);
  const mid = s.length === 0 ? 0 : s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
  return { min: s[0] ?? 0, median: mid, mean: s.length ? s.reduce((a, b) => a + b, 0) / s.length : 0, max: s[s.length - 1] ?? 0 };
}

const words = (t: string) => t.split(/\s+/).filter((w) => w.length > 0).length;

/** The conversation as chat messages: doctor = assistant, patient = user. */
export function conversationMessages(c: MedConversation): ChatMessage[] {
  const out: ChatMessage[] = [];
  if (c.opening) out.push({ role: 'assistant', content: c.opening });
  for (const t of c.turns) out.push({ role: 'user', content: t.patient }, { role: 'assistant', content: t.doctor });
  if (c.closing) out.push({ role: 'user', content: c.closing });
  return out;
}

const HISTORY_EPOCH = Date.UTC(2024, 0, 1);
const DAY = 86_400_000;
const MINUTE = 60_000;

/**
 * A user's conversations as history items: patient lines role 'user', doctor lines role 'assistant',
 * ids 1.. in order, conversation j at 2024-01-01 + j days, one minute per message.
 */
export function toHistoryItems(user: MedUser): HistoryItem[] {
  const items: HistoryItem[] = [];
  user.conversations.forEach((c, j) => {
    conversationMessages(c).forEach((m, k) => {
      items.push({
        id: items.length + 1,
        kind: 'dialogue',
        role: m.role,
        text: m.content,
        conversationId: c.id,
        createdAt: HISTORY_EPOCH + j * DAY + k * MINUTE,
      });
    });
  });
  return items;
}

/** Loads, cleans and groups MedDia; the result depends only on the files and the options. */
export function loadMedDia(opts: LoadMedDiaOptions = {}): MedDia {
  const o = { ...DEFAULTS, ...Object.fromEntries(Object.entries(opts).filter(([, v]) => v !== undefined)) } as typeof DEFAULTS & { dir?: string };
  const dir = o.dir ?? medDiaDir();
  if (o.minDialogues < 1 || o.maxDialogues + 1 < 2 * o.minDialogues) {
    throw new MedDiaError('bad_options', 'need minDialogues >= 1 and maxDialogues >= 2 * minDialogues - 1 (so an oversized group can be halved)', o);
  }
  const counts: CleanCounts = {
    utterances: 0,
    droppedErrorNetworking: 0,
    droppedWrongRole: 0,
    droppedEmpty: 0,
    strippedPrefix: 0,
    strippedQuotes: 0,
    embeddedTranscripts: 0,
    pairsKept: 0,
    pairsDropped: 0,
  };
  const raw2 = readJsonArray(join(dir, MEDDIA_FILES.dialogues2)) as RawDialogue[];
  const raw3 = readJsonArray(join(dir, MEDDIA_FILES.dialogues3)) as RawDialogue[];
  const conversations: MedConversation[] = [];
  for (const [prefix, raws] of [['d2', raw2], ['d3', raw3]] as const) {
    raws.forEach((d, i) => {
      if (!Array.isArray(d)) throw new MedDiaError('bad_meddia_file', `dialogue ${prefix}-${i} is not a list of rounds`, d);
      const c = cleanDialogue(d, `${prefix}-${String(i).padStart(4, '0')}`, counts);
      if (c) conversations.push(c);
    });
  }
  const profilesRaw = readJsonArray(join(dir, MEDDIA_FILES.profiles));
  const profiles: MedProfile[] = [];
  const profileCounts = { read: profilesRaw.length, generatorFailures: 0, readLeniently: 0, empty: 0 };
  profilesRaw.forEach((raw, i) => {
    const entry = parseProfileEntry(raw);
    if (!entry) {
      profileCounts.generatorFailures++;
      return;
    }
    const p: MedProfile = {
      id: `p-${String(i).padStart(4, '0')}`,
      personalInformation: entry.fields.personal_information,
      symptoms: entry.fields.symptoms,
      dialoguePreference: entry.fields.dialogue_preference,
    };
    if (!profileText(p)) {
      profileCounts.empty++;
      return;
    }
    if (entry.lenient) profileCounts.readLeniently++;
    profiles.push(p);
  });

  // Group conversations into users by topic.
  const patientText = conversations.map((c) => [...c.turns.map((t) => t.patient), c.closing ?? ''].join('\n'));
  const { vectors, terms } = tfidfVectors(patientText);
  const rng = new Rng(o.seed);
  let best: { clusters: number[][]; objective: number } | null = null;
  for (let restart = 0; restart < 8; restart++) {
    const run = sphericalKMeans(vectors, terms.length, o.numUsers, rng.fork());
    if (!best || run.objective > best.objective) best = run;
  }
  const clusters = balanceClusters(vectors, terms.length, best!.clusters, o.minDialogues, o.maxDialogues, o.numUsers).sort((a, b) => a[0] - b[0]);
  const width = Math.max(2, String(clusters.length - 1).length);
  const users: MedUser[] = clusters.map((members, i) => ({
    id: `meddia-u${String(i).padStart(width, '0')}`,
    conversations: members.map((m) => conversations[m]),
  }));

  const ids = users.map((u) => u.id);
  if (o.numTestUsers < 0 || o.numTestUsers >= ids.length) {
    throw new MedDiaError('bad_options', `numTestUsers must be in [0, ${ids.length - 1}] for ${ids.length} users`, o.numTestUsers);
  }
  const shuffled = new Rng(o.seed ^ 0x7e57).shuffle([...ids]);
  const testSet = new Set(shuffled.slice(0, o.numTestUsers));
  const testUserIds = ids.filter((id) => testSet.has(id));
  const pretrainUserIds = ids.filter((id) => !testSet.has(id));
  const byId = new Map(users.map((u) => [u.id, u]));

  const pretrainDocuments = (template: ChatTemplateName = 'memlora'): PretrainDocument[] => {
    const docs: PretrainDocument[] = [];
    for (const id of pretrainUserIds) {
      for (const c of byId.get(id)!.conversations) {
        docs.push({ id: c.id, kind: 'dialogue', text: renderChat(conversationMessages(c), { addGenerationPrompt: false, template }) });
      }
    }
    for (const p of profiles) {
      docs.push({ id: p.id, kind: 'profile', text: renderChat([{ role: 'system', content: profileText(p) }], { addGenerationPrompt: false, template }) });
    }
    return docs;
  };

  const pairsOf = (u: MedUser) => u.conversations.reduce((s, c) => s + c.turns.length, 0);
  const allTurns = conversations.flatMap((c) => c.turns);
  const testUsers = testUserIds.map((id) => byId.get(id)!);
  const split = { train: 0, val: 0, test: 0, droppedDuplicateTargets: 0 };
  for (const u of testUsers) {
    const s = buildDataset(toHistoryItems(u));
    split.train += s.train.length;
    split.val += s.val.length;
    split.test += s.test.length;
    split.droppedDuplicateTargets += s.droppedDuplicateTargets;
  }
  const pretrainUsers = pretrainUserIds.map((id) => byId.get(id)!);
  const docs = pretrainDocuments();
  const stats: MedDiaStats = {
    seed: o.seed,
    files: { dialogues2: raw2.length, dialogues3: raw3.length, profiles: profileCounts.read },
    profiles: {
      generatorFailures: profileCounts.generatorFailures,
      readLeniently: profileCounts.readLeniently,
      empty: profileCounts.empty,
      kept: profiles.length,
      distinct: new Set(profiles.map(profileText)).size,
    },
    cleaning: { ...counts, conversationsKept: conversations.length },
    users: { total: users.length, test: testUserIds.length, pretrain: pretrainUserIds.length, testIds: testUserIds },
    dialoguesPerUser: summary(users.map((u) => u.conversations.length)),
    pairsPerUser: summary(users.map(pairsOf)),
    wordsPerPatientTurn: allTurns.reduce((s, t) => s + words(t.patient), 0) / Math.max(1, allTurns.length),
    wordsPerDoctorTurn: allTurns.reduce((s, t) => s + words(t.doctor), 0) / Math.max(1, allTurns.length),
    test: { dialogues: testUsers.reduce((s, u) => s + u.conversations.length, 0), pairs: testUsers.reduce((s, u) => s + pairsOf(u), 0), split },
    pretrain: {
      dialogues: pretrainUsers.reduce((s, u) => s + u.conversations.length, 0),
      pairs: pretrainUsers.reduce((s, u) => s + pairsOf(u), 0),
      profiles: docs.filter((d) => d.kind === 'profile').length,
      documents: docs.length,
      characters: docs.reduce((s, d) => s + d.text.length, 0),
    },
  };

  return {
    users,
    testUserIds,
    pretrainUserIds,
    profiles,
    user(id: string): MedUser {
      const u = byId.get(id);
      if (!u) throw new MedDiaError('unknown_user', `no MedDia user "${id}"`, id);
      return u;
    },
    pretrainDocuments,
    pretrainTexts: (template?: ChatTemplateName) => pretrainDocuments(template).map((d) => d.text),
    stats,
  };
}

const fmt = (x: number, digits = 1) => (Number.isInteger(x) ? String(x) : x.toFixed(digits));
const fmtSummary = (s: Summary) => `${fmt(s.min)} / ${fmt(s.median)} / ${fmt(s.mean)} / ${fmt(s.max)}`;

/** The statistics as the Markdown table docs/DATA.md carries (a test keeps the two equal). */
export function formatMedDiaStats(s: MedDiaStats): string {
  const c = s.cleaning;
  const rows: [string, string][] = [
    ['seed', String(s.seed)],
    ['dialogues in the files (dialogues2 + dialogues_3)', `${s.files.dialogues2} + ${s.files.dialogues3} = ${s.files.dialogues2 + s.files.dialogues3}`],
    ['utterances read', String(c.utterances)],
    ['dropped: "Error Networking"', String(c.droppedErrorNetworking)],
    ['dropped: prefix names the other side', String(c.droppedWrongRole)],
    ['dropped: empty after cleaning', String(c.droppedEmpty)],
    ['`Patient:`/`Doctor:` prefix stripped', String(c.strippedPrefix)],
    ['stray quotes stripped', String(c.strippedQuotes)],
    ['kept utterances that embed a whole transcript (`\\nDoctor:` etc.)', String(c.embeddedTranscripts)],
    ['(patient, doctor) pairs kept / dropped', `${c.pairsKept} / ${c.pairsDropped}`],
    ['conversations kept', String(c.conversationsKept)],
    ['users (test + pretrain)', `${s.users.total} (${s.users.test} + ${s.users.pretrain})`],
    ['test users', s.users.testIds.join(', ')],
    ['dialogues per user (min / median / mean / max)', fmtSummary(s.dialoguesPerUser)],
    ['pairs per user (min / median / mean / max)', fmtSummary(s.pairsPerUser)],
    ['words per patient turn (mean, kept pairs)', fmt(s.wordsPerPatientTurn)],
    ['words per doctor turn (mean, kept pairs)', fmt(s.wordsPerDoctorTurn)],
    ['test users: dialogues / pairs', `${s.test.dialogues} / ${s.test.pairs}`],
    [
      'test users: train / val / test pairs (split seed 0; duplicate targets dropped)',
      `${s.test.split.train} / ${s.test.split.val} / ${s.test.split.test} (${s.test.split.droppedDuplicateTargets})`,
    ],
    ['pretraining: dialogues / pairs of non-test users', `${s.pretrain.dialogues} / ${s.pretrain.pairs}`],
    ['profiles in the file', String(s.files.profiles)],
    ['profiles dropped: generator failure (API error, "Error Networking")', String(s.profiles.generatorFailures)],
    ['profiles dropped: no text', String(s.profiles.empty)],
    ['profiles kept (read field by field, not valid JSON) / distinct texts', `${s.profiles.kept} (${s.profiles.readLeniently}) / ${s.profiles.distinct}`],
    ['pretraining: documents (dialogues + profiles) / characters, memlora template', `${s.pretrain.documents} / ${s.pretrain.characters}`],
  ];
  return ['| quantity | value |', '| --- | --- |', ...rows.map(([k, v]) => `| ${k} | ${v} |`)].join('\n');
}
