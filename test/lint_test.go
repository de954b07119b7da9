package e2e

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// policy lint names a registered tool no rule can allow and a malformed
// catalog row, and exits non-zero; the shipped policies lint clean.
func TestPolicyLint(t *testing.T) {
	bin := buildBinary(t)
	lint := func(dir string) (string, error) {
		cmd := exec.Command(bin, "policy", "lint", "--policy-dir", dir)
		cmd.Dir = repoRoot()
		cmd.Env = append(os.Environ(), "ENV_FILE=/nonexistent")
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	if out, err := lint(filepath.Join(repoRoot(), "policies")); err != nil {
		t.Fatalf("shipped policies: %v\n%s", err, out)
	}

	dir := t.TempDir()
	for _, f := range []string{"authz.rego", "lib.rego"} {
		src, err := os.ReadFile(filepath.Join(repoRoot(), "policies", f))
		if err != nil {
			t.Fatal(err)
		}
		_ = os.WriteFile(filepath.Join(dir, f), src, 0o600)
	}
	var data map[string]any
	raw, _ := os.ReadFile(filepath.Join(repoRoot(), "policies", "data.json"))
	_ = json.Unmarshal(raw, &data)
	tools := data["mcp"].(map[string]any)["catalog"].(map[string]any)["tools"].(map[string]any)
	delete(tools, "admin_operation")
	tools["approve_budget"] = map[string]any{"require_role": "finance", "require_scope": []string{"read"}}
	raw, _ = json.Marshal(data)
	_ = os.WriteFile(filepath.Join(dir, "data.json"), raw, 0o600)

	out, err := lint(dir)
	if err == nil {
		t.Fatalf("lint passed a policy that can never allow admin_operation:\n%s", out)
	}
	for _, want := range []string{`tool "admin_operation": no rule`, `tool "approve_budget": no rule`, "require_scope"} {
		if !strings.Contains(out, want) {
			t.Fatalf("lint output lacks %q:\n%s", want, out)
		}
	}
}
