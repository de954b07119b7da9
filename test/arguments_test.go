package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mcpguard/mcpguard/internal/devidp"
)

// budgetVeto is a security team's argument rule on the shipped policy.
const budgetVeto = `package mcp.authz

deny contains "budget amount over 1000 needs the board" if {
	input.mcp.tool.name == "approve_budget"
	input.mcp.tool.arguments.amount > 1000
}
`

// policyWithVeto is the shipped policy plus budgetVeto, in a folder of its own.
func policyWithVeto(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	for _, name := range []string{"authz.rego", "lib.rego", "data.json"} {
		b, err := os.ReadFile(filepath.Join(repoRoot(), "policies", name))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "veto.rego"), []byte(budgetVeto), 0o600); err != nil {
		t.Fatal(err)
	}
	return dir
}

// The policy reads the arguments the tool gets. Raw JSON-RPC, since no SDK
// client sends duplicate keys or invalid UTF-8: each of these once reached
// approve_budget with amount 5000 while the policy saw {} (or only part),
// and the veto did not fire.
func TestArgumentsPolicySeesWhatToolGets(t *testing.T) {
	e := start(t, startIssuer(t), map[string]string{"POLICY_DIR": policyWithVeto(t), "DENIAL_DETAIL": "true"})
	tok := e.token(t, devidp.Token{User: "bob", Roles: []string{"finance", "executive"}})
	h := map[string]string{"Mcp-Session-Id": session(t, e, tok)}
	call := func(args string) string {
		t.Helper()
		res := post(t, e.URL, tok, `{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"approve_budget","arguments":`+args+`}}`, h)
		b := body(t, res)
		if res.StatusCode != 200 {
			t.Fatalf("%q: HTTP %d %s", args, res.StatusCode, b)
		}
		return b
	}

	// A benign call runs the tool; an amount over 1000 meets the veto.
	if b := call(`{"department":"ops","amount":500}`); !strings.Contains(b, `"approved":true`) {
		t.Fatalf("benign call: %s", b)
	}
	if b := call(`{"department":"ops","amount":5000}`); !strings.Contains(b, "-32030") || !strings.Contains(b, "needs the board") || strings.Contains(b, `"approved"`) {
		t.Fatalf("vetoed call: %s", b)
	}

	for _, c := range []struct{ name, args, want string }{
		// The example: the SDK drops the invalid string for the
		// last amount; the policy was shown {}.
		{"issue example", "{\"department\":\"ops\",\"amount\":\"\xff\",\"amount\":5000}", "tool arguments refused: invalid UTF-8"},
		{"invalid UTF-8", "{\"department\":\"ops\xff\",\"amount\":5000}", "tool arguments refused: invalid UTF-8"},
		{"duplicate key", `{"department":"ops","amount":5000,"amount":10}`, `tool arguments refused: duplicate key \"amount\"`},
		{"escaped duplicate key", `{"department":"ops","\u0061mount":10,"amount":5000}`, `tool arguments refused: duplicate key \"amount\"`},
		// Deeper than the old conversion's 128 levels, well within the SDK's
		// 1000: now the policy sees it whole, and the veto fires.
		{"deep nesting", `{"department":"ops","amount":5000,"x":` + strings.Repeat("[", 200) + strings.Repeat("]", 200) + `}`, "needs the board"},
	} {
		t.Run(c.name, func(t *testing.T) {
			b := call(c.args)
			if !strings.Contains(b, "-32030") || !strings.Contains(b, c.want) || strings.Contains(b, `"approved"`) {
				t.Fatalf("want access denied with %q: %s", c.want, b)
			}
		})
	}
	// The session still serves after the refusals.
	if b := call(`{"department":"ops","amount":999.5}`); !strings.Contains(b, `"approved":true`) {
		t.Fatalf("benign call after refusals: %s", b)
	}
}
