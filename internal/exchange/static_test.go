package exchange

import (
	"context"
	"slices"
	"testing"

	"github.com/mcpguard/mcpguard/internal/authn"
)

func TestStaticRolesMergeEveryMatch(t *testing.T) {
	s, err := ParseStaticRoles([]byte(`{
		"users": {"A679F546-B040-5236-818B-9C5E0804D267": {"realm_roles": ["data_reader"]}},
		"app_roles": {"Finance.Approver": {"realm_roles": ["finance", "data_reader"]}},
		"groups": {"g1": {"client_roles": {"api": ["writer"]}}},
		"apps": {"app-1": {"realm_roles": ["agent"]}}
	}`))
	if err != nil {
		t.Fatal(err)
	}
	id := &authn.Identity{Kind: authn.KindUser, TenantID: "t", ObjectID: "a679f546-b040-5236-818b-9c5e0804d267",
		AppRoles: []string{"Finance.Approver"}, Groups: []string{"g1"}, AppID: "app-1"}
	a, err := s.Resolve(context.Background(), id, "")
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(a.Roles, []string{"agent", "data_reader", "finance"}) || !slices.Equal(a.ClientRoles["api"], []string{"writer"}) || a.Source != "static" {
		t.Fatalf("%+v", a)
	}
	none, _ := s.Resolve(context.Background(), &authn.Identity{Kind: authn.KindUser, ObjectID: "other"}, "")
	if len(none.Roles) != 0 || none.Roles == nil {
		t.Fatalf("an unknown caller gets roles: %+v", none)
	}
}

func TestStaticRolesRejectTypos(t *testing.T) {
	if _, err := ParseStaticRoles([]byte(`{"user": {}}`)); err == nil {
		t.Fatal("unknown field accepted")
	}
	if _, err := ParseStaticRoles([]byte(`{"users": {"x": {"realm_role": ["a"]}}}`)); err == nil {
		t.Fatal("unknown grant field accepted")
	}
}

func TestTokenRoles(t *testing.T) {
	a, _ := TokenRoles{}.Resolve(context.Background(), &authn.Identity{AppRoles: []string{"b", "a", "b"}}, "")
	if !slices.Equal(a.Roles, []string{"a", "b"}) || a.Source != "token" {
		t.Fatalf("%+v", a)
	}
}
