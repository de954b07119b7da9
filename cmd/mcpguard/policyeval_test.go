package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mcpguard/mcpguard/internal/policy"
)

// policy eval's exit status tells allow (0) from deny (3) from a policy
// that could not decide (1): scripts branch on it. The old command exited 0
// on a deny.
func TestPolicyEvalExitStatus(t *testing.T) {
	isolate(t)
	allowed := filepath.Join(fixtures, "inputs", "user-call-allowed.json")
	denied := filepath.Join(fixtures, "inputs", "user-call-denied.json")
	if out, errOut, code := runCLI(t, "policy", "eval", "--policy-dir", shippedPolicies, "--input", allowed); code != 0 || !strings.Contains(out, `"allow": true`) {
		t.Errorf("allowed: exit %d\n%s%s", code, out, errOut)
	}
	if out, errOut, code := runCLI(t, "policy", "eval", "--policy-dir", shippedPolicies, "--input", denied); code != exitDenied || !strings.Contains(out, `"allow": false`) || !strings.Contains(out, "approve_budget") {
		t.Errorf("denied: exit %d, want %d with the reasons\n%s%s", code, exitDenied, out, errOut)
	}

	// A veto whose builtin errs on this input: the server denies with an
	// evaluation error, policy eval says so and exits 1.
	dir := t.TempDir()
	for _, f := range []string{"authz.rego", "lib.rego", "data.json"} {
		b, err := os.ReadFile(filepath.Join(shippedPolicies, f))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, f), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "budget.rego"), []byte(`package mcp.authz

deny contains "budgets need a numeric department code" if {
	input.mcp.method == "tools/call"
	to_number(input.mcp.tool.arguments.department) < 0
}
`), 0o600); err != nil {
		t.Fatal(err)
	}
	out, errOut, code := runCLI(t, "policy", "eval", "--policy-dir", dir, "--input", allowed)
	if code != 1 || !strings.Contains(out, `"allow": false`) || !strings.Contains(errOut, "could not decide") || !strings.Contains(errOut, "to_number") {
		t.Errorf("evaluation error: exit %d, want 1\n%s%s", code, out, errOut)
	}

	// A file that is no input document is an error, not a deny.
	bad := filepath.Join(t.TempDir(), "bad.json")
	if err := os.WriteFile(bad, []byte(`[1, 2]`), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, errOut, code := runCLI(t, "policy", "eval", "--policy-dir", shippedPolicies, "--input", bad); code != 1 || !strings.Contains(errOut, "JSON object") {
		t.Errorf("an array: exit %d: %s", code, errOut)
	}
}

// --explain prints OPA's trace of the allow query to standard error, in the
// filter asked for; standard output stays the decision alone.
func TestPolicyEvalExplain(t *testing.T) {
	isolate(t)
	denied := filepath.Join(fixtures, "inputs", "user-call-denied.json")
	for _, mode := range []string{"fails", "full", "notes"} {
		var out, errb bytes.Buffer
		err := run(context.Background(), []string{"policy", "eval", "--policy-dir", shippedPolicies, "--input", denied, "--explain", mode}, &out, &errb)
		if exitCode(err) != exitDenied {
			t.Fatalf("%s: %v\n%s", mode, err, errb.String())
		}
		if !strings.HasPrefix(out.String(), "{") || strings.Contains(out.String(), "Enter") {
			t.Errorf("%s: standard output is not the decision alone:\n%s", mode, out.String())
		}
		trace := errb.String()
		if !strings.Contains(trace, "trace of "+policy.AllowQuery) {
			t.Errorf("%s: no trace header:\n%s", mode, trace)
		}
		switch mode {
		case "fails":
			if !strings.Contains(trace, "Fail ") || !strings.Contains(trace, "lib.rego:") {
				t.Errorf("fails: no failed expression with its location:\n%s", trace)
			}
		case "full":
			if !strings.Contains(trace, "Enter "+policy.AllowQuery) || !strings.Contains(trace, "Eval ") {
				t.Errorf("full: not a full trace:\n%s", trace)
			}
		}
	}
}

// - reads the document from standard input.
func TestPolicyEvalStdin(t *testing.T) {
	isolate(t)
	doc, err := os.ReadFile(filepath.Join(fixtures, "inputs", "user-call-allowed.json"))
	if err != nil {
		t.Fatal(err)
	}
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	go func() { _, _ = w.Write(doc); w.Close() }()
	old := os.Stdin
	os.Stdin = r
	defer func() { os.Stdin = old; r.Close() }()
	if out, errOut, code := runCLI(t, "policy", "eval", "--policy-dir", shippedPolicies, "--input", "-"); code != 0 {
		t.Errorf("exit %d\n%s%s", code, out, errOut)
	}
}
