/**
 * How retrieved memory enters a prompt (the `memory` mode, and the "w Mem" baseline of src/eval,
 * which lays it out identically). The k best history items (FTS5 bm25 over the user's own history,
 * queried with the last user message, or the raw prompt) become one system message before the
 * conversation:
 *
 *     Relevant history of this user:
 *     - <item 1, whitespace collapsed>
 *     - <item 2>
 *
 * appended after a newline to the request's first message when that is a system message. A raw
 * `prompt` gets the same block as text, then a blank line, then the prompt.
 */
import type { Db } from '../db/client.js';
import { searchHistory } from '../db/queries/history.js';
import type { ServeMessage, ServeRequest } from './types.js';

export const MEMORY_HEADER = 'Relevant history of this user:';

export function memoryBlock(items: readonly string[]): string {
  return [MEMORY_HEADER, ...items.map((t) => `- ${t.replace(/\s+/g, ' ').trim()}`)].join('\n');
}

export function messagesWithMemory(messages: readonly ServeMessage[], items: readonly string[]): ServeMessage[] {
  if (items.length === 0) return [...messages];
  const block = memoryBlock(items);
  if (messages[0]?.role === 'system') return [{ role: 'system', content: `${messages[0].content}\n${block}` }, ...messages.slice(1)];
  return [{ role: 'system', content: block }, ...messages];
}

export function promptWithMemory(prompt: string, items: readonly string[]): string {
  return items.length === 0 ? prompt : `${memoryBlock(items)}\n\n${prompt}`;
}

/**
 * What the history is searched with: the last user message (the last message if none is the user's),
 * or the raw prompt (token ids read as text by `decode`).
 */
export function memoryQuery(req: Pick<ServeRequest, 'messages' | 'prompt'>, decode: (ids: readonly number[]) => string): string {
  if (req.prompt !== undefined) return typeof req.prompt === 'string' ? req.prompt : decode(req.prompt);
  const msgs = req.messages ?? [];
  for (let i = msgs.length - 1; i >= 0; i--) if (msgs[i].role === 'user') return msgs[i].content;
  return msgs[msgs.length - 1]?.content ?? '';
}

/**
 * The k best-matching history texts of `userId`, best first. The user id is the request's own: the
 * query filters on it in SQL, so no other user's history can come back.
 */
export function retrieveMemory(db: Db, userId: string, query: string, k: number): string[] {
  if (k <= 0) return [];
  return searchHistory(db, userId, query, { limit: k, match: 'any' }).map((h) => {
    if (h.userId !== userId) throw Object.assign(new Error(`history item ${h.id} of another user reached a request of ${userId}`), { code: 'isolation_violation' });
    return h.text;
  });
}
