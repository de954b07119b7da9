package oauthproxy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"unicode"

	"github.com/mcpguard/mcpguard/internal/store"
)

// client is what the proxy knows of an OAuth client: registered (RFC 7591)
// or described by its Client ID Metadata Document. Every client is public:
// it proves itself with PKCE, never with a secret.
type client struct {
	ID           string   `json:"client_id"`
	Name         string   `json:"client_name,omitempty"`
	RedirectURIs []string `json:"redirect_uris"`
	IssuedAt     int64    `json:"client_id_issued_at,omitempty"`
	// Document: the client_id is the https URL of its metadata document,
	// so its host is vouched for by TLS; a registered client's name is
	// whatever the registrant said.
	Document bool `json:"document,omitempty"`
}

// errUnknownClient: no registration and no metadata document for client_id.
var errUnknownClient = errors.New("unknown client")

// lookupClient finds a registered client, or fetches (or reads cached) the
// metadata document a URL client_id names.
func (p *Proxy) lookupClient(ctx context.Context, id string) (*client, string, error) {
	if id == "" || len(id) > 2048 {
		return nil, "unknown_client", errUnknownClient
	}
	if strings.HasPrefix(id, "https://") {
		c, reason, err := p.documentClient(ctx, id)
		return c, reason, err
	}
	var c client
	if err := p.get(ctx, key(kindClient, id), &c); err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return nil, "unknown_client", errUnknownClient
		}
		return nil, "store", err
	}
	return &c, "", nil
}

// allowsRedirect reports whether uri is one of the client's redirect URIs.
// A loopback one matches on any port (RFC 8252 §7.3, OAuth 2.1: native
// clients take whatever port is free); everything else must match exactly.
func (c *client) allowsRedirect(uri string) bool {
	if uri == "" {
		return false
	}
	if slices.Contains(c.RedirectURIs, uri) {
		return true
	}
	u, err := url.Parse(uri)
	if err != nil || u.Scheme != "http" || !isLoopbackHost(u.Hostname()) {
		return false
	}
	for _, r := range c.RedirectURIs {
		ru, err := url.Parse(r)
		if err != nil || ru.Scheme != "http" {
			continue
		}
		if ru.Hostname() == u.Hostname() && ru.EscapedPath() == u.EscapedPath() && ru.RawQuery == u.RawQuery &&
			ru.User == nil && u.User == nil && ru.Fragment == "" && u.Fragment == "" && !u.ForceQuery {
			return true
		}
	}
	return false
}

// checkRedirectURI applies the redirect-URI rule to a URI a client declares:
// http on a loopback host (any port), or https on an allowed host; absolute,
// no fragment, no user info. Nothing else: no custom schemes, no open hosts.
func (p *Proxy) checkRedirectURI(raw string) error {
	u, err := url.Parse(raw)
	switch {
	case err != nil:
		return fmt.Errorf("%q is not a URL", raw)
	case u.Fragment != "" || strings.Contains(raw, "#"):
		return fmt.Errorf("%q has a fragment", raw)
	case u.User != nil:
		return fmt.Errorf("%q carries user info", raw)
	case u.Host == "" || u.Opaque != "":
		return fmt.Errorf("%q is not an absolute URL", raw)
	}
	switch u.Scheme {
	case "http":
		if !isLoopbackHost(u.Hostname()) {
			return fmt.Errorf("%q: plain http is allowed only on loopback (127.0.0.1, [::1], localhost)", raw)
		}
		return nil
	case "https":
		if p.redirectHostAllowed(u) {
			return nil
		}
		return fmt.Errorf("%q: host %s is not on the redirect allow-list", raw, u.Host)
	}
	return fmt.Errorf("%q: scheme %q is not allowed", raw, u.Scheme)
}

func (p *Proxy) redirectHostAllowed(u *url.URL) bool {
	for _, h := range p.cfg.RedirectHosts {
		if _, _, err := net.SplitHostPort(h); err == nil {
			if strings.EqualFold(h, u.Host) {
				return true
			}
		} else if strings.EqualFold(strings.Trim(h, "[]"), u.Hostname()) {
			return true
		}
	}
	return false
}

