package authn_test

import (
	"context"
	"testing"
	"time"

	"github.com/mcpguard/mcpguard/internal/authn"
	"github.com/mcpguard/mcpguard/internal/clocktest"
	"github.com/mcpguard/mcpguard/internal/devidp"
)

// The counters metrics read: cache hits and misses, key sets fetched, and
// fetches that failed.
func TestStatsCount(t *testing.T) {
	f := newFixture(t, nil)
	ctx := context.Background()
	if st := f.v.Stats(); st != (authn.Stats{}) {
		t.Fatalf("a new verifier's stats: %+v", st)
	}
	tok := f.mint(t, devidp.Token{User: "alice"})
	for range 3 {
		if _, err := f.v.Verify(ctx, tok); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := f.v.Verify(ctx, f.mint(t, devidp.Token{User: "bob"})); err != nil {
		t.Fatal(err)
	}
	if st := f.v.Stats(); st != (authn.Stats{CacheHits: 2, CacheMisses: 2, KeyFetches: 1}) {
		t.Fatalf("after 4 verifications of 2 tokens: %+v", st)
	}

	g := newFixture(t, nil)
	g.down.Store(true)
	if _, err := g.v.Verify(ctx, g.mint(t, devidp.Token{User: "alice"})); err == nil {
		t.Fatal("verified with the issuer down")
	}
	if st := g.v.Stats(); st.KeyFetchFailures != 1 || st.KeyFetches != 0 || st.CacheMisses != 1 {
		t.Fatalf("a failed key fetch: %+v", st)
	}
}

// KeysReady fetches the keys when none were fetched yet (no token has to
// come first), fails while the issuer is down, and once it has a set does
// not ask again: a readiness probe costs the issuer nothing.
func TestKeysReady(t *testing.T) {
	f := newFixture(t, nil)
	clock := clocktest.New(time.Now())
	authn.SetClock(f.v, clock.Now)
	ctx := context.Background()
	f.down.Store(true)
	if err := f.v.KeysReady(ctx); err == nil {
		t.Fatal("keys ready with the issuer down")
	}
	f.down.Store(false)
	clock.Advance(2 * time.Second) // a failed first fetch is retried at most once a second
	if err := f.v.KeysReady(ctx); err != nil {
		t.Fatalf("issuer up: %v", err)
	}
	if st := f.v.Stats(); st.KeyFetches != 1 || st.KeyFetchFailures != 1 {
		t.Fatalf("fetches: %+v", st)
	}
	f.down.Store(true)
	for range 3 {
		if err := f.v.KeysReady(ctx); err != nil {
			t.Fatalf("keys fetched once stay ready: %v", err)
		}
	}
	if st := f.v.Stats(); st.KeyFetches != 1 || st.KeyFetchFailures != 1 {
		t.Fatalf("KeysReady asked again with a key set in hand: %+v", st)
	}
	// And the set it fetched verifies.
	f.down.Store(false)
	if _, err := f.v.Verify(ctx, f.mint(t, devidp.Token{User: "alice"})); err != nil {
		t.Fatal(err)
	}
	if st := f.v.Stats(); st.KeyFetches != 1 {
		t.Fatalf("the readiness fetch was not the verifier's: %+v", st)
	}
}
