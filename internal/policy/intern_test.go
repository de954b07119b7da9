package policy

import "testing"

// The interned strings and client objects (what callers name: transports,
// client names and versions) are bounded together at maxInterned entries:
// past it, terms are made afresh and nothing more is kept.
func TestInternBounded(t *testing.T) {
	reset := func(n int64) {
		interned.Clear()
		clients.Clear()
		internedCount.Store(n)
	}
	t.Cleanup(func() { reset(0) })

	reset(maxInterned - 1)
	internTerm("last kept")
	internTerm("past the bound")
	if _, ok := interned.Load("last kept"); !ok {
		t.Error("the last string within the bound was not kept")
	}
	if _, ok := interned.Load("past the bound"); ok {
		t.Error("a string past the bound was kept")
	}

	reset(maxInterned - 1)
	clientTerm("kept", "1")
	clientTerm("past", "1")
	if _, ok := clients.Load([2]string{"kept", "1"}); !ok {
		t.Error("the last client within the bound was not kept")
	}
	if _, ok := clients.Load([2]string{"past", "1"}); ok {
		t.Error("a client past the bound was kept")
	}
	if s := internTerm("fresh").Value.String(); s != `"fresh"` {
		t.Errorf("a term past the bound reads %s", s)
	}
}
