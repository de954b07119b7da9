package server

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/auth"
	"github.com/modelcontextprotocol/go-sdk/oauthex"

	"github.com/mcpguard/mcpguard/internal/authn"
	"github.com/mcpguard/mcpguard/internal/config"
	"github.com/mcpguard/mcpguard/internal/devidp"
	"github.com/mcpguard/mcpguard/internal/exchange"
	"github.com/mcpguard/mcpguard/internal/store"
)

// These tests put a stand-in for the OAuth façade (internal/oauthproxy) in
// front of the real verifier, with tokens of the Entra-shaped issuer: what
// the server does with the façade's tokens, whatever the façade is.

var errRevoked = errors.New("token revoked")

// fakeProxy resolves the tokens it was told about; every call is counted,
// so that a test sees that nothing in front of it answered instead.
type fakeProxy struct {
	mu       sync.Mutex
	upstream map[string]string // façade token -> Entra token
	revoked  map[string]bool
	down     bool // the store is unreachable
	resolves int
}

func newFakeProxy() *fakeProxy {
	return &fakeProxy{upstream: map[string]string{}, revoked: map[string]bool{}}
}

func (f *fakeProxy) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /.well-known/oauth-authorization-server", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"issuer":"` + protectBase + `"}`))
	})
	for _, path := range []string{"/token", "/consent"} {
		mux.HandleFunc("POST "+path, func(w http.ResponseWriter, r *http.Request) {
			if err := r.ParseForm(); err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			_, _ = w.Write([]byte(path + " endpoint"))
		})
	}
	return mux
}

func (f *fakeProxy) Resolve(_ context.Context, token string) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.resolves++
	up, ok := f.upstream[token]
	switch {
	case !ok:
		return "", fmt.Errorf("façade: %w", errNotFacadeToken)
	case f.down:
		return "", fmt.Errorf("façade: %w: store: connection refused", errFacadeUnavailable)
	case f.revoked[token]:
		return "", errRevoked
	}
	return up, nil
}

func (f *fakeProxy) Metadata() *oauthex.ProtectedResourceMetadata {
	return &oauthex.ProtectedResourceMetadata{Resource: protectBase + "/mcp", AuthorizationServers: []string{protectBase},
		ScopesSupported: []string{"read", "write"}, BearerMethodsSupported: []string{"header"}}
}

// issue makes a façade token (JWT-shaped, expiring at exp) for upstream.
func (f *fakeProxy) issue(upstream string, exp time.Time) string {
	claims, _ := json.Marshal(map[string]any{"iss": protectBase, "exp": exp.Unix(), "jti": rand32()})
	tok := "eyJhbGciOiJFUzI1NiJ9." + base64.RawURLEncoding.EncodeToString(claims) + ".c2ln"
	f.mu.Lock()
	f.upstream[tok] = upstream
	f.mu.Unlock()
	return tok
}

func (f *fakeProxy) revoke(tok string) {
	f.mu.Lock()
	f.revoked[tok] = true
	f.mu.Unlock()
}

func (f *fakeProxy) calls() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.resolves
}

func rand32() string { return ephemeralKey() }

// tokenRoles is a role source that records the tokens it was handed.
type tokenRoles struct {
	mu     sync.Mutex
	tokens []string
}

func (r *tokenRoles) Name() string { return "recording" }

func (r *tokenRoles) Resolve(_ context.Context, _ *authn.Identity, token string) (*exchange.Authorization, error) {
	r.mu.Lock()
	r.tokens = append(r.tokens, token)
	r.mu.Unlock()
	return &exchange.Authorization{Source: "recording", Roles: []string{"analyst"}, Expiry: time.Now().Add(time.Hour)}, nil
}

func (r *tokenRoles) seen() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.tokens...)
}

// newProxied is newProtected with the stand-in façade mounted.
func newProxied(t *testing.T) (*protected, *fakeProxy, *tokenRoles) {
	t.Helper()
	p := newProtected(t, nil)
	f := newFakeProxy()
	roles := &tokenRoles{}
	<-p.s.Linted() // the start-up lint reads the role source
	p.s.proxy, p.s.roles = f, roles
	p.h = p.s.Handler()
	return p, f, roles
}

// calledOK reports whether a tools/call answered with the tool's result.
func calledOK(rec *httptest.ResponseRecorder) bool {
	return rec.Code == http.StatusOK && strings.Contains(rec.Body.String(), `"text":"ok"`)
}

