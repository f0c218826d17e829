import { describe, expect, it } from 'vitest';
import { ConversationLocks } from '../../src/http/conversation-locks.js';
import { ApiError } from '../../src/http/errors.js';

/** The error `f` throws (it must throw). */
function thrown(f: () => unknown): ApiError {
  try {
    f();
  } catch (err) {
    return err as ApiError;
  }
  throw new Error('expected a throw');
}

describe('ConversationLocks (one response at a time in a conversation)', () => {
  it('a held conversation refuses another hold and changes with 409 conversation_locked and Retry-After; others are free', () => {
    const locks = new ConversationLocks();
    const hold = locks.hold('conv_a');
    expect(hold.passed).toBe(false);
    for (const f of [() => locks.hold('conv_a'), () => locks.check('conv_a')]) {
      const err = thrown(f);
      expect(err).toBeInstanceOf(ApiError);
      expect(err).toMatchObject({ status: 409, code: 'conversation_locked', details: { id: 'conv_a' }, headers: { 'retry-after': '1' } });
    }
    expect(() => locks.check('conv_b')).not.toThrow();
    const other = locks.hold('conv_b');
    expect(locks.size).toBe(2);
    other.release();
    expect(locks.size).toBe(1);
  });

  it('a release frees the conversation once: a second release of the same hold does not free a later holder', () => {
    const locks = new ConversationLocks();
    const first = locks.hold('conv_a');
    first.release();
    expect(locks.size).toBe(0);
    const second = locks.hold('conv_a');
    first.release();
    expect(() => locks.check('conv_a')).toThrow(ApiError);
    second.release();
    expect(() => locks.check('conv_a')).not.toThrow();
  });

  it('a response without a conversation holds nothing', () => {
    const locks = new ConversationLocks();
    const none = locks.hold(null);
    const again = locks.hold(null);
    expect(locks.size).toBe(0);
    none.release();
    again.release();
    expect(locks.size).toBe(0);
  });
});
