// Package oauthproxy is the OAuth 2.1 authorization server façade in front of
// Entra: MCP clients discover it (RFC 8414), register (RFC 7591) or name a
// Client ID Metadata Document, authorize with PKCE, consent, and are sent on
// to Entra with the proxy's own PKCE and state and without the RFC 8707
// resource parameter that Entra refuses. The proxy then issues its own
// short-lived access tokens (signed JWTs, audience the MCP resource) and
// rotating refresh tokens, and Resolve turns its access token back into the
// caller's upstream Entra token, refreshed upstream when near expiry.
//
// Every piece of state another replica may need (clients, pending
// authorizations, codes, refresh families, upstream tokens) lives in the
// sealed store it is given, keyed by hashes of secrets; nothing stays in this
// process's memory. It does not verify Entra tokens, decide access, or read
// configuration: the server does those, and hands it a typed Config.
package oauthproxy

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/oauth2"

	"github.com/mcpguard/mcpguard/internal/store"
)

// Config is the proxy's configuration, read and validated by internal/config.
type Config struct {
	// Issuer identifies this authorization server (RFC 8414, RFC 9207) and is
	// the base of its endpoint URLs: the server's public base URL
	// (AZURE_BASE_URL). Handler serves the endpoints at the root of the mux
	// it is mounted on, as the server serves /mcp.
	Issuer string
	// Resource is the MCP endpoint's URL: the only RFC 8707 resource a client
	// may name, and the audience of every access token the proxy issues.
	Resource string
	// Scopes are the scopes clients may request, in short form
	// (AZURE_REQUIRED_SCOPES: read, write). The Entra form
	// (Upstream.ScopePrefix + "read") is accepted as the same scope.
	Scopes []string
	// Upstream is Entra (or the development identity provider).
	Upstream Upstream
	// SigningKey is JWT_SIGNING_KEY: comma-separated base64 secrets of at
	// least 32 bytes (`mcpguard keys generate`). Each derives an Ed25519 key;
	// the first signs, all verify and are published at the JWKS endpoint.
	SigningKey string
	// RedirectHosts are the hosts an https redirect URI may name ("host" any
	// port, or "host:port"). Loopback http redirect URIs are always allowed;
	// nothing else is.
	RedirectHosts []string
	// ServerName is shown on the consent page.
	ServerName string

	// Lifetimes; zero takes the default.
	AccessTokenTTL  time.Duration // 10 minutes
	RefreshTokenTTL time.Duration // 14 days: a refresh token unused this long expires
	SessionTTL      time.Duration // 30 days: one sign-in's refresh tokens last at most this long
	CodeTTL         time.Duration // 5 minutes, and never more
	ClientTTL       time.Duration // 30 days: a registered client unused this long is forgotten
	ConsentTTL      time.Duration // 10 minutes: consent page and upstream sign-in

	// CIMD bounds the fetching of Client ID Metadata Documents.
	CIMD CIMD

	// RateLimit is how many registrations and authorization requests one
	// client address may make a minute (OAUTH_RATE_LIMIT); zero: no limit.
	RateLimit int
}

// Upstream is the identity provider the proxy signs users in with.
type Upstream struct {
	// AuthURL and TokenURL are Entra's v2 endpoints for the tenant:
	// {authority}/{tenant}/oauth2/v2.0/authorize and …/token.
	AuthURL  string
	TokenURL string
	// ClientID and ClientSecret are the API app's (AZURE_CLIENT_ID,
	// AZURE_CLIENT_SECRET); its redirect URI is Issuer + "/auth/callback".
	ClientID     string
	ClientSecret string
	// ScopePrefix turns a scope into Entra's form: AZURE_APP_ID_URI + "/".
	ScopePrefix string
	// HTTPClient calls the token endpoint; nil: a client with a 10 s timeout.
	HTTPClient *http.Client
}

// CIMD bounds the fetching of Client ID Metadata Documents.
type CIMD struct {
	Timeout  time.Duration // 5 seconds
	MaxBytes int64         // 64 KiB
	CacheTTL time.Duration // 1 hour
	// ForTests loosens the fetch for tests whose document server runs on
	// loopback. Never set it outside tests.
	ForTests CIMDTestHooks
}

// CIMDTestHooks exist for tests only: the document server of a test is on
// loopback with a self-signed certificate.
type CIMDTestHooks struct {
	// AllowLoopback lets documents be fetched from loopback addresses (and
	// only those: private, link-local and other special ranges stay refused).
	AllowLoopback bool
	// RootCAs replaces the system roots for document fetches.
	RootCAs *x509.CertPool
}

// Paths of the endpoints Handler serves.
const (
	PathMetadata = "/.well-known/oauth-authorization-server"
	PathJWKS     = "/.well-known/jwks.json"
	PathRegister = "/register"
	PathAuthz    = "/authorize"
	PathConsent  = "/consent"
	PathCallback = "/auth/callback"
	PathToken    = "/token"
	PathRevoke   = "/revoke"
)

