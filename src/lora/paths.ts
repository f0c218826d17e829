/**
 * Where a user's adapters live on disk. User ids never become raw path segments: the directory
 * name is a hash of the id, so no id (however hostile) can escape the adapter root or collide
 * with another user's directory through case folding or normalisation.
 */
import { createHash } from 'node:crypto';
import { join } from 'node:path';

/** First 32 hex chars (128 bits) of SHA-256 over the UTF-8 user id. */
export function userDirName(userId: string): string {
  return createHash('sha256').update(userId, 'utf8').digest('hex').slice(0, 32);
}

/** `<root>/<userDirName(userId)>`: the directory holding every adapter version of one user. */
export function userAdapterDir(root: string, userId: string): string {
  return join(root, userDirName(userId));
}
