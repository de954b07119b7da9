package e2e

import (
	"bytes"
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/mcpguard/mcpguard/internal/devidp"
	"github.com/mcpguard/mcpguard/internal/store/storetest"
)

// front is a load balancer on loopback: the public address of two replicas.
// Each step of a login is sent to a replica other than the one that served
// the step before, so every step must find in Redis what the previous one
// left there; MCP requests alternate.
type front struct {
	URL      string
	replicas map[string]*url.URL
	route    func(path string, n int) string // the replica for the n-th request of path's kind
	mu       sync.Mutex
	next     int
	log      []string // "path replica", in order
}

// loginRoute names the replica of each step of the login.
var loginRoute = map[string]string{
	"/.well-known/oauth-protected-resource/mcp": "a",
	"/.well-known/oauth-protected-resource":     "a",
	"/.well-known/oauth-authorization-server":   "b",
	"/register":      "b",
	"/authorize":     "a",
	"/consent":       "b",
	"/auth/callback": "a",
	"/token":         "b",
	"/revoke":        "a",
}

// alternate sends each login step where loginRoute says, and MCP requests
// to a and b in turn.
func alternate(path string, n int) string {
	if name, ok := loginRoute[path]; ok {
		return name
	}
	return []string{"a", "b"}[n%2]
}

// newFront serves the balancer on ln, in front of replicas a and b.
func newFront(t *testing.T, ln net.Listener, a, b string, route func(path string, n int) string) *front {
	t.Helper()
	f := &front{URL: "http://" + ln.Addr().String(), replicas: map[string]*url.URL{}, route: route}
	for name, raw := range map[string]string{"a": a, "b": b} {
		u, err := url.Parse(raw)
		if err != nil {
			t.Fatal(err)
		}
		f.replicas[name] = u
	}
	rp := &httputil.ReverseProxy{Rewrite: func(r *httputil.ProxyRequest) {
		name := f.pick(r.In.URL.Path)
		r.SetURL(f.replicas[name])
		r.Out.Host = r.In.Host // as a balancer in front of replicas keeps it
	}}
	hs := httptest.NewUnstartedServer(rp)
	hs.Listener.Close()
	hs.Listener = ln
	hs.Start()
	t.Cleanup(hs.Close)
	return f
}

func (f *front) pick(path string) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	name := f.route(path, f.next)
	if _, step := loginRoute[path]; !step {
		f.next++
	}
	f.log = append(f.log, path+" "+name)
	return name
}

func (f *front) served() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.log...)
}

