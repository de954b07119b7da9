package policy_test

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mcpguard/mcpguard/internal/policy"
)

func writePolicy(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func shipped(t *testing.T) *policy.Engine {
	t.Helper()
	e, err := policy.New(context.Background(), "../../policies")
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func user(roles ...string) (*policy.Fragment, *policy.Fragment) {
	id := policy.MustFragment(map[string]any{"authenticated": true, "kind": "user", "scopes": []string{"read"},
		"app_roles": []string{}, "groups": []string{}, "claims": map[string]any{}})
	if roles == nil {
		roles = []string{}
	}
	authz := policy.MustFragment(map[string]any{"source": "static", "roles": roles, "realm_roles": roles,
		"client_roles": map[string]any{}, "claims": map[string]any{}})
	return id, authz
}

func call(tool string, roles ...string) *policy.Input {
	id, authz := user(roles...)
	in := &policy.Input{Identity: id, Authorization: authz}
	in.MCP.Method = "tools/call"
	in.MCP.Tool = &policy.Tool{Name: tool, Arguments: json.RawMessage(`{"query":"x"}`)}
	return in
}

func TestShippedPolicyDecides(t *testing.T) {
	e := shipped(t)
	ctx := context.Background()
	d, err := e.Decide(ctx, call("read_critical_data", "data_reader"))
	if err != nil || !d.Allow || d.ID == "" || len(d.Reasons) != 0 {
		t.Fatalf("allowed call: %+v %v", d, err)
	}
	d, err = e.Decide(ctx, call("approve_budget", "finance"))
	if err != nil || d.Allow || len(d.Reasons) == 0 || !strings.Contains(d.Reasons[0], "executive") {
		t.Fatalf("denied call: %+v %v", d, err)
	}
	d, _ = e.Decide(ctx, call("no_such_tool", "admin"))
	if d.Allow {
		t.Fatal("a tool without a catalog row must be denied")
	}
	anon := &policy.Input{}
	anon.MCP.Method = "initialize"
	if d, _ := e.Decide(ctx, anon); d.Allow {
		t.Fatal("anonymous initialize must be denied by the shipped policy")
	}
}

func TestDecideDocument(t *testing.T) {
	e := shipped(t)
	doc := `{"version":1,"mcp":{"method":"tools/call","tool":{"name":"admin_operation","arguments":{}}},
		"identity":{"authenticated":true,"kind":"user","scopes":["read"]},
		"authorization":{"roles":["supervisor"],"realm_roles":["supervisor"],"client_roles":{}}}`
	d, err := e.DecideDocument(context.Background(), []byte(doc))
	if err != nil || !d.Allow {
		t.Fatalf("%+v %v", d, err)
	}
	if _, err := e.DecideDocument(context.Background(), []byte(`{not json`)); err == nil {
		t.Fatal("malformed document accepted")
	}
}

func TestVisibleOneEvaluation(t *testing.T) {
	e := shipped(t)
	id, authz := user("data_reader")
	in := &policy.Input{Identity: id, Authorization: authz}
	in.MCP.Method = "tools/list"
	in.MCP.Candidates = &policy.Candidates{Tools: []policy.Candidate{
		{Name: "get_current_user"}, {Name: "read_critical_data"}, {Name: "approve_budget"}, {Name: "unknown"},
	}}
	v, err := e.Visible(context.Background(), in)
	if err != nil {
		t.Fatal(err)
	}
	if len(v) != 2 {
		t.Fatalf("visible = %v", v)
	}
	for _, n := range []string{"get_current_user", "read_critical_data"} {
		if _, ok := v[n]; !ok {
			t.Fatalf("%s not visible: %v", n, v)
		}
	}
}

func TestBrokenPolicyRefusedWithLocation(t *testing.T) {
	dir := writePolicy(t, map[string]string{"authz.rego": "package mcp.authz\n\nallow if {\n  input.x ==\n}\n"})
	_, err := policy.New(context.Background(), dir)
	if err == nil || !strings.Contains(err.Error(), "authz.rego:") {
		t.Fatalf("want an error naming the file and line, got %v", err)
	}
	dir = writePolicy(t, map[string]string{"authz.rego": "package mcp.authz\n\nallow if undefined_rule\n"})
	if _, err := policy.New(context.Background(), dir); err == nil || !strings.Contains(err.Error(), "undefined_rule") {
		t.Fatalf("compile error not reported: %v", err)
	}
	dir = writePolicy(t, map[string]string{"other.rego": "package other\n\nx := 1\n"})
	if _, err := policy.New(context.Background(), dir); err == nil || !strings.Contains(err.Error(), "no rule") {
		t.Fatalf("a policy without allow must be refused: %v", err)
	}
}

func TestFailClosed(t *testing.T) {
	ctx := context.Background()
	in := call("read_critical_data", "data_reader")
	cases := map[string]string{
		"undefined":     "package mcp.authz\n\ntool_allowed(_) if input.nothing == 1\n",
		"not boolean":   "package mcp.authz\n\ntool_allowed(_) := \"yes\"\n",
		"runtime error": "package mcp.authz\n\ntool_allowed(_) if {\n  x := 1 / (count(input.mcp.method) - count(input.mcp.method))\n  x > 0\n}\n",
		// The folder's own decision is not the server's: the decision
		// module's is.
		"own decision": "package mcp.authz\n\ndecision := {\"allow\": true, \"reasons\": []}\n",
	}
	for name, src := range cases {
		t.Run(name, func(t *testing.T) {
			e, err := policy.New(ctx, writePolicy(t, map[string]string{"authz.rego": src}))
			if name == "not boolean" {
				// A type error: refused at load, so nothing passes.
				if err == nil || !strings.Contains(err.Error(), "rego_type_error") {
					t.Fatalf("want a refusal at load, got %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			d, _ := e.Decide(ctx, in)
			if d.Allow || d.ID == "" || len(d.Reasons) == 0 {
				t.Fatalf("not a reasoned deny: %+v", d)
			}
		})
	}
}

func TestTimeoutDenies(t *testing.T) {
	src := "package mcp.authz\n\ntool_allowed(_) if {\n  count([x | some x in numbers.range(1, 50000000 + count(input.mcp.method)); x % 7 == 0]) > 0\n}\n"
	e, err := policy.New(context.Background(), writePolicy(t, map[string]string{"authz.rego": src}), policy.WithTimeout(20*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	// "exceeded" comes only from OPA's cancellation error: the evaluation was
	// stopped, not run to its end (no clock is read here: a slow machine
	// changes nothing but how long the test takes).
	d, err := e.Decide(context.Background(), call("x"))
	if d.Allow || err == nil || !strings.Contains(err.Error(), "exceeded") {
		t.Fatalf("timeout: %+v %v", d, err)
	}
}

func TestReloadKeepsPolicyOnError(t *testing.T) {
	dir := writePolicy(t, map[string]string{"authz.rego": "package mcp.authz\n\ntool_allowed(_) := true\n"})
	e, err := policy.New(context.Background(), dir)
	if err != nil {
		t.Fatal(err)
	}
	_ = os.WriteFile(filepath.Join(dir, "authz.rego"), []byte("package mcp.authz\n\nallow if {\n"), 0o600)
	if err := e.Reload(context.Background()); err == nil {
		t.Fatal("broken reload accepted")
	}
	if d, _ := e.Decide(context.Background(), call("x")); !d.Allow {
		t.Fatal("the previous policy is no longer in force")
	}
}

func TestCanAllow(t *testing.T) {
	e := shipped(t)
	in := &policy.Input{}
	in.MCP.Method = "tools/call"
	in.MCP.Tool = &policy.Tool{Name: "approve_budget"}
	ok, err := e.CanAllow(context.Background(), in)
	if err != nil || !ok {
		t.Fatalf("approve_budget is allowable: %v %v", ok, err)
	}
	in.MCP.Tool = &policy.Tool{Name: "not_in_catalog"}
	ok, err = e.CanAllow(context.Background(), in)
	if err != nil || ok {
		t.Fatalf("a tool without a row can never be allowed: %v %v", ok, err)
	}
}
