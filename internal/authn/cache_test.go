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

// Cached answers only what Verify verified and the cache still holds: not
// a token never verified, not one past its exp, not one whose key the
// issuer withdrew (noticed when the key set is fetched again, as Verify
// notices it). The server asks it before the OAuth proxy, so it must never
// answer for a token Verify would refuse.
func TestCachedAnswersOnlyVerifiedTokens(t *testing.T) {
	f := newFixture(t, func(c *authn.Config) { c.KeysMaxAge = 10 * time.Minute; c.RefreshMinInterval = time.Minute })
	start := time.Now().Truncate(time.Second)
	clock := clocktest.New(start)
	authn.SetClock(f.v, clock.Now)
	ctx := context.Background()

	tok := f.mint(t, devidp.Token{IssuedAt: start, Lifetime: time.Hour})
	if id := f.v.Cached(ctx, tok); id != nil {
		t.Fatal("a token never verified was answered")
	}
	first, err := f.v.Verify(ctx, tok)
	if err != nil {
		t.Fatal(err)
	}
	if id := f.v.Cached(ctx, tok); id != first {
		t.Fatalf("a verified token: %v, want the verified identity", id)
	}
	if id := f.v.Cached(ctx, tok+"x"); id != nil {
		t.Fatal("another token was answered")
	}
	short := f.mint(t, devidp.Token{IssuedAt: start, Lifetime: 5 * time.Minute})
	if _, err := f.v.Verify(ctx, short); err != nil {
		t.Fatal(err)
	}
	clock.Advance(7 * time.Minute) // past exp and the skew of the short one
	if id := f.v.Cached(ctx, short); id != nil {
		t.Fatal("an expired token was answered")
	}
	// The key withdrawn: still answered until the key set is older than
	// KeysMaxAge, then not.
	newKey, _ := devidp.NewKey()
	if err := f.iss.Rotate(newKey, false); err != nil {
		t.Fatal(err)
	}
	if id := f.v.Cached(ctx, tok); id != first {
		t.Fatal("within KeysMaxAge the cached answer stands")
	}
	clock.Advance(3 * time.Minute)
	if id := f.v.Cached(ctx, tok); id != nil {
		t.Fatal("a token of a withdrawn key was answered")
	}
}
