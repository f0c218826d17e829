/** The default AdapterFiles (no base model configured): deletes files under the adapter root. */
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { userAdapterDir, userDirName } from '../lora/paths.js';
import { isAdapterPath, tally } from '../lora/store.js';
import type { AdapterFiles } from './services.js';

/** Delete a directory tree; returns what it held (nothing when it does not exist). */
async function removeTree(dir: string): Promise<{ files: number; bytes: number }> {
  let counts: { files: number; bytes: number };
  try {
    counts = await tally(dir);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { files: 0, bytes: 0 };
    throw err;
  }
  await rm(dir, { recursive: true, force: true });
  return counts;
}

export function diskAdapterFiles(adapterRoot: string): AdapterFiles {
  return {
    removeUserAdapters: (userId) => removeTree(userAdapterDir(adapterRoot, userId)),
    async removeVersion(row) {
      // Only a path the store produced, in this user's directory.
      if (!isAdapterPath(row.filePath) || !row.filePath.startsWith(`${userDirName(row.userId)}/`)) return { files: 0, bytes: 0 };
      return removeTree(join(adapterRoot, ...row.filePath.split('/')));
    },
  };
}
