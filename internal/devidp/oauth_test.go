package devidp_test

import (
	"bytes"
	"context"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwk"
	"github.com/lestrrat-go/jwx/v2/jwt"
	"golang.org/x/oauth2"

	"github.com/mcpguard/mcpguard/internal/clocktest"
	"github.com/mcpguard/mcpguard/internal/devidp"
)

const (
	tenant   = "72f988bf-0000-4000-8000-0000000000bb"
	api      = "5b2a1c3d-0000-4000-8000-0000000000b1"
	secret   = "s3cret"
	redirect = "http://127.0.0.1:9/cb"
)

var key = sync.OnceValue(func() *rsa.PrivateKey {
	k, err := devidp.NewKey()
	if err != nil {
		panic(err)
	}
	return k
})

type idp struct {
	iss   *devidp.Issuer
	url   string
	clock *clocktest.Clock
	conf  *oauth2.Config
	hc    *http.Client
}

func newIDP(t *testing.T) *idp {
	srv := httptest.NewUnstartedServer(nil)
	u := "http://" + srv.Listener.Addr().String()
	iss, err := devidp.New(u, tenant, key())
	if err != nil {
		t.Fatal(err)
	}
	srv.Config.Handler = iss.Handler()
	srv.Start()
	t.Cleanup(srv.Close)
	iss.RegisterClient(devidp.Client{ID: api, Secret: secret, RedirectURIs: []string{redirect}})
	iss.AddUser(devidp.User{Name: "alice", Roles: []string{"data_reader"}, Email: "alice@example.com"})
	iss.AddUser(devidp.User{Name: "bob", Roles: []string{"finance"}})
	clock := clocktest.New(time.Now())
	iss.SetClock(clock.Now)
	return &idp{
		iss: iss, url: u, clock: clock,
		conf: &oauth2.Config{
			ClientID: api, ClientSecret: secret, RedirectURL: redirect,
			Endpoint: oauth2.Endpoint{AuthURL: u + "/" + tenant + "/oauth2/v2.0/authorize", TokenURL: u + "/" + tenant + "/oauth2/v2.0/token", AuthStyle: oauth2.AuthStyleInParams},
			Scopes:   []string{"api://" + api + "/read", "offline_access"},
		},
		hc: &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }},
	}
}

// authorize returns the status and, for a redirect, its query.
func (d *idp) authorize(t *testing.T, u string) (int, url.Values, string) {
	t.Helper()
	resp, err := d.hc.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body bytes.Buffer
	_, _ = body.ReadFrom(resp.Body)
	if loc := resp.Header.Get("Location"); loc != "" {
		lu, _ := url.Parse(loc)
		if !strings.HasPrefix(loc, redirect) {
			t.Fatalf("redirected elsewhere than the registered URI: %s", loc)
		}
		return resp.StatusCode, lu.Query(), body.String()
	}
	return resp.StatusCode, nil, body.String()
}

func (d *idp) claims(t *testing.T, tok string) map[string]any {
	t.Helper()
	set, err := jwk.Fetch(context.Background(), d.url+"/"+tenant+"/discovery/v2.0/keys")
	if err != nil {
		t.Fatal(err)
	}
	p, err := jwt.Parse([]byte(tok), jwt.WithKeySet(set), jwt.WithValidate(true), jwt.WithClock(jwt.ClockFunc(d.clock.Now)))
	if err != nil {
		t.Fatal(err)
	}
	m, _ := p.AsMap(context.Background())
	return m
}

func TestAuthorizationCodeFlowWithLoginHint(t *testing.T) {
	d := newIDP(t)
	v := oauth2.GenerateVerifier()
	status, q, _ := d.authorize(t, d.conf.AuthCodeURL("st", oauth2.S256ChallengeOption(v), oauth2.SetAuthURLParam("login_hint", "bob")))
	if status != http.StatusFound || q.Get("code") == "" || q.Get("state") != "st" {
		t.Fatalf("authorize: %d %v", status, q)
	}
	tok, err := d.conf.Exchange(context.Background(), q.Get("code"), oauth2.VerifierOption(v))
	if err != nil {
		t.Fatal(err)
	}
	c := d.claims(t, tok.AccessToken)
	if c["oid"] != devidp.ObjectIDFor("bob") || c["scp"] != "read" || c["azp"] != api || c["ver"] != "2.0" ||
		c["iss"] != d.url+"/"+tenant+"/v2.0" || c["aud"].([]string)[0] != api {
		t.Fatalf("claims: %v", c)
	}
	if roles, _ := json.Marshal(c["roles"]); string(roles) != `["finance"]` {
		t.Fatalf("roles %s", roles)
	}
	if tok.RefreshToken == "" || tok.ExpiresIn != 3600 {
		t.Fatalf("token response: %+v", tok)
	}
	// The code is single-use.
	if _, err := d.conf.Exchange(context.Background(), q.Get("code"), oauth2.VerifierOption(v)); errCode(err) != "invalid_grant" {
		t.Fatalf("code reused: %v", err)
	}
	// Refresh, with the scope Entra's v2 endpoint expects, and without.
	d.clock.Advance(30 * time.Minute)
	nt, err := d.conf.TokenSource(context.Background(), &oauth2.Token{RefreshToken: tok.RefreshToken, Expiry: time.Now().Add(-time.Hour)}).Token()
	if err != nil {
		t.Fatal(err)
	}
	if d.claims(t, nt.AccessToken)["oid"] != devidp.ObjectIDFor("bob") || d.iss.TokenRequests("refresh_token") != 1 {
		t.Fatal("refresh")
	}
	d.iss.RevokeUser("bob")
	if _, err := d.conf.TokenSource(context.Background(), &oauth2.Token{RefreshToken: nt.RefreshToken, Expiry: time.Now().Add(-time.Hour)}).Token(); errCode(err) != "invalid_grant" {
		t.Fatalf("refresh after revocation: %v", err)
	}
}

