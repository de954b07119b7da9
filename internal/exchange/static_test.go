package exchange

import (
	"context"
	"slices"
	"testing"

	"github.com/mcpguard/mcpguard/internal/authn"
)

const (
	homeTenant    = "aaaaaaaa-1111-4111-8111-111111111111"
	partnerTenant = "bbbbbbbb-2222-4222-8222-222222222222"
)

var home = NewAppRoleTenants(homeTenant, nil)

func TestStaticRolesMergeEveryMatch(t *testing.T) {
	s, err := ParseStaticRoles([]byte(`{
		"users": {"A679F546-B040-5236-818B-9C5E0804D267": {"realm_roles": ["data_reader"]}},
		"app_roles": {"Finance.Approver": {"realm_roles": ["finance", "data_reader"]}},
		"groups": {"g1": {"client_roles": {"api": ["writer"]}}},
		"apps": {"app-1": {"realm_roles": ["agent"]}}
	}`), home)
	if err != nil {
		t.Fatal(err)
	}
	id := &authn.Identity{Kind: authn.KindUser, TenantID: homeTenant, ObjectID: "a679f546-b040-5236-818b-9c5e0804d267",
		AppRoles: []string{"Finance.Approver"}, Groups: []string{"g1"}, AppID: "app-1"}
	a, err := s.Resolve(context.Background(), id, "")
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(a.Roles, []string{"data_reader", "finance"}) || !slices.Equal(a.ClientRoles["api"], []string{"writer"}) || a.Source != "static" {
		t.Fatalf("%+v", a)
	}
	app := &authn.Identity{Kind: authn.KindApp, TenantID: homeTenant, ObjectID: "sp", AppID: "app-1", AppRoles: []string{"Finance.Approver"}}
	if a, _ := s.Resolve(context.Background(), app, ""); !slices.Equal(a.Roles, []string{"agent", "data_reader", "finance"}) {
		t.Fatalf("app-only caller: %+v", a)
	}
	none, _ := s.Resolve(context.Background(), &authn.Identity{Kind: authn.KindUser, ObjectID: "other"}, "")
	if len(none.Roles) != 0 || none.Roles == nil {
		t.Fatalf("an unknown caller gets roles: %+v", none)
	}
}

// TestStaticAppsForAppOnlyCallers: an `apps` entry gives roles to the app
// calling as itself, not to a user signed in through that client app (a
// delegated token carries the same azp).
func TestStaticAppsForAppOnlyCallers(t *testing.T) {
	s, err := ParseStaticRoles([]byte(`{"apps": {"app-1": {"realm_roles": ["admin"]}}}`), home)
	if err != nil {
		t.Fatal(err)
	}
	user := &authn.Identity{Kind: authn.KindUser, TenantID: homeTenant, ObjectID: "u", AppID: "app-1", Scopes: []string{"read"}}
	if a, _ := s.Resolve(context.Background(), user, ""); len(a.Roles) != 0 {
		t.Fatalf("a delegated token of the client app got the app's roles: %v", a.Roles)
	}
	app := &authn.Identity{Kind: authn.KindApp, TenantID: homeTenant, ObjectID: "sp", AppID: "app-1"}
	if a, _ := s.Resolve(context.Background(), app, ""); !slices.Equal(a.Roles, []string{"admin"}) {
		t.Fatalf("the app itself: %v", a.Roles)
	}
}

// TestAppRolesFromTrustedTenantsOnly: a partner tenant admitted to call may
// assign any of the API's app roles to its own users; its app roles count
// only when the operator trusts that tenant's assignments.
func TestAppRolesFromTrustedTenantsOnly(t *testing.T) {
	file := []byte(`{"app_roles": {"admin": {"realm_roles": ["admin"]}},
		"users": {"` + partnerTenant + `/p-user": {"realm_roles": ["data_reader"]}}}`)
	partner := &authn.Identity{Kind: authn.KindUser, TenantID: partnerTenant, ObjectID: "p-user", AppRoles: []string{"admin"}}
	homeUser := &authn.Identity{Kind: authn.KindUser, TenantID: homeTenant, ObjectID: "h", AppRoles: []string{"admin"}}
	for _, c := range []struct {
		name          string
		tenants       AppRoleTenants
		partner, home []string
	}{
		{"home tenant only", NewAppRoleTenants(homeTenant, nil), nil, []string{"admin"}},
		{"home tenant id in capitals", NewAppRoleTenants("AAAAAAAA-1111-4111-8111-111111111111", nil), nil, []string{"admin"}},
		{"partner trusted", NewAppRoleTenants(homeTenant, []string{"BBBBBBBB-2222-4222-8222-222222222222"}), []string{"admin"}, []string{"admin"}},
		{"multi-tenant, none listed", NewAppRoleTenants("organizations", nil), nil, nil},
		{"multi-tenant, home listed", NewAppRoleTenants("organizations", []string{homeTenant}), nil, []string{"admin"}},
		{"zero value", AppRoleTenants{}, nil, nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			tr := TokenRoles{Tenants: c.tenants}
			a, _ := tr.Resolve(context.Background(), partner, "")
			b, _ := tr.Resolve(context.Background(), homeUser, "")
			if !slices.Equal(a.Roles, nz(c.partner)) || !slices.Equal(b.Roles, nz(c.home)) {
				t.Fatalf("token source: partner %v, home %v", a.Roles, b.Roles)
			}
			s, err := ParseStaticRoles(file, c.tenants)
			if err != nil {
				t.Fatal(err)
			}
			// The partner user's own users entry counts whatever the trust.
			a, _ = s.Resolve(context.Background(), partner, "")
			want := append([]string{}, c.partner...)
			want = append(want, "data_reader")
			slices.Sort(want)
			if !slices.Equal(a.Roles, want) {
				t.Fatalf("static source: partner %v, want %v", a.Roles, want)
			}
			b, _ = s.Resolve(context.Background(), homeUser, "")
			if !slices.Equal(b.Roles, nz(c.home)) {
				t.Fatalf("static source: home %v", b.Roles)
			}
		})
	}
}

func nz(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

func TestStaticRolesRejectTypos(t *testing.T) {
	if _, err := ParseStaticRoles([]byte(`{"user": {}}`), home); err == nil {
		t.Fatal("unknown field accepted")
	}
	if _, err := ParseStaticRoles([]byte(`{"users": {"x": {"realm_role": ["a"]}}}`), home); err == nil {
		t.Fatal("unknown grant field accepted")
	}
}

func TestTokenRoles(t *testing.T) {
	a, _ := TokenRoles{Tenants: home}.Resolve(context.Background(), &authn.Identity{TenantID: homeTenant, AppRoles: []string{"b", "a", "b"}}, "")
	if !slices.Equal(a.Roles, []string{"a", "b"}) || a.Source != "token" {
		t.Fatalf("%+v", a)
	}
}
