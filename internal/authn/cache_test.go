package authn_test

import (
	"context"
	"testing"
	"time"

	"github.com/mcpguard/mcpguard/internal/authn"
	"github.com/mcpguard/mcpguard/internal/clocktest"
	"github.com/mcpguard/mcpguard/internal/devidp"
)

// TestCachedTokenRefusedAfterExpiry: the verified-token cache answers a
// token only until its exp; past it (and past the clock skew) the token is
// verified again and refused as expired, never served from the cache. The
// Verifier's clock is moved, not slept through.
func TestCachedTokenRefusedAfterExpiry(t *testing.T) {
	// Keys are not refetched within the test's hours: what answers is the
	// cache or a fresh verification, nothing else.
	f := newFixture(t, func(c *authn.Config) { c.KeysMaxAge = 48 * time.Hour })
	start := time.Now().Truncate(time.Second)
	clock := clocktest.New(start)
	authn.SetClock(f.v, clock.Now)
	ctx := context.Background()

	tok := f.mint(t, devidp.Token{IssuedAt: start, Lifetime: time.Hour})
	first, err := f.v.Verify(ctx, tok)
	if err != nil {
		t.Fatal(err)
	}
	// Before exp the cache answers: the same Identity, not a new verification.
	clock.Advance(time.Hour - time.Second)
	again, err := f.v.Verify(ctx, tok)
	if err != nil || again != first {
		t.Fatalf("a second before exp: %v (served from the cache: %t)", err, again == first)
	}
	// Past exp and the skew (a minute in the fixture): expired, whatever the cache holds.
	for _, step := range []time.Duration{time.Minute + 2*time.Second, 4 * time.Hour} {
		after := clock.Advance(step).Sub(start)
		id, err := f.v.Verify(ctx, tok)
		if id != nil {
			t.Fatalf("%s after issue (exp at 1h): the expired token was accepted", after)
		}
		wantErr(t, err, 401, "expired")
	}
}
