package server

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/auth"
	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/mcpguard/mcpguard/internal/authn"
	"github.com/mcpguard/mcpguard/internal/config"
	"github.com/mcpguard/mcpguard/internal/exchange"
	"github.com/mcpguard/mcpguard/internal/policy"
	"github.com/mcpguard/mcpguard/tools"
)

// These tests drive the authorization middleware (authorize, list, deny)
// directly, with a policy written for them: what they pin down is what the
// middleware builds and enforces, not what the shipped policy decides.

// echoPolicy allows every list (except to the caller "no-lists") and the
// tools, resources and prompts not named "hidden…" nor in the closed set, so
// lists show exactly those; and gives, as the one reason of each denial, the
// input document it was given.
const echoPolicy = `package mcp.authz

# The in-memory session of TestAuthorizeDescribesTheSession has no token.
allow_unauthenticated := true

lists := {"tools/list", "resources/list", "resources/templates/list", "prompts/list"}

default allow := false

allow if {
	input.mcp.method in lists
	input.identity.object_id != "no-lists"
}

# Reached through a real MCP session: the session's client is described.
allow if {
	input.mcp.method in {"initialize", "notifications/initialized"}
	input.mcp.client.name == "unit-client"
}

closed := {"closed", "data://closed", "data://b", "data://r1", "data://r2", "p1", "p2", "data://items/{item_id}", "session"}

open(name) if {
	not startswith(name, "hidden")
	not startswith(name, "data://hidden")
	not name in closed
}

tool_allowed(name) if open(name)

tool_allowed("session") if {
	input.mcp.client.name == "unit-client"
	input.mcp.client.version == "7.0"
	input.mcp.protocol_version != ""
}

resource_allowed(uri) if open(uri)

template_allowed(template) if open(template)

prompt_allowed(name) if open(name)

denial_reasons contains json.marshal(input)
`

// fakeRoles is a role source that counts its calls.
type fakeRoles struct {
	auth  *exchange.Authorization
	err   error
	calls atomic.Int32
}

func (f *fakeRoles) Resolve(context.Context, *authn.Identity, string) (*exchange.Authorization, error) {
	f.calls.Add(1)
	return f.auth, f.err
}

func (f *fakeRoles) Name() string { return "fake" }

func newAuthzServer(t testing.TB, vars map[string]string, roles exchange.Source) *Server {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "authz.rego"), []byte(echoPolicy), 0o600); err != nil {
		t.Fatal(err)
	}
	src := map[string]string{
		"ENVIRONMENT":   "development",
		"ENABLE_AUTH":   "false",
		"POLICY_DIR":    dir,
		"DENIAL_DETAIL": "true",
		"LOG_LEVEL":     "error",
	}
	for k, v := range vars {
		src[k] = v
	}
	cfg, err := config.FromSource(func(name string) (string, bool) { v, ok := src[name]; return v, ok })
	if err != nil {
		t.Fatal(err)
	}
	if roles == nil {
		roles = &fakeRoles{auth: &exchange.Authorization{Source: "fake", Roles: []string{"analyst"}}}
	}
	s, err := New(context.Background(), cfg, Options{Roles: roles, Register: func(m *mcp.Server) {
		m.AddTool(&mcp.Tool{Name: "open", InputSchema: &jsonSchemaObject, Annotations: &mcp.ToolAnnotations{ReadOnlyHint: true}}, okTool)
		m.AddTool(&mcp.Tool{Name: "closed", InputSchema: &jsonSchemaObject, Annotations: &mcp.ToolAnnotations{Title: "Closed"}}, okTool)
		m.AddTool(&mcp.Tool{Name: "session", InputSchema: &jsonSchemaObject}, okTool)
	}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { <-s.Linted() })
	return s
}

var jsonSchemaObject = json.RawMessage(`{"type":"object"}`)

func okTool(context.Context, *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
	return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: "ok"}}}, nil
}

// user is an authenticated caller, as the verifier would return it.
func user(oid string) *authn.Identity {
	return &authn.Identity{Kind: authn.KindUser, TenantID: "tid-1", ObjectID: oid, Subject: "sub-" + oid, Name: "Ada",
		Scopes: []string{"read"}, Claims: map[string]any{"oid": oid}, Expiry: time.Now().Add(time.Hour)}
}

// extra is what authenticate hands the MCP layer for a caller's request.
func extra(t testing.TB, s *Server, id *authn.Identity) *mcp.RequestExtra {
	t.Helper()
	p := s.resolve(context.Background(), id, "token-"+id.ObjectID)
	return &mcp.RequestExtra{TokenInfo: &auth.TokenInfo{UserID: id.UserID(),
		Extra: map[string]any{extraKey: &requestFacts{p: p, remoteAddr: "192.0.2.7:4711", host: "mcp.example"}}}}
}

// recorder is a next handler that notes what reached it.
type recorder struct {
	calls  int
	caller *tools.Caller
	method string
	req    mcp.Request
	res    mcp.Result
	err    error
}

func (r *recorder) handle(ctx context.Context, method string, req mcp.Request) (mcp.Result, error) {
	r.calls++
	r.method, r.req = method, req
	if a, err := tools.FromContext(ctx); err == nil {
		c := a.Caller
		r.caller = &c
	}
	if r.res != nil || r.err != nil {
		return r.res, r.err
	}
	return &mcp.CallToolResult{}, nil
}

