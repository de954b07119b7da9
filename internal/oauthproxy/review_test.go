package oauthproxy_test

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mcpguard/mcpguard/internal/oauthproxy"
	"github.com/mcpguard/mcpguard/internal/store"
)

// readOnlyStore is a store whose writes can be made to fail while reads go
// on: Redis out of memory under noeviction, or a full memory store.
type readOnlyStore struct {
	store.Claimer
	readOnly atomic.Bool
}

var errReadOnly = errors.New("OOM command not allowed when used memory > 'maxmemory'")

func (s *readOnlyStore) Set(ctx context.Context, k string, v []byte, ttl time.Duration) error {
	if s.readOnly.Load() {
		return errReadOnly
	}
	return s.Claimer.Set(ctx, k, v, ttl)
}

func (s *readOnlyStore) SetNX(ctx context.Context, k string, v []byte, ttl time.Duration) (bool, error) {
	if s.readOnly.Load() {
		return false, errReadOnly
	}
	return s.Claimer.SetNX(ctx, k, v, ttl)
}

// A revocation the store did not take is no success: /revoke answers 503
// (RFC 7009 §2.2.1), the client knows its sign-in may still be live, and
// it is. (It answered 200 while nothing was revoked.)
func TestRevocationNotStoredIs503(t *testing.T) {
	ro := &readOnlyStore{Claimer: store.NewMemory(0)}
	r := newRig(t, rigOptions{stores: []store.Store{sealed(t, ro)}})
	id, _ := r.register(t)
	tok := r.login(t, r.client(id))

	ro.readOnly.Store(true)
	if s := r.revoke(t, url.Values{"token": {tok.RefreshToken}, "client_id": {id}}); s != http.StatusServiceUnavailable {
		t.Fatalf("revocation while the store refuses writes: %d, want 503", s)
	}
	ro.readOnly.Store(false)
	// Not revoked, so the client may (and must) try again.
	if _, err := r.proxy().Resolve(context.Background(), tok.AccessToken); err != nil {
		t.Fatalf("the sign-in after a failed revocation: %v", err)
	}
	if s := r.revoke(t, url.Values{"token": {tok.RefreshToken}, "client_id": {id}}); s != http.StatusOK {
		t.Fatalf("revocation: %d", s)
	}
	if _, err := r.proxy().Resolve(context.Background(), tok.AccessToken); !errors.Is(err, oauthproxy.ErrInvalidToken) {
		t.Fatalf("access token of a revoked sign-in: %v", err)
	}
}

// A refresh keeps the sign-in's scopes: a narrower access token would be a
// promise the policy does not keep (it reads the upstream token's scopes),
// so it is refused; the same scopes, in either form, are fine. (A refresh
// asking "read" of a read+write sign-in got a token saying "read" that
// still acted with write.)
func TestRefreshKeepsTheSignInsScopes(t *testing.T) {
	r := newRig(t, rigOptions{})
	id, _ := r.register(t)
	tok := r.login(t, r.client(id, "read", "write"))
	status, code, body := r.postToken(t, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {tok.RefreshToken},
		"client_id": {id}, "scope": {"read"}})
	if status != http.StatusBadRequest || code != "invalid_scope" {
		t.Fatalf("a narrower refresh: %d %s %v", status, code, body)
	}
	r.counted(t, "scope", 1)
	// The refusal came before the token was spent: it still refreshes.
	status, _, body = r.postToken(t, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {tok.RefreshToken},
		"client_id": {id}, "scope": {"api://" + apiClient + "/write read"}})
	if status != http.StatusOK || body["scope"] != "read write" {
		t.Fatalf("a refresh naming the same scopes: %d %v", status, body)
	}
}

// One address cannot flood the endpoints anyone may call without a token
// and that cost the proxy a stored record or a fetch: over its budget it
// gets 429 with Retry-After, counted, and nothing is stored; the budget
// refills with time, and tokens are not limited.
func TestRegistrationAndAuthorizationRateLimited(t *testing.T) {
	r := newRig(t, rigOptions{mutate: func(c *oauthproxy.Config) { c.RateLimit = 3 }})
	id, status := r.register(t)
	if status != http.StatusCreated {
		t.Fatalf("first registration: %d", status)
	}
	c := r.client(id)
	tok := r.login(t, c) // the login's /authorize is the second request
	if _, status := r.register(t); status != http.StatusCreated {
		t.Fatalf("third request: %d", status)
	}
	if _, status := r.register(t); status != http.StatusTooManyRequests {
		t.Fatalf("fourth registration in a minute: %d, want 429", status)
	}
	resp, err := http.Get(c.authURL())
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("authorize over the budget: %d, Retry-After %q", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
	r.counted(t, "rate_limited", 2)
	// Tokens are not limited.
	if status, _, body := r.refresh(t, id, tok.RefreshToken); status != http.StatusOK {
		t.Fatalf("refresh over the budget: %d %v", status, body)
	}
	r.clock.Advance(20 * time.Second) // one request's worth refilled
	if _, status := r.register(t); status != http.StatusCreated {
		t.Fatalf("registration after the budget refilled: %d", status)
	}
}
