package policy_test

import (
	"context"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mcpguard/mcpguard/internal/policy"
)

// generation is a policy folder whose Rego and data each carry the number n,
// and whose own tests check that they agree: a folder read while it is being
// rewritten (data of one generation, Rego of another, or a file cut short)
// fails its tests or does not parse. Tool "t" is allowed only when the Rego
// and the data agree, so a decision made by a mixed policy denies it; the
// tool "probe" is vetoed with the generation as the reason.
func generation(n int) map[string]string {
	return map[string]string{
		"data.json": fmt.Sprintf(`{"gen": %d}`, n),
		"authz.rego": fmt.Sprintf(`package mcp.authz

gen := %d

tool_allowed(name) if {
	name == "t"
	data.gen == gen
}

deny contains sprintf("generation %%d", [gen]) if input.mcp.tool.name == "probe"
`, n),
		"authz_test.rego": fmt.Sprintf(`package mcp.authz_test

import data.mcp.authz

test_rego_and_data_agree if authz.gen == data.gen

test_this_generation if authz.gen == %d
`, n),
	}
}

// writeFiles writes the files one after the other, each in place (truncated,
// then written): what an editor or a copy does, not an atomic swap.
func writeFiles(t *testing.T, dir string, files map[string]string, order ...string) {
	t.Helper()
	for _, name := range order {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(files[name]), 0o600); err != nil {
			t.Error(err)
		}
		time.Sleep(40 * time.Millisecond)
	}
}

// probe is the generation in force, from the veto's reason.
func probe(t *testing.T, e *policy.Engine) string {
	t.Helper()
	d, err := e.Decide(context.Background(), call("probe"))
	if err != nil || d.Allow || len(d.Details) == 0 {
		t.Fatalf("probe: %+v %v", d, err)
	}
	return d.Details[0].Detail
}

