/**
 * One response at a time in a conversation (POST /v1/responses with `conversation`): a response holds
 * its conversation from the moment it reads it until its input and output are added (or it ends
 * without), so two responses never both answer the same state of a conversation and interleave
 * their items. A second response meanwhile is 409 conversation_locked with Retry-After, as OpenAI's
 * API refuses it, and so are a client's changes to its items (adding, deleting one, deleting the
 * conversation). The locks are this process's: one server per database.
 */
import { ApiError } from './errors.js';

export interface ConversationHold {
  /** Set once whoever finishes the response (a stream, a background run) has taken the hold over. */
  passed: boolean;
  /** Releases the conversation (once; later calls do nothing). */
  release(): void;
}

export class ConversationLocks {
  private readonly held = new Set<string>();

  /** Holds the conversation `id` (none: a hold of nothing), or 409 conversation_locked while another response holds it. */
  hold(id: string | null): ConversationHold {
    if (id === null) return { passed: false, release: () => {} };
    this.check(id);
    this.held.add(id);
    let released = false;
    return {
      passed: false,
      release: () => {
        if (released) return;
        released = true;
        this.held.delete(id);
      },
    };
  }

  /** 409 conversation_locked while a response holds the conversation `id`. */
  check(id: string): void {
    if (this.held.has(id)) {
      throw new ApiError(409, 'conversation_locked', `conversation ${JSON.stringify(id)} has a response running; retry once it is done`, { id }, { 'retry-after': '1' });
    }
  }

  /** Conversations held now. */
  get size(): number {
    return this.held.size;
  }
}
