import { describe, expect, it } from 'vitest';
import { FairShare } from '../../src/serve/fair-share.js';
import { Rng } from '../../src/util/rng.js';

interface R {
  user: string;
  n: number;
  /** The turn it arrived at. */
  t: number;
}
const r = (user: string, n: number, t = 0): R => ({ user, n, t });
const names = (xs: readonly R[]): string[] => xs.map((x) => `${x.user}${x.n}`);
const share = (mode: 'fair' | 'fifo' = 'fair') => new FairShare<R>(mode, (x) => x.user, (x) => x.t);

describe('FairShare', () => {
  it('fifo and a single user keep arrival order', () => {
    const ready = [r('a', 1), r('a', 2), r('b', 1), r('a', 3)];
    expect(names(share('fifo').order(ready, new Map([['b', 5]]), 3))).toEqual(['a1', 'a2', 'b1']);
    expect(names(share().order([r('a', 1), r('a', 2), r('a', 3)], new Map([['a', 7]]), 2))).toEqual(['a1', 'a2']);
  });

  it('a burst of one user shares the free rows with users behind it', () => {
    const ready = [r('a', 1), r('a', 2), r('a', 3), r('b', 1), r('b', 2), r('c', 1)];
    expect(names(share().order(ready, new Map(), 4))).toEqual(['a1', 'b1', 'c1', 'a2']);
    expect(names(share().order(ready, new Map(), 10))).toEqual(['a1', 'b1', 'c1', 'a2', 'b2', 'a3']);
  });

  it('the user holding fewest rows first, whatever the turns', () => {
    const s = share();
    s.admitted('b'); // b's turn came after a's request arrived
    expect(names(s.order([r('a', 1), r('a', 2), r('b', 1)], new Map([['a', 2]]), 2))).toEqual(['b1', 'a1']);
  });

  it('between users holding as many rows: the turn that came first, of the last admission or the later arrival', () => {
    const s = share();
    s.admitted('a'); // turn 1
    s.admitted('b'); // turn 2
    expect(names(s.order([r('b', 1), r('a', 1)], new Map(), 1))).toEqual(['a1']);
    s.admitted('a'); // turn 3
    expect(names(s.order([r('a', 2), r('b', 1)], new Map(), 1))).toEqual(['b1']);
    // A newcomer goes behind the users waiting since before it came, ahead of those served after it came.
    expect(names(s.order([r('a', 2), r('b', 1), r('c', 1, 3)], new Map(), 3))).toEqual(['b1', 'a2', 'c1']);
    expect(names(s.order([r('a', 2), r('b', 1), r('c', 1, 0)], new Map(), 3))).toEqual(['c1', 'b1', 'a2']);
    // A request that arrived after its user's last admission counts from its arrival.
    expect(names(s.order([r('a', 2, 5), r('b', 1, 4)], new Map(), 2))).toEqual(['b1', 'a2']);
    expect(s.now).toBe(3);
  });

  it('prune forgets users no longer present: their next request counts from its arrival', () => {
    const s = share();
    s.admitted('a');
    s.admitted('b');
    s.prune((u) => u === 'b');
    expect(s.size).toBe(1);
    expect(names(s.order([r('b', 1), r('a', 1)], new Map(), 1))).toEqual(['a1']);
  });

  it('one row, a standing burst and a newcomer at every admission: the burst waits behind exactly the users already waiting, never for ever', () => {
    const s = share();
    const queue: R[] = [...Array.from({ length: 60 }, (_, i) => r('hog', i + 1)), r('f0', 1)];
    let waitingAtHog: string[] | null = null;
    let since: string[] = [];
    let hogServed = 0;
    for (let step = 0; step < 40; step++) {
      const [p] = s.order(queue, new Map(), 1);
      queue.splice(queue.indexOf(p), 1);
      s.admitted(p.user);
      s.prune((u) => queue.some((q) => q.user === u));
      if (p.user === 'hog') {
        // Between two of its admissions, the others admitted are those that were waiting at the first, in arrival order.
        if (waitingAtHog) expect(since).toEqual(waitingAtHog);
        waitingAtHog = queue.filter((q) => q.user !== 'hog').map((q) => q.user);
        since = [];
        hogServed += 1;
      } else since.push(p.user);
      queue.push(r(`f${step + 1}`, 1, s.now));
    }
    expect(hogServed).toBeGreaterThanOrEqual(8);
  });

  it('random batches: picks as many as fit, each user in arrival order, every pick to a user holding fewest rows among those left, one row a step served round robin', () => {
    const rng = new Rng(7);
    for (let trial = 0; trial < 300; trial++) {
      const users = ['a', 'b', 'c', 'd', 'e'].slice(0, 1 + rng.int(5));
      const s = share();
      for (const u of users) if (rng.int(2) === 0) s.admitted(u);
      const ready: R[] = [];
      const seen = new Map<string, number>();
      let t = 0;
      for (let i = rng.int(12); i >= 0; i--) {
        const u = users[rng.int(users.length)];
        seen.set(u, (seen.get(u) ?? 0) + 1);
        t = Math.min(s.now, t + rng.int(2));
        ready.push(r(u, seen.get(u)!, t));
      }
      const held = new Map(users.filter(() => rng.int(2) === 0).map((u) => [u, rng.int(4)] as const));
      const k = 1 + rng.int(8);
      const picks = s.order(ready, held, k);
      expect(picks.length).toBe(Math.min(k, ready.length));
      for (const u of users) {
        const mine = picks.filter((p) => p.user === u).map((p) => p.n);
        expect(mine).toEqual(mine.map((_, i) => i + 1)); // a user's own requests in arrival order, none skipped
      }
      // Replay: each pick went to a user with the fewest rows among users with requests left.
      const rows = new Map(users.map((u) => [u, held.get(u) ?? 0]));
      const left = new Map(users.map((u) => [u, ready.filter((x) => x.user === u).length]));
      for (const p of picks) {
        const least = Math.min(...users.filter((u) => left.get(u)! > 0).map((u) => rows.get(u)!));
        expect(rows.get(p.user)).toBe(least);
        rows.set(p.user, rows.get(p.user)! + 1);
        left.set(p.user, left.get(p.user)! - 1);
      }
    }
    // One row at a time (each admission reported), a standing burst of every user: strict rotation.
    const s = share();
    const queue = ['a', 'b', 'c'].flatMap((u) => [1, 2, 3].map((n) => r(u, n)));
    const served: string[] = [];
    while (queue.length > 0) {
      const [p] = s.order(queue, new Map(), 1);
      queue.splice(queue.indexOf(p), 1);
      s.admitted(p.user);
      served.push(p.user);
    }
    expect(served.join('')).toBe('abcabcabc');
  });
});
