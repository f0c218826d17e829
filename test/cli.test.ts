import { describe, expect, it, vi } from 'vitest';
import { commands, main } from '../src/cli.js';

describe('memlora CLI dispatcher', () => {
  it('lists commands with unique names and dispatches by name', async () => {
    const names = commands.map((c) => c.name);
    expect(new Set(names).size).toBe(names.length);
    expect(names).toContain('serve');
    const out = vi.spyOn(process.stdout, 'write').mockImplementation(() => true);
    const err = vi.spyOn(process.stderr, 'write').mockImplementation(() => true);
    try {
      expect(await main(['--help'])).toBe(0);
      expect(String(out.mock.calls[0][0])).toMatch(/serve/);
      expect(await main(['serve', '--help'])).toBe(0);
      expect(await main([])).toBe(2);
      expect(await main(['nonsense'])).toBe(2);
      expect(err.mock.calls.some((c) => String(c[0]).includes('unknown command "nonsense"'))).toBe(true);
      expect(await main(['serve', 'extra'])).toBe(2);
    } finally {
      out.mockRestore();
      err.mockRestore();
    }
  });
});
