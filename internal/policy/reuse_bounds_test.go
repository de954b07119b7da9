package policy

import (
	"context"
	"sync"
	"testing"
	"time"
)

// boundedReuse is a reuse whose shapes s and ls (a list of cands) are
// analysed and reusable, with the limits given.
func boundedReuse(l limits, s, ls shape, cands *Candidates) *reuse {
	r := newReuse(&compiled{})
	r.limits = l
	r.shapes[s], r.shapes[ls] = true, true
	r.lists[ls] = cands
	return r
}

// callers are n distinct callers of shape s (fragments are compared by
// pointer, as the server makes one per token).
func callers(s shape, n int) []reuseKey {
	keys := make([]reuseKey, n)
	for i := range keys {
		keys[i] = reuseKey{shape: s, identity: MustFragment(map[string]any{"i": i}), authorization: MustFragment(map[string]any{})}
	}
	return keys
}

func set(names ...string) map[string]struct{} {
	m := map[string]struct{}{}
	for _, n := range names {
		m[n] = struct{}{}
	}
	return m
}

// Decisions are dropped all at once when one more would pass the bound:
// the bound itself is held.
func TestReusedDecisionsBounded(t *testing.T) {
	s := shape{method: "tools/call", kind: targetTool, target: "t"}
	r := boundedReuse(limits{shapes: 8, listShapes: 8, analyses: 1, decisions: 2, visibleSets: 8, visibleNames: 8}, s, shape{}, nil)
	keys := callers(s, 3)
	ctx := context.Background()
	for i, want := range []int{1, 2, 1} {
		r.remember(ctx, keys[i], true)
		if len(r.decisions) != want {
			t.Fatalf("after %d decisions %d held, want %d", i+1, len(r.decisions), want)
		}
	}
	if _, ok := r.lookup(keys[2]); !ok {
		t.Fatal("the decision remembered last was dropped with the others")
	}
}

// Visible sets: past the bound on sets, or on names in all, every set is
// dropped; a set that only reaches the bound on names is held; a caller's
// set kept again replaces its names in the count.
func TestReusedVisibleSetsBounded(t *testing.T) {
	cands := &Candidates{Tools: []Candidate{{Name: "a"}, {Name: "b"}}}
	ls := shape{method: "tools/list", kind: targetList, candidates: 1}
	ctx := context.Background()
	held := func(r *reuse, keys []reuseKey) (n int) {
		for _, k := range keys {
			if _, ok := r.lookupVisible(k, cands); ok {
				n++
			}
		}
		return n
	}

	t.Run("sets", func(t *testing.T) {
		r := boundedReuse(limits{shapes: 8, listShapes: 8, analyses: 1, decisions: 8, visibleSets: 2, visibleNames: 100}, shape{}, ls, cands)
		keys := callers(ls, 3)
		for i, want := range []int{1, 2, 1} {
			r.rememberVisible(ctx, keys[i], cands, set("a"))
			if got := held(r, keys); got != want || len(r.visible) != want {
				t.Fatalf("after %d sets %d held, want %d", i+1, got, want)
			}
		}
	})
	t.Run("names", func(t *testing.T) {
		r := boundedReuse(limits{shapes: 8, listShapes: 8, analyses: 1, decisions: 8, visibleSets: 100, visibleNames: 4}, shape{}, ls, cands)
		keys := callers(ls, 3)
		for i, want := range []struct{ sets, names int }{{1, 2}, {2, 4}, {1, 2}} {
			r.rememberVisible(ctx, keys[i], cands, set("a", "b"))
			if got := held(r, keys); got != want.sets || r.names != want.names {
				t.Fatalf("after %d sets: %d held, %d names, want %d and %d", i+1, got, r.names, want.sets, want.names)
			}
		}
	})
	t.Run("replaced", func(t *testing.T) {
		r := boundedReuse(limits{shapes: 8, listShapes: 8, analyses: 1, decisions: 8, visibleSets: 100, visibleNames: 100}, shape{}, ls, cands)
		k := callers(ls, 1)[0]
		r.rememberVisible(ctx, k, cands, set("a", "b"))
		r.rememberVisible(ctx, k, cands, set("a"))
		if r.names != 1 {
			t.Fatalf("%d names counted for one set of one name", r.names)
		}
	})
}

