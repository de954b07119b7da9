package exchange

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mcpguard/mcpguard/internal/authn"
	"github.com/mcpguard/mcpguard/internal/authn/authntest"
	"github.com/mcpguard/mcpguard/internal/benchtest"
	"github.com/mcpguard/mcpguard/internal/clocktest"
	"github.com/mcpguard/mcpguard/internal/devidp"
	"github.com/mcpguard/mcpguard/internal/store"
	"github.com/mcpguard/mcpguard/internal/store/storetest"
)

// tokenEndpoint is the token and certs endpoints of Keycloak realms, as far
// as the exchange sees them: form in, RS256-signed access token out (iss the
// realm, azp the authenticated client, aud the requested audience), with the
// realm's JWKS. The integration tests in test/ run the real one; this one can
// also fail or misbehave on purpose.
type tokenEndpoint struct {
	t       testing.TB
	srv     *httptest.Server
	key     *rsa.PrivateKey
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
	// token, when set, makes the access token from the claims (signed or
	// wrapped some other way) instead of the signer's compact JWS.
	token func(te *tokenEndpoint, claims map[string]any) string
	// block, when set, holds every answer until it is closed or the
	// client gives up: a Keycloak that never answers.
	block chan struct{}
}

// realmKey is every fake realm's signing key: generating one per test costs
// more than the tests.
var realmKey = sync.OnceValue(func() *rsa.PrivateKey { k, _ := devidp.NewKey(); return k })

func newTokenEndpoint(t testing.TB) *tokenEndpoint {
	te := &tokenEndpoint{t: t}
	te.key = realmKey()
	te.srv = httptest.NewServer(http.HandlerFunc(te.serve))
	t.Cleanup(te.srv.Close)
	te.signer, _ = devidp.New(te.srv.URL, "r", te.key)
	return te
}

func (te *tokenEndpoint) serve(w http.ResponseWriter, r *http.Request) {
	rest, ok := strings.CutPrefix(r.URL.Path, "/realms/")
	realm, endpoint, _ := strings.Cut(rest, "/")
	switch {
	case ok && endpoint == "protocol/openid-connect/certs":
		// devidp publishes its keys at /{tenant}/discovery/v2.0/keys.
		r2 := r.Clone(r.Context())
		r2.URL.Path = "/r/discovery/v2.0/keys"
		te.signer.Handler().ServeHTTP(w, r2)
		return
	case ok && endpoint == "protocol/openid-connect/token":
	default:
		http.NotFound(w, r)
		return
	}
	te.calls.Add(1)
	_ = r.ParseForm()
	user, pass, _ := r.BasicAuth()
	if user == "" {
		user, pass = r.PostForm.Get("client_id"), r.PostForm.Get("client_secret")
	}
	te.mu.Lock()
	te.form = map[string]string{}
	for k, v := range r.PostForm {
		te.form[k] = v[0]
	}
	te.user = user + ":" + pass
	fail, delay, errBody, block := te.fail, te.delay, te.errBody, te.block
	te.mu.Unlock()
	time.Sleep(delay) // a slow Keycloak, for tests whose outcome does not depend on how slow
	if block != nil {
		select {
		case <-block:
		case <-r.Context().Done():
			return
		}
	}
	if fail != 0 {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(fail)
		_, _ = w.Write([]byte(errBody))
		return
	}
	claims := te.baseClaims(realm, user)
	if aud := r.PostForm.Get("audience"); aud != "" {
		claims["aud"] = []string{aud, "account"}
	}
	if te.claims != nil {
		te.claims(claims)
	}
	var tok string
	switch {
	case te.token != nil:
		tok = te.token(te, claims)
	case te.forger != nil:
		tok, _ = te.forger.Sign(claims)
	default:
		var err error
		if tok, err = te.signer.Sign(claims); err != nil {
			te.t.Error(err)
		}
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{"access_token": tok, "token_type": "Bearer", "expires_in": 300})
}

// baseClaims are an access token of realm issued to client, as Keycloak
// lays one out.
func (te *tokenEndpoint) baseClaims(realm, client string) map[string]any {
	now := time.Now()
	return map[string]any{
		"iss": te.srv.URL + "/realms/" + realm, "sub": "kc-user", "azp": client, "typ": "Bearer",
		"iat": now.Unix(), "exp": now.Add(5 * time.Minute).Unix(),
		"realm_access":    map[string]any{"roles": []string{"data_reader", "default-roles-r"}},
		"resource_access": map[string]any{"api": map[string]any{"roles": []string{"writer"}}},
	}
}

