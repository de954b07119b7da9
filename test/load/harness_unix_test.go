//go:build unix

package main

import (
	"bytes"
	"math"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// needLoad skips the tests that build both servers and load them: minutes
// of CPU on a shared machine, so only on request (make test does not ask).
func needLoad(t *testing.T) {
	t.Helper()
	if os.Getenv("MCPGUARD_LOADTEST") != "1" {
		t.Skip("set MCPGUARD_LOADTEST=1 to build mcpguard and the bare server and load them for a few seconds")
	}
}

// startedPIDs records the server processes a run starts.
func startedPIDs(t *testing.T) func() map[string]int {
	var mu sync.Mutex
	pids := map[string]int{}
	onStart = func(name string, pid int) {
		mu.Lock()
		pids[name] = pid
		mu.Unlock()
	}
	t.Cleanup(func() { onStart = nil })
	return func() map[string]int {
		mu.Lock()
		defer mu.Unlock()
		return pids
	}
}

// checkGone fails unless every process is gone (killed and reaped).
func checkGone(t *testing.T, pids map[string]int) {
	t.Helper()
	for name, pid := range pids {
		deadline := time.Now().Add(5 * time.Second)
		for syscall.Kill(pid, 0) == nil {
			if time.Now().After(deadline) {
				t.Errorf("%s (pid %d) still runs after the harness returned", name, pid)
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
}

// The harness, end to end with tiny settings: both servers start, answer
// every call of both modes, are measured, and are gone afterwards.
func TestHarnessEndToEnd(t *testing.T) {
	needLoad(t)
	pids := startedPIDs(t)
	o, err := parseOptions([]string{"-clients", "2", "-rounds", "2", "-duration", "300ms", "-warmup", "100ms",
		// A shared machine can starve the policy past its 100 ms bound now and
		// then: a refused call is counted, and it is not what this test is about.
		"-max-errors", "20"}, os.Stderr)
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	results, err := harness(t.Context(), o, &out)
	t.Logf("harness output:\n%s", out.String())
	if err != nil {
		t.Fatal(err)
	}
	if len(results) != 2 || results[0].mode != "stateful" || results[1].mode != "stateless" {
		t.Fatalf("modes measured: %v", results)
	}
	for _, res := range results {
		for _, name := range []string{"bare", "guarded"} {
			tg := res.target(name)
			if tg == nil {
				t.Fatalf("%s: no %s server measured", res.mode, name)
			}
			h := tg.merged()
			if tg.ops == 0 || tg.rate() <= 0 || h.quantile(0.5) <= 0 || h.quantile(0.99) < h.quantile(0.5) || len(tg.rates) != 2 {
				t.Errorf("%s %s: %d calls, %.0f/s, p50 %s, p99 %s, %d rounds", res.mode, name, tg.ops, tg.rate(), h.quantile(0.5), h.quantile(0.99), len(tg.rates))
			}
			if a, ok := tg.allocsPerCall(); !ok || a <= 0 {
				t.Errorf("%s %s: allocations per call %v (known %v)", res.mode, name, a, ok)
			}
		}
		r := compare(res.target("guarded"), res.target("bare"))
		if math.IsNaN(r.throughput) || math.IsInf(r.throughput, 0) || r.throughput <= 0 {
			t.Errorf("%s: ratio %v", res.mode, r.throughput)
		}
	}
	for _, want := range []string{"## stateful", "## stateless", "guarded ÷ bare: throughput"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("the report lacks %q", want)
		}
	}
	got := pids()
	if got["bare"] == 0 || got["mcpguard"] == 0 {
		t.Fatalf("servers started: %v", got)
	}
	checkGone(t, got)
}

// The same through the Go SDK client, one mode: the other kind of client;
// with -cpuprofile, each server's profile of the round is written.
func TestHarnessSDKClient(t *testing.T) {
	needLoad(t)
	profiles := t.TempDir()
	o, err := parseOptions([]string{"-clients", "2", "-rounds", "1", "-duration", "1s", "-warmup", "0",
		"-modes", "stateless", "-client", "sdk", "-max-errors", "20", "-cpuprofile", profiles}, os.Stderr)
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	results, err := harness(t.Context(), o, &out)
	t.Logf("harness output:\n%s", out.String())
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"bare", "guarded"} {
		if tg := results[0].target(name); tg == nil || tg.ops == 0 {
			t.Errorf("%s: no calls answered", name)
		}
		// A gzipped profile.proto.
		if b, err := os.ReadFile(filepath.Join(profiles, name+"-stateless.pprof")); err != nil || len(b) < 2 || b[0] != 0x1f || b[1] != 0x8b {
			t.Errorf("%s: CPU profile: %d bytes, %v", name, len(b), err)
		}
	}
}

// A run that fails on the way still kills what it started: here mcpguard
// cannot mint a token, after the bare server is up.
func TestHarnessKillsServersOnFailure(t *testing.T) {
	needLoad(t)
	pids := startedPIDs(t)
	o, err := parseOptions([]string{"-mcpguard", "/bin/false", "-rounds", "1", "-duration", "100ms", "-modes", "stateful"}, os.Stderr)
	if err != nil {
		t.Fatal(err)
	}
	_, err = harness(t.Context(), o, &bytes.Buffer{})
	if err == nil || !strings.Contains(err.Error(), "mcpguard token --dev") {
		t.Fatalf("err = %v, want the token's failure", err)
	}
	got := pids()
	if got["bare"] == 0 {
		t.Fatalf("the bare server was not started: %v", got)
	}
	checkGone(t, got)
}

// tools/list end to end with a tiny catalog: the bare server and guardlist
// serve 40 echo tools, and every list is the length its caller must see,
// 3 for the default roles, all 40 for the bare server and the caller with
// every role (the first list of each client checks, and a wrong one fails
// the run).
func TestHarnessToolsList(t *testing.T) {
	needLoad(t)
	pids := startedPIDs(t)
	o, err := parseOptions([]string{"-method", "tools/list", "-tools", "40", "-clients", "2", "-rounds", "1",
		"-duration", "300ms", "-warmup", "0", "-modes", "stateless", "-max-errors", "20"}, os.Stderr)
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	results, err := harness(t.Context(), o, &out)
	t.Logf("harness output:\n%s", out.String())
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]int{"bare": 40, "guarded": 3, "guarded-all": 40} {
		tg := results[0].target(name)
		if tg == nil || tg.ops == 0 || tg.wantTools != want {
			t.Errorf("%s: %+v, want lists of %d answered", name, tg, want)
		}
	}
	for _, want := range []string{"tools/list of 40 tools", "guarded ÷ bare: throughput", "guarded-all ÷ bare: throughput"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("the report lacks %q", want)
		}
	}
	got := pids()
	if got["bare"] == 0 || got["mcpguard"] == 0 {
		t.Fatalf("servers started: %v", got)
	}
	checkGone(t, got)
}
