package policy_test

import (
	"path/filepath"
	"testing"

	"github.com/mcpguard/mcpguard/internal/policy"
)

// An allow body about a tool call allows nothing (the decision module asks
// the catalog and tool_allowed for it); the lint says so, at its line, and
// says nothing of an allow body about a method without a target. Admitting
// callers without a token is reported as a warning.
func TestLintContract(t *testing.T) {
	src := `package mcp.authz

allow if {
	input.mcp.method == "tools/call"
	input.mcp.tool.name == "status_check"
}

allow if input.mcp.prompt.name == "p"

allow if input.mcp.method in {"sampling/createMessage", "resources/read"}

allow if input.mcp.method == "sampling/createMessage"

allow_unauthenticated := true
`
	dir := lintCopy(t, map[string]string{"extra.rego": src})
	file := filepath.Join(dir, "extra.rego")
	fs := lint(t, dir, withRegistered())
	wantFinding(t, fs, policy.CheckAllowTargeted, file, 3, "tools/call", "tool_allowed")
	wantFinding(t, fs, policy.CheckAllowTargeted, file, 8, "input.mcp.prompt")
	wantFinding(t, fs, policy.CheckAllowTargeted, file, 10, "resources/read")
	f := wantFinding(t, fs, policy.CheckUnauthenticated, file, 14, "without a verified token")
	if f.Severity != policy.SeverityWarning {
		t.Errorf("admitting anonymous callers is a warning: %+v", f)
	}
	for _, f := range fs {
		if f.Check == policy.CheckAllowTargeted && f.Line == 12 {
			t.Errorf("an allow body about a method without a target was reported: %+v", f)
		}
	}
}
