package policy_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"

	"github.com/mcpguard/mcpguard"
	"github.com/mcpguard/mcpguard/internal/policy"
	"github.com/mcpguard/mcpguard/internal/policy/policytest"
)

// shippedWith is the shipped policy folder (rules, data, the decision
// module; tests left out) with extra files added or replaced, as a team
// edits it.
func shippedWith(t *testing.T, extra map[string]string) string {
	return policytest.Copy(t, "../../policies", extra)
}

func engineFor(t *testing.T, dir string) *policy.Engine {
	t.Helper()
	// A generous timeout: these tests check decisions, not speed, and run on
	// loaded machines (the 100 ms default is the server's).
	e, err := policy.New(context.Background(), dir, policy.WithTimeout(30*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// caller is one sample caller of the contract tests.
type caller struct {
	name          string
	identity      *policy.Fragment
	authorization *policy.Fragment
}

func userCaller(roles ...string) caller {
	id, authz := user(roles...)
	return caller{"user" + fmt.Sprint(roles), id, authz}
}

func appCaller(roles ...string) caller {
	if roles == nil {
		roles = []string{}
	}
	return caller{"app" + fmt.Sprint(roles),
		policy.MustFragment(map[string]any{"authenticated": true, "kind": "app", "scopes": []string{}, "app_roles": roles,
			"groups": []string{}, "claims": map[string]any{}}),
		policy.MustFragment(map[string]any{"source": "token", "roles": roles, "realm_roles": []string{},
			"client_roles": map[string]any{}, "claims": map[string]any{}})}
}

var anonymousCaller = caller{"anonymous",
	policy.MustFragment(map[string]any{"authenticated": false, "kind": "anonymous"}),
	policy.MustFragment(map[string]any{"source": "none", "roles": []string{}, "realm_roles": []string{}, "client_roles": map[string]any{}})}

// at is 10:00 UTC on a weekday: inside the working hours of the rule below.
var at = time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)

func (c caller) request(method string, at time.Time) *policy.Input {
	in := &policy.Input{Identity: c.identity, Authorization: c.authorization,
		Request: policy.Request{TimeNS: at.UnixNano(), Transport: "http", RemoteAddr: "127.0.0.1"}}
	in.MCP.Method = method
	in.MCP.SessionID = "s"
	return in
}

func (c caller) call(tool, args string, hints *policy.Fragment, at time.Time) *policy.Input {
	in := c.request("tools/call", at)
	in.MCP.Tool = &policy.Tool{Name: tool, Arguments: json.RawMessage(args), Annotations: hints}
	return in
}

// hints are a tool's annotations as the policy sees them: the four hints,
// the protocol's defaults applied.
func hints(readOnly, destructive bool) *policy.Fragment {
	return policy.MustFragment(map[string]any{"readOnlyHint": readOnly, "destructiveHint": destructive,
		"idempotentHint": false, "openWorldHint": true})
}

// registered is a server's tools: the shipped catalog's, and the tools the
// rules below are about.
var registered = map[string]*policy.Fragment{
	"get_current_user":   hints(true, false),
	"read_critical_data": hints(true, false),
	"approve_budget":     hints(false, false),
	"admin_operation":    hints(false, true), // no hints: destructive by default
	"write_api_data":     hints(false, false),
	"status_check":       hints(true, false),
	"drop_table":         hints(false, true),
}

func (c caller) list(at time.Time) *policy.Input {
	in := c.request("tools/list", at)
	var cands []policy.Candidate
	for name, h := range registered {
		cands = append(cands, policy.Candidate{Name: name, Annotations: h})
	}
	in.MCP.Candidates = &policy.Candidates{Tools: cands}
	return in
}

func decide(t *testing.T, e *policy.Engine, in *policy.Input) policy.Decision {
	t.Helper()
	d, err := e.Decide(context.Background(), in)
	if err != nil {
		t.Fatalf("%s: %v", in.MCP.Method, err)
	}
	return d
}

// TestNaiveAllowCannotBypassGuards: the rule — one more allow body
// for a tool call — and the widest a team could write (allow if true) open
// nothing the guards refuse: anonymous callers, other input versions and
// vetoed requests stay denied, and a method with a target is decided by the
// catalog and the *_allowed rules, never by allow.
func TestNaiveAllowCannotBypassGuards(t *testing.T) {
	for name, rule := range map[string]string{
		"status_check body": `allow if {
	input.mcp.method == "tools/call"
	input.mcp.tool.name == "status_check"
}`,
		"allow everything": `allow := true`,
	} {
		t.Run(name, func(t *testing.T) {
			rule := strings.Replace(rule, "allow := true", "allow if true", 1)
			e := engineFor(t, shippedWith(t, map[string]string{"extra.rego": `package mcp.authz

` + rule + `

deny contains "get_current_user is closed" if input.mcp.tool.name == "get_current_user"
`}))
			for _, c := range []struct {
				what string
				in   *policy.Input
			}{
				{"anonymous status_check", anonymousCaller.call("status_check", `{}`, registered["status_check"], at)},
				{"anonymous ping", anonymousCaller.request("ping", at)},
				{"anonymous initialize", anonymousCaller.request("initialize", at)},
				{"uncatalogued tool", userCaller().call("status_check", `{}`, registered["status_check"], at)},
				{"vetoed tool", userCaller("admin").call("get_current_user", `{}`, registered["get_current_user"], at)},
			} {
				if d := decide(t, e, c.in); d.Allow {
					t.Errorf("%s: allowed (%+v)", c.what, d)
				}
			}
			ping := userCaller().request("ping", at)
			if d := decide(t, e, ping); !d.Allow {
				t.Fatalf("an authenticated ping must still pass: %+v", d)
			}
			doc := []byte(`{"version": 2, "mcp": {"method": "ping"},
				"identity": {"authenticated": true, "kind": "user", "scopes": []},
				"authorization": {"roles": [], "realm_roles": [], "client_roles": {}}}`)
			if d, _ := e.DecideDocument(context.Background(), bytes.Replace(doc, []byte(`"version": 2`), []byte(`"version": 1`), 1)); !d.Allow {
				t.Fatalf("the version 1 document must pass: %+v", d)
			}
			if d, _ := e.DecideDocument(context.Background(), doc); d.Allow {
				t.Fatalf("input version 2 allowed: %+v", d)
			}
		})
	}
}

// TestGuardShapes: a deny that is not a set, an allow that is not true, and
// an allow_unauthenticated that is not true refuse rather than pass.
func TestGuardShapes(t *testing.T) {
	ping := func(c caller) *policy.Input { return c.request("ping", at) }
	for _, c := range []struct {
		name, rule string
		in         *policy.Input
		allow      bool
	}{
		{"deny true", "deny := true", ping(userCaller()), false},
		{"deny object", `deny := {"x": 1}`, ping(userCaller()), false},
		{"allow not true", `allow := "yes"`, ping(userCaller()), false},
		{"tool_allowed not true", `tool_allowed(_) := "yes"`, userCaller().call("status_check", `{}`, registered["status_check"], at), false},
		{"anonymous admitted as documented", "allow_unauthenticated := true", ping(anonymousCaller), true},
		{"anonymous admission must be true", `allow_unauthenticated := "true"`, ping(anonymousCaller), false},
	} {
		t.Run(c.name, func(t *testing.T) {
			files := map[string]string{"extra.rego": "package mcp.authz\n\n" + c.rule + "\n"}
			if strings.HasPrefix(c.rule, "allow :=") {
				// allow is the shipped file's own rule: replace it there.
				b, err := os.ReadFile("../../policies/authz.rego")
				if err != nil {
					t.Fatal(err)
				}
				src := strings.Replace(string(b), "default allow := false", c.rule, 1)
				src = strings.Replace(src, "\nallow if {\n\tinput.mcp.method in {", "\nallow_housekeeping if {\n\tinput.mcp.method in {", 1)
				files = map[string]string{"authz.rego": src}
			}
			e, err := policy.New(context.Background(), shippedWith(t, files))
			if err != nil {
				// Refused at load (a type error): nothing passes either.
				if c.allow {
					t.Fatal(err)
				}
				return
			}
			d := decide(t, e, c.in)
			if d.Allow != c.allow {
				t.Fatalf("allow = %v, want %v (%+v)", d.Allow, c.allow, d)
			}
		})
	}
}

// The rules a security team adds in the walk-through: an app-only
// tool, an argument veto, a working-hours window and destructive tools for
// admins only.
const teamRules = `package mcp.authz

import data.mcp.lib

# status_check: app-only callers with the monitor app role.
tool_allowed("status_check") if {
	lib.is_app
	lib.require_role("monitor")
}

# drop_table: admins (the catalog has no row for it).
tool_allowed("drop_table") if lib.require_role("admin")

# approve_budget over 10,000 needs cfo.
deny contains "approve_budget over 10,000 needs the cfo role" if {
	input.mcp.method == "tools/call"
	input.mcp.tool.name == "approve_budget"
	input.mcp.tool.arguments.amount > 10000
	not lib.require_role("cfo")
}

# Working hours, 08:00 to 18:00 UTC, for write_api_data.
deny contains "write_api_data is for working hours" if {
	input.mcp.method == "tools/call"
	input.mcp.tool.name == "write_api_data"
	[hour, _, _] := time.clock([input.request.time_ns, "UTC"])
	not hour >= 8
}

deny contains "write_api_data is for working hours" if {
	input.mcp.method == "tools/call"
	input.mcp.tool.name == "write_api_data"
	[hour, _, _] := time.clock([input.request.time_ns, "UTC"])
	hour >= 18
}

# Destructive tools only for admins.
deny contains sprintf("%s is destructive: admins only", [input.mcp.tool.name]) if {
	input.mcp.method == "tools/call"
	input.mcp.tool.annotations.destructiveHint == true
	input.mcp.tool.annotations.readOnlyHint == false
	not lib.require_role("admin")
}
`

func sampleCallers() []caller {
	out := []caller{anonymousCaller, appCaller(), appCaller("monitor"), userCaller("monitor")}
	roles := []string{"data_reader", "finance", "executive", "admin", "supervisor", "cfo"}
	for mask := range 1 << len(roles) {
		var rs []string
		for i, r := range roles {
			if mask&(1<<i) != 0 {
				rs = append(rs, r)
			}
		}
		out = append(out, userCaller(rs...))
		if mask%7 == 0 {
			out = append(out, appCaller(rs...))
		}
	}
	writer := userCaller("admin")
	writer.authorization = policy.MustFragment(map[string]any{"source": "keycloak", "roles": []string{"admin"},
		"realm_roles": []string{"admin"}, "client_roles": map[string]any{"api": []string{"writer"}}, "claims": map[string]any{}})
	return append(out, writer)
}

// TestListsMatchCalls is the property of issue 8: under the shipped policy
// with the team's rules, for every registered tool, every sample caller and
// times inside and outside working hours, a tool is listed exactly when a
// call to it with empty arguments is allowed.
func TestListsMatchCalls(t *testing.T) {
	for name, dir := range map[string]string{
		"shipped":            shippedWith(t, nil),
		"shipped with rules": shippedWith(t, map[string]string{"team.rego": teamRules}),
	} {
		t.Run(name, func(t *testing.T) {
			e := engineFor(t, dir)
			listed, allowed := 0, 0
			for _, c := range sampleCallers() {
				for _, when := range []time.Time{at, at.Add(-5 * time.Hour), at.Add(9 * time.Hour)} {
					vis, err := e.Visible(context.Background(), c.list(when))
					if err != nil {
						t.Fatal(err)
					}
					listed += len(vis)
					for tool, hints := range registered {
						d := decide(t, e, c.call(tool, `{}`, hints, when))
						if d.Allow {
							allowed++
						}
						if _, ok := vis[tool]; ok != d.Allow {
							t.Errorf("%s at %s: %s listed %v, call allowed %v (%v)", c.name, when.Format("15:04"), tool, ok, d.Allow, d.Reasons)
						}
					}
				}
			}
			// Both answers occur, so the equality above is not vacuous.
			if listed == 0 || allowed == 0 || listed == len(sampleCallers())*3*len(registered) {
				t.Fatalf("listed %d, allowed %d: the samples do not tell lists apart", listed, allowed)
			}
		})
	}
}

// TestTeamRules: the walk-through's rules do what their authors mean, on
// calls with arguments too.
func TestTeamRules(t *testing.T) {
	e := engineFor(t, shippedWith(t, map[string]string{"team.rego": teamRules}))
	budget := func(amount int, roles ...string) *policy.Input {
		return userCaller(roles...).call("approve_budget", fmt.Sprintf(`{"amount":%d}`, amount), registered["approve_budget"], at)
	}
	for _, c := range []struct {
		what  string
		in    *policy.Input
		allow bool
	}{
		{"budget 5,000 by finance and executive", budget(5000, "finance", "executive"), true},
		{"budget 20,000 by finance and executive", budget(20000, "finance", "executive"), false},
		{"budget 20,000 with cfo", budget(20000, "finance", "executive", "cfo"), true},
		{"status_check by a monitor app", appCaller("monitor").call("status_check", `{}`, registered["status_check"], at), true},
		{"status_check by a monitor user", userCaller("monitor").call("status_check", `{}`, registered["status_check"], at), false},
		{"drop_table by an admin", userCaller("admin").call("drop_table", `{}`, registered["drop_table"], at), true},
		{"drop_table by a supervisor", userCaller("supervisor").call("drop_table", `{}`, registered["drop_table"], at), false},
		{"admin_operation (destructive by default) by a supervisor", userCaller("supervisor").call("admin_operation", `{}`, registered["admin_operation"], at), false},
		{"admin_operation by an admin", userCaller("admin").call("admin_operation", `{}`, registered["admin_operation"], at), true},
	} {
		if d := decide(t, e, c.in); d.Allow != c.allow {
			t.Errorf("%s: allow = %v, want %v (%v)", c.what, d.Allow, c.allow, d.Reasons)
		}
	}
	vis, err := e.Visible(context.Background(), userCaller("finance", "executive").list(at))
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := vis["approve_budget"]; !ok {
		t.Fatalf("a veto on arguments hid approve_budget from the list: %v", vis)
	}
}

// TestDecisionModuleIsFixed: a policy folder cannot change the decision
// module: a different copy of it, another module of its package, a test in
// its package or data under its path is refused; a folder without it gets
// the built-in one.
func TestDecisionModuleIsFixed(t *testing.T) {
	ctx := context.Background()
	for name, extra := range map[string]map[string]string{
		"edited":            {"mcpguard.rego": strings.Replace(mcpguard.GuardModule, "input.version == 1", "true", 1)},
		"second module":     {"more.rego": "package mcpguard\n\nallow if input.mcp.method == \"ping\"\n"},
		"sub-package":       {"x/more.rego": "package mcpguard.extra\n\nx := 1\n"},
		"data at its path":  {"mcpguard/data.json": `{"allow": true}`},
		"data in data.json": {"data.json": `{"mcpguard": {"allow": true}, "mcp": {"catalog": {}}}`},
	} {
		t.Run(name, func(t *testing.T) {
			dir := shippedWith(t, extra)
			_, err := policy.New(ctx, dir)
			if err == nil || !strings.Contains(err.Error(), "mcpguard") {
				t.Fatalf("want a refusal naming mcpguard, got %v", err)
			}
		})
	}
	t.Run("test in package, test loader", func(t *testing.T) {
		if _, err := policy.Load(shippedWith(t, map[string]string{"guard_test.rego": "package mcpguard\n\ntest_x if true\n"}), true); err == nil {
			t.Fatal("a test module in package mcpguard was loaded")
		}
	})
	t.Run("absent", func(t *testing.T) {
		dir := shippedWith(t, nil)
		if err := os.Remove(filepath.Join(dir, policy.GuardFile)); err != nil {
			t.Fatal(err)
		}
		e := engineFor(t, dir)
		if d := decide(t, e, userCaller("data_reader").call("read_critical_data", `{}`, registered["read_critical_data"], at)); !d.Allow {
			t.Fatalf("the built-in decision module was not used: %+v", d)
		}
		if d := decide(t, e, anonymousCaller.request("ping", at)); d.Allow {
			t.Fatal("anonymous ping allowed without the decision module's guards")
		}
	})
}

// The rules the server asks carry `entrypoint: true` in their METADATA, so
// `opa inspect -a` and `opa build` name them.
func TestDecisionRulesAreEntrypoints(t *testing.T) {
	m, err := ast.ParseModuleWithOpts(policy.GuardFile, mcpguard.GuardModule, ast.ParserOptions{RegoVersion: ast.RegoV1, ProcessAnnotation: true})
	if err != nil {
		t.Fatal(err)
	}
	c := ast.NewCompiler()
	c.Compile(map[string]*ast.Module{policy.GuardFile: m})
	entry := map[string]bool{}
	for _, ref := range c.GetAnnotationSet().Flatten() {
		if ref.Annotations.Entrypoint {
			entry[ref.Path.String()] = true
		}
	}
	for _, q := range []string{policy.AllowQuery, policy.DecisionQuery, policy.VisibleQuery} {
		if !entry[q] {
			t.Errorf("%s is not marked as an entrypoint (entrypoints: %v)", q, entry)
		}
	}
}

// A rule of package mcp.authz written in a parent package (a ref head) is
// refused at load, naming where it is: OPA's partial evaluation of the hot
// path does not carry such a function, and the hot path and the
// explanation would disagree (a deny with "the policy could not decide").
func TestPermissionFromParentPackageRefused(t *testing.T) {
	dir := shippedWith(t, map[string]string{"parent.rego": `package mcp

authz.tool_allowed("status_check") if input.identity.kind == "app"
`})
	_, err := policy.New(context.Background(), dir)
	if err == nil || !strings.Contains(err.Error(), "parent.rego:3") || !strings.Contains(err.Error(), "package mcp.authz") {
		t.Fatalf("want a refusal naming parent.rego:3, got %v", err)
	}
}
