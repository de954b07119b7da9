package oauthproxy

import (
	"net/http"
	"slices"

	"github.com/modelcontextprotocol/go-sdk/oauthex"
)

// scopeOffline asks for a refresh token; the proxy issues one either way, and
// always asks Entra for one.
const scopeOffline = "offline_access"

// serverMetadata is the RFC 8414 document: the same at the root and at the
// path-suffixed location, naming this issuer.
func (p *Proxy) serverMetadata() map[string]any {
	iss := p.cfg.Issuer
	return map[string]any{
		"issuer":                                         iss,
		"authorization_endpoint":                         iss + PathAuthz,
		"token_endpoint":                                 iss + PathToken,
		"registration_endpoint":                          iss + PathRegister,
		"revocation_endpoint":                            iss + PathRevoke,
		"jwks_uri":                                       iss + PathJWKS,
		"scopes_supported":                               append(slices.Clone(p.cfg.Scopes), scopeOffline),
		"response_types_supported":                       []string{"code"},
		"response_modes_supported":                       []string{"query"},
		"grant_types_supported":                          []string{"authorization_code", "refresh_token"},
		"token_endpoint_auth_methods_supported":          []string{"none"},
		"revocation_endpoint_auth_methods_supported":     []string{"none"},
		"code_challenge_methods_supported":               []string{"S256"},
		"client_id_metadata_document_supported":          true,
		"authorization_response_iss_parameter_supported": true,
	}
}

func (p *Proxy) serveMetadata(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, p.serverMetadata())
}

func (p *Proxy) serveJWKS(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/jwk-set+json")
	w.Header().Set("Cache-Control", "public, max-age=300")
	_, _ = w.Write(p.keys.jwks)
}

// Metadata is what RFC 9728 protected-resource metadata must say while the
// proxy is on: this server is the authorization server of its MCP resource,
// and these are the scopes a client asks it for. The server adds the rest
// (resource_name, …) and serves it at both well-known locations.
func (p *Proxy) Metadata() *oauthex.ProtectedResourceMetadata {
	return &oauthex.ProtectedResourceMetadata{
		Resource:               p.cfg.Resource,
		AuthorizationServers:   []string{p.cfg.Issuer},
		ScopesSupported:        slices.Clone(p.cfg.Scopes),
		BearerMethodsSupported: []string{"header"},
	}
}