// denial returns the JSON-RPC error of a refused request and the input
// document the policy was given (its one reason), or fails.
func denial(t *testing.T, err error) (*jsonrpc.Error, map[string]any) {
	t.Helper()
	var rpcErr *jsonrpc.Error
	if !errors.As(err, &rpcErr) {
		t.Fatalf("want a JSON-RPC error, got %v", err)
	}
	var data DenialData
	if e := json.Unmarshal(rpcErr.Data, &data); e != nil {
		t.Fatalf("denial data %s: %v", rpcErr.Data, e)
	}
	if len(data.Reasons) != 1 {
		return rpcErr, nil
	}
	var in map[string]any
	if e := json.Unmarshal([]byte(data.Reasons[0]), &in); e != nil {
		t.Fatalf("reason is not the input document: %q", data.Reasons[0])
	}
	return rpcErr, in
}

// at reads a path of the input document ("mcp.tool.name").
func at(doc map[string]any, path string) any {
	var v any = doc
	for _, k := range strings.Split(path, ".") {
		m, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = m[k]
	}
	return v
}

func TestAuthorizeDescribesEachRequest(t *testing.T) {
	s := newAuthzServer(t, nil, nil)
	ex := extra(t, s, user("oid-1"))
	for _, c := range []struct {
		method string
		req    mcp.Request
		want   map[string]any // paths of the input document
	}{
		{"tools/call", &mcp.CallToolRequest{Extra: ex, Params: &mcp.CallToolParamsRaw{Name: "closed", Arguments: json.RawMessage(`{"amount":5}`)}},
			map[string]any{"mcp.tool.name": "closed", "mcp.tool.arguments.amount": 5.0, "mcp.tool.annotations.title": "Closed"}},
		{"resources/read", &mcp.ReadResourceRequest{Extra: ex, Params: &mcp.ReadResourceParams{URI: "data://r1"}},
			map[string]any{"mcp.resource.uri": "data://r1"}},
		{"resources/subscribe", &mcp.SubscribeRequest{Extra: ex, Params: &mcp.SubscribeParams{URI: "data://r2"}},
			map[string]any{"mcp.resource.uri": "data://r2"}},
		{"resources/unsubscribe", &mcp.UnsubscribeRequest{Extra: ex, Params: &mcp.UnsubscribeParams{URI: "data://r3"}},
			map[string]any{"mcp.resource.uri": "data://r3"}},
		{"prompts/get", &mcp.GetPromptRequest{Extra: ex, Params: &mcp.GetPromptParams{Name: "p1", Arguments: map[string]string{"focus": "x"}}},
			map[string]any{"mcp.prompt.name": "p1", "mcp.prompt.arguments.focus": "x"}},
		{"completion/complete", &mcp.CompleteRequest{Extra: ex, Params: &mcp.CompleteParams{
			Argument: mcp.CompleteParamsArgument{Name: "item_id", Value: "4"}, Ref: &mcp.CompleteReference{Type: "ref/resource", URI: "data://items/{item_id}"}}},
			map[string]any{"mcp.completion.argument.name": "item_id", "mcp.completion.argument.value": "4",
				"mcp.completion.ref.type": "ref/resource", "mcp.completion.ref.uri": "data://items/{item_id}"}},
		{"completion/complete", &mcp.CompleteRequest{Extra: ex, Params: &mcp.CompleteParams{
			Argument: mcp.CompleteParamsArgument{Name: "focus", Value: "a"}, Ref: &mcp.CompleteReference{Type: "ref/prompt", Name: "p2"}}},
			map[string]any{"mcp.completion.ref.type": "ref/prompt", "mcp.completion.ref.name": "p2"}},
		{"subscriptions/listen", &mcp.SubscriptionsListenRequest{Extra: ex, Params: &mcp.SubscriptionsListenParams{Notifications: &mcp.NotificationSubscriptions{
			ResourceSubscriptions: []string{"data://a", "data://b"}, ToolsListChanged: true, PromptsListChanged: true, ResourcesListChanged: true}}},
			map[string]any{"mcp.subscriptions.resource_uris": []any{"data://a", "data://b"}, "mcp.subscriptions.tools_list_changed": true,
				"mcp.subscriptions.prompts_list_changed": true, "mcp.subscriptions.resources_list_changed": true}},
		{"subscriptions/listen", &mcp.SubscriptionsListenRequest{Extra: ex, Params: &mcp.SubscriptionsListenParams{Notifications: &mcp.NotificationSubscriptions{
			ResourceSubscriptions: []string{"data://closed"}}}},
			map[string]any{"mcp.subscriptions.resource_uris": []any{"data://closed"}, "mcp.subscriptions.tools_list_changed": false}},
		{"initialize", &mcp.ServerRequest[*mcp.InitializeParams]{Extra: ex, Params: &mcp.InitializeParams{
			ProtocolVersion: "2025-06-18", ClientInfo: &mcp.Implementation{Name: "c1", Version: "1.2"}}},
			map[string]any{"mcp.protocol_version": "2025-06-18", "mcp.client.name": "c1", "mcp.client.version": "1.2"}},
		{"initialize", &mcp.ServerRequest[*mcp.InitializeParams]{Extra: ex, Params: &mcp.InitializeParams{ProtocolVersion: "2025-03-26"}},
			map[string]any{"mcp.protocol_version": "2025-03-26"}},
	} {
		t.Run(c.method, func(t *testing.T) {
			next := &recorder{}
			_, err := s.authorize(next.handle)(context.Background(), c.method, c.req)
			if next.calls != 0 {
				t.Fatal("a denied request reached the handler")
			}
			rpcErr, in := denial(t, err)
			if rpcErr.Code != CodeAccessDenied || in == nil {
				t.Fatalf("code %d, input %v", rpcErr.Code, in)
			}
			want := map[string]any{"mcp.method": c.method, "identity.authenticated": true, "identity.object_id": "oid-1",
				"identity.scopes": []any{"read"}, "identity.groups": []any{}, "identity.app_roles": []any{},
				"authorization.source": "fake", "authorization.roles": []any{"analyst"},
				"request.remote_addr": "192.0.2.7:4711", "request.host": "mcp.example", "request.transport": "http"}
			for k, v := range c.want {
				want[k] = v
			}
			for path, v := range want {
				if got := at(in, path); fmt.Sprint(got) != fmt.Sprint(v) {
					t.Errorf("input.%s = %#v, want %#v", path, got, v)
				}
			}
			if ns, _ := at(in, "request.time_ns").(float64); ns <= 0 {
				t.Errorf("input.request.time_ns = %v", at(in, "request.time_ns"))
			}
		})
	}
}

