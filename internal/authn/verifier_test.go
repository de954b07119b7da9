package authn_test

import (
	"context"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jws"
	"github.com/lestrrat-go/jwx/v2/jwt"

	"github.com/mcpguard/mcpguard/internal/authn"
	"github.com/mcpguard/mcpguard/internal/clocktest"
	"github.com/mcpguard/mcpguard/internal/devidp"
)

const (
	tenant = "72f988bf-0000-4000-8000-000000000001"
	client = "5b2a1c3d-0000-4000-8000-0000000000c1"
)

type fixture struct {
	key  *rsa.PrivateKey
	iss  *devidp.Issuer
	srv  *httptest.Server
	v    *authn.Verifier
	down atomic.Bool
}

func newFixture(t testing.TB, mod func(*authn.Config)) *fixture {
	t.Helper()
	f := &fixture{}
	key, err := devidp.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	f.key = key
	var h http.Handler
	f.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if f.down.Load() {
			http.Error(w, "down", http.StatusBadGateway)
			return
		}
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(f.srv.Close)
	f.iss, err = devidp.New(f.srv.URL, tenant, key)
	if err != nil {
		t.Fatal(err)
	}
	h = f.iss.Handler()
	cfg := authn.Config{
		AuthorityHost:      f.srv.URL,
		TenantID:           tenant,
		Audiences:          []string{client, "api://" + client},
		RequiredScopes:     []string{"read"},
		ClockSkew:          time.Minute,
		RefreshMinInterval: time.Hour,
	}
	if mod != nil {
		mod(&cfg)
	}
	f.v, err = authn.NewVerifier(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func (f *fixture) mint(t testing.TB, tok devidp.Token) string {
	t.Helper()
	if tok.Audience == "" {
		tok.Audience = client
	}
	if tok.Scopes == nil && !tok.App {
		tok.Scopes = []string{"read"}
	}
	s, err := f.iss.Mint(tok)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func wantErr(t *testing.T, err error, status int, contains string) {
	t.Helper()
	var ae *authn.Error
	if !errors.As(err, &ae) {
		t.Fatalf("want *authn.Error, got %v", err)
	}
	if ae.Status != status || !strings.Contains(ae.Error(), contains) {
		t.Fatalf("got %d %q, want %d containing %q", ae.Status, ae.Error(), status, contains)
	}
}

func TestDelegatedUser(t *testing.T) {
	f := newFixture(t, nil)
	id, err := f.v.Verify(context.Background(), f.mint(t, devidp.Token{User: "alice", Roles: []string{"r1"}, Groups: []string{"g1"}, Scopes: []string{"read", "write"}}))
	if err != nil {
		t.Fatal(err)
	}
	if id.Kind != authn.KindUser || id.TenantID != tenant || id.ObjectID != devidp.ObjectIDFor("alice") ||
		len(id.Scopes) != 2 || id.AppRoles[0] != "r1" || id.Groups[0] != "g1" || id.PreferredUsername == "" || id.AppID == "" {
		t.Fatalf("identity %+v", id)
	}
	if id.Claims["tid"] != tenant {
		t.Fatalf("claims not kept: %v", id.Claims)
	}
}

func TestAppOnly(t *testing.T) {
	f := newFixture(t, nil)
	id, err := f.v.Verify(context.Background(), f.mint(t, devidp.Token{User: "agent", App: true, Roles: []string{"Agent.Read"}}))
	if err != nil {
		t.Fatal(err)
	}
	if id.Kind != authn.KindApp || len(id.Scopes) != 0 || id.AppRoles[0] != "Agent.Read" {
		t.Fatalf("identity %+v", id)
	}
	// No idtyp optional claim configured: no scp still means app-only.
	id, err = f.v.Verify(context.Background(), f.mint(t, devidp.Token{User: "agent2", App: true, Extra: map[string]any{"idtyp": nil}}))
	if err != nil || id.Kind != authn.KindApp {
		t.Fatalf("app without idtyp: %v %+v", err, id)
	}
}

func TestAudienceAppIDURI(t *testing.T) {
	f := newFixture(t, nil)
	if _, err := f.v.Verify(context.Background(), f.mint(t, devidp.Token{Audience: "api://" + client})); err != nil {
		t.Fatal(err)
	}
}

func TestRejections(t *testing.T) {
	f := newFixture(t, nil)
	ctx := context.Background()
	other, _ := devidp.NewKey()
	stranger, _ := devidp.New(f.srv.URL, tenant, other)
	strangerTok, _ := stranger.Mint(devidp.Token{Audience: client, Scopes: []string{"read"}})

	cases := []struct {
		name   string
		token  string
		status int
		want   string
	}{
		{"garbage", "not.a.jwt", 401, "malformed"},
		{"empty parts", "..", 401, "malformed"},
		{"too large", strings.Repeat("a", authn.MaxTokenBytes+1), 401, "larger than"},
		{"alg none", algNone(t, f.iss.Claims(devidp.Token{Audience: client, Scopes: []string{"read"}})), 401, "malformed"},
		{"alg none with a signature", algNone(t, f.iss.Claims(devidp.Token{Audience: client, Scopes: []string{"read"}})) + "c2ln", 401, "algorithm"},
		{"alg HS256 with the public key as secret", hs256(t, f), 401, "algorithm"},
		{"unknown kid", strangerTok, 401, "unknown key"},
		{"wrong audience", f.mint(t, devidp.Token{Audience: "api://someone-else"}), 401, "audience"},
		{"wrong tenant", f.mint(t, devidp.Token{TenantID: "11111111-0000-4000-8000-000000000000"}), 401, "tenant"},
		{"issuer of another authority", f.mint(t, devidp.Token{Extra: map[string]any{"iss": "https://evil.example/" + tenant + "/v2.0"}}), 401, "issuer"},
		{"issuer tenant differs from tid", f.mint(t, devidp.Token{Extra: map[string]any{"iss": f.srv.URL + "/11111111-0000-4000-8000-000000000000/v2.0"}}), 401, "issuer"},
		{"expired", f.mint(t, devidp.Token{IssuedAt: time.Now().Add(-3 * time.Hour), Lifetime: time.Hour}), 401, "expired"},
		{"not yet valid", f.mint(t, devidp.Token{Extra: map[string]any{"nbf": time.Now().Add(time.Hour).Unix()}}), 401, "not valid yet"},
		{"issued in the future", f.mint(t, devidp.Token{IssuedAt: time.Now().Add(time.Hour)}), 401, "future"},
		{"no exp", f.mint(t, devidp.Token{Extra: map[string]any{"exp": nil}}), 401, "required claim"},
		{"v1 not enabled", f.mint(t, devidp.Token{V1: true}), 401, "v1 tokens"},
		{"no oid", f.mint(t, devidp.Token{Extra: map[string]any{"oid": nil}}), 401, "oid"},
		{"user token without scp", f.mint(t, devidp.Token{Scopes: []string{}, Extra: map[string]any{"idtyp": "user"}}), 401, "neither a delegated"},
		{"missing required scope", f.mint(t, devidp.Token{Scopes: []string{"write"}}), 403, "read"},
		{"tampered payload", tamper(t, f.mint(t, devidp.Token{})), 401, "signature"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := f.v.Verify(ctx, c.token)
			wantErr(t, err, c.status, c.want)
		})
	}
}

func TestV1WhenEnabled(t *testing.T) {
	f := newFixture(t, func(c *authn.Config) { c.AcceptV1 = true })
	id, err := f.v.Verify(context.Background(), f.mint(t, devidp.Token{V1: true, Audience: "api://" + client}))
	if err != nil {
		t.Fatal(err)
	}
	if id.Issuer != f.srv.URL+"/"+tenant+"/" || id.AppID == "" {
		t.Fatalf("v1 identity %+v", id)
	}
}

func TestMultiTenantAllowList(t *testing.T) {
	other := "22222222-0000-4000-8000-000000000000"
	f := newFixture(t, func(c *authn.Config) { c.TenantID = "organizations"; c.AllowedTenants = []string{other} })
	if _, err := f.v.Verify(context.Background(), f.mint(t, devidp.Token{TenantID: other})); err != nil {
		t.Fatalf("allowed tenant: %v", err)
	}
	_, err := f.v.Verify(context.Background(), f.mint(t, devidp.Token{TenantID: tenant}))
	wantErr(t, err, 401, "tenant")
}

func TestCacheSkipsVerificationUntilExpiry(t *testing.T) {
	f := newFixture(t, nil)
	tok := f.mint(t, devidp.Token{})
	id1, err := f.v.Verify(context.Background(), tok)
	if err != nil {
		t.Fatal(err)
	}
	f.down.Store(true) // keys unreachable: only a cache hit can answer
	id2, err := f.v.Verify(context.Background(), tok)
	if err != nil || id1 != id2 {
		t.Fatalf("second call not served from cache: %v", err)
	}
}

func TestKeysUnavailable(t *testing.T) {
	f := newFixture(t, nil)
	clock := clocktest.New(time.Now())
	authn.SetClock(f.v, clock.Now)
	f.down.Store(true)
	_, err := f.v.Verify(context.Background(), f.mint(t, devidp.Token{}))
	wantErr(t, err, 503, "unavailable")
	f.down.Store(false)
	// A failed first fetch is not repeated within the second: the issuer is
	// not hammered while it is down.
	fetches := f.iss.JWKSRequests()
	clock.Advance(time.Second - time.Millisecond)
	_, err = f.v.Verify(context.Background(), f.mint(t, devidp.Token{}))
	wantErr(t, err, 503, "unavailable")
	if n := f.iss.JWKSRequests() - fetches; n != 0 {
		t.Fatalf("%d key fetches within a second of a failed one", n)
	}
	// A second on, the keys are fetched again.
	clock.Advance(time.Millisecond)
	if _, err := f.v.Verify(context.Background(), f.mint(t, devidp.Token{})); err != nil {
		t.Fatalf("after recovery: %v", err)
	}
}

func TestKeyRotationRefreshIsRateLimited(t *testing.T) {
	f := newFixture(t, nil)
	if _, err := f.v.Verify(context.Background(), f.mint(t, devidp.Token{})); err != nil {
		t.Fatal(err)
	}
	fetches := f.iss.JWKSRequests()
	newKey, _ := devidp.NewKey()
	if err := f.iss.Rotate(newKey, true); err != nil {
		t.Fatal(err)
	}
	// RefreshMinInterval is an hour and a fetch just happened: the new kid is not looked up.
	_, err := f.v.Verify(context.Background(), f.mint(t, devidp.Token{}))
	wantErr(t, err, 401, "unknown key")
	if f.iss.JWKSRequests() != fetches {
		t.Fatalf("refresh not rate-limited: %d fetches", f.iss.JWKSRequests()-fetches)
	}

	// Once RefreshMinInterval has passed, an unknown kid fetches the keys again.
	clock := clocktest.New(time.Now())
	g := newFixture(t, func(c *authn.Config) { c.RefreshMinInterval = time.Minute })
	authn.SetClock(g.v, clock.Now)
	if _, err := g.v.Verify(context.Background(), g.mint(t, devidp.Token{})); err != nil {
		t.Fatal(err)
	}
	_ = g.iss.Rotate(newKey, true)
	clock.Advance(time.Minute)
	if _, err := g.v.Verify(context.Background(), g.mint(t, devidp.Token{})); err != nil {
		t.Fatalf("rotated key after refresh: %v", err)
	}
}

func algNone(t *testing.T, claims map[string]any) string {
	t.Helper()
	tok := jwt.New()
	for k, v := range claims {
		_ = tok.Set(k, v)
	}
	payload, err := jwt.NewSerializer().Serialize(tok)
	if err != nil {
		t.Fatal(err)
	}
	hdr := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"none","typ":"JWT"}`))
	return hdr + "." + base64.RawURLEncoding.EncodeToString(payload) + "."
}

// hs256 signs with the issuer's own public key, as the PEM the JWKS yields,
// as an HMAC secret: the classic algorithm-confusion attack.
func hs256(t *testing.T, f *fixture) string {
	t.Helper()
	tok := jwt.New()
	for k, v := range f.iss.Claims(devidp.Token{Audience: client, Scopes: []string{"read"}}) {
		_ = tok.Set(k, v)
	}
	der, err := x509.MarshalPKIXPublicKey(&f.key.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	secret := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
	hdr := jws.NewHeaders()
	_ = hdr.Set(jws.KeyIDKey, f.iss.KeyID())
	b, err := jwt.Sign(tok, jwt.WithKey(jwa.HS256, secret, jws.WithProtectedHeaders(hdr)))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func tamper(t *testing.T, tok string) string {
	t.Helper()
	parts := strings.Split(tok, ".")
	payload, _ := base64.RawURLEncoding.DecodeString(parts[1])
	payload = []byte(strings.Replace(string(payload), `"tid"`, `"tid2":"x","tid"`, 1))
	parts[1] = base64.RawURLEncoding.EncodeToString(payload)
	return strings.Join(parts, ".")
}

// BenchmarkVerifyCached is the per-request cost of a token seen before.
func BenchmarkVerifyCached(b *testing.B) {
	f := newFixture(b, nil)
	tok, _ := f.iss.Mint(devidp.Token{Audience: client, Scopes: []string{"read"}})
	if _, err := f.v.Verify(context.Background(), tok); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := f.v.Verify(context.Background(), tok); err != nil {
			b.Fatal(err)
		}
	}
}

// A key the issuer withdrew stops verifying once the key set is fetched
// again, even for a token answered from the verified-token cache.
func TestWithdrawnKeyStopsVerifying(t *testing.T) {
	f := newFixture(t, func(c *authn.Config) { c.KeysMaxAge = 10 * time.Minute; c.RefreshMinInterval = time.Minute })
	clock := clocktest.New(time.Now())
	authn.SetClock(f.v, clock.Now)
	tok := f.mint(t, devidp.Token{})
	if _, err := f.v.Verify(context.Background(), tok); err != nil {
		t.Fatal(err)
	}
	newKey, _ := devidp.NewKey()
	if err := f.iss.Rotate(newKey, false); err != nil {
		t.Fatal(err)
	}
	// Until the key set is older than KeysMaxAge the cached answer stands.
	clock.Advance(10*time.Minute - time.Second)
	if _, err := f.v.Verify(context.Background(), tok); err != nil {
		t.Fatalf("within KeysMaxAge: %v", err)
	}
	clock.Advance(time.Second)
	_, err := f.v.Verify(context.Background(), tok)
	wantErr(t, err, 401, "unknown key")
	// A token of the new key verifies.
	if _, err := f.v.Verify(context.Background(), f.mint(t, devidp.Token{})); err != nil {
		t.Fatal(err)
	}
}

// The challenge body is JSON whatever the description holds.
func TestChallengeBodyIsJSON(t *testing.T) {
	rec := httptest.NewRecorder()
	authn.Challenge{ResourceMetadataURL: "http://127.0.0.1/x"}.Write(rec, &authn.Error{Status: 401, Code: "invalid_token", Description: "bad \x01 \"quote\" \\ é"})
	var body map[string]string
	if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil || body["error_description"] != "bad \x01 \"quote\" \\ é" {
		t.Fatalf("body %q: %v", rec.Body.String(), err)
	}
	if h := rec.Header().Get("WWW-Authenticate"); strings.ContainsAny(h, "\x01\r\n") || !strings.Contains(h, `\"quote\"`) {
		t.Fatalf("challenge %q", h)
	}
}
