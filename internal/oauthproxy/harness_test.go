package oauthproxy_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/auth"
	"golang.org/x/oauth2"

	"github.com/mcpguard/mcpguard/internal/clocktest"
	"github.com/mcpguard/mcpguard/internal/devidp"
	"github.com/mcpguard/mcpguard/internal/oauthproxy"
	"github.com/mcpguard/mcpguard/internal/store"
)

// The API app registered at the development identity provider, playing
// Entra: the proxy signs users in as it.
const (
	tenant    = "72f988bf-0000-4000-8000-0000000000aa"
	apiClient = "5b2a1c3d-0000-4000-8000-0000000000a1"
	apiSecret = "api-secret-for-tests"
	// clientRedirect is the MCP client's loopback redirect URI. Nothing
	// listens there: the test browser stops when it is sent to it.
	clientRedirect = "http://127.0.0.1:9/callback"
	clientHost     = "127.0.0.1:9"
)

var idpKey = sync.OnceValue(func() *rsa.PrivateKey {
	k, err := devidp.NewKey()
	if err != nil {
		panic(err)
	}
	return k
})

func randomKey() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	return base64.StdEncoding.EncodeToString(b)
}

// Shared by every rig of a test run, as replicas share their secrets.
var (
	signingKey = randomKey()
	storageKey = randomKey()
)

func sealed(t testing.TB, inner store.Store) store.Store {
	t.Helper()
	k, err := store.ParseKeys(storageKey)
	if err != nil {
		t.Fatal(err)
	}
	e, err := store.NewEncrypted(inner, k)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// rig is the development identity provider (as Entra), one or more proxy
// replicas behind a round-robin balancer (the issuer URL), and what went
// over the wire, all on loopback.
type rig struct {
	t        testing.TB
	clock    *clocktest.Clock
	idp      *devidp.Issuer
	idpURL   string
	base     string // issuer: the balancer
	resource string
	proxies  []*oauthproxy.Proxy
	served   []atomic.Int64
	backends []string // each replica's own URL
	wire     *wire
}

type rigOptions struct {
	// stores, one per replica (several: replicas on one Redis); nil: one
	// replica on a sealed memory store.
	stores []store.Store
	// mutate adjusts the proxy configuration before New.
	mutate func(*oauthproxy.Config)
	// resource overrides the MCP endpoint path ("/mcp").
	resourcePath string
	// resourceServer puts a minimal protected resource beside the proxy:
	// RFC 9728 metadata and an endpoint that takes only proxy tokens.
	resourceServer bool
}

func listen(t testing.TB) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return ln
}

func serve(t testing.TB, ln net.Listener, h http.Handler) {
	srv := &httptest.Server{Listener: ln, Config: &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}}
	srv.Start()
	t.Cleanup(srv.Close)
}

