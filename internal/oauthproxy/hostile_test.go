package oauthproxy_test

import (
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"maps"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jwk"
	"github.com/lestrrat-go/jwx/v2/jws"
	"golang.org/x/oauth2"

	"github.com/mcpguard/mcpguard/internal/oauthproxy"
	"github.com/mcpguard/mcpguard/internal/store"
)

// counted checks that a refusal was counted under reason, n times in all.
func (r *rig) counted(t *testing.T, reason string, n float64) {
	t.Helper()
	if got := r.refusals(reason); got != n {
		t.Fatalf("refusals %q = %v, want %v", reason, got, n)
	}
}

func grantCode(err error) string {
	var re *oauth2.RetrieveError
	if errors.As(err, &re) {
		return re.ErrorCode
	}
	return ""
}

func TestHostileWrongPKCEVerifier(t *testing.T) {
	r := newRig(t, rigOptions{})
	id, _ := r.register(t)
	c := r.client(id)
	code := r.code(t, c)
	right := c.verifier
	c.verifier = oauth2.GenerateVerifier()
	if _, err := c.exchange(code); grantCode(err) != "invalid_grant" {
		t.Fatalf("wrong verifier: %v", err)
	}
	r.counted(t, "pkce_verifier", 1)
	// The code was tried once: the right verifier now comes too late.
	c.verifier = right
	if _, err := c.exchange(code); grantCode(err) != "invalid_grant" {
		t.Fatalf("the code survived a wrong verifier: %v", err)
	}
	r.counted(t, "code_reuse", 1)
}

func TestHostileReusedCodeRevokesWhatItIssued(t *testing.T) {
	r := newRig(t, rigOptions{})
	id, _ := r.register(t)
	c := r.client(id)
	code := r.code(t, c)
	tok, err := c.exchange(code)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.proxy().Resolve(context.Background(), tok.AccessToken); err != nil {
		t.Fatal(err)
	}
	if _, err := c.exchange(code); grantCode(err) != "invalid_grant" {
		t.Fatalf("reused code: %v", err)
	}
	r.counted(t, "code_reuse", 1)
	if _, err := r.proxy().Resolve(context.Background(), tok.AccessToken); !errors.Is(err, oauthproxy.ErrInvalidToken) {
		t.Fatalf("access token of a reused code still resolves: %v", err)
	}
	if status, code, _ := r.refresh(t, id, tok.RefreshToken); status != http.StatusBadRequest || code != "invalid_grant" {
		t.Fatalf("refresh token of a reused code: %d %s", status, code)
	}
}

