package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mcpguard/mcpguard/internal/policy"
	"github.com/mcpguard/mcpguard/internal/policy/policytest"
)

// policiesDir is the shipped policy folder, absolute: tests change the
// working directory.
func policiesDir(t *testing.T) string {
	t.Helper()
	dir, err := filepath.Abs(filepath.Join("..", "..", "policies"))
	if err != nil {
		t.Fatal(err)
	}
	return dir
}

func runCmd(t *testing.T, args ...string) (string, error) {
	t.Helper()
	var out, errb bytes.Buffer
	err := run(context.Background(), args, &out, &errb)
	return out.String() + errb.String(), err
}

// badPolicy is a copy of the shipped policies with a veto in a package the
// server never reads.
func badPolicy(t *testing.T) string {
	return policytest.Copy(t, policiesDir(t), map[string]string{
		"friday.rego": "package authz\n\ndeny contains \"no budgets on Fridays\" if input.mcp.tool.name == \"approve_budget\"\n",
	})
}

// policy lint reads no server configuration: a .env in the working
// directory whose settings would stop the server (Redis without an
// encryption key, Keycloak without its settings, a line that is no setting,
// production over plain http) does not stop the lint.
func TestPolicyLintNeedsNoServerConfiguration(t *testing.T) {
	policies := policiesDir(t)
	wd := t.TempDir()
	env := "ENVIRONMENT=production\nAZURE_BASE_URL=http://mcp.example.com\nREDIS_URL=redis://127.0.0.1:1\nROLE_SOURCE=keycloak\n"
	if err := os.WriteFile(filepath.Join(wd, ".env"), []byte(env), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Chdir(wd)
	t.Setenv("ENV_FILE", "")
	os.Unsetenv("ENV_FILE")
	out, err := runCmd(t, "policy", "lint", "--policy-dir", policies)
	if err != nil || !strings.Contains(out, "no findings") {
		t.Fatalf("lint of the shipped policies beside a bad .env: %v\n%s", err, out)
	}
	// A .env line that is no setting at all.
	if err := os.WriteFile(filepath.Join(wd, ".env"), []byte("this is not a setting\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := runCmd(t, "policy", "lint", "--policy-dir", policies); err != nil {
		t.Fatalf("lint beside an unreadable .env: %v\n%s", err, out)
	}
}

// Unknown flags and positional arguments are usage errors (exit status 2);
// findings exit 1 and name file:line; a clean folder exits 0.
func TestPolicyLintExitStatus(t *testing.T) {
	policies := policiesDir(t)
	for _, args := range [][]string{
		{"policy", "lint", "--policy-dir", policies, "--strict"},
		{"policy", "lint", policies},
		{"policy", "lint", "--policy-dir", policies, "extra"},
		{"policy", "lint", "--dir", policies},
	} {
		if out, err := runCmd(t, args...); exitCode(err) != 2 {
			t.Errorf("%q: want exit status 2, got %d (%v)\n%s", args, exitCode(err), err, out)
		}
	}
	if out, err := runCmd(t, "policy", "lint", "--policy-dir", policies); exitCode(err) != 0 {
		t.Fatalf("shipped policies: exit %d: %v\n%s", exitCode(err), err, out)
	}
	dir := badPolicy(t)
	out, err := runCmd(t, "policy", "lint", "--policy-dir", dir)
	if exitCode(err) != 1 {
		t.Fatalf("a policy with a finding: want exit status 1, got %d (%v)\n%s", exitCode(err), err, out)
	}
	if want := filepath.Join(dir, "friday.rego") + ":3: unread-rule: "; !strings.Contains(out, want) {
		t.Fatalf("output lacks %q:\n%s", want, out)
	}
}

// --json prints the findings as data, an empty list when clean.
func TestPolicyLintJSON(t *testing.T) {
	var got struct {
		PolicyDir string           `json:"policy_dir"`
		Findings  []policy.Finding `json:"findings"`
	}
	out, err := runCmd(t, "policy", "lint", "--json", "--policy-dir", badPolicy(t))
	if exitCode(err) != 1 {
		t.Fatalf("exit %d: %v", exitCode(err), err)
	}
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, out)
	}
	if len(got.Findings) != 1 || got.Findings[0].Check != policy.CheckUnreadRule || got.Findings[0].Line != 3 ||
		got.Findings[0].Severity != policy.SeverityError {
		t.Fatalf("findings: %+v", got.Findings)
	}
	out, err = runCmd(t, "policy", "lint", "--json", "--policy-dir", policiesDir(t))
	if err != nil || !strings.Contains(out, `"findings": []`) {
		t.Fatalf("clean: %v\n%s", err, out)
	}
}

// --roles-file and --realm-export check the catalog's role names: the
// repository's Keycloak realm defines every role the shipped catalog names;
// a realm without one is a finding at the row.
func TestPolicyLintRoleSources(t *testing.T) {
	policies := policiesDir(t)
	realm := filepath.Join("..", "..", "test", "keycloak", "realm.json")
	roles := filepath.Join("..", "..", "test", "fixtures", "roles.json")
	if out, err := runCmd(t, "policy", "lint", "--policy-dir", policies, "--realm-export", realm, "--roles-file", roles); err != nil {
		t.Fatalf("shipped policies against the test realm and roles file: %v\n%s", err, out)
	}
	small := filepath.Join(t.TempDir(), "realm.json")
	doc := `{"realm": "mcp", "roles": {"realm": [{"name": "data_reader"}, {"name": "finance"}, {"name": "executive"}, {"name": "admin"}], "client": {"api": [{"name": "reader"}]}}}`
	if err := os.WriteFile(small, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := runCmd(t, "policy", "lint", "--policy-dir", policies, "--realm-export", small)
	if exitCode(err) != 1 {
		t.Fatalf("want exit 1: %v\n%s", err, out)
	}
	for _, want := range []string{`role "supervisor", which realm export`, `role "writer" of client "api", which realm export`, "data.json:"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if out, err := runCmd(t, "policy", "lint", "--policy-dir", policies, "--realm-export", roles); err == nil || !strings.Contains(err.Error(), "not a Keycloak realm export") {
		t.Errorf("a roles file given as a realm export: %v\n%s", err, out)
	}
}

// policy roles prints a registry to save as policies/roles.json; the lint
// of a folder holding it is clean.
func TestPolicyRolesGeneratesTheRegistry(t *testing.T) {
	out, err := runCmd(t, "policy", "roles", "--roles-file", filepath.Join("..", "..", "test", "fixtures", "roles.json"))
	if err != nil {
		t.Fatal(err)
	}
	want := `{"mcp":{"roles":{"realm":["admin","data_reader","executive","finance","supervisor"],"clients":{"api":["writer"]}}}}`
	var compact bytes.Buffer
	if err := json.Compact(&compact, []byte(out)); err != nil || compact.String() != want {
		t.Fatalf("got %s (%v), want %s", out, err, want)
	}
	dir := badPolicy(t)
	if err := os.Remove(filepath.Join(dir, "friday.rego")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "roles.json"), []byte(out), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := runCmd(t, "policy", "lint", "--policy-dir", dir); err != nil {
		t.Fatalf("the shipped policies with the generated registry: %v\n%s", err, out)
	}
	for _, args := range [][]string{{"policy", "roles"}, {"policy", "roles", "--roles-file", "a", "--realm-export", "b"}} {
		if _, err := runCmd(t, args...); exitCode(err) != 2 {
			t.Errorf("%q: want exit status 2, got %v", args, err)
		}
	}
}
