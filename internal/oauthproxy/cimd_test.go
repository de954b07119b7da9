package oauthproxy_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mcpguard/mcpguard/internal/oauthproxy"
)

// docServer serves Client ID Metadata Documents over TLS on loopback,
// counting the requests that reach it.
type docServer struct {
	*httptest.Server
	hits   atomic.Int64
	routes map[string]http.HandlerFunc
}

func newDocServer(t *testing.T) *docServer {
	d := &docServer{routes: map[string]http.HandlerFunc{}}
	d.Server = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		d.hits.Add(1)
		if h, ok := d.routes[r.URL.Path]; ok {
			h(w, r)
			return
		}
		http.NotFound(w, r)
	}))
	t.Cleanup(d.Close)
	return d
}

// document serves a metadata document at path, built by edit from a valid one.
func (d *docServer) document(path string, edit func(map[string]any)) string {
	id := d.URL + path
	doc := map[string]any{
		"client_id": id, "client_name": "Doc Client", "redirect_uris": []string{clientRedirect},
		"token_endpoint_auth_method": "none", "grant_types": []string{"authorization_code", "refresh_token"},
		"response_types": []string{"code"},
	}
	if edit != nil {
		edit(doc)
	}
	body, _ := json.Marshal(doc)
	d.routes[path] = func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(body)
	}
	return id
}

// trusting lets the proxy fetch from the document server: its certificate,
// and (only with loopback) its address.
func trusting(d *docServer, loopback bool) func(*oauthproxy.Config) {
	return func(c *oauthproxy.Config) {
		c.CIMD.ForTests.RootCAs = d.Client().Transport.(*http.Transport).TLSClientConfig.RootCAs
		c.CIMD.ForTests.AllowLoopback = loopback
		c.CIMD.Timeout = 2 * time.Second
	}
}

func TestCIMDClientSignsIn(t *testing.T) {
	d := newDocServer(t)
	id := d.document("/clients/mcp.json", nil)
	r := newRig(t, rigOptions{mutate: trusting(d, true)})
	c := r.client(id, "read")
	b := newBrowser(t)
	pg := b.get(c.authURL())
	for _, want := range []string{"Doc Client", "published at", strings.TrimPrefix(d.URL, "https://")} {
		if !strings.Contains(pg.body, want) {
			t.Errorf("consent page does not show %q", want)
		}
	}
	tok := r.login(t, c)
	if _, err := r.proxy().Resolve(t.Context(), tok.AccessToken); err != nil {
		t.Fatal(err)
	}
	if n := d.hits.Load(); n != 1 {
		t.Fatalf("document fetched %d times; want once (cached)", n)
	}
}

// TestCIMDRefusedAtPrivateAddresses: with the address rule on, a document
// URL whose host is, or resolves to, loopback, private, link-local or other
// non-public space is refused at dial time, before any byte is sent; the
// test hook lets loopback through and nothing else.
func TestCIMDRefusedAtPrivateAddresses(t *testing.T) {
	d := newDocServer(t)
	d.document("/c.json", nil)
	port := d.Listener.Addr().(interface{ AddrPort() netip.AddrPort }).AddrPort().Port()
	p := func(h string) string { return "https://" + h + ":" + itoa(port) + "/c.json" }
	targets := []string{
		d.URL + "/c.json", p("localhost"), p("[::1]"), "https://10.0.0.1/c.json", "https://169.254.169.254/latest/c.json",
		"https://[fd00::1]/c.json", "https://[fe80::1]/c.json", "https://0.0.0.0/c.json", "https://100.64.0.1/c.json",
		"https://[::ffff:127.0.0.1]:" + itoa(port) + "/c.json", "https://[64:ff9b::a00:1]/c.json", "https://224.0.0.1/c.json",
	}
	r := newRig(t, rigOptions{mutate: trusting(d, false)})
	for i, id := range targets {
		pg := newBrowser(t).get(r.client(id).authURL())
		if pg.status != http.StatusBadRequest || pg.back != nil {
			t.Errorf("%s: status %d, redirected to %v", id, pg.status, pg.back)
		}
		r.counted(t, "cimd_private_address", float64(i+1))
	}
	if n := d.hits.Load(); n != 0 {
		t.Fatalf("the document server was reached %d times", n)
	}

	// The test hook opens loopback, and only loopback.
	loose := newRig(t, rigOptions{mutate: trusting(d, true)})
	for _, id := range []string{"https://10.0.0.1/c.json", "https://169.254.169.254/latest/c.json", "https://[fd00::1]/c.json"} {
		if pg := newBrowser(t).get(loose.client(id).authURL()); pg.status != http.StatusBadRequest {
			t.Errorf("%s with the loopback hook: %d", id, pg.status)
		}
	}
	loose.counted(t, "cimd_private_address", 3)
}