func TestAuthorizeAllowedCarriesTheCaller(t *testing.T) {
	roles := &fakeRoles{auth: &exchange.Authorization{Source: "fake", Roles: []string{"analyst"}, ClientRoles: map[string][]string{"api": {"writer"}}}}
	s := newAuthzServer(t, nil, roles)
	id := user("oid-2")
	id.AppID, id.Email, id.PreferredUsername, id.Groups, id.AppRoles = "app-9", "ada@example.com", "ada", []string{"g1"}, []string{"Reader"}
	for _, c := range []struct {
		method string
		req    mcp.Request
	}{
		{"tools/call", &mcp.CallToolRequest{Extra: extra(t, s, id), Params: &mcp.CallToolParamsRaw{Name: "open", Arguments: json.RawMessage(`{}`)}}},
		{"resources/read", &mcp.ReadResourceRequest{Extra: extra(t, s, id), Params: &mcp.ReadResourceParams{URI: "data://open"}}},
		{"prompts/get", &mcp.GetPromptRequest{Extra: extra(t, s, id), Params: &mcp.GetPromptParams{Name: "open"}}},
	} {
		next := &recorder{}
		res, err := s.authorize(next.handle)(context.Background(), c.method, c.req)
		if err != nil || res == nil || next.calls != 1 || next.method != c.method || next.req != c.req {
			t.Fatalf("%s: allowed request: %v, %v, %d calls", c.method, res, err, next.calls)
		}
		want := tools.Caller{Kind: "user", TenantID: "tid-1", ObjectID: "oid-2", AppID: "app-9", Name: "Ada", Email: "ada@example.com",
			PreferredUsername: "ada", Scopes: []string{"read"}, AppRoles: []string{"Reader"}, Groups: []string{"g1"},
			RoleSource: "fake", Roles: []string{"analyst"}, ClientRoles: map[string][]string{"api": {"writer"}}}
		if next.caller == nil || fmt.Sprint(*next.caller) != fmt.Sprint(want) {
			t.Fatalf("%s: the handler's caller is %+v, want %+v", c.method, next.caller, want)
		}
	}
	// The roles were resolved once for the token, and reused.
	if n := roles.calls.Load(); n != 1 {
		t.Fatalf("roles resolved %d times for one token", n)
	}
}

func TestAuthorizeWithoutRolesRefuses(t *testing.T) {
	for _, c := range []struct {
		err    error
		reason string
	}{
		{fmt.Errorf("keycloak at https://kc: %w", exchange.ErrUnavailable), "authorization service unavailable"},
		{fmt.Errorf("keycloak said no: %w", exchange.ErrRefused), "the role service refused this caller"},
	} {
		roles := &fakeRoles{err: c.err}
		s := newAuthzServer(t, nil, roles)
		id := user("oid-3")
		for _, method := range []string{"tools/call", "tools/list"} {
			next := &recorder{}
			req := &mcp.CallToolRequest{Extra: extra(t, s, id), Params: &mcp.CallToolParamsRaw{Name: "open"}}
			_, err := s.authorize(next.handle)(context.Background(), method, req)
			var rpcErr *jsonrpc.Error
			if next.calls != 0 || !errors.As(err, &rpcErr) || rpcErr.Code != CodeAuthorizationUnavailable ||
				rpcErr.Message != c.reason+" (request refused)" || strings.Contains(string(rpcErr.Data), "keycloak") {
				t.Fatalf("%s with %v: %v (%d handler calls)", method, c.err, err, next.calls)
			}
			var data DenialData
			if json.Unmarshal(rpcErr.Data, &data) != nil || !slices.Equal(data.Reasons, []string{c.reason}) {
				t.Fatalf("denial data %s", rpcErr.Data)
			}
		}
		// A failed resolution is not kept: the next request with the same
		// token asks again.
		if n := roles.calls.Load(); n != 2 {
			t.Fatalf("role source asked %d times for 2 requests after failures", n)
		}
	}
}