// A façade token stands for the Entra token it resolves to: that token is
// verified as a direct one, and the role source (the Keycloak exchange) and
// the policy see the Entra caller and token, never the façade's.
func TestProxyTokenActsAsItsEntraToken(t *testing.T) {
	p, f, roles := newProxied(t)
	entra := p.token(t, "ada")
	tok := f.issue(entra, time.Now().Add(10*time.Minute))
	if rec := p.post(t, "/mcp", tok, callBody("open"), nil); !calledOK(rec) {
		t.Fatalf("façade token: %d %s", rec.Code, rec.Body)
	}
	rec := p.post(t, "/mcp", tok, callBody("closed"), nil)
	var resp struct {
		Error struct {
			Data DenialData `json:"data"`
		} `json:"error"`
	}
	var in map[string]any
	if json.Unmarshal(rec.Body.Bytes(), &resp) != nil || len(resp.Error.Data.Reasons) != 1 ||
		json.Unmarshal([]byte(resp.Error.Data.Reasons[0]), &in) != nil {
		t.Fatalf("denial: %d %s", rec.Code, rec.Body)
	}
	if at(in, "identity.object_id") != devidp.ObjectIDFor("ada") || at(in, "authorization.source") != "recording" {
		t.Fatalf("the policy saw %v / %v", at(in, "identity.object_id"), at(in, "authorization.source"))
	}
	if strings.Contains(rec.Body.String(), tok) || strings.Contains(rec.Body.String(), entra) {
		t.Fatal("a token reached the input document")
	}
	seen := roles.seen()
	if len(seen) == 0 {
		t.Fatal("the role source was not asked")
	}
	for _, s := range seen {
		if s != entra {
			t.Fatalf("the role source was handed %q, want the Entra token", s)
		}
	}
	if got := counter(t, p.s, "mcpguard_oauth_proxy_tokens_total", "resolved"); got != 2 {
		t.Fatalf("resolved façade tokens counted %v, want 2", got)
	}
}

// A revoked façade token is refused on the very next request, with the
// usual challenge, although the Entra token it stood for sits verified in
// the cache: the cache is keyed by the Entra token, and every façade token
// is resolved afresh. Direct Entra tokens keep working beside it.
func TestRevokedProxyTokenRefusedAtOnce(t *testing.T) {
	p, f, _ := newProxied(t)
	entra := p.token(t, "ada")
	tok := f.issue(entra, time.Now().Add(10*time.Minute))
	for i := range 3 {
		if rec := p.post(t, "/mcp", tok, callBody("open"), nil); !calledOK(rec) {
			t.Fatalf("call %d: %d %s", i, rec.Code, rec.Body)
		}
	}
	if n := f.calls(); n != 3 {
		t.Fatalf("the façade resolved %d of 3 requests: something answered in its place", n)
	}
	f.revoke(tok)
	rec := p.post(t, "/mcp", tok, callBody("open"), nil)
	ch := rec.Header().Get("WWW-Authenticate")
	if rec.Code != http.StatusUnauthorized || !strings.Contains(ch, `resource_metadata="`+protectBase+`/.well-known/oauth-protected-resource/mcp"`) ||
		!strings.Contains(ch, `error="invalid_token"`) {
		t.Fatalf("revoked façade token: %d %q %s", rec.Code, ch, rec.Body)
	}
	if got := counter(t, p.s, "mcpguard_oauth_proxy_tokens_total", "refused"); got != 1 {
		t.Fatalf("refused façade tokens counted %v, want 1", got)
	}
	// The same Entra token presented directly, and another façade token
	// standing for it, still work.
	if rec := p.post(t, "/mcp", entra, callBody("open"), nil); !calledOK(rec) {
		t.Fatalf("direct Entra token: %d %s", rec.Code, rec.Body)
	}
	if rec := p.post(t, "/mcp", f.issue(entra, time.Now().Add(time.Minute)), callBody("open"), nil); !calledOK(rec) {
		t.Fatalf("another façade token: %d %s", rec.Code, rec.Body)
	}
	// And the revoked one stays refused.
	if rec := p.post(t, "/mcp", tok, callBody("open"), nil); rec.Code != http.StatusUnauthorized {
		t.Fatalf("revoked façade token, again: %d", rec.Code)
	}
}

