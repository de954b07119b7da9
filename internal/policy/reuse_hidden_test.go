package policy_test

import (
	"slices"
	"testing"

	"github.com/mcpguard/mcpguard/internal/policy"
)

// OPA's partial evaluation leaves some rules out of the residual it returns
// (a rule with an else chain is referred to, not inlined): what they read
// is the policy's own rule, which the reuse analysis must read too. Each
// case allows a call from inside 10.0.0.0/8 only, through such a rule; a
// call from outside, after the inside ones were analysed, must be refused.
var hiddenRequestRules = map[string]struct {
	rule, tool string
}{
	"function with else": {
		rule: `tool_allowed(name) := true if {
	name == "lookup"
	startswith(input.request.remote_addr, "10.")
} else := false`,
		tool: "lookup",
	},
	"function whose value reads the request": {
		rule: `tool_allowed(name) := inside if {
	name == "lookup"
	inside := startswith(input.request.remote_addr, "10.")
} else := false`,
		tool: "lookup",
	},
	"helper with else": {
		rule: `tool_allowed("lookup") if inside

inside if startswith(input.request.remote_addr, "10.")
else := false`,
		tool: "lookup",
	},
	"veto through a helper with else": {
		rule: `deny contains "outside" if not inside

inside if startswith(input.request.remote_addr, "10.")
else := false`,
		tool: "read_critical_data",
	},
	"helper in a hidden package": {
		rule: `import data.system.netcheck

tool_allowed("lookup") if netcheck.inside`,
		tool: "lookup",
	},
}

// The package system.netcheck for the last case: hidden packages are
// followed too.
const hiddenPackage = `package system.netcheck

inside if startswith(input.request.remote_addr, "10.")
else := false
`

func hiddenRuleEngine(t *testing.T, rule string) *policy.Engine {
	t.Helper()
	return engineFor(t, shippedWith(t, map[string]string{
		"team_rules.rego": "package mcp.authz\n\n" + rule,
		"netcheck.rego":   hiddenPackage,
	}))
}

func TestRequestReadBehindElseNotReused(t *testing.T) {
	for name, c := range hiddenRequestRules {
		t.Run(name, func(t *testing.T) {
			e := hiddenRuleEngine(t, c.rule)
			reader := newToken("data_reader")
			for i := range 3 { // allowed, and reused if it ever would be
				if !allows(t, e, reader.call(c.tool, `{}`)) {
					t.Fatalf("request %d from inside refused", i)
				}
				policy.WaitReuseAnalysis(e)
			}
			outside := reader.call(c.tool, `{}`)
			outside.Request.RemoteAddr = "192.0.2.1:4711"
			if _, reused := policy.Reused(e, outside); reused {
				t.Error("a decision on a rule that reads the request's address is held for reuse")
			}
			if allows(t, e, outside) {
				t.Fatal("a call from outside was allowed: the inside decision was reused")
			}
		})
	}
}

// The same rules on a list: a tool shown inside is not shown outside.
func TestListRequestReadBehindElseNotReused(t *testing.T) {
	for name, c := range hiddenRequestRules {
		t.Run(name, func(t *testing.T) {
			e := hiddenRuleEngine(t, c.rule)
			reader := newToken("data_reader")
			cands := append(slices.Clone(shippedTools), policy.Candidate{Name: "lookup", Annotations: reuseHints})
			for i := range 3 {
				if got, _ := visibleSet(t, e, reader.list(cands...)); !slices.Contains(got, c.tool) {
					t.Fatalf("list %d from inside: %v, want %s shown", i, got, c.tool)
				}
				policy.WaitReuseAnalysis(e)
			}
			outside := reader.list(cands...)
			outside.Request.RemoteAddr = "192.0.2.1:4711"
			got, reused := visibleSet(t, e, outside)
			if slices.Contains(got, c.tool) {
				t.Fatalf("a list from outside shows %s (reused: %v): the inside set was reused", c.tool, reused)
			}
		})
	}
}