func TestAuthorizeWithoutTokenIsAnonymous(t *testing.T) {
	roles := &fakeRoles{auth: &exchange.Authorization{Source: "fake", Roles: []string{"admin"}}}
	s := newAuthzServer(t, nil, roles)
	for _, ex := range []*mcp.RequestExtra{nil, {}, {TokenInfo: &auth.TokenInfo{}}, {TokenInfo: &auth.TokenInfo{Extra: map[string]any{extraKey: &requestFacts{}}}}} {
		next := &recorder{}
		_, err := s.authorize(next.handle)(context.Background(), "tools/call", &mcp.CallToolRequest{Extra: ex, Params: &mcp.CallToolParamsRaw{Name: "closed"}})
		rpcErr, in := denial(t, err)
		// An anonymous caller is told nothing of the policy's reasons.
		if next.calls != 0 || rpcErr.Code != CodeAccessDenied || in != nil || !strings.HasPrefix(rpcErr.Message, "access denied (decision ") {
			t.Fatalf("anonymous call: %v", err)
		}
	}
	if n := roles.calls.Load(); n != 0 {
		t.Fatalf("roles resolved %d times for anonymous callers", n)
	}
	// The anonymous input, as the policy sees it.
	p := s.defaultPrincipal()
	var id map[string]any
	b, _ := json.Marshal(p.auth.Caller)
	_ = json.Unmarshal(b, &id)
	if p.identity.Authenticated() || p.authz != exchange.None || id["role_source"] != "none" {
		t.Fatalf("anonymous principal: %+v", p)
	}
}

func TestDenyShowsReasonsOnlyWithDetail(t *testing.T) {
	authed := &principal{identity: user("oid-4")}
	anon := &principal{identity: authn.Anonymous}
	for _, c := range []struct {
		name    string
		detail  bool
		p       *principal
		d       policy.Decision
		err     error
		code    int64
		msg     string
		reasons []string
	}{
		{"detail, authenticated", true, authed, policy.Decision{ID: "d-1", Reasons: []string{"r1", "r2"}}, nil,
			CodeAccessDenied, "access denied: r1; r2", []string{"r1", "r2"}},
		{"detail, no reasons", true, authed, policy.Decision{ID: "d-2"}, nil, CodeAccessDenied, "access denied (decision d-2)", []string{}},
		{"no detail", false, authed, policy.Decision{ID: "d-3", Reasons: []string{"r1"}}, nil, CodeAccessDenied, "access denied (decision d-3)", []string{}},
		{"detail, anonymous", true, anon, policy.Decision{ID: "d-4", Reasons: []string{"r1"}}, nil, CodeAccessDenied, "access denied (decision d-4)", []string{}},
		{"no decision id", false, authed, policy.Decision{Reasons: []string{"r1"}}, nil, CodeAccessDenied, "access denied", []string{}},
		{"evaluation failed", true, authed, policy.Decision{ID: "d-5", Reasons: []string{"policy evaluation failed"}}, errors.New("timeout"),
			CodeAuthorizationUnavailable, "authorization failed: the policy could not decide (request refused) (decision d-5)", []string{}},
	} {
		s := &Server{cfg: &config.Config{DenialDetail: c.detail}, logger: discard}
		var rpcErr *jsonrpc.Error
		if !errors.As(s.deny("tools/call", c.p, c.d, c.err), &rpcErr) {
			t.Fatalf("%s: not a JSON-RPC error", c.name)
		}
		var data DenialData
		if rpcErr.Code != c.code || rpcErr.Message != c.msg || json.Unmarshal(rpcErr.Data, &data) != nil ||
			data.DecisionID != c.d.ID || !slices.Equal(data.Reasons, c.reasons) || data.Reasons == nil {
			t.Errorf("%s: %d %q %s", c.name, rpcErr.Code, rpcErr.Message, rpcErr.Data)
		}
	}
}

func TestListFiltersThenPages(t *testing.T) {
	s := newAuthzServer(t, map[string]string{"LIST_PAGE_SIZE": "2"}, nil)
	ex := extra(t, s, user("oid-5"))
	names := []string{"a", "b", "hidden-1", "c", "hidden-2", "d", "e"}
	all := &mcp.ListToolsResult{}
	for _, n := range names {
		all.Tools = append(all.Tools, &mcp.Tool{Name: n})
	}
	var got []string
	cursor := ""
	for page := 0; ; page++ {
		if page > 5 {
			t.Fatal("paging does not end")
		}
		params := &mcp.ListToolsParams{Cursor: cursor}
		next := &recorder{res: all}
		res, err := s.authorize(next.handle)(context.Background(), "tools/list", &mcp.ListToolsRequest{Extra: ex, Params: params})
		if err != nil {
			t.Fatal(err)
		}
		// The SDK lists from the start: the cursor is the middleware's.
		if params.Cursor != "" || next.calls != 1 {
			t.Fatalf("the handler saw cursor %q", params.Cursor)
		}
		r := res.(*mcp.ListToolsResult)
		if len(r.Tools) > 2 {
			t.Fatalf("a page of %d over LIST_PAGE_SIZE=2", len(r.Tools))
		}
		for _, tool := range r.Tools {
			got = append(got, tool.Name)
		}
		if r.NextCursor == "" {
			break
		}
		cursor = r.NextCursor
	}
	if !slices.Equal(got, []string{"a", "b", "c", "d", "e"}) {
		t.Fatalf("listed %v", got)
	}
	if len(all.Tools) != len(names) {
		t.Fatal("the handler's result was changed in place")
	}
}