// A token the façade did not issue is verified as an Entra token: a real one
// works, anything else meets the verifier's refusal.
func TestOtherTokensGoToTheVerifier(t *testing.T) {
	p, f, roles := newProxied(t)
	entra := p.token(t, "bob")
	if rec := p.post(t, "/mcp", entra, callBody("open"), nil); !calledOK(rec) {
		t.Fatalf("Entra token with the façade on: %d %s", rec.Code, rec.Body)
	}
	if f.calls() != 1 || len(roles.seen()) != 1 || roles.seen()[0] != entra {
		t.Fatalf("resolves %d, roles handed %d tokens", f.calls(), len(roles.seen()))
	}
	// Verified once, it is answered from the verifier's cache: the façade
	// is not asked again (a proxy token never enters that cache).
	if rec := p.post(t, "/mcp", entra, callBody("open"), nil); !calledOK(rec) || f.calls() != 1 {
		t.Fatalf("the Entra token again: %d, resolves %d", rec.Code, f.calls())
	}
	rec := p.post(t, "/mcp", "not-a-token", callBody("open"), nil)
	if rec.Code != http.StatusUnauthorized || !strings.Contains(rec.Header().Get("WWW-Authenticate"), "invalid_token") {
		t.Fatalf("garbage: %d %q", rec.Code, rec.Header().Get("WWW-Authenticate"))
	}
	// Resolving to something that is not a valid Entra token is no better.
	if rec := p.post(t, "/mcp", f.issue("not-an-entra-token", time.Now().Add(time.Minute)), callBody("open"), nil); rec.Code != http.StatusUnauthorized {
		t.Fatalf("façade token standing for garbage: %d", rec.Code)
	}
	if rec := p.post(t, "/mcp", "", callBody("open"), nil); rec.Code != http.StatusUnauthorized {
		t.Fatalf("no token: %d", rec.Code)
	}
}

// What a façade token opens ends with it, when it ends before the Entra
// token it stands for; never later than the Entra token; and the TokenInfo
// kept for the Entra token is not changed by it.
func TestProxyTokenBoundsTheTokenInfo(t *testing.T) {
	p, f, _ := newProxied(t)
	entra := p.token(t, "ada") // one hour
	id, err := p.s.verifier.Verify(context.Background(), entra)
	if err != nil {
		t.Fatal(err)
	}
	expiry := func(tok string) time.Time {
		t.Helper()
		var got time.Time
		h := p.s.authenticate(http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) {
			if ti, ok := r.Context().Value(tokenInfoKey{}).(*auth.TokenInfo); ok {
				got = ti.Expiration
			}
		}), authn.Challenge{})
		r := httptest.NewRequest(http.MethodPost, "/mcp", nil)
		r.Header.Set("Authorization", "Bearer "+tok)
		h.ServeHTTP(httptest.NewRecorder(), r)
		if got.IsZero() {
			t.Fatal("not authenticated")
		}
		return got
	}
	short := time.Now().Add(5 * time.Minute).Truncate(time.Second)
	if got := expiry(f.issue(entra, short)); !got.Equal(short) {
		t.Fatalf("façade token ending first: TokenInfo expires %v, want %v", got, short)
	}
	if got := expiry(entra); !got.Equal(id.Expiry) {
		t.Fatalf("the Entra token after a short façade token: %v, want %v", got, id.Expiry)
	}
	if got := expiry(f.issue(entra, id.Expiry.Add(time.Hour))); !got.Equal(id.Expiry) {
		t.Fatalf("façade token outliving its Entra token: %v, want %v", got, id.Expiry)
	}
	// A façade token without a readable exp is bounded by its Entra token.
	opaque := "opaque-facade-token"
	f.mu.Lock()
	f.upstream[opaque] = entra
	f.mu.Unlock()
	if got := expiry(opaque); !got.Equal(id.Expiry) {
		t.Fatalf("opaque façade token: %v, want %v", got, id.Expiry)
	}
}

func TestTokenExpiry(t *testing.T) {
	enc := func(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }
	for tok, want := range map[string]int64{
		"h." + enc(`{"exp":1700000000}`) + ".s":   1700000000,
		"h." + enc(`{"exp":1700000000.9}`) + ".s": 1700000000,
		"h." + enc(`{"iat":1}`) + ".s":            0,
		"h." + enc(`{"exp":"soon"}`) + ".s":       0,
		"h." + enc(`{"exp":1}`):                   0,
		"h.!!!.s":                                 0,
		"opaque":                                  0,
	} {
		got := tokenExpiry(tok)
		if (want == 0) != got.IsZero() || (want != 0 && got.Unix() != want) {
			t.Errorf("%q: %v, want %d", tok, got, want)
		}
	}
}

