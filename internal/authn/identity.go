// Package authn authenticates callers: it verifies Microsoft Entra ID access
// tokens (v2, optionally v1) against the tenant's published keys and turns
// them into an Identity. It answers who is calling, never what they may do.
package authn

import (
	"sync/atomic"
	"time"
)

// Kind tells delegated users from app-only callers.
type Kind string

// The kinds of caller.
const (
	KindUser      Kind = "user"
	KindApp       Kind = "app"
	KindAnonymous Kind = "anonymous"
)

// Identity is a verified caller. It is immutable once returned, and shared by
// every request that carries the same token.
type Identity struct {
	Kind              Kind
	Issuer            string
	TenantID          string
	ObjectID          string
	Subject           string
	AppID             string
	Name              string
	Email             string
	PreferredUsername string
	Scopes            []string
	AppRoles          []string
	Groups            []string
	// Claims holds every claim of the verified token.
	Claims map[string]any
	// Expiry is the token's exp.
	Expiry time.Time
	// Key is the SHA-256 of the token: a cache key that is not the token.
	Key [32]byte

	// keyID is the issuer key that signed the token; keyGen the key set
	// generation in which it was last seen published.
	keyID  string
	keyGen atomic.Uint64

	// derived lets the next stage keep what it computes from this identity
	// (roles, the policy document) beside it, so a cached token costs nothing
	// to convert again.
	derived atomic.Value
}

// Anonymous is the identity of a caller when authentication is off.
var Anonymous = &Identity{Kind: KindAnonymous}

// Authenticated reports whether a token was verified.
func (id *Identity) Authenticated() bool { return id != nil && id.Kind != KindAnonymous }

// UserID is the stable id of the caller within its tenant: tid/oid.
func (id *Identity) UserID() string {
	if !id.Authenticated() {
		return ""
	}
	return id.TenantID + "/" + id.ObjectID
}

// Derived returns what the next stage stored with SetDerived, or nil.
func (id *Identity) Derived() any { return id.derived.Load() }

// SetDerived stores data derived from this identity. Later stages use it as a
// per-token cache; every value stored must be of the same concrete type.
func (id *Identity) SetDerived(v any) { id.derived.Store(v) }
