package e2e

import (
	"context"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mcpguard/mcpguard/internal/config"
	"github.com/mcpguard/mcpguard/internal/devidp"
	"github.com/mcpguard/mcpguard/internal/server"
)

func body(t *testing.T, res *http.Response) string {
	t.Helper()
	b, _ := io.ReadAll(res.Body)
	return string(b)
}

// session opens a raw session and returns its id.
func session(t *testing.T, e *env, token string) string {
	t.Helper()
	res := post(t, e.URL, token, initBody, nil)
	if res.StatusCode != 200 {
		t.Fatalf("initialize: %d %s", res.StatusCode, body(t, res))
	}
	sid := res.Header.Get("Mcp-Session-Id")
	post(t, e.URL, token, `{"jsonrpc":"2.0","method":"notifications/initialized"}`, map[string]string{"Mcp-Session-Id": sid})
	return sid
}

func TestMalformedJSONRPC(t *testing.T) {
	e := start(t, startIssuer(t), nil)
	tok := e.token(t, devidp.Token{User: "alice", Roles: []string{"data_reader"}})
	sid := session(t, e, tok)
	h := map[string]string{"Mcp-Session-Id": sid}
	cases := []struct{ name, body, want string }{
		{"not json", `{"jsonrpc":`, ""},
		{"not an object", `42`, ""},
		{"unknown method", `{"jsonrpc":"2.0","id":9,"method":"tools/explode","params":{}}`, "unsupported"},
		{"bad params", `{"jsonrpc":"2.0","id":9,"method":"tools/call","params":"nope"}`, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			res := post(t, e.URL, tok, c.body, h)
			b := body(t, res)
			if res.StatusCode == 200 && !strings.Contains(b, `"error"`) {
				t.Fatalf("accepted: %d %s", res.StatusCode, b)
			}
			if res.StatusCode >= 500 {
				t.Fatalf("server error: %d %s", res.StatusCode, b)
			}
			if c.want != "" && !strings.Contains(strings.ToLower(b), c.want) {
				t.Fatalf("%d %s does not mention %q", res.StatusCode, b, c.want)
			}
		})
	}
	// The session still works after the garbage.
	res := post(t, e.URL, tok, `{"jsonrpc":"2.0","id":10,"method":"tools/call","params":{"name":"read_critical_data","arguments":{"query":"x"}}}`, h)
	if b := body(t, res); res.StatusCode != 200 || !strings.Contains(b, "record 1") {
		t.Fatalf("session broken after bad input: %d %s", res.StatusCode, b)
	}
}

func TestBodyOverLimit(t *testing.T) {
	e := start(t, startIssuer(t), map[string]string{"MAX_REQUEST_BYTES": "4096"})
	tok := e.token(t, devidp.Token{User: "alice", Roles: []string{"data_reader"}})
	sid := session(t, e, tok)
	big := `{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"read_critical_data","arguments":{"query":"` + strings.Repeat("x", 8192) + `"}}}`
	res := post(t, e.URL, tok, big, map[string]string{"Mcp-Session-Id": sid})
	if res.StatusCode != http.StatusRequestEntityTooLarge {
		t.Fatalf("oversized body: %d %s", res.StatusCode, body(t, res))
	}
	// Chunked, without a Content-Length, is cut off too.
	req, _ := http.NewRequest(http.MethodPost, e.URL, io.MultiReader(strings.NewReader(big)))
	req.ContentLength = -1
	req.Header.Set("Authorization", "Bearer "+tok)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	req.Header.Set("Mcp-Session-Id", sid)
	r2, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer r2.Body.Close()
	if r2.StatusCode < 400 {
		t.Fatalf("chunked oversized body accepted: %d", r2.StatusCode)
	}
}

func TestTokenOverSizeLimit(t *testing.T) {
	e := start(t, startIssuer(t), nil)
	res := post(t, e.URL, strings.Repeat("A", 17<<10), initBody, nil)
	if res.StatusCode != 401 || !strings.Contains(body(t, res), "larger than") {
		t.Fatalf("huge token: %d", res.StatusCode)
	}
}

func TestJWKSDown(t *testing.T) {
	iss := startIssuer(t)
	e := start(t, iss, map[string]string{"AZURE_AUTHORITY_HOST": deadEnd(t)})
	tok := e.token(t, devidp.Token{User: "alice"})
	res := post(t, e.URL, tok, initBody, nil)
	if res.StatusCode != http.StatusServiceUnavailable || !strings.Contains(body(t, res), "identity provider keys are unavailable") {
		t.Fatalf("JWKS down: %d", res.StatusCode)
	}
}

func TestBrokenPolicyRefusesToStart(t *testing.T) {
	dir := t.TempDir()
	_ = os.WriteFile(filepath.Join(dir, "authz.rego"), []byte("package mcp.authz\n\nallow if {\n\tinput.mcp.method ==\n}\n"), 0o600)
	cfg, err := config.FromSource(func(name string) (string, bool) {
		v, ok := map[string]string{"ENABLE_AUTH": "false", "ENVIRONMENT": "development", "POLICY_DIR": dir}[name]
		return v, ok
	})
	if err != nil {
		t.Fatal(err)
	}
	_, err = server.New(context.Background(), cfg, server.Options{})
	if err == nil || !strings.Contains(err.Error(), "authz.rego:5") {
		t.Fatalf("want an error naming authz.rego:5, got %v", err)
	}
}

// With authentication off, callers are anonymous and the shipped policy
// denies them: turning auth off never opens the server.
func TestAuthOffStillDecides(t *testing.T) {
	e := start(t, startIssuer(t), map[string]string{"ENABLE_AUTH": "false"})
	res := post(t, e.URL, "", initBody, nil)
	b := body(t, res)
	if !strings.Contains(b, "-32030") {
		t.Fatalf("anonymous initialize under the shipped policy: %d %s", res.StatusCode, b)
	}
	// An anonymous caller never reads the policy's reasons, detail on or not.
	if strings.Contains(b, "not authenticated") || !strings.Contains(b, `"reasons":[]`) {
		t.Fatalf("anonymous caller shown reasons: %s", b)
	}
}

func TestCrossOriginRefused(t *testing.T) {
	e := start(t, startIssuer(t), nil)
	tok := e.token(t, devidp.Token{User: "alice"})
	res := post(t, e.URL, tok, initBody, map[string]string{"Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site"})
	if res.StatusCode != http.StatusForbidden {
		t.Fatalf("cross-site request: %d", res.StatusCode)
	}
}

// Keycloak unreachable: every request is refused with a clear error, never let through.
func TestKeycloakUnreachableRefuses(t *testing.T) {
	e := start(t, startIssuer(t), map[string]string{
		"ROLE_SOURCE": "keycloak", "KEYCLOAK_SERVER_URL": deadEnd(t), "KEYCLOAK_REALM": "mcpguard",
		"KEYCLOAK_CLIENT_ID": "mcpguard", "KEYCLOAK_CLIENT_SECRET": "x",
	})
	tok := e.token(t, devidp.Token{User: "alice", Roles: []string{"data_reader"}})
	res := post(t, e.URL, tok, initBody, nil)
	b := body(t, res)
	if !strings.Contains(b, "-32031") || !strings.Contains(b, "authorization service unavailable") {
		t.Fatalf("Keycloak down: %d %s", res.StatusCode, b)
	}
}
