package exchange

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// ROLES_FILE is read from disk: a missing or malformed file is an error
// naming it, never an empty set of roles.
func TestLoadStaticRolesFile(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "roles.json")
	bad := filepath.Join(dir, "bad.json")
	if err := os.WriteFile(good, []byte(`{"users":{"oid-1":{"realm_roles":["admin"]}}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bad, []byte(`{"user":{}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	tenants := NewAppRoleTenants("72f988bf-0000-4000-8000-000000000001", nil)
	if s, err := LoadStaticRoles(good, tenants); err != nil || s == nil {
		t.Fatalf("a valid roles file: %v", err)
	}
	for _, path := range []string{filepath.Join(dir, "missing.json"), bad} {
		s, err := LoadStaticRoles(path, tenants)
		if err == nil || s != nil || !strings.Contains(err.Error(), "roles file") {
			t.Errorf("%s: %v, %v", filepath.Base(path), s, err)
		}
	}
}
