package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/maphash"
	"net/http"
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
	// tis are the TokenInfos of recent requests, one slot per connection
	// address (by its hash), reused while requests come from the same
	// address and host: several keep-alive connections sharing one token
	// each keep theirs.
	tis [tokenInfoSlots]atomic.Pointer[auth.TokenInfo]
}

const tokenInfoSlots = 32

// tokenInfo is what the SDK carries to the MCP layer for this request.
func (p *principal) tokenInfo(r *http.Request) *auth.TokenInfo {
	slot := &p.tis[slotOf(r.RemoteAddr)]
	if ti := slot.Load(); ti != nil {
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
	slot.Store(ti)
	return ti
}

// slotOf spreads connection addresses over the slots.
func slotOf(addr string) int { return int(maphash.String(slotSeed, addr) % tokenInfoSlots) }

var slotSeed = maphash.MakeSeed()

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
	p.authzDoc = authorizationFragment(authz)
	p.auth = tools.NewAuthContext(caller(id, authz), &asker{s: s, p: p})
	return p
}

// identityFragment lays out input.identity. Strings the token does not
// carry are left out, lists are always arrays (docs/POLICIES.md).
func identityFragment(id *authn.Identity) *policy.Fragment {
	if !id.Authenticated() {
		return policy.MustFragment(map[string]any{"authenticated": false, "kind": string(authn.KindAnonymous),
			"scopes": []string{}, "app_roles": []string{}, "groups": []string{}, "claims": map[string]any{}})
	}
	claims := id.Claims
	if claims == nil {
		claims = map[string]any{}
	}
	doc := map[string]any{
		"authenticated": true,
		"kind":          string(id.Kind),
		"scopes":        nonNil(id.Scopes),
		"app_roles":     nonNil(id.AppRoles),
		"groups":        nonNil(id.Groups),
		"claims":        claims,
	}
	for k, v := range map[string]string{
		"issuer": id.Issuer, "tenant_id": id.TenantID, "object_id": id.ObjectID, "subject": id.Subject,
		"app_id": id.AppID, "name": id.Name, "email": id.Email, "preferred_username": id.PreferredUsername,
	} {
		if v != "" {
			doc[k] = v
		}
	}
	f, err := policy.NewFragment(doc)
	if err != nil {
		// Claims come from JSON, so they always convert; keep the identity without them if not.
		doc["claims"] = map[string]any{}
		return policy.MustFragment(doc)
	}
	return f
}

// authorizationFragment lays out input.authorization: every list an array,
// every map an object, whatever the role source left nil.
func authorizationFragment(a *exchange.Authorization) *policy.Fragment {
	clientRoles := make(map[string][]string, len(a.ClientRoles))
	for c, roles := range a.ClientRoles {
		clientRoles[c] = nonNil(roles)
	}
	claims := a.Claims
	if claims == nil {
		claims = map[string]any{}
	}
	f, err := policy.NewFragment(map[string]any{
		"source":       a.Source,
		"roles":        nonNil(a.Roles),
		"realm_roles":  nonNil(a.RealmRoles),
		"client_roles": clientRoles,
		"claims":       claims,
	})
	if err != nil {
		// Claims come from a verified JSON token; keep the roles without them if not.
		return policy.MustFragment(map[string]any{"source": a.Source, "roles": nonNil(a.Roles),
			"realm_roles": nonNil(a.RealmRoles), "client_roles": clientRoles, "claims": map[string]any{}})
	}
	return f
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
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
		Request: policy.Request{Transport: a.s.transport}}
	// The question is decided as if the caller asked it in the request the
	// tool is serving: the same session, client and transport facts, so that
	// rules on them (a network, a client) answer as they would for the call.
	if r, ok := ctx.Value(requestInputKey{}).(*policy.Input); ok {
		in.Request = r.Request
		in.MCP.SessionID, in.MCP.ProtocolVersion = r.MCP.SessionID, r.MCP.ProtocolVersion
		in.MCP.ClientName, in.MCP.ClientVersion = r.MCP.ClientName, r.MCP.ClientVersion
	}
	in.Request.TimeNS = time.Now().UnixNano()
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
	a.s.observe(policy.AllowQuery, &in)
	d, err := a.s.engine.Decide(ctx, &in)
	return tools.Answer{Allow: d.Allow && err == nil, Reasons: d.Reasons, DecisionID: d.ID}, err
}

// requestInputKey carries the input document of the request a handler
// serves, for the questions the handler asks (asker).
type requestInputKey struct{}
