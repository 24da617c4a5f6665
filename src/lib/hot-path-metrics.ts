// Prometheus metrics counted on every request: the latency histogram, and the
// authentication outcome and key-cache counters. prom-client 15 checks and
// hashes the label set on each observation or increment, even through a child
// bound to fixed labels (`labels()` binds the labels, not the series); on a
// request that does nothing else that was 7 % of its CPU (the bench's floor,
// 42 → 39 µs). Here a series is found once, by whoever will count into it,
// and counting is an increment. Both register on a prom-client Registry like
// any metric, and /metrics prints them exactly as prom-client prints its own
// (test/lib/hot-path-metrics).
import type { Registry } from 'prom-client'

type Labels = Record<string, string | number>
type Sample = { labels: Labels; value: number; metricName?: string }

/** What prom-client's Registry asks of a metric. */
abstract class RegisteredMetric<S> {
  abstract readonly type: 'counter' | 'histogram'
  readonly aggregator = 'sum'
  /** Series in the order they were first counted into, as prom-client lists them. */
  protected readonly series = new Map<string, S>()
  /** Moves at each reset, so that whoever holds a series finds it again. */
  protected generation = 0

  constructor(readonly name: string, readonly help: string, registry: Registry) {
    registry.registerMetric(this as never)
  }

  /**
   * The series of one label set, for whoever counts into it: found at the first count and again
   * after a reset, so a series is listed once something was counted in it.
   */
  protected seriesFor(labels: Labels, create: (labels: Labels) => S): () => S {
    const key = JSON.stringify(labels)
    let series: S | undefined
    let seen = -1
    return () => {
      if (seen !== this.generation) {
        series = this.series.get(key)
        if (!series) this.series.set(key, series = create({ ...labels }))
        seen = this.generation
      }
      return series!
    }
  }

  protected abstract samples(): Sample[]

  async get() {
    return { name: this.name, help: this.help, type: this.type, values: this.samples(), aggregator: this.aggregator }
  }

  /** prom-client's reset: series are forgotten (an incrementer made before counts into a new one). */
  reset() {
    this.series.clear()
    this.generation++
  }
}

interface Buckets {
  readonly labels: Labels
  /** Observations per bucket, not cumulative; the last one counts those above every bound. */
  readonly counts: number[]
  sum: number
  count: number
}

export class LatencyHistogram extends RegisteredMetric<Buckets> {
  readonly type = 'histogram'

  constructor(name: string, help: string, private readonly bounds: readonly number[], registry: Registry) {
    super(name, help, registry)
  }

  /** The observer of one label set: look it up once, call it on every request. */
  observerOf(labels: Labels): (seconds: number) => void {
    const { bounds } = this
    const seriesOf = this.seriesFor(labels, (l): Buckets => ({ labels: l, counts: new Array<number>(bounds.length + 1).fill(0), sum: 0, count: 0 }))
    return (seconds) => {
      if (!Number.isFinite(seconds)) return
      const series = seriesOf()
      let i = 0
      while (i < bounds.length && seconds > bounds[i]!) i++ // a bucket counts values up to and including its bound
      series.counts[i]!++
      series.sum += seconds
      series.count++
    }
  }

  protected samples(): Sample[] {
    const values: Sample[] = []
    for (const { labels, counts, sum, count } of this.series.values()) {
      let cumulative = 0
      this.bounds.forEach((le, i) => {
        cumulative += counts[i]!
        values.push({ labels: { le, ...labels }, value: cumulative, metricName: `${this.name}_bucket` })
      })
      values.push(
        { labels: { le: '+Inf', ...labels }, value: count, metricName: `${this.name}_bucket` },
        { labels, value: sum, metricName: `${this.name}_sum` },
        { labels, value: count, metricName: `${this.name}_count` },
      )
    }
    return values
  }
}

interface Total { readonly labels: Labels; value: number }

export class LabeledCounter extends RegisteredMetric<Total> {
  readonly type = 'counter'

  /** The incrementer of one label set: look it up once, call it on every event. */
  incrementerOf(labels: Labels): () => void {
    const seriesOf = this.seriesFor(labels, (l): Total => ({ labels: l, value: 0 }))
    return () => { seriesOf().value++ }
  }

  protected samples(): Sample[] {
    return [...this.series.values()].map(({ labels, value }) => ({ labels, value }))
  }
}