func TestHostileRedirectURIMismatchAndOpenRedirect(t *testing.T) {
	r := newRig(t, rigOptions{})
	id, _ := r.register(t)

	// At /authorize: never redirected to a URI that is not the client's.
	for name, q := range map[string]url.Values{
		"foreign host":           {"client_id": {id}, "redirect_uri": {"https://evil.example/cb"}},
		"other loopback path":    {"client_id": {id}, "redirect_uri": {"http://127.0.0.1:9/other"}},
		"localhost for 127":      {"client_id": {id}, "redirect_uri": {"http://localhost:9/callback"}},
		"userinfo trick":         {"client_id": {id}, "redirect_uri": {"http://127.0.0.1:9@evil.example/callback"}},
		"no redirect_uri":        {"client_id": {id}},
		"unknown client":         {"client_id": {"nobody"}, "redirect_uri": {"https://evil.example/cb"}},
		"unknown client no id":   {"redirect_uri": {"https://evil.example/cb"}},
		"repeated redirect_uri":  {"client_id": {id}, "redirect_uri": {clientRedirect, "https://evil.example/cb"}},
		"javascript redirect":    {"client_id": {id}, "redirect_uri": {"javascript:alert(1)"}},
		"fragment on loopback":   {"client_id": {id}, "redirect_uri": {clientRedirect + "#x"}},
		"query added on loopbak": {"client_id": {id}, "redirect_uri": {clientRedirect + "?next=https://evil.example"}},
	} {
		q.Set("response_type", "code")
		q.Set("state", "s")
		q.Set("code_challenge", strings.Repeat("a", 43))
		q.Set("code_challenge_method", "S256")
		pg := newBrowser(t).get(r.base + "/authorize?" + q.Encode())
		if pg.back != nil || pg.status != http.StatusBadRequest {
			t.Errorf("%s: status %d, redirected to %v", name, pg.status, pg.back)
		}
	}
	r.counted(t, "redirect_uri", 8)
	r.counted(t, "unknown_client", 2)
	r.counted(t, "invalid_request", 1)

	// A loopback redirect URI matches on any port (RFC 8252 §7.3) and on
	// nothing else.
	c := r.client(id)
	c.conf.RedirectURL = "http://127.0.0.1:9/callback"
	if pg := newBrowser(t).get(strings.Replace(c.authURL(), url.QueryEscape("127.0.0.1:9"), url.QueryEscape("127.0.0.1:8"), 1)); pg.status != http.StatusOK {
		t.Fatalf("loopback on another port refused: %d", pg.status)
	}

	// Registration refuses redirect URIs that are neither loopback nor on
	// the allow-list.
	for _, bad := range []string{"https://evil.example/cb", "http://evil.example/cb", "http://10.0.0.1/cb", "custom:/cb",
		"javascript:alert(1)", "https://app.example.com/cb#frag", "https://user@app.example.com/cb", "/relative"} {
		if _, status := r.register(t, bad); status != http.StatusBadRequest {
			t.Errorf("registration with %q: %d", bad, status)
		}
	}
	r.counted(t, "registration", 8)
	if _, status := r.register(t, "https://app.example.com/cb", "http://[::1]:7/cb", "http://localhost/cb"); status != http.StatusCreated {
		t.Fatalf("allowed redirect URIs refused: %d", status)
	}

	// At /token: redirect_uri must be the authorization request's.
	code := r.code(t, c)
	status, ecode, _ := r.postToken(t, url.Values{"grant_type": {"authorization_code"}, "code": {code}, "client_id": {id},
		"redirect_uri": {"http://127.0.0.1:9/elsewhere"}, "code_verifier": {c.verifier}})
	if status != http.StatusBadRequest || ecode != "invalid_grant" {
		t.Fatalf("token with another redirect_uri: %d %s", status, ecode)
	}
	r.counted(t, "redirect_uri", 9)
}

func TestHostileExpiredCode(t *testing.T) {
	r := newRig(t, rigOptions{})
	id, _ := r.register(t)
	c := r.client(id)
	code := r.code(t, c)
	r.clock.Advance(5 * time.Minute)
	if _, err := c.exchange(code); grantCode(err) != "invalid_grant" {
		t.Fatalf("expired code: %v", err)
	}
	r.counted(t, "code_expired", 1)
}

func TestHostileTamperedState(t *testing.T) {
	r := newRig(t, rigOptions{})
	id, _ := r.register(t)
	c := r.client(id)
	b := newBrowser(t)
	form := b.get(c.authURL()).consent(t)
	// Stop at the identity provider's redirect back, to hold the callback.
	stopAtClient := b.hc.CheckRedirect
	b.hc.CheckRedirect = func(req *http.Request, _ []*http.Request) error {
		if strings.HasPrefix(req.URL.Path, "/auth/callback") {
			return http.ErrUseLastResponse
		}
		return nil
	}
	pg := b.post(form.action, form.values("approve"), nil)
	if pg.back == nil || pg.back.Path != "/auth/callback" {
		t.Fatalf("no callback: %+v", pg)
	}
	cb := pg.back
	q := cb.Query()
	tampered := *cb
	tq := cb.Query()
	tq.Set("state", q.Get("state")[:len(q.Get("state"))-2]+"xx")
	tampered.RawQuery = tq.Encode()
	b.hc.CheckRedirect = stopAtClient
	if out := b.get(tampered.String()); out.status != http.StatusBadRequest || out.back != nil {
		t.Fatalf("tampered state: %d, redirected to %v", out.status, out.back)
	}
	r.counted(t, "state", 1)
	// The right state in another browser (no cookie): refused too.
	if out := newBrowser(t).get(cb.String()); out.status != http.StatusForbidden || out.back != nil {
		t.Fatalf("callback in another browser: %d, redirected to %v", out.status, out.back)
	}
	r.counted(t, "state_browser", 1)
	// And in the right browser it completes, once, even with the cookie the
	// callback clears put back.
	base, _ := url.Parse(r.base)
	kept := b.hc.Jar.Cookies(base)
	if out := b.get(cb.String()); out.back == nil || out.back.Query().Get("code") == "" {
		t.Fatalf("the genuine callback failed: %+v", out)
	}
	b.hc.Jar.SetCookies(base, kept)
	if out := b.get(cb.String()); out.status != http.StatusBadRequest || out.back != nil {
		t.Fatalf("callback replayed: %d", out.status)
	}
	r.counted(t, "state_replay", 1)
}