// signRaw signs exactly the header and payload bytes given with the realm's
// key: tokens the realm could have produced, however odd their form.
func (te *tokenEndpoint) signRaw(header string, payload []byte) string {
	h := base64.RawURLEncoding.EncodeToString([]byte(header))
	p := base64.RawURLEncoding.EncodeToString(payload)
	sum := sha256.Sum256([]byte(h + "." + p))
	sig, err := rsa.SignPKCS1v15(rand.Reader, te.key, crypto.SHA256, sum[:])
	if err != nil {
		te.t.Fatal(err)
	}
	return h + "." + p + "." + base64.RawURLEncoding.EncodeToString(sig)
}

func (te *tokenEndpoint) header(extra string) string {
	return `{"alg":"RS256","typ":"JWT","kid":"` + te.signer.KeyID() + `"` + extra + `}`
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
	kcExp := time.Now().Add(5 * time.Minute).Unix()
	te.claims = func(c map[string]any) { c["exp"] = kcExp }
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
	if want := time.Unix(kcExp, 0).Add(-30 * time.Second); !a.Expiry.Equal(want) {
		t.Errorf("cached until %s, want %s", a.Expiry, want)
	}
	if _, err := k.Resolve(context.Background(), id, entra); err != nil || te.calls.Load() != 1 {
		t.Fatalf("second resolve: %v, %d exchanges", err, te.calls.Load())
	}
	// The cache holds roles, never the token.
	v, _ := mem.Get(context.Background(), k.cacheKey(id.Key))
	if len(v) == 0 || bytes.Contains(v, []byte(entra)) {
		t.Fatalf("cache value %q", v)
	}
}

func TestCacheBoundByEntraExpiry(t *testing.T) {
	te := newTokenEndpoint(t)
	k, _ := newSource(t, te, func(c *KeycloakConfig) { c.Skew = time.Second })
	id := caller("x", 90*time.Second)
	a, err := k.Resolve(context.Background(), id, "x")
	if err != nil {
		t.Fatal(err)
	}
	if want := id.Expiry.Add(-time.Second); !a.Expiry.Equal(want) {
		t.Fatalf("cached until %s, want the Entra token's expiry less skew, %s", a.Expiry, want)
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
	// A slow Keycloak keeps the first exchange in flight while the others
	// arrive. It is not synchronisation: a caller arriving after the answer
	// is served from the cache, so one exchange is right however the
	// goroutines are scheduled; without singleflight, overlapping ones are more.
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
	clock := clocktest.New(time.Now())
	k, _ := newSource(t, te, func(c *KeycloakConfig) { c.Retries = 2 })
	k.now = clock.Now
	_, err := k.Resolve(context.Background(), caller("a", time.Hour), "a")
	if !errors.Is(err, ErrUnavailable) || te.calls.Load() != 3 {
		t.Fatalf("5xx: %v after %d attempts", err, te.calls.Load())
	}

	// For Breaker after, further exchanges fail fast without reaching Keycloak.
	calls := te.calls.Load()
	clock.Advance(Breaker - time.Nanosecond)
	if _, err := k.Resolve(context.Background(), caller("a2", time.Hour), "a2"); !errors.Is(err, ErrUnavailable) || te.calls.Load() != calls {
		t.Fatalf("breaker: %v, %d more calls", err, te.calls.Load()-calls)
	}
	// Once it has passed, Keycloak is tried again, and a recovered one answers.
	clock.Advance(time.Nanosecond)
	te.fail = 0
	if _, err := k.Resolve(context.Background(), caller("a3", time.Hour), "a3"); err != nil {
		t.Fatalf("after recovery: %v", err)
	}

	// A Keycloak that never answers: every attempt is cut at Timeout, and
	// the caller is refused (the wait is bounded only to fail, not to time).
	mute := newTokenEndpoint(t)
	mute.block = make(chan struct{})
	t.Cleanup(func() { close(mute.block) })
	k2, _ := newSource(t, mute, func(c *KeycloakConfig) { c.Retries = 1; c.Timeout = 100 * time.Millisecond })
	done := make(chan error, 1)
	go func() {
		_, err := k2.Resolve(context.Background(), caller("b", time.Hour), "b")
		done <- err
	}()
	select {
	case err := <-done:
		if !errors.Is(err, ErrUnavailable) || mute.calls.Load() != 2 {
			t.Fatalf("silent Keycloak: %v after %d attempts, want unavailable after 2", err, mute.calls.Load())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Resolve still waiting on a Keycloak that never answers: the attempt timeout does not hold")
	}

	te.srv.Close() // unreachable
	clock.Advance(Breaker)
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
		"invalid token": func(te *tokenEndpoint) {
			te.fail, te.errBody = http.StatusBadRequest, `{"error":"invalid_token","error_description":"invalid token"}`
		},
		"user conflict": func(te *tokenEndpoint) {
			te.fail, te.errBody = http.StatusBadRequest, `{"error":"invalid_token","error_description":"User already exists"}`
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
			var lat benchtest.Latencies
			ctx := context.Background()
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				var err error
				if lat.Timed() {
					t0 := time.Now()
					_, err = k.Resolve(ctx, id, "bench-token")
					lat.Add(time.Since(t0))
				} else {
					_, err = k.Resolve(ctx, id, "bench-token")
				}
				if err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			if k.Exchanges() != 1 {
				b.Fatalf("%d exchanges: the cache was missed", k.Exchanges())
			}
			lat.Report(b)
		})
	}
}

