package oauthproxy_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwk"
	"github.com/lestrrat-go/jwx/v2/jwt"
	"golang.org/x/oauth2"

	"github.com/mcpguard/mcpguard/internal/devidp"
	"github.com/mcpguard/mcpguard/internal/oauthproxy"
)

// upstreamClaims verifies an upstream token against the development
// identity provider's published keys and returns its claims.
func (r *rig) upstreamClaims(t *testing.T, tok string) map[string]any {
	t.Helper()
	set, err := jwk.Fetch(context.Background(), r.idpURL+"/"+tenant+"/discovery/v2.0/keys")
	if err != nil {
		t.Fatal(err)
	}
	parsed, err := jwt.Parse([]byte(tok), jwt.WithKeySet(set), jwt.WithValidate(true),
		jwt.WithClock(jwt.ClockFunc(r.clock.Now)))
	if err != nil {
		t.Fatalf("upstream token does not verify: %v", err)
	}
	m, _ := parsed.AsMap(context.Background())
	return m
}

func TestMetadataAtBothLocations(t *testing.T) {
	r := newRig(t, rigOptions{})
	for _, path := range []string{"/.well-known/oauth-authorization-server", "/.well-known/oauth-authorization-server/mcp"} {
		resp, err := http.Get(r.base + path)
		if err != nil {
			t.Fatal(err)
		}
		var m map[string]any
		_ = json.NewDecoder(resp.Body).Decode(&m)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || resp.Header.Get("Access-Control-Allow-Origin") != "*" {
			t.Fatalf("%s: status %d, CORS %q", path, resp.StatusCode, resp.Header.Get("Access-Control-Allow-Origin"))
		}
		want := map[string]any{
			"issuer": r.base, "authorization_endpoint": r.base + "/authorize", "token_endpoint": r.base + "/token",
			"registration_endpoint": r.base + "/register", "revocation_endpoint": r.base + "/revoke",
			"jwks_uri": r.base + "/.well-known/jwks.json", "client_id_metadata_document_supported": true,
			"authorization_response_iss_parameter_supported": true,
		}
		for k, v := range want {
			if m[k] != v {
				t.Errorf("%s: %s = %v, want %v", path, k, m[k], v)
			}
		}
		if got, _ := json.Marshal(m["code_challenge_methods_supported"]); string(got) != `["S256"]` {
			t.Errorf("%s: code_challenge_methods_supported %s", path, got)
		}
	}
	// Browser clients' preflights (the TS SDK sends MCP-Protocol-Version).
	for _, path := range []string{"/.well-known/oauth-authorization-server/mcp", "/token", "/register", "/revoke"} {
		req, _ := http.NewRequest(http.MethodOptions, r.base+path, nil)
		req.Header.Set("Origin", "http://localhost:6274")
		req.Header.Set("Access-Control-Request-Method", "POST")
		req.Header.Set("Access-Control-Request-Headers", "mcp-protocol-version, content-type")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusNoContent || resp.Header.Get("Access-Control-Allow-Origin") != "*" ||
			!strings.Contains(resp.Header.Get("Access-Control-Allow-Headers"), "MCP-Protocol-Version") {
			t.Errorf("preflight %s: %d %v", path, resp.StatusCode, resp.Header)
		}
	}
	md := r.proxy().Metadata()
	if md.Resource != r.resource || !slices.Equal(md.AuthorizationServers, []string{r.base}) || !slices.Equal(md.ScopesSupported, []string{"read", "write"}) {
		t.Fatalf("protected-resource metadata: %+v", md)
	}
}