// isLoopbackHost: the three loopback names the redirect rule allows.
func isLoopbackHost(h string) bool {
	if h == "localhost" {
		return true
	}
	ip := net.ParseIP(h)
	return ip != nil && (ip.Equal(net.IPv4(127, 0, 0, 1)) || ip.Equal(net.IPv6loopback))
}

// registration is the RFC 7591 request, the members this server reads.
type registration struct {
	RedirectURIs            []string `json:"redirect_uris"`
	TokenEndpointAuthMethod string   `json:"token_endpoint_auth_method"`
	GrantTypes              []string `json:"grant_types"`
	ResponseTypes           []string `json:"response_types"`
	ClientName              string   `json:"client_name"`
}

// maxRedirectURIs bounds what one registration may store.
const maxRedirectURIs = 10

// serveRegister is RFC 7591 dynamic client registration, for public clients:
// whatever token_endpoint_auth_method is asked, the client gets "none" (RFC
// 7591 §3.2.1 lets the server replace requested values) and no secret.
func (p *Proxy) serveRegister(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	if p.limited(w, r, false) {
		return
	}
	fail := func(code, desc string) {
		p.refuse(ctx, "registration", desc)
		writeJSON(w, http.StatusBadRequest, oauthError{Error: code, Description: desc})
	}
	if mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); mt != "application/json" {
		fail("invalid_client_metadata", "the registration must be application/json")
		return
	}
	var req registration
	dec := json.NewDecoder(io.LimitReader(r.Body, 16<<10))
	if err := dec.Decode(&req); err != nil {
		fail("invalid_client_metadata", "the registration is not a JSON object of client metadata")
		return
	}
	if len(req.RedirectURIs) == 0 || len(req.RedirectURIs) > maxRedirectURIs {
		fail("invalid_redirect_uri", fmt.Sprintf("between 1 and %d redirect_uris are required", maxRedirectURIs))
		return
	}
	for _, u := range req.RedirectURIs {
		if err := p.checkRedirectURI(u); err != nil {
			fail("invalid_redirect_uri", err.Error())
			return
		}
	}
	grants := req.GrantTypes
	if len(grants) == 0 {
		grants = []string{"authorization_code", "refresh_token"}
	}
	for _, g := range grants {
		if g != "authorization_code" && g != "refresh_token" {
			fail("invalid_client_metadata", fmt.Sprintf("grant type %q is not supported", g))
			return
		}
	}
	for _, rt := range req.ResponseTypes {
		if rt != "code" {
			fail("invalid_client_metadata", fmt.Sprintf("response type %q is not supported", rt))
			return
		}
	}
	name, err := cleanName(req.ClientName)
	if err != nil {
		fail("invalid_client_metadata", err.Error())
		return
	}
	c := client{ID: "mcpg-" + newSecret()[:32], Name: name, RedirectURIs: req.RedirectURIs, IssuedAt: p.now().Unix()}
	if err := p.put(ctx, key(kindClient, c.ID), c, p.cfg.ClientTTL); err != nil {
		p.logger.Error("client registration not stored", "error", err)
		writeJSON(w, http.StatusServiceUnavailable, oauthError{Error: "temporarily_unavailable"})
		return
	}
	p.logger.Info("oauth client registered", "client_id", c.ID, "client_name", c.Name, "redirect_uris", c.RedirectURIs)
	writeJSON(w, http.StatusCreated, map[string]any{
		"client_id":                  c.ID,
		"client_id_issued_at":        c.IssuedAt,
		"client_name":                c.Name,
		"redirect_uris":              c.RedirectURIs,
		"grant_types":                grants,
		"response_types":             []string{"code"},
		"token_endpoint_auth_method": "none",
	})
}

// cleanName bounds a client's self-chosen name, shown on the consent page.
func cleanName(s string) (string, error) {
	s = strings.TrimSpace(s)
	if len([]rune(s)) > 100 {
		return "", errors.New("client_name is longer than 100 characters")
	}
	for _, r := range s {
		if unicode.IsControl(r) || unicode.Is(unicode.Bidi_Control, r) {
			return "", errors.New("client_name has control characters")
		}
	}
	return s, nil
}

// oauthError is an RFC 6749 §5.2 error body.
type oauthError struct {
	Error       string `json:"error"`
	Description string `json:"error_description,omitempty"`
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n'))
}
