package policy_test

import (
	"context"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/mcpguard/mcpguard/internal/policy"
	"github.com/mcpguard/mcpguard/internal/policy/policytest"
)

// shippedTools are the shipped catalog's tools, registered (annotations
// made once, as the server makes them).
var shippedTools = []policy.Candidate{
	{Name: "admin_operation", Annotations: reuseHints},
	{Name: "approve_budget", Annotations: reuseHints},
	{Name: "get_current_user", Annotations: reuseHints},
	{Name: "read_critical_data", Annotations: reuseHints},
	{Name: "write_api_data", Annotations: reuseHints},
}

func (c token) list(tools ...policy.Candidate) *policy.Input {
	in := &policy.Input{Identity: c.id, Authorization: c.authz}
	in.MCP.Method = "tools/list"
	in.MCP.Candidates = &policy.Candidates{Tools: tools}
	in.Request.RemoteAddr = "10.0.0.7:4711"
	return in
}

func names(set map[string]struct{}) []string { return slices.Sorted(maps.Keys(set)) }

func visibleSet(t *testing.T, e *policy.Engine, in *policy.Input) ([]string, bool) {
	t.Helper()
	set, reused, err := e.VisibleSet(context.Background(), in)
	if err != nil {
		t.Fatal(err)
	}
	return names(set), reused
}

// listAnalysed lists in, lets the analysis that started end, and lists in
// again: that second set is remembered if the list may be reused.
func listAnalysed(t *testing.T, e *policy.Engine, in *policy.Input) []string {
	t.Helper()
	visibleSet(t, e, in)
	policy.WaitReuseAnalysis(e)
	got, _ := visibleSet(t, e, in)
	return got
}

// A list whose visible depends on the caller alone is reused for that
// caller and list: the same set, not evaluated again, and a call to each
// tool agrees with it.
func TestVisibleOfTheCallerAloneReused(t *testing.T) {
	e := shipped(t)
	reader := newToken("data_reader")
	in := reader.list(shippedTools...)
	want := []string{"get_current_user", "read_critical_data"}
	if got := listAnalysed(t, e, in); !slices.Equal(got, want) {
		t.Fatalf("visible %v", got)
	}
	if reusable, analysed := policy.VisibleReuseAnalysed(e, in); !reusable || !analysed {
		t.Fatalf("the shipped policy's list is not shown to depend on the caller alone: %v %v", reusable, analysed)
	}
	held, ok := policy.ReusedVisible(e, in)
	if !ok {
		t.Fatal("not reused")
	}
	// Another request of the same caller and list (its own candidates
	// slice, same names and fragments): the set held, as it is.
	again := reader.list(slices.Clone(shippedTools)...)
	set, reused, err := e.VisibleSet(context.Background(), again)
	if err != nil || !reused || !slices.Equal(names(set), want) {
		t.Fatalf("second list: %v %v %v", names(set), reused, err)
	}
	if reflectSame(set, held) == false {
		t.Fatal("the reused set is not the one held")
	}
	// Under reuse, the list shows a tool exactly when a call to it passes.
	for _, c := range []token{reader, newToken("finance", "executive"), newToken("supervisor"), newToken()} {
		listAnalysed(t, e, c.list(shippedTools...))
		set, reused, err := e.VisibleSet(context.Background(), c.list(shippedTools...))
		if err != nil || !reused {
			t.Fatalf("not reused: %v %v", reused, err)
		}
		for _, tool := range shippedTools {
			_, shown := set[tool.Name]
			if allowed := analysed(t, e, c.call(tool.Name, `{"query":"q"}`)); allowed != shown {
				t.Errorf("%s: listed %v, call allowed %v", tool.Name, shown, allowed)
			}
		}
	}
}

// reflectSame: a and b are the same map (not equal ones).
func reflectSame(a, b map[string]struct{}) bool {
	const probe = "\x00probe"
	if _, ok := a[probe]; ok {
		return false
	}
	a[probe] = struct{}{}
	_, same := b[probe]
	delete(a, probe)
	return same
}