// TestFlowRegisteredClient: discovery, registration, authorize, consent,
// the Entra leg (without resource: the identity provider refuses it, as
// Entra does), callback with iss, token, resolution to the user's Entra
// token, refresh.
func TestFlowRegisteredClient(t *testing.T) {
	r := newRig(t, rigOptions{})
	id, status := r.register(t)
	if status != http.StatusCreated || id == "" {
		t.Fatalf("registration: %d %q", status, id)
	}
	c := r.client(id, "read")
	tok := r.login(t, c)
	if tok.RefreshToken == "" || tok.TokenType != "Bearer" || tok.ExpiresIn != 600 {
		t.Fatalf("token response: %+v", tok)
	}
	for _, q := range r.wire.authorize {
		if q.Has("resource") {
			t.Fatalf("the upstream authorize request carried resource: %v", q)
		}
		if got := q.Get("scope"); got != "api://"+apiClient+"/read offline_access" {
			t.Fatalf("upstream scope %q", got)
		}
		if q.Get("code_challenge_method") != "S256" || q.Get("code_challenge") == "" {
			t.Fatalf("the upstream leg has no PKCE of its own: %v", q)
		}
	}
	up, err := r.proxy().Resolve(context.Background(), tok.AccessToken)
	if err != nil {
		t.Fatal(err)
	}
	claims := r.upstreamClaims(t, up)
	if claims["oid"] != devidp.ObjectIDFor("alice") || claims["scp"] != "read" || !slices.Equal(claims["aud"].([]string), []string{apiClient}) {
		t.Fatalf("upstream token claims: %v", claims)
	}
	if up == tok.AccessToken {
		t.Fatal("the proxy token was handed on")
	}

	// Refresh: rotated, and the new access token resolves to the same user.
	stale := &oauth2.Token{RefreshToken: tok.RefreshToken, Expiry: time.Now().Add(-time.Hour)}
	nt, err := c.conf.TokenSource(context.Background(), stale).Token()
	if err != nil {
		t.Fatal(err)
	}
	if nt.RefreshToken == tok.RefreshToken || nt.AccessToken == tok.AccessToken {
		t.Fatal("refresh did not rotate")
	}
	if up2, err := r.proxy().Resolve(context.Background(), nt.AccessToken); err != nil || up2 != up {
		t.Fatalf("refreshed token: %v (same upstream token: %v)", err, up2 == up)
	}
}

func TestResolveRefusesWhatIsNotItsToken(t *testing.T) {
	r := newRig(t, rigOptions{})
	entra, err := r.idp.Mint(devidp.Token{Audience: apiClient, User: "alice", Scopes: []string{"read"}})
	if err != nil {
		t.Fatal(err)
	}
	for name, tok := range map[string]string{"entra token": entra, "opaque": "abc", "empty": "", "two segments": "a.b"} {
		if _, err := r.proxy().Resolve(context.Background(), tok); !errors.Is(err, oauthproxy.ErrNotProxyToken) {
			t.Errorf("%s: %v, want ErrNotProxyToken", name, err)
		}
	}
}

// TestJWKSVerifiesAccessTokens: the published keys verify the proxy's access
// tokens, so the key is asymmetric and the JWKS is the right one.
func TestJWKSVerifiesAccessTokens(t *testing.T) {
	r := newRig(t, rigOptions{})
	id, _ := r.register(t)
	tok := r.login(t, r.client(id))
	set, err := jwk.Fetch(context.Background(), r.base+"/.well-known/jwks.json")
	if err != nil {
		t.Fatal(err)
	}
	key, _ := set.Key(0)
	if key.KeyType().String() != "OKP" {
		t.Fatalf("published key type %s", key.KeyType())
	}
	if _, ok := key.(jwk.OKPPrivateKey); ok {
		t.Fatal("the private key is published")
	}
	parsed, err := jwt.Parse([]byte(tok.AccessToken), jwt.WithKeySet(set), jwt.WithValidate(true),
		jwt.WithAudience(r.resource), jwt.WithIssuer(r.base), jwt.WithClock(jwt.ClockFunc(r.clock.Now)))
	if err != nil {
		t.Fatal(err)
	}
	if exp := parsed.Expiration().Sub(parsed.IssuedAt()); exp != 10*time.Minute {
		t.Fatalf("access token lifetime %s", exp)
	}
	for _, c := range []string{"client_id", "sid", "jti"} {
		if v, ok := parsed.Get(c); !ok || v == "" {
			t.Fatalf("claim %s missing", c)
		}
	}
	if v, _ := parsed.Get("client_id"); v != id {
		t.Fatalf("client_id claim %v", v)
	}
}

