package policy

import (
	"testing"
	"time"
)

// Filtering a long list may take longer than one decision: its evaluation
// gets one more timeout per 200 candidates, of every kind together.
func TestListTimeoutGrowsWithTheList(t *testing.T) {
	e := &Engine{timeout: 100 * time.Millisecond}
	n := func(k int) []Candidate { return make([]Candidate, k) }
	for _, c := range []struct {
		cands *Candidates
		want  time.Duration
	}{
		{nil, 100 * time.Millisecond},
		{&Candidates{Tools: n(199)}, 100 * time.Millisecond},
		{&Candidates{Tools: n(200)}, 200 * time.Millisecond},
		{&Candidates{Tools: n(1000)}, 600 * time.Millisecond},
		{&Candidates{Tools: n(100), Resources: n(50), ResourceTemplates: n(25), Prompts: n(25)}, 200 * time.Millisecond},
	} {
		if got := e.listTimeout(c.cands); got != c.want {
			t.Errorf("%+v: %v, want %v", c.cands, got, c.want)
		}
	}
}
