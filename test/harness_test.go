// Package e2e drives mcpguard end to end, as its users do: a real HTTP
// server, tokens from the Entra-shaped issuer (real JWKS, RS256), and real
// MCP clients (the Go SDK here, the official TypeScript SDK in ts/).
package e2e

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/mcpguard/mcpguard/internal/config"
	"github.com/mcpguard/mcpguard/internal/devidp"
	"github.com/mcpguard/mcpguard/internal/server"
)

// Test tenant and API application, shaped as Entra's GUIDs.
const (
	tenantID = "72f988bf-0000-4000-8000-000000000001"
	clientID = "5b2a1c3d-0000-4000-8000-0000000000c1"
)

// repoRoot is the repository root, found from this file.
func repoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Dir(filepath.Dir(file))
}

// env is one running mcpguard with its identity provider.
type env struct {
	URL    string // the MCP endpoint
	Base   string
	Issuer *devidp.Issuer
	Config *config.Config
	Server *server.Server
}

// startIssuer serves an Entra-shaped issuer on loopback.
func startIssuer(t testing.TB) *devidp.Issuer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	key, err := devidp.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	iss, err := devidp.New("http://"+ln.Addr().String(), tenantID, key)
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: iss.Handler()}
	go func() { _ = hs.Serve(ln) }()
	t.Cleanup(func() { _ = hs.Close() })
	return iss
}

// deadEnd is the URL of a service that cannot be reached: a loopback
// listener this test holds, closing every connection at once. Holding it
// keeps the port from anyone else for the test's life (a fixed port thought
// to be unused, or one freed for the occasion, could be taken and answered).
func deadEnd(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			_ = c.Close()
		}
	}()
	return "http://" + ln.Addr().String()
}

// start runs mcpguard over loopback HTTP. vars override the test defaults
// (any configuration variable by its name).
func start(t testing.TB, iss *devidp.Issuer, vars map[string]string) *env {
	t.Helper()
	return startWith(t, iss, vars, server.Options{})
}

// startWith is start with server options (custom tools, role source).
func startWith(t testing.TB, iss *devidp.Issuer, vars map[string]string, opts server.Options) *env {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	base := "http://" + ln.Addr().String()
	src := map[string]string{
		"AZURE_AUTHORITY_HOST":  iss.Authority,
		"AZURE_TENANT_ID":       tenantID,
		"AZURE_CLIENT_ID":       clientID,
		"AZURE_BASE_URL":        base,
		"AZURE_REQUIRED_SCOPES": "read",
		"ROLE_SOURCE":           "static",
		"ROLES_FILE":            filepath.Join(repoRoot(), "test", "fixtures", "roles.json"),
		"POLICY_DIR":            filepath.Join(repoRoot(), "policies"),
		"LOG_LEVEL":             "error",
		// The tests read the policy's reasons; production shows none.
		"DENIAL_DETAIL": "true",
		// Loopback http base URL and, in some tests, ENABLE_AUTH=false: not production.
		"ENVIRONMENT": "development",
	}
	for k, v := range vars {
		src[k] = v
	}
	cfg, err := config.FromSource(func(name string) (string, bool) { v, ok := src[name]; return v, ok })
	if err != nil {
		t.Fatal(err)
	}
	srv, err := server.New(context.Background(), cfg, opts)
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewUnstartedServer(srv.Handler())
	hs.Listener.Close()
	hs.Listener = ln
	hs.Start()
	t.Cleanup(hs.Close)
	return &env{URL: base + "/mcp", Base: base, Issuer: iss, Config: cfg, Server: srv}
}

// token mints a token for this server's API.
func (e *env) token(t testing.TB, tok devidp.Token) string {
	t.Helper()
	if tok.Audience == "" {
		tok.Audience = clientID
	}
	if !tok.App && tok.Scopes == nil {
		tok.Scopes = []string{"read", "write"}
	}
	s, err := e.Issuer.Mint(tok)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// bearer adds a token to every request.
type bearer struct {
	token string
	base  http.RoundTripper
}

func (b *bearer) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	if b.token != "" {
		r.Header.Set("Authorization", "Bearer "+b.token)
	}
	return b.base.RoundTrip(r)
}

// connect opens a Go SDK client session with a token.
func (e *env) connect(t testing.TB, token string) *mcp.ClientSession {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	client := mcp.NewClient(&mcp.Implementation{Name: "e2e-go", Version: "1.0"}, nil)
	cs, err := client.Connect(ctx, &mcp.StreamableClientTransport{
		Endpoint:   e.URL,
		HTTPClient: &http.Client{Transport: &bearer{token: token, base: http.DefaultTransport}},
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cs.Close() })
	return cs
}
