package policytest

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Copy copies the served files of policiesDir (its .rego and .json files,
// tests left out) into a temporary folder, then writes files over them: a
// path relative to the folder (sub-folders made as needed) and its content,
// or "" to delete the file. It is a policy folder as a team edits it.
func Copy(t testing.TB, policiesDir string, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	paths, err := filepath.Glob(filepath.Join(policiesDir, "*"))
	if err != nil || len(paths) == 0 {
		t.Fatalf("no policy files in %s: %v", policiesDir, err)
	}
	for _, p := range paths {
		if strings.HasSuffix(p, "_test.rego") || !(strings.HasSuffix(p, ".rego") || strings.HasSuffix(p, ".json")) {
			continue
		}
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, filepath.Base(p)), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	for name, body := range files {
		p := filepath.Join(dir, filepath.FromSlash(name))
		if body == "" {
			if err := os.Remove(p); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}