// Errors Resolve returns; the server branches on them.
var (
	// ErrNotProxyToken: the token is not one this proxy issued (another
	// issuer, or not a compact JWS at all): try it as an Entra token.
	ErrNotProxyToken = errors.New("oauthproxy: not a token of this proxy")
	// ErrInvalidToken: the token claims to be this proxy's and is not valid
	// (signature, audience, expiry, revoked, sign-in gone): 401.
	ErrInvalidToken = errors.New("oauthproxy: invalid token")
	// ErrUnavailable: the store or the upstream identity provider cannot be
	// reached: 503, the token may be fine.
	ErrUnavailable = errors.New("oauthproxy: unavailable")
)

// Proxy is the authorization server façade: endpoints, and its tokens' resolution.
type Proxy struct {
	cfg      Config
	st       store.Claimer
	logger   *slog.Logger
	keys     *keyring
	oauth    *oauth2.Config // the upstream leg
	upstream *http.Client
	cimd     *http.Client
	now      func() time.Time

	refusals *prometheus.CounterVec
	limit    *limiter // nil: no limit
	// resourcePath is the MCP endpoint's path, for path-suffixed metadata.
	resourcePath string
	secure       bool // cookies get Secure: the issuer is https
}

// Defaults of the lifetimes in Config.
const (
	defaultAccessTTL  = 10 * time.Minute
	defaultRefreshTTL = 14 * 24 * time.Hour
	defaultSessionTTL = 30 * 24 * time.Hour
	maxCodeTTL        = 5 * time.Minute
	defaultClientTTL  = 30 * 24 * time.Hour
	defaultConsentTTL = 10 * time.Minute
)

// New checks cfg and returns a Proxy keeping its state in st, which must seal
// what it stores (store.Encrypted) and claim keys atomically (store.Claimer).
func New(ctx context.Context, cfg Config, st store.Store, logger *slog.Logger) (*Proxy, error) {
	_ = ctx // reserved: nothing is fetched at start
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	var problems []string
	bad := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }
	issuer, err := url.Parse(cfg.Issuer)
	if err != nil || (issuer.Scheme != "https" && !(issuer.Scheme == "http" && isLoopbackHost(issuer.Hostname()))) ||
		issuer.Host == "" || issuer.RawQuery != "" || issuer.Fragment != "" || strings.HasSuffix(cfg.Issuer, "/") {
		bad("Issuer %q must be an https URL (http only on loopback) without query, fragment or trailing slash", cfg.Issuer)
	}
	resource, err := url.Parse(cfg.Resource)
	if err != nil || resource.Host == "" || (resource.Scheme != "https" && resource.Scheme != "http") {
		bad("Resource %q is not an http(s) URL", cfg.Resource)
	}
	if len(cfg.Scopes) == 0 {
		bad("Scopes: at least one scope")
	}
	for _, s := range cfg.Scopes {
		if s == "" || strings.ContainsAny(s, " \"\\") || strings.Contains(s, "://") || s == scopeOffline {
			bad("Scopes: %q is not a short scope name", s)
		}
	}
	u := cfg.Upstream
	for _, e := range []struct{ name, v string }{{"Upstream.AuthURL", u.AuthURL}, {"Upstream.TokenURL", u.TokenURL}} {
		if pu, err := url.Parse(e.v); err != nil || pu.Host == "" || (pu.Scheme != "https" && !(pu.Scheme == "http" && isLoopbackHost(pu.Hostname()))) {
			bad("%s %q must be an https URL (http only on loopback)", e.name, e.v)
		}
	}
	if u.ClientID == "" || u.ClientSecret == "" {
		bad("Upstream.ClientID and Upstream.ClientSecret are required (AZURE_CLIENT_ID, AZURE_CLIENT_SECRET)")
	}
	if u.ScopePrefix == "" || !strings.HasSuffix(u.ScopePrefix, "/") {
		bad("Upstream.ScopePrefix %q must end with / (AZURE_APP_ID_URI + \"/\")", u.ScopePrefix)
	}
	keys, err := parseSigningKeys(cfg.SigningKey)
	if err != nil {
		bad("SigningKey (JWT_SIGNING_KEY): %v", err)
	}
	if cfg.CodeTTL > maxCodeTTL {
		bad("CodeTTL %s is longer than %s", cfg.CodeTTL, maxCodeTTL)
	}
	for _, h := range cfg.RedirectHosts {
		if h == "" || strings.ContainsAny(h, "/?#@ ") {
			bad("RedirectHosts: %q is not a host or host:port", h)
		}
	}
	if _, ok := st.(*store.Encrypted); !ok {
		bad("the store must be sealed (STORAGE_ENCRYPTION_KEY): the proxy keeps upstream tokens in it")
	}
	claimer, ok := st.(store.Claimer)
	if !ok {
		bad("the store cannot claim keys atomically")
	}
	if len(problems) > 0 {
		return nil, fmt.Errorf("oauthproxy: %s", strings.Join(problems, "; "))
	}
	cfg.Issuer = issuer.String()
	setDefault(&cfg.AccessTokenTTL, defaultAccessTTL)
	setDefault(&cfg.RefreshTokenTTL, defaultRefreshTTL)
	setDefault(&cfg.SessionTTL, defaultSessionTTL)
	setDefault(&cfg.CodeTTL, maxCodeTTL)
	setDefault(&cfg.ClientTTL, defaultClientTTL)
	setDefault(&cfg.ConsentTTL, defaultConsentTTL)
	setDefault(&cfg.CIMD.Timeout, 5*time.Second)
	setDefault(&cfg.CIMD.CacheTTL, time.Hour)
	if cfg.CIMD.MaxBytes <= 0 {
		cfg.CIMD.MaxBytes = 64 << 10
	}
	cfg.Scopes = slices.Clone(cfg.Scopes)
	if cfg.ServerName == "" {
		cfg.ServerName = "mcpguard"
	}
	hc := u.HTTPClient
	if hc == nil {
		hc = &http.Client{Timeout: 10 * time.Second}
	}
	p := &Proxy{
		cfg:    cfg,
		st:     claimer,
		logger: logger,
		keys:   keys,
		oauth: &oauth2.Config{
			ClientID:     u.ClientID,
			ClientSecret: u.ClientSecret,
			Endpoint:     oauth2.Endpoint{AuthURL: u.AuthURL, TokenURL: u.TokenURL, AuthStyle: oauth2.AuthStyleInParams},
			RedirectURL:  cfg.Issuer + PathCallback,
		},
		upstream:     hc,
		now:          time.Now,
		resourcePath: strings.TrimRight(resource.EscapedPath(), "/"),
		secure:       issuer.Scheme == "https",
		refusals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mcpguard_oauth_refusals_total",
			Help: "Requests the OAuth authorization server façade refused, by reason.",
		}, []string{"reason"}),
	}
	p.cimd = p.newCIMDClient()
	p.limit = newLimiter(cfg.RateLimit, func() time.Time { return p.now() })
	return p, nil
}