func TestCIMDDocumentRules(t *testing.T) {
	d := newDocServer(t)
	d.routes["/moved.json"] = func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, d.URL+"/target.json", http.StatusFound)
	}
	var redirected atomic.Int64
	d.routes["/target.json"] = func(w http.ResponseWriter, _ *http.Request) { redirected.Add(1) }
	d.routes["/huge.json"] = func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"client_name":"` + strings.Repeat("x", 70<<10) + `"}`))
	}
	d.routes["/html.json"] = func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		_, _ = w.Write([]byte(`{}`))
	}
	d.routes["/slow.json"] = func(w http.ResponseWriter, r *http.Request) { <-r.Context().Done() }
	cases := map[string]struct{ id, reason string }{
		"another client_id":  {d.document("/liar.json", func(m map[string]any) { m["client_id"] = "https://app.example.com/c.json" }), "cimd_invalid"},
		"foreign redirect":   {d.document("/evil.json", func(m map[string]any) { m["redirect_uris"] = []string{"https://evil.example/cb"} }), "cimd_invalid"},
		"client secret":      {d.document("/secret.json", func(m map[string]any) { m["client_secret"] = "s" }), "cimd_invalid"},
		"secret auth method": {d.document("/basic.json", func(m map[string]any) { m["token_endpoint_auth_method"] = "client_secret_basic" }), "cimd_invalid"},
		"redirect":           {d.URL + "/moved.json", "cimd_fetch"},
		"too large":          {d.URL + "/huge.json", "cimd_fetch"},
		"not json":           {d.URL + "/html.json", "cimd_fetch"},
		"not found":          {d.URL + "/missing.json", "cimd_fetch"},
		"slow":               {d.URL + "/slow.json", "cimd_fetch"},
		"no path":            {d.URL, "cimd_url"},
		"dot segments":       {d.URL + "/a/../c.json", "cimd_url"},
		"plain http":         {strings.Replace(d.URL, "https", "http", 1) + "/c.json", "unknown_client"},
	}
	r := newRig(t, rigOptions{mutate: func(c *oauthproxy.Config) {
		trusting(d, true)(c)
		c.CIMD.Timeout = 300 * time.Millisecond
	}})
	for name, tc := range cases {
		before := r.refusals(tc.reason)
		c := r.client(tc.id)
		if pg := newBrowser(t).get(c.authURL()); pg.status != http.StatusBadRequest || pg.back != nil {
			t.Errorf("%s: status %d, redirected to %v", name, pg.status, pg.back)
		}
		if r.refusals(tc.reason) != before+1 {
			t.Errorf("%s: not counted as %s", name, tc.reason)
		}
	}
	if redirected.Load() != 0 {
		t.Fatal("a redirect was followed")
	}
}

func TestPublicAddrTable(t *testing.T) {
	for addr, want := range map[string]bool{
		"93.184.216.34": true, "2606:2800:220:1:248:1893:25c8:1946": true, "8.8.8.8": true,
		"127.0.0.1": false, "127.5.5.5": false, "::1": false, "10.1.2.3": false, "172.16.0.1": false, "172.31.255.255": false,
		"192.168.1.1": false, "169.254.169.254": false, "fe80::1": false, "fc00::1": false, "fd12::1": false,
		"0.0.0.0": false, "::": false, "100.64.0.1": false, "224.0.0.251": false, "ff02::1": false, "239.1.1.1": false,
		"::ffff:10.0.0.1": false, "::ffff:8.8.8.8": true, "64:ff9b::808:808": false, "2002:a00:1::": false,
		"192.0.2.1": false, "198.18.0.1": false, "240.0.0.1": false, "255.255.255.255": false, "2001:db8::1": false,
	} {
		if got := oauthproxy.PublicAddr(netip.MustParseAddr(addr), false); got != want {
			t.Errorf("%s: public %v, want %v", addr, got, want)
		}
	}
	if !oauthproxy.PublicAddr(netip.MustParseAddr("127.0.0.1"), true) || oauthproxy.PublicAddr(netip.MustParseAddr("10.0.0.1"), true) {
		t.Fatal("the loopback hook opens more or less than loopback")
	}
}

func itoa(n uint16) string {
	b, _ := json.Marshal(n)
	return string(b)
}
