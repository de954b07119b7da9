// Package benchtest measures per-call latency inside Go benchmarks without
// letting the measuring distort the figure: one call in Every is timed, the
// rest run untimed, and the clock's own cost (a time.Now and time.Since pair,
// measured on the same machine in the same run) is subtracted from every
// sample and reported beside the percentiles. It is for benchmarks only.
package benchtest

import (
	"slices"
	"testing"
	"time"
)

// Every is how often a call is timed: ns/op stays the mean of untimed calls
// within 1/Every of the clock's cost.
const Every = 16

// Latencies collects timed samples of one benchmark.
type Latencies struct {
	n       int
	samples []time.Duration
}

// Timed reports whether the next call is to be timed; call it once per
// iteration.
func (l *Latencies) Timed() bool {
	l.n++
	return l.n%Every == 0
}

// Add records a timed call.
func (l *Latencies) Add(d time.Duration) { l.samples = append(l.samples, d) }

// Samples is the number of timed calls.
func (l *Latencies) Samples() int { return len(l.samples) }

// ClockCost is the median cost of the timing itself: a time.Now and a
// time.Since around nothing.
func ClockCost() time.Duration {
	d := make([]time.Duration, 20001)
	for i := range d {
		t0 := time.Now()
		d[i] = time.Since(t0)
	}
	slices.Sort(d)
	return d[len(d)/2]
}

// Report adds p50-ns and p99-ns (each with the clock's cost subtracted) and
// clock-ns (the cost subtracted) to the benchmark's output. Call it after
// b.StopTimer.
func (l *Latencies) Report(b *testing.B) {
	if len(l.samples) == 0 {
		return
	}
	clock := ClockCost()
	slices.Sort(l.samples)
	net := func(d time.Duration) float64 { return float64(max(d-clock, 0).Nanoseconds()) }
	b.ReportMetric(net(l.samples[len(l.samples)/2]), "p50-ns")
	b.ReportMetric(net(l.samples[len(l.samples)*99/100]), "p99-ns")
	b.ReportMetric(float64(clock.Nanoseconds()), "clock-ns")
}
