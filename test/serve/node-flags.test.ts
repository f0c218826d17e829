import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { repoRoot } from '../../src/config.js';
import { SERVE_NODE_FLAGS, missingServeNodeFlags } from '../../src/serve/node-flags.js';

describe('serving node flags', () => {
  it('npm start passes every serving flag to node, before the entry script', () => {
    const start = (JSON.parse(readFileSync(join(repoRoot, 'package.json'), 'utf8')) as { scripts: Record<string, string> }).scripts.start;
    const node = start.slice(start.indexOf('node '));
    const entry = node.indexOf('dist/cli.js serve');
    expect(entry).toBeGreaterThan(0);
    expect(SERVE_NODE_FLAGS.length).toBeGreaterThan(0);
    for (const f of SERVE_NODE_FLAGS) {
      const at = node.indexOf(` ${f} `);
      expect(at, `${f} in "${start}"`).toBeGreaterThan(0);
      expect(at).toBeLessThan(entry);
    }
  });

  it('finds the flags missing from an argv by name, whatever their value', () => {
    const names = SERVE_NODE_FLAGS.map((f) => f.split('=')[0]);
    expect(missingServeNodeFlags([])).toEqual([...SERVE_NODE_FLAGS]);
    expect(missingServeNodeFlags(['--import', 'tsx'])).toEqual([...SERVE_NODE_FLAGS]);
    expect(missingServeNodeFlags([...SERVE_NODE_FLAGS])).toEqual([]);
    expect(missingServeNodeFlags(names.map((n) => `${n}=512`))).toEqual([]);
  });

  it('`memlora serve` started without them says so in a warning log line', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'memlora-flags-'));
    const proc = spawn(process.execPath, ['--import', 'tsx', join(repoRoot, 'src', 'cli.ts'), 'serve'], {
      cwd: repoRoot,
      env: { ...process.env, MEMLORA_PORT: '0', MEMLORA_HOST: '127.0.0.1', MEMLORA_DATA_DIR: join(dir, 'data'), MEMLORA_ADAPTER_DIR: join(dir, 'adapters'), MEMLORA_ADMIN_TOKEN: 'flags-test-admin-token-0123456789' },
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    try {
      const warning = await new Promise<Record<string, unknown>>((resolve, reject) => {
        let buf = '';
        proc.stderr!.on('data', (d: Buffer) => {
          buf += d.toString('utf8');
          for (const line of buf.split('\n').slice(0, -1)) {
            let rec: Record<string, unknown>;
            try {
              rec = JSON.parse(line) as Record<string, unknown>;
            } catch {
              continue; // not a log line
            }
            if (rec.level === 'warn') resolve(rec);
            if (rec.msg === 'memlora listening') reject(new Error('listening without a warning'));
          }
          buf = buf.slice(buf.lastIndexOf('\n') + 1);
        });
        proc.once('exit', (code) => reject(new Error(`serve exited (${code}) without a warning`)));
      });
      expect(warning.msg).toMatch(/serving flags/);
      expect(warning.missing).toEqual([...SERVE_NODE_FLAGS]);
    } finally {
      proc.kill('SIGKILL');
      rmSync(dir, { recursive: true, force: true });
    }
  }, 30_000);
});
