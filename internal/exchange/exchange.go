// Package exchange turns a verified Entra identity into the caller's roles:
// the authorization part of the policy input. Roles come from a source: a
// static roles file (ROLE_SOURCE=static), the token's own app roles
// (ROLE_SOURCE=token), or Keycloak by token exchange (ROLE_SOURCE=keycloak).
package exchange

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
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

// ErrUnavailable wraps failures of the role service (unreachable, slow, 5xx,
// or refusing mcpguard itself): the request is refused, never let through.
var ErrUnavailable = errors.New("authorization service unavailable")

// ErrRefused wraps a role service's refusal of this caller (4xx).
var ErrRefused = errors.New("authorization refused")

// Error is a role source's failure. Its two texts have two readers: Error()
// is the detail for logs (it may quote the role service, e.g. Keycloak's
// error_description, which callers must not see: it names clients, users
// and configuration); Public() is the fixed text a caller may be shown.
// errors.Is(err, ErrRefused) and errors.Is(err, ErrUnavailable) tell the kinds.
type Error struct {
	// Kind is ErrRefused or ErrUnavailable.
	Kind error `json:"-"`
	// Code is the OAuth error code the role service answered with, if any.
	Code string `json:"code,omitempty"`
	// Config marks a refusal of mcpguard itself (its client credentials or
	// permissions at Keycloak): a fault of the service's configuration, not
	// of the caller. Kind is then ErrUnavailable.
	Config bool `json:"config,omitempty"`
	// Detail says what happened, for logs only.
	Detail string `json:"detail"`
}

func (e *Error) Error() string { return e.Kind.Error() + ": " + e.Detail }

func (e *Error) Unwrap() error { return e.Kind }

// Public is the caller-facing text: the kind, never the detail.
func (e *Error) Public() string { return e.Kind.Error() }

// Public returns the text a caller may be shown for a role source's error:
// a fixed sentence per kind, never the detail (which goes to the logs).
func Public(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Public()
	}
	if errors.Is(err, ErrRefused) {
		return ErrRefused.Error()
	}
	return ErrUnavailable.Error()
}

func refused(code, format string, args ...any) *Error {
	return &Error{Kind: ErrRefused, Code: code, Detail: fmt.Sprintf(format, args...)}
}

func unavailable(format string, args ...any) *Error {
	return &Error{Kind: ErrUnavailable, Detail: fmt.Sprintf(format, args...)}
}

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

// AppRoleTenants are the tenants whose app roles are trusted. An app role
// in a token says what the token's own tenant assigned: a partner tenant
// admitted with AZURE_ALLOWED_TENANTS can assign any of the API's app roles
// to its own users, so only the home tenant's are trusted unless configured.
// The zero value trusts none.
type AppRoleTenants struct{ set map[string]bool }

// NewAppRoleTenants trusts the home tenant (AZURE_TENANT_ID, when it is a
// tenant id rather than organizations/common) and the tenants listed.
func NewAppRoleTenants(home string, more []string) AppRoleTenants {
	t := AppRoleTenants{set: map[string]bool{}}
	if isGUID(home) {
		t.set[strings.ToLower(home)] = true
	}
	for _, m := range more {
		t.set[strings.ToLower(strings.TrimSpace(m))] = true
	}
	return t
}

// AppRoles returns the caller's app roles if its tenant is trusted, else none.
func (t AppRoleTenants) AppRoles(id *authn.Identity) []string {
	if id == nil || !t.set[strings.ToLower(id.TenantID)] {
		return nil
	}
	return id.AppRoles
}

// isGUID reports whether s has the 8-4-4-4-12 hex form of a tenant id.
func isGUID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i, c := range s {
		switch i {
		case 8, 13, 18, 23:
			if c != '-' {
				return false
			}
		default:
			if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F') {
				return false
			}
		}
	}
	return true
}

// TokenRoles takes the token's Entra app roles as realm roles, from the
// trusted tenants only.
type TokenRoles struct {
	Tenants AppRoleTenants
}

// Name implements Source.
func (TokenRoles) Name() string { return "token" }

// Resolve implements Source.
func (t TokenRoles) Resolve(_ context.Context, id *authn.Identity, _ string) (*Authorization, error) {
	return newAuthorization("token", t.Tenants.AppRoles(id), nil), nil
}
