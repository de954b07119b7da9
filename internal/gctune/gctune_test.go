package gctune

import (
	"context"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"testing"
	"time"
)

func TestPercent(t *testing.T) {
	const mb = 1 << 20
	for _, c := range []struct {
		live, headroom uint64
		want           int
	}{
		{5 * mb, 32 * mb, 640},   // a server's live heap: collections every 32 MB, not every 5
		{32 * mb, 32 * mb, 100},  // past the floor: the runtime's default
		{500 * mb, 32 * mb, 100}, // never below it
		{0, 32 * mb, 100},        // nothing known yet
		{1024, 32 * mb, 5000},    // a tiny heap gets a bounded multiple
		{3 * mb, 4 * mb, 133},
	} {
		if got := Percent(c.live, c.headroom); got != c.want {
			t.Errorf("Percent(%d, %d) = %d, want %d", c.live, c.headroom, got, c.want)
		}
	}
}

func gogc() uint64 {
	s := []metrics.Sample{{Name: "/gc/gogc:percent"}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}

// Start sets GOGC from this process's live heap, and puts the default back
// when its context ends; an operator's GOGC turns it off.
func TestStart(t *testing.T) {
	defer debug.SetGCPercent(debug.SetGCPercent(100))
	runtime.GC()
	ctx, cancel := context.WithCancel(context.Background())
	if !Start(ctx, 1<<40) {
		t.Fatal("the tuner did not start")
	}
	if got := gogc(); got != maxPercent {
		t.Fatalf("GOGC %d with a 1 TiB floor over a test's heap, want %d", got, maxPercent)
	}
	cancel()
	for deadline := time.Now().Add(10 * time.Second); gogc() != minPercent; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("GOGC %d after the tuner stopped", gogc())
		}
	}
	if Start(context.Background(), 0) {
		t.Fatal("started with no floor")
	}
	t.Setenv("GOGC", "200")
	if Start(context.Background(), 1<<40) || gogc() != minPercent {
		t.Fatalf("started over the environment's GOGC (now %d)", gogc())
	}
}