// TestResolveRefreshesUpstreamNearExpiry: an upstream token within a minute
// of expiry is refreshed upstream (with the upstream refresh token), once.
func TestResolveRefreshesUpstreamNearExpiry(t *testing.T) {
	r := newRig(t, rigOptions{})
	r.idp.SetTokenLifetime(5 * time.Minute)
	id, _ := r.register(t)
	tok := r.login(t, r.client(id, "read"))
	first, err := r.proxy().Resolve(context.Background(), tok.AccessToken)
	if err != nil {
		t.Fatal(err)
	}
	r.clock.Advance(3*time.Minute + 30*time.Second) // 90 s left: no refresh yet
	if again, _ := r.proxy().Resolve(context.Background(), tok.AccessToken); again != first || r.idp.TokenRequests("refresh_token") != 0 {
		t.Fatal("refreshed too early")
	}
	r.clock.Advance(31 * time.Second) // 59 s left
	second, err := r.proxy().Resolve(context.Background(), tok.AccessToken)
	if err != nil {
		t.Fatal(err)
	}
	if second == first || r.idp.TokenRequests("refresh_token") != 1 {
		t.Fatalf("upstream not refreshed: same token %v, %d refreshes", second == first, r.idp.TokenRequests("refresh_token"))
	}
	if third, _ := r.proxy().Resolve(context.Background(), tok.AccessToken); third != second || r.idp.TokenRequests("refresh_token") != 1 {
		t.Fatal("the refreshed upstream token was not kept")
	}
	if c := r.upstreamClaims(t, second); c["oid"] != devidp.ObjectIDFor("alice") || c["scp"] != "read" {
		t.Fatalf("refreshed upstream token claims: %v", c)
	}
}

// TestUpstreamRefreshRefusedEndsTheSignIn: when Entra refuses the upstream
// refresh token (sessions revoked), the proxy's sign-in ends with it.
func TestUpstreamRefreshRefusedEndsTheSignIn(t *testing.T) {
	r := newRig(t, rigOptions{})
	r.idp.SetTokenLifetime(2 * time.Minute)
	id, _ := r.register(t)
	tok := r.login(t, r.client(id))
	r.idp.RevokeUser("alice")
	r.clock.Advance(90 * time.Second)
	if _, err := r.proxy().Resolve(context.Background(), tok.AccessToken); !errors.Is(err, oauthproxy.ErrInvalidToken) {
		t.Fatalf("resolve after upstream revocation: %v", err)
	}
	if r.refusals("upstream_refresh") != 1 {
		t.Fatal("upstream refusal not counted")
	}
	if status, code, _ := r.refresh(t, id, tok.RefreshToken); status != http.StatusBadRequest || code != "invalid_grant" {
		t.Fatalf("refresh after the sign-in ended: %d %s", status, code)
	}
}

// TestConsentDenied sends the user's refusal back to the client, and nothing
// to the identity provider.
func TestConsentDenied(t *testing.T) {
	r := newRig(t, rigOptions{})
	id, _ := r.register(t)
	c := r.client(id)
	b := newBrowser(t)
	pg := b.get(c.authURL())
	form := pg.consent(t)
	for _, want := range []string{"Test Client", "127.0.0.1:9", "read", "write", "not verified"} {
		if !strings.Contains(pg.body, want) {
			t.Errorf("consent page does not show %q", want)
		}
	}
	out := b.post(form.action, form.values("deny"), nil)
	if out.back == nil || out.back.Query().Get("error") != "access_denied" || out.back.Query().Get("state") != c.state || out.back.Query().Get("iss") != r.base {
		t.Fatalf("deny: %+v", out)
	}
	if len(r.wire.authorize) != 0 {
		t.Fatal("the identity provider was asked after a denial")
	}
}