// Every kind of list is filtered and paged, its cursor honoured.
func TestListEachKind(t *testing.T) {
	s := newAuthzServer(t, map[string]string{"LIST_PAGE_SIZE": "1"}, nil)
	ex := extra(t, s, user("oid-6"))
	for _, c := range []struct {
		method string
		req    func(cursor string) mcp.Request
		res    mcp.Result
		page   func(mcp.Result) ([]string, string)
	}{
		{"resources/list", func(cur string) mcp.Request {
			return &mcp.ListResourcesRequest{Extra: ex, Params: &mcp.ListResourcesParams{Cursor: cur}}
		}, &mcp.ListResourcesResult{Resources: []*mcp.Resource{{URI: "data://a"}, {URI: "data://hidden"}, {URI: "data://z"}}},
			func(r mcp.Result) (out []string, next string) {
				for _, x := range r.(*mcp.ListResourcesResult).Resources {
					out = append(out, x.URI)
				}
				return out, r.(*mcp.ListResourcesResult).NextCursor
			}},
		{"resources/templates/list", func(cur string) mcp.Request {
			return &mcp.ListResourceTemplatesRequest{Extra: ex, Params: &mcp.ListResourceTemplatesParams{Cursor: cur}}
		}, &mcp.ListResourceTemplatesResult{ResourceTemplates: []*mcp.ResourceTemplate{{URITemplate: "data://a/{x}"}, {URITemplate: "data://hidden/{x}"}, {URITemplate: "data://z/{x}"}}},
			func(r mcp.Result) (out []string, next string) {
				for _, x := range r.(*mcp.ListResourceTemplatesResult).ResourceTemplates {
					out = append(out, x.URITemplate)
				}
				return out, r.(*mcp.ListResourceTemplatesResult).NextCursor
			}},
		{"prompts/list", func(cur string) mcp.Request {
			return &mcp.ListPromptsRequest{Extra: ex, Params: &mcp.ListPromptsParams{Cursor: cur}}
		}, &mcp.ListPromptsResult{Prompts: []*mcp.Prompt{{Name: "a"}, {Name: "hidden"}, {Name: "z"}}},
			func(r mcp.Result) (out []string, next string) {
				for _, x := range r.(*mcp.ListPromptsResult).Prompts {
					out = append(out, x.Name)
				}
				return out, r.(*mcp.ListPromptsResult).NextCursor
			}},
	} {
		var got []string
		cursor := ""
		for range 4 {
			res, err := s.authorize((&recorder{res: c.res}).handle)(context.Background(), c.method, c.req(cursor))
			if err != nil {
				t.Fatalf("%s: %v", c.method, err)
			}
			items, next := c.page(res)
			got = append(got, items...)
			if cursor = next; cursor == "" {
				break
			}
		}
		if len(got) != 2 || strings.Contains(got[0]+got[1], "hidden") || got[0] == got[1] {
			t.Fatalf("%s listed %v, one per page", c.method, got)
		}
	}
}

func TestListRefusals(t *testing.T) {
	s := newAuthzServer(t, nil, nil)
	ex := extra(t, s, user("oid-7"))
	list := func(params *mcp.ListToolsParams, next *recorder, ex *mcp.RequestExtra) error {
		_, err := s.authorize(next.handle)(context.Background(), "tools/list", &mcp.ListToolsRequest{Extra: ex, Params: params})
		return err
	}
	cursor := func(v any) string { b, _ := json.Marshal(v); return base64.RawURLEncoding.EncodeToString(b) }
	for name, c := range map[string]string{
		"not base64":        "%%%",
		"not JSON":          base64.RawURLEncoding.EncodeToString([]byte("nope")),
		"another version":   cursor(map[string]any{"v": 2, "after": "a"}),
		"no position":       cursor(map[string]any{"v": 1, "after": ""}),
		"the SDK's own, v0": cursor(map[string]any{"after": "a"}),
	} {
		next := &recorder{}
		var rpcErr *jsonrpc.Error
		if err := list(&mcp.ListToolsParams{Cursor: c}, next, ex); !errors.As(err, &rpcErr) || rpcErr.Code != jsonrpc.CodeInvalidParams || next.calls != 0 {
			t.Errorf("cursor %s: %v", name, err)
		}
	}
	// A cursor of this server is taken: v1 with a position.
	next := &recorder{res: &mcp.ListToolsResult{Tools: []*mcp.Tool{{Name: "a"}, {Name: "b"}}}}
	if err := list(&mcp.ListToolsParams{Cursor: cursor(map[string]any{"v": 1, "after": "a"})}, next, ex); err != nil {
		t.Fatalf("a valid cursor: %v", err)
	}
	// The list method itself denied: the handler is not asked.
	next = &recorder{}
	rpcErr, _ := denial(t, list(&mcp.ListToolsParams{}, next, extra(t, s, user("no-lists"))))
	if rpcErr.Code != CodeAccessDenied || next.calls != 0 {
		t.Fatalf("a denied list: %v", rpcErr)
	}
	// The handler's error is passed on.
	boom := errors.New("boom")
	if err := list(&mcp.ListToolsParams{}, &recorder{err: boom}, ex); !errors.Is(err, boom) {
		t.Fatalf("handler error: %v", err)
	}
	// A result of another kind is refused, not passed on unfiltered.
	if err := list(&mcp.ListToolsParams{}, &recorder{res: &mcp.CallToolResult{}}, ex); err == nil {
		t.Fatal("an unexpected list result was passed on")
	} else if rpcErr, _ := denial(t, err); rpcErr.Code != CodeAuthorizationUnavailable {
		t.Fatalf("unexpected result: %v", err)
	}
	// No params at all: the list starts at the beginning.
	if err := list(nil, &recorder{res: &mcp.ListToolsResult{}}, ex); err != nil {
		t.Fatalf("nil params: %v", err)
	}
}

