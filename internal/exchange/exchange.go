// Package exchange turns a verified Entra identity into the caller's roles:
// the authorization part of the policy input. Roles come from a source: a
// static roles file (ROLE_SOURCE=static), the token's own app roles
// (ROLE_SOURCE=token), or Keycloak by token exchange (ROLE_SOURCE=keycloak).
package exchange

import (
	"context"
	"errors"
	"slices"
	"time"

	"github.com/mcpguard/mcpguard/internal/authn"
)

// Authorization is what a source says the caller may be: roles, not decisions.
type Authorization struct {
	// Source names where the roles came from: keycloak, static, token or none.
	Source string `json:"source"`
	// Roles are the realm roles (the common case for policies).
	Roles       []string            `json:"roles"`
	RealmRoles  []string            `json:"realm_roles"`
	ClientRoles map[string][]string `json:"client_roles"`
	// Claims of an exchanged token, when there is one.
	Claims map[string]any `json:"claims"`
	// Expiry bounds how long the roles may be reused; zero means as long as
	// the identity's token.
	Expiry time.Time `json:"-"`
}

// None is the authorization of a caller nobody vouched for.
var None = &Authorization{Source: "none", Roles: []string{}, RealmRoles: []string{}, ClientRoles: map[string][]string{}, Claims: map[string]any{}}

// Source resolves a caller's roles. token is the caller's verified bearer
// token, for sources that exchange it; sources must not keep or log it.
type Source interface {
	Resolve(ctx context.Context, id *authn.Identity, token string) (*Authorization, error)
	// Name is the value of authorization.source.
	Name() string
}

// ErrUnavailable wraps failures of the role service (unreachable, slow, 5xx):
// the request is refused, never let through.
var ErrUnavailable = errors.New("authorization service unavailable")

// ErrRefused wraps a role service's refusal of this caller (4xx).
var ErrRefused = errors.New("authorization refused")

// newAuthorization normalises roles: sorted, unique, never nil.
func newAuthorization(source string, realm []string, client map[string][]string) *Authorization {
	realm = uniqueSorted(realm)
	cr := make(map[string][]string, len(client))
	for c, roles := range client {
		cr[c] = uniqueSorted(roles)
	}
	return &Authorization{Source: source, Roles: realm, RealmRoles: realm, ClientRoles: cr, Claims: map[string]any{}}
}

func uniqueSorted(in []string) []string {
	out := slices.Clone(in)
	if out == nil {
		return []string{}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// TokenRoles takes the token's Entra app roles as realm roles.
type TokenRoles struct{}

// Name implements Source.
func (TokenRoles) Name() string { return "token" }

// Resolve implements Source.
func (TokenRoles) Resolve(_ context.Context, id *authn.Identity, _ string) (*Authorization, error) {
	return newAuthorization("token", id.AppRoles, nil), nil
}