func newRig(t testing.TB, o rigOptions) *rig {
	t.Helper()
	r := &rig{t: t, clock: clocktest.New(time.Now()), wire: &wire{}}
	idpLn, lbLn := listen(t), listen(t)
	r.idpURL = "http://" + idpLn.Addr().String()
	r.base = "http://" + lbLn.Addr().String()
	path := o.resourcePath
	if path == "" {
		path = "/mcp"
	}
	r.resource = r.base + path

	iss, err := devidp.New(r.idpURL, tenant, idpKey())
	if err != nil {
		t.Fatal(err)
	}
	iss.RegisterClient(devidp.Client{ID: apiClient, Secret: apiSecret, RedirectURIs: []string{r.base + "/auth/callback"}})
	iss.AddUser(devidp.User{Name: "alice", Roles: []string{"data_reader"}})
	iss.AddUser(devidp.User{Name: "bob", Roles: []string{"finance"}})
	iss.SetAutoSignIn("alice")
	iss.SetClock(r.clock.Now)
	r.idp = iss
	serve(t, idpLn, r.wire.record(iss.Handler()))

	stores := o.stores
	if len(stores) == 0 {
		stores = []store.Store{sealed(t, store.NewMemory(0))}
	}
	var backends []*url.URL
	r.served = make([]atomic.Int64, len(stores))
	for i, st := range stores {
		cfg := r.config()
		if o.mutate != nil {
			o.mutate(&cfg)
		}
		p, err := oauthproxy.New(context.Background(), cfg, st, nil)
		if err != nil {
			t.Fatal(err)
		}
		oauthproxy.SetClock(p, r.clock.Now)
		r.proxies = append(r.proxies, p)
		ln := listen(t)
		h := p.Handler()
		if o.resourceServer {
			h = r.withResource(p, h, path)
		}
		n := &r.served[i]
		serve(t, ln, http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
			n.Add(1)
			h.ServeHTTP(w, req)
		}))
		backends = append(backends, &url.URL{Scheme: "http", Host: ln.Addr().String()})
		r.backends = append(r.backends, "http://"+ln.Addr().String())
	}
	var next atomic.Int64
	serve(t, lbLn, &httputil.ReverseProxy{Rewrite: func(pr *httputil.ProxyRequest) {
		pr.SetURL(backends[int(next.Add(1))%len(backends)])
		pr.Out.Host = pr.In.Host // the replicas see the public host, as behind any balancer
	}})
	return r
}

func (r *rig) config() oauthproxy.Config {
	return oauthproxy.Config{
		Issuer:   r.base,
		Resource: r.resource,
		Scopes:   []string{"read", "write"},
		Upstream: oauthproxy.Upstream{
			AuthURL:      r.idpURL + "/" + tenant + "/oauth2/v2.0/authorize",
			TokenURL:     r.idpURL + "/" + tenant + "/oauth2/v2.0/token",
			ClientID:     apiClient,
			ClientSecret: apiSecret,
			ScopePrefix:  "api://" + apiClient + "/",
		},
		SigningKey:    signingKey,
		RedirectHosts: []string{"app.example.com"},
		ServerName:    "mcpguard test",
	}
}

// proxy is the first replica.
func (r *rig) proxy() *oauthproxy.Proxy { return r.proxies[0] }

// refusals sums a reason's count over the replicas.
func (r *rig) refusals(reason string) float64 {
	var n float64
	for _, p := range r.proxies {
		n += oauthproxy.Refusals(p, reason)
	}
	return n
}

// wire records the secrets that cross between the proxy and the identity
// provider, so that a test can look for them in the store.
type wire struct {
	mu      sync.Mutex
	secrets []string
	// authorize are the query strings of upstream authorize requests.
	authorize []url.Values
}

func (w *wire) add(s ...string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, x := range s {
		if x != "" {
			w.secrets = append(w.secrets, x)
		}
	}
}

func (w *wire) record(h http.Handler) http.Handler {
	return http.HandlerFunc(func(rw http.ResponseWriter, req *http.Request) {
		if strings.HasSuffix(req.URL.Path, "/authorize") {
			q := req.URL.Query()
			w.mu.Lock()
			w.authorize = append(w.authorize, q)
			w.mu.Unlock()
			w.add(q.Get("state"), q.Get("code_challenge"))
		}
		if !strings.HasSuffix(req.URL.Path, "/token") {
			h.ServeHTTP(rw, req)
			return
		}
		body, _ := io.ReadAll(req.Body)
		form, _ := url.ParseQuery(string(body))
		w.add(form.Get("code"), form.Get("code_verifier"), form.Get("refresh_token"))
		req.Body = io.NopCloser(bytes.NewReader(body))
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		var tok struct {
			AccessToken  string `json:"access_token"`
			RefreshToken string `json:"refresh_token"`
		}
		_ = json.Unmarshal(rec.Body.Bytes(), &tok)
		w.add(tok.AccessToken, tok.RefreshToken)
		for k, v := range rec.Header() {
			rw.Header()[k] = v
		}
		rw.WriteHeader(rec.Code)
		_, _ = rw.Write(rec.Body.Bytes())
	})
}

