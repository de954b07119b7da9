package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A policy with one guard the tests miss (input.ok), one rule no test reads
// (level), one default no test needs, and one mutant that cannot compile.
const policy = `package t

default allow := false

allow if {
	input.user == "admin"
	input.ok == true
}

level := x if {
	x := input.level
}
`

const policyTest = `package t_test

import data.t

test_admin if t.allow with input as {"user": "admin", "ok": true}

test_other if not t.allow with input as {"user": "bob", "ok": true}
`

func writeDir(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, src := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(src), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func mutateDir(t *testing.T, dir, allow string) (int, string) {
	t.Helper()
	var out strings.Builder
	args := []string{"-dir", dir, "-allow", ""}
	if allow != "" {
		path := filepath.Join(t.TempDir(), "allow.txt")
		if err := os.WriteFile(path, []byte(allow), 0o600); err != nil {
			t.Fatal(err)
		}
		args[3] = path
	}
	code, err := run(context.Background(), args, &out)
	if err != nil {
		t.Fatalf("run: %v\n%s", err, out.String())
	}
	return code, out.String()
}

const survivors = `p.rego | default allow | drop-default | - | without the default, allow is undefined, and the test reads it with not
p.rego | allow#1 | delete | input.ok == true | (in this test: the gap the tool must find)
p.rego | level#1 | drop-body | - | no test reads level
`

func TestMutateFindsSurvivors(t *testing.T) {
	dir := writeDir(t, map[string]string{"p.rego": policy, "p_test.rego": policyTest})
	code, out := mutateDir(t, dir, "")
	if code != 1 {
		t.Errorf("exit %d with unlisted survivors, want 1", code)
	}
	for _, want := range []string{
		"p.rego:3: drop-default default allow",
		"p.rego:7: delete `input.ok == true` in allow#1",
		"p.rego:10: drop-body level#1",
		"p.rego: 8 mutants, 1 invalid; of 7 valid: 4 killed (57.1 %), 3 survived (0 equivalent, allowed)",
		"3 survivors are neither killed",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	// The killed ones are not reported as survivors.
	if strings.Contains(out, "SURVIVED "+dir+"/p.rego:6") || strings.Contains(out, "drop-body allow#1") {
		t.Errorf("a killed mutant reported as a survivor:\n%s", out)
	}
}

func TestMutateAllowList(t *testing.T) {
	dir := writeDir(t, map[string]string{"p.rego": policy, "p_test.rego": policyTest})
	if code, out := mutateDir(t, dir, survivors); code != 0 || strings.Contains(out, "SURVIVED") {
		t.Errorf("every survivor listed: exit %d, want 0:\n%s", code, out)
	}
	// A line that no survivor uses (here: killed by test_other) is stale.
	stale := survivors + "p.rego | allow#1 | delete | input.user == \"admin\" | wrongly thought equivalent\n"
	code, out := mutateDir(t, dir, stale)
	if code != 1 || !strings.Contains(out, "no longer survive") || !strings.Contains(out, `line 4: p.rego | allow#1 | delete | input.user == "admin"`) {
		t.Errorf("stale entry: exit %d, want 1 naming line 4:\n%s", code, out)
	}
}

func TestMutateRefusesFailingSuite(t *testing.T) {
	broken := strings.Replace(policyTest, `"bob"`, `"admin"`, 1)
	dir := writeDir(t, map[string]string{"p.rego": policy, "p_test.rego": broken})
	var out strings.Builder
	if _, err := run(context.Background(), []string{"-dir", dir, "-allow", ""}, &out); err == nil || !strings.Contains(err.Error(), "do not pass") {
		t.Fatalf("want an error for a failing suite, got %v\n%s", err, out.String())
	}
}

// Strict builtin errors: a mutant that only turns a deny into a builtin
// error is killed, as the engine fails such an evaluation.
func TestMutateStrictBuiltinErrors(t *testing.T) {
	src := "package t\n\nsmall if {\n\tis_number(input.n)\n\tinput.n / 1 < 10\n}\n"
	tst := "package t_test\n\nimport data.t\n\ntest_small if t.small with input as {\"n\": 1}\n\ntest_large if not t.small with input as {\"n\": 100}\n\ntest_string if not t.small with input as {\"n\": \"x\"}\n"
	dir := writeDir(t, map[string]string{"p.rego": src, "p_test.rego": tst})
	code, out := mutateDir(t, dir, "")
	if code != 0 || !strings.Contains(out, "5 killed") {
		t.Errorf("deleting is_number must be killed by the builtin error: exit %d\n%s", code, out)
	}
}

func TestParseAllowList(t *testing.T) {
	a, err := parseAllowList(strings.NewReader("# comment\n\na.rego | r#1 | delete | x | y | reason\n"), "l")
	if err != nil {
		t.Fatal(err)
	}
	if a.reasons["a.rego | r#1 | delete | x | y"] != "reason" {
		t.Errorf("an expression holding \" | \" keeps it: %v", a.reasons)
	}
	for _, bad := range []string{
		"a.rego | r#1 | delete | x\n",
		"a.rego | r#1 | delete | x | \n",
		"a.rego | r#1 | delete | x | r\na.rego | r#1 | delete | x | r\n",
	} {
		if _, err := parseAllowList(strings.NewReader(bad), "l"); err == nil {
			t.Errorf("%q: want an error", bad)
		}
	}
}

// The time bound ends the run with an error, never with mutants counted
// killed because their tests were cut short.
func TestMutateTimeBound(t *testing.T) {
	dir := writeDir(t, map[string]string{"p.rego": policy, "p_test.rego": policyTest})
	var out strings.Builder
	code, err := run(context.Background(), []string{"-dir", dir, "-allow", "", "-timeout", "1ns"}, &out)
	if err == nil || code != 2 || strings.Contains(out.String(), "killed") {
		t.Fatalf("want exit 2 with an error, got %d %v\n%s", code, err, out.String())
	}
}
