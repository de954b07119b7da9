package server

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/mcpguard/mcpguard/internal/config"
	"github.com/mcpguard/mcpguard/internal/policy"
	"github.com/mcpguard/mcpguard/internal/policy/policytest"
)

// lintPolicies is the served files of policies/ with files added.
func lintPolicies(t *testing.T, files map[string]string) string {
	return policytest.Copy(t, filepath.Join("..", "..", "policies"), files)
}

// fridayVeto is a veto in a package the server never reads.
const fridayVeto = "package authz\n\ndeny contains \"no budgets on Fridays\" if input.mcp.tool.name == \"approve_budget\"\n"

func lintConfig(t *testing.T, vars map[string]string) *config.Config {
	t.Helper()
	src := map[string]string{"ENVIRONMENT": "development", "ENABLE_AUTH": "false", "METRICS_ADDR": "off"}
	for k, v := range vars {
		src[k] = v
	}
	cfg, err := config.FromSource(func(name string) (string, bool) { v, ok := src[name]; return v, ok })
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// POLICY_STRICT=true: a lint finding refuses the start, and the error
// names it at its file and line.
func TestPolicyStrictRefusesStart(t *testing.T) {
	dir := lintPolicies(t, map[string]string{"friday.rego": fridayVeto})
	_, err := New(context.Background(), lintConfig(t, map[string]string{"POLICY_DIR": dir, "POLICY_STRICT": "true"}), Options{})
	var le *LintError
	if !errors.As(err, &le) {
		t.Fatalf("want a LintError, got %v", err)
	}
	want := filepath.Join(dir, "friday.rego") + ":3: unread-rule: "
	if len(le.Findings) != 1 || le.Findings[0].Check != policy.CheckUnreadRule || !strings.Contains(err.Error(), want) ||
		!strings.Contains(err.Error(), "POLICY_STRICT=true") {
		t.Fatalf("error: %v", err)
	}

	// The shipped policies start.
	s, err := New(context.Background(), lintConfig(t, map[string]string{"POLICY_DIR": filepath.Join("..", "..", "policies"), "POLICY_STRICT": "true"}), Options{})
	if err != nil {
		t.Fatalf("shipped policies under POLICY_STRICT=true: %v", err)
	}
	select {
	case <-s.Linted():
	default:
		t.Fatal("a strict start returns once the lint is done")
	}
}

// POLICY_STRICT=false: the server starts and logs each finding.
func TestPolicyLintLoggedWhenNotStrict(t *testing.T) {
	dir := lintPolicies(t, map[string]string{"friday.rego": fridayVeto})
	var logs syncBuffer
	s, err := New(context.Background(), lintConfig(t, map[string]string{"POLICY_DIR": dir, "POLICY_STRICT": "false"}),
		Options{Logger: slog.New(slog.NewJSONHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	<-s.Linted()
	if out := logs.String(); !strings.Contains(out, `"check":"unread-rule"`) || !strings.Contains(out, `"line":3`) {
		t.Fatalf("the finding is not logged:\n%s", out)
	}
}

// With ROLE_SOURCE=static, the start-up lint checks the catalog's roles
// against the roles file: a role it grants nobody is a finding.
func TestPolicyStrictChecksTheRolesFile(t *testing.T) {
	roles := filepath.Join(t.TempDir(), "roles.json")
	file := `{"users": {}, "app_roles": {"Reader": {"realm_roles": ["data_reader"]}, "Money": {"realm_roles": ["finance", "executive"]},
	  "Ops": {"realm_roles": ["admin"]}, "Writer": {"client_roles": {"api": ["writer"]}}}, "groups": {}, "apps": {}}`
	if err := os.WriteFile(roles, []byte(file), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := lintConfig(t, map[string]string{"POLICY_DIR": filepath.Join("..", "..", "policies"), "POLICY_STRICT": "true",
		"ROLE_SOURCE": "static", "ROLES_FILE": roles})
	_, err := New(context.Background(), cfg, Options{})
	var le *LintError
	if !errors.As(err, &le) || len(le.Findings) != 1 || le.Findings[0].Check != policy.CheckUnknownRole ||
		!strings.Contains(le.Findings[0].Message, `role "supervisor", which roles file `+roles+" does not list") {
		t.Fatalf("want an unknown-role finding for supervisor: %v", err)
	}
}

// Registered reads what tools.Register adds, with no configuration: the
// items the policy package's lint tests use as the shipped registrations.
func TestRegisteredNeedsNoConfiguration(t *testing.T) {
	r, err := Registered(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	var tools []string
	for _, x := range r.Tools {
		tools = append(tools, x.Name)
		if x.Annotations == nil {
			t.Errorf("tool %s: no annotations for the policy", x.Name)
		}
	}
	slices.Sort(tools)
	if want := []string{"admin_operation", "approve_budget", "get_current_user", "read_critical_data", "write_api_data"}; !slices.Equal(tools, want) ||
		!slices.Equal(r.Resources, []string{"data://server-info"}) || !slices.Equal(r.Templates, []string{"data://items/{item_id}"}) ||
		!slices.Equal(r.Prompts, []string{"summarize_access"}) {
		t.Fatalf("registered: %v %+v (update shippedRegistered in internal/policy/lint_test.go too)", tools, r)
	}
}

// The realm export and roles file readers.
func TestRoleRegistries(t *testing.T) {
	r, err := RealmExportRegistry(filepath.Join("..", "..", "test", "keycloak", "realm.json"))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(r.Realm, []string{"admin", "data_reader", "executive", "finance", "supervisor"}) || !slices.Equal(r.Clients["api"], []string{"writer"}) {
		t.Fatalf("realm export: %+v", r)
	}
	bad := filepath.Join(t.TempDir(), "roles.json")
	if err := os.WriteFile(bad, []byte(`{"app_roles": {"x": {"realm_role": ["a"]}}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	// A misspelt field grants nothing in the role source, which refuses it:
	// so does the registry.
	if _, err := RolesFileRegistry(bad); err == nil || !strings.Contains(err.Error(), "realm_role") {
		t.Fatalf("a roles file with an unknown field: %v", err)
	}
}
