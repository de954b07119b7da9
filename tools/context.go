// Package tools is the user's room: the MCP tools, resources and prompts this
// server offers, as plain typed Go functions. Nothing here decides access:
// every request reaches a handler only after the policies in policies/ allowed
// it. A handler may read who is calling (FromContext) and may ask the policy a
// question (AuthContext.Can); the answer comes from Rego.
//
// Adding a tool means a function here, a line in Register, and a row in
// policies/data.json (or a rule in policies/).
package tools

import (
	"context"
	"errors"
	"slices"
)

// Caller is the authenticated caller, as a tool sees it. It carries no token.
type Caller struct {
	// Kind is "user", "app" (an app-only caller such as an agent) or "anonymous".
	Kind              string   `json:"kind"`
	TenantID          string   `json:"tenant_id,omitempty"`
	ObjectID          string   `json:"object_id,omitempty"`
	AppID             string   `json:"app_id,omitempty"`
	Name              string   `json:"name,omitempty"`
	Email             string   `json:"email,omitempty"`
	PreferredUsername string   `json:"preferred_username,omitempty"`
	Scopes            []string `json:"scopes"`
	AppRoles          []string `json:"app_roles"`
	Groups            []string `json:"groups"`
	// RoleSource says where the roles came from: keycloak, static, token, none.
	RoleSource  string              `json:"role_source"`
	Roles       []string            `json:"roles"`
	ClientRoles map[string][]string `json:"client_roles"`
}

// HasRole reports whether the caller holds a realm role. It is data, not a
// decision: whether a request may pass is the policy's call (see Can).
func (c *Caller) HasRole(role string) bool { return slices.Contains(c.Roles, role) }

// Question is a request a tool wants to know the policy's answer to, as if
// the caller made it: a tool call, a resource read or a prompt.
type Question struct {
	// Method is tools/call, resources/read or prompts/get.
	Method string
	// Name is the tool or prompt name.
	Name string
	// Arguments of a tool call (any JSON-marshalable value).
	Arguments any
	// URI of a resource.
	URI string
}

// Answer is the policy's decision on a Question.
type Answer struct {
	Allow      bool     `json:"allow"`
	Reasons    []string `json:"reasons,omitempty"`
	DecisionID string   `json:"decision_id"`
}

// Asker evaluates Questions against the server's policies. The server
// provides it; tools never implement it.
type Asker interface {
	Ask(ctx context.Context, q Question) (Answer, error)
}

// AuthContext is what a handler knows of the request's authorization.
type AuthContext struct {
	Caller Caller
	asker  Asker
}

// NewAuthContext is used by the server to hand a request's context to tools.
func NewAuthContext(c Caller, asker Asker) *AuthContext {
	return &AuthContext{Caller: c, asker: asker}
}

// Can asks the policy whether the caller may make the request q. Errors deny.
func (a *AuthContext) Can(ctx context.Context, q Question) Answer {
	if a == nil || a.asker == nil {
		return Answer{Reasons: []string{"no policy engine in this context"}}
	}
	ans, err := a.asker.Ask(ctx, q)
	if err != nil {
		return Answer{Reasons: []string{"policy evaluation failed"}, DecisionID: ans.DecisionID}
	}
	return ans
}

type authKey struct{}

// WithAuthContext returns ctx carrying a.
func WithAuthContext(ctx context.Context, a *AuthContext) context.Context {
	return context.WithValue(ctx, authKey{}, a)
}

// ErrNoAuthContext is returned by handlers called outside the server.
var ErrNoAuthContext = errors.New("no authorization context in this request")

// FromContext returns the request's AuthContext (the Python original's
// get_auth_context), or ErrNoAuthContext.
func FromContext(ctx context.Context) (*AuthContext, error) {
	a, _ := ctx.Value(authKey{}).(*AuthContext)
	if a == nil {
		return nil, ErrNoAuthContext
	}
	return a, nil
}