// Reloads under concurrent decisions: every decision is made by one whole
// policy (never data of one generation with Rego of another, never a file
// half written), none fails, and the last generation ends in force.
func TestReloadUnderLoadDecidesEveryRequestWithAWholePolicy(t *testing.T) {
	dir := writePolicy(t, generation(1))
	ctx := context.Background()
	// A long bound: on a loaded machine, under the race detector, with
	// reloads compiling beside them, evaluations take their time; a
	// timeout would be a deny for another reason than the one checked.
	e, err := policy.New(ctx, dir, policy.WithTimeout(10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close(ctx)
	if err := e.Watch(); err != nil {
		t.Fatal(err)
	}

	stop := make(chan struct{})
	var decided, wrong atomic.Int64
	var firstWrong atomic.Pointer[string]
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				d, err := e.Decide(ctx, call("t"))
				decided.Add(1)
				if err != nil || !d.Allow {
					wrong.Add(1)
					msg := fmt.Sprintf("%+v %v", d, err)
					firstWrong.CompareAndSwap(nil, &msg)
				}
			}
		}()
	}
	// Reloads besides the watcher's, at any moment of the rewrites.
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			case <-time.After(3 * time.Millisecond):
				_ = e.Reload(ctx)
			}
		}
	}()

	const last = 4
	for n := 2; n <= last; n++ {
		// Data first, then the Rego, then its tests, slowly: every moment
		// in between is a folder that must not be served, and the
		// reloads running all along read some of them.
		writeFiles(t, dir, generation(n), "data.json", "authz.rego", "authz_test.rego")
		want := fmt.Sprintf("generation %d", n)
		for deadline := time.Now().Add(20 * time.Second); probe(t, e) != want; {
			if time.Now().After(deadline) {
				t.Fatalf("generation %d never came into force: %+v", n, e.Status())
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	close(stop)
	wg.Wait()

	if wrong.Load() != 0 {
		t.Fatalf("%d of %d decisions were not allowed by a whole policy; the first: %s", wrong.Load(), decided.Load(), *firstWrong.Load())
	}
	st := e.Status()
	if decided.Load() == 0 || st.Reloads < last {
		t.Fatalf("the test did not exercise reloads under load: %d decisions, status %+v", decided.Load(), st)
	}
	t.Logf("%d decisions, all allowed; %d policies swapped in, %d reads refused", decided.Load(), st.Reloads, st.Failures)
}

// A change that does not parse, does not compile strictly, or fails its own
// tests is refused: the last good policy keeps deciding, the refusal is
// counted and kept with its file and line, and a later good change clears it.
func TestBrokenChangeIsRefusedAndKeptOut(t *testing.T) {
	dir := writePolicy(t, generation(1))
	ctx := context.Background()
	var heard []policy.Status
	var mu sync.Mutex
	e, err := policy.New(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close(ctx)
	e.OnStatus(func(s policy.Status) {
		mu.Lock()
		heard = append(heard, s)
		mu.Unlock()
	})
	good := e.Status()
	if !good.Ready || good.Source != "dir" || good.Revision == "" || good.Reloads != 1 || good.Failures != 0 {
		t.Fatalf("status after the first load: %+v", good)
	}

	for i, c := range []struct {
		name  string
		files map[string]string
		want  []string // in the error: file and line, and what
	}{
		{"syntax error", map[string]string{"authz.rego": "package mcp.authz\n\ngen := 2\n\ntool_allowed(name) if {\n"},
			[]string{"authz.rego:6", "rego_parse_error"}},
		{"strict compile", map[string]string{"authz.rego": strings.Replace(generation(2)["authz.rego"], "gen := 2", "gen := 2\n\nunused(x) := 1", 1)},
			[]string{"authz.rego:5", "unused argument x"}},
		{"own test fails", map[string]string{"data.json": `{"gen": 3}`, "authz.rego": generation(2)["authz.rego"], "authz_test.rego": generation(2)["authz_test.rego"]},
			[]string{"authz_test.rego:5", "mcp.authz_test.test_rego_and_data_agree: FAIL"}},
	} {
		writeFiles(t, dir, c.files, sortedNames(c.files)...)
		err := e.Reload(ctx)
		if err == nil {
			t.Fatalf("%s: the change was swapped in", c.name)
		}
		for _, w := range c.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: the error does not say %q: %v", c.name, w, err)
			}
		}
		st := e.Status()
		if st.Revision != good.Revision || st.Failures != uint64(i+1) || st.LastError == nil || st.LastError.Error() != err.Error() || !st.Ready || st.Reloads != 1 {
			t.Errorf("%s: status %+v", c.name, st)
		}
		if got := probe(t, e); got != "generation 1" {
			t.Errorf("%s: in force: %q, want generation 1", c.name, got)
		}
		if d, err := e.Decide(ctx, call("t")); err != nil || !d.Allow {
			t.Errorf("%s: the last good policy no longer decides: %+v %v", c.name, d, err)
		}
	}

	// The folder put back as it was: nothing is refused any more, nothing
	// was swapped in.
	writeFiles(t, dir, generation(1), "data.json", "authz.rego", "authz_test.rego")
	if err := e.Reload(ctx); err != nil {
		t.Fatal(err)
	}
	if st := e.Status(); st.LastError != nil || st.Reloads != 1 || st.Failures != 3 {
		t.Fatalf("after the change was undone: %+v", st)
	}

	writeFiles(t, dir, generation(4), "data.json", "authz.rego", "authz_test.rego")
	if err := e.Reload(ctx); err != nil {
		t.Fatal(err)
	}
	st := e.Status()
	if st.LastError != nil || st.Reloads != 2 || st.Failures != 3 || st.Revision == good.Revision || probe(t, e) != "generation 4" {
		t.Fatalf("after a good change: %+v, probe %q", st, probe(t, e))
	}
	// Nothing changed: nothing compiled, nothing counted.
	if err := e.Reload(ctx); err != nil || e.Status().Reloads != 2 {
		t.Fatalf("a reload of an unchanged folder: %v %+v", err, e.Status())
	}
	mu.Lock()
	defer mu.Unlock()
	if len(heard) != 5 || heard[4].Reloads != 2 || heard[0].Failures != 1 {
		t.Fatalf("OnStatus heard %d changes: %+v", len(heard), heard)
	}
}

// The watcher reloads a folder changed on disk, without a call.
func TestWatchReloadsAChangedFolder(t *testing.T) {
	dir := writePolicy(t, generation(1))
	ctx := context.Background()
	e, err := policy.New(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close(ctx)
	if err := e.Watch(); err != nil {
		t.Fatal(err)
	}
	writeFiles(t, dir, generation(2), "data.json", "authz.rego", "authz_test.rego")
	deadline := time.Now().Add(15 * time.Second)
	for probe(t, e) != "generation 2" {
		if time.Now().After(deadline) {
			t.Fatalf("the change was not picked up: %+v", e.Status())
		}
		time.Sleep(50 * time.Millisecond)
	}
	// A change in a new sub-folder is seen too.
	if err := os.MkdirAll(filepath.Join(dir, "team"), 0o700); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)
	if err := os.WriteFile(filepath.Join(dir, "team", "veto.rego"), []byte("package mcp.authz\n\ndeny contains \"closed\" if input.mcp.tool.name == \"t\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for {
		if d, _ := e.Decide(ctx, call("t")); !d.Allow {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the new sub-folder's change was not picked up: %+v", e.Status())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func sortedNames(m map[string]string) []string { return slices.Sorted(maps.Keys(m)) }

// WithPolicyTests makes the first folder pass its tests too; without it the
// first folder need only compile (its tests are CI's).
func TestPolicyTestsAtStart(t *testing.T) {
	files := generation(1)
	files["data.json"] = `{"gen": 2}`
	dir := writePolicy(t, files)
	ctx := context.Background()
	if _, err := policy.New(ctx, dir, policy.WithPolicyTests(true)); err == nil || !strings.Contains(err.Error(), "test_rego_and_data_agree: FAIL") {
		t.Fatalf("a folder failing its tests, with WithPolicyTests: %v", err)
	}
	e, err := policy.New(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	e.Close(ctx)
}
