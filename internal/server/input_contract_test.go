package server

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/mcpguard/mcpguard/internal/exchange"
	"github.com/mcpguard/mcpguard/internal/policy"
)

// Each test here pins one promise of docs/POLICIES.md about the input
// document on what a real server builds.

// inputs returns every document evaluated for query and method, in order.
func (d *docServer) inputs(query, method string) []map[string]any {
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []map[string]any
	for _, s := range d.seen {
		if s.query == query && s.method == method {
			out = append(out, s.doc)
		}
	}
	return out
}

// The token's NumericDate claims reach the policy as the numbers the token
// carries (seconds since the epoch), not as date strings: `now - iat` is
// arithmetic, not a builtin error.
func TestInputTimeClaimsAreNumbers(t *testing.T) {
	d := newDocServer(t, nil)
	issued := time.Now().Add(-time.Minute).Truncate(time.Second)
	tok := ada
	tok.IssuedAt, tok.Lifetime = issued, 30*time.Minute
	if _, err := d.connect(t, d.token(t, tok), ""); err != nil {
		t.Fatal(err)
	}
	in := d.input(t, policy.AllowQuery, "initialize")
	// Decoded again with numbers kept as written.
	b, _ := json.Marshal(in)
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var doc map[string]any
	if err := dec.Decode(&doc); err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]int64{"iat": issued.Unix(), "nbf": issued.Unix(), "exp": issued.Add(30 * time.Minute).Unix()} {
		n, ok := at(doc, "identity.claims."+name).(json.Number)
		if !ok {
			t.Errorf("identity.claims.%s is %#v, not a number", name, at(doc, "identity.claims."+name))
			continue
		}
		if got, err := n.Int64(); err != nil || got != want {
			t.Errorf("identity.claims.%s is %s, want %d", name, n, want)
		}
	}
}

// A question a tool asks (AuthContext.Can) is decided as if the caller
// asked it in the request the tool serves: the same transport, address,
// host, session and client, so that a rule on them answers the question as
// it would answer the call. (It once said transport "internal", with no
// address and no session: a veto on the network never fired for it.)
func TestAskerDecidesWithTheRequestFacts(t *testing.T) {
	d := newDocServer(t, nil)
	cs, err := d.connect(t, d.token(t, ada), "")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "get_current_user", Arguments: map[string]any{}}); err != nil || res.IsError {
		t.Fatalf("get_current_user: %v %+v", err, res)
	}
	var call, question map[string]any
	for _, in := range d.inputs(policy.AllowQuery, "tools/call") {
		switch at(in, "mcp.tool.name") {
		case "get_current_user":
			call = in
		case "approve_budget": // one of the tool's questions
			question = in
		}
	}
	if call == nil || question == nil {
		t.Fatalf("the call (%v) or the tool's question (%v) was not evaluated", call != nil, question != nil)
	}
	for _, path := range []string{"request.transport", "request.remote_addr", "request.host",
		"mcp.session_id", "mcp.protocol_version", "mcp.client", "identity", "authorization"} {
		want := at(call, path)
		if want == nil {
			t.Fatalf("the call has no %s", path)
		}
		if got := at(question, path); !reflect.DeepEqual(got, want) {
			t.Errorf("the question's %s is %#v, the call's %#v", path, got, want)
		}
	}
	if at(question, "request.transport") != "http" {
		t.Errorf("transport %v", at(question, "request.transport"))
	}
	if ann, _ := at(question, "mcp.tool.annotations").(map[string]any); len(ann) != 4 {
		t.Errorf("the question's annotations %v", ann)
	}
}

// A role source may leave lists and maps nil; the policy still reads
// arrays and objects (`count(input.authorization.roles)` is no builtin error).
func TestAuthorizationListsAreNeverNull(t *testing.T) {
	roles := &fakeRoles{auth: &exchange.Authorization{Source: "fake", ClientRoles: map[string][]string{"api": nil}}}
	d := newDocServerWith(t, nil, Options{Roles: roles})
	_, _ = d.connect(t, d.token(t, ada), "") // initialize is decided whatever the answer
	got := d.input(t, policy.AllowQuery, "initialize")["authorization"]
	want := map[string]any{"source": "fake", "roles": []any{}, "realm_roles": []any{},
		"client_roles": map[string]any{"api": []any{}}, "claims": map[string]any{}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("authorization %#v, want %#v", got, want)
	}
}

