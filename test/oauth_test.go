package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/auth"
	"github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/modelcontextprotocol/go-sdk/oauthex"
	"golang.org/x/oauth2"

	"github.com/mcpguard/mcpguard/internal/devidp"
	"github.com/mcpguard/mcpguard/internal/store/storetest"
)

// refreshable is the token source the Go SDK's handler is given: oauth2's
// own refresh (with the endpoint and client the SDK discovered), and a way
// for the test to let the access token expire now instead of in minutes.
type refreshable struct {
	mu        sync.Mutex
	ctx       context.Context
	cfg       *oauth2.Config
	tok       *oauth2.Token
	refreshes int
}

func (r *refreshable) Token() (*oauth2.Token, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.tok.Valid() {
		return r.tok, nil
	}
	// An expired token with a refresh token: oauth2 refreshes it.
	nt, err := r.cfg.TokenSource(r.ctx, r.tok).Token()
	if err != nil {
		return nil, err
	}
	r.tok, r.refreshes = nt, r.refreshes+1
	return nt, nil
}

// expire makes the current access token look expired to the client.
func (r *refreshable) expire() {
	r.mu.Lock()
	defer r.mu.Unlock()
	t := *r.tok
	t.Expiry = time.Now().Add(-time.Minute)
	r.tok = &t
}

func (r *refreshable) current() (oauth2.Token, *oauth2.Config, int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return *r.tok, r.cfg, r.refreshes
}

// goLogin is the Go SDK client's OAuth side for one test.
type goLogin struct {
	handler  *auth.AuthorizationCodeHandler
	redirect string
	mu       sync.Mutex
	source   *refreshable
	authURLs []string
	results  []*auth.AuthorizationResult
}

// newGoLogin configures the SDK's authorization-code handler: dynamic
// registration with a loopback redirect URI (never listened on: the user
// agent stops there, as a native app's callback listener would read it),
// the user agent as the "browser", refresh tokens asked for.
func newGoLogin(t *testing.T, authorize func(ctx context.Context, authURL, redirect string) (*url.URL, error)) *goLogin {
	t.Helper()
	return newGoLoginTo(t, "http://127.0.0.1:49152/callback", authorize)
}

// newGoLoginTo is newGoLogin with the redirect URI given.
func newGoLoginTo(t *testing.T, redirect string, authorize func(ctx context.Context, authURL, redirect string) (*url.URL, error)) *goLogin {
	t.Helper()
	return newGoLoginWith(t, redirect, authorize, nil)
}

// newGoLoginWith is newGoLoginTo with the handler's configuration adjusted
// by tune (e.g. a client ID metadata document instead of registration).
func newGoLoginWith(t *testing.T, redirect string, authorize func(ctx context.Context, authURL, redirect string) (*url.URL, error),
	tune func(*auth.AuthorizationCodeHandlerConfig)) *goLogin {
	t.Helper()
	l := &goLogin{redirect: redirect}
	cfg := &auth.AuthorizationCodeHandlerConfig{
		DynamicClientRegistrationConfig: &auth.DynamicClientRegistrationConfig{Metadata: &oauthex.ClientRegistrationMetadata{
			RedirectURIs:            []string{l.redirect},
			ClientName:              "e2e-go",
			GrantTypes:              []string{"authorization_code", "refresh_token"},
			ResponseTypes:           []string{"code"},
			TokenEndpointAuthMethod: "none",
		}},
		RequestRefreshToken: true,
		AuthorizationCodeFetcher: func(ctx context.Context, args *auth.AuthorizationArgs) (*auth.AuthorizationResult, error) {
			l.mu.Lock()
			l.authURLs = append(l.authURLs, args.URL)
			l.mu.Unlock()
			back, err := authorize(ctx, args.URL, l.redirect)
			if err != nil {
				return nil, err
			}
			code, state, iss, err := codeOf(back)
			if err != nil {
				return nil, err
			}
			res := &auth.AuthorizationResult{Code: code, State: state, Iss: iss}
			l.mu.Lock()
			l.results = append(l.results, res)
			l.mu.Unlock()
			return res, nil
		},
		NewTokenSource: func(ctx context.Context, cfg *oauth2.Config, tok *oauth2.Token) (oauth2.TokenSource, error) {
			src := &refreshable{ctx: ctx, cfg: cfg, tok: tok}
			l.mu.Lock()
			l.source = src
			l.mu.Unlock()
			return src, nil
		},
	}
	if tune != nil {
		tune(cfg)
	}
	h, err := auth.NewAuthorizationCodeHandler(cfg)
	if err != nil {
		t.Fatal(err)
	}
	l.handler = h
	return l
}