func setDefault(d *time.Duration, v time.Duration) {
	if *d <= 0 {
		*d = v
	}
}

// Collector is the proxy's Prometheus series (refusals by reason), for the
// server's registry.
func (p *Proxy) Collector() prometheus.Collector { return p.refusals }

// refuse counts a refusal and logs it; detail never carries a secret.
func (p *Proxy) refuse(ctx context.Context, reason, detail string, attrs ...any) {
	p.refusals.WithLabelValues(reason).Inc()
	level := slog.LevelInfo
	if reason == "token_expired" { // routine: clients refresh on the 401
		level = slog.LevelDebug
	}
	p.logger.LogAttrs(ctx, level, "oauth request refused",
		append([]slog.Attr{slog.String("reason", reason), slog.String("detail", detail)}, argsToAttrs(attrs)...)...)
}

func argsToAttrs(args []any) []slog.Attr {
	var out []slog.Attr
	for i := 0; i+1 < len(args); i += 2 {
		if k, ok := args[i].(string); ok {
			out = append(out, slog.Any(k, args[i+1]))
		}
	}
	return out
}

// Handler serves every endpoint of the authorization server on its own path
// (the Path constants, and the metadata also at PathMetadata + the MCP
// endpoint's path). Mount it on the server's mux at those paths.
func (p *Proxy) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle(PathMetadata, cors(http.MethodGet, p.serveMetadata))
	if p.resourcePath != "" {
		mux.Handle(PathMetadata+p.resourcePath, cors(http.MethodGet, p.serveMetadata))
	}
	mux.Handle(PathJWKS, cors(http.MethodGet, p.serveJWKS))
	mux.Handle(PathRegister, cors(http.MethodPost, p.serveRegister))
	mux.Handle(PathToken, cors(http.MethodPost, p.serveToken))
	mux.Handle(PathRevoke, cors(http.MethodPost, p.serveRevoke))
	mux.HandleFunc("GET "+PathAuthz, p.serveAuthorize)
	// The consent form is the one browser POST: refuse it cross-origin, on
	// top of its token and cookie.
	cop := http.NewCrossOriginProtection()
	cop.SetDenyHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.refuse(r.Context(), "csrf", "cross-origin consent POST")
		p.page(w, http.StatusForbidden, "This request came from another site and was refused.")
	}))
	mux.Handle("POST "+PathConsent, cop.Handler(http.HandlerFunc(p.serveConsent)))
	mux.HandleFunc("GET "+PathCallback, p.serveCallback)
	return mux
}

// cors lets browser-based MCP clients call the machine endpoints (and
// answers their preflights). They take no cookies, so any origin may.
func cors(method string, h http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Access-Control-Allow-Origin", "*")
		switch {
		case r.Method == http.MethodOptions:
			w.Header().Set("Access-Control-Allow-Methods", method+", OPTIONS")
			w.Header().Set("Access-Control-Allow-Headers", "Authorization, Content-Type, MCP-Protocol-Version")
			w.Header().Set("Access-Control-Max-Age", "600")
			w.WriteHeader(http.StatusNoContent)
		case r.Method == method, method == http.MethodGet && r.Method == http.MethodHead:
			h(w, r)
		default:
			w.Header().Set("Allow", method+", OPTIONS")
			writeJSON(w, http.StatusMethodNotAllowed, oauthError{Error: "invalid_request", Description: method + " only"})
		}
	})
}
