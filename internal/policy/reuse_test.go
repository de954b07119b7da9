package policy_test

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/mcpguard/mcpguard/internal/policy"
	"github.com/mcpguard/mcpguard/internal/policy/policytest"
)

// reuseHints are one registered tool's annotations, made once as the server
// makes them: the reuse knows a registered tool by them.
var reuseHints = policy.ToolHints{ReadOnly: true}.Fragment()

// token is one caller's input fragments, made once per token, as the server makes them.
type token struct{ id, authz *policy.Fragment }

func newToken(roles ...string) token {
	id, authz := user(roles...)
	return token{id, authz}
}

func (c token) call(tool, args string) *policy.Input {
	in := &policy.Input{Identity: c.id, Authorization: c.authz}
	in.MCP.Method = "tools/call"
	in.MCP.Tool = &policy.Tool{Name: tool, Arguments: json.RawMessage(args), Annotations: reuseHints}
	in.Request.RemoteAddr = "10.0.0.7:4711"
	return in
}

func withRules(t *testing.T, rego string, opts ...policy.Option) *policy.Engine {
	t.Helper()
	dir := policytest.Copy(t, "../../policies", map[string]string{"team_rules.rego": "package mcp.authz\n\n" + rego})
	e, err := policy.New(context.Background(), dir, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func allows(t *testing.T, e *policy.Engine, in *policy.Input) bool {
	t.Helper()
	d, err := e.Decide(context.Background(), in)
	if err != nil {
		t.Fatal(err)
	}
	return d.Allow
}

// A decision that depends on the caller alone is reused for that caller:
// allowed and denied alike, and the denied one still carries its reasons.
func TestDecisionOfTheCallerAloneReused(t *testing.T) {
	e := shipped(t)
	reader := newToken("data_reader")
	in := reader.call("read_critical_data", `{"query":"q"}`)
	if !allows(t, e, in) {
		t.Fatal("denied")
	}
	if allowed, ok := policy.Reused(e, in); !ok || !allowed {
		t.Fatalf("not reused: %v %v", allowed, ok)
	}
	// Another request of the same caller and tool, other arguments: the
	// same decision, without evaluating allow again.
	if !allows(t, e, reader.call("read_critical_data", `{"query":"other"}`)) {
		t.Fatal("denied the second time")
	}
	nobody := newToken()
	denied := nobody.call("read_critical_data", `{"query":"q"}`)
	for range 2 {
		d, err := e.Decide(context.Background(), denied)
		if err != nil || d.Allow || len(d.Reasons) == 0 || d.ID == "" {
			t.Fatalf("denied call: %+v %v", d, err)
		}
	}
	if allowed, ok := policy.Reused(e, denied); !ok || allowed {
		t.Fatalf("the deny is not reused: %v %v", allowed, ok)
	}
}

// A tool the server did not register, or a request naming two targets, is
// never reused: what the analysis would assume of it is not known.
func TestUnregisteredToolNotReused(t *testing.T) {
	e := shipped(t)
	in := call("read_critical_data", "data_reader") // no annotations: not registered
	allows(t, e, in)
	if _, ok := policy.Reused(e, in); ok {
		t.Fatal("an unregistered tool's decision was reused")
	}
}

// Rules that read more than the caller are decided on every request: an
// argument veto, a rule on the request's address, a time window on the
// request's time or on time.now_ns(), the session, the whole tool object,
// a walk over the input.
func TestRulesReadingTheRequestAreNotReused(t *testing.T) {
	for name, c := range map[string]struct {
		rule   string
		before func(*policy.Input) // allowed
		after  func(*policy.Input) // denied
	}{
		"argument veto": {
			rule:   `deny contains "too much" if { input.mcp.tool.name == "read_critical_data"; input.mcp.tool.arguments.amount > 1000 }`,
			before: func(in *policy.Input) { in.MCP.Tool.Arguments = json.RawMessage(`{"query":"q","amount":5}`) },
			after:  func(in *policy.Input) { in.MCP.Tool.Arguments = json.RawMessage(`{"query":"q","amount":5000}`) },
		},
		"remote address": {
			rule:   `deny contains "outside" if { not net.cidr_contains("10.0.0.0/8", split(input.request.remote_addr, ":")[0]) }`,
			before: func(in *policy.Input) { in.Request.RemoteAddr = "10.1.2.3:1" },
			after:  func(in *policy.Input) { in.Request.RemoteAddr = "192.0.2.1:1" },
		},
		"request time window": {
			rule:   `deny contains "after hours" if { input.request.time_ns > 2000000000000000000 }`,
			before: func(in *policy.Input) { in.Request.TimeNS = 1000000000000000000 },
			after:  func(in *policy.Input) { in.Request.TimeNS = 3000000000000000000 },
		},
		"session": {
			rule:   `deny contains "not this session" if { input.mcp.session_id == "stolen" }`,
			before: func(in *policy.Input) { in.MCP.SessionID = "mine" },
			after:  func(in *policy.Input) { in.MCP.SessionID = "stolen" },
		},
		"whole tool object": {
			rule:   `deny contains "flagged" if { t := input.mcp.tool; t.arguments.flag == true }`,
			before: func(in *policy.Input) { in.MCP.Tool.Arguments = json.RawMessage(`{"query":"q"}`) },
			after:  func(in *policy.Input) { in.MCP.Tool.Arguments = json.RawMessage(`{"query":"q","flag":true}`) },
		},
		"walk over the input": {
			rule:   `deny contains "marker" if { walk(input, [_, "forbidden-marker"]) }`,
			before: func(in *policy.Input) { in.MCP.Tool.Arguments = json.RawMessage(`{"query":"q"}`) },
			after:  func(in *policy.Input) { in.MCP.Tool.Arguments = json.RawMessage(`{"query":"forbidden-marker"}`) },
		},
		"client": {
			rule:   `deny contains "old client" if { input.mcp.client.name == "legacy" }`,
			before: func(in *policy.Input) { in.MCP.ClientName = "modern" },
			after:  func(in *policy.Input) { in.MCP.ClientName = "legacy" },
		},
	} {
		t.Run(name, func(t *testing.T) {
			e := withRules(t, c.rule)
			reader := newToken("data_reader")
			for i := range 3 { // allowed, and reused if it ever would be
				in := reader.call("read_critical_data", `{"query":"q"}`)
				c.before(in)
				if !allows(t, e, in) {
					t.Fatalf("request %d refused", i)
				}
				if _, ok := policy.Reused(e, in); ok {
					t.Fatal("a decision on a rule that reads the request was reused")
				}
			}
			in := reader.call("read_critical_data", `{"query":"q"}`)
			c.after(in)
			if allows(t, e, in) {
				t.Fatal("the rule did not fire: the earlier allow was reused")
			}
		})
	}
}

// time.now_ns() and other non-deterministic builtins make a decision
// unreusable even when they read no input.
func TestNondeterministicBuiltinNotReused(t *testing.T) {
	e := withRules(t, `deny contains "the far future" if { time.now_ns() > 4000000000000000000 }`)
	in := newToken("data_reader").call("read_critical_data", `{"query":"q"}`)
	if !allows(t, e, in) {
		t.Fatal("refused")
	}
	if _, ok := policy.Reused(e, in); ok {
		t.Fatal("a decision on time.now_ns() was reused")
	}
}

// New roles come with a new token, so new fragments: decided afresh. A
// rule on roles alone is still reused, per caller.
func TestRoleChangeDecidedAfresh(t *testing.T) {
	e := shipped(t)
	before := newToken("data_reader")
	if !allows(t, e, before.call("read_critical_data", `{}`)) {
		t.Fatal("refused")
	}
	after := newToken("viewer") // the same user, roles changed: a new token
	in := after.call("read_critical_data", `{}`)
	if allows(t, e, in) {
		t.Fatal("the old roles' allow was reused")
	}
}

// A cached decision never outlives the policy that made it: after a
// reload, the new policy decides.
func TestReloadDropsReusedDecisions(t *testing.T) {
	dir := policytest.Copy(t, "../../policies", nil)
	e, err := policy.New(context.Background(), dir)
	if err != nil {
		t.Fatal(err)
	}
	in := newToken("data_reader").call("read_critical_data", `{}`)
	if !allows(t, e, in) {
		t.Fatal("refused")
	}
	if err := os.WriteFile(filepath.Join(dir, "team_rules.rego"), []byte("package mcp.authz\n\ndeny contains \"closed\" if { input.mcp.tool.name == \"read_critical_data\" }\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := e.Reload(context.Background()); err != nil {
		t.Fatal(err)
	}
	if allows(t, e, in) {
		t.Fatal("allowed after the reload: a decision of the old policy was reused")
	}
}

// Arguments the policy cannot be shown exactly are refused even when the
// caller's decision is reused.
func TestReusedDecisionStillChecksArguments(t *testing.T) {
	e := shipped(t)
	reader := newToken("data_reader")
	allows(t, e, reader.call("read_critical_data", `{"query":"q"}`))
	in := reader.call("read_critical_data", `{"query":"q","query":"other"}`)
	if _, ok := policy.Reused(e, in); !ok {
		t.Fatal("not reused: the test would not show anything")
	}
	d, err := e.Decide(context.Background(), in)
	if err != nil || d.Allow {
		t.Fatalf("duplicate keys on a reused decision: %+v %v", d, err)
	}
}

// Analyses and evaluations run at once on one compiled policy (the race
// detector watches): callers of several tools, first requests and reused
// ones mixed.
func TestReuseConcurrent(t *testing.T) {
	// 16 callers at once on a loaded machine, under the race detector:
	// the test is about races, not about the evaluation's time.
	e := withRules(t, `deny contains "too much" if { input.mcp.tool.name == "approve_budget"; input.mcp.tool.arguments.amount > 1000 }`,
		policy.WithTimeout(30*time.Second))
	tools := []string{"read_critical_data", "approve_budget", "get_current_user", "admin_operation"}
	callers := []token{newToken("data_reader"), newToken("finance", "executive"), newToken("supervisor"), newToken()}
	done := make(chan error, len(callers)*len(tools))
	for _, c := range callers {
		for _, tool := range tools {
			go func() {
				var first *bool
				for range 20 {
					d, err := e.Decide(context.Background(), c.call(tool, `{"amount":5}`))
					if err != nil {
						done <- err
						return
					}
					if first == nil {
						first = &d.Allow
					} else if *first != d.Allow {
						done <- errors.New(tool + ": the decision changed between identical requests")
						return
					}
				}
				done <- nil
			}()
		}
	}
	for range len(callers) * len(tools) {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
}
