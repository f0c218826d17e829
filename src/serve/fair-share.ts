/**
 * Who takes the decode batch's free rows: the scheduling policy between users.
 *
 * `fifo` admits ready requests in arrival order: a user who sends a burst of requests holds every
 * row until the burst is through, and everyone who arrives after it waits behind it.
 *
 * `fair` (the default) shares the rows between the users who have requests ready, round robin:
 *  - each free row goes to the user who holds the fewest rows of the batch now;
 *  - among those, to the user whose turn came first. Every admission is a turn (a counter); a user's
 *    turn is that of their last admission, or, when their next request arrived after it (or they
 *    were never admitted), the turn at which that request arrived. So a user who was just served
 *    goes behind everyone already waiting, and a newcomer goes behind the users who were waiting
 *    before it came: nobody waits for more admissions than there are users ahead of them;
 *  - ties go to the earlier request, and a user's own requests keep their arrival order.
 * With one user waiting, or every waiting request from a different user holding no row, this is
 * arrival order; with a burst of one user and single requests of others, the others are admitted at
 * the next free rows while the burst keeps the rest. No row is held back for anyone: a lone user
 * still fills the whole batch.
 */
export type Scheduling = 'fair' | 'fifo';

export class FairShare<T> {
  /** Per user with requests waiting or running: the turn of their last admission. */
  private readonly lastTurn = new Map<string, number>();
  private turn = 0;

  constructor(
    readonly mode: Scheduling,
    private readonly userOf: (item: T) => string,
    /** The turn at which an item arrived (its `now` when it was queued). */
    private readonly arrivalOf: (item: T) => number,
  ) {}

  /** The current turn: stamp each request with it when it is queued. */
  get now(): number {
    return this.turn;
  }

  /**
   * Up to `k` of `ready` (waiting requests ready to run, in arrival order) in the order they should
   * take free rows, given the rows each user holds in the batch now. The caller admits a prefix of
   * it (it may stop early, e.g. at a byte budget) and reports each admission with admitted().
   */
  order(ready: readonly T[], held: ReadonlyMap<string, number>, k: number): T[] {
    if (this.mode === 'fifo' || ready.length <= 1) return ready.slice(0, k);
    // Each user's ready requests, in arrival order; users in order of their first ready request.
    const groups = new Map<string, number[]>();
    for (let i = 0; i < ready.length; i++) {
      const user = this.userOf(ready[i]);
      const g = groups.get(user);
      if (g) g.push(i);
      else groups.set(user, [i]);
    }
    if (groups.size === 1) return ready.slice(0, k);
    const users = [...groups].map(([user, items]) => ({ items, next: 0, rows: held.get(user) ?? 0, last: this.lastTurn.get(user) ?? -1 }));
    const turnOf = (u: (typeof users)[number]): number => Math.max(u.last, this.arrivalOf(ready[u.items[u.next]]));
    const out: T[] = [];
    let turn = this.turn;
    while (out.length < k) {
      let best: (typeof users)[number] | null = null;
      let bestTurn = 0;
      for (const u of users) {
        if (u.next === u.items.length) continue;
        const t = turnOf(u);
        if (best === null || u.rows < best.rows || (u.rows === best.rows && (t < bestTurn || (t === bestTurn && u.items[u.next] < best.items[best.next])))) {
          best = u;
          bestTurn = t;
        }
      }
      if (best === null) break;
      out.push(ready[best.items[best.next++]]);
      best.rows += 1;
      best.last = ++turn;
    }
    return out;
  }

  /** One of `user`'s requests took a row: the next turn. */
  admitted(user: string): void {
    this.lastTurn.set(user, ++this.turn);
  }

  /** Forgets the users for whom `present` is false (nothing waiting or running): their next request's arrival sets their turn. */
  prune(present: (user: string) => boolean): void {
    for (const user of this.lastTurn.keys()) if (!present(user)) this.lastTurn.delete(user);
  }

  /** Users remembered now (tests). */
  get size(): number {
    return this.lastTurn.size;
  }
}
