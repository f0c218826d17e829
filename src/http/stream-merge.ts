/**
 * Several streams as one, for OpenAI's `n` choices: each event tagged with its stream's index, the
 * first events (already awaited, so up-front errors became HTTP errors) in index order, then every
 * event as it arrives. Stopping the merged stream ends every stream.
 */
export interface StartedStream<T> {
  iterator: AsyncIterator<T>;
  first: IteratorResult<T>;
}

export async function* mergeStreams<T>(streams: ReadonlyArray<StartedStream<T>>): AsyncGenerator<{ index: number; value: T }> {
  const pending = new Map<number, Promise<{ index: number; r: IteratorResult<T> }>>();
  const pull = (index: number) => streams[index].iterator.next().then((r) => ({ index, r }));
  try {
    for (const [index, s] of streams.entries()) {
      if (s.first.done) continue;
      pending.set(index, pull(index));
      yield { index, value: s.first.value };
    }
    while (pending.size > 0) {
      const { index, r } = await Promise.race(pending.values());
      if (r.done) {
        pending.delete(index);
        continue;
      }
      pending.set(index, pull(index));
      yield { index, value: r.value };
    }
  } finally {
    await Promise.all(streams.map((s) => s.iterator.return?.()));
  }
}
