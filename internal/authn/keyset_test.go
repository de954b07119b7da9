package authn

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/mcpguard/mcpguard/internal/devidp"
)

const keysetTenant = "72f988bf-0000-4000-8000-000000000001"

// keyServer serves an Entra-shaped issuer's keys on loopback.
func keyServer(t *testing.T) (*devidp.Issuer, string) {
	t.Helper()
	key, err := devidp.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	var iss *devidp.Issuer
	srv := httptest.NewServer(nil)
	t.Cleanup(srv.Close)
	if iss, err = devidp.New(srv.URL, keysetTenant, key); err != nil {
		t.Fatal(err)
	}
	srv.Config.Handler = iss.Handler()
	return iss, srv.URL + "/" + keysetTenant + "/discovery/v2.0/keys"
}

func TestKeySetPublished(t *testing.T) {
	iss, uri := keyServer(t)
	ks := &KeySet{JWKSURI: uri}
	if ks.Published(iss.KeyID()) {
		t.Fatal("a key published before any fetch")
	}
	if _, err := ks.Key(context.Background(), iss.KeyID(), time.Now()); err != nil {
		t.Fatal(err)
	}
	if !ks.Published(iss.KeyID()) || ks.Published("another-kid") {
		t.Fatalf("published: %v, another: %v", ks.Published(iss.KeyID()), ks.Published("another-kid"))
	}
}

// A key is taken from the set in hand while the set is younger than MaxAge;
// at MaxAge the set is fetched again.
func TestKeySetMaxAge(t *testing.T) {
	iss, uri := keyServer(t)
	ks := &KeySet{JWKSURI: uri, MaxAge: time.Hour, RefreshMinInterval: time.Nanosecond}
	ctx, t0, kid := context.Background(), time.Unix(1_800_000_000, 0), iss.KeyID()
	for _, c := range []struct {
		at      time.Duration
		fetches int
	}{{0, 1}, {time.Hour - time.Nanosecond, 1}, {time.Hour, 2}} {
		if _, err := ks.Key(ctx, kid, t0.Add(c.at)); err != nil {
			t.Fatal(err)
		}
		if n := iss.JWKSRequests(); n != c.fetches {
			t.Fatalf("at %s: %d fetches, want %d", c.at, n, c.fetches)
		}
	}
}

// An unknown kid fetches the set again, at most once per RefreshMinInterval
// (30 s when unset).
func TestKeySetRefreshMinInterval(t *testing.T) {
	for _, c := range []struct {
		interval time.Duration
		at       []time.Duration // unknown-kid lookups after the first fetch
		fetches  []int
	}{
		{0, []time.Duration{29 * time.Second, 30 * time.Second}, []int{1, 2}},
		{time.Hour, []time.Duration{30 * time.Second, time.Hour}, []int{1, 2}},
	} {
		iss, uri := keyServer(t)
		ks := &KeySet{JWKSURI: uri, RefreshMinInterval: c.interval}
		ctx, t0 := context.Background(), time.Unix(1_800_000_000, 0)
		if _, err := ks.Key(ctx, iss.KeyID(), t0); err != nil {
			t.Fatal(err)
		}
		for i, at := range c.at {
			var ae *Error
			if _, err := ks.Key(ctx, "unknown-kid", t0.Add(at)); !errors.As(err, &ae) || ae.Status != 401 {
				t.Fatalf("unknown kid: %v", err)
			}
			if n := iss.JWKSRequests(); n != c.fetches[i] {
				t.Fatalf("RefreshMinInterval %s, unknown kid at %s: %d fetches, want %d", c.interval, at, n, c.fetches[i])
			}
		}
	}
}

// Two first lookups at once: the one that waited for the other's fetch
// still gets a key set, not "failed moments ago".
func TestKeySetFirstFetchRace(t *testing.T) {
	iss, uri := keyServer(t)
	ks := &KeySet{JWKSURI: uri}
	now := time.Unix(1_800_000_000, 0)
	if set, err := ks.refresh(context.Background(), now, true); set == nil || err != nil {
		t.Fatalf("first fetch: %v", err)
	}
	// As Key computes it for a caller that found no set before waiting.
	if set, err := ks.refresh(context.Background(), now.Add(time.Millisecond), true); set == nil || err != nil {
		t.Fatalf("a first lookup after a concurrent fetch: %v", err)
	}
	if _, ok := func() (any, bool) { s, _ := ks.current(); return s.LookupKeyID(iss.KeyID()) }(); !ok {
		t.Fatal("key not in the set")
	}
}

type countingTransport struct{ n int }

func (c *countingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	c.n++
	return http.DefaultTransport.RoundTrip(r)
}

// The key set fetches with the HTTP client it is given (the verifier's,
// with its timeout), discovery document and keys alike.
func TestKeySetUsesItsClient(t *testing.T) {
	iss, uri := keyServer(t)
	tr := &countingTransport{}
	disco := strings.TrimSuffix(uri, "/discovery/v2.0/keys") + "/v2.0/.well-known/openid-configuration"
	ks := &KeySet{Discovery: disco, HTTPClient: &http.Client{Transport: tr}}
	if _, err := ks.Key(context.Background(), iss.KeyID(), time.Now()); err != nil {
		t.Fatal(err)
	}
	if tr.n != 2 {
		t.Fatalf("%d requests through the given client, want 2 (discovery, keys)", tr.n)
	}
}

// Without a client of its own, the key set fetches with one that gives up
// on an issuer that never answers.
func TestKeySetDefaultClientTimesOut(t *testing.T) {
	if c := (&KeySet{}).client(); c.Timeout != 10*time.Second {
		t.Fatalf("default client timeout %s", c.Timeout)
	}
}