func TestHostileConsentCSRF(t *testing.T) {
	r := newRig(t, rigOptions{})
	id, _ := r.register(t)
	c := r.client(id)
	victim := newBrowser(t)
	form := victim.get(c.authURL()).consent(t)

	// An attacker's page makes another browser post the form: no cookie.
	if pg := newBrowser(t).post(form.action, form.values("approve"), nil); pg.status != http.StatusForbidden {
		t.Fatalf("consent without the cookie: %d", pg.status)
	}
	// The victim's browser, posting cross-site (what a browser says).
	if pg := victim.post(form.action, form.values("approve"), http.Header{"Origin": {"https://evil.example"}, "Sec-Fetch-Site": {"cross-site"}}); pg.status != http.StatusForbidden {
		t.Fatalf("cross-site consent: %d", pg.status)
	}
	// The victim's cookie with a wrong form token.
	bad := form
	bad.csrf = strings.Repeat("A", len(form.csrf))
	if pg := victim.post(form.action, bad.values("approve"), nil); pg.status != http.StatusForbidden {
		t.Fatalf("consent with a wrong token: %d", pg.status)
	}
	r.counted(t, "csrf", 3)
	if len(r.wire.authorize) != 0 {
		t.Fatal("a forged consent reached the identity provider")
	}
	// The genuine answer still works, once: even with the browser's cookie
	// put back (the callback clears it), a second answer is refused.
	base, _ := url.Parse(r.base)
	kept := victim.hc.Jar.Cookies(base)
	if pg := victim.post(form.action, form.values("approve"), nil); pg.back == nil || pg.back.Query().Get("code") == "" {
		t.Fatalf("genuine consent: %+v", pg)
	}
	victim.hc.Jar.SetCookies(base, kept)
	if pg := victim.post(form.action, form.values("approve"), nil); pg.status != http.StatusBadRequest {
		t.Fatalf("consent replayed: %d", pg.status)
	}
	r.counted(t, "consent_replay", 1)
}

func TestHostileRefreshReuseRevokesFamily(t *testing.T) {
	r := newRig(t, rigOptions{})
	id, _ := r.register(t)
	tok := r.login(t, r.client(id))
	status, _, body := r.refresh(t, id, tok.RefreshToken)
	if status != http.StatusOK {
		t.Fatalf("first refresh: %d %v", status, body)
	}
	rt2, at2 := body["refresh_token"].(string), body["access_token"].(string)
	if _, err := r.proxy().Resolve(context.Background(), at2); err != nil {
		t.Fatal(err)
	}
	// The first refresh token again (a thief, or a replay): refused, and the
	// whole family with it.
	if status, code, _ := r.refresh(t, id, tok.RefreshToken); status != http.StatusBadRequest || code != "invalid_grant" {
		t.Fatalf("reused refresh token: %d %s", status, code)
	}
	r.counted(t, "refresh_reuse", 1)
	if status, code, _ := r.refresh(t, id, rt2); status != http.StatusBadRequest || code != "invalid_grant" {
		t.Fatalf("the family's newest refresh token after a reuse: %d %s", status, code)
	}
	r.counted(t, "token_revoked", 1)
	for _, at := range []string{tok.AccessToken, at2} {
		if _, err := r.proxy().Resolve(context.Background(), at); !errors.Is(err, oauthproxy.ErrInvalidToken) {
			t.Fatalf("access token of a revoked family: %v", err)
		}
	}
}

