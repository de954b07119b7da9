package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/modelcontextprotocol/go-sdk/auth"

	"github.com/mcpguard/mcpguard/internal/authn"
	"github.com/mcpguard/mcpguard/internal/exchange"
	"github.com/mcpguard/mcpguard/internal/policy"
	"github.com/mcpguard/mcpguard/tools"
)

// principal is a caller with everything later stages need, computed once per
// token and kept beside the verified identity: the policy fragments, the
// tools' view of the caller.
type principal struct {
	identity *authn.Identity
	authz    *exchange.Authorization
	// authzErr is set when the role source failed; every request is then
	// refused with it. Such a principal is never cached.
	authzErr error

	identityDoc *policy.Fragment
	authzDoc    *policy.Fragment
	auth        *tools.AuthContext
	// validUntil is when the roles must be resolved again.
	validUntil time.Time
	// lastTI is the TokenInfo of the last request, reused while requests
	// come from the same connection address and host (keep-alive).
	lastTI atomic.Pointer[auth.TokenInfo]

	visMu sync.Mutex
	vis   map[visibleKey]visibleEntry
}

// tokenInfo is what the SDK carries to the MCP layer for this request.
func (p *principal) tokenInfo(r *http.Request) *auth.TokenInfo {
	if ti := p.lastTI.Load(); ti != nil {
		if f := ti.Extra[extraKey].(*requestFacts); f.remoteAddr == r.RemoteAddr && f.host == r.Host {
			return ti
		}
	}
	ti := &auth.TokenInfo{
		Scopes:     p.identity.Scopes,
		Expiration: p.identity.Expiry,
		UserID:     p.identity.UserID(),
		Extra:      map[string]any{extraKey: &requestFacts{p: p, remoteAddr: r.RemoteAddr, host: r.Host}},
	}
	p.lastTI.Store(ti)
	return ti
}

// resolve returns the principal of id, from the identity's cache when still valid.
func (s *Server) resolve(ctx context.Context, id *authn.Identity, token string) *principal {
	if p, ok := id.Derived().(*principal); ok && (p.validUntil.IsZero() || s.clock().Before(p.validUntil)) {
		return p
	}
	p := s.newPrincipal(ctx, id, token)
	if p.authzErr == nil {
		id.SetDerived(p)
	}
	return p
}

func (s *Server) newPrincipal(ctx context.Context, id *authn.Identity, token string) *principal {
	p := &principal{identity: id, identityDoc: identityFragment(id)}
	authz := exchange.None
	if id.Authenticated() {
		a, err := s.roles.Resolve(ctx, id, token)
		if err != nil {
			p.authzErr = err
			s.logger.Warn("role resolution failed", "source", s.roles.Name(), "user", id.UserID(), "error", err)
		} else {
			authz = a
		}
	}
	p.authz = authz
	p.validUntil = authz.Expiry
	p.authzDoc = policy.MustFragment(authz)
	p.auth = tools.NewAuthContext(caller(id, authz), &asker{s: s, p: p})
	return p
}

// identityFragment lays out input.identity.
func identityFragment(id *authn.Identity) *policy.Fragment {
	if !id.Authenticated() {
		return policy.MustFragment(map[string]any{"authenticated": false, "kind": string(authn.KindAnonymous),
			"scopes": []string{}, "app_roles": []string{}, "groups": []string{}, "claims": map[string]any{}})
	}
	nz := func(s []string) []string {
		if s == nil {
			return []string{}
		}
		return s
	}
	f, err := policy.NewFragment(map[string]any{
		"authenticated":      true,
		"kind":               string(id.Kind),
		"issuer":             id.Issuer,
		"tenant_id":          id.TenantID,
		"object_id":          id.ObjectID,
		"subject":            id.Subject,
		"app_id":             id.AppID,
		"name":               id.Name,
		"email":              id.Email,
		"preferred_username": id.PreferredUsername,
		"scopes":             nz(id.Scopes),
		"app_roles":          nz(id.AppRoles),
		"groups":             nz(id.Groups),
		"claims":             id.Claims,
	})
	if err != nil {
		// Claims come from JSON, so they always convert; keep the identity without them if not.
		return policy.MustFragment(map[string]any{"authenticated": true, "kind": string(id.Kind), "object_id": id.ObjectID, "tenant_id": id.TenantID})
	}
	return f
}

func caller(id *authn.Identity, a *exchange.Authorization) tools.Caller {
	return tools.Caller{
		Kind: string(id.Kind), TenantID: id.TenantID, ObjectID: id.ObjectID, AppID: id.AppID,
		Name: id.Name, Email: id.Email, PreferredUsername: id.PreferredUsername,
		Scopes: id.Scopes, AppRoles: id.AppRoles, Groups: id.Groups,
		RoleSource: a.Source, Roles: a.Roles, ClientRoles: a.ClientRoles,
	}
}

// asker answers a tool's question with the policy, as if the caller asked.
type asker struct {
	s *Server
	p *principal
}

func (a *asker) Ask(ctx context.Context, q tools.Question) (tools.Answer, error) {
	in := policy.Input{Identity: a.p.identityDoc, Authorization: a.p.authzDoc,
		Request: policy.Request{TimeNS: time.Now().UnixNano(), Transport: "internal"}}
	in.MCP.Method = q.Method
	switch q.Method {
	case "tools/call":
		args, err := json.Marshal(q.Arguments)
		if err != nil {
			return tools.Answer{}, fmt.Errorf("arguments: %w", err)
		}
		in.MCP.Tool = &policy.Tool{Name: q.Name, Arguments: args, Annotations: a.s.catalog.toolAnnotations[q.Name]}
	case "resources/read":
		in.MCP.ResourceURI = q.URI
	case "prompts/get":
		in.MCP.Prompt = &policy.Prompt{Name: q.Name}
	default:
		return tools.Answer{}, errors.New("a question is a tools/call, resources/read or prompts/get")
	}
	d, err := a.s.engine.Decide(ctx, &in)
	return tools.Answer{Allow: d.Allow && err == nil, Reasons: d.Reasons, DecisionID: d.ID}, err
}
