package server

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/mcpguard/mcpguard/internal/config"
	"github.com/mcpguard/mcpguard/internal/devidp"
	"github.com/mcpguard/mcpguard/internal/exchange"
)

// These tests drive the HTTP request path in front of the middleware
// (Handler, protect, authenticate, limitBody, stripCredentials,
// bodyDeadline) with the Entra-shaped issuer on loopback.

const (
	protectTenant = "72f988bf-0000-4000-8000-000000000001"
	protectClient = "5b2a1c3d-0000-4000-8000-0000000000c1"
	protectBase   = "https://mcp.example"
)

type protected struct {
	s       *Server
	h       http.Handler
	iss     *devidp.Issuer
	logs    *syncBuffer
	mu      sync.Mutex
	headers http.Header // what the "open" tool was handed
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

func newProtected(t testing.TB, vars map[string]string) *protected {
	t.Helper()
	key, err := devidp.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	var issHandler http.Handler
	issSrv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { issHandler.ServeHTTP(w, r) }))
	t.Cleanup(issSrv.Close)
	iss, err := devidp.New(issSrv.URL, protectTenant, key)
	if err != nil {
		t.Fatal(err)
	}
	issHandler = iss.Handler()

	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "authz.rego"), []byte(echoPolicy), 0o600); err != nil {
		t.Fatal(err)
	}
	src := map[string]string{
		"ENVIRONMENT":           "development",
		"AZURE_AUTHORITY_HOST":  issSrv.URL,
		"AZURE_TENANT_ID":       protectTenant,
		"AZURE_CLIENT_ID":       protectClient,
		"AZURE_APP_ID_URI":      "api://mcpguard",
		"AZURE_BASE_URL":        protectBase,
		"AZURE_REQUIRED_SCOPES": "read,write",
		"STATELESS":             "true",
		"POLICY_DIR":            dir,
		"DENIAL_DETAIL":         "true",
		"MAX_REQUEST_BYTES":     "4096",
	}
	for k, v := range vars {
		src[k] = v
	}
	cfg, err := config.FromSource(func(name string) (string, bool) { v, ok := src[name]; return v, ok })
	if err != nil {
		t.Fatal(err)
	}
	p := &protected{iss: iss, logs: &syncBuffer{}}
	s, err := New(context.Background(), cfg, Options{
		Logger: slog.New(slog.NewTextHandler(p.logs, &slog.HandlerOptions{Level: slog.LevelInfo})),
		Roles:  &fakeRoles{auth: &exchange.Authorization{Source: "fake", Roles: []string{"analyst"}}},
		Register: func(m *mcp.Server) {
			m.AddTool(&mcp.Tool{Name: "open", InputSchema: &jsonSchemaObject}, func(_ context.Context, req *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
				p.mu.Lock()
				p.headers = req.Extra.Header.Clone()
				p.mu.Unlock()
				return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: "ok"}}}, nil
			})
			m.AddTool(&mcp.Tool{Name: "closed", InputSchema: &jsonSchemaObject}, okTool)
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { <-s.Linted() })
	p.s, p.h = s, s.Handler()
	return p
}

