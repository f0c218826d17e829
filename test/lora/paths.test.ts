import { join, relative, sep } from 'node:path';
import { describe, expect, it } from 'vitest';
import { userAdapterDir, userDirName } from '../../src/lora/paths.js';

describe('userDirName', () => {
  it('is the first 32 hex chars of SHA-256 of the id', () => {
    // Published SHA-256 test vector for "abc" (FIPS 180-2).
    expect(userDirName('abc')).toBe('ba7816bf8f01cfea414140de5dae2223');
  });

  it('keeps every id, however hostile, one level below the root', () => {
    const root = '/srv/adapters';
    for (const id of ['..', '../../etc', '/', 'a/b', 'a\\b', '\u0000', 'CON', '', '.'.repeat(300), 'é', 'E\u0301']) {
      const dir = userAdapterDir(root, id);
      const rel = relative(root, dir);
      expect(rel).toMatch(/^[0-9a-f]{32}$/);
      expect(rel.includes(sep)).toBe(false);
      expect(dir).toBe(join(root, rel));
    }
  });

  it('does not merge ids that differ only by case or normalisation', () => {
    expect(userDirName('Alice')).not.toBe(userDirName('alice'));
    expect(userDirName('é')).not.toBe(userDirName('e\u0301'));
  });
});
