/** The default AdapterFiles: deletes the user's directory under the adapter root. */
import { lstat, readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { userAdapterDir } from '../lora/paths.js';
import type { AdapterFiles } from './services.js';

/** Counts regular files and their bytes below dir without following symlinks (a link counts as one file). */
async function tally(dir: string): Promise<{ files: number; bytes: number }> {
  let files = 0;
  let bytes = 0;
  const stack = [dir];
  while (stack.length > 0) {
    const d = stack.pop()!;
    for (const entry of await readdir(d, { withFileTypes: true })) {
      const p = join(d, entry.name);
      if (entry.isDirectory()) stack.push(p);
      else {
        files += 1;
        if (entry.isFile()) bytes += (await lstat(p)).size;
      }
    }
  }
  return { files, bytes };
}

export function diskAdapterFiles(adapterRoot: string): AdapterFiles {
  return {
    async removeUserAdapters(userId: string) {
      const dir = userAdapterDir(adapterRoot, userId);
      let counts: { files: number; bytes: number };
      try {
        counts = await tally(dir);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { files: 0, bytes: 0 };
        throw err;
      }
      await rm(dir, { recursive: true, force: true });
      return counts;
    },
  };
}
