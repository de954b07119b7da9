package e2e

import (
	"context"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/mcpguard/mcpguard/internal/devidp"
)

// buildBinary builds cmd/mcpguard once per test run.
func buildBinary(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "mcpguard")
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/mcpguard")
	cmd.Dir = repoRoot()
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	return bin
}

// noListeners keeps a stdio child from binding anything: DEV_IDP=true in
// the caller's environment would have it serve DEV_IDP_ADDR, a fixed port.
const noListeners = "DEV_IDP=false"

// The stdio transport, as a desktop MCP client launches it: the binary is a
// child process, its caller authenticated by STDIO_ACCESS_TOKEN through the
// same verification as HTTP tokens.
func TestStdioTransport(t *testing.T) {
	iss := startIssuer(t)
	bin := buildBinary(t)
	tok, err := iss.Mint(devidp.Token{Audience: clientID, User: "alice", Roles: []string{"data_reader"}, Scopes: []string{"read"}})
	if err != nil {
		t.Fatal(err)
	}
	run := func(t *testing.T, token string) *mcp.ClientSession {
		cmd := exec.Command(bin, "serve")
		cmd.Dir = repoRoot()
		cmd.Env = append(os.Environ(),
			"TRANSPORT=stdio", "LOG_LEVEL=error", "ENV_FILE=/nonexistent", "DENIAL_DETAIL=true", noListeners,
			"AZURE_AUTHORITY_HOST="+iss.Authority, "AZURE_TENANT_ID="+tenantID, "AZURE_CLIENT_ID="+clientID,
			"AZURE_REQUIRED_SCOPES=read", "ROLE_SOURCE=static",
			"ROLES_FILE="+filepath.Join(repoRoot(), "test", "fixtures", "roles.json"),
			"STDIO_ACCESS_TOKEN="+token)
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		t.Cleanup(cancel)
		cs, err := mcp.NewClient(&mcp.Implementation{Name: "stdio-test"}, nil).Connect(ctx, &mcp.CommandTransport{Command: cmd}, nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cs.Close() })
		return cs
	}

	t.Run("authenticated", func(t *testing.T) {
		cs := run(t, tok)
		if got := toolNames(t, cs); !slices.Equal(got, []string{"get_current_user", "read_critical_data"}) {
			t.Fatalf("tools over stdio: %v", got)
		}
		if _, err := cs.CallTool(ctx(t), &mcp.CallToolParams{Name: "read_critical_data", Arguments: map[string]any{"query": "x"}}); err != nil {
			t.Fatal(err)
		}
		_, err := cs.CallTool(ctx(t), &mcp.CallToolParams{Name: "approve_budget", Arguments: map[string]any{"department": "x", "amount": 1}})
		denial(t, err)
	})
	t.Run("bad token is anonymous and denied", func(t *testing.T) {
		// initialize itself is decided by the policy: an anonymous caller cannot even connect.
		cmdCtx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		cmd := exec.Command(bin, "serve")
		cmd.Dir = repoRoot()
		cmd.Env = append(os.Environ(), "TRANSPORT=stdio", "LOG_LEVEL=error", "ENV_FILE=/nonexistent", "DENIAL_DETAIL=true", noListeners,
			"AZURE_AUTHORITY_HOST="+iss.Authority, "AZURE_TENANT_ID="+tenantID, "AZURE_CLIENT_ID="+clientID,
			"ROLE_SOURCE=token", "STDIO_ACCESS_TOKEN=garbage")
		_, err := mcp.NewClient(&mcp.Implementation{Name: "stdio-test"}, nil).Connect(cmdCtx, &mcp.CommandTransport{Command: cmd}, nil)
		if err == nil {
			t.Fatal("an anonymous stdio caller was let in")
		}
	})
}

// The legacy HTTP+SSE transport: decisions as over Streamable HTTP, and a
// session refused to another user's token.
func TestSSETransport(t *testing.T) {
	e := start(t, startIssuer(t), map[string]string{"TRANSPORT": "sse"})
	sseURL := e.Base + "/sse"
	connect := func(token string) (*mcp.ClientSession, error) {
		// The SSE stream lives as long as the context Connect is given.
		c, cancel := context.WithCancel(context.Background())
		t.Cleanup(cancel)
		return mcp.NewClient(&mcp.Implementation{Name: "sse-test"}, nil).Connect(c, &mcp.SSEClientTransport{
			Endpoint: sseURL, HTTPClient: &http.Client{Transport: &bearer{token: token, base: http.DefaultTransport}},
		}, nil)
	}
	alice := e.token(t, devidp.Token{User: "alice", Roles: []string{"data_reader"}})
	cs, err := connect(alice)
	if err != nil {
		t.Fatal(err)
	}
	defer cs.Close()
	if got := toolNames(t, cs); !slices.Equal(got, []string{"get_current_user", "read_critical_data"}) {
		t.Fatalf("tools over SSE: %v", got)
	}
	_, err = cs.CallTool(ctx(t), &mcp.CallToolParams{Name: "admin_operation", Arguments: map[string]any{"operation": "x"}})
	denial(t, err)

	// A session opened by alice refuses mallory's valid token.
	req, _ := http.NewRequest(http.MethodGet, sseURL, nil)
	req.Header.Set("Authorization", "Bearer "+alice)
	req.Header.Set("Accept", "text/event-stream")
	getCtx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stream, err := http.DefaultClient.Do(req.WithContext(getCtx))
	if err != nil {
		t.Fatal(err)
	}
	defer stream.Body.Close()
	buf := make([]byte, 512)
	n, _ := stream.Body.Read(buf)
	i := strings.Index(string(buf[:n]), "?sessionid=")
	if i < 0 {
		t.Fatalf("no endpoint event: %q", buf[:n])
	}
	endpoint := strings.TrimSpace(strings.SplitN(string(buf[i:n]), "\n", 2)[0])
	mallory := e.token(t, devidp.Token{User: "mallory", Roles: []string{"data_reader"}})
	res := post(t, sseURL+endpoint, mallory, `{"jsonrpc":"2.0","id":1,"method":"ping"}`, nil)
	if b := body(t, res); res.StatusCode != http.StatusForbidden || !strings.Contains(b, "another user") {
		t.Fatalf("mallory on alice's SSE session: %d %s", res.StatusCode, b)
	}
	res = post(t, sseURL+endpoint, alice, initBody, nil)
	if res.StatusCode != http.StatusAccepted {
		t.Fatalf("alice on her SSE session: %d", res.StatusCode)
	}

	if _, err := connect("garbage"); err == nil {
		t.Fatal("SSE connect with a garbage token succeeded")
	}
	res, err = http.Get(e.Base + "/.well-known/oauth-protected-resource/sse")
	if err != nil || res.StatusCode != 200 {
		t.Fatalf("SSE resource metadata: %v %v", err, res)
	}
	res.Body.Close()
}