func TestHostileRevokedTokenReplayed(t *testing.T) {
	r := newRig(t, rigOptions{})
	id, _ := r.register(t)

	// An access token revoked: refused from then on; its family lives on.
	tok := r.login(t, r.client(id))
	if s := r.revoke(t, url.Values{"token": {tok.AccessToken}, "client_id": {id}}); s != http.StatusOK {
		t.Fatalf("revoke: %d", s)
	}
	if _, err := r.proxy().Resolve(context.Background(), tok.AccessToken); !errors.Is(err, oauthproxy.ErrInvalidToken) {
		t.Fatalf("revoked access token: %v", err)
	}
	r.counted(t, "token_revoked", 1)
	if status, _, _ := r.refresh(t, id, tok.RefreshToken); status != http.StatusOK {
		t.Fatalf("refresh after an access token's revocation: %d", status)
	}

	// A refresh token revoked: it, and every token of its sign-in, refused.
	tok = r.login(t, r.client(id))
	if s := r.revoke(t, url.Values{"token": {tok.RefreshToken}, "token_type_hint": {"refresh_token"}, "client_id": {id}}); s != http.StatusOK {
		t.Fatalf("revoke: %d", s)
	}
	if status, code, _ := r.refresh(t, id, tok.RefreshToken); status != http.StatusBadRequest || code != "invalid_grant" {
		t.Fatalf("revoked refresh token replayed: %d %s", status, code)
	}
	if _, err := r.proxy().Resolve(context.Background(), tok.AccessToken); !errors.Is(err, oauthproxy.ErrInvalidToken) {
		t.Fatalf("access token of a revoked sign-in: %v", err)
	}
	// Unknown tokens and another client's tokens: 200, nothing revoked.
	tok = r.login(t, r.client(id))
	for _, f := range []url.Values{{"token": {"garbage"}}, {"token": {tok.RefreshToken}, "client_id": {"someone-else"}}} {
		if s := r.revoke(t, f); s != http.StatusOK {
			t.Fatalf("revoke %v: %d", f, s)
		}
	}
	if _, err := r.proxy().Resolve(context.Background(), tok.AccessToken); err != nil {
		t.Fatalf("another client revoked this sign-in: %v", err)
	}
}

// TestHostileTokenForAnotherResource: a token this same authorization
// server (same issuer, key and store) minted for another MCP resource is
// refused here, and a client cannot ask here for another resource.
func TestHostileTokenForAnotherResource(t *testing.T) {
	shared := sealed(t, store.NewMemory(0))
	here := newRig(t, rigOptions{stores: []store.Store{shared}})
	cfg := here.config()
	cfg.Resource = here.base + "/other-mcp"
	other, err := oauthproxy.New(context.Background(), cfg, shared, nil)
	if err != nil {
		t.Fatal(err)
	}
	oauthproxy.SetClock(other, here.clock.Now)
	ln := listen(t)
	serve(t, ln, other.Handler())
	id, _ := here.register(t)

	c := here.client(id)
	c.conf.Endpoint = oauth2.Endpoint{AuthURL: "http://" + ln.Addr().String() + "/authorize", TokenURL: "http://" + ln.Addr().String() + "/token", AuthStyle: oauth2.AuthStyleInParams}
	c.resource = cfg.Resource
	tok := here.login(t, c)
	if _, err := other.Resolve(context.Background(), tok.AccessToken); err != nil {
		t.Fatalf("the other resource's own token: %v", err)
	}
	if _, err := here.proxy().Resolve(context.Background(), tok.AccessToken); !errors.Is(err, oauthproxy.ErrInvalidToken) {
		t.Fatalf("a token for another resource: %v", err)
	}
	here.counted(t, "token_audience", 1)

	c = here.client(id)
	c.resource = cfg.Resource
	pg := newBrowser(t).get(c.authURL())
	if pg.back == nil || pg.back.Query().Get("error") != "invalid_target" {
		t.Fatalf("authorize for another resource: %+v", pg)
	}
	here.counted(t, "resource", 1)
	status, ecode, _ := here.postToken(t, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {"x"}, "client_id": {id}, "resource": {"https://elsewhere.example/mcp"}})
	if status != http.StatusBadRequest || ecode != "invalid_target" {
		t.Fatalf("token for another resource: %d %s", status, ecode)
	}
	here.counted(t, "resource", 2)
}