// TestKeycloakTokenForgedSerializations: only the compact serialization of
// a Keycloak token whose signed payload is itself acceptable gives roles.
// Every other serialization or wrapping of a genuinely realm-signed token —
// the JWS JSON forms with forged realm_access/resource_access beside the
// signed parts, extra segments, padding, nested tokens, repeated claims — is
// refused, and no roles come out of it.
func TestKeycloakTokenForgedSerializations(t *testing.T) {
	// forged is a complete set of claims that would pass every check, to sit
	// beside the signed parts: what jwx took as the claims of a JSON form.
	forged := func(te *tokenEndpoint) map[string]any {
		return map[string]any{
			"iss": te.srv.URL + "/realms/r", "azp": "mcpguard", "typ": "Bearer", "sub": "kc-admin",
			"exp":             time.Now().Add(24 * time.Hour).Unix(),
			"realm_access":    map[string]any{"roles": []string{"admin", "supervisor"}},
			"resource_access": map[string]any{"api": map[string]any{"roles": []string{"writer", "owner"}}},
		}
	}
	wrap := authntest.WrapJSON
	// Donors the realm did sign: valid, expired, issued to another client.
	donors := map[string]func(map[string]any){
		"valid":        func(map[string]any) {},
		"expired":      func(c map[string]any) { c["exp"] = time.Now().Add(-time.Hour).Unix() },
		"other client": func(c map[string]any) { c["azp"] = "another-client" },
	}
	type maker func(te *tokenEndpoint, claims map[string]any) string
	signed := func(te *tokenEndpoint, claims map[string]any) string {
		tok, err := te.signer.Sign(claims)
		if err != nil {
			te.t.Fatal(err)
		}
		return tok
	}
	payload := func(claims map[string]any) []byte { b, _ := json.Marshal(claims); return b }
	cases := map[string]maker{}
	for name, mod := range donors {
		for _, general := range []bool{false, true} {
			form := "flattened"
			if general {
				form = "general"
			}
			cases[form+" JSON, "+name+" donor, forged roles beside"] = func(te *tokenEndpoint, c map[string]any) string {
				mod(c)
				return wrap(signed(te, c), forged(te), general)
			}
		}
	}
	cases["flattened JSON without extra members"] = func(te *tokenEndpoint, c map[string]any) string { return wrap(signed(te, c), nil, false) }
	cases["general JSON without extra members"] = func(te *tokenEndpoint, c map[string]any) string { return wrap(signed(te, c), nil, true) }
	cases["JSON with whitespace before it"] = func(te *tokenEndpoint, c map[string]any) string {
		return " \n" + wrap(signed(te, c), forged(te), false)
	}
	segs := func(f func(p []string) string) maker {
		return func(te *tokenEndpoint, c map[string]any) string { return f(strings.Split(signed(te, c), ".")) }
	}
	cases["four segments"] = segs(func(p []string) string { return strings.Join(p, ".") + ".e30" })
	cases["five segments (JWE shape)"] = segs(func(p []string) string { return strings.Join(p, ".") + ".e30.e30" })
	cases["two segments"] = segs(func(p []string) string { return p[0] + "." + p[1] })
	cases["padding"] = segs(func(p []string) string { return p[0] + "." + p[1] + "==." + p[2] })
	cases["standard base64 alphabet"] = segs(func(p []string) string {
		return p[0] + "." + strings.NewReplacer("-", "+", "_", "/").Replace(p[1]) + "+/." + p[2]
	})
	cases["newline inside"] = segs(func(p []string) string { return p[0] + ".\n" + p[1] + "." + p[2] })
	cases["empty signature"] = segs(func(p []string) string { return p[0] + "." + p[1] + "." })
	cases["unencoded payload (b64 false)"] = func(te *tokenEndpoint, c map[string]any) string {
		return te.signRaw(te.header(`,"b64":false,"crit":["b64"]`), payload(c))
	}
	cases["nested token (cty JWT)"] = func(te *tokenEndpoint, c map[string]any) string {
		inner := signed(te, c)
		return te.signRaw(te.header(`,"cty":"JWT"`), []byte(inner))
	}
	cases["embedded key (jwk)"] = func(te *tokenEndpoint, c map[string]any) string {
		return te.signRaw(te.header(`,"jwk":{"kty":"oct","k":"AA"}`), payload(c))
	}
	cases["key URL (jku)"] = func(te *tokenEndpoint, c map[string]any) string {
		return te.signRaw(te.header(`,"jku":"http://127.0.0.1:1/keys"`), payload(c))
	}
	cases["alg twice in the header"] = func(te *tokenEndpoint, c map[string]any) string {
		return te.signRaw(`{"alg":"none","alg":"RS256","kid":"`+te.signer.KeyID()+`"}`, payload(c))
	}
	cases["alg none"] = segs(func(p []string) string {
		return base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"none","kid":"x"}`)) + "." + p[1] + "."
	})
	cases["realm_access twice in the payload"] = func(te *tokenEndpoint, c map[string]any) string {
		b := payload(c)
		dup := strings.Replace(string(b), `"realm_access":`, `"realm_access":{"roles":["admin"]},"realm_access":`, 1)
		return te.signRaw(te.header(""), []byte(dup))
	}
	cases["roles twice inside realm_access"] = func(te *tokenEndpoint, c map[string]any) string {
		b := payload(c)
		dup := strings.Replace(string(b), `"realm_access":{"roles":`, `"realm_access":{"roles":["admin"],"roles":`, 1)
		return te.signRaw(te.header(""), []byte(dup))
	}
	cases["azp twice in the payload"] = func(te *tokenEndpoint, c map[string]any) string {
		c["azp"] = "another-client"
		b := payload(c)
		dup := strings.Replace(string(b), `"azp":"another-client"`, `"azp":"another-client","azp":"mcpguard"`, 1)
		return te.signRaw(te.header(""), []byte(dup))
	}
	cases["exp as a string"] = func(te *tokenEndpoint, c map[string]any) string {
		c["exp"] = "4102444800"
		return te.signRaw(te.header(""), payload(c))
	}
	cases["payload an array"] = func(te *tokenEndpoint, c map[string]any) string { return te.signRaw(te.header(""), []byte(`[1]`)) }
	cases["payload with trailing data"] = func(te *tokenEndpoint, c map[string]any) string {
		return te.signRaw(te.header(""), append(payload(c), []byte(` {"realm_access":{"roles":["admin"]}}`)...))
	}

	for name, mk := range cases {
		t.Run(name, func(t *testing.T) {
			te := newTokenEndpoint(t)
			te.token = mk
			k, _ := newSource(t, te, nil)
			a, err := k.Resolve(context.Background(), caller(name, time.Hour), name)
			if err == nil || a != nil {
				t.Fatalf("accepted: roles %v, client roles %v", a.Roles, a.ClientRoles)
			}
			if !errors.Is(err, ErrRefused) || te.calls.Load() != 1 {
				t.Fatalf("%v after %d calls, want a refusal after one", err, te.calls.Load())
			}
		})
	}
	// The raw signer makes tokens that are accepted when nothing is wrong
	// with them: the refusals above are for the flaw each case names.
	te := newTokenEndpoint(t)
	te.token = func(te *tokenEndpoint, c map[string]any) string { return te.signRaw(te.header(""), payload(c)) }
	k, _ := newSource(t, te, nil)
	a, err := k.Resolve(context.Background(), caller("ok", time.Hour), "ok")
	if err != nil || !slices.Equal(a.Roles, []string{"data_reader", "default-roles-r"}) {
		t.Fatalf("well-formed token: %v %+v", err, a)
	}
}

// TestKeycloakClaimsAsSigned: authorization.claims are the Keycloak token's
// claims as signed — NumericDate as JSON numbers — whether they come from the
// exchange or back from the (shared) cache.
func TestKeycloakClaimsAsSigned(t *testing.T) {
	te := newTokenEndpoint(t)
	exp := time.Now().Add(5 * time.Minute).Unix()
	te.claims = func(c map[string]any) { c["exp"] = exp; c["n"] = 1.5; c["big"] = int64(1) << 60 }
	k, mem := newSource(t, te, nil)
	id := caller("claims", time.Hour)
	fresh, err := k.Resolve(context.Background(), id, "claims")
	if err != nil {
		t.Fatal(err)
	}
	// A second replica sharing the store reads the cached result.
	k2, err := NewKeycloak(k.cfg, mem, nil)
	if err != nil {
		t.Fatal(err)
	}
	cachedA, err := k2.Resolve(context.Background(), id, "claims")
	if err != nil || te.calls.Load() != 1 {
		t.Fatalf("cached: %v, %d exchanges", err, te.calls.Load())
	}
	for what, a := range map[string]*Authorization{"exchanged": fresh, "cached": cachedA} {
		for name, want := range map[string]string{"exp": fmt.Sprint(exp), "n": "1.5", "big": "1152921504606846976"} {
			n, ok := a.Claims[name].(json.Number)
			if !ok || n.String() != want {
				t.Errorf("%s claims: %s = %#v, want the number %s", what, name, a.Claims[name], want)
			}
		}
	}
}

// TestKeycloakErrorsPublicText: what Keycloak says goes to the logs, not to
// the caller: the caller's text is fixed per kind.
func TestKeycloakErrorsPublicText(t *testing.T) {
	const secret = "user admin@corp.example exists; realm mcpguard client mcpguard"
	for name, c := range map[string]struct {
		status int
		code   string
		kind   error
	}{
		"refused":     {http.StatusBadRequest, "invalid_token", ErrRefused},
		"config":      {http.StatusUnauthorized, "invalid_client", ErrUnavailable},
		"unavailable": {http.StatusBadGateway, "server_error", ErrUnavailable},
	} {
		t.Run(name, func(t *testing.T) {
			te := newTokenEndpoint(t)
			body, _ := json.Marshal(map[string]string{"error": c.code, "error_description": secret})
			te.fail, te.errBody = c.status, string(body)
			k, _ := newSource(t, te, func(cfg *KeycloakConfig) { cfg.Retries = -1 })
			_, err := k.Resolve(context.Background(), caller(name, time.Hour), name)
			var e *Error
			if !errors.As(err, &e) || !errors.Is(err, c.kind) {
				t.Fatalf("error %T %v, want an *Error of kind %v", err, err, c.kind)
			}
			if p := Public(err); p != c.kind.Error() || strings.Contains(p, "corp.example") {
				t.Fatalf("caller-facing text %q", p)
			}
			if !strings.Contains(err.Error(), "admin@corp.example") {
				t.Fatalf("the detail for the logs lost Keycloak's reason: %q", err.Error())
			}
		})
	}
	if p := Public(errors.New("anything at all")); p != ErrUnavailable.Error() {
		t.Fatalf("an unknown error's public text: %q", p)
	}
}

// TestKeycloakRefusalRemembered: Keycloak's refusal of a caller's token is
// remembered for that token (by every replica sharing the store) for a short
// while, never past the token's expiry: a refused caller's retries do not
// each reach Keycloak.
func TestKeycloakRefusalRemembered(t *testing.T) {
	te := newTokenEndpoint(t)
	te.fail, te.errBody = http.StatusBadRequest, `{"error":"invalid_grant","error_description":"User not found"}`
	clock := clocktest.New(time.Now())
	k, mem := newSource(t, te, func(c *KeycloakConfig) { c.RefusalTTL = 30 * time.Second })
	k.now = clock.Now
	id := caller("refused", time.Hour)
	for i := range 20 {
		if _, err := k.Resolve(context.Background(), id, "refused"); !errors.Is(err, ErrRefused) {
			t.Fatalf("request %d: %v", i+1, err)
		}
	}
	if n := te.calls.Load(); n != 1 {
		t.Fatalf("20 requests with one refused token made %d Keycloak calls", n)
	}
	if n := k.Refusals(); n != 20 {
		t.Fatalf("%d refusals counted, want 20", n)
	}
	k2, _ := NewKeycloak(k.cfg, mem, nil)
	k2.now = clock.Now
	if _, err := k2.Resolve(context.Background(), id, "refused"); !errors.Is(err, ErrRefused) || te.calls.Load() != 1 {
		t.Fatalf("another replica: %v after %d calls", err, te.calls.Load())
	}
	// Another token is asked about; a refusal is not forever.
	if _, err := k.Resolve(context.Background(), caller("other", time.Hour), "other"); !errors.Is(err, ErrRefused) || te.calls.Load() != 2 {
		t.Fatalf("another token: %v after %d calls", err, te.calls.Load())
	}
	// Remembered for RefusalTTL, and not past it.
	clock.Advance(30*time.Second - time.Nanosecond)
	if _, err := k.Resolve(context.Background(), id, "refused"); !errors.Is(err, ErrRefused) || te.calls.Load() != 2 {
		t.Fatalf("just before RefusalTTL: %v after %d calls", err, te.calls.Load())
	}
	clock.Advance(time.Nanosecond)
	te.fail = 0
	if _, err := k.Resolve(context.Background(), id, "refused"); err != nil || te.calls.Load() != 3 {
		t.Fatalf("after the refusal expired: %v after %d calls", err, te.calls.Load())
	}

	// Bounded by the token's expiry.
	te.fail = http.StatusBadRequest
	k3, _ := newSource(t, te, func(c *KeycloakConfig) { c.RefusalTTL = time.Hour; c.Skew = time.Second })
	k3.now = clock.Now
	short := caller("short", 0)
	short.Expiry = clock.Now().Add(3 * time.Second)
	_, _ = k3.Resolve(context.Background(), short, "short")
	r := k3.fromCache(context.Background(), k3.cacheKey(short.Key), clock.Now())
	if r == nil || r.Refusal == nil || r.Until.After(short.Expiry) {
		t.Fatalf("remembered refusal %+v outlives the token (expiry %s)", r, short.Expiry)
	}
}

// TestKeycloakAccessDeniedIsTheCallers: access_denied can be provoked by a
// caller (a subject the client may not act for), so it is remembered for that
// token and never pauses the exchanges of other callers.
func TestKeycloakAccessDeniedIsTheCallers(t *testing.T) {
	te := newTokenEndpoint(t)
	te.fail, te.errBody = http.StatusForbidden, `{"error":"access_denied","error_description":"Client not allowed to exchange"}`
	k, _ := newSource(t, te, nil)
	for range 5 {
		if _, err := k.Resolve(context.Background(), caller("provoker", time.Hour), "provoker"); !errors.Is(err, ErrRefused) {
			t.Fatalf("access_denied: %v, want a refusal of the caller", err)
		}
	}
	if n := te.calls.Load(); n != 1 {
		t.Fatalf("5 requests with one token made %d calls", n)
	}
	te.fail = 0
	if _, err := k.Resolve(context.Background(), caller("bystander", time.Hour), "bystander"); err != nil {
		t.Fatalf("another caller after an access_denied: %v", err)
	}
}

// TestKeycloakClientRefusedTripsBreaker: Keycloak refusing mcpguard itself
// (wrong client secret, client not permitted) is a failure of the service,
// not of the caller: it pauses exchanges instead of asking again per request.
func TestKeycloakClientRefusedTripsBreaker(t *testing.T) {
	for name, c := range map[string]struct {
		status int
		body   string
	}{
		"rotated secret":        {http.StatusUnauthorized, `{"error":"unauthorized_client","error_description":"Invalid client or Invalid client credentials"}`},
		"invalid_client":        {http.StatusBadRequest, `{"error":"invalid_client","error_description":"Invalid client credentials"}`},
		"unauthorized_client":   {http.StatusBadRequest, `{"error":"unauthorized_client","error_description":"Client not enabled"}`},
		"grant type turned off": {http.StatusBadRequest, `{"error":"unsupported_grant_type","error_description":"Unsupported grant_type"}`},
	} {
		t.Run(name, func(t *testing.T) {
			te := newTokenEndpoint(t)
			te.fail, te.errBody = c.status, c.body
			clock := clocktest.New(time.Now())
			k, _ := newSource(t, te, nil)
			k.now = clock.Now
			id := caller("one", time.Hour)
			for i := range 20 {
				tok := "one"
				who := id
				if i%2 == 1 { // other callers are not asked about either
					tok = fmt.Sprint("other-", i)
					who = caller(tok, time.Hour)
				}
				_, err := k.Resolve(context.Background(), who, tok)
				var e *Error
				if !errors.As(err, &e) || !errors.Is(err, ErrUnavailable) || errors.Is(err, ErrRefused) {
					t.Fatalf("request %d: %v, want the service unavailable", i+1, err)
				}
			}
			if n := te.calls.Load(); n != 1 {
				t.Fatalf("20 requests against a Keycloak refusing mcpguard made %d calls", n)
			}
			// Paused for ConfigBreaker, then Keycloak is asked again.
			clock.Advance(ConfigBreaker - time.Nanosecond)
			if _, err := k.Resolve(context.Background(), caller("later", time.Hour), "later"); !errors.Is(err, ErrUnavailable) || te.calls.Load() != 1 {
				t.Fatalf("just before ConfigBreaker: %v after %d calls", err, te.calls.Load())
			}
			clock.Advance(time.Nanosecond)
			te.fail = 0
			if _, err := k.Resolve(context.Background(), caller("later", time.Hour), "later"); err != nil || te.calls.Load() != 2 {
				t.Fatalf("after ConfigBreaker: %v after %d calls", err, te.calls.Load())
			}
		})
	}
}

// TestKeycloakExpiringTokenNotExchanged: a token that expires within the
// skew is refused without asking Keycloak, and counted as a refusal.
func TestKeycloakExpiringTokenNotExchanged(t *testing.T) {
	te := newTokenEndpoint(t)
	clock := clocktest.New(time.Now())
	k, _ := newSource(t, te, func(c *KeycloakConfig) { c.Skew = 30 * time.Second })
	k.now = clock.Now
	living := func(token string, life time.Duration) *authn.Identity {
		id := caller(token, 0)
		id.Expiry = clock.Now().Add(life)
		return id
	}
	for _, life := range []time.Duration{10 * time.Second, 30 * time.Second, -time.Minute} {
		if _, err := k.Resolve(context.Background(), living("soon", life), "soon"); !errors.Is(err, ErrRefused) {
			t.Fatalf("token living %s: %v", life, err)
		}
	}
	if te.calls.Load() != 0 || k.Refusals() != 3 {
		t.Fatalf("%d Keycloak calls, %d refusals counted", te.calls.Load(), k.Refusals())
	}
	if _, err := k.Resolve(context.Background(), living("later", 30*time.Second+time.Nanosecond), "later"); err != nil {
		t.Fatalf("a token living past the skew: %v", err)
	}
}

// TestKeycloakTokenChecks: the Keycloak token must be an access token (typ
// Bearer), for the configured audience, and — when a subject claim is
// configured — about the caller.
func TestKeycloakTokenChecks(t *testing.T) {
	const oid = "5f1a5b8e-0000-4000-8000-00000000a11c"
	cases := []struct {
		name   string
		cfg    func(*KeycloakConfig)
		claims func(map[string]any)
		ok     bool
	}{
		{"access token", nil, nil, true},
		{"ID token", nil, func(c map[string]any) { c["typ"] = "ID" }, false},
		{"refresh token", nil, func(c map[string]any) { c["typ"] = "Refresh" }, false},
		{"no typ", nil, func(c map[string]any) { delete(c, "typ") }, false},
		{"audience in aud", func(c *KeycloakConfig) { c.Audience = "mcpguard-api" }, nil, true},
		{"audience as a string", func(c *KeycloakConfig) { c.Audience = "mcpguard-api" }, func(c map[string]any) { c["aud"] = "mcpguard-api" }, true},
		{"audience missing", func(c *KeycloakConfig) { c.Audience = "mcpguard-api" }, func(c map[string]any) { c["aud"] = []string{"account"} }, false},
		{"no aud at all", func(c *KeycloakConfig) { c.Audience = "mcpguard-api" }, func(c map[string]any) { delete(c, "aud") }, false},
		{"subject bound", func(c *KeycloakConfig) { c.SubjectClaim = "entra_oid" }, func(c map[string]any) { c["entra_oid"] = oid }, true},
		{"subject bound, other case", func(c *KeycloakConfig) { c.SubjectClaim = "entra_oid" }, func(c map[string]any) { c["entra_oid"] = strings.ToUpper(oid) }, true},
		{"subject of someone else", func(c *KeycloakConfig) { c.SubjectClaim = "entra_oid" }, func(c map[string]any) { c["entra_oid"] = "5f1a5b8e-0000-4000-8000-0000000000bb" }, false},
		{"subject claim missing", func(c *KeycloakConfig) { c.SubjectClaim = "entra_oid" }, nil, false},
		{"subject claim not a string", func(c *KeycloakConfig) { c.SubjectClaim = "entra_oid" }, func(c map[string]any) { c["entra_oid"] = []string{oid} }, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			te := newTokenEndpoint(t)
			te.claims = c.claims
			k, _ := newSource(t, te, c.cfg)
			id := caller(c.name, time.Hour)
			id.ObjectID = oid
			a, err := k.Resolve(context.Background(), id, c.name)
			if c.ok && (err != nil || len(a.Roles) == 0) {
				t.Fatalf("refused: %v", err)
			}
			if !c.ok && (err == nil || !errors.Is(err, ErrRefused)) {
				t.Fatalf("accepted: %v %+v", err, a)
			}
		})
	}
}

// TestKeycloakCacheKeyBound: results are cached per Keycloak server, realm,
// client, identity provider, grant, audience and scope: configurations
// sharing a store (one Redis) never read each other's results.
func TestKeycloakCacheKeyBound(t *testing.T) {
	te := newTokenEndpoint(t)
	other := newTokenEndpoint(t)
	mem := store.NewMemory(0)
	base := KeycloakConfig{ServerURL: te.srv.URL, Realm: "r", ClientID: "mcpguard", ClientSecret: "s", IDPAlias: "entra", Timeout: time.Second}
	variants := map[string]func(*KeycloakConfig){
		"same":                    func(*KeycloakConfig) {},
		"other Keycloak server":   func(c *KeycloakConfig) { c.ServerURL = other.srv.URL },
		"other realm":             func(c *KeycloakConfig) { c.Realm = "r2" },
		"other client":            func(c *KeycloakConfig) { c.ClientID = "mcpguard-2" },
		"other identity provider": func(c *KeycloakConfig) { c.IDPAlias = "entra-2" },
		"other grant":             func(c *KeycloakConfig) { c.Grant = GrantJWTBearer },
		"an audience":             func(c *KeycloakConfig) { c.Audience = "api" },
		"a scope":                 func(c *KeycloakConfig) { c.Scope = "roles" },
	}
	id := caller("shared", time.Hour)
	first, err := NewKeycloak(base, mem, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := first.Resolve(context.Background(), id, "shared"); err != nil {
		t.Fatal(err)
	}
	keys := map[string]string{}
	for name, mod := range variants {
		cfg := base
		mod(&cfg)
		k, err := NewKeycloak(cfg, mem, nil)
		if err != nil {
			t.Fatal(err)
		}
		before := te.calls.Load() + other.calls.Load()
		if _, err := k.Resolve(context.Background(), id, "shared"); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		made := te.calls.Load() + other.calls.Load() - before
		if name == "same" {
			if made != 0 {
				t.Fatalf("the same configuration did not share the cached result")
			}
			continue
		}
		if made != 1 {
			t.Errorf("%s: read another configuration's cached result (%d exchanges)", name, made)
		}
		key := k.cacheKey(id.Key)
		if prev, dup := keys[key]; dup || key == first.cacheKey(id.Key) {
			t.Errorf("%s: the same cache key as %q", name, prev)
		}
		keys[key] = name
	}
}
