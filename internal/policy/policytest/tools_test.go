package policytest

import (
	"encoding/json"
	"testing"
)

// The figures the benchmarks and the load harness claim: the realistic
// caller is allowed 50 of 1,000 tools, the caller with every role all of
// them, and nobody is allowed a tool by a role it lacks.
func TestAllowed(t *testing.T) {
	three := []string{"role_00", "role_13", "role_27", "api.role_03"}
	for _, c := range []struct {
		tools int
		roles []string
		want  int
	}{
		{1000, three, 50},
		{1000, AllRoles(50), 1000},
		{8, AllRoles(50), 8},
		{1000, nil, 0},
		// tool_0000 requires role_00; tool_0001 role_01 or role_08; tool_0002
		// role_02 and role_03; tool_0003 the client role api/role_03.
		{4, []string{"role_00"}, 1},
		{4, []string{"role_08", "api.role_03"}, 2},
		{4, []string{"role_02"}, 0},
		{4, []string{"role_02", "role_03"}, 1},
	} {
		if got := Allowed(c.tools, 50, c.roles); got != c.want {
			t.Errorf("Allowed(%d, 50, %v) = %d, want %d", c.tools, c.roles, got, c.want)
		}
	}
}

// Every app role AllRoles names is one Roles maps.
func TestRolesMapsAllRoles(t *testing.T) {
	raw, err := Roles(3)
	if err != nil {
		t.Fatal(err)
	}
	var f struct {
		AppRoles map[string]struct {
			RealmRoles  []string            `json:"realm_roles"`
			ClientRoles map[string][]string `json:"client_roles"`
		} `json:"app_roles"`
	}
	if err := json.Unmarshal(raw, &f); err != nil {
		t.Fatal(err)
	}
	all := AllRoles(3)
	if len(f.AppRoles) != len(all) {
		t.Fatalf("%d app roles mapped, AllRoles names %d", len(f.AppRoles), len(all))
	}
	for _, r := range all {
		if _, ok := f.AppRoles[r]; !ok {
			t.Errorf("app role %s not mapped", r)
		}
	}
	if g := f.AppRoles["api.role_01"]; len(g.ClientRoles["api"]) != 1 || g.ClientRoles["api"][0] != "role_01" || len(g.RealmRoles) != 0 {
		t.Errorf("api.role_01 grants %+v", g)
	}
}