func errCode(err error) string {
	var re *oauth2.RetrieveError
	if errors.As(err, &re) {
		return re.ErrorCode
	}
	return ""
}

func TestAutoSignInAndForm(t *testing.T) {
	d := newIDP(t)
	u := d.conf.AuthCodeURL("st", oauth2.S256ChallengeOption(oauth2.GenerateVerifier()))
	status, q, body := d.authorize(t, u)
	if status != http.StatusOK || q != nil || !strings.Contains(body, `value="alice"`) || !strings.Contains(body, `value="bob"`) {
		t.Fatalf("without a hint: want the sign-in form, got %d %v", status, q)
	}
	// The form posts back with a user.
	pu, _ := url.Parse(u)
	form := pu.Query()
	form.Set("user", "bob")
	resp, err := d.hc.PostForm(pu.Scheme+"://"+pu.Host+pu.Path, form)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if loc, _ := url.Parse(resp.Header.Get("Location")); resp.StatusCode != http.StatusFound || loc.Query().Get("code") == "" {
		t.Fatalf("form sign-in: %d %s", resp.StatusCode, resp.Header.Get("Location"))
	}
	d.iss.SetAutoSignIn("alice")
	if status, q, _ := d.authorize(t, u); status != http.StatusFound || q.Get("code") == "" {
		t.Fatalf("auto sign-in: %d %v", status, q)
	}
}

func TestAuthorizeRefusals(t *testing.T) {
	d := newIDP(t)
	d.iss.SetAutoSignIn("alice")
	good := func(edit func(url.Values)) string {
		u, _ := url.Parse(d.conf.AuthCodeURL("st", oauth2.S256ChallengeOption(oauth2.GenerateVerifier())))
		q := u.Query()
		edit(q)
		u.RawQuery = q.Encode()
		return u.String()
	}
	// Before the redirect URI is known good: a page, no redirect.
	for name, edit := range map[string]func(url.Values){
		"unknown client":   func(q url.Values) { q.Set("client_id", "nobody") },
		"foreign redirect": func(q url.Values) { q.Set("redirect_uri", "https://evil.example/cb") },
	} {
		if status, q, _ := d.authorize(t, good(edit)); status != http.StatusBadRequest || q != nil {
			t.Errorf("%s: %d %v", name, status, q)
		}
	}
	// After: an error back to the client.
	for name, tc := range map[string]struct {
		edit func(url.Values)
		code string
	}{
		"resource (AADSTS9010010)": {func(q url.Values) { q.Set("resource", "http://127.0.0.1:8000/mcp") }, "invalid_target"},
		"plain PKCE":               {func(q url.Values) { q.Set("code_challenge_method", "plain") }, "invalid_request"},
		"no PKCE":                  {func(q url.Values) { q.Del("code_challenge") }, "invalid_request"},
		"unknown resource scope":   {func(q url.Values) { q.Set("scope", "api://other/read") }, "invalid_scope"},
	} {
		status, q, _ := d.authorize(t, good(tc.edit))
		if status != http.StatusFound || q.Get("error") != tc.code || !strings.Contains(q.Get("error_description"), "AADSTS") {
			t.Errorf("%s: %d %v", name, status, q)
		}
	}
}

func TestTokenRefusals(t *testing.T) {
	d := newIDP(t)
	d.iss.SetAutoSignIn("alice")
	code := func() (string, string) {
		v := oauth2.GenerateVerifier()
		_, q, _ := d.authorize(t, d.conf.AuthCodeURL("st", oauth2.S256ChallengeOption(v)))
		return q.Get("code"), v
	}
	c, _ := code()
	if _, err := d.conf.Exchange(context.Background(), c, oauth2.VerifierOption(oauth2.GenerateVerifier())); errCode(err) != "invalid_grant" {
		t.Fatalf("wrong verifier: %v", err)
	}
	c, v := code()
	if _, err := d.conf.Exchange(context.Background(), c, oauth2.VerifierOption(v), oauth2.SetAuthURLParam("resource", "http://x/mcp")); errCode(err) != "invalid_target" {
		t.Fatalf("resource at the token endpoint: %v", err)
	}
	c, v = code()
	wrong := *d.conf
	wrong.ClientSecret = "nope"
	if _, err := wrong.Exchange(context.Background(), c, oauth2.VerifierOption(v)); errCode(err) != "invalid_client" {
		t.Fatalf("wrong secret: %v", err)
	}
	c, v = code()
	d.clock.Advance(11 * time.Minute)
	if _, err := d.conf.Exchange(context.Background(), c, oauth2.VerifierOption(v)); errCode(err) != "invalid_grant" {
		t.Fatalf("expired code: %v", err)
	}
}