// The claims of the role source's token reach input.authorization.claims
// as the role source read them, nested values included.
func TestAuthorizationClaimsReachThePolicy(t *testing.T) {
	claims := map[string]any{"azp": "mcpguard", "acr": "1", "resource_access": map[string]any{"api": map[string]any{"roles": []any{"reader"}}}}
	roles := &fakeRoles{auth: &exchange.Authorization{Source: "fake", Roles: []string{"reader"}, Claims: claims}}
	d := newDocServerWith(t, nil, Options{Roles: roles})
	_, _ = d.connect(t, d.token(t, ada), "")
	got := d.input(t, policy.AllowQuery, "initialize")["authorization"]
	want := map[string]any{"source": "fake", "roles": []any{"reader"}, "realm_roles": []any{},
		"client_roles": map[string]any{}, "claims": claims}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("authorization %#v, want %#v", got, want)
	}
}

// Under the 2026-07-28 protocol a request names its protocol version and
// client in its own _meta; server/discover, the first request, has no
// session to read them from.
func TestDiscoverDescribesItsProtocol(t *testing.T) {
	d := newDocServer(t, map[string]string{"STATELESS": "true"})
	if _, err := d.connect(t, d.token(t, ada), "2026-07-28"); err != nil {
		t.Fatal(err)
	}
	in := d.input(t, policy.AllowQuery, "server/discover")
	if v := at(in, "mcp.protocol_version"); v != "2026-07-28" {
		t.Errorf("protocol_version %#v", v)
	}
	if c := at(in, "mcp.client"); !reflect.DeepEqual(c, map[string]any{"name": "docs-client", "version": "1.0"}) {
		t.Errorf("client %#v", c)
	}
}

// destructiveVeto is the rule docs/POLICIES.md shows: a destructive tool
// needs role admin.
const destructiveVeto = `package mcp.authz

deny contains "destructive tools are for admins" if {
	input.mcp.method == "tools/call"
	not input.mcp.tool.annotations.readOnlyHint
	input.mcp.tool.annotations.destructiveHint
	not "admin" in input.authorization.roles
}
`

// policyWith copies the shipped policy (tests left out), gives the tools
// rows that admit any authenticated caller, and adds the module veto.
func policyWith(t *testing.T, veto string, tools ...string) string {
	t.Helper()
	dir := t.TempDir()
	files, err := filepath.Glob(repoPath("policies", "*.rego"))
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		if strings.HasSuffix(f, "_test.rego") {
			continue
		}
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, filepath.Base(f)), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	raw, err := os.ReadFile(repoPath("policies", "data.json"))
	if err != nil {
		t.Fatal(err)
	}
	var data map[string]any
	if err := json.Unmarshal(raw, &data); err != nil {
		t.Fatal(err)
	}
	rows, _ := at(data, "mcp.catalog.tools").(map[string]any)
	if rows == nil {
		t.Fatal("policies/data.json has no mcp.catalog.tools")
	}
	for _, name := range tools {
		rows[name] = map[string]any{"allow_authenticated": true}
	}
	if raw, err = json.Marshal(data); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "data.json"), raw, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "veto.rego"), []byte(veto), 0o600); err != nil {
		t.Fatal(err)
	}
	return dir
}

// A "destructive tools only for admins" rule is not passed by a tool that
// never says whether it is destructive: MCP's default (true) applies.
func TestDestructiveRuleNotFooledByAMissingHint(t *testing.T) {
	dir := policyWith(t, destructiveVeto, "silent", "titled", "additive", "reader")
	f := false
	d := newDocServerWith(t, map[string]string{"POLICY_DIR": dir}, Options{Register: func(m *mcp.Server) {
		m.AddTool(&mcp.Tool{Name: "silent", InputSchema: &jsonSchemaObject}, okTool)
		m.AddTool(&mcp.Tool{Name: "titled", InputSchema: &jsonSchemaObject, Annotations: &mcp.ToolAnnotations{Title: "Titled"}}, okTool)
		m.AddTool(&mcp.Tool{Name: "additive", InputSchema: &jsonSchemaObject, Annotations: &mcp.ToolAnnotations{DestructiveHint: &f}}, okTool)
		m.AddTool(&mcp.Tool{Name: "reader", InputSchema: &jsonSchemaObject, Annotations: &mcp.ToolAnnotations{ReadOnlyHint: true}}, okTool)
	}})
	cs, err := d.connect(t, d.token(t, ada), "")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for tool, allowed := range map[string]bool{"silent": false, "titled": false, "additive": true, "reader": true} {
		res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: tool, Arguments: map[string]any{}})
		if got := err == nil && !res.IsError; got != allowed {
			t.Errorf("%s: allowed %v (%v), want %v", tool, got, err, allowed)
		} else if !allowed && !strings.Contains(err.Error(), "access denied") {
			t.Errorf("%s: %v", tool, err)
		}
	}
}