// Two lists are the same only with the same candidates in every part, in
// order: a list whose hash collides with another's is told apart here.
func TestSameCandidates(t *testing.T) {
	hint := MustFragment(map[string]any{"readOnlyHint": true})
	base := func() *Candidates {
		return &Candidates{Tools: []Candidate{{Name: "t", Annotations: hint}}, Resources: []Candidate{{Name: "r"}},
			ResourceTemplates: []Candidate{{Name: "rt"}}, Prompts: []Candidate{{Name: "p"}}}
	}
	if !sameCandidates(base(), base()) {
		t.Fatal("equal candidates differ")
	}
	for name, change := range map[string]func(*Candidates){
		"tools":     func(c *Candidates) { c.Tools[0].Name = "u" },
		"tool hint": func(c *Candidates) { c.Tools[0].Annotations = MustFragment(map[string]any{"readOnlyHint": true}) },
		"resources": func(c *Candidates) { c.Resources = nil },
		"templates": func(c *Candidates) { c.ResourceTemplates[0].Name = "x" },
		"prompts":   func(c *Candidates) { c.Prompts = append(c.Prompts, Candidate{Name: "q"}) },
	} {
		c := base()
		change(c)
		if sameCandidates(base(), c) || sameCandidates(c, base()) {
			t.Errorf("%s differ, and the lists are taken for the same", name)
		}
	}
	if sameCandidates(nil, base()) || sameCandidates(base(), nil) || sameCandidates(nil, nil) {
		t.Error("a missing list is taken for a list")
	}
}

// Analyses: no more shapes are analysed than the bound on shapes (those
// analysed and those pending counted together), nor more lists than the
// bound on lists, which leaves calls analysed.
func TestReuseAnalysesBounded(t *testing.T) {
	ctx := context.Background()
	call := func(i int) shape { return shape{method: "tools/call", kind: targetTool, target: string(rune('a' + i))} }
	list := func(i int) shape { return shape{method: "tools/list", kind: targetList, candidates: uint64(i + 1)} }
	cands := &Candidates{Tools: []Candidate{{Name: "a"}}}
	// stub counts the analyses started; each holds until release is closed.
	stub := func(r *reuse) (started func() int, release func()) {
		var mu sync.Mutex
		n := 0
		hold := make(chan struct{})
		r.analyse = func(context.Context, shape, *Candidates) bool {
			mu.Lock()
			n++
			mu.Unlock()
			<-hold
			return true
		}
		return func() int { mu.Lock(); defer mu.Unlock(); return n }, func() { close(hold); r.wait() }
	}

	t.Run("shapes, pending ones counted", func(t *testing.T) {
		r := newReuse(&compiled{})
		r.limits = limits{shapes: 2, listShapes: 8, analyses: 8, decisions: 8, visibleSets: 8, visibleNames: 8}
		started, release := stub(r)
		for i := range 3 {
			r.reusable(ctx, call(i), nil)
		}
		waitFor(t, func() bool { return started() == 2 })
		release()
		if n := started(); n != 2 {
			t.Fatalf("%d analyses started, want 2", n)
		}
		r.reusable(ctx, call(3), nil) // two analysed: still full
		r.wait()
		if n := len(r.shapes); n != 2 {
			t.Fatalf("%d shapes analysed, want 2", n)
		}
	})
	t.Run("lists", func(t *testing.T) {
		r := newReuse(&compiled{})
		r.limits = limits{shapes: 8, listShapes: 1, analyses: 8, decisions: 8, visibleSets: 8, visibleNames: 8}
		started, release := stub(r)
		r.reusable(ctx, list(0), cands)
		r.reusable(ctx, list(1), cands)
		r.reusable(ctx, call(0), nil)
		waitFor(t, func() bool { return started() == 2 })
		release()
		if _, ok := r.shapes[list(1)]; ok || len(r.shapes) != 2 {
			t.Fatalf("analysed %v: want the first list and the call", r.shapes)
		}
	})
}

// waitFor polls cond for up to ten seconds (the analyses start on goroutines).
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("timed out")
		}
	}
}
