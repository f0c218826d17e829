import { describe, expect, it } from 'vitest';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import {
  cleanUtterance,
  formatMedDiaStats,
  loadMedDia,
  medDiaDir,
  MedDiaError,
  parseProfileEntry,
  toHistoryItems,
} from '../../src/eval/meddia.js';
import { buildPairs } from '../../src/inject/dataset.js';
import { repoRoot } from '../../src/config.js';

describe('cleanUtterance', () => {
  it('strips role prefixes and stray quotes, repeatedly', () => {
    expect(cleanUtterance('Doctor: Hello, how can I help you today?', 'doctor')).toMatchObject({ text: 'Hello, how can I help you today?', strippedPrefix: true });
    expect(cleanUtterance('"I am an ulcer patient."', 'patient')).toMatchObject({ text: 'I am an ulcer patient.', strippedQuotes: true });
    expect(cleanUtterance('Patient: "I took Simvastatin."', 'patient')).toMatchObject({ text: 'I took Simvastatin.', strippedPrefix: true, strippedQuotes: true });
    expect(cleanUtterance('  Thanks, bye."', 'patient')).toMatchObject({ text: 'Thanks, bye.' });
    // Balanced inner quotes stay.
    expect(cleanUtterance('He said "rest" and left', 'patient')).toMatchObject({ text: 'He said "rest" and left', strippedQuotes: false });
    expect(cleanUtterance('"He said "rest""', 'patient')).toMatchObject({ text: 'He said "rest"' });
  });

  it('drops generator failures, role swaps and empty lines', () => {
    expect(cleanUtterance('Error Networking, check your network', 'patient')).toEqual({ text: null, reason: 'error_networking' });
    expect(cleanUtterance('Patient: Thank you, doctor.', 'doctor')).toEqual({ text: null, reason: 'wrong_role' });
    expect(cleanUtterance('Doctor: You are welcome.', 'patient')).toEqual({ text: null, reason: 'wrong_role' });
    expect(cleanUtterance('  ""  ', 'patient')).toEqual({ text: null, reason: 'empty' });
    expect(cleanUtterance('Doctor:', 'doctor')).toEqual({ text: null, reason: 'empty' });
  });
});

describe('parseProfileEntry', () => {
  it('reads the three fields, flattening nested values', () => {
    const raw = JSON.stringify({ personal_information: 'Female, 30.', symptoms: { pain: 'lower back', since: ['May', 'June'] }, dialogue_preference: 'prefer polite response' });
    expect(parseProfileEntry(raw)).toEqual({
      fields: { personal_information: 'Female, 30.', symptoms: 'pain: lower back; since: May; June', dialogue_preference: 'prefer polite response' },
      lenient: false,
    });
  });

  it('reads invalid JSON field by field, and keeps field-less text whole', () => {
    const trailingComma = '{\n "personal_information": "Male, 34.",\n "symptoms": "Panic attack.",\n}';
    expect(parseProfileEntry(trailingComma)).toEqual({
      fields: { personal_information: 'Male, 34.', symptoms: 'Panic attack.', dialogue_preference: '' },
      lenient: true,
    });
    expect(parseProfileEntry('Headaches for a week.')).toEqual({
      fields: { personal_information: '', symptoms: 'Headaches for a week.', dialogue_preference: '' },
      lenient: true,
    });
  });

  it('drops generator failures', () => {
    expect(parseProfileEntry('Error Networking, check your network')).toBeNull();
    expect(parseProfileEntry(`{'code': 500, 'message': "服务器异常: ..."}`)).toBeNull();
  });
});

describe('medDiaDir', () => {
  it('defaults to ../shared/data/meddia from the repository root, MEMLORA_SHARED_DIR overrides', () => {
    expect(medDiaDir({})).toBe(resolve(repoRoot, '..', 'shared', 'data', 'meddia'));
    expect(medDiaDir({ MEMLORA_SHARED_DIR: '/data/shared' })).toBe('/data/shared/data/meddia');
  });
});

