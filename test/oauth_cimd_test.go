package e2e

import (
	"crypto/x509"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/modelcontextprotocol/go-sdk/auth"

	"github.com/mcpguard/mcpguard/internal/oauthproxy"
	"github.com/mcpguard/mcpguard/internal/server"
)

// cimdServer publishes a Client ID Metadata Document over https on
// loopback, as a client's own web site would; it counts the fetches.
type cimdServer struct {
	URL     string // the document's URL: the client_id
	pool    *x509.CertPool
	fetches atomic.Int32
}

func newCIMDServer(t *testing.T, name, redirect string) *cimdServer {
	t.Helper()
	c := &cimdServer{}
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/oauth/client.json" {
			http.NotFound(w, r)
			return
		}
		c.fetches.Add(1)
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{
			"client_id": c.URL, "client_name": name, "redirect_uris": []string{redirect},
			"grant_types": []string{"authorization_code", "refresh_token"}, "response_types": []string{"code"},
			"token_endpoint_auth_method": "none",
		})
	}))
	t.Cleanup(srv.Close)
	c.URL = srv.URL + "/oauth/client.json"
	c.pool = x509.NewCertPool()
	c.pool.AddCert(srv.Certificate())
	return c
}

// useDocument makes the Go SDK client name itself by its document's URL.
func (c *cimdServer) useDocument(cfg *auth.AuthorizationCodeHandlerConfig) {
	cfg.ClientIDMetadataDocumentConfig = &auth.ClientIDMetadataDocumentConfig{URL: c.URL}
}

// The Go SDK's client names itself by a Client ID Metadata Document instead
// of registering: the façade fetches the document (https; here from a
// loopback server the test lets it trust), shows the consent page with the
// host that published it, and the login goes on as with a registration.
func TestGoSDKLogsInWithAClientMetadataDocument(t *testing.T) {
	const redirect = "http://127.0.0.1:49154/callback"
	doc := newCIMDServer(t, "e2e-cimd", redirect)
	iss := startIssuer(t)
	e := startWith(t, iss, oauthVars(nil), server.Options{OAuthProxy: func(c *oauthproxy.Config) {
		c.CIMD.ForTests = oauthproxy.CIMDTestHooks{AllowLoopback: true, RootCAs: doc.pool}
	}})
	registerAPI(iss, e.Base)
	ua := newUserAgent(t, "alice")
	l := newGoLoginWith(t, redirect, ua.authorize, doc.useDocument)
	if out := readCritical(t, l.connect(t, e.URL)); !strings.Contains(out, "alice@") {
		t.Fatalf("the tool ran for %s", out)
	}
	if got := l.clientID(t); got != doc.URL {
		t.Fatalf("client_id %q, want the document's URL", got)
	}
	if doc.fetches.Load() == 0 {
		t.Fatal("the document was never fetched")
	}
	shown := ua.consentText()
	if !strings.Contains(shown, "e2e-cimd") || !strings.Contains(shown, strings.TrimPrefix(strings.Split(doc.URL, "/oauth/")[0], "https://")) {
		t.Fatalf("consent page: %s", shown)
	}
}

// Without that allowance the same document, on a loopback address, is
// never fetched: a client_id naming a private address is refused before
// any page is shown, and counted.
func TestClientMetadataDocumentOnAPrivateAddressRefused(t *testing.T) {
	const redirect = "http://127.0.0.1:49155/callback"
	doc := newCIMDServer(t, "e2e-cimd", redirect)
	iss := startIssuer(t)
	e := startOAuth(t, iss, nil)
	ua := newUserAgent(t, "alice")
	l := newGoLoginWith(t, redirect, ua.authorize, doc.useDocument)
	c, cancel := contextFor(t)
	defer cancel()
	_, err := connectErr(c, l, e.URL)
	var pe *pageError
	if !errors.As(err, &pe) || pe.status != http.StatusBadRequest {
		t.Fatalf("login with a document on a private address: %v", err)
	}
	if doc.fetches.Load() != 0 {
		t.Fatal("the façade fetched a document from a private address")
	}
	if got := series(t, e, `mcpguard_oauth_refusals_total{reason="cimd_private_address"}`); got < 1 {
		t.Fatalf("private-address refusals counted %v", got)
	}
	if ua.consentText() != "" {
		t.Fatal("a consent page was shown")
	}
}
