package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mcpguard/mcpguard/internal/policy"
	"github.com/mcpguard/mcpguard/internal/policy/policytest"
)

// deniedLogLine decides a call the shipped policy denies, with console
// decision logs on, and returns its log line.
func deniedLogLine(t *testing.T) string {
	t.Helper()
	// Written by the engine's log goroutine, read after Close has waited
	// for it.
	var console bytes.Buffer
	ctx := context.Background()
	e, err := policy.New(ctx, shippedPolicies, policy.WithTimeout(5*time.Second),
		policy.WithManagement(policy.Management{Config: []byte(`{"decision_logs": {"console": true}}`), Console: &console}))
	if err != nil {
		t.Fatal(err)
	}
	id := policy.MustFragment(map[string]any{"authenticated": true, "kind": "user", "scopes": []string{"read"}, "claims": map[string]any{}})
	authz := policy.MustFragment(map[string]any{"source": "static", "roles": []string{"data_reader"}, "claims": map[string]any{}})
	in := &policy.Input{Identity: id, Authorization: authz}
	in.MCP.Method = "tools/call"
	in.MCP.Tool = &policy.Tool{Name: "approve_budget", Arguments: json.RawMessage(`{"amount":100}`)}
	d, err := e.Decide(ctx, in)
	if err != nil || d.Allow {
		t.Fatal(d, err)
	}
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	e.Close(cctx)
	for _, line := range strings.Split(console.String(), "\n") {
		if strings.Contains(line, d.ID) {
			return line
		}
	}
	t.Fatalf("no log line for %s in %s", d.ID, console.String())
	return ""
}

// policy replay decides a logged decision again: the same policy, the same
// decision (0); a policy changed since, the difference (3); a line that is
// no decision, an error (1); no line, a bad command line (2).
func TestPolicyReplay(t *testing.T) {
	isolate(t)
	line := deniedLogLine(t)

	out, errOut, code := runCLI(t, "policy", "replay", "--policy-dir", shippedPolicies, line)
	if code != 0 || !strings.Contains(out, "(mcpguard/decision): same [revision sha256:") || errOut != "" {
		t.Fatalf("same policy: exit %d\n%s%s", code, out, errOut)
	}

	raw, err := os.ReadFile(filepath.Join(shippedPolicies, "data.json"))
	if err != nil {
		t.Fatal(err)
	}
	changed := strings.Replace(string(raw), `"approve_budget": {"require_all_roles": ["finance", "executive"]}`, `"approve_budget": {"require_role": "data_reader"}`, 1)
	dir := policytest.Copy(t, policiesDir(t), map[string]string{"data.json": changed})
	out, _, code = runCLI(t, "policy", "replay", "--policy-dir", dir, line)
	if code != exitDiffers || !strings.Contains(out, "DIFFERS [revision logged sha256:") || !strings.Contains(out, "  - allow: logged false, now true") ||
		!strings.Contains(out, "/input/mcp/tool/arguments)") {
		t.Fatalf("changed policy: exit %d\n%s", code, out)
	}
	out, _, code = runCLI(t, "policy", "replay", "--json", "--policy-dir", dir, line)
	var r policy.Replayed
	if code != exitDiffers || json.Unmarshal([]byte(out), &r) != nil || r.Differences[0] != "allow: logged false, now true" {
		t.Fatalf("--json: exit %d\n%s", code, out)
	}

	// Standard input: other log lines are skipped.
	in := filepath.Join(t.TempDir(), "log")
	if err := os.WriteFile(in, []byte(`{"level":"info","msg":"Starting decision logger."}`+"\n"+line+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(in)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	stdin := os.Stdin
	os.Stdin = f
	out, _, code = runCLI(t, "policy", "replay", "--policy-dir", dir, "-")
	os.Stdin = stdin
	if code != exitDiffers || strings.Count(out, "DIFFERS") != 1 {
		t.Fatalf("from standard input: exit %d\n%s", code, out)
	}

	if _, errOut, code := runCLI(t, "policy", "replay", "--policy-dir", dir, `{"decision_id":"x","path":"example/allow","input":{}}`); code != 1 || !strings.Contains(errOut, "is not one of mcpguard's") {
		t.Fatalf("another path: exit %d %s", code, errOut)
	}
	if _, _, code := runCLI(t, "policy", "replay", "--policy-dir", dir); code != 2 {
		t.Fatalf("no line: exit %d", code)
	}
	if out, _, code := runCLI(t, "policy", "replay", "--help"); code != 0 || !strings.HasPrefix(out, "usage: mcpguard policy replay") {
		t.Fatalf("--help: exit %d %s", code, out)
	}
}