func TestPageEdges(t *testing.T) {
	vis := map[string]struct{}{"a": {}, "b": {}, "c": {}}
	id := func(s string) string { return s }
	items := []string{"a", "b", "c"}
	for _, c := range []struct {
		after string
		size  int
		want  []string
		more  bool
	}{
		{"", 3, []string{"a", "b", "c"}, false}, // exactly a page: no next page
		{"", 2, []string{"a", "b"}, true},
		{"a", 2, []string{"b", "c"}, false}, // the cursor's own item is not repeated
		{"c", 2, []string{}, false},
	} {
		got, next := page(items, vis, id, c.after, c.size)
		if !slices.Equal(got, c.want) || (next != "") != c.more {
			t.Errorf("page(after %q, size %d) = %v, %q", c.after, c.size, got, next)
		}
		if c.more {
			if after, err := takeCursor(&mcp.ListToolsRequest{Params: &mcp.ListToolsParams{Cursor: next}}); err != nil || after != got[len(got)-1] {
				t.Errorf("next cursor names %q (%v), want %q", after, err, got[len(got)-1])
			}
		}
	}
}

// visibleTools asks the server's visible for caller's tools/list of the
// given tools, from the address remote.
func visibleTools(t *testing.T, s *Server, p *principal, remote string, tools ...string) []string {
	t.Helper()
	in := &policy.Input{Identity: p.identityDoc, Authorization: p.authzDoc}
	in.MCP.Method = "tools/list"
	in.Request.RemoteAddr = remote
	var ts []*mcp.Tool
	for _, name := range tools {
		ts = append(ts, &mcp.Tool{Name: name})
	}
	in.MCP.Candidates = &policy.Candidates{Tools: s.catalog.toolCandidates(ts)}
	set, err := s.visible(context.Background(), in)
	if err != nil {
		t.Fatal(err)
	}
	return slices.Sorted(maps.Keys(set))
}

