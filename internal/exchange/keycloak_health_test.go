package exchange

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"
)

// OnExchange is told of every request to the token endpoint, retries
// included, with its outcome; cache hits and misses are counted.
func TestOnExchangeAndCacheCounters(t *testing.T) {
	te := newTokenEndpoint(t)
	var mu sync.Mutex
	var seen []error
	k, _ := newSource(t, te, func(c *KeycloakConfig) {
		c.OnExchange = func(d time.Duration, err error) {
			mu.Lock()
			defer mu.Unlock()
			if d <= 0 {
				t.Errorf("elapsed %s", d)
			}
			seen = append(seen, err)
		}
	})
	ctx := context.Background()
	id := caller("a", time.Hour)
	for range 3 {
		if _, err := k.Resolve(ctx, id, "a"); err != nil {
			t.Fatal(err)
		}
	}
	if k.CacheHits() != 2 || k.CacheMisses() != 1 || len(seen) != 1 || seen[0] != nil {
		t.Fatalf("hits %d misses %d exchanges %v", k.CacheHits(), k.CacheMisses(), seen)
	}

	te.fail = http.StatusBadGateway
	k2, _ := newSource(t, te, func(c *KeycloakConfig) {
		c.Retries = 1
		c.OnExchange = func(_ time.Duration, err error) { seen = append(seen, err) }
	})
	k2.sleep = func(time.Duration) {}
	if _, err := k2.Resolve(ctx, caller("b", time.Hour), "b"); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Keycloak 502: %v", err)
	}
	if len(seen) != 3 || seen[1] == nil || seen[2] == nil {
		t.Fatalf("two failed attempts not both observed: %v", seen)
	}
}

// Check asks for the realm's OpenID configuration, without credentials,
// and fails when Keycloak does not answer 200.
func TestCheck(t *testing.T) {
	var status int
	var sawAuth bool
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sawAuth = sawAuth || r.Header.Get("Authorization") != ""
		if r.URL.Path != "/realms/r/.well-known/openid-configuration" {
			http.NotFound(w, r)
			return
		}
		w.WriteHeader(status)
	}))
	defer srv.Close()
	k, err := NewKeycloak(KeycloakConfig{ServerURL: srv.URL, Realm: "r", ClientID: "c", ClientSecret: "s3cret", Timeout: time.Second}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	status = http.StatusOK
	if err := k.Check(ctx); err != nil {
		t.Fatalf("up: %v", err)
	}
	status = http.StatusServiceUnavailable
	if err := k.Check(ctx); err == nil {
		t.Fatal("503 passed")
	}
	srv.Close()
	if err := k.Check(ctx); err == nil {
		t.Fatal("a closed port passed")
	}
	if sawAuth {
		t.Fatal("the check sent credentials")
	}
}
