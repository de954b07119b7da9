package exchange

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jws"
	"github.com/lestrrat-go/jwx/v2/jwt"
	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"
	"golang.org/x/sync/singleflight"

	"github.com/mcpguard/mcpguard/internal/authn"
	"github.com/mcpguard/mcpguard/internal/store"
)

// The grants Keycloak can turn an Entra token into its own with.
const (
	// GrantTokenExchange is RFC 8693 external-to-internal token exchange.
	GrantTokenExchange = "token-exchange"
	// GrantJWTBearer is the RFC 7523 JWT authorization grant.
	GrantJWTBearer = "jwt-bearer"
)

// KeycloakConfig configures the Keycloak role source.
type KeycloakConfig struct {
	ServerURL    string
	Realm        string
	ClientID     string
	ClientSecret string
	// IDPAlias is the identity provider (Entra) as Keycloak knows it.
	IDPAlias string
	// Grant is GrantTokenExchange (default) or GrantJWTBearer.
	Grant string
	// Audience and Scope are passed on when set.
	Audience string
	Scope    string
	// ClientAuth is "basic" (default) or "post".
	ClientAuth string
	// Timeout bounds one attempt (default 5 s); Retries more attempts follow
	// an unavailable Keycloak (default 2), with backoff.
	Timeout time.Duration
	Retries int
	// Skew is taken off a result's lifetime before it is reused no more.
	Skew       time.Duration
	HTTPClient *http.Client
}

// Keycloak is the role source that exchanges the caller's verified Entra
// token at Keycloak and reads the roles of the Keycloak token it gets back,
// after verifying it. Results are cached by the SHA-256 of the Entra token,
// sealed when the store is shared, until either token expires; concurrent
// first requests with one token make one exchange.
type Keycloak struct {
	cfg      KeycloakConfig
	tokenURL string
	issuer   string
	keys     *authn.KeySet
	cache    store.Store
	flight   singleflight.Group
	logger   *slog.Logger

	// local holds decoded results in process, in front of cache: a hit costs
	// a map lookup, not a decode (and, with Redis, no round trip).
	localMu sync.RWMutex
	local   map[[32]byte]*Authorization
	noLocal bool // benchmarks measure the store alone

	exchanges atomic.Int64
	// downUntil (unix nanoseconds): after an exchange found Keycloak
	// unavailable, further exchanges fail fast until then instead of
	// queueing retries against a server that is down.
	downUntil atomic.Int64
}

// Breaker is how long exchanges fail fast after Keycloak was found unavailable.
const Breaker = 2 * time.Second

// NewKeycloak returns the Keycloak role source; cache holds results.
func NewKeycloak(cfg KeycloakConfig, cache store.Store, logger *slog.Logger) (*Keycloak, error) {
	if cfg.ServerURL == "" || cfg.Realm == "" || cfg.ClientID == "" {
		return nil, errors.New("keycloak: server URL, realm and client id are required")
	}
	if cfg.Grant == "" {
		cfg.Grant = GrantTokenExchange
	}
	if cfg.Grant != GrantTokenExchange && cfg.Grant != GrantJWTBearer {
		return nil, fmt.Errorf("keycloak: unknown grant %q", cfg.Grant)
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = 5 * time.Second
	}
	if cfg.Retries == 0 {
		cfg.Retries = 2
	}
	if cfg.Skew == 0 {
		cfg.Skew = 30 * time.Second
	}
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = &http.Client{}
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	realm := strings.TrimRight(cfg.ServerURL, "/") + "/realms/" + url.PathEscape(cfg.Realm)
	return &Keycloak{
		cfg:      cfg,
		tokenURL: realm + "/protocol/openid-connect/token",
		issuer:   realm,
		keys:     &authn.KeySet{JWKSURI: realm + "/protocol/openid-connect/certs", RefreshMinInterval: 10 * time.Second, HTTPClient: cfg.HTTPClient},
		cache:    cache,
		logger:   logger,
		local:    map[[32]byte]*Authorization{},
	}, nil
}

// Name implements Source.
func (*Keycloak) Name() string { return "keycloak" }

// Exchanges counts the exchanges made (cache misses that reached Keycloak).
func (k *Keycloak) Exchanges() int64 { return k.exchanges.Load() }

// cached is what the cache keeps: roles and claims, never a token.
type cached struct {
	Authorization
	Until time.Time `json:"until"`
}

