package policy_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/open-policy-agent/opa/v1/storage"
	"github.com/open-policy-agent/opa/v1/tester"

	"github.com/mcpguard/mcpguard/internal/policy"
)

// vetoPolicy allows every tools/call no veto refuses. Its vetoes hit builtin
// errors on the inputs below: without strict builtin errors such a veto is
// undefined, does not fire, and the call is allowed.
const vetoPolicy = `package mcp.authz

tool_allowed(_) := true

# iat as an RFC 3339 string: arithmetic on it errs.
deny contains "token older than an hour" if {
	time.now_ns() / 1e9 - input.identity.claims.iat > 3600
}

deny contains "ratio too high" if {
	100 / input.mcp.tool.arguments.n > 10
}
`

func strictInput(iat any, n int) *policy.Input {
	in := &policy.Input{Identity: policy.MustFragment(map[string]any{"authenticated": true, "claims": map[string]any{"iat": iat}})}
	in.MCP.Method = "tools/call"
	args, _ := json.Marshal(map[string]any{"n": n})
	in.MCP.Tool = &policy.Tool{Name: "t", Arguments: args}
	return in
}

// A veto that hits a builtin error denies, with an error: the request is
// refused as "the policy could not decide", never let through.
func TestBuiltinErrorDenies(t *testing.T) {
	ctx := context.Background()
	e, err := policy.New(ctx, writePolicy(t, map[string]string{"authz.rego": vetoPolicy}))
	if err != nil {
		t.Fatal(err)
	}
	for name, in := range map[string]*policy.Input{
		"type error":       strictInput("2026-01-01T00:00:00Z", 20),
		"division by zero": strictInput(float64(4102444800), 0), // iat in 2100: the age veto does not apply
	} {
		t.Run(name, func(t *testing.T) {
			d, err := e.Decide(ctx, in)
			if d.Allow || err == nil || d.ID == "" || len(d.Reasons) == 0 {
				t.Fatalf("want a deny with an error: %+v %v", d, err)
			}
		})
	}
	// Without an error the vetoes decide as written.
	if d, err := e.Decide(ctx, strictInput(float64(4102444800), 20)); err != nil || !d.Allow {
		t.Fatalf("no veto applies: %+v %v", d, err)
	}
	d, err := e.Decide(ctx, strictInput(float64(1000000000), 20))
	if err != nil || d.Allow || len(d.Reasons) != 1 || d.Reasons[0] != "token older than an hour" {
		t.Fatalf("the age veto: %+v %v", d, err)
	}
}

// The other queries the engine runs fail on a builtin error too: the
// decision's reasons, the list filter, and both lints.
func TestBuiltinErrorFailsEveryQuery(t *testing.T) {
	ctx := context.Background()
	src := `package mcp.authz

allow if input.mcp.method == "tools/list"

# Errs for a tool named with one letter; denies without error for two.
tool_allowed(name) if 10 / (count(name) - 1) > 100

denial_reasons contains sprintf("%v", [1 / input.mcp.tool.arguments.n])

catalog_errors contains sprintf("%v", [1 / count(data.mcp.catalog.resources)])
`
	data := `{"mcp":{"catalog":{"tools":{},"resources":{}}}}`
	e, err := policy.New(ctx, writePolicy(t, map[string]string{"authz.rego": src, "data.json": data}))
	if err != nil {
		t.Fatal(err)
	}
	in := strictInput(0, 0)
	in.MCP.Tool.Name = "ab"
	if d, err := e.Decide(ctx, in); d.Allow || err == nil || d.Reasons[0] != "policy evaluation failed" {
		t.Errorf("decision: want an error: %+v %v", d, err)
	}
	signedIn := policy.MustFragment(map[string]any{"authenticated": true, "kind": "user"})
	list := &policy.Input{Identity: signedIn, Authorization: policy.MustFragment(map[string]any{"roles": []string{}})}
	list.MCP.Method = "tools/list"
	list.MCP.Candidates = &policy.Candidates{Tools: []policy.Candidate{{Name: "t"}}}
	if v, err := e.Visible(ctx, list); err == nil || len(v) != 0 {
		t.Errorf("visible: want an error: %v %v", v, err)
	}
	if bad, err := e.CatalogErrors(ctx); err == nil {
		t.Errorf("catalog_errors: want an error: %v", bad)
	}
	call := &policy.Input{Identity: signedIn}
	call.MCP.Method = "tools/call"
	call.MCP.Tool = &policy.Tool{Name: "a"}
	if d, err := e.Decide(ctx, call); d.Allow || err == nil {
		t.Errorf("allow: want an error: %+v %v", d, err)
	}
	if ok, err := e.CanAllow(ctx, call); err == nil {
		t.Errorf("lint: want an error, got %v", ok)
	}
}

// The shipped policy's own tests run with builtin errors raised, as the
// engine evaluates: no rule of it may hit one, malformed rows included.
func TestShippedPolicyWithoutBuiltinErrors(t *testing.T) {
	ctx := context.Background()
	modules, store, err := tester.Load([]string{"../../policies"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	txn := storage.NewTransactionOrDie(ctx, store)
	defer store.Abort(ctx, txn)
	results, err := tester.NewRunner().SetStore(store).SetModules(modules).RaiseBuiltinErrors(true).RunTests(ctx, txn)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for r := range results {
		n++
		if !r.Pass() {
			t.Errorf("%s.%s: %v", r.Package, r.Name, strings.TrimSpace(r.String()+" "+errString(r.Error)))
		}
	}
	if n == 0 {
		t.Fatal("no policy tests ran")
	}
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// A builtin error in what the engine evaluates ahead at load (allow against
// data alone) refuses the policy, naming the place, rather than serve an
// allow that is silently undefined.
func TestBuiltinErrorRefusedAtLoad(t *testing.T) {
	src := "package mcp.authz\n\nallow if {\n\tinput.mcp.method == \"tools/call\"\n\t10 / count(data.mcp.catalog.tools) > 1\n}\n"
	dir := writePolicy(t, map[string]string{"authz.rego": src, "data.json": `{"mcp":{"catalog":{"tools":{}}}}`})
	if _, err := policy.New(context.Background(), dir); err == nil || !strings.Contains(err.Error(), "authz.rego:5") || !strings.Contains(err.Error(), "divide by zero") {
		t.Fatalf("want a refusal naming authz.rego:5, got %v", err)
	}
}