// Two replicas behind one public address share one real Redis: the login
// starts on one and every next step lands on the other, tool calls land on
// both, the refresh too; afterwards the keyspace holds no token, code or
// state in plain text.
func TestReplicasContinueEachOthersFlow(t *testing.T) {
	addr, _ := storetest.RedisServer(t)
	host, port, _ := net.SplitHostPort(addr)
	iss := startIssuer(t)

	// The public URL must be known before the replicas start: it is their
	// issuer and resource. Listen on it, start the replicas, then serve it.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	public := "http://" + ln.Addr().String()
	vars := oauthVars(map[string]string{
		"AZURE_BASE_URL": public, "REDIS_HOST": host, "REDIS_PORT": port, "REDIS_PASSWORD": storetest.Password,
	})
	a := start(t, iss, vars)
	b := start(t, iss, vars)
	f := newFront(t, ln, a.Base, b.Base, alternate)
	registerAPI(iss, public)

	ua := newUserAgent(t, "alice")
	l := newGoLogin(t, ua.authorize)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("the user agent visited %v; the front served %v", ua.visits, f.served())
		}
	})
	cs := l.connect(t, public+"/mcp")
	for range 3 {
		if out := readCritical(t, cs); !strings.Contains(out, "alice@") {
			t.Fatalf("the tool ran for %s", out)
		}
	}
	l.source.expire()
	if out := readCritical(t, cs); !strings.Contains(out, "alice@") {
		t.Fatalf("after the refresh: %s", out)
	}
	if _, _, n := l.tokens(t); n != 1 {
		t.Fatalf("%d refreshes", n)
	}

	// Each step where the route says, and tool calls on both replicas.
	log := f.served()
	for _, want := range []string{"/register b", "/authorize a", "/consent b", "/auth/callback a", "/token b"} {
		if !contains(log, want) {
			t.Errorf("no %q in %v", want, log)
		}
	}
	if !contains(log, "/mcp a") || !contains(log, "/mcp b") {
		t.Errorf("MCP requests did not reach both replicas: %v", log)
	}

	// The keyspace: the login is there, sealed; no secret in a key or a value.
	tok, _, _ := l.tokens(t)
	code := l.results[0].Code
	secrets := map[string]string{"access token": tok.AccessToken, "refresh token": tok.RefreshToken, "code": code,
		"client state": l.results[0].State}
	rdb := redis.NewClient(&redis.Options{Addr: addr, Password: storetest.Password})
	defer rdb.Close()
	keys, err := rdb.Keys(context.Background(), "*").Result()
	if err != nil {
		t.Fatal(err)
	}
	oauthKeys := 0
	for _, k := range keys {
		if strings.HasPrefix(k, "mcpguard:oauth:") {
			oauthKeys++
		}
		v, err := rdb.Get(context.Background(), k).Bytes()
		if err != nil {
			t.Fatalf("%s: %v", k, err)
		}
		for what, s := range secrets {
			if strings.Contains(k, s) || bytes.Contains(v, []byte(s)) {
				t.Errorf("the %s is in Redis in plain text, under %s", what, k)
			}
		}
		// A JWT (the Entra token the façade keeps, or one of its own) in the
		// clear starts with the base64 of `{"`; a sealed value is random.
		if bytes.Contains(v, []byte("eyJ")) || strings.Contains(k, "eyJ") {
			t.Errorf("a JWT in plain text under %s", k)
		}
		if bytes.Contains(v, []byte(`"client_id"`)) || bytes.Contains(v, []byte("alice")) {
			t.Errorf("a readable record under %s", k)
		}
	}
	if oauthKeys < 4 {
		t.Fatalf("the login did not live in Redis: %d keys under mcpguard:oauth: of %v", oauthKeys, keys)
	}
}

// With Redis gone, a proxy token cannot be resolved: the request is refused
// with 503 (retry later), never let through on what a replica remembers;
// Entra tokens presented directly do not depend on Redis and keep working.
func TestRedisDownRefusesProxyTokens(t *testing.T) {
	addr, stop := storetest.RedisServer(t)
	host, port, _ := net.SplitHostPort(addr)
	iss := startIssuer(t)
	e := startOAuth(t, iss, map[string]string{"REDIS_HOST": host, "REDIS_PORT": port, "REDIS_PASSWORD": storetest.Password})
	l := newGoLogin(t, newUserAgent(t, "alice").authorize)
	readCritical(t, l.connect(t, e.URL))
	tok, _, _ := l.tokens(t)

	stop()
	res := rawCall(t, e.URL, tok.AccessToken)
	if res.StatusCode != http.StatusServiceUnavailable || res.Header.Get("Retry-After") == "" {
		t.Fatalf("proxy token with Redis down: %d %v", res.StatusCode, res.Header)
	}
	if got := series(t, e, `mcpguard_oauth_proxy_tokens_total{result="unavailable"}`); got != 1 {
		t.Fatalf("unavailable counted %v", got)
	}
	direct := e.token(t, devidp.Token{User: "alice", Roles: []string{"data_reader"}})
	if res := rawCall(t, e.URL, direct); res.StatusCode != http.StatusOK {
		t.Fatalf("direct Entra token with Redis down: %d", res.StatusCode)
	}
}
