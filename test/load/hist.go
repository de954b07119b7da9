package main

import (
	"math/bits"
	"time"
)

// subBits sets the histogram's precision: 2^subBits buckets per power of
// two, so a reported percentile is within 1/2^(subBits+1) (0.4 %) of the
// recorded value it stands for.
const subBits = 7

// hist is a log-linear latency histogram of fixed size (64 KiB): memory does
// not grow with the length of a run, and recording is an increment.
type hist struct {
	counts [64 << subBits]uint64
	n      uint64
}

func bucketOf(v uint64) int {
	if v < 1<<subBits {
		return int(v) // exact below 128 ns
	}
	e := bits.Len64(v) - 1  // v's top bit; e >= subBits
	m := v >> (e - subBits) // the top subBits+1 bits: 1<<subBits … 2<<subBits-1
	return (e-subBits+1)<<subBits | int(m&(1<<subBits-1))
}

// bucketMid is the middle of bucket b's range of values.
func bucketMid(b int) uint64 {
	if b < 1<<subBits {
		return uint64(b)
	}
	k := b >> subBits
	m := uint64(b&(1<<subBits-1)) | 1<<subBits
	lo := m << (k - 1)
	return lo + (1<<(k-1))/2
}

func (h *hist) add(d time.Duration) {
	if d < 0 {
		d = 0
	}
	h.counts[bucketOf(uint64(d))]++
	h.n++
}

func (h *hist) merge(o *hist) {
	for i, c := range o.counts {
		h.counts[i] += c
	}
	h.n += o.n
}

// quantile is the q-th quantile (0 < q <= 1) of the recorded values: the
// smallest recorded value with at least q of them at or below it.
func (h *hist) quantile(q float64) time.Duration {
	if h.n == 0 {
		return 0
	}
	rank := uint64(q * float64(h.n))
	if float64(rank) < q*float64(h.n) {
		rank++
	}
	rank = max(rank, 1)
	var seen uint64
	for b, c := range h.counts {
		seen += c
		if seen >= rank {
			return time.Duration(bucketMid(b))
		}
	}
	return time.Duration(bucketMid(len(h.counts) - 1))
}