func (w *wire) all() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]string(nil), w.secrets...)
}

// browser is the user's browser: cookies, redirects followed, stopping when
// sent to the MCP client's loopback redirect URI.
type browser struct {
	t  testing.TB
	hc *http.Client
}

func newBrowser(t testing.TB) *browser {
	jar, _ := cookiejar.New(nil)
	return &browser{t: t, hc: &http.Client{
		Jar:     jar,
		Timeout: 10 * time.Second,
		CheckRedirect: func(req *http.Request, via []*http.Request) error {
			if req.URL.Host == clientHost || len(via) >= 10 {
				return http.ErrUseLastResponse
			}
			return nil
		},
	}}
}

// page is what the browser ended on.
type page struct {
	status int
	body   string
	// back is where the browser was sent to the client, if it was.
	back *url.URL
}

func (b *browser) do(req *http.Request) page {
	b.t.Helper()
	resp, err := b.hc.Do(req)
	if err != nil {
		b.t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	pg := page{status: resp.StatusCode, body: string(body)}
	if loc := resp.Header.Get("Location"); loc != "" && resp.StatusCode/100 == 3 {
		u, err := url.Parse(loc)
		if err != nil {
			b.t.Fatal(err)
		}
		pg.back = resp.Request.URL.ResolveReference(u)
	}
	return pg
}

func (b *browser) get(u string) page {
	req, err := http.NewRequest(http.MethodGet, u, nil)
	if err != nil {
		b.t.Fatal(err)
	}
	return b.do(req)
}

func (b *browser) post(u string, form url.Values, header http.Header) page {
	req, err := http.NewRequest(http.MethodPost, u, strings.NewReader(form.Encode()))
	if err != nil {
		b.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	for k, v := range header {
		req.Header[k] = v
	}
	return b.do(req)
}

var (
	hiddenID   = regexp.MustCompile(`name="id" value="([^"]+)"`)
	hiddenCSRF = regexp.MustCompile(`name="csrf" value="([^"]+)"`)
	formAction = regexp.MustCompile(`<form method="post" action="([^"]+)"`)
)

// consentForm is the consent page's form, read as a browser would.
type consentForm struct{ action, id, csrf string }

func (pg page) consent(t testing.TB) consentForm {
	t.Helper()
	a, i, c := formAction.FindStringSubmatch(pg.body), hiddenID.FindStringSubmatch(pg.body), hiddenCSRF.FindStringSubmatch(pg.body)
	if pg.status != http.StatusOK || a == nil || i == nil || c == nil {
		t.Fatalf("no consent form (status %d):\n%s", pg.status, pg.body)
	}
	return consentForm{action: a[1], id: i[1], csrf: c[1]}
}

func (f consentForm) values(decision string) url.Values {
	return url.Values{"id": {f.id}, "csrf": {f.csrf}, "decision": {decision}}
}

// mcpClient is an MCP client as the SDKs are: x/oauth2 with PKCE, state and
// the RFC 8707 resource on both requests.
type mcpClient struct {
	conf     *oauth2.Config
	verifier string
	state    string
	resource string
}

func (r *rig) client(clientID string, scopes ...string) *mcpClient {
	return &mcpClient{
		conf: &oauth2.Config{
			ClientID:    clientID,
			Endpoint:    oauth2.Endpoint{AuthURL: r.base + "/authorize", TokenURL: r.base + "/token", AuthStyle: oauth2.AuthStyleInParams},
			RedirectURL: clientRedirect,
			Scopes:      scopes,
		},
		verifier: oauth2.GenerateVerifier(),
		state:    oauth2.GenerateVerifier()[:24],
		resource: r.resource,
	}
}

func (c *mcpClient) authURL(extra ...oauth2.AuthCodeOption) string {
	opts := append([]oauth2.AuthCodeOption{oauth2.S256ChallengeOption(c.verifier), oauth2.SetAuthURLParam("resource", c.resource)}, extra...)
	return c.conf.AuthCodeURL(c.state, opts...)
}

func (c *mcpClient) exchange(code string) (*oauth2.Token, error) {
	return c.conf.Exchange(context.Background(), code, oauth2.VerifierOption(c.verifier), oauth2.SetAuthURLParam("resource", c.resource))
}

// register is RFC 7591 registration, as the SDKs send it.
func (r *rig) register(t testing.TB, redirects ...string) (string, int) {
	t.Helper()
	if len(redirects) == 0 {
		redirects = []string{clientRedirect}
	}
	body, _ := json.Marshal(map[string]any{
		"redirect_uris": redirects, "client_name": "Test Client", "token_endpoint_auth_method": "none",
		"grant_types": []string{"authorization_code", "refresh_token"}, "response_types": []string{"code"},
	})
	resp, err := http.Post(r.base+"/register", "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out struct {
		ClientID string `json:"client_id"`
	}
	_ = json.NewDecoder(resp.Body).Decode(&out)
	return out.ClientID, resp.StatusCode
}

// code runs authorize, consent and the upstream leg in a fresh browser and
// returns the proxy's code, checking state and iss.
func (r *rig) code(t testing.TB, c *mcpClient) string {
	t.Helper()
	b := newBrowser(t)
	form := b.get(c.authURL()).consent(t)
	pg := b.post(form.action, form.values("approve"), nil)
	if pg.back == nil || pg.back.Host != clientHost {
		t.Fatalf("not sent back to the client (status %d):\n%s", pg.status, pg.body)
	}
	q := pg.back.Query()
	if q.Get("error") != "" {
		t.Fatalf("authorization failed: %s: %s", q.Get("error"), q.Get("error_description"))
	}
	if q.Get("state") != c.state || q.Get("iss") != r.base || q.Get("code") == "" {
		t.Fatalf("authorization response: state %q (want %q), iss %q (want %q), code %q", q.Get("state"), c.state, q.Get("iss"), r.base, q.Get("code"))
	}
	return q.Get("code")
}

// login is the whole flow for a registered client: its tokens.
func (r *rig) login(t testing.TB, c *mcpClient) *oauth2.Token {
	t.Helper()
	tok, err := c.exchange(r.code(t, c))
	if err != nil {
		t.Fatalf("token exchange: %v", err)
	}
	return tok
}

// postToken is a raw token request: status and the RFC 6749 error code.
func (r *rig) postToken(t testing.TB, form url.Values) (int, string, map[string]any) {
	t.Helper()
	resp, err := http.PostForm(r.base+"/token", form)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&body)
	code, _ := body["error"].(string)
	return resp.StatusCode, code, body
}

func (r *rig) refresh(t testing.TB, clientID, rt string) (int, string, map[string]any) {
	t.Helper()
	return r.postToken(t, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {rt}, "client_id": {clientID}})
}

func (r *rig) revoke(t testing.TB, form url.Values) int {
	t.Helper()
	resp, err := http.PostForm(r.base+"/revoke", form)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// withResource serves the proxy and a stand-in MCP endpoint that answers
// 401 with the RFC 9728 challenge unless the bearer token resolves.
func (r *rig) withResource(p *oauthproxy.Proxy, proxy http.Handler, path string) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/", proxy)
	mux.Handle("GET /.well-known/oauth-protected-resource"+path, auth.ProtectedResourceMetadataHandler(p.Metadata()))
	mux.HandleFunc(path, func(w http.ResponseWriter, req *http.Request) {
		tok, ok := strings.CutPrefix(req.Header.Get("Authorization"), "Bearer ")
		if ok {
			if _, err := p.Resolve(req.Context(), tok); err == nil {
				w.WriteHeader(http.StatusOK)
				return
			}
		}
		w.Header().Set("WWW-Authenticate", `Bearer resource_metadata="`+r.base+"/.well-known/oauth-protected-resource"+path+`", scope="read write"`)
		w.WriteHeader(http.StatusUnauthorized)
	})
	return mux
}