// A list whose visible depends on the caller alone is reused by the engine
// while the policy is in force, whatever LIST_CACHE_TTL says (deprecated,
// ignored); a new policy lists afresh, and another caller gets their own.
func TestVisibleReusedWhileThePolicyIsInForce(t *testing.T) {
	for _, ttl := range []string{"0s", "1h"} {
		s := newAuthzServer(t, map[string]string{"LIST_CACHE_TTL": ttl}, nil)
		p := s.resolve(context.Background(), user("oid-8"), "t")
		list := func() []string { return visibleTools(t, s, p, "10.0.0.1:1", "open", "hidden-b") }
		if got := list(); !slices.Equal(got, []string{"open"}) {
			t.Fatalf("visible %v", got)
		}
		policy.WaitReuseAnalysis(s.engine)
		list() // evaluated and kept
		hits := s.metrics.listHits.Load()
		if got := list(); !slices.Equal(got, []string{"open"}) || s.metrics.listHits.Load() != hits+1 {
			t.Fatalf("LIST_CACHE_TTL=%s: %v, reused %v", ttl, got, s.metrics.listHits.Load() != hits)
		}
		// Another caller (other roles, another token) is not served the first's list.
		other := s.resolve(context.Background(), user("no-lists"), "t2")
		if got := visibleTools(t, s, other, "10.0.0.1:1", "open", "hidden-b"); len(got) != 0 {
			t.Fatalf("another caller got %v", got)
		}
		// The policy changes: a list filtered by the one replaced is not
		// served again.
		dir := s.cfg.PolicyDir
		if err := os.WriteFile(filepath.Join(dir, "authz.rego"), []byte(strings.Replace(echoPolicy, `not startswith(name, "hidden")`, `name != ""`, 1)), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := s.engine.Reload(context.Background()); err != nil {
			t.Fatal(err)
		}
		if got := list(); !slices.Equal(got, []string{"hidden-b", "open"}) {
			t.Fatalf("LIST_CACHE_TTL=%s: after a policy change: %v", ttl, got)
		}
	}
}

// A list whose visible reads more than the caller is evaluated on every
// list, as a call is decided on every call, whatever LIST_CACHE_TTL says:
// here the request's address, and a time window on time.now_ns.
func TestVisibleNotProvablyOfTheCallerEvaluatedEveryTime(t *testing.T) {
	for name, rule := range map[string]string{
		"remote address": `tool_allowed("closed") if startswith(input.request.remote_addr, "10.")`,
		"time window":    `tool_allowed("closed") if time.now_ns() > 0`,
	} {
		t.Run(name, func(t *testing.T) {
			s := newAuthzServer(t, map[string]string{"LIST_CACHE_TTL": "1h"}, nil)
			if err := os.WriteFile(filepath.Join(s.cfg.PolicyDir, "extra.rego"), []byte("package mcp.authz\n\n"+rule+"\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			if err := s.engine.Reload(context.Background()); err != nil {
				t.Fatal(err)
			}
			p := s.resolve(context.Background(), user("oid-9"), "t")
			for i := range 4 {
				if got := visibleTools(t, s, p, "10.0.0.1:1", "closed", "open"); !slices.Equal(got, []string{"closed", "open"}) {
					t.Fatalf("list %d: %v", i, got)
				}
				policy.WaitReuseAnalysis(s.engine)
			}
			if n := s.metrics.listHits.Load(); n != 0 {
				t.Fatalf("%d lists served without evaluating the policy", n)
			}
			if name == "remote address" {
				if got := visibleTools(t, s, p, "192.0.2.1:1", "closed", "open"); !slices.Equal(got, []string{"open"}) {
					t.Fatalf("from another address: %v: an earlier list was served", got)
				}
			}
		})
	}
}

// Under reuse, a list shows a tool exactly when a call to it is allowed.
func TestVisibleAgreesWithCallsUnderReuse(t *testing.T) {
	s := newAuthzServer(t, nil, nil)
	p := s.resolve(context.Background(), user("oid-10"), "t")
	tools := []string{"open", "closed", "hidden-x", "other"}
	visibleTools(t, s, p, "10.0.0.1:1", tools...)
	policy.WaitReuseAnalysis(s.engine)
	visibleTools(t, s, p, "10.0.0.1:1", tools...)
	hits := s.metrics.listHits.Load()
	shown := visibleTools(t, s, p, "10.0.0.1:1", tools...)
	if s.metrics.listHits.Load() != hits+1 {
		t.Fatal("the list was not reused: the test would not show anything")
	}
	for _, name := range tools {
		in := &policy.Input{Identity: p.identityDoc, Authorization: p.authzDoc}
		in.MCP.Method = "tools/call"
		in.MCP.Tool = &policy.Tool{Name: name, Arguments: json.RawMessage(`{}`), Annotations: s.catalog.toolCandidates([]*mcp.Tool{{Name: name}})[0].Annotations}
		d, err := s.engine.Decide(context.Background(), in)
		if err != nil {
			t.Fatal(err)
		}
		if d.Allow != slices.Contains(shown, name) {
			t.Errorf("%s: listed %v, call allowed %v", name, slices.Contains(shown, name), d.Allow)
		}
	}
}

// Through a real session (in memory), the request's session describes the
// client to the policy; the session tool is allowed only for that client.
func TestAuthorizeDescribesTheSession(t *testing.T) {
	s := newAuthzServer(t, nil, nil)
	ctx := context.Background()
	ct, st := mcp.NewInMemoryTransports()
	ss, err := s.mcp.Connect(ctx, st, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ss.Close()
	cs, err := mcp.NewClient(&mcp.Implementation{Name: "unit-client", Version: "7.0"}, nil).Connect(ctx, ct, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer cs.Close()
	res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "session", Arguments: map[string]any{}})
	if err != nil || res.IsError {
		t.Fatalf("session tool: %v %+v", err, res)
	}
}

func httptestRequest(remote, host string) *http.Request {
	r := httptest.NewRequest(http.MethodPost, "/mcp", nil)
	r.RemoteAddr, r.Host = remote, host
	return r
}

var discard = slog.New(slog.DiscardHandler)

func TestTokenInfoReusedPerConnection(t *testing.T) {
	s := newAuthzServer(t, nil, nil)
	p := s.resolve(context.Background(), user("oid-10"), "t")
	r1 := httptestRequest("192.0.2.1:1000", "h1")
	a := p.tokenInfo(r1)
	if b := p.tokenInfo(httptestRequest("192.0.2.1:1000", "h1")); b != a {
		t.Fatal("same connection and host: a new TokenInfo")
	}
	for _, r := range []*http.Request{httptestRequest("192.0.2.1:1001", "h1"), httptestRequest("192.0.2.1:1000", "h2")} {
		ti := p.tokenInfo(r)
		f := ti.Extra[extraKey].(*requestFacts)
		if ti == a || f.remoteAddr != r.RemoteAddr || f.host != r.Host || f.p != p {
			t.Fatalf("another connection or host reused the TokenInfo of the first: %+v", f)
		}
		if ti.UserID != "tid-1/oid-10" || !slices.Equal(ti.Scopes, []string{"read"}) || !ti.Expiration.Equal(p.identity.Expiry) {
			t.Fatalf("TokenInfo %+v", ti)
		}
	}
}

// Keep-alive connections that share a token take turns (the load harness's
// clients do): each keeps its own TokenInfo.
func TestTokenInfoKeptPerConnectionTakingTurns(t *testing.T) {
	s := newAuthzServer(t, nil, nil)
	p := s.resolve(context.Background(), user("oid-11"), "t")
	addrs := []string{"192.0.2.1:2000"}
	for port := 2001; len(addrs) < 2 && port < 2100; port++ {
		if a := fmt.Sprintf("192.0.2.1:%d", port); slotOf(a) != slotOf(addrs[0]) {
			addrs = append(addrs, a)
		}
	}
	if len(addrs) < 2 {
		t.Fatal("every connection address falls in one slot")
	}
	first := []*auth.TokenInfo{p.tokenInfo(httptestRequest(addrs[0], "h")), p.tokenInfo(httptestRequest(addrs[1], "h"))}
	for range 2 {
		for i, a := range addrs {
			if ti := p.tokenInfo(httptestRequest(a, "h")); ti != first[i] {
				t.Fatalf("connection %s: a new TokenInfo after another connection's request", a)
			}
		}
	}
}

func TestResolveKeepsRolesUntilTheyExpire(t *testing.T) {
	roles := &fakeRoles{auth: &exchange.Authorization{Source: "fake", Roles: []string{"r"}, Expiry: time.Now().Add(time.Hour)}}
	s := newAuthzServer(t, nil, roles)
	id := user("oid-11")
	p1 := s.resolve(context.Background(), id, "t")
	if p2 := s.resolve(context.Background(), id, "t"); p2 != p1 || roles.calls.Load() != 1 {
		t.Fatalf("roles valid for an hour resolved again (%d calls)", roles.calls.Load())
	}
	// Roles past their expiry are resolved again.
	roles.auth = &exchange.Authorization{Source: "fake", Roles: []string{"r2"}, Expiry: time.Now().Add(-time.Second)}
	p1.validUntil = time.Now().Add(-time.Second)
	p3 := s.resolve(context.Background(), id, "t")
	if p3 == p1 || roles.calls.Load() != 2 || !slices.Equal(p3.authz.Roles, []string{"r2"}) {
		t.Fatalf("expired roles reused (%d calls)", roles.calls.Load())
	}
}

func TestAskerAnswersLikeTheMiddleware(t *testing.T) {
	s := newAuthzServer(t, nil, nil)
	p := s.resolve(context.Background(), user("oid-12"), "t")
	a := &asker{s: s, p: p}
	ctx := context.Background()
	for _, c := range []struct {
		q     tools.Question
		allow bool
	}{
		{tools.Question{Method: "tools/call", Name: "open", Arguments: map[string]any{"x": 1}}, true},
		{tools.Question{Method: "tools/call", Name: "closed"}, false},
		{tools.Question{Method: "resources/read", URI: "data://open"}, true},
		{tools.Question{Method: "resources/read", URI: "data://closed"}, false},
		{tools.Question{Method: "prompts/get", Name: "open"}, true},
		{tools.Question{Method: "prompts/get", Name: "closed"}, false},
	} {
		ans, err := a.Ask(ctx, c.q)
		if err != nil || ans.Allow != c.allow || ans.DecisionID == "" {
			t.Errorf("%+v: %+v %v", c.q, ans, err)
		}
	}
	if _, err := a.Ask(ctx, tools.Question{Method: "tools/list"}); err == nil {
		t.Error("a question of another method answered")
	}
	if _, err := a.Ask(ctx, tools.Question{Method: "tools/call", Name: "open", Arguments: map[string]any{"f": func() {}}}); err == nil {
		t.Error("arguments that are not JSON answered")
	}
}

// decisions reads mcpguard_policy_decisions_total{method, result} from the
// server's metrics.
func decisions(t *testing.T, s *Server, method, result string) int {
	t.Helper()
	rec := httptest.NewRecorder()
	s.metrics.handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	prefix := fmt.Sprintf("mcpguard_policy_decisions_total{method=%q,result=%q} ", method, result)
	for _, line := range strings.Split(rec.Body.String(), "\n") {
		if v, ok := strings.CutPrefix(line, prefix); ok {
			var n int
			if _, err := fmt.Sscan(v, &n); err != nil {
				t.Fatalf("metric line %q", line)
			}
			return n
		}
	}
	return 0
}

// Each decision is counted once, as allow or deny, for calls and lists,
// known methods and others alike.
func TestDecisionsCounted(t *testing.T) {
	s := newAuthzServer(t, nil, nil)
	ex := extra(t, s, user("oid-13"))
	ctx := context.Background()
	call := func(name string) {
		_, _ = s.authorize((&recorder{}).handle)(ctx, "tools/call", &mcp.CallToolRequest{Extra: ex, Params: &mcp.CallToolParamsRaw{Name: name}})
	}
	call("open")
	call("open")
	call("closed")
	_, _ = s.authorize((&recorder{res: &mcp.ListToolsResult{}}).handle)(ctx, "tools/list", &mcp.ListToolsRequest{Extra: ex, Params: &mcp.ListToolsParams{}})
	_, _ = s.authorize((&recorder{}).handle)(ctx, "tools/list", &mcp.ListToolsRequest{Extra: extra(t, s, user("no-lists")), Params: &mcp.ListToolsParams{}})
	_, _ = s.authorize((&recorder{}).handle)(ctx, "completion/complete", &mcp.CompleteRequest{Extra: ex, Params: &mcp.CompleteParams{}})
	for _, c := range []struct {
		method, result string
		n              int
	}{
		{"tools/call", "allow", 2}, {"tools/call", "deny", 1}, {"tools/list", "allow", 1}, {"tools/list", "deny", 1},
		{"completion/complete", "deny", 1}, {"completion/complete", "allow", 0},
	} {
		if n := decisions(t, s, c.method, c.result); n != c.n {
			t.Errorf("%s %s counted %d times, want %d", c.method, c.result, n, c.n)
		}
	}
}

// DECISION_REUSE=false: every list is evaluated, none reused, even one the
// analysis would have shown to depend on the caller alone.
func TestDecisionReuseOff(t *testing.T) {
	s := newAuthzServer(t, map[string]string{"DECISION_REUSE": "false"}, nil)
	p := s.resolve(context.Background(), user("oid-11"), "t")
	for i := range 4 {
		if got := visibleTools(t, s, p, "10.0.0.1:1", "open", "hidden-b"); !slices.Equal(got, []string{"open"}) {
			t.Fatalf("list %d: %v", i, got)
		}
		policy.WaitReuseAnalysis(s.engine)
	}
	if n := s.metrics.listHits.Load(); n != 0 {
		t.Fatalf("%d lists reused with DECISION_REUSE=false", n)
	}
}