// TestHostileAuthorizeParameters: plain PKCE, no PKCE, no state, unknown
// scope and a repeated parameter are refused, back to the (verified) client.
func TestHostileAuthorizeParameters(t *testing.T) {
	r := newRig(t, rigOptions{})
	id, _ := r.register(t)
	for name, tc := range map[string]struct {
		edit   func(url.Values)
		code   string
		reason string
	}{
		"plain PKCE": {func(q url.Values) {
			q.Set("code_challenge_method", "plain")
			q.Set("code_challenge", strings.Repeat("v", 43))
		}, "invalid_request", "pkce_method"},
		"no PKCE":       {func(q url.Values) { q.Del("code_challenge"); q.Del("code_challenge_method") }, "invalid_request", "pkce_method"},
		"no state":      {func(q url.Values) { q.Del("state") }, "invalid_request", "state_missing"},
		"unknown scope": {func(q url.Values) { q.Set("scope", "read admin") }, "invalid_scope", "scope"},
		"token flow":    {func(q url.Values) { q.Set("response_type", "token") }, "unsupported_response_type", "invalid_request"},
	} {
		c := r.client(id)
		u, _ := url.Parse(c.authURL())
		q := u.Query()
		tc.edit(q)
		u.RawQuery = q.Encode()
		before := r.refusals(tc.reason)
		pg := newBrowser(t).get(u.String())
		if pg.back == nil || pg.back.Host != clientHost || pg.back.Query().Get("error") != tc.code || pg.back.Query().Get("iss") != r.base {
			t.Errorf("%s: %+v", name, pg)
		}
		if r.refusals(tc.reason) != before+1 {
			t.Errorf("%s: not counted as %s", name, tc.reason)
		}
	}
	// A repeated parameter is malformed: shown, not redirected.
	c := r.client(id)
	if pg := newBrowser(t).get(c.authURL() + "&state=again"); pg.status != http.StatusBadRequest || pg.back != nil {
		t.Fatalf("repeated state: %+v", pg)
	}
}