// Lists whose visible reads more than the caller are evaluated every
// time: a time window (time.now_ns), the request's address, its time,
// whether the rule is a veto or an extension of tool_allowed.
func TestVisibleReadingTheRequestNotReused(t *testing.T) {
	for name, c := range map[string]struct {
		rule   string
		tool   string              // shown before, hidden after
		before func(*policy.Input) // shows tool
		after  func(*policy.Input) // hides it (nil: time.now_ns, not set by the test)
	}{
		"time.now_ns window, allowed rule": {
			rule: `tool_allowed("admin_operation") if time.now_ns() > 0`,
			tool: "admin_operation",
		},
		"time.now_ns window, veto": {
			rule: `deny contains "the far future" if { time.now_ns() > 4000000000000000000 }`,
			tool: "read_critical_data",
		},
		"remote address, allowed rule": {
			rule:   `tool_allowed("admin_operation") if net.cidr_contains("10.0.0.0/8", split(input.request.remote_addr, ":")[0])`,
			tool:   "admin_operation",
			before: func(in *policy.Input) { in.Request.RemoteAddr = "10.1.2.3:1" },
			after:  func(in *policy.Input) { in.Request.RemoteAddr = "192.0.2.1:1" },
		},
		"remote address, veto": {
			rule:   `deny contains "outside" if { input.mcp.tool.name == "read_critical_data"; not net.cidr_contains("10.0.0.0/8", split(input.request.remote_addr, ":")[0]) }`,
			tool:   "read_critical_data",
			before: func(in *policy.Input) { in.Request.RemoteAddr = "10.1.2.3:1" },
			after:  func(in *policy.Input) { in.Request.RemoteAddr = "192.0.2.1:1" },
		},
		"request time window": {
			rule:   `tool_allowed("admin_operation") if input.request.time_ns < 2000000000000000000`,
			tool:   "admin_operation",
			before: func(in *policy.Input) { in.Request.TimeNS = 1000000000000000000 },
			after:  func(in *policy.Input) { in.Request.TimeNS = 3000000000000000000 },
		},
	} {
		t.Run(name, func(t *testing.T) {
			e := withRules(t, c.rule)
			caller := newToken("data_reader")
			for i := range 3 {
				in := caller.list(shippedTools...)
				if c.before != nil {
					c.before(in)
				}
				got, reused := visibleSet(t, e, in)
				if reused || !slices.Contains(got, c.tool) {
					t.Fatalf("list %d: %v (reused %v)", i, got, reused)
				}
				policy.WaitReuseAnalysis(e)
				if _, ok := policy.ReusedVisible(e, in); ok {
					t.Fatal("a list on a rule that reads the request was reused")
				}
			}
			if reusable, analysed := policy.VisibleReuseAnalysed(e, caller.list(shippedTools...)); reusable || !analysed {
				t.Fatalf("analysed %v, reusable %v", analysed, reusable)
			}
			if c.after == nil {
				return
			}
			in := caller.list(shippedTools...)
			c.after(in)
			if got, _ := visibleSet(t, e, in); slices.Contains(got, c.tool) {
				t.Fatalf("the rule did not hide the tool: an earlier list was reused: %v", got)
			}
		})
	}
}

// New roles come with a new token, so new fragments: listed afresh.
func TestVisibleRoleChangeListedAfresh(t *testing.T) {
	e := shipped(t)
	before := newToken("data_reader")
	listAnalysed(t, e, before.list(shippedTools...))
	if _, reused := visibleSet(t, e, before.list(shippedTools...)); !reused {
		t.Fatal("the old roles' list is not reused: the test would not show anything")
	}
	after := newToken("finance", "executive") // the same user, roles changed: a new token
	got, reused := visibleSet(t, e, after.list(shippedTools...))
	if reused || !slices.Equal(got, []string{"approve_budget", "get_current_user"}) {
		t.Fatalf("after the role change: %v (reused %v)", got, reused)
	}
}

