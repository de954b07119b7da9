package exchange

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mcpguard/mcpguard/internal/authn"
	"github.com/mcpguard/mcpguard/internal/devidp"
	"github.com/mcpguard/mcpguard/internal/store"
	"github.com/mcpguard/mcpguard/internal/store/storetest"
)

// tokenEndpoint is the token and certs endpoints of one Keycloak realm, as
// far as the exchange sees them: form in, RS256-signed access token out,
// with the realm's JWKS. The integration tests in test/ run the real one;
// this one can also fail on purpose.
type tokenEndpoint struct {
	t       testing.TB
	srv     *httptest.Server
	signer  *devidp.Issuer
	calls   atomic.Int64
	mu      sync.Mutex
	form    map[string]string
	user    string
	fail    int           // status to answer with, 0 for success
	errBody string        // OAuth error body for fail
	delay   time.Duration // before answering
	claims  func(map[string]any)
	forger  *devidp.Issuer // signs with a key the realm does not publish
}

func newTokenEndpoint(t testing.TB) *tokenEndpoint {
	te := &tokenEndpoint{t: t}
	key, _ := devidp.NewKey()
	te.srv = httptest.NewServer(http.HandlerFunc(te.serve))
	t.Cleanup(te.srv.Close)
	te.signer, _ = devidp.New(te.srv.URL, "r", key)
	return te
}

func (te *tokenEndpoint) serve(w http.ResponseWriter, r *http.Request) {
	switch r.URL.Path {
	case "/realms/r/protocol/openid-connect/certs":
		// devidp publishes its keys at /{tenant}/discovery/v2.0/keys.
		r2 := r.Clone(r.Context())
		r2.URL.Path = "/r/discovery/v2.0/keys"
		te.signer.Handler().ServeHTTP(w, r2)
		return
	case "/realms/r/protocol/openid-connect/token":
	default:
		http.NotFound(w, r)
		return
	}
	te.calls.Add(1)
	_ = r.ParseForm()
	user, pass, _ := r.BasicAuth()
	te.mu.Lock()
	te.form = map[string]string{}
	for k, v := range r.PostForm {
		te.form[k] = v[0]
	}
	te.user = user + ":" + pass
	fail, delay, errBody := te.fail, te.delay, te.errBody
	te.mu.Unlock()
	time.Sleep(delay)
	if fail != 0 {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(fail)
		_, _ = w.Write([]byte(errBody))
		return
	}
	now := time.Now()
	claims := map[string]any{
		"iss": te.srv.URL + "/realms/r", "sub": "kc-user", "azp": "mcpguard", "typ": "Bearer",
		"iat": now.Unix(), "exp": now.Add(5 * time.Minute).Unix(),
		"realm_access":    map[string]any{"roles": []string{"data_reader", "default-roles-r"}},
		"resource_access": map[string]any{"api": map[string]any{"roles": []string{"writer"}}},
	}
	if te.claims != nil {
		te.claims(claims)
	}
	signer := te.signer
	if te.forger != nil {
		signer = te.forger
	}
	tok, err := signer.Sign(claims)
	if err != nil {
		te.t.Error(err)
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{"access_token": tok, "token_type": "Bearer", "expires_in": 300})
}

func newSource(t *testing.T, te *tokenEndpoint, mod func(*KeycloakConfig)) (*Keycloak, *store.Memory) {
	cfg := KeycloakConfig{ServerURL: te.srv.URL, Realm: "r", ClientID: "mcpguard", ClientSecret: "s3cret", IDPAlias: "entra", Timeout: time.Second}
	if mod != nil {
		mod(&cfg)
	}
	mem := store.NewMemory(0)
	k, err := NewKeycloak(cfg, mem, nil)
	if err != nil {
		t.Fatal(err)
	}
	return k, mem
}

func caller(token string, life time.Duration) *authn.Identity {
	return &authn.Identity{Kind: authn.KindUser, ObjectID: "o", TenantID: "t", Expiry: time.Now().Add(life), Key: sha256.Sum256([]byte(token))}
}