// TestHostileForgedAccessTokens: tokens that claim this issuer but are not
// what it signed are refused, never passed on as "not ours".
func TestHostileForgedAccessTokens(t *testing.T) {
	r := newRig(t, rigOptions{})
	id, _ := r.register(t)
	tok := r.login(t, r.client(id))
	set, err := jwk.Fetch(context.Background(), r.base+"/.well-known/jwks.json")
	if err != nil {
		t.Fatal(err)
	}
	real, _ := set.Key(0)
	parts := strings.Split(tok.AccessToken, ".")
	payload, _ := base64.RawURLEncoding.DecodeString(parts[1])
	var claims map[string]any
	_ = json.Unmarshal(payload, &claims)

	sign := func(alg jwa.SignatureAlgorithm, key any, kid string, c map[string]any) string {
		b, _ := json.Marshal(c)
		hdr := jws.NewHeaders()
		_ = hdr.Set(jws.TypeKey, "at+jwt")
		_ = hdr.Set(jws.KeyIDKey, kid)
		out, err := jws.Sign(b, jws.WithKey(alg, key, jws.WithProtectedHeaders(hdr)))
		if err != nil {
			t.Fatal(err)
		}
		return string(out)
	}
	_, stranger, _ := ed25519.GenerateKey(nil)
	longer := maps.Clone(claims)
	longer["exp"] = claims["exp"].(float64) + 3600
	otherClient := maps.Clone(claims)
	otherClient["client_id"] = "someone-else"
	tamperedPayload, _ := json.Marshal(otherClient)
	forged := map[string]string{
		"another key, our kid":     sign(jwa.EdDSA, stranger, real.KeyID(), claims),
		"HMAC with the public key": sign(jwa.HS256, []byte(real.KeyID()), real.KeyID(), claims),
		"payload swapped":          parts[0] + "." + base64.RawURLEncoding.EncodeToString(tamperedPayload) + "." + parts[2],
		"lifetime extended":        sign(jwa.EdDSA, stranger, real.KeyID(), longer),
		"JSON serialization":       `{"payload":"` + parts[1] + `","protected":"` + parts[0] + `","signature":"` + parts[2] + `"}`,
	}
	for name, f := range forged {
		_, err := r.proxy().Resolve(context.Background(), f)
		if name == "JSON serialization" {
			if !errors.Is(err, oauthproxy.ErrNotProxyToken) {
				t.Errorf("%s: %v", name, err)
			}
			continue
		}
		if !errors.Is(err, oauthproxy.ErrInvalidToken) {
			t.Errorf("%s: %v, want ErrInvalidToken", name, err)
		}
	}
	r.counted(t, "token_invalid", 4)
	// Expired: refused and counted apart.
	r.clock.Advance(10 * time.Minute)
	if _, err := r.proxy().Resolve(context.Background(), tok.AccessToken); !errors.Is(err, oauthproxy.ErrInvalidToken) {
		t.Fatalf("expired token: %v", err)
	}
	r.counted(t, "token_expired", 1)
}

// TestHostileOtherClient: a code or refresh token presented with another
// client's id is refused; the code is spent, and the refresh token's
// sign-in revoked.
func TestHostileOtherClient(t *testing.T) {
	r := newRig(t, rigOptions{})
	id, _ := r.register(t)
	thief, _ := r.register(t)
	c := r.client(id)
	code := r.code(t, c)
	status, ecode, _ := r.postToken(t, url.Values{"grant_type": {"authorization_code"}, "code": {code}, "client_id": {thief},
		"redirect_uri": {clientRedirect}, "code_verifier": {c.verifier}})
	if status != http.StatusBadRequest || ecode != "invalid_grant" {
		t.Fatalf("code for another client: %d %s", status, ecode)
	}
	r.counted(t, "client_mismatch", 1)
	if _, err := c.exchange(code); grantCode(err) != "invalid_grant" {
		t.Fatalf("the code survived its theft: %v", err)
	}

	tok := r.login(t, r.client(id))
	if status, ecode, _ := r.refresh(t, thief, tok.RefreshToken); status != http.StatusBadRequest || ecode != "invalid_grant" {
		t.Fatalf("refresh token for another client: %d %s", status, ecode)
	}
	r.counted(t, "client_mismatch", 2)
	if _, err := r.proxy().Resolve(context.Background(), tok.AccessToken); !errors.Is(err, oauthproxy.ErrInvalidToken) {
		t.Fatalf("the sign-in survived its refresh token's theft: %v", err)
	}
	// A secret, or Basic credentials naming another client, are refused
	// before anything is spent.
	c = r.client(id)
	code = r.code(t, c)
	for _, f := range []url.Values{
		{"client_id": {id}, "client_secret": {"guess"}},
	} {
		f.Set("grant_type", "authorization_code")
		f.Set("code", code)
		f.Set("redirect_uri", clientRedirect)
		f.Set("code_verifier", c.verifier)
		if status, ecode, _ := r.postToken(t, f); status != http.StatusUnauthorized || ecode != "invalid_client" {
			t.Fatalf("client secret: %d %s", status, ecode)
		}
	}
	if _, err := c.exchange(code); err != nil {
		t.Fatalf("a refused client authentication spent the code: %v", err)
	}
}
