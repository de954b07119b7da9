package main

import (
	"context"
	"strings"
	"testing"

	"github.com/open-policy-agent/opa/v1/tester"
)

// A veto on amounts that are numbers in disguise: to_number errs on "abc".
const amountPolicy = `package mcp.authz

deny contains "amounts over 100 need approval" if {
	input.mcp.method == "tools/call"
	to_number(input.mcp.tool.arguments.amount) > 100
}
`

// The test expects a letters-only amount not to be vetoed. Plain opa test
// agrees (the builtin error makes the rule undefined); the server does not:
// to it the error is an evaluation error, and the request is denied.
const amountTest = `package mcp.amount_test

import data.mcp.authz

call(amount) := {"mcp": {"method": "tools/call", "tool": {"name": "x", "arguments": {"amount": amount}}}}

test_large_vetoed if "amounts over 100 need approval" in authz.deny with input as call("500")

test_letters_not_vetoed if count(authz.deny) == 0 with input as call("abc")
`

func plainOPATest(t *testing.T, dir string) (passed, total int) {
	t.Helper()
	results, err := tester.Run(context.Background(), dir)
	if err != nil {
		t.Fatalf("plain opa test: %v", err)
	}
	for _, r := range results {
		total++
		if r.Pass() {
			passed++
		}
	}
	return passed, total
}

// A builtin error in a test is an ERROR, reported as opa test reports it
// (file:line, the builtin's message, the traceback), and the run fails, as
// the server would deny the request, where plain opa test passes.
func TestPolicyTestStrictBuiltinErrors(t *testing.T) {
	isolate(t)
	dir := writePolicy(t, map[string]string{"authz.rego": amountPolicy, "amount_test.rego": amountTest})
	if passed, total := plainOPATest(t, dir); passed != 2 || total != 2 {
		t.Fatalf("plain opa test: %d of %d pass; the point of this test is that it passes them all", passed, total)
	}
	out, _, code := runCLI(t, "policy", "test", "--policy-dir", dir)
	if code != 1 {
		t.Fatalf("exit %d, want 1:\n%s", code, out)
	}
	for _, want := range []string{
		"amount_test.rego:9:", "test_letters_not_vetoed: ERROR", "authz.rego:5: eval_builtin_error: to_number",
		"PASS: 1/2", "ERROR: 1/2",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "<nil>") {
		t.Errorf("output shows <nil>:\n%s", out)
	}
}

// Strict compile errors (here an unused import), which opa test does not
// check and the server refuses to start with, fail the run with the
// server's message.
func TestPolicyTestStrictCompile(t *testing.T) {
	isolate(t)
	dir := writePolicy(t, map[string]string{
		"authz.rego": "package mcp.authz\n\nimport data.mcp.lib\n\nallow if input.mcp.method == \"ping\"\n",
		"authz_test.rego": "package mcp.authz_test\n\nimport data.mcp.authz\n\n" +
			"test_ping if authz.allow with input as {\"mcp\": {\"method\": \"ping\"}}\n",
	})
	if passed, total := plainOPATest(t, dir); passed != 1 || total != 1 {
		t.Fatalf("plain opa test: %d of %d pass", passed, total)
	}
	out, _, code := runCLI(t, "policy", "test", "--policy-dir", dir)
	if code != 1 || !strings.Contains(out, "the server would refuse") || !strings.Contains(out, "import data.mcp.lib unused") {
		t.Fatalf("exit %d, want 1 with the server's compile error:\n%s", code, out)
	}
	// A strict error in a test file alone: the server would start, the tests
	// still do not compile as strictly.
	dir = writePolicy(t, map[string]string{
		"authz.rego": "package mcp.authz\n\nallow if input.mcp.method == \"ping\"\n",
		"authz_test.rego": "package mcp.authz_test\n\nimport data.mcp.authz\nimport data.mcp.lib\n\n" +
			"test_ping if authz.allow with input as {\"mcp\": {\"method\": \"ping\"}}\n",
	})
	out, _, code = runCLI(t, "policy", "test", "--policy-dir", dir)
	if code != 1 || !strings.Contains(out, "authz_test.rego:4") {
		t.Fatalf("exit %d, want 1 naming authz_test.rego:4:\n%s", code, out)
	}
}

// A failing test is reported by OPA's reporter, with its file and line; -v
// adds the failing expression and its values.
func TestPolicyTestReportsFailures(t *testing.T) {
	isolate(t)
	dir := writePolicy(t, map[string]string{
		"authz.rego": "package mcp.authz\n\nallow if input.mcp.method == \"ping\"\n",
		"authz_test.rego": "package mcp.authz_test\n\nimport data.mcp.authz\n\n" +
			"test_ping if authz.allow with input as {\"mcp\": {\"method\": \"ping\"}}\n\n" +
			"test_wrong if {\n\tx := 1 + 1\n\tx == 3\n}\n",
	})
	out, _, code := runCLI(t, "policy", "test", "--policy-dir", dir)
	if code != 1 || !strings.Contains(out, "authz_test.rego:7:") || !strings.Contains(out, "data.mcp.authz_test.test_wrong: FAIL") ||
		!strings.Contains(out, "PASS: 1/2") || strings.Contains(out, "<nil>") {
		t.Fatalf("exit %d:\n%s", code, out)
	}
	out, _, code = runCLI(t, "policy", "test", "--policy-dir", dir, "-v", "--run", "wrong")
	if code != 1 || !strings.Contains(out, "FAILURES") || !strings.Contains(out, "x == 3") || !strings.Contains(out, "{x: 2}") {
		t.Fatalf("-v: exit %d, want the failing expression and x's value:\n%s", code, out)
	}
	if strings.Contains(out, "test_ping") {
		t.Errorf("--run wrong ran test_ping:\n%s", out)
	}
}

// No test at all (none written, or none matching --run) is a failure.
func TestPolicyTestNoTests(t *testing.T) {
	isolate(t)
	dir := writePolicy(t, map[string]string{"authz.rego": "package mcp.authz\n\nallow if input.mcp.method == \"ping\"\n"})
	if out, _, code := runCLI(t, "policy", "test", "--policy-dir", dir); code != 1 || !strings.Contains(out, "no tests ran") {
		t.Errorf("no tests: exit %d:\n%s", code, out)
	}
	if out, _, code := runCLI(t, "policy", "test", "--policy-dir", shippedPolicies, "--run", "^no_such_test$"); code != 1 || !strings.Contains(out, "no tests ran") {
		t.Errorf("--run matching nothing: exit %d:\n%s", code, out)
	}
}

// The shipped policies pass their own tests under the server's rules.
func TestPolicyTestShipped(t *testing.T) {
	isolate(t)
	out, _, code := runCLI(t, "policy", "test", "--policy-dir", shippedPolicies)
	if code != 0 || !strings.Contains(out, "PASS:") {
		t.Fatalf("exit %d:\n%s", code, out)
	}
}