describe('loadMedDia on the shared files', () => {
  const a = loadMedDia();

  it('is deterministic under its seed', () => {
    const b = loadMedDia();
    expect(b.users).toEqual(a.users);
    expect(b.testUserIds).toEqual(a.testUserIds);
    expect(b.stats).toEqual(a.stats);
  });

  it('builds 64 users of 6-20 dialogues, each dialogue in exactly one user', () => {
    expect(a.users).toHaveLength(64);
    const seen = new Set<string>();
    for (const u of a.users) {
      expect(u.conversations.length).toBeGreaterThanOrEqual(6);
      expect(u.conversations.length).toBeLessThanOrEqual(20);
      for (const c of u.conversations) {
        expect(seen.has(c.id)).toBe(false);
        seen.add(c.id);
        expect(c.turns.length).toBeGreaterThan(0);
      }
    }
    expect(seen.size).toBe(a.stats.cleaning.conversationsKept);
    expect(a.stats.files.dialogues2 + a.stats.files.dialogues3).toBe(704);
  });

  it('leaves no trace of the generator in kept text', () => {
    for (const u of a.users) {
      for (const c of u.conversations) {
        for (const t of c.turns) {
          for (const s of [t.patient, t.doctor]) {
            expect(s).not.toMatch(/Error Networking|^(Patient|Doctor)\s*:|^"/i);
            expect(s.trim()).toBe(s);
          }
        }
      }
    }
  });

  it('keeps test users and pretraining users disjoint, with nothing of a test user in the pretraining corpus', () => {
    expect(a.testUserIds).toHaveLength(16);
    const test = new Set(a.testUserIds);
    for (const id of a.pretrainUserIds) expect(test.has(id)).toBe(false);
    expect([...a.testUserIds, ...a.pretrainUserIds].sort()).toEqual(a.users.map((u) => u.id).sort());

    const docs = a.pretrainDocuments();
    const testConversations = new Set(a.testUserIds.flatMap((id) => a.user(id).conversations.map((c) => c.id)));
    for (const d of docs) expect(testConversations.has(d.id)).toBe(false);
    // No long doctor reply of a test user appears anywhere in the corpus.
    const corpus = a.pretrainTexts().join('\n');
    for (const id of a.testUserIds) {
      for (const c of a.user(id).conversations) for (const t of c.turns) if (t.doctor.length > 200) expect(corpus.includes(t.doctor)).toBe(false);
    }
    expect(docs.filter((d) => d.kind === 'profile')).toHaveLength(a.profiles.length);
    expect(docs.find((d) => d.kind === 'profile')!.text).toMatch(/^<\|system\|>[\s\S]*<\|end\|>$/);
    expect(docs.find((d) => d.kind === 'dialogue')!.text).toMatch(/^<\|assistant\|>.*<\|end\|><\|user\|>/s);
  });

  it('chooses other test users under another seed', () => {
    const c = loadMedDia({ seed: 2 });
    expect(c.testUserIds).not.toEqual(a.testUserIds);
    for (const id of c.pretrainUserIds) expect(c.testUserIds).not.toContain(id);
  });

  it('maps a user to history items whose pairs are its (patient, doctor) turns', () => {
    const u = a.user(a.testUserIds[0]);
    const items = toHistoryItems(u);
    items.forEach((it, i) => {
      expect(it.id).toBe(i + 1);
      expect(it.kind).toBe('dialogue');
      expect(['user', 'assistant']).toContain(it.role);
      if (i > 0) expect(it.createdAt).toBeGreaterThan(items[i - 1].createdAt);
    });
    const pairs = buildPairs(items);
    expect(pairs.map((p) => p.target)).toEqual(u.conversations.flatMap((c) => c.turns.map((t) => t.doctor)));
    expect(pairs.every((p) => p.context.at(-1)?.role === 'user')).toBe(true);
    expect(() => a.user('nobody')).toThrow(MedDiaError);
  });

  it('matches the statistics printed in docs/DATA.md', () => {
    const doc = readFileSync(join(repoRoot, 'docs', 'DATA.md'), 'utf8');
    const block = /<!-- meddia-stats:begin -->\n([\s\S]*?)\n<!-- meddia-stats:end -->/.exec(doc);
    expect(block).not.toBeNull();
    expect(block![1]).toBe(formatMedDiaStats(a.stats));
  });
});

describe('loadMedDia failures', () => {
  it('names the unreadable file', () => {
    const dir = mkdtempSync(join(tmpdir(), 'memlora-meddia-'));
    try {
      expect(() => loadMedDia({ dir })).toThrow(expect.objectContaining({ code: 'meddia_unreadable' }));
      writeFileSync(join(dir, 'dialogues2_cleaned.json'), '{"not": "a list"}');
      expect(() => loadMedDia({ dir })).toThrow(expect.objectContaining({ code: 'bad_meddia_file' }));
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('rejects sizes that cannot be balanced', () => {
    expect(() => loadMedDia({ minDialogues: 6, maxDialogues: 8 })).toThrow(expect.objectContaining({ code: 'bad_options' }));
  });
});
