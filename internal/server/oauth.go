package server

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/modelcontextprotocol/go-sdk/oauthex"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/mcpguard/mcpguard/internal/authn"
	"github.com/mcpguard/mcpguard/internal/config"
	"github.com/mcpguard/mcpguard/internal/oauthproxy"
	"github.com/mcpguard/mcpguard/internal/store"
)

// authorizationServer is the OAuth façade (internal/oauthproxy) as this
// server uses it: its endpoints, what the RFC 9728 metadata must say while
// it is on, and the resolution of the tokens it issued to the Entra access
// tokens they stand for.
type authorizationServer interface {
	// Handler serves the façade's endpoints, each on its own path (facadePaths).
	Handler() http.Handler
	// Resolve returns the upstream Entra access token a token of the
	// façade stands for. errNotFacadeToken: the token is not one of the
	// façade's (it may be a direct Entra token); errFacadeUnavailable: the
	// store or Entra cannot be reached (503); any other error refuses the
	// token (401).
	Resolve(ctx context.Context, token string) (upstream string, err error)
	// Metadata names the façade as the authorization server, with the
	// scopes clients ask it for.
	Metadata() *oauthex.ProtectedResourceMetadata
}

// The façade's Resolve errors the server branches on.
var (
	errNotFacadeToken    = oauthproxy.ErrNotProxyToken
	errFacadeUnavailable = oauthproxy.ErrUnavailable
)

// facadePaths are the façade's endpoints, served on the MCP listener beside
// the MCP endpoint; its metadata also at the path-suffixed form (RFC 8414 §3.1).
var facadePaths = struct {
	metadata, jwks, register, authorize, consent, callback, token, revoke string
}{
	metadata: oauthproxy.PathMetadata, jwks: oauthproxy.PathJWKS, register: oauthproxy.PathRegister,
	authorize: oauthproxy.PathAuthz, consent: oauthproxy.PathConsent, callback: oauthproxy.PathCallback,
	token: oauthproxy.PathToken, revoke: oauthproxy.PathRevoke,
}

// newAuthorizationServer builds the façade from the configuration: this
// server's public URL is its issuer, the MCP endpoint the one resource its
// tokens are for, and Entra (the API application, with its secret) the
// identity provider users sign in with.
func newAuthorizationServer(ctx context.Context, cfg *config.Config, st store.Store, signingKey string, opts Options) (authorizationServer, error) {
	endpoint := "/mcp"
	if cfg.Transport == config.TransportSSE {
		endpoint = "/sse"
	}
	entra := cfg.Azure.AuthorityHost + "/" + cfg.Azure.TenantID + "/oauth2/v2.0"
	pc := oauthproxy.Config{
		Issuer:   cfg.Azure.BaseURL,
		Resource: cfg.Azure.BaseURL + endpoint,
		Scopes:   cfg.Azure.RequiredScopes,
		Upstream: oauthproxy.Upstream{
			AuthURL: entra + "/authorize", TokenURL: entra + "/token",
			ClientID: cfg.Azure.ClientID, ClientSecret: cfg.Azure.ClientSecret,
			ScopePrefix: cfg.Azure.AppIDURI + "/",
		},
		SigningKey:      signingKey,
		RedirectHosts:   cfg.OAuthProxy.RedirectHosts,
		ServerName:      cfg.ServerName,
		AccessTokenTTL:  cfg.OAuthProxy.AccessTokenTTL,
		RefreshTokenTTL: cfg.OAuthProxy.RefreshTokenTTL,
		SessionTTL:      cfg.OAuthProxy.SessionTTL,
		RateLimit:       cfg.OAuthProxy.RateLimit,
	}
	if opts.OAuthProxy != nil {
		opts.OAuthProxy(&pc)
	}
	p, err := oauthproxy.New(ctx, pc, st, opts.Logger)
	if err != nil {
		return nil, fmt.Errorf("OAUTH_PROXY: %w", err)
	}
	return p, nil
}

// proxyStore is where the façade keeps clients, pending logins, codes,
// refresh families and upstream tokens: Redis when configured, so that any
// replica continues any flow, else memory; sealed either way. There is no
// fallback to memory here, unlike the role cache: a revocation or a spent
// code written to memory while Redis is down would be undone when Redis
// answers again (the old record is still there), so a Redis outage refuses
// logins and proxy tokens instead.
//
// In memory, a full store refuses new records (503) rather than dropping
// live ones: a flood of registrations must not make it forget a spent code,
// a used refresh token or a revocation.
func proxyStore(cfg *config.Config, logger *slog.Logger) (store.Store, error) {
	var st store.Store = store.NewRecords(proxyMemoryRecords)
	if cfg.Redis.URL != "" || cfg.Redis.Host != "" {
		r, err := store.NewRedis(redisOptions(cfg, "mcpguard:oauth:"))
		if err != nil {
			return nil, err
		}
		st = r
	}
	key := cfg.StorageEncryptionKey
	if key == "" {
		// Only in development (config requires the key elsewhere): a key for
		// this process's life, so that nothing is kept in the clear even here.
		key = ephemeralKey()
		logger.Warn("OAUTH_PROXY: no STORAGE_ENCRYPTION_KEY; using a key made up for this process (logins end with it; replicas cannot share it)")
	}
	keys, err := store.ParseKeys(key)
	if err != nil {
		return nil, fmt.Errorf("STORAGE_ENCRYPTION_KEY: %w", err)
	}
	return store.NewEncrypted(st, keys)
}