// With the façade on, the RFC 9728 metadata and the challenge name it and
// its scopes, and its paths are served beside the MCP endpoint, whose
// protection is unchanged.
func TestProxyMountedAndNamed(t *testing.T) {
	p, _, _ := newProxied(t)
	for _, path := range []string{"/.well-known/oauth-protected-resource", "/.well-known/oauth-protected-resource/mcp"} {
		rec := httptest.NewRecorder()
		p.h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
		var meta struct {
			Resource             string   `json:"resource"`
			AuthorizationServers []string `json:"authorization_servers"`
			Scopes               []string `json:"scopes_supported"`
		}
		if rec.Code != http.StatusOK || json.Unmarshal(rec.Body.Bytes(), &meta) != nil {
			t.Fatalf("%s: %d %s", path, rec.Code, rec.Body)
		}
		if meta.Resource != protectBase+"/mcp" || strings.Join(meta.AuthorizationServers, " ") != protectBase ||
			strings.Join(meta.Scopes, " ") != "read write" {
			t.Fatalf("%s: %+v", path, meta)
		}
	}
	rec := p.post(t, "/mcp", "", callBody("open"), nil)
	ch := rec.Header().Get("WWW-Authenticate")
	if rec.Code != http.StatusUnauthorized || !strings.Contains(ch, `resource_metadata="`+protectBase+`/.well-known/oauth-protected-resource/mcp"`) ||
		!strings.Contains(ch, `scope="read write"`) {
		t.Fatalf("challenge: %d %q", rec.Code, ch)
	}
	get := httptest.NewRecorder()
	p.h.ServeHTTP(get, httptest.NewRequest(http.MethodGet, "/.well-known/oauth-authorization-server", nil))
	if get.Code != http.StatusOK || !strings.Contains(get.Body.String(), `"issuer"`) {
		t.Fatalf("façade metadata: %d %s", get.Code, get.Body)
	}
	if rec := p.post(t, "/token", "", "grant_type=x", map[string]string{"Content-Type": "application/x-www-form-urlencoded"}); rec.Code != http.StatusOK ||
		rec.Body.String() != "/token endpoint" {
		t.Fatalf("token endpoint: %d %s", rec.Code, rec.Body)
	}
	// Its bodies are bounded well below MAX_REQUEST_BYTES' default.
	big := "grant_type=" + strings.Repeat("x", oauthMaxBody)
	if rec := p.post(t, "/token", "", big, map[string]string{"Content-Type": "application/x-www-form-urlencoded"}); rec.Code != http.StatusRequestEntityTooLarge {
		t.Fatalf("a token request over %d bytes: %d", oauthMaxBody, rec.Code)
	}
	// The server's own paths stay its own.
	health := httptest.NewRecorder()
	p.h.ServeHTTP(health, httptest.NewRequest(http.MethodGet, "/healthz", nil))
	if health.Code != http.StatusOK || !strings.Contains(health.Body.String(), "ok") {
		t.Fatalf("healthz: %d %s", health.Code, health.Body)
	}
	// Browser-based clients reach the token endpoint from any origin; the
	// consent form, which rides on a cookie, and the MCP endpoint do not.
	form := map[string]string{"Content-Type": "application/x-www-form-urlencoded", "Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site"}
	if rec := p.post(t, "/token", "", "grant_type=x", form); rec.Code != http.StatusOK {
		t.Fatalf("cross-origin POST to the token endpoint: %d", rec.Code)
	}
	if rec := p.post(t, "/consent", "", "decision=approve", form); rec.Code != http.StatusForbidden {
		t.Fatalf("cross-origin POST to the consent form: %d", rec.Code)
	}
	if rec := p.post(t, "/mcp", "", callBody("open"), map[string]string{"Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site"}); rec.Code != http.StatusForbidden {
		t.Fatalf("cross-origin POST to the MCP endpoint: %d", rec.Code)
	}
	// Path-suffixed metadata (RFC 8414 §3.1) reaches the façade too.
	for _, path := range []string{"/.well-known/oauth-authorization-server/mcp", "/authorize", "/auth/callback", "/register", "/revoke", "/.well-known/jwks.json"} {
		rec := httptest.NewRecorder()
		p.h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
		// The stand-in serves none of these: its own 404 (a text body) shows
		// the request reached it rather than the server's mux.
		if rec.Code != http.StatusNotFound || !strings.Contains(rec.Body.String(), "404 page not found") {
			t.Errorf("GET %s: %d %q", path, rec.Code, rec.Body)
		}
	}
}