// connect opens a Go SDK session that logs in when the server asks.
func (l *goLogin) connect(t *testing.T, endpoint string) *mcp.ClientSession {
	t.Helper()
	c, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	client := mcp.NewClient(&mcp.Implementation{Name: "e2e-go-oauth", Version: "1.0"}, nil)
	cs, err := client.Connect(c, &mcp.StreamableClientTransport{Endpoint: endpoint, OAuthHandler: l.handler}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cs.Close() })
	return cs
}

// clientID is the client_id the SDK registered.
func (l *goLogin) clientID(t *testing.T) string {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.authURLs) == 0 {
		t.Fatal("the client never authorized")
	}
	u, _ := url.Parse(l.authURLs[0])
	return u.Query().Get("client_id")
}

// contextFor bounds one login attempt.
func contextFor(t *testing.T) (context.Context, context.CancelFunc) {
	t.Helper()
	return context.WithTimeout(context.Background(), 30*time.Second)
}

// connectErr opens a session and returns the error, for logins that must fail.
func connectErr(c context.Context, l *goLogin, endpoint string) (*mcp.ClientSession, error) {
	client := mcp.NewClient(&mcp.Implementation{Name: "e2e-go-oauth", Version: "1.0"}, nil)
	cs, err := client.Connect(c, &mcp.StreamableClientTransport{Endpoint: endpoint, OAuthHandler: l.handler}, nil)
	if err == nil {
		_ = cs.Close()
	}
	return cs, err
}

func (l *goLogin) tokens(t *testing.T) (oauth2.Token, *oauth2.Config, int) {
	t.Helper()
	l.mu.Lock()
	src := l.source
	l.mu.Unlock()
	if src == nil {
		t.Fatal("no token source: the client never logged in")
	}
	return src.current()
}

// readCritical calls a tool only data readers may call and returns its text.
func readCritical(t *testing.T, cs *mcp.ClientSession) string {
	t.Helper()
	res, err := cs.CallTool(ctx(t), &mcp.CallToolParams{Name: "read_critical_data", Arguments: map[string]any{"query": "q3"}})
	if err != nil || res.IsError {
		t.Fatalf("read_critical_data: %v %+v", err, res)
	}
	out, _ := json.Marshal(res.StructuredContent)
	return string(out)
}

// rawCall posts one tools/call with a bearer token, as no SDK would retry it.
func rawCall(t *testing.T, endpoint, token string) *http.Response {
	t.Helper()
	body := `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"read_critical_data","arguments":{"query":"q"}}}`
	req, _ := http.NewRequestWithContext(ctx(t), http.MethodPost, endpoint, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	req.Header.Set("Mcp-Protocol-Version", "2025-11-25")
	req.Header.Set("Authorization", "Bearer "+token)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	return res
}

// series reads one series of the server's metrics (0 when absent).
func series(t *testing.T, e *env, name string) float64 {
	t.Helper()
	rec := httptest.NewRecorder()
	req := httptest.NewRequest(http.MethodGet, "http://127.0.0.1/metrics", nil)
	e.Server.MetricsHandler().ServeHTTP(rec, req)
	for _, line := range strings.Split(rec.Body.String(), "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			var n float64
			if _, err := fmt.Sscan(v, &n); err != nil {
				t.Fatalf("metric line %q", line)
			}
			return n
		}
	}
	return 0
}

