package policy

import (
	"context"
	"testing"
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
