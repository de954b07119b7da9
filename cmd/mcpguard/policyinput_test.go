package main

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/mcpguard/mcpguard/internal/config"
	"github.com/mcpguard/mcpguard/internal/devidp"
	"github.com/mcpguard/mcpguard/internal/server"
)

// sameInput vetoes every tools/call whose input document differs from
// data.compare_test.expected, the times and the client's port aside (they
// differ from one request to the next): a call passes only when the server
// built exactly the document policy input printed.
const sameInput = `package mcp.authz

deny contains msg if {
	input.mcp.method == "tools/call"
	stable(input) != stable(data.compare_test.expected)
	msg := sprintf("the server built %s", [json.marshal(stable(input))])
}

stable(doc) := json.remove(doc, ["request/time_ns", "request/remote_addr"])
`

// bearer adds a token to every request.
type bearer struct{ token string }

func (b bearer) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+b.token)
	return http.DefaultTransport.RoundTrip(r)
}

// policy input prints the document the server builds for the same request:
// a real server, over HTTP, in an MCP session, with the same token, lets a
// tools/call through a veto that refuses any other document, and refuses
// the same call with other arguments.
func TestPolicyInputMatchesServer(t *testing.T) {
	home := isolate(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	// The development identity provider, served by the test.
	key, err := devidp.LoadOrCreateKey(filepath.Join(home, "dev-idp-key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	iss, err := devidp.New("http://"+ln.Addr().String(), config.DevTenantID, key)
	if err != nil {
		t.Fatal(err)
	}
	idp := &http.Server{Handler: iss.Handler(), ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = idp.Serve(ln) }()
	defer idp.Close()
	for k, v := range map[string]string{"DEV_IDP": "true", "ENVIRONMENT": "development", "DEV_IDP_ADDR": ln.Addr().String()} {
		t.Setenv(k, v)
	}
	tok, err := iss.Mint(devidp.Token{Audience: config.DevClientID, User: "bob", Roles: []string{"finance"}, Scopes: []string{"read", "write"}})
	if err != nil {
		t.Fatal(err)
	}
	tokFile := filepath.Join(home, "token")
	if err := os.WriteFile(tokFile, []byte(tok+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}

	// The shipped policies, and the veto.
	dir := t.TempDir()
	for _, f := range []string{"authz.rego", "lib.rego", "data.json"} {
		b, err := os.ReadFile(filepath.Join(shippedPolicies, f))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, f), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write := func(name, body string) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("same_input.rego", sameInput)
	write("expected.json", `{"compare_test": {"expected": {}}}`)

	// The server, configured as policy input reads the configuration.
	cfg, _, err := config.Load([]string{"--policy-dir=" + dir, "--log-level=error"})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := server.New(ctx, cfg, server.Options{})
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(srv.Handler())
	defer hs.Close()
	client := mcp.NewClient(&mcp.Implementation{Name: "compare-client", Version: "3.1"}, nil)
	cs, err := client.Connect(ctx, &mcp.StreamableClientTransport{Endpoint: hs.URL + "/mcp", HTTPClient: &http.Client{Transport: bearer{tok}}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer cs.Close()
	u, _ := url.Parse(hs.URL)

	args := `{"department":"operations","amount":5000}`
	out, errOut, code := runCLI(t, "policy", "input", "--policy-dir", dir, "--token-file", tokFile,
		"--tool", "approve_budget", "--arguments", args,
		"--session-id", cs.ID(), "--client", "compare-client/3.1", "--protocol-version", cs.InitializeResult().ProtocolVersion,
		"--host", u.Host)
	if code != 0 {
		t.Fatalf("policy input: exit %d: %s", code, errOut)
	}
	var doc map[string]any
	if err := json.Unmarshal([]byte(out), &doc); err != nil {
		t.Fatalf("%v:\n%s", err, out)
	}
	if doc["mcp"].(map[string]any)["session_id"] != cs.ID() || doc["identity"].(map[string]any)["name"] != "bob" {
		t.Fatalf("not the document of this request:\n%s", out)
	}
	b, _ := json.Marshal(map[string]any{"compare_test": map[string]any{"expected": doc}})
	write("expected.json", string(b))
	if err := srv.Engine().Reload(ctx); err != nil {
		t.Fatal(err)
	}

	var budget map[string]any
	_ = json.Unmarshal([]byte(args), &budget)
	res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "approve_budget", Arguments: budget})
	if err != nil || res.IsError {
		t.Fatalf("the server built another document than policy input printed:\npolicy input: %s\nserver: %v %v", out, err, res)
	}
	budget["amount"] = 5001
	if _, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "approve_budget", Arguments: budget}); err == nil || !strings.Contains(err.Error(), "denied") {
		t.Fatalf("another call passed the veto (%v): the comparison compares nothing", err)
	}
}

// What the server refuses before the policy is asked, policy input refuses
// too (exit 1), with the reason.
func TestPolicyInputRefusals(t *testing.T) {
	home := isolate(t)
	garbage := filepath.Join(home, "token")
	if err := os.WriteFile(garbage, []byte("not.a.token"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("DEV_IDP", "true")
	t.Setenv("ENVIRONMENT", "development")
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--token-file", garbage, "--tool", "get_current_user"}, "token is refused"},
		{[]string{"--token-file", filepath.Join(home, "absent"), "--tool", "get_current_user"}, "--token-file"},
		// Arguments the policy is never shown: the call is refused as such.
		{[]string{"--user", "bob", "--tool", "approve_budget", "--arguments", `{"amount":1,"amount":2}`}, "tool arguments refused"},
		{[]string{"--user", "bob", "--method", "sampling/createMessage", "--params", "{}"}, "does not serve it"},
		{[]string{"--user", "bob", "--method", "tools/call"}, "needs params"},
	} {
		out, errOut, code := runCLI(t, append([]string{"policy", "input", "--policy-dir", shippedPolicies}, c.args...)...)
		if code != 1 || !strings.Contains(errOut, c.want) {
			t.Errorf("%q: exit %d, stdout %q, stderr %q; want 1 and %q", c.args, code, out, errOut, c.want)
		}
	}
}

// For a list method, --visible prints the document of the list's filtering:
// the registered items as candidates, tools with their annotations.
func TestPolicyInputVisible(t *testing.T) {
	isolate(t)
	out, errOut, code := runCLI(t, "policy", "input", "--policy-dir", shippedPolicies, "--user", "alice", "--method", "tools/list", "--visible")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	var doc struct {
		MCP struct {
			Candidates struct {
				Tools []struct {
					Name        string
					Annotations map[string]bool
				}
			}
		}
	}
	if err := json.Unmarshal([]byte(out), &doc); err != nil {
		t.Fatal(err)
	}
	found := false
	for _, c := range doc.MCP.Candidates.Tools {
		if c.Name == "admin_operation" && c.Annotations["destructiveHint"] {
			found = true
		}
	}
	if !found {
		t.Errorf("no admin_operation candidate with its annotations:\n%s", out)
	}
	// Without --visible: the list's own decision, which has no candidates.
	out, _, _ = runCLI(t, "policy", "input", "--policy-dir", shippedPolicies, "--user", "alice", "--method", "tools/list")
	if strings.Contains(out, "candidates") {
		t.Errorf("the list's decision carries candidates:\n%s", out)
	}
}