// The Go SDK's OAuth client logs a user in through the façade with no
// credentials of its own: RFC 9728 discovery from the 401, RFC 8414
// metadata, RFC 7591 registration, authorize with PKCE and the resource,
// the consent page, the Entra leg at the issuer, the callback, the code
// redeemed; then tool calls as alice, a refresh, and the refresh token's
// reuse refused with its whole sign-in.
func TestGoSDKLogsInThroughTheProxy(t *testing.T) {
	iss := startIssuer(t)
	e := startOAuth(t, iss, nil)
	ua := newUserAgent(t, "alice")
	l := newGoLogin(t, ua.authorize)
	cs := l.connect(t, e.URL)

	if out := readCritical(t, cs); !strings.Contains(out, "alice@") {
		t.Fatalf("the tool ran for %s", out)
	}
	// What the client asked, and what the user was shown.
	if len(l.authURLs) != 1 {
		t.Fatalf("%d authorizations", len(l.authURLs))
	}
	au, _ := url.Parse(l.authURLs[0])
	q := au.Query()
	if au.Scheme+"://"+au.Host+au.Path != e.Base+"/authorize" || q.Get("code_challenge_method") != "S256" || q.Get("resource") != e.URL ||
		!contains(strings.Fields(q.Get("scope")), "read") || q.Get("state") == "" || q.Get("client_id") == "" {
		t.Fatalf("authorization request %s", l.authURLs[0])
	}
	if got := l.results[0].Iss; got != e.Base {
		t.Fatalf("RFC 9207 iss %q, want %q", got, e.Base)
	}
	shown := ua.consentText()
	for _, want := range []string{"e2e-go", "127.0.0.1:49152", "read", q.Get("client_id")} {
		if !strings.Contains(shown, want) {
			t.Errorf("the consent page does not show %q: %s", want, shown)
		}
	}
	if iss.TokenRequests("authorization_code") != 1 {
		t.Fatalf("Entra leg: %d code redemptions at the issuer", iss.TokenRequests("authorization_code"))
	}

	// A refresh, as the client's oauth2 token source does it on expiry.
	first, cfg, _ := l.tokens(t)
	if first.RefreshToken == "" || first.AccessToken == "" {
		t.Fatal("no refresh token issued")
	}
	l.source.expire()
	if out := readCritical(t, cs); !strings.Contains(out, "alice@") {
		t.Fatalf("after the refresh the tool ran for %s", out)
	}
	second, _, refreshes := l.tokens(t)
	if refreshes != 1 || second.AccessToken == first.AccessToken || second.RefreshToken == first.RefreshToken {
		t.Fatalf("refreshes %d; access token rotated %v, refresh token rotated %v", refreshes,
			second.AccessToken != first.AccessToken, second.RefreshToken != first.RefreshToken)
	}
	if len(l.authURLs) != 1 {
		t.Fatal("the refresh sent the user through authorization again")
	}

	// The spent refresh token replayed: refused, and the whole sign-in with
	// it (RFC 9700 §4.14.2): the current access token stops working at once.
	_, err := cfg.TokenSource(ctx(t), &oauth2.Token{RefreshToken: first.RefreshToken}).Token()
	var re *oauth2.RetrieveError
	if !asRetrieve(err, &re) || re.ErrorCode != "invalid_grant" {
		t.Fatalf("reused refresh token: %v", err)
	}
	if res := rawCall(t, e.URL, second.AccessToken); res.StatusCode != http.StatusUnauthorized ||
		!strings.Contains(res.Header.Get("WWW-Authenticate"), "resource_metadata=") {
		t.Fatalf("access token of a revoked sign-in: %d %q", res.StatusCode, res.Header.Get("WWW-Authenticate"))
	}
	if got := series(t, e, `mcpguard_oauth_refusals_total{reason="refresh_reuse"}`); got != 1 {
		t.Fatalf("refresh reuse counted %v", got)
	}
	if got := series(t, e, `mcpguard_oauth_proxy_tokens_total{result="refused"}`); got != 1 {
		t.Fatalf("refused proxy tokens counted %v", got)
	}
}

func asRetrieve(err error, re **oauth2.RetrieveError) bool {
	if err == nil {
		return false
	}
	r, ok := err.(*oauth2.RetrieveError)
	if !ok {
		return false
	}
	*re = r
	return true
}