// Resolve implements Source.
func (k *Keycloak) Resolve(ctx context.Context, id *authn.Identity, token string) (*Authorization, error) {
	if a := k.fromLocal(id.Key); a != nil {
		return a, nil
	}
	key := "roles:keycloak:" + hex.EncodeToString(id.Key[:])
	if a := k.fromCache(ctx, key); a != nil {
		k.toLocal(id.Key, a)
		return a, nil
	}
	v, err, _ := k.flight.Do(key, func() (any, error) {
		if a := k.fromCache(ctx, key); a != nil {
			return a, nil
		}
		if time.Now().UnixNano() < k.downUntil.Load() {
			return nil, fmt.Errorf("%w: keycloak failed moments ago", ErrUnavailable)
		}
		// The exchange outlives one caller's cancelled request: others wait on it.
		a, err := k.exchange(context.WithoutCancel(ctx), token)
		if err != nil {
			if errors.Is(err, ErrUnavailable) {
				k.downUntil.Store(time.Now().Add(Breaker).UnixNano())
			}
			return nil, err
		}
		until := a.Expiry
		if id.Expiry.Before(until) {
			until = id.Expiry
		}
		until = until.Add(-k.cfg.Skew)
		a.Expiry = until
		if ttl := time.Until(until); ttl > 0 {
			b, _ := json.Marshal(cached{Authorization: *a, Until: until})
			if err := k.cache.Set(ctx, key, b, ttl); err != nil {
				k.logger.Warn("role cache write failed", "error", err)
			}
			k.toLocal(id.Key, a)
		}
		return a, nil
	})
	if err != nil {
		return nil, err
	}
	return v.(*Authorization), nil
}

// maxLocal bounds the in-process results.
const maxLocal = 10000

func (k *Keycloak) fromLocal(key [32]byte) *Authorization {
	if k.noLocal {
		return nil
	}
	k.localMu.RLock()
	a := k.local[key]
	k.localMu.RUnlock()
	if a == nil || !time.Now().Before(a.Expiry) {
		return nil
	}
	return a
}

func (k *Keycloak) toLocal(key [32]byte, a *Authorization) {
	if k.noLocal {
		return
	}
	now := time.Now()
	k.localMu.Lock()
	defer k.localMu.Unlock()
	if len(k.local) >= maxLocal {
		for x, v := range k.local {
			if !now.Before(v.Expiry) || len(k.local) >= maxLocal*3/4 {
				delete(k.local, x)
			}
		}
	}
	k.local[key] = a
}

func (k *Keycloak) fromCache(ctx context.Context, key string) *Authorization {
	b, err := k.cache.Get(ctx, key)
	if err != nil {
		if !errors.Is(err, store.ErrNotFound) {
			k.logger.Warn("role cache read failed", "error", err)
		}
		return nil
	}
	var c cached
	if json.Unmarshal(b, &c) != nil || !time.Now().Before(c.Until) {
		return nil
	}
	a := c.Authorization
	a.Expiry = c.Until
	return &a
}

// exchange obtains a Keycloak token for the caller, retrying an unavailable
// Keycloak with backoff, and turns its verified claims into roles.
func (k *Keycloak) exchange(ctx context.Context, token string) (*Authorization, error) {
	params := url.Values{}
	switch k.cfg.Grant {
	case GrantTokenExchange:
		params.Set("grant_type", "urn:ietf:params:oauth:grant-type:token-exchange")
		params.Set("subject_token", token)
		params.Set("subject_token_type", "urn:ietf:params:oauth:token-type:jwt")
		params.Set("subject_issuer", k.cfg.IDPAlias)
		params.Set("requested_token_type", "urn:ietf:params:oauth:token-type:access_token")
		if k.cfg.Audience != "" {
			params.Set("audience", k.cfg.Audience)
		}
	case GrantJWTBearer:
		params.Set("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer")
		params.Set("assertion", token)
	}
	cc := clientcredentials.Config{
		ClientID: k.cfg.ClientID, ClientSecret: k.cfg.ClientSecret, TokenURL: k.tokenURL,
		EndpointParams: params, AuthStyle: oauth2.AuthStyleInHeader,
	}
	if k.cfg.ClientAuth == "post" {
		cc.AuthStyle = oauth2.AuthStyleInParams
	}
	if k.cfg.Scope != "" {
		cc.Scopes = strings.Fields(k.cfg.Scope)
	}
	ctx = context.WithValue(ctx, oauth2.HTTPClient, k.cfg.HTTPClient)

	var lastErr error
	backoff := 200 * time.Millisecond
	for attempt := 0; attempt <= k.cfg.Retries; attempt++ {
		if attempt > 0 {
			time.Sleep(backoff)
			backoff *= 2
		}
		actx, cancel := context.WithTimeout(ctx, k.cfg.Timeout)
		k.exchanges.Add(1)
		tok, err := cc.Token(actx)
		cancel()
		if err == nil {
			return k.authorization(ctx, tok.AccessToken)
		}
		lastErr = k.classify(err)
		if !errors.Is(lastErr, ErrUnavailable) {
			return nil, lastErr
		}
		k.logger.Warn("keycloak exchange failed", "attempt", attempt+1, "error", lastErr)
	}
	return nil, lastErr
}