func TestTokenExchangeRolesAndCache(t *testing.T) {
	te := newTokenEndpoint(t)
	k, mem := newSource(t, te, func(c *KeycloakConfig) { c.Audience = "mcpguard-api" })
	const entra = "entra.token.value"
	id := caller(entra, time.Hour)
	a, err := k.Resolve(context.Background(), id, entra)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(a.Roles, []string{"data_reader", "default-roles-r"}) || !slices.Equal(a.ClientRoles["api"], []string{"writer"}) || a.Source != "keycloak" {
		t.Fatalf("authorization %+v", a)
	}
	want := map[string]string{
		"grant_type": "urn:ietf:params:oauth:grant-type:token-exchange", "subject_token": entra,
		"subject_token_type": "urn:ietf:params:oauth:token-type:jwt", "subject_issuer": "entra",
		"requested_token_type": "urn:ietf:params:oauth:token-type:access_token", "audience": "mcpguard-api",
	}
	for kk, v := range want {
		if te.form[kk] != v {
			t.Errorf("form %s = %q, want %q", kk, te.form[kk], v)
		}
	}
	if te.user != "mcpguard:s3cret" {
		t.Errorf("client authentication %q", te.user)
	}
	// Cached until the Keycloak token's exp less the skew (the Entra token lives longer).
	if d := time.Until(a.Expiry); d > 5*time.Minute-29*time.Second || d < 4*time.Minute {
		t.Errorf("cached for %s", d)
	}
	if _, err := k.Resolve(context.Background(), id, entra); err != nil || te.calls.Load() != 1 {
		t.Fatalf("second resolve: %v, %d exchanges", err, te.calls.Load())
	}
	// The cache holds roles, never the token.
	v, _ := mem.Get(context.Background(), "roles:keycloak:"+hexKey(id))
	if len(v) == 0 || bytes.Contains(v, []byte(entra)) {
		t.Fatalf("cache value %q", v)
	}
}

func hexKey(id *authn.Identity) string {
	const digits = "0123456789abcdef"
	var b strings.Builder
	for _, c := range id.Key {
		b.WriteByte(digits[c>>4])
		b.WriteByte(digits[c&15])
	}
	return b.String()
}

func TestCacheBoundByEntraExpiry(t *testing.T) {
	te := newTokenEndpoint(t)
	k, _ := newSource(t, te, func(c *KeycloakConfig) { c.Skew = time.Second })
	a, err := k.Resolve(context.Background(), caller("x", 90*time.Second), "x")
	if err != nil {
		t.Fatal(err)
	}
	if d := time.Until(a.Expiry); d > 90*time.Second || d < 80*time.Second {
		t.Fatalf("cached for %s, want the Entra token's 90 s less skew", d)
	}
}

func TestJWTBearerGrantAndPostAuth(t *testing.T) {
	te := newTokenEndpoint(t)
	k, _ := newSource(t, te, func(c *KeycloakConfig) { c.Grant = GrantJWTBearer; c.ClientAuth = "post" })
	if _, err := k.Resolve(context.Background(), caller("jwt", time.Hour), "jwt"); err != nil {
		t.Fatal(err)
	}
	if te.form["grant_type"] != "urn:ietf:params:oauth:grant-type:jwt-bearer" || te.form["assertion"] != "jwt" ||
		te.form["client_id"] != "mcpguard" || te.form["client_secret"] != "s3cret" || te.form["subject_token"] != "" {
		t.Fatalf("form %v", te.form)
	}
}

func TestConcurrentFirstCallsExchangeOnce(t *testing.T) {
	te := newTokenEndpoint(t)
	te.delay = 100 * time.Millisecond
	k, _ := newSource(t, te, nil)
	id := caller("same", time.Hour)
	var wg sync.WaitGroup
	errs := make(chan error, 50)
	for range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := k.Resolve(context.Background(), id, "same")
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if n := te.calls.Load(); n != 1 {
		t.Fatalf("%d exchanges for 50 concurrent first calls", n)
	}
}

func TestUnavailableKeycloak(t *testing.T) {
	te := newTokenEndpoint(t)
	te.fail = http.StatusBadGateway
	k, _ := newSource(t, te, func(c *KeycloakConfig) { c.Retries = 2 })
	_, err := k.Resolve(context.Background(), caller("a", time.Hour), "a")
	if !errors.Is(err, ErrUnavailable) || te.calls.Load() != 3 {
		t.Fatalf("5xx: %v after %d attempts", err, te.calls.Load())
	}

	// Right after, further exchanges fail fast without reaching Keycloak.
	calls := te.calls.Load()
	start := time.Now()
	if _, err := k.Resolve(context.Background(), caller("a2", time.Hour), "a2"); !errors.Is(err, ErrUnavailable) || te.calls.Load() != calls || time.Since(start) > 100*time.Millisecond {
		t.Fatalf("breaker: %v, %d more calls, %s", err, te.calls.Load()-calls, time.Since(start))
	}
	// Once it has passed, Keycloak is tried again, and a recovered one answers.
	k.downUntil.Store(0)
	te.fail = 0
	if _, err := k.Resolve(context.Background(), caller("a3", time.Hour), "a3"); err != nil {
		t.Fatalf("after recovery: %v", err)
	}

	te.fail, te.delay = 0, 2*time.Second // slower than the 1 s attempt timeout
	k2, _ := newSource(t, te, func(c *KeycloakConfig) { c.Retries = 1 })
	start = time.Now()
	_, err = k2.Resolve(context.Background(), caller("b", time.Hour), "b")
	if !errors.Is(err, ErrUnavailable) || time.Since(start) > 5*time.Second {
		t.Fatalf("slow Keycloak: %v after %s", err, time.Since(start))
	}

	te.srv.Close() // unreachable
	k.downUntil.Store(0)
	_, err = k.Resolve(context.Background(), caller("c", time.Hour), "c")
	if !errors.Is(err, ErrUnavailable) {
		t.Fatalf("unreachable: %v", err)
	}
}