// Revoking an access token (RFC 7009) stops it at the MCP endpoint at once,
// while Entra tokens presented directly keep working beside the façade's.
func TestRevokedProxyTokenReplayed(t *testing.T) {
	iss := startIssuer(t)
	e := startOAuth(t, iss, nil)
	l := newGoLogin(t, newUserAgent(t, "alice").authorize)
	readCritical(t, l.connect(t, e.URL))
	tok, _, _ := l.tokens(t)
	if res := rawCall(t, e.URL, tok.AccessToken); res.StatusCode != http.StatusOK {
		t.Fatalf("before the revocation: %d", res.StatusCode)
	}
	form := url.Values{"token": {tok.AccessToken}, "client_id": {l.clientID(t)}}
	res, err := http.PostForm(e.Base+"/revoke", form)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusOK {
		t.Fatalf("revocation: %d", res.StatusCode)
	}
	res = rawCall(t, e.URL, tok.AccessToken)
	if res.StatusCode != http.StatusUnauthorized || !strings.Contains(res.Header.Get("WWW-Authenticate"), `error="invalid_token"`) {
		t.Fatalf("revoked access token replayed: %d %q", res.StatusCode, res.Header.Get("WWW-Authenticate"))
	}
	if got := series(t, e, `mcpguard_oauth_refusals_total{reason="token_revoked"}`); got != 1 {
		t.Fatalf("revoked token refusals counted %v", got)
	}
	// An Entra token for the same user, presented directly, still works.
	direct := e.connect(t, e.token(t, devidp.Token{User: "alice", Roles: []string{"data_reader"}}))
	if out := readCritical(t, direct); !strings.Contains(out, "alice@") {
		t.Fatalf("direct Entra token: %s", out)
	}
}

// Two MCP servers behind one public address and one authorization server
// (the same issuer, signing key and Redis), one at /mcp and one at /sse: a
// token issued for the first is refused by the second, whose resource it
// does not name, and the refusal is counted.
func TestProxyTokenForAnotherResource(t *testing.T) {
	addr, _ := storetest.RedisServer(t)
	host, port, _ := net.SplitHostPort(addr)
	iss := startIssuer(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	public := "http://" + ln.Addr().String()
	shared := oauthVars(map[string]string{"AZURE_BASE_URL": public, "REDIS_HOST": host, "REDIS_PORT": port, "REDIS_PASSWORD": storetest.Password})
	a := start(t, iss, shared)
	shared["TRANSPORT"], shared["STATELESS"] = "sse", "false"
	b := start(t, iss, shared)
	newFront(t, ln, a.Base, b.Base, func(path string, _ int) string {
		if path == "/sse" {
			return "b"
		}
		return "a"
	})
	registerAPI(iss, public)

	l := newGoLogin(t, newUserAgent(t, "alice").authorize)
	readCritical(t, l.connect(t, public+"/mcp"))
	tok, _, _ := l.tokens(t)
	req, _ := http.NewRequestWithContext(ctx(t), http.MethodGet, public+"/sse", nil)
	req.Header.Set("Authorization", "Bearer "+tok.AccessToken)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusUnauthorized || !strings.Contains(res.Header.Get("WWW-Authenticate"), public+"/.well-known/oauth-protected-resource/sse") {
		t.Fatalf("another resource's token: %d %q", res.StatusCode, res.Header.Get("WWW-Authenticate"))
	}
	if got := series(t, b, `mcpguard_oauth_refusals_total{reason="token_audience"}`); got != 1 {
		t.Fatalf("audience refusals counted %v", got)
	}
	if got := series(t, b, `mcpguard_oauth_proxy_tokens_total{result="refused"}`); got != 1 {
		t.Fatalf("refused proxy tokens counted %v", got)
	}
	// The same token still works where it belongs.
	if res := rawCall(t, public+"/mcp", tok.AccessToken); res.StatusCode != http.StatusOK {
		t.Fatalf("at its own resource: %d", res.StatusCode)
	}
}
