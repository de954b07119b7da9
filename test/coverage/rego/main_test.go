package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func policyDir(t *testing.T, names ...string) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "policies")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	for _, n := range names {
		if err := os.WriteFile(filepath.Join(dir, n), []byte("package x\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// The report opa test writes: a well-covered test file must not lift a
// policy file under the minimum, as the average of --threshold does.
const report = `{"files": {
  "DIR/authz.rego": {"covered_lines": 65, "not_covered_lines": 35, "coverage": 65,
    "not_covered": [{"start": {"row": 52, "col": 1}, "end": {"row": 57, "col": 2}, "kinds": ["early_exit"]}]},
  "DIR/authz_test.rego": {"covered_lines": 900, "coverage": 100},
  "DIR/lib.rego": {"covered_lines": 40, "coverage": 100}
}, "covered_lines": 1005, "not_covered_lines": 35, "coverage": 96.6}`

func gate(t *testing.T, dir, rep string, min string) (int, string) {
	t.Helper()
	var out strings.Builder
	code, err := run([]string{"-min", min, dir}, strings.NewReader(strings.ReplaceAll(rep, "DIR", dir)), &out)
	if err != nil {
		t.Fatal(err)
	}
	return code, out.String()
}

func TestPerFileCoverage(t *testing.T) {
	dir := policyDir(t, "authz.rego", "authz_test.rego", "lib.rego", "data.json")
	code, out := gate(t, dir, report, "90")
	if code != 1 {
		t.Errorf("authz.rego at 65 %% passed a 90 %% gate (the average is 96.6 %%):\n%s", out)
	}
	for _, want := range []string{
		"authz.rego: 65.0 % of 100 lines (UNDER 90 %)",
		"authz.rego:52-57 (early_exit)",
		"lib.rego: 100.0 % of 40 lines (ok)",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "authz_test.rego") {
		t.Errorf("a test file was checked:\n%s", out)
	}
	if code, out := gate(t, dir, report, "60"); code != 0 {
		t.Errorf("every policy file over 60 %%: exit %d\n%s", code, out)
	}
}

// A policy file no test loads is missing from the report: that fails too.
func TestPolicyFileMissingFromReport(t *testing.T) {
	dir := policyDir(t, "authz.rego", "lib.rego", "extra.rego")
	code, out := gate(t, dir, report, "0")
	if code != 1 || !strings.Contains(out, "extra.rego: not in the coverage report") {
		t.Errorf("exit %d, want 1 naming extra.rego:\n%s", code, out)
	}
}

func TestRefusesBadInput(t *testing.T) {
	dir := policyDir(t, "authz.rego")
	for name, args := range map[string][]string{
		"no folder":    {"-min", "100"},
		"min too high": {"-min", "101", dir},
		"no policies":  {policyDir(t, "a_test.rego")},
	} {
		if _, err := run(args, strings.NewReader(`{"files": {}}`), &strings.Builder{}); err == nil {
			t.Errorf("%s: want an error", name)
		}
	}
	if _, err := run([]string{dir}, strings.NewReader("PASS: 3/3"), &strings.Builder{}); err == nil {
		t.Error("a report that is not JSON: want an error")
	}
}
