// Package gctune keeps the garbage collector's headroom — what the heap may
// grow by before the next collection — at least a floor, whatever the live
// heap. With GOGC=100 the headroom equals the live heap, so a server whose
// live heap is a few megabytes (a compiled policy, the SDK's tables)
// collects every few megabytes allocated and marks its whole live heap each
// time: on the request path that cost the policy engine's live heap more
// than the evaluation itself. A floor of a few tens of megabytes makes
// collections rarer without changing how the heap grows once it is large:
// past the floor, GOGC is 100 again.
//
// The tuner sets GOGC (debug.SetGCPercent) from the live heap after each
// period; an operator's own GOGC in the environment turns it off, and
// GOMEMLIMIT still bounds the heap as the runtime documents.
package gctune

import (
	"context"
	"os"
	"runtime/debug"
	"runtime/metrics"
	"time"
)

const (
	// Percent bounds: never below the runtime's default, and never so high
	// that a tiny live heap gets an unbounded multiple.
	minPercent = 100
	maxPercent = 5000
	// period is how often the live heap is read.
	period = time.Second
)

// Percent is the GOGC that gives a live heap of live bytes at least
// headroom bytes to grow: 100·headroom/live, within [100, 5000].
func Percent(live, headroom uint64) int {
	if live == 0 || headroom <= live {
		return minPercent
	}
	p := headroom * 100 / live
	if p > maxPercent {
		return maxPercent
	}
	return max(int(p), minPercent)
}

// Start keeps the headroom at least headroom bytes until ctx ends, and
// reports whether it does: not when headroom is 0, nor when GOGC is set in
// the environment (the operator's choice stands).
func Start(ctx context.Context, headroom uint64) bool {
	if headroom == 0 {
		return false
	}
	if _, ok := os.LookupEnv("GOGC"); ok {
		return false
	}
	t := &tuner{headroom: headroom, sample: []metrics.Sample{{Name: "/gc/heap/live:bytes"}}}
	t.adjust()
	go func() {
		tick := time.NewTicker(period)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				debug.SetGCPercent(minPercent)
				return
			case <-tick.C:
				t.adjust()
			}
		}
	}()
	return true
}

type tuner struct {
	headroom uint64
	sample   []metrics.Sample
	percent  int
}

// adjust sets GOGC for the live heap the last collection left, when it
// moved by more than a tenth (a steady heap leaves GOGC alone).
func (t *tuner) adjust() {
	metrics.Read(t.sample)
	if t.sample[0].Value.Kind() != metrics.KindUint64 {
		return
	}
	p := Percent(t.sample[0].Value.Uint64(), t.headroom)
	if t.percent != 0 && p*10 > t.percent*9 && p*10 < t.percent*11 {
		return
	}
	debug.SetGCPercent(p)
	t.percent = p
}
