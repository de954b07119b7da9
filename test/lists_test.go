package e2e

import (
	"errors"
	"path/filepath"
	"slices"
	"testing"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/mcpguard/mcpguard/internal/devidp"
	"github.com/mcpguard/mcpguard/internal/policy/policytest"
	"github.com/mcpguard/mcpguard/internal/server"
	"github.com/mcpguard/mcpguard/tools"
)

// teamRules are rules a security team adds beside the catalog: one that
// opens a tool to app-only callers, one that reads no arguments (so it hides
// tools from lists) and one that reads them (so it hides nothing).
const teamRules = `package mcp.authz

import data.mcp.lib

# Monitoring agents may ask who they are.
tool_allowed("get_current_user") if lib.is_app

# Destructive tools only for admins.
deny contains sprintf("%s is destructive: admins only", [input.mcp.tool.name]) if {
	input.mcp.method == "tools/call"
	input.mcp.tool.annotations.destructiveHint == true
	input.mcp.tool.annotations.readOnlyHint == false
	not lib.require_role("admin")
}

# approve_budget over 10,000 needs cfo.
deny contains "approve_budget over 10,000 needs the cfo role" if {
	input.mcp.method == "tools/call"
	input.mcp.tool.name == "approve_budget"
	input.mcp.tool.arguments.amount > 10000
	not lib.require_role("cfo")
}
`

// shippedPolicyWith is the shipped policy folder (no tests) plus files.
func shippedPolicyWith(t *testing.T, extra map[string]string) string {
	return policytest.Copy(t, filepath.Join(repoRoot(), "policies"), extra)
}

// TestListsMatchCalls: through the real server, with the registered tools
// and the shipped policy plus a team's rules, every caller is listed
// exactly the tools it can call with empty arguments (a denial is the
// policy's refusal; any other answer, a tool error included, passed it).
func TestListsMatchCalls(t *testing.T) {
	// Every registered tool, from the registration itself.
	bare := mcp.NewServer(&mcp.Implementation{Name: "registered"}, nil)
	tools.Register(bare)
	ct, st := mcp.NewInMemoryTransports()
	ss, err := bare.Connect(ctx(t), st, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ss.Close()
	bc, err := mcp.NewClient(&mcp.Implementation{Name: "lister"}, nil).Connect(ctx(t), ct, nil)
	if err != nil {
		t.Fatal(err)
	}
	registered := toolNames(t, bc)
	_ = bc.Close()
	if len(registered) < 5 {
		t.Fatalf("registered tools: %v", registered)
	}

	e := start(t, startIssuer(t), map[string]string{"POLICY_DIR": shippedPolicyWith(t, map[string]string{"team.rego": teamRules})})
	callers := []devidp.Token{
		{User: "nobody"},
		{User: "alice", Roles: []string{"data_reader"}},
		{User: "bob", Roles: []string{"finance", "executive"}},
		{User: "sam", Roles: []string{"supervisor"}},
		{User: "ada", Roles: []string{"admin", "data_reader", "finance", "executive"}},
		{App: true, User: "agent"},
		{App: true, User: "agent-admin", Roles: []string{"admin"}},
	}
	seen := map[bool]int{}
	for _, who := range callers {
		cs := e.connect(t, e.token(t, who))
		listed := toolNames(t, cs)
		for _, name := range registered {
			_, err := cs.CallTool(ctx(t), &mcp.CallToolParams{Name: name, Arguments: map[string]any{}})
			var rpcErr *jsonrpc.Error
			allowed := !(errors.As(err, &rpcErr) && rpcErr.Code == server.CodeAccessDenied)
			seen[allowed]++
			if slices.Contains(listed, name) != allowed {
				t.Errorf("%s: %s listed %v, call allowed %v (%v)", who.User, name, !allowed, allowed, err)
			}
		}
		_ = cs.Close()
	}
	if seen[true] == 0 || seen[false] == 0 {
		t.Fatalf("the callers do not tell lists apart: %v", seen)
	}
}