// A façade that cannot reach its store answers 503, as missing Entra keys
// do: the token may be fine, the client should retry, not log in again.
func TestProxyUnavailableIs503(t *testing.T) {
	p, f, _ := newProxied(t)
	tok := f.issue(p.token(t, "ada"), time.Now().Add(time.Minute))
	f.mu.Lock()
	f.down = true
	f.mu.Unlock()
	rec := p.post(t, "/mcp", tok, callBody("open"), nil)
	if rec.Code != http.StatusServiceUnavailable || rec.Header().Get("Retry-After") == "" {
		t.Fatalf("store down: %d %v %s", rec.Code, rec.Header(), rec.Body)
	}
	if got := counter(t, p.s, "mcpguard_oauth_proxy_tokens_total", "unavailable"); got != 1 {
		t.Fatalf("unavailable counted %v", got)
	}
}

// Without the façade nothing changes: the metadata names Entra, the
// challenge Entra's scopes, and the façade's paths are not there.
func TestProxyOffServesNoFacade(t *testing.T) {
	p := newProtected(t, nil)
	for _, path := range []string{"/.well-known/oauth-authorization-server", "/authorize", "/register", "/auth/callback", "/token", "/revoke"} {
		rec := httptest.NewRecorder()
		p.h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
		if rec.Code != http.StatusNotFound {
			t.Errorf("GET %s: %d", path, rec.Code)
		}
	}
	rec := p.post(t, "/mcp", "", callBody("open"), nil)
	if ch := rec.Header().Get("WWW-Authenticate"); !strings.Contains(ch, `scope="api://mcpguard/read api://mcpguard/write"`) {
		t.Fatalf("challenge: %q", ch)
	}
	if got := counter(t, p.s, "mcpguard_oauth_proxy_tokens_total", "resolved"); got != 0 {
		t.Fatalf("counted %v", got)
	}
}

// counter reads one series of a counter vector with a "result" label.
func counter(t *testing.T, s *Server, name, result string) float64 {
	t.Helper()
	rec := httptest.NewRecorder()
	s.metrics.handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	prefix := name + `{result="` + result + `"} `
	for _, line := range strings.Split(rec.Body.String(), "\n") {
		if v, ok := strings.CutPrefix(line, prefix); ok {
			var n float64
			if _, err := fmt.Sscan(v, &n); err != nil {
				t.Fatalf("metric line %q", line)
			}
			return n
		}
	}
	return 0
}

