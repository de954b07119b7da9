package oauthproxy

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"syscall"
	"time"

	"github.com/mcpguard/mcpguard/internal/store"
)

// A client_id that is an https URL names a Client ID Metadata Document
// (draft-ietf-oauth-client-id-metadata-document): the proxy fetches it, on
// behalf of whoever typed the URL. The fetch is an SSRF vector, so it is
// held tight: https only; the address actually dialled (after resolution,
// so DNS rebinding cannot slip past) must be public; no redirects at all (the
// draft's MUST NOT); a size and a time limit; no proxy from the environment
// (a proxy would dial for us and the check would be void).

var (
	errPrivateAddress = errors.New("the metadata document's host resolves to a non-public address")
	errCIMDRedirect   = errors.New("the metadata document's server answered with a redirect")
)

func (p *Proxy) newCIMDClient() *http.Client {
	allowLoopback := p.cfg.CIMD.ForTests.AllowLoopback
	dialer := &net.Dialer{
		Timeout: p.cfg.CIMD.Timeout,
		// Control runs for every address the dialer tries, after resolution:
		// it sees the IP that would be connected to, whatever the name said.
		Control: func(network, address string, _ syscall.RawConn) error {
			if network != "tcp4" && network != "tcp6" {
				return fmt.Errorf("%w: network %s", errPrivateAddress, network)
			}
			ap, err := netip.ParseAddrPort(address)
			if err != nil || !publicAddr(ap.Addr(), allowLoopback) {
				return fmt.Errorf("%w: %s", errPrivateAddress, address)
			}
			return nil
		},
	}
	tr := &http.Transport{
		Proxy:                  nil,
		DialContext:            dialer.DialContext,
		TLSClientConfig:        &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: p.cfg.CIMD.ForTests.RootCAs},
		TLSHandshakeTimeout:    p.cfg.CIMD.Timeout,
		ResponseHeaderTimeout:  p.cfg.CIMD.Timeout,
		MaxResponseHeaderBytes: 16 << 10,
		MaxIdleConns:           4,
		IdleConnTimeout:        30 * time.Second,
		ForceAttemptHTTP2:      true,
	}
	return &http.Client{
		Transport:     tr,
		Timeout:       p.cfg.CIMD.Timeout,
		CheckRedirect: func(*http.Request, []*http.Request) error { return errCIMDRedirect },
	}
}

// specialPrefixes are ranges that are not the public internet, beyond what
// netip's predicates name: shared, documentation, benchmarking, reserved,
// and IPv6 forms that embed an IPv4 address (NAT64, 6to4, Teredo).
var specialPrefixes = func() []netip.Prefix {
	var out []netip.Prefix
	for _, s := range []string{
		"0.0.0.0/8", "100.64.0.0/10", "192.0.0.0/24", "192.0.2.0/24", "198.18.0.0/15", "198.51.100.0/24",
		"203.0.113.0/24", "240.0.0.0/4", "255.255.255.255/32",
		"::/96", "64:ff9b::/96", "64:ff9b:1::/48", "100::/64", "2001::/32", "2001:db8::/32", "2002::/16", "fec0::/10",
	} {
		out = append(out, netip.MustParsePrefix(s))
	}
	return out
}()

// publicAddr reports whether a metadata document may be fetched from ip.
func publicAddr(ip netip.Addr, allowLoopback bool) bool {
	ip = ip.Unmap()
	switch {
	case !ip.IsValid(), ip.Zone() != "":
		return false
	case ip.IsLoopback():
		return allowLoopback
	case ip.IsUnspecified(), ip.IsPrivate(), ip.IsLinkLocalUnicast(), ip.IsLinkLocalMulticast(),
		ip.IsInterfaceLocalMulticast(), ip.IsMulticast():
		return false
	}
	for _, p := range specialPrefixes {
		if p.Contains(ip) {
			return false
		}
	}
	return true
}

// checkDocumentURL applies the draft's rules to a URL client_id: https, a
// path, no fragment, user info or dot segments.
func checkDocumentURL(raw string) error {
	u, err := url.Parse(raw)
	switch {
	case err != nil:
		return errors.New("not a URL")
	case u.Scheme != "https":
		return errors.New("not https")
	case u.Host == "" || u.User != nil || u.Fragment != "" || strings.Contains(raw, "#"):
		return errors.New("host missing, or user info or fragment present")
	case u.Path == "" || u.Path == "/":
		return errors.New("no path")
	}
	for _, seg := range strings.Split(u.Path, "/") {
		if seg == "." || seg == ".." {
			return errors.New("dot segments in the path")
		}
	}
	return nil
}

