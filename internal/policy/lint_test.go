package policy_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mcpguard/mcpguard/internal/policy"
	"github.com/mcpguard/mcpguard/internal/policy/policytest"
)

// shippedRegistered is what tools.Register registers (the server package
// test TestLintRegisteredMatchesServer keeps the two equal).
func shippedRegistered() *policy.Registered {
	r := &policy.Registered{
		Resources: []string{"data://server-info"},
		Templates: []string{"data://items/{item_id}"},
		Prompts:   []string{"summarize_access"},
	}
	for _, n := range []string{"get_current_user", "read_critical_data", "approve_budget", "admin_operation", "write_api_data"} {
		r.Tools = append(r.Tools, policy.RegisteredTool{Name: n, Annotations: policy.MustFragment(map[string]any{})})
	}
	return r
}

// lintCopy is the served files of policies/ with files written over them
// ("" deletes one).
func lintCopy(t *testing.T, files map[string]string) string {
	return policytest.Copy(t, "../../policies", files)
}

// shippedData is policies/data.json with edit applied to its text.
func shippedData(t *testing.T, old, new string) string {
	t.Helper()
	b, err := os.ReadFile("../../policies/data.json")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), old) {
		t.Fatalf("policies/data.json no longer holds %q: update the test", old)
	}
	return strings.Replace(string(b), old, new, 1)
}