// With OAUTH_PROXY=true the server builds the façade from its settings:
// its issuer is the server's public URL, the RFC 9728 metadata names it,
// its RFC 8414 metadata is served here (at the root and path-suffixed), and
// its refusals are counted among the server's metrics.
func TestFacadeFromConfiguration(t *testing.T) {
	p := newProtected(t, map[string]string{"OAUTH_PROXY": "true", "AZURE_CLIENT_SECRET": "s3cret", "AZURE_BASE_URL": "http://127.0.0.1:8000"})
	const base = "http://127.0.0.1:8000"
	get := func(path string, v any) {
		t.Helper()
		rec := httptest.NewRecorder()
		p.h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
		if rec.Code != http.StatusOK || json.Unmarshal(rec.Body.Bytes(), v) != nil {
			t.Fatalf("GET %s: %d %s", path, rec.Code, rec.Body)
		}
	}
	var prm struct {
		Resource             string   `json:"resource"`
		AuthorizationServers []string `json:"authorization_servers"`
		Scopes               []string `json:"scopes_supported"`
		Name                 string   `json:"resource_name"`
	}
	get("/.well-known/oauth-protected-resource/mcp", &prm)
	if prm.Resource != base+"/mcp" || strings.Join(prm.AuthorizationServers, " ") != base || strings.Join(prm.Scopes, " ") != "read write" ||
		prm.Name != "mcpguard" {
		t.Fatalf("protected resource metadata: %+v", prm)
	}
	for _, path := range []string{"/.well-known/oauth-authorization-server", "/.well-known/oauth-authorization-server/mcp"} {
		var asm struct {
			Issuer        string   `json:"issuer"`
			Authorization string   `json:"authorization_endpoint"`
			Token         string   `json:"token_endpoint"`
			PKCE          []string `json:"code_challenge_methods_supported"`
		}
		get(path, &asm)
		if asm.Issuer != base || asm.Authorization != base+"/authorize" || asm.Token != base+"/token" || strings.Join(asm.PKCE, " ") != "S256" {
			t.Fatalf("%s: %+v", path, asm)
		}
	}
	// A token of the façade's shape that it did not sign is refused, and
	// counted by the façade.
	rec := p.post(t, "/mcp", "eyJhbGciOiJFZERTQSIsImtpZCI6IngifQ.eyJpc3MiOiJodHRwOi8vMTI3LjAuMC4xOjgwMDAifQ.c2ln", callBody("open"), nil)
	if rec.Code != http.StatusUnauthorized {
		t.Fatalf("forged façade token: %d %s", rec.Code, rec.Body)
	}
	metrics := httptest.NewRecorder()
	p.s.metrics.handler().ServeHTTP(metrics, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	if !strings.Contains(metrics.Body.String(), "mcpguard_oauth_refusals_total") {
		t.Fatal("the façade's refusals are not among the server's metrics")
	}
	// Direct Entra tokens keep working beside it.
	if rec := p.post(t, "/mcp", p.token(t, "ada"), callBody("open"), nil); !calledOK(rec) {
		t.Fatalf("Entra token with the façade on: %d %s", rec.Code, rec.Body)
	}
}

// A façade the server cannot build stops the start, naming OAUTH_PROXY.
func TestFacadeMisconfiguredRefusesToStart(t *testing.T) {
	cfg := *newProtected(t, nil).s.cfg
	cfg.OAuthProxy.Enabled = true // AZURE_CLIENT_SECRET left empty, behind config's back
	_, err := New(context.Background(), &cfg, Options{Roles: &tokenRoles{}})
	if err == nil || !strings.Contains(err.Error(), "OAUTH_PROXY") {
		t.Fatalf("New: %v", err)
	}
}

// The façade's store is Redis itself when Redis is configured: a write
// while Redis is down fails, instead of landing in a memory fallback that
// Redis, once back, would contradict (a revocation undone). Without Redis
// it is memory, sealed all the same.
func TestProxyStoreHasNoMemoryFallback(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	ln.Close() // nothing answers there now
	base := *newProtected(t, nil).s.cfg
	base.StorageEncryptionKey = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="
	down := base
	down.Redis = config.Redis{Host: "127.0.0.1", Port: mustAtoi(t, port)}
	st, err := proxyStore(&down, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := st.(*store.Encrypted); !ok {
		t.Fatalf("the store is a %T, not sealed", st)
	}
	if err := st.Set(context.Background(), "k", []byte("v"), time.Minute); err == nil {
		t.Fatal("a write with Redis down succeeded: it went somewhere else")
	}
	mem, err := proxyStore(&base, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := mem.(*store.Encrypted); !ok {
		t.Fatalf("the memory store is a %T, not sealed", mem)
	}
	if err := mem.Set(context.Background(), "k", []byte("v"), time.Minute); err != nil {
		t.Fatal(err)
	}
	if v, err := mem.Get(context.Background(), "k"); err != nil || string(v) != "v" {
		t.Fatalf("memory store: %q %v", v, err)
	}
}

// Without Redis the façade's store never drops a live record to make room:
// an unauthenticated flood (registrations, authorization requests) that
// fills it gets refusals, and every spent code, used refresh token and
// revocation written before stays. (It was a cache that dropped random
// live entries when full: the flood made it forget revocations.)
func TestProxyMemoryStoreForgetsNothingWhenFull(t *testing.T) {
	cfg := *newProtected(t, nil).s.cfg
	cfg.StorageEncryptionKey = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="
	st, err := proxyStore(&cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for i := range proxyMemoryRecords {
		if err := st.Set(ctx, "k"+strconv.Itoa(i), []byte("v"), time.Hour); err != nil {
			t.Fatalf("record %d: %v", i, err)
		}
	}
	if err := st.Set(ctx, "one-too-many", []byte("v"), time.Hour); !errors.Is(err, store.ErrFull) {
		t.Fatalf("a write to the full store: %v, want store.ErrFull", err)
	}
	for i := range proxyMemoryRecords {
		if _, err := st.Get(ctx, "k"+strconv.Itoa(i)); err != nil {
			t.Fatalf("record %d was dropped: %v", i, err)
		}
	}
}

func mustAtoi(t *testing.T, s string) int {
	t.Helper()
	n, err := strconv.Atoi(s)
	if err != nil {
		t.Fatal(err)
	}
	return n
}
