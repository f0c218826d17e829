/**
 * The "w Mem" baseline's retrieval: the user's history in an in-memory SQLite database with the
 * service's own FTS5 index and query (bm25), so evaluation retrieves exactly as serving does.
 */
import { type Db, openDb } from '../db/client.js';
import { appendHistory } from '../db/queries/history.js';
import { createUser } from '../db/queries/users.js';
import type { HistoryItem } from '../inject/dataset.js';
import { retrieveMemory } from '../serve/memory.js';

export class MemoryIndex {
  private readonly db: Db;
  private static readonly USER = 'eval-user';

  constructor(items: readonly HistoryItem[]) {
    this.db = openDb(':memory:');
    createUser(this.db, { id: MemoryIndex.USER });
    appendHistory(
      this.db,
      MemoryIndex.USER,
      items.map((i) => ({
        kind: i.kind,
        role: (i.role ?? null) as 'user' | 'assistant' | 'system' | 'other' | null,
        text: i.text,
        conversationId: i.conversationId,
        createdAt: i.createdAt,
      })),
    );
  }

  /** The k best history texts for a query, retrieved exactly as the service's memory mode does. */
  search(query: string, k: number): string[] {
    return retrieveMemory(this.db, MemoryIndex.USER, query, k);
  }

  close(): void {
    this.db.close();
  }
}