func TestCachedResultServesWhileKeycloakIsDown(t *testing.T) {
	te := newTokenEndpoint(t)
	k, _ := newSource(t, te, nil)
	id := caller("d", time.Hour)
	if _, err := k.Resolve(context.Background(), id, "d"); err != nil {
		t.Fatal(err)
	}
	te.fail = http.StatusServiceUnavailable
	if _, err := k.Resolve(context.Background(), id, "d"); err != nil {
		t.Fatalf("cached result not served: %v", err)
	}
}

func TestRefusals(t *testing.T) {
	cases := map[string]func(*tokenEndpoint){
		"not allowed to exchange": func(te *tokenEndpoint) {
			te.fail, te.errBody = http.StatusForbidden, `{"error":"access_denied","error_description":"Client not allowed to exchange"}`
		},
		"invalid token": func(te *tokenEndpoint) {
			te.fail, te.errBody = http.StatusBadRequest, `{"error":"invalid_token","error_description":"invalid token"}`
		},
		"signature": func(te *tokenEndpoint) {
			key, _ := devidp.NewKey()
			te.forger, _ = devidp.New(te.srv.URL, "r", key)
		},
		"issuer": func(te *tokenEndpoint) {
			te.claims = func(c map[string]any) { c["iss"] = "https://elsewhere/realms/r" }
		},
		"azp": func(te *tokenEndpoint) { te.claims = func(c map[string]any) { c["azp"] = "other-client" } },
		"expired": func(te *tokenEndpoint) {
			te.claims = func(c map[string]any) { c["exp"] = time.Now().Add(-time.Hour).Unix() }
		},
	}
	for name, setup := range cases {
		t.Run(name, func(t *testing.T) {
			te := newTokenEndpoint(t)
			setup(te)
			k, _ := newSource(t, te, nil)
			_, err := k.Resolve(context.Background(), caller(name, time.Hour), name)
			if !errors.Is(err, ErrRefused) {
				t.Fatalf("want a refusal, got %v", err)
			}
			if te.calls.Load() != 1 {
				t.Fatalf("a refusal was retried: %d calls", te.calls.Load())
			}
		})
	}
}

// BenchmarkKeycloakCacheHit is the added cost per request of a cached
// exchange result: memory, and Redis (a real redis-server on loopback),
// sealed with AES-256-GCM as the server stores them.
func BenchmarkKeycloakCacheHit(b *testing.B) {
	te := newTokenEndpoint(b)
	key := make([]byte, 32)
	for _, c := range []struct {
		name    string
		noLocal bool
		st      func(b *testing.B) store.Store
	}{
		{"in-process", false, func(*testing.B) store.Store { return store.NewMemory(0) }},
		{"memory-store", true, func(*testing.B) store.Store { return store.NewMemory(0) }},
		{"memory-store-sealed", true, func(*testing.B) store.Store { e, _ := store.NewEncrypted(store.NewMemory(0), [][]byte{key}); return e }},
		{"redis-sealed", true, func(b *testing.B) store.Store {
			addr, _ := storetest.RedisServer(b)
			r, err := store.NewRedis(store.RedisOptions{Addrs: []string{addr}, Password: storetest.Password})
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { _ = r.Close() })
			e, _ := store.NewEncrypted(store.NewFallback(r, store.NewMemory(0), nil), [][]byte{key})
			return e
		}},
	} {
		b.Run(c.name, func(b *testing.B) {
			k, err := NewKeycloak(KeycloakConfig{ServerURL: te.srv.URL, Realm: "r", ClientID: "mcpguard", ClientSecret: "s"}, c.st(b), nil)
			if err != nil {
				b.Fatal(err)
			}
			k.noLocal = c.noLocal
			id := caller("bench-token", time.Hour)
			if _, err := k.Resolve(context.Background(), id, "bench-token"); err != nil {
				b.Fatal(err)
			}
			lat := make([]time.Duration, 0, 1<<16)
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				t0 := time.Now()
				if _, err := k.Resolve(context.Background(), id, "bench-token"); err != nil {
					b.Fatal(err)
				}
				lat = append(lat, time.Since(t0))
			}
			b.StopTimer()
			if k.Exchanges() != 1 {
				b.Fatalf("%d exchanges: the cache was missed", k.Exchanges())
			}
			slices.Sort(lat)
			b.ReportMetric(float64(lat[len(lat)/2].Nanoseconds()), "p50-ns")
		})
	}
}