func lint(t *testing.T, dir string, opts policy.LintOptions) []policy.Finding {
	t.Helper()
	ctx := context.Background()
	e, err := policy.New(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	fs, err := e.Lint(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	return fs
}

func withRegistered() policy.LintOptions {
	return policy.LintOptions{Registered: shippedRegistered()}
}

// lineOf is the 1-based line of the first line of file holding s.
func lineOf(t *testing.T, file, s string) int {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	for i, ln := range strings.Split(string(b), "\n") {
		if strings.Contains(ln, s) {
			return i + 1
		}
	}
	t.Fatalf("%s holds no %q", file, s)
	return 0
}

// wantFinding fails unless exactly one finding has check, file, line and a
// message holding each of msg; it returns that finding.
func wantFinding(t *testing.T, fs []policy.Finding, check, file string, line int, msg ...string) policy.Finding {
	t.Helper()
	var hits []policy.Finding
	for _, f := range fs {
		if f.Check != check || f.File != file || f.Line != line {
			continue
		}
		ok := true
		for _, m := range msg {
			ok = ok && strings.Contains(f.Message, m)
		}
		if ok {
			hits = append(hits, f)
		}
	}
	if len(hits) != 1 {
		t.Fatalf("want one %s finding at %s:%d with %q, got %d in:\n%s", check, file, line, msg, len(hits), show(fs))
	}
	return hits[0]
}

func show(fs []policy.Finding) string {
	var b strings.Builder
	for _, f := range fs {
		b.WriteString("  " + f.String() + "\n")
	}
	return b.String()
}

// The shipped policies, checked against what the server registers and
// against the repository's roles file and Keycloak realm: no finding.
func TestLintShippedPoliciesClean(t *testing.T) {
	opts := withRegistered()
	opts.Roles = []*policy.RoleRegistry{{Source: "test registry",
		Realm: []string{"admin", "data_reader", "executive", "finance", "supervisor"}, Clients: map[string][]string{"api": {"writer"}}}}
	if fs := lint(t, "../../policies", opts); len(fs) != 0 {
		t.Fatalf("the shipped policies have lint findings:\n%s", show(fs))
	}
}

// A deny rule (or another rule the decision reads) written in a package the
// server does not read: Rego compiles it, tests of that package pass, and
// the server never evaluates it.
func TestLintRulesOutsideTheLoadedPaths(t *testing.T) {
	for _, tc := range []struct{ name, pkg, path string }{
		{"other package", "authz", "data.authz.deny"},
		{"sub-package", "mcp.authz.extra", "data.mcp.authz.extra.deny"},
		{"the lib package", "mcp.lib.vetoes", "data.mcp.lib.vetoes.deny"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src := "package " + tc.pkg + "\n\n# Budgets over 10,000 need the CFO.\ndeny contains \"needs cfo\" if {\n\tinput.mcp.tool.name == \"approve_budget\"\n\tinput.mcp.tool.arguments.amount > 10000\n}\n\ntool_allowed(name) if name == \"approve_budget\"\n"
			dir := lintCopy(t, map[string]string{"budget.rego": src})
			fs := lint(t, dir, withRegistered())
			file := filepath.Join(dir, "budget.rego")
			wantFinding(t, fs, policy.CheckUnreadRule, file, 4, tc.path, "data.mcp.authz.deny")
			wantFinding(t, fs, policy.CheckUnreadRule, file, 9, "data.mcp.authz.tool_allowed")
			if len(fs) != 2 {
				t.Fatalf("want two findings:\n%s", show(fs))
			}
		})
	}
	// The same rule in package mcp.authz, in a file of its own: read.
	src := "package mcp.authz\n\ndeny contains \"needs cfo\" if {\n\tinput.mcp.tool.name == \"approve_budget\"\n\tinput.mcp.tool.arguments.amount > 10000\n}\n"
	if fs := lint(t, lintCopy(t, map[string]string{"budget.rego": src}), withRegistered()); len(fs) != 0 {
		t.Fatalf("a veto in package mcp.authz is read:\n%s", show(fs))
	}
}

// A module nothing the server asks refers to: a helper package no rule
// imports.
func TestLintUnreadModule(t *testing.T) {
	src := "package mcp.helpers\n\nweekend if time.weekday(input.request.time_ns) in {\"Saturday\", \"Sunday\"}\n"
	dir := lintCopy(t, map[string]string{"helpers.rego": src})
	fs := lint(t, dir, withRegistered())
	wantFinding(t, fs, policy.CheckUnreadModule, filepath.Join(dir, "helpers.rego"), 1, "mcp.helpers")
	if len(fs) != 1 {
		t.Fatalf("want one finding:\n%s", show(fs))
	}
}

// A data file in a sub-folder loads under the folder's name (OPA's loader),
// so data/x/data.json is data.x: the catalog rows in it are never read.
func TestLintDataInSubFolder(t *testing.T) {
	rows := `{"mcp": {"catalog": {"tools": {"approve_budget": {"require_role": "finance"}}}}}`
	dir := lintCopy(t, map[string]string{"extra/data.json": rows})
	fs := lint(t, dir, withRegistered())
	wantFinding(t, fs, policy.CheckUnreadData, filepath.Join(dir, "extra", "data.json"), 1, "loads under data.extra")
	if len(fs) != 1 {
		t.Fatalf("want one finding:\n%s", show(fs))
	}
}

// Data under data.mcp that no rule reads (a misspelt section), and data
// beside data.mcp.
func TestLintUnreadDataKeys(t *testing.T) {
	data := shippedData(t, `"mcp": {`, "\"mcp\": {\n    \"catalogue\": {\"tools\": {}},")
	data = strings.Replace(data, "{\n  \"mcp\"", "{\n  \"settings\": {\"strict\": true},\n  \"mcp\"", 1)
	dir := lintCopy(t, map[string]string{"data.json": data})
	file := filepath.Join(dir, "data.json")
	fs := lint(t, dir, withRegistered())
	wantFinding(t, fs, policy.CheckUnreadData, file, lineOf(t, file, `"catalogue"`), "data.mcp.catalogue is never read", "data.mcp.catalog")
	wantFinding(t, fs, policy.CheckUnreadData, file, lineOf(t, file, `"settings"`), "data.settings is never read")
	if len(fs) != 2 {
		t.Fatalf("want two findings:\n%s", show(fs))
	}
}

// A veto that holds for every request refuses everything; one that holds
// for none is dead. A working-hours veto (time.now_ns) and an argument veto
// are neither, whatever the time of the lint.
func TestLintVetoes(t *testing.T) {
	src := `package mcp.authz

deny contains "maintenance window" if {
	some _ in data.mcp.catalog.tools
}

deny contains "typo in the data path" if {
	data.mcp.catalog.tool.approve_budget
	input.mcp.tool.name == "approve_budget"
}

deny contains "outside working hours" if {
	input.mcp.tool.name == "approve_budget"
	[hour, _, _] := time.clock([time.now_ns(), "Europe/Paris"])
	hour < 8
}

deny contains "needs cfo" if {
	input.mcp.tool.name == "approve_budget"
	input.mcp.tool.arguments.amount > 10000
	not "cfo" in input.authorization.roles
}
`
	dir := lintCopy(t, map[string]string{"vetoes.rego": src})
	file := filepath.Join(dir, "vetoes.rego")
	fs := lint(t, dir, withRegistered())
	wantFinding(t, fs, policy.CheckVetoAlways, file, 3, "every request")
	f := wantFinding(t, fs, policy.CheckVetoNever, file, 7, "never fire")
	if f.Severity != policy.SeverityWarning {
		t.Errorf("a veto that never fires is a warning: %+v", f)
	}
	if len(fs) != 2 {
		t.Fatalf("want two findings:\n%s", show(fs))
	}
}

// Registered items no rule can allow (the unreachable check of before), and
// a resource template or prompt without a catalog row.
func TestLintRegisteredWithoutRows(t *testing.T) {
	dir := lintCopy(t, map[string]string{"data.json": shippedData(t, `"admin_operation": {"require_any_role": ["admin", "supervisor"]},`, "")})
	reg := shippedRegistered()
	reg.Templates = append(reg.Templates, "data://reports/{year}/{name}")
	reg.Prompts = append(reg.Prompts, "draft_reply")
	fs := lint(t, dir, policy.LintOptions{Registered: reg})
	wantFinding(t, fs, policy.CheckUnreachable, "", 0, `tool "admin_operation": no rule can ever allow`, `catalog.tools has no row "admin_operation"`)
	wantFinding(t, fs, policy.CheckUnreachable, "", 0, `prompt "draft_reply": no rule can ever allow`, "catalog.prompts has no row")
	wantFinding(t, fs, policy.CheckUnreachable, "", 0, `resource template "data://reports/{year}/{name}"`, `"data://reports/x/x"`)
	wantFinding(t, fs, policy.CheckNoRow, "", 0, `resource template "data://reports/{year}/{name}" has no row`)
	if len(fs) != 4 {
		t.Fatalf("want four findings:\n%s", show(fs))
	}
}

// A template whose reads some row allows (a broad glob) but that has no row
// of its own is never listed: no-row alone.
func TestLintTemplateReadableWithoutRow(t *testing.T) {
	dir := lintCopy(t, map[string]string{"data.json": shippedData(t, `"match": "data://items/*"`, `"match": "data://**"`)})
	reg := shippedRegistered()
	reg.Templates = append(reg.Templates, "data://reports/{name}")
	fs := lint(t, dir, policy.LintOptions{Registered: reg})
	wantFinding(t, fs, policy.CheckNoRow, "", 0, `"data://reports/{name}"`)
	if len(fs) != 1 {
		t.Fatalf("want one finding:\n%s", show(fs))
	}
}

// Rows that name nothing registered: a misspelt tool, a resource URI no
// resource or template has, a template keyed by its glob instead of its URI
// template, a prompt. A resource row for a URI of a registered template is
// not one.
func TestLintOrphanRows(t *testing.T) {
	data := shippedData(t, `"get_current_user": {"allow_authenticated": true},`,
		"\"get_current_user\": {\"allow_authenticated\": true},\n        \"aprove_budget\": {\"require_role\": \"finance\"},")
	data = strings.Replace(data, `"data://server-info": {"allow_authenticated": true}`,
		"\"data://server-info\": {\"allow_authenticated\": true},\n        \"data://items/42\": {\"require_role\": \"admin\"},\n        \"data://nothing\": {\"allow_authenticated\": true}", 1)
	data = strings.Replace(data, `"data://items/{item_id}": {`, "\"data://items/*\": {\"match\": \"data://items/*\", \"require_role\": \"admin\"},\n        \"data://items/{item_id}\": {", 1)
	data = strings.Replace(data, `"summarize_access": {"allow_authenticated": true}`, "\"summarize_access\": {\"allow_authenticated\": true},\n        \"summarise_access\": {\"allow_authenticated\": true}", 1)
	dir := lintCopy(t, map[string]string{"data.json": data})
	file := filepath.Join(dir, "data.json")
	fs := lint(t, dir, withRegistered())
	for _, row := range []struct{ key, what string }{
		{`"aprove_budget"`, "no registered tool"},
		{`"data://nothing"`, "no registered resource"},
		{`"data://items/*"`, "no registered resource template"},
		{`"summarise_access"`, "no registered prompt"},
	} {
		f := wantFinding(t, fs, policy.CheckOrphanRow, file, lineOf(t, file, row.key+":"), row.what)
		if f.Severity != policy.SeverityWarning {
			t.Errorf("an orphan row is a warning: %+v", f)
		}
	}
	if len(fs) != 4 {
		t.Fatalf("want four findings:\n%s", show(fs))
	}
	// Without what the server registers, rows are not checked against it.
	if fs := lint(t, dir, policy.LintOptions{}); len(fs) != 0 {
		t.Fatalf("no registered items, no orphan rows:\n%s", show(fs))
	}
}

// The malformed rows data.mcp.authz.catalog_errors names, at their line.
func TestLintMalformedRowAtItsLine(t *testing.T) {
	dir := lintCopy(t, map[string]string{"data.json": shippedData(t, `"approve_budget": {"require_all_roles": ["finance", "executive"]}`,
		`"approve_budget": {"require_all_roles": ["finance", "executive"], "require_scope": ["write"]}`)})
	file := filepath.Join(dir, "data.json")
	fs := lint(t, dir, withRegistered())
	wantFinding(t, fs, policy.CheckCatalogRow, file, lineOf(t, file, `"approve_budget"`), "require_scope")
	wantFinding(t, fs, policy.CheckUnreachable, file, lineOf(t, file, `"approve_budget"`), `tool "approve_budget": no rule`)
	if len(fs) != 2 {
		t.Fatalf("want two findings:\n%s", show(fs))
	}
}

// registry is a data.mcp.roles document, as policies/roles.json.
const registry = `{
  "mcp": {
    "roles": {
      "realm": ["admin", "data_reader", "executive", "finance", "supervisor"],
      "clients": {"api": ["writer"]}
    }
  }
}
`

// With a roles registry (data.mcp.roles, here in roles.json beside
// data.json), every role a row or a rule names must be in it: a misspelt
// realm role, a client role, a role a veto tests with "in", a decorator's.
func TestLintUnknownRoles(t *testing.T) {
	data := shippedData(t, `{"require_role": "data_reader"}`, `{"require_role": "data_raeder"}`)
	data = strings.Replace(data, `"role": "writer"`, `"role": "writter"`, 1)
	veto := `package mcp.authz

import data.mcp.lib

deny contains "budgets over 10,000 need the CFO" if {
	input.mcp.tool.name == "approve_budget"
	input.mcp.tool.arguments.amount > 10000
	not "cfo" in input.authorization.roles
}

deny contains "destructive tools are for admins" if {
	input.mcp.tool.annotations.destructiveHint == true
	not lib.require_any_role(["admin", "sre"])
}

deny contains "writes need the api auditor" if {
	input.mcp.tool.name == "write_api_data"
	not "auditor" in input.authorization.client_roles.api
}
`
	dir := lintCopy(t, map[string]string{"data.json": data, "roles.json": registry, "vetoes.rego": veto})
	file, rego := filepath.Join(dir, "data.json"), filepath.Join(dir, "vetoes.rego")
	fs := lint(t, dir, withRegistered())
	wantFinding(t, fs, policy.CheckUnknownRole, file, lineOf(t, file, "data_raeder"), `catalog.tools["read_critical_data"].require_role names role "data_raeder", which data.mcp.roles does not list`)
	wantFinding(t, fs, policy.CheckUnknownRole, file, lineOf(t, file, "writter"), `role "writter" of client "api"`)
	wantFinding(t, fs, policy.CheckUnknownRole, rego, 8, `rule mcp.authz.deny names role "cfo"`)
	wantFinding(t, fs, policy.CheckUnknownRole, rego, 13, `role "sre"`)
	wantFinding(t, fs, policy.CheckUnknownRole, rego, 18, `role "auditor" of client "api"`)
	// Only the registry finds them: a caller could hold a role of any name,
	// so the misspelt rows are not unreachable.
	if len(fs) != 5 {
		t.Fatalf("want five findings:\n%s", show(fs))
	}
	// Without a registry, role names are not checked.
	dir = lintCopy(t, map[string]string{"vetoes.rego": veto})
	if fs := lint(t, dir, withRegistered()); len(fs) != 0 {
		t.Fatalf("no registry, no role findings:\n%s", show(fs))
	}
}

// A registry from outside the policy (a roles file, a realm export): the
// catalog's roles are checked against it, and so is data.mcp.roles.
func TestLintRolesAgainstAnExternalRegistry(t *testing.T) {
	ext := &policy.RoleRegistry{Source: "realm export realm.json", Realm: []string{"data_reader", "finance", "executive", "admin"},
		Clients: map[string][]string{"api": {"writer"}}}
	opts := withRegistered()
	opts.Roles = []*policy.RoleRegistry{ext}
	// No data.mcp.roles: the export is the registry.
	fs := lint(t, lintCopy(t, nil), opts)
	f := wantFinding(t, fs, policy.CheckUnknownRole, fs[0].File, fs[0].Line, `"supervisor", which realm export realm.json does not list`)
	if filepath.Base(f.File) != "data.json" || f.Line == 0 {
		t.Errorf("want the row's place: %+v", f)
	}
	if len(fs) != 1 {
		t.Fatalf("want one finding:\n%s", show(fs))
	}
	// With data.mcp.roles: the registry's own roles must be in the export.
	dir := lintCopy(t, map[string]string{"roles.json": registry})
	roles := filepath.Join(dir, "roles.json")
	fs = lint(t, dir, opts)
	wantFinding(t, fs, policy.CheckRolesRegistry, roles, lineOf(t, roles, `"realm"`), `data.mcp.roles lists role "supervisor", which realm export realm.json does not`)
	wantFinding(t, fs, policy.CheckUnknownRole, filepath.Join(dir, "data.json"), lineOf(t, filepath.Join(dir, "data.json"), "supervisor"), "realm export realm.json")
	if len(fs) != 2 {
		t.Fatalf("want two findings:\n%s", show(fs))
	}
}

// A data.mcp.roles of another shape is a finding, not a registry every
// role is missing from.
func TestLintMalformedRegistry(t *testing.T) {
	for _, tc := range []struct{ name, doc, want string }{
		{"a list", `{"mcp": {"roles": ["admin"]}}`, "not an object"},
		{"unknown key", `{"mcp": {"roles": {"realm": ["admin"], "client": {"api": ["writer"]}}}}`, `unknown key "client"`},
		{"not names", `{"mcp": {"roles": {"realm": ["admin", 7]}}}`, "realm[1] is not a string"},
		{"clients not lists", `{"mcp": {"roles": {"realm": [], "clients": {"api": "writer"}}}}`, "roles.clients.api is not a list"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fs := lint(t, lintCopy(t, map[string]string{"roles.json": tc.doc}), withRegistered())
			if len(fs) != 1 || fs[0].Check != policy.CheckRolesRegistry || !strings.Contains(fs[0].Message, tc.want) ||
				filepath.Base(fs[0].File) != "roles.json" {
				t.Fatalf("want one roles-registry finding in roles.json with %q:\n%s", tc.want, show(fs))
			}
		})
	}
}

// The other rules the decision module reads from mcp.authz count as
// decision rules too: allow_unauthenticated in another package is a
// finding.
func TestLintEveryExtensionPoint(t *testing.T) {
	src := "package authz\n\nallow_unauthenticated := true\n"
	dir := lintCopy(t, map[string]string{"open.rego": src})
	fs := lint(t, dir, withRegistered())
	wantFinding(t, fs, policy.CheckUnreadRule, filepath.Join(dir, "open.rego"), 3, "data.mcp.authz.allow_unauthenticated")
	if len(fs) != 1 {
		t.Fatalf("want one finding:\n%s", show(fs))
	}
}

// YAML data files load like JSON ones: a top-level key nothing reads is
// found at its line.
func TestLintUnreadYAMLData(t *testing.T) {
	dir := lintCopy(t, map[string]string{"settings.yaml": "# team settings\nbudget_limits:\n  cfo: 10000\n"})
	wantFinding(t, lint(t, dir, withRegistered()), policy.CheckUnreadData, filepath.Join(dir, "settings.yaml"), 2, "data.budget_limits")
}
