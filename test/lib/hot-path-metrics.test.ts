// The metrics counted on every request (src/lib/hot-path-metrics.ts) replace
// prom-client's own on the hot path; /metrics must read exactly as before.
// Each case feeds the same observations to both and compares the exposition
// text, so a wrong bucket (a bound counted on the wrong side), a
// non-cumulative bucket, a lost or merged series, a series shown before it was
// counted, or a drifted label order fails.
import t from 'tap'
import { Counter, Histogram, Registry } from 'prom-client'
import { LabeledCounter, LatencyHistogram } from '../../src/lib/hot-path-metrics.js'

const BOUNDS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5]
const NAME = 'portcullis_http_request_duration_seconds'

function pair() {
  const theirs = new Registry()
  const ours = new Registry()
  const reference = new Histogram({ name: NAME, help: 'Request latency by route and status', labelNames: ['method', 'route', 'status_code'], buckets: BOUNDS, registers: [theirs] })
  const histogram = new LatencyHistogram(NAME, 'Request latency by route and status', BOUNDS, ours)
  return { theirs, ours, reference, histogram }
}

t.test('the exposition text equals prom-client\'s for the same observations', async (t) => {
  const { theirs, ours, reference, histogram } = pair()
  const series = [
    { method: 'GET', route: '/api/v1/auth/verify', status_code: 200 },
    { method: 'GET', route: '/api/v1/auth/verify', status_code: 401 },
    { method: 'POST', route: '/api/v1/auth/login', status_code: 200 },
  ]
  // Every bound exactly (le is inclusive), just above it, zero, and past the last bound.
  const values = [0, ...BOUNDS, ...BOUNDS.map((b) => b * 1.0001), 3, 60, 0.0001]
  series.forEach((labels, i) => {
    const observe = histogram.observerOf(labels)
    for (const v of values.slice(i)) {
      observe(v)
      reference.observe(labels, v)
    }
  })
  t.equal(await ours.metrics(), await theirs.metrics())
})

t.test('one label set looked up twice is one series', async (t) => {
  const { theirs, ours, reference, histogram } = pair()
  const labels = { method: 'GET', route: '/x', status_code: 200 }
  histogram.observerOf(labels)(0.002)
  histogram.observerOf({ ...labels })(0.02)
  reference.observe(labels, 0.002)
  reference.observe(labels, 0.02)
  t.equal(await ours.metrics(), await theirs.metrics())
  t.equal((await ours.metrics()).match(/_count\{/g)?.length, 1)
})

t.test('a reset forgets every series, as prom-client\'s does, and observers made before count again', async (t) => {
  const { theirs, ours, reference, histogram } = pair()
  const labels = { method: 'GET', route: '/x', status_code: 200 }
  const observe = histogram.observerOf(labels)
  observe(0.3)
  reference.observe(labels, 0.3)
  ours.resetMetrics()
  theirs.resetMetrics()
  t.equal(await ours.metrics(), await theirs.metrics(), 'nothing after the reset')
  observe(0.0001)
  reference.observe(labels, 0.0001)
  t.equal(await ours.metrics(), await theirs.metrics(), 'one observation after it')
  t.match(await ours.metrics(), /_count\{method="GET",route="\/x",status_code="200"\} 1\n/)
})

t.test('counters: the exposition text equals prom-client\'s, and a series shows once counted', async (t) => {
  const theirs = new Registry()
  const ours = new Registry()
  const name = 'portcullis_auth_outcomes_total'
  const reference = new Counter({ name, help: 'Authentication outcomes', labelNames: ['method', 'result'], registers: [theirs] })
  const counter = new LabeledCounter(name, 'Authentication outcomes', ours)
  const apiKeyFailure = counter.incrementerOf({ method: 'api_key', result: 'failure' })
  const sessionSuccess = counter.incrementerOf({ method: 'session', result: 'success' })
  counter.incrementerOf({ method: 'none', result: 'failure' }) // never counted: never shown
  t.equal(await ours.metrics(), await theirs.metrics(), 'no series before any count')
  for (let i = 0; i < 3; i++) { sessionSuccess(); reference.labels('session', 'success').inc() }
  apiKeyFailure(); reference.labels('api_key', 'failure').inc()
  counter.incrementerOf({ method: 'session', result: 'success' })()
  reference.labels('session', 'success').inc()
  t.equal(await ours.metrics(), await theirs.metrics())
  t.match(await ours.metrics(), /portcullis_auth_outcomes_total\{method="session",result="success"\} 4\n/)
  ours.resetMetrics()
  theirs.resetMetrics()
  apiKeyFailure(); reference.labels('api_key', 'failure').inc()
  t.equal(await ours.metrics(), await theirs.metrics(), 'after a reset')
})

t.test('a value that is not a number is not counted', async (t) => {
  const { ours, histogram } = pair()
  const observe = histogram.observerOf({ method: 'GET', route: '/x', status_code: 200 })
  observe(Number.NaN)
  observe(0.001)
  t.match(await ours.metrics(), /_count\{method="GET",route="\/x",status_code="200"\} 1\n/)
})
