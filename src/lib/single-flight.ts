// Concurrent loads of one key share one call: when a cache is emptied (a
// resync, a change), the many requests that miss at once cost one query, not
// one each. A load begun before the cache's generation changed is never
// joined by a request that arrives after: it may have read the old state.
export class SingleFlight<T> {
  private readonly inflight = new Map<string, { generation: number; promise: Promise<T> }>()

  run(key: string, generation: number, load: () => Promise<T>): Promise<T> {
    const running = this.inflight.get(key)
    if (running && running.generation === generation) return running.promise
    const promise = load().finally(() => {
      if (this.inflight.get(key)?.promise === promise) this.inflight.delete(key)
    })
    this.inflight.set(key, { generation, promise })
    return promise
  }
}