func (p *protected) token(t testing.TB, user string) string {
	t.Helper()
	tok, err := p.iss.Mint(devidp.Token{User: user, Audience: protectClient, Scopes: []string{"read", "write"}})
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// post sends one JSON-RPC request to the endpoint.
func (p *protected) post(t *testing.T, path, token string, body string, hdr map[string]string) *httptest.ResponseRecorder {
	t.Helper()
	r := httptest.NewRequest(http.MethodPost, path, strings.NewReader(body))
	r.Header.Set("Content-Type", "application/json")
	r.Header.Set("Accept", "application/json, text/event-stream")
	if token != "" {
		r.Header.Set("Authorization", "Bearer "+token)
	}
	for k, v := range hdr {
		if k == "Host" {
			r.Host = v
			continue
		}
		r.Header.Set(k, v)
	}
	rec := httptest.NewRecorder()
	p.h.ServeHTTP(rec, r)
	return rec
}

func callBody(tool string) string {
	b, _ := json.Marshal(map[string]any{"jsonrpc": "2.0", "id": 1, "method": "tools/call",
		"params": map[string]any{"name": tool, "arguments": map[string]any{}}})
	return string(b)
}

func TestProtectChallengesWithoutToken(t *testing.T) {
	p := newProtected(t, nil)
	for _, token := range []string{"", "not-a-token"} {
		rec := p.post(t, "/mcp", token, callBody("open"), nil)
		ch := rec.Header().Get("WWW-Authenticate")
		if rec.Code != http.StatusUnauthorized ||
			!strings.Contains(ch, `resource_metadata="`+protectBase+`/.well-known/oauth-protected-resource/mcp"`) ||
			!strings.Contains(ch, "api://mcpguard/read api://mcpguard/write") {
			t.Fatalf("token %q: %d %q", token, rec.Code, ch)
		}
	}
}

func TestProtectHandsTheCallerToTheMiddleware(t *testing.T) {
	p := newProtected(t, nil)
	tok := p.token(t, "ada")
	rec := p.post(t, "/mcp", tok, callBody("closed"), map[string]string{"Host": "mcp.example"})
	var resp struct {
		Error struct {
			Code int             `json:"code"`
			Data json.RawMessage `json:"data"`
		} `json:"error"`
	}
	if rec.Code != http.StatusOK || json.Unmarshal(rec.Body.Bytes(), &resp) != nil || resp.Error.Code != CodeAccessDenied {
		t.Fatalf("%d %s", rec.Code, rec.Body)
	}
	var data DenialData
	var in map[string]any
	if json.Unmarshal(resp.Error.Data, &data) != nil || len(data.Reasons) != 1 || json.Unmarshal([]byte(data.Reasons[0]), &in) != nil {
		t.Fatalf("denial data %s", resp.Error.Data)
	}
	for path, want := range map[string]any{
		"identity.authenticated": true, "identity.object_id": devidp.ObjectIDFor("ada"), "authorization.source": "fake",
		"request.host": "mcp.example", "request.remote_addr": "192.0.2.1:1234",
	} {
		if got := at(in, path); got != want {
			t.Errorf("input.%s = %v, want %v", path, got, want)
		}
	}
}

func TestProtectStripsCredentials(t *testing.T) {
	p := newProtected(t, nil)
	rec := p.post(t, "/mcp", p.token(t, "ada"), callBody("open"), map[string]string{
		"Cookie": "session=s3cret", "X-Api-Key": "k3y", "X-Request-Id": "r-1",
	})
	if rec.Code != http.StatusOK || !strings.Contains(rec.Body.String(), `"ok"`) {
		t.Fatalf("%d %s", rec.Code, rec.Body)
	}
	p.mu.Lock()
	h := p.headers
	p.mu.Unlock()
	if h == nil || h.Get("Authorization") != "" || h.Get("Cookie") != "" || h.Get("X-Api-Key") != "" || h.Get("X-Request-Id") != "r-1" {
		t.Fatalf("the tool was handed %v", h)
	}
}

// With authentication off nothing reads a credential, and still none
// reaches a handler.
func TestOpenServerStripsCredentials(t *testing.T) {
	p := newProtected(t, map[string]string{"ENABLE_AUTH": "false"})
	rec := p.post(t, "/mcp", "", callBody("open"), map[string]string{
		"Authorization": "Bearer s3cret", "Cookie": "session=s3cret", "X-Api-Key": "k3y", "X-Request-Id": "r-1",
	})
	if rec.Code != http.StatusOK || !strings.Contains(rec.Body.String(), `"ok"`) {
		t.Fatalf("%d %s", rec.Code, rec.Body)
	}
	p.mu.Lock()
	h := p.headers
	p.mu.Unlock()
	if h == nil || h.Get("X-Request-Id") != "r-1" {
		t.Fatalf("the tool was handed %v", h)
	}
	for name := range h {
		if isCredentialHeader(name) {
			t.Fatalf("the tool was handed %s: %v", name, h)
		}
	}
}

func TestProtectBodyLimit(t *testing.T) {
	p := newProtected(t, nil)
	tok := p.token(t, "ada")
	// MAX_REQUEST_BYTES=4096: a body of exactly the limit is read, one byte more is refused unread.
	pad := func(n int) string {
		b := callBody("open")
		return b[:len(b)-1] + `,"pad":"` + strings.Repeat("x", n-len(b)-9) + `"}`
	}
	if rec := p.post(t, "/mcp", tok, pad(4096), nil); rec.Code != http.StatusOK {
		t.Fatalf("a body of exactly MAX_REQUEST_BYTES: %d %s", rec.Code, rec.Body)
	}
	rec := p.post(t, "/mcp", tok, pad(4097), nil)
	var resp struct {
		Error struct {
			Code    int    `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
	}
	if rec.Code != http.StatusRequestEntityTooLarge || json.Unmarshal(rec.Body.Bytes(), &resp) != nil ||
		resp.Error.Code != jsonrpc.CodeInvalidRequest || !strings.Contains(resp.Error.Message, "MAX_REQUEST_BYTES") {
		t.Fatalf("a body over MAX_REQUEST_BYTES: %d %s", rec.Code, rec.Body)
	}
	// Without authentication the limit holds too.
	open := newProtected(t, map[string]string{"ENABLE_AUTH": "false"})
	if rec := open.post(t, "/mcp", "", pad(4097), nil); rec.Code != http.StatusRequestEntityTooLarge {
		t.Fatalf("ENABLE_AUTH=false, a body over MAX_REQUEST_BYTES: %d", rec.Code)
	}
}

func TestProtectedResourceMetadata(t *testing.T) {
	for _, c := range []struct {
		vars     map[string]string
		endpoint string
	}{
		{nil, "/mcp"},
		{map[string]string{"TRANSPORT": "sse", "STATELESS": "false"}, "/sse"},
	} {
		p := newProtected(t, c.vars)
		for _, path := range []string{"/.well-known/oauth-protected-resource", "/.well-known/oauth-protected-resource" + c.endpoint} {
			rec := httptest.NewRecorder()
			p.h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
			var meta struct {
				Resource             string   `json:"resource"`
				AuthorizationServers []string `json:"authorization_servers"`
				Scopes               []string `json:"scopes_supported"`
				Name                 string   `json:"resource_name"`
			}
			if rec.Code != http.StatusOK || json.Unmarshal(rec.Body.Bytes(), &meta) != nil {
				t.Fatalf("%s: %d %s", path, rec.Code, rec.Body)
			}
			if meta.Resource != protectBase+c.endpoint || len(meta.AuthorizationServers) != 1 ||
				meta.AuthorizationServers[0] != p.s.cfg.Azure.AuthorityHost+"/"+protectTenant+"/v2.0" ||
				strings.Join(meta.Scopes, " ") != "api://mcpguard/read api://mcpguard/write" || meta.Name != "mcpguard" {
				t.Fatalf("%s: %+v", path, meta)
			}
		}
		// The endpoint of the transport is the protected one.
		rec := p.post(t, c.endpoint, "", callBody("open"), nil)
		if rec.Code != http.StatusUnauthorized || !strings.Contains(rec.Header().Get("WWW-Authenticate"), "oauth-protected-resource"+c.endpoint+`"`) {
			t.Fatalf("%s without a token: %d %q", c.endpoint, rec.Code, rec.Header().Get("WWW-Authenticate"))
		}
	}
	// Without authentication there is nothing to describe.
	p := newProtected(t, map[string]string{"ENABLE_AUTH": "false"})
	rec := httptest.NewRecorder()
	p.h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/.well-known/oauth-protected-resource", nil))
	if rec.Code != http.StatusNotFound {
		t.Fatalf("ENABLE_AUTH=false, metadata: %d", rec.Code)
	}
}

func TestHealthAndOrigins(t *testing.T) {
	p := newProtected(t, map[string]string{"ALLOWED_ORIGINS": "https://app.example,notanorigin"})
	rec := httptest.NewRecorder()
	p.h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/healthz", nil))
	if rec.Code != http.StatusOK || rec.Body.String() != `{"status":"ok"}`+"\n" || rec.Header().Get("Content-Type") != "application/json" {
		t.Fatalf("healthz: %d %q", rec.Code, rec.Body)
	}
	logs := p.logs.String()
	if strings.Count(logs, "ALLOWED_ORIGINS entry ignored") != 1 || !strings.Contains(logs, "notanorigin") {
		t.Fatalf("origins log: %s", logs)
	}
	// The trusted origin's cross-origin POST passes the origin check (and
	// meets authentication); another origin's is refused before it.
	for origin, want := range map[string]int{"https://app.example": http.StatusUnauthorized, "https://evil.example": http.StatusForbidden} {
		rec := p.post(t, "/mcp", "", callBody("open"), map[string]string{"Origin": origin, "Sec-Fetch-Site": "cross-site"})
		if rec.Code != want {
			t.Errorf("Origin %s: %d, want %d", origin, rec.Code, want)
		}
	}
}

// bodyDeadline bounds the reading of a body on a real connection, and lifts
// the deadline once the body is read.
func TestBodyDeadlineWrapsBodies(t *testing.T) {
	type seen struct {
		wrapped, liftedEarly, liftedAtEnd bool
	}
	got := make(chan seen, 1)
	h := bodyDeadline(http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) {
		var s seen
		db, ok := r.Body.(*deadlineBody)
		s.wrapped = ok
		if ok {
			var one [1]byte
			_, _ = db.Read(one[:])
			s.liftedEarly = db.lifted
			_, _ = io.ReadAll(db)
			s.liftedAtEnd = db.lifted
		}
		got <- s
	}), time.Minute)
	srv := httptest.NewServer(h)
	defer srv.Close()
	for _, c := range []struct {
		method, body string
		want         seen
	}{
		{http.MethodPost, "hello", seen{wrapped: true, liftedAtEnd: true}},
		{http.MethodGet, "", seen{}},
	} {
		req, _ := http.NewRequest(c.method, srv.URL, strings.NewReader(c.body))
		if c.body == "" {
			req.Body = http.NoBody
		}
		res, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if s := <-got; s != c.want {
			t.Errorf("%s with body %q: %+v, want %+v", c.method, c.body, s, c.want)
		}
	}
	// Without a connection (a recorder) there is nothing to bound.
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/", strings.NewReader("hello")))
	if s := <-got; s.wrapped {
		t.Error("a body without a connection was wrapped")
	}
}

// A header name of up to 64 bytes is judged by its words; a longer one is
// taken for a credential.
func TestCredentialHeaderLength(t *testing.T) {
	for n, want := range map[int]bool{64: false, 65: true} {
		name := "X-" + strings.Repeat("a", n-2)
		if got := isCredentialHeader(name); got != want {
			t.Errorf("a %d-byte harmless header name: credential=%v", n, got)
		}
	}
}