// classify tells a refusal of this caller (4xx) from an unavailable Keycloak.
func (k *Keycloak) classify(err error) error {
	var re *oauth2.RetrieveError
	if errors.As(err, &re) && re.Response != nil {
		status := re.Response.StatusCode
		if status >= 400 && status < 500 && status != http.StatusTooManyRequests && status != http.StatusRequestTimeout {
			reason := re.ErrorDescription
			if reason == "" {
				reason = re.ErrorCode
			}
			if reason == "" {
				reason = http.StatusText(status)
			}
			return fmt.Errorf("%w: keycloak refused the exchange (%d): %s", ErrRefused, status, reason)
		}
		return fmt.Errorf("%w: keycloak answered %d", ErrUnavailable, status)
	}
	return fmt.Errorf("%w: %v", ErrUnavailable, err)
}

// authorization verifies the Keycloak token (realm keys, RS256, iss, exp,
// azp) and lays out its roles.
func (k *Keycloak) authorization(ctx context.Context, raw string) (*Authorization, error) {
	msg, err := jws.ParseString(raw)
	if err != nil || len(msg.Signatures()) != 1 {
		return nil, fmt.Errorf("%w: keycloak token is malformed", ErrRefused)
	}
	hdr := msg.Signatures()[0].ProtectedHeaders()
	if hdr.Algorithm() != jwa.RS256 {
		return nil, fmt.Errorf("%w: keycloak token signed with %s, want RS256", ErrRefused, hdr.Algorithm())
	}
	key, err := k.keys.Key(ctx, hdr.KeyID(), time.Now())
	if err != nil {
		var ae *authn.Error
		if errors.As(err, &ae) && ae.Status == http.StatusServiceUnavailable {
			return nil, fmt.Errorf("%w: keycloak keys: %v", ErrUnavailable, err)
		}
		return nil, fmt.Errorf("%w: keycloak token: %v", ErrRefused, err)
	}
	tok, err := jwt.ParseString(raw, jwt.WithKey(jwa.RS256, key), jwt.WithValidate(true),
		jwt.WithIssuer(k.issuer), jwt.WithAcceptableSkew(k.cfg.Skew), jwt.WithRequiredClaim(jwt.ExpirationKey))
	if err != nil {
		return nil, fmt.Errorf("%w: keycloak token rejected: %v", ErrRefused, err)
	}
	claims, err := tok.AsMap(ctx)
	if err != nil {
		return nil, fmt.Errorf("%w: keycloak token claims: %v", ErrRefused, err)
	}
	if azp, _ := claims["azp"].(string); azp != k.cfg.ClientID {
		return nil, fmt.Errorf("%w: keycloak token was issued to %q, not %q", ErrRefused, azp, k.cfg.ClientID)
	}
	var realm []string
	if ra, ok := claims["realm_access"].(map[string]any); ok {
		realm = anyStrings(ra["roles"])
	}
	client := map[string][]string{}
	if ra, ok := claims["resource_access"].(map[string]any); ok {
		for c, v := range ra {
			if m, ok := v.(map[string]any); ok {
				client[c] = anyStrings(m["roles"])
			}
		}
	}
	a := newAuthorization("keycloak", realm, client)
	a.Claims = claims
	a.Expiry = tok.Expiration()
	return a, nil
}

func anyStrings(v any) []string {
	list, _ := v.([]any)
	out := make([]string, 0, len(list))
	for _, x := range list {
		if s, ok := x.(string); ok && !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	return out
}
