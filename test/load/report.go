package main

import (
	"fmt"
	"io"
	"math"
	"text/tabwriter"
	"time"
)

func (t *target) merged() *hist {
	h := new(hist)
	for _, x := range t.hists {
		h.merge(x)
	}
	return h
}

func (t *target) rate() float64 {
	if t.elapsed <= 0 {
		return 0
	}
	return float64(t.ops) / t.elapsed.Seconds()
}

// allocsPerCall is the server's heap allocations per call, all of the
// process's allocations in the rounds counted (go_memstats_mallocs_total).
func (t *target) allocsPerCall() (float64, bool) {
	if !t.allocsOK || t.ops == 0 {
		return 0, false
	}
	return t.allocs / float64(t.ops), true
}

// ratio is guarded's figures over base's.
type ratio struct {
	throughput         float64
	roundLo, roundHi   float64 // the least and greatest of the per-round ratios
	p50, p99           float64
	allocsDiff         float64
	allocsKnown        bool
	against, guardName string
}

func compare(g, base *target) ratio {
	r := ratio{against: base.name, guardName: g.name, throughput: g.rate() / base.rate()}
	r.roundLo, r.roundHi = math.Inf(1), math.Inf(-1)
	for i := range min(len(g.rates), len(base.rates)) {
		x := g.rates[i] / base.rates[i]
		r.roundLo, r.roundHi = min(r.roundLo, x), max(r.roundHi, x)
	}
	gh, bh := g.merged(), base.merged()
	r.p50 = float64(gh.quantile(0.50)) / float64(bh.quantile(0.50))
	r.p99 = float64(gh.quantile(0.99)) / float64(bh.quantile(0.99))
	ga, gok := g.allocsPerCall()
	ba, bok := base.allocsPerCall()
	r.allocsDiff, r.allocsKnown = ga-ba, gok && bok
	return r
}

func printMode(w io.Writer, res *modeResult) {
	what := "sessions, SSE answers"
	if res.mode == "stateless" {
		what = "STATELESS=true, JSON answers"
	}
	fmt.Fprintf(w, "\n## %s (%s)\n", res.mode, what)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "server\tcalls\tfailed\tcalls/s\tp50\tp99\tallocs/call\truntime\t")
	for _, t := range res.targets {
		h := t.merged()
		allocs := "-"
		if a, ok := t.allocsPerCall(); ok {
			allocs = fmt.Sprintf("%.0f", a)
		}
		fmt.Fprintf(tw, "%s\t%d\t%d\t%.0f\t%s\t%s\t%s\t%s\t\n", t.name, t.ops, t.failed, t.rate(),
			fmtDur(h.quantile(0.50)), fmtDur(h.quantile(0.99)), allocs, t.rt)
	}
	_ = tw.Flush()
	for _, t := range res.targets {
		if t.firstErr != nil {
			fmt.Fprintf(w, "%s: first failure: %v\n", t.name, t.firstErr)
		}
	}
	// Each guarded caller against each unguarded server.
	for _, g := range res.targets {
		if !g.guarded {
			continue
		}
		for _, t := range res.targets {
			if t.guarded {
				continue
			}
			r := compare(g, t)
			allocs := "allocations unknown"
			if r.allocsKnown {
				allocs = fmt.Sprintf("allocations %+.0f/call", r.allocsDiff)
			}
			fmt.Fprintf(w, "%s ÷ %s: throughput %.2f (rounds %.2f–%.2f), p50 ×%.2f, p99 ×%.2f, %s\n",
				r.guardName, r.against, r.throughput, r.roundLo, r.roundHi, r.p50, r.p99, allocs)
		}
	}
}

func fmtDur(d time.Duration) string {
	switch {
	case d >= time.Second:
		return fmt.Sprintf("%.2fs", d.Seconds())
	case d >= time.Millisecond:
		return fmt.Sprintf("%.2fms", float64(d)/float64(time.Millisecond))
	default:
		return fmt.Sprintf("%.0fµs", float64(d)/float64(time.Microsecond))
	}
}
