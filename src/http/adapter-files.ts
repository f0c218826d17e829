/** The default AdapterFiles: deletes the user's directory under the adapter root. */
import { rm } from 'node:fs/promises';
import { userAdapterDir } from '../lora/paths.js';
import { tally } from '../lora/store.js';
import type { AdapterFiles } from './services.js';

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