// A reused list never outlives the policy that made it.
func TestReloadDropsReusedVisible(t *testing.T) {
	dir := policytest.Copy(t, "../../policies", nil)
	e, err := policy.New(context.Background(), dir)
	if err != nil {
		t.Fatal(err)
	}
	in := newToken("data_reader").list(shippedTools...)
	if got := listAnalysed(t, e, in); !slices.Contains(got, "read_critical_data") {
		t.Fatalf("visible %v", got)
	}
	if _, ok := policy.ReusedVisible(e, in); !ok {
		t.Fatal("not reused before the reload: the test would not show anything")
	}
	if err := os.WriteFile(filepath.Join(dir, "team_rules.rego"), []byte("package mcp.authz\n\ndeny contains \"closed\" if { input.mcp.tool.name == \"read_critical_data\" }\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := e.Reload(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got, reused := visibleSet(t, e, in); reused || slices.Contains(got, "read_critical_data") {
		t.Fatalf("after the reload: %v (reused %v): a list of the old policy was served", got, reused)
	}
}

// One list's answer never serves another: other names, other annotations
// fragments, another order of kinds, another list method.
func TestVisibleOfAnotherListNotServed(t *testing.T) {
	e := shipped(t)
	reader := newToken("data_reader")
	in := reader.list(shippedTools...)
	listAnalysed(t, e, in)
	if _, ok := policy.ReusedVisible(e, in); !ok {
		t.Fatal("not reused: the test would not show anything")
	}
	fewer := reader.list(shippedTools[2:]...)
	if got, reused := visibleSet(t, e, fewer); reused || !slices.Equal(got, []string{"get_current_user", "read_critical_data"}) {
		t.Fatalf("fewer candidates: %v (reused %v)", got, reused)
	}
	other := reader.list(policy.Candidate{Name: "read_critical_data", Annotations: reuseHints})
	if got, reused := visibleSet(t, e, other); reused || !slices.Equal(got, []string{"read_critical_data"}) {
		t.Fatalf("one candidate: %v (reused %v)", got, reused)
	}
	// The same names, annotations made again: another list to the reuse.
	hints := slices.Clone(shippedTools)
	for i := range hints {
		hints[i].Annotations = policy.ToolHints{ReadOnly: true}.Fragment()
	}
	if _, reused := visibleSet(t, e, reader.list(hints...)); reused {
		t.Fatal("a list with other annotations fragments got another list's answer")
	}
	// The same names as prompts.
	prompts := &policy.Input{Identity: reader.id, Authorization: reader.authz}
	prompts.MCP.Method = "prompts/list"
	prompts.MCP.Candidates = &policy.Candidates{Prompts: slices.Clone(shippedTools)}
	if set, reused, err := e.VisibleSet(context.Background(), prompts); err != nil || reused || len(set) != 0 {
		t.Fatalf("prompts named as the tools: %v (reused %v) %v", names(set), reused, err)
	}
}

// With reuse ruled out, every list is evaluated.
func TestVisibleWithoutDecisionReuse(t *testing.T) {
	dir := policytest.Copy(t, "../../policies", nil)
	e, err := policy.New(context.Background(), dir, policy.WithoutDecisionReuse())
	if err != nil {
		t.Fatal(err)
	}
	in := newToken("data_reader").list(shippedTools...)
	for range 3 {
		if _, reused := visibleSet(t, e, in); reused {
			t.Fatal("reused")
		}
		policy.WaitReuseAnalysis(e)
	}
}

// With reuse ruled out, every call is evaluated too.
func TestCallWithoutDecisionReuse(t *testing.T) {
	dir := policytest.Copy(t, "../../policies", nil)
	e, err := policy.New(context.Background(), dir, policy.WithoutDecisionReuse())
	if err != nil {
		t.Fatal(err)
	}
	in := newToken("data_reader").call("read_critical_data", `{}`)
	if !analysed(t, e, in) {
		t.Fatal("refused")
	}
	if _, reused := policy.Reused(e, in); reused {
		t.Fatal("a decision was held for reuse")
	}
}
