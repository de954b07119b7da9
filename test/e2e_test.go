package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/mcpguard/mcpguard/internal/devidp"
	"github.com/mcpguard/mcpguard/internal/server"
)

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	t.Cleanup(cancel)
	return c
}

func toolNames(t *testing.T, cs *mcp.ClientSession) []string {
	t.Helper()
	res, err := cs.ListTools(ctx(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, tl := range res.Tools {
		names = append(names, tl.Name)
	}
	slices.Sort(names)
	return names
}

func denial(t *testing.T, err error) server.DenialData {
	t.Helper()
	var rpcErr *jsonrpc.Error
	if !errors.As(err, &rpcErr) {
		t.Fatalf("want a JSON-RPC error, got %v", err)
	}
	if rpcErr.Code != server.CodeAccessDenied {
		t.Fatalf("code = %d, want %d (%s)", rpcErr.Code, server.CodeAccessDenied, rpcErr.Message)
	}
	var d server.DenialData
	if err := json.Unmarshal(rpcErr.Data, &d); err != nil {
		t.Fatalf("error data %s: %v", rpcErr.Data, err)
	}
	if d.DecisionID == "" || len(d.Reasons) == 0 {
		t.Fatalf("denial lacks decision id or reasons: %+v", d)
	}
	return d
}

// A data reader reads critical data, is refused a budget approval with the
// policy's reason, and sees only the tools it may call.
func TestUserAllowedDeniedAndFilteredList(t *testing.T) {
	e := start(t, startIssuer(t), nil)
	cs := e.connect(t, e.token(t, devidp.Token{User: "alice", Roles: []string{"data_reader"}}))

	res, err := cs.CallTool(ctx(t), &mcp.CallToolParams{Name: "read_critical_data", Arguments: map[string]any{"query": "q3 revenue"}})
	if err != nil || res.IsError {
		t.Fatalf("read_critical_data: %v %+v", err, res)
	}
	out, _ := json.Marshal(res.StructuredContent)
	if !strings.Contains(string(out), "q3 revenue") || !strings.Contains(string(out), "alice@") {
		t.Fatalf("unexpected result %s", out)
	}

	_, err = cs.CallTool(ctx(t), &mcp.CallToolParams{Name: "approve_budget", Arguments: map[string]any{"department": "it", "amount": 10}})
	d := denial(t, err)
	if !strings.Contains(strings.Join(d.Reasons, " "), "finance") {
		t.Fatalf("reason does not name the missing role: %v", d.Reasons)
	}

	got := toolNames(t, cs)
	want := []string{"get_current_user", "read_critical_data"}
	if !slices.Equal(got, want) {
		t.Fatalf("tools/list = %v, want %v", got, want)
	}
}

// Each caller's list is its own: the same server shows bob what alice cannot see.
func TestListsFilteredPerCaller(t *testing.T) {
	e := start(t, startIssuer(t), nil)
	bob := e.connect(t, e.token(t, devidp.Token{User: "bob", Roles: []string{"finance", "executive", "api.writer"}}))
	got := toolNames(t, bob)
	want := []string{"approve_budget", "get_current_user", "write_api_data"}
	if !slices.Equal(got, want) {
		t.Fatalf("bob's tools = %v, want %v", got, want)
	}
	res, err := bob.CallTool(ctx(t), &mcp.CallToolParams{Name: "write_api_data", Arguments: map[string]any{"key": "k", "value": "v"}})
	if err != nil || res.IsError {
		t.Fatalf("write_api_data for a client-role writer: %v %+v", err, res)
	}

	nobody := e.connect(t, e.token(t, devidp.Token{User: "nobody"}))
	if got := toolNames(t, nobody); !slices.Equal(got, []string{"get_current_user"}) {
		t.Fatalf("a caller without roles sees %v", got)
	}
	rl, err := nobody.ListResources(ctx(t), nil)
	if err != nil || len(rl.Resources) != 1 || rl.Resources[0].URI != "data://server-info" {
		t.Fatalf("resources for nobody: %v %+v", err, rl)
	}
	tl, err := nobody.ListResourceTemplates(ctx(t), nil)
	if err != nil || len(tl.ResourceTemplates) != 0 {
		t.Fatalf("templates for nobody: %v %+v", err, tl)
	}
	_, err = nobody.ReadResource(ctx(t), &mcp.ReadResourceParams{URI: "data://items/7"})
	denial(t, err)

	reader := e.connect(t, e.token(t, devidp.Token{User: "reader", Roles: []string{"data_reader"}}))
	rr, err := reader.ReadResource(ctx(t), &mcp.ReadResourceParams{URI: "data://items/7"})
	if err != nil || !strings.Contains(rr.Contents[0].Text, `"id":"7"`) {
		t.Fatalf("data_reader reading an item: %v %+v", err, rr)
	}
	pl, err := reader.ListPrompts(ctx(t), nil)
	if err != nil || len(pl.Prompts) != 1 {
		t.Fatalf("prompts: %v %+v", err, pl)
	}
	pr, err := reader.GetPrompt(ctx(t), &mcp.GetPromptParams{Name: "summarize_access", Arguments: map[string]string{"focus": "budgets"}})
	if err != nil || !strings.Contains(pr.Messages[0].Content.(*mcp.TextContent).Text, "budgets") {
		t.Fatalf("prompt: %v %+v", err, pr)
	}
}

// An app-only caller (client credentials, as an Azure OpenAI agent calls)
// has no scopes; its app roles carry its permissions.
func TestAppOnlyCaller(t *testing.T) {
	e := start(t, startIssuer(t), nil)
	cs := e.connect(t, e.token(t, devidp.Token{User: "agent", App: true, Roles: []string{"Agent.DataReader"}}))
	res, err := cs.CallTool(ctx(t), &mcp.CallToolParams{Name: "get_current_user", Arguments: map[string]any{}})
	if err != nil || res.IsError {
		t.Fatalf("get_current_user: %v %+v", err, res)
	}
	out, _ := json.Marshal(res.StructuredContent)
	if !strings.Contains(string(out), `"kind":"app"`) || !strings.Contains(string(out), `"read_critical_data":true`) {
		t.Fatalf("app caller seen as %s", out)
	}
	if _, err := cs.CallTool(ctx(t), &mcp.CallToolParams{Name: "read_critical_data", Arguments: map[string]any{"query": "x"}}); err != nil {
		t.Fatalf("app with data_reader: %v", err)
	}
	_, err = cs.CallTool(ctx(t), &mcp.CallToolParams{Name: "admin_operation", Arguments: map[string]any{"operation": "x"}})
	denial(t, err)
}

func post(t *testing.T, url, token, body string, hdr map[string]string) *http.Response {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { res.Body.Close() })
	return res
}

const initBody = `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"raw","version":"1"}}}`

// Missing and bad tokens get 401 with a challenge naming the metadata;
// missing scopes get 403 insufficient_scope; the metadata is served.
func TestChallenges(t *testing.T) {
	e := start(t, startIssuer(t), nil)
	res := post(t, e.URL, "", initBody, nil)
	if res.StatusCode != 401 {
		t.Fatalf("no token: %d", res.StatusCode)
	}
	ch := res.Header.Get("WWW-Authenticate")
	if !strings.Contains(ch, `resource_metadata="`+e.Base+`/.well-known/oauth-protected-resource/mcp"`) {
		t.Fatalf("challenge %q", ch)
	}

	res = post(t, e.URL, "not-a-jwt", initBody, nil)
	if res.StatusCode != 401 || !strings.Contains(res.Header.Get("WWW-Authenticate"), `error="invalid_token"`) {
		t.Fatalf("garbage token: %d %q", res.StatusCode, res.Header.Get("WWW-Authenticate"))
	}

	noScope := e.token(t, devidp.Token{User: "alice", Scopes: []string{"write"}})
	res = post(t, e.URL, noScope, initBody, nil)
	ch = res.Header.Get("WWW-Authenticate")
	if res.StatusCode != 403 || !strings.Contains(ch, `error="insufficient_scope"`) || !strings.Contains(ch, "api://"+clientID+"/read") {
		t.Fatalf("missing scope: %d %q", res.StatusCode, ch)
	}

	for _, path := range []string{"/.well-known/oauth-protected-resource", "/.well-known/oauth-protected-resource/mcp"} {
		r, err := http.Get(e.Base + path)
		if err != nil {
			t.Fatal(err)
		}
		var meta map[string]any
		_ = json.NewDecoder(r.Body).Decode(&meta)
		r.Body.Close()
		if meta["resource"] != e.URL || !strings.Contains(toJSON(meta["authorization_servers"]), e.Issuer.IssuerURL(tenantID)) {
			t.Fatalf("%s: %v", path, meta)
		}
	}
}

func toJSON(v any) string { b, _ := json.Marshal(v); return string(b) }

// A session opened by one user is refused to another user's token.
func TestSessionBoundToUser(t *testing.T) {
	e := start(t, startIssuer(t), nil)
	alice := e.token(t, devidp.Token{User: "alice", Roles: []string{"data_reader"}})
	mallory := e.token(t, devidp.Token{User: "mallory", Roles: []string{"data_reader"}})
	res := post(t, e.URL, alice, initBody, nil)
	sid := res.Header.Get("Mcp-Session-Id")
	if res.StatusCode != 200 || sid == "" {
		t.Fatalf("initialize: %d %q", res.StatusCode, sid)
	}
	res = post(t, e.URL, mallory, `{"jsonrpc":"2.0","id":2,"method":"tools/list"}`, map[string]string{"Mcp-Session-Id": sid})
	if res.StatusCode != http.StatusForbidden {
		body, _ := io.ReadAll(res.Body)
		t.Fatalf("another user's token on alice's session: %d %s", res.StatusCode, body)
	}
	res = post(t, e.URL, alice, `{"jsonrpc":"2.0","id":2,"method":"tools/list"}`, map[string]string{"Mcp-Session-Id": sid})
	if res.StatusCode != 200 {
		t.Fatalf("alice on her session: %d", res.StatusCode)
	}
}

// Stateless mode serves each POST on its own, with the same decisions.
func TestStateless(t *testing.T) {
	e := start(t, startIssuer(t), map[string]string{"STATELESS": "true", "DECISION_REUSE": "false"})
	cs := e.connect(t, e.token(t, devidp.Token{User: "alice", Roles: []string{"data_reader"}}))
	if got := toolNames(t, cs); !slices.Equal(got, []string{"get_current_user", "read_critical_data"}) {
		t.Fatalf("stateless tools/list = %v", got)
	}
	_, err := cs.CallTool(ctx(t), &mcp.CallToolParams{Name: "admin_operation", Arguments: map[string]any{"operation": "x"}})
	denial(t, err)
}

// With lists reused (the default), stateless callers still each get their
// own list.
func TestStatelessListCachePerCaller(t *testing.T) {
	e := start(t, startIssuer(t), map[string]string{"STATELESS": "true"})
	alice := e.connect(t, e.token(t, devidp.Token{User: "alice", Roles: []string{"data_reader"}}))
	bob := e.connect(t, e.token(t, devidp.Token{User: "bob", Roles: []string{"finance", "executive"}}))
	for range 3 {
		if got := toolNames(t, alice); !slices.Equal(got, []string{"get_current_user", "read_critical_data"}) {
			t.Fatalf("alice: %v", got)
		}
		if got := toolNames(t, bob); !slices.Equal(got, []string{"approve_budget", "get_current_user"}) {
			t.Fatalf("bob: %v", got)
		}
	}
}