// proxyMemoryRecords bounds the façade's memory store (no Redis) in records.
const proxyMemoryRecords = 100000

// proxySigningKey is JWT_SIGNING_KEY, or in development, when it is unset,
// a key made up for this process.
func proxySigningKey(cfg *config.Config, logger *slog.Logger) string {
	if cfg.JWTSigningKey != "" {
		return cfg.JWTSigningKey
	}
	logger.Warn("OAUTH_PROXY: no JWT_SIGNING_KEY; using a key made up for this process (its tokens die with it; replicas cannot share it)")
	return ephemeralKey()
}

func ephemeralKey() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b) // crypto/rand.Read does not fail (Go 1.24+)
	return base64.StdEncoding.EncodeToString(b)
}

// bearerCredential authenticates a request: a token of the façade is
// resolved to the upstream Entra access token it stands for, which is then
// verified exactly as a direct Entra token is; any other token is verified
// as it is. It returns the identity, the Entra token it was verified from
// (the one a role source may exchange; never the façade's), and, for a
// façade token, when that token expires (zero otherwise).
//
// The verifier's cache is keyed by the Entra token it verified, never by a
// façade token: every façade token is resolved afresh on every request (the
// store is the truth), so a revoked one is refused from the moment of its
// revocation, on every replica, whatever the caches hold.
func (s *Server) bearerCredential(r *http.Request) (*authn.Identity, string, time.Time, error) {
	raw, err := authn.Bearer(r)
	if err != nil {
		return nil, "", time.Time{}, err
	}
	var until time.Time
	if s.proxy != nil {
		// An Entra token verified before is answered from the verifier's
		// cache without asking the façade: façade tokens never enter that
		// cache, so this skips no façade check.
		if id := s.verifier.Cached(r.Context(), raw); id != nil {
			return id, raw, time.Time{}, nil
		}
		upstream, err := s.proxy.Resolve(r.Context(), raw)
		switch {
		case err == nil:
			s.metrics.proxyToken("resolved")
			until = tokenExpiry(raw)
			raw = upstream
		case errors.Is(err, errNotFacadeToken):
		case errors.Is(err, errFacadeUnavailable):
			s.metrics.proxyToken("unavailable")
			s.logger.Warn("OAuth proxy token could not be resolved", "error", err)
			return nil, "", time.Time{}, &authn.Error{Status: http.StatusServiceUnavailable, Description: "authorization server unavailable"}
		default:
			s.metrics.proxyToken("refused")
			s.logger.Debug("OAuth proxy token refused", "error", err)
			return nil, "", time.Time{}, &authn.Error{Status: http.StatusUnauthorized, Code: "invalid_token", Description: "token rejected"}
		}
	}
	began := time.Now()
	id, err := s.verifier.Verify(r.Context(), raw)
	s.metrics.verified(began, err)
	if err != nil {
		return nil, "", time.Time{}, err
	}
	return id, raw, until, nil
}

// tokenExpiry reads the exp claim of a JWT that has already been verified
// (by the façade), or zero. It only ever shortens how long a stream opened
// with the token lives, so nothing rests on it alone.
func tokenExpiry(raw string) time.Time {
	parts := strings.Split(raw, ".")
	if len(parts) != 3 {
		return time.Time{}
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return time.Time{}
	}
	var claims struct {
		Exp *float64 `json:"exp"`
	}
	if err := json.Unmarshal(payload, &claims); err != nil || claims.Exp == nil {
		return time.Time{}
	}
	return time.Unix(int64(*claims.Exp), 0)
}

// proxyToken counts the façade's tokens presented to the MCP endpoint, by
// result: resolved to an Entra token, refused (revoked, expired, minted
// for another resource, forged), or unavailable (store or Entra down).
func (m *metrics) proxyToken(result string) {
	m.proxyTokens.WithLabelValues(result).Inc()
}

func newProxyTokenCounter() *prometheus.CounterVec {
	return prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "mcpguard_oauth_proxy_tokens_total",
		Help: "OAuth proxy access tokens presented to the MCP endpoint, by result (resolved; refused: revoked, expired, for another resource, forged; unavailable).",
	}, []string{"result"})
}