// document is a Client ID Metadata Document, the members this server reads.
type document struct {
	ClientID                string   `json:"client_id"`
	ClientName              string   `json:"client_name"`
	RedirectURIs            []string `json:"redirect_uris"`
	TokenEndpointAuthMethod string   `json:"token_endpoint_auth_method"`
	GrantTypes              []string `json:"grant_types"`
	ResponseTypes           []string `json:"response_types"`
	ClientSecret            string   `json:"client_secret"`
}

// documentClient returns the client a metadata document describes, cached
// in the store for CIMD.CacheTTL. The second value is the refusal reason.
func (p *Proxy) documentClient(ctx context.Context, id string) (*client, string, error) {
	if err := checkDocumentURL(id); err != nil {
		return nil, "cimd_url", fmt.Errorf("client_id %q: %w", id, err)
	}
	ck := secretKey(kindCIMD, id)
	var cached client
	switch err := p.get(ctx, ck, &cached); {
	case err == nil && cached.ID == id:
		return &cached, "", nil
	case err != nil && !errors.Is(err, store.ErrNotFound):
		return nil, "store", err
	}
	c, err := p.fetchDocument(ctx, id)
	if err != nil {
		reason := "cimd_invalid"
		switch {
		case errors.Is(err, errPrivateAddress):
			reason = "cimd_private_address"
		case errors.Is(err, errFetch):
			reason = "cimd_fetch"
		}
		return nil, reason, err
	}
	if err := p.put(ctx, ck, c, p.cfg.CIMD.CacheTTL); err != nil {
		p.logger.Warn("client metadata document not cached", "client_id", id, "error", err)
	}
	return c, "", nil
}

var errFetch = errors.New("metadata document fetch failed")

func (p *Proxy) fetchDocument(ctx context.Context, id string) (*client, error) {
	ctx, cancel := context.WithTimeout(ctx, p.cfg.CIMD.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, id, nil)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", errFetch, err)
	}
	req.Header.Set("Accept", "application/json")
	resp, err := p.cimd.Do(req)
	if err != nil {
		if errors.Is(err, errPrivateAddress) {
			return nil, err
		}
		return nil, fmt.Errorf("%w: %v", errFetch, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%w: status %d", errFetch, resp.StatusCode)
	}
	mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	if mt != "application/json" && !(strings.HasPrefix(mt, "application/") && strings.HasSuffix(mt, "+json")) {
		return nil, fmt.Errorf("%w: content type %q", errFetch, mt)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, p.cfg.CIMD.MaxBytes+1))
	if err != nil {
		return nil, fmt.Errorf("%w: %v", errFetch, err)
	}
	if int64(len(body)) > p.cfg.CIMD.MaxBytes {
		return nil, fmt.Errorf("%w: larger than %d bytes", errFetch, p.cfg.CIMD.MaxBytes)
	}
	var doc document
	if err := json.Unmarshal(body, &doc); err != nil {
		return nil, fmt.Errorf("not a JSON object of client metadata: %v", err)
	}
	switch {
	case doc.ClientID != id:
		return nil, fmt.Errorf("the document's client_id %q is not its URL", doc.ClientID)
	case doc.ClientSecret != "":
		return nil, errors.New("the document carries a client_secret")
	case doc.TokenEndpointAuthMethod != "" && doc.TokenEndpointAuthMethod != "none":
		return nil, fmt.Errorf("token_endpoint_auth_method %q is not supported (only none)", doc.TokenEndpointAuthMethod)
	case len(doc.RedirectURIs) == 0 || len(doc.RedirectURIs) > maxRedirectURIs:
		return nil, fmt.Errorf("between 1 and %d redirect_uris are required", maxRedirectURIs)
	}
	for _, u := range doc.RedirectURIs {
		if err := p.checkRedirectURI(u); err != nil {
			return nil, err
		}
	}
	for _, g := range doc.GrantTypes {
		if g != "authorization_code" && g != "refresh_token" {
			return nil, fmt.Errorf("grant type %q is not supported", g)
		}
	}
	for _, rt := range doc.ResponseTypes {
		if rt != "code" {
			return nil, fmt.Errorf("response type %q is not supported", rt)
		}
	}
	name, err := cleanName(doc.ClientName)
	if err != nil {
		return nil, err
	}
	return &client{ID: id, Name: name, RedirectURIs: doc.RedirectURIs, Document: true}, nil
}
