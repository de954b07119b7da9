package exchange

import (
	"bytes"
	"context"
	"crypto/sha256"
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
	// Audience and Scope are passed on when set; the Keycloak token's aud
	// must then contain Audience.
	Audience string
	Scope    string
	// ClientAuth is "basic" (default) or "post".
	ClientAuth string
	// SubjectClaim names a claim of the Keycloak token that must equal the
	// caller's Entra object id (oid): what binds the roles to the caller
	// (KEYCLOAK_SETUP.md says how Keycloak is told to put it there). Empty:
	// not checked.
	SubjectClaim string
	// Timeout bounds one attempt (default 5 s); Retries more attempts follow
	// an unavailable Keycloak (default 2; negative: none), with backoff.
	Timeout time.Duration
	Retries int
	// Skew is taken off a result's lifetime before it is reused no more; a
	// token that expires within it is not exchanged at all.
	Skew time.Duration
	// RefusalTTL is how long Keycloak's refusal of a token is remembered
	// (default 30 s, never past the token's expiry).
	RefusalTTL time.Duration
	HTTPClient *http.Client
	// OnExchange, when set, is told how long each request to Keycloak's
	// token endpoint took and how it ended (metrics).
	OnExchange func(elapsed time.Duration, err error)
}

// Keycloak is the role source that exchanges the caller's verified Entra
// token at Keycloak and reads the roles of the Keycloak token it gets back,
// after verifying it. Results, and refusals for a short while, are cached by
// the SHA-256 of the Entra token and of the configuration that obtained them,
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
	// binding is the hash of what decides a result (server, realm, client,
	// identity provider, grant, audience, scope, checks): part of every
	// cache key, so that configurations sharing a store never read each
	// other's results.
	binding [32]byte

	// local holds decoded results in process, in front of cache: a hit costs
	// a map lookup, not a decode (and, with Redis, no round trip).
	localMu sync.RWMutex
	local   map[[32]byte]*result
	noLocal bool // benchmarks measure the store alone

	exchanges   atomic.Int64
	refusals    atomic.Int64
	cacheHits   atomic.Int64
	cacheMisses atomic.Int64
	// downUntil (unix nanoseconds): after an exchange found Keycloak
	// unavailable, or refusing mcpguard itself, further exchanges fail fast
	// until then instead of queueing against a server that will say the same.
	downUntil atomic.Int64

	// now is the clock of every expiry decision (results, refusals, the
	// breaker, the Keycloak token's exp): time.Now, or a clock the tests move.
	now func() time.Time
	// sleep waits between attempts: time.Sleep, or a recorder in tests.
	sleep func(time.Duration)
}

// Breaker is how long exchanges fail fast after Keycloak was found unavailable.
const Breaker = 2 * time.Second

// ConfigBreaker is how long exchanges fail fast after Keycloak refused
// mcpguard itself (wrong client secret, client not permitted): no caller can
// be served until the configuration is fixed, and asking again changes nothing.
const ConfigBreaker = 30 * time.Second

// configCodes are the OAuth errors by which Keycloak refuses the client
// (mcpguard) rather than the caller's token. access_denied is not one: its
// "Client not allowed to exchange" is mostly the client's permission, but
// Keycloak also answers it for a subject it may not impersonate, and a code a
// caller can provoke must not pause every caller's exchanges. It is
// remembered per token like other refusals.
var configCodes = map[string]bool{
	"invalid_client": true, "unauthorized_client": true, "unsupported_grant_type": true,
}

// NewKeycloak returns the Keycloak role source; cache holds results.
func NewKeycloak(cfg KeycloakConfig, cache store.Store, logger *slog.Logger) (*Keycloak, error) {
	if cfg.ServerURL == "" || cfg.Realm == "" || cfg.ClientID == "" {
		return nil, errors.New("keycloak: server URL, realm and client id are required")
	}
	cfg.ServerURL = strings.TrimRight(cfg.ServerURL, "/")
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
	} else if cfg.Retries < 0 {
		cfg.Retries = 0
	}
	if cfg.Skew == 0 {
		cfg.Skew = 30 * time.Second
	}
	if cfg.RefusalTTL == 0 {
		cfg.RefusalTTL = 30 * time.Second
	}
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = &http.Client{}
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	realm := cfg.ServerURL + "/realms/" + url.PathEscape(cfg.Realm)
	binding, err := json.Marshal([]string{"keycloak-roles/2", cfg.ServerURL, cfg.Realm, cfg.ClientID,
		cfg.IDPAlias, cfg.Grant, cfg.Audience, cfg.Scope, cfg.SubjectClaim})
	if err != nil {
		return nil, fmt.Errorf("keycloak: %w", err)
	}
	return &Keycloak{
		cfg:      cfg,
		tokenURL: realm + "/protocol/openid-connect/token",
		issuer:   realm,
		keys:     &authn.KeySet{JWKSURI: realm + "/protocol/openid-connect/certs", RefreshMinInterval: 10 * time.Second, HTTPClient: cfg.HTTPClient},
		cache:    cache,
		logger:   logger,
		binding:  sha256.Sum256(binding),
		local:    map[[32]byte]*result{},
		now:      time.Now,
		sleep:    time.Sleep,
	}, nil
}

// Name implements Source.
func (*Keycloak) Name() string { return "keycloak" }

// Exchanges counts the exchanges made (cache misses that reached Keycloak).
func (k *Keycloak) Exchanges() int64 { return k.exchanges.Load() }

// Refusals counts the callers refused: by Keycloak (fresh or remembered), by
// the checks of the Keycloak token, or for a token about to expire.
func (k *Keycloak) Refusals() int64 { return k.refusals.Load() }

// result is what an exchange concluded for one Entra token, and what the
// cache keeps: the roles, or Keycloak's refusal of the token. Never a token.
type result struct {
	Authorization *Authorization `json:"authorization,omitempty"`
	Refusal       *Error         `json:"refusal,omitempty"`
	Until         time.Time      `json:"until"`
}

// answer turns a result into what Resolve returns.
func (k *Keycloak) answer(r *result) (*Authorization, error) {
	if r.Refusal != nil {
		k.refusals.Add(1)
		return nil, r.Refusal
	}
	return r.Authorization, nil
}

// Resolve implements Source.
func (k *Keycloak) Resolve(ctx context.Context, id *authn.Identity, token string) (*Authorization, error) {
	now := k.now()
	// Its result could not be reused, and Keycloak may see it expired.
	if !id.Expiry.After(now.Add(k.cfg.Skew)) {
		k.refusals.Add(1)
		return nil, refused("", "the Entra token expires within %s: not exchanged", k.cfg.Skew)
	}
	if r := k.fromLocal(id.Key, now); r != nil {
		k.cacheHits.Add(1)
		return k.answer(r)
	}
	key := k.cacheKey(id.Key)
	if r := k.fromCache(ctx, key, now); r != nil {
		k.cacheHits.Add(1)
		k.toLocal(id.Key, r)
		return k.answer(r)
	}
	k.cacheMisses.Add(1)
	v, err, _ := k.flight.Do(key, func() (any, error) {
		if r := k.fromCache(ctx, key, k.now()); r != nil {
			return r, nil
		}
		if k.now().UnixNano() < k.downUntil.Load() {
			return nil, unavailable("keycloak failed or refused mcpguard moments ago: not asked again yet")
		}
		// The exchange outlives one caller's cancelled request: others wait on it.
		a, err := k.exchange(context.WithoutCancel(ctx), id, token)
		r, err := k.settle(id, a, err)
		if err != nil {
			return nil, err
		}
		if ttl := r.Until.Sub(k.now()); ttl > 0 {
			b, _ := json.Marshal(r)
			if err := k.cache.Set(ctx, key, b, ttl); err != nil {
				k.logger.Warn("role cache write failed", "error", err)
			}
			k.toLocal(id.Key, r)
		}
		return r, nil
	})
	if err != nil {
		return nil, err
	}
	return k.answer(v.(*result))
}

// settle decides what an exchange's outcome is worth keeping: roles until
// either token expires; a refusal of the caller's token for RefusalTTL, so a
// refused caller's retries do not each reach Keycloak. Failures of Keycloak
// or of mcpguard's own standing with it are not kept: they trip the breaker.
func (k *Keycloak) settle(id *authn.Identity, a *Authorization, err error) (*result, error) {
	now := k.now()
	if err == nil {
		until := a.Expiry
		if id.Expiry.Before(until) {
			until = id.Expiry
		}
		a.Expiry = until.Add(-k.cfg.Skew)
		return &result{Authorization: a, Until: a.Expiry}, nil
	}
	var e *Error
	if !errors.As(err, &e) {
		e = unavailable("%v", err)
	}
	switch {
	case e.Config:
		k.downUntil.Store(now.Add(ConfigBreaker).UnixNano())
		k.logger.Error("KEYCLOAK REFUSES MCPGUARD ITSELF: check KEYCLOAK_CLIENT_ID, KEYCLOAK_CLIENT_SECRET and the client's permissions; no caller gets roles, exchanges are paused",
			"pause", ConfigBreaker, "code", e.Code, "error", e.Detail)
		return nil, e
	case errors.Is(e, ErrUnavailable):
		k.downUntil.Store(now.Add(Breaker).UnixNano())
		return nil, e
	}
	until := now.Add(k.cfg.RefusalTTL)
	if id.Expiry.Before(until) {
		until = id.Expiry
	}
	return &result{Refusal: e, Until: until}, nil
}

// cacheKey is the store key of an Entra token's result under this
// configuration: neither can be read back from it.
func (k *Keycloak) cacheKey(tokenKey [32]byte) string {
	h := sha256.New()
	h.Write(k.binding[:])
	h.Write(tokenKey[:])
	return "roles:keycloak:" + hex.EncodeToString(h.Sum(nil))
}

// maxLocal bounds the in-process results.
const maxLocal = 10000

func (k *Keycloak) fromLocal(key [32]byte, now time.Time) *result {
	if k.noLocal {
		return nil
	}
	k.localMu.RLock()
	r := k.local[key]
	k.localMu.RUnlock()
	if r == nil || !now.Before(r.Until) {
		return nil
	}
	return r
}

func (k *Keycloak) toLocal(key [32]byte, r *result) {
	if k.noLocal {
		return
	}
	now := k.now()
	k.localMu.Lock()
	defer k.localMu.Unlock()
	if len(k.local) >= maxLocal {
		for x, v := range k.local {
			if !now.Before(v.Until) || len(k.local) >= maxLocal*3/4 {
				delete(k.local, x)
			}
		}
	}
	k.local[key] = r
}

// fromCache reads a stored result. Numbers stay json.Number, as the verified
// token had them: a policy comparing exp or iat sees the same value whether
// the roles came from Keycloak just now or from the cache.
func (k *Keycloak) fromCache(ctx context.Context, key string, now time.Time) *result {
	b, err := k.cache.Get(ctx, key)
	if err != nil {
		if !errors.Is(err, store.ErrNotFound) {
			k.logger.Warn("role cache read failed", "error", err)
		}
		return nil
	}
	var r result
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	if dec.Decode(&r) != nil || !now.Before(r.Until) || (r.Authorization == nil) == (r.Refusal == nil) {
		return nil
	}
	if r.Refusal != nil {
		// Only refusals of the caller are kept; anything else read back is not trusted.
		if r.Refusal.Config {
			return nil
		}
		r.Refusal.Kind = ErrRefused
		return &r
	}
	r.Authorization.Expiry = r.Until
	return &r
}

// exchange obtains a Keycloak token for the caller, retrying an unavailable
// Keycloak with backoff, and turns its verified claims into roles.
func (k *Keycloak) exchange(ctx context.Context, id *authn.Identity, token string) (*Authorization, error) {
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

	var lastErr *Error
	backoff := 200 * time.Millisecond
	for attempt := 0; attempt <= k.cfg.Retries; attempt++ {
		if attempt > 0 {
			k.sleep(backoff)
			backoff *= 2
		}
		actx, cancel := context.WithTimeout(ctx, k.cfg.Timeout)
		k.exchanges.Add(1)
		began := time.Now()
		tok, err := cc.Token(actx)
		cancel()
		if k.cfg.OnExchange != nil {
			k.cfg.OnExchange(time.Since(began), err)
		}
		if err == nil {
			return k.authorization(ctx, tok.AccessToken, id)
		}
		lastErr = classify(err)
		if !errors.Is(lastErr, ErrUnavailable) || lastErr.Config {
			return nil, lastErr
		}
		k.logger.Warn("keycloak exchange failed", "attempt", attempt+1, "error", lastErr)
	}
	return nil, lastErr
}

// classify tells a refusal of this caller's token (4xx) from a refusal of
// mcpguard itself (its client: configCodes, or 401) and from an unavailable
// Keycloak. Keycloak's error_description goes to Detail, for logs only.
func classify(err error) *Error {
	var re *oauth2.RetrieveError
	if !errors.As(err, &re) || re.Response == nil {
		return unavailable("keycloak unreachable: %v", err)
	}
	status := re.Response.StatusCode
	detail := fmt.Sprintf("keycloak answered %d", status)
	if re.ErrorCode != "" {
		detail += " " + re.ErrorCode
	}
	if d := re.ErrorDescription; d != "" {
		if len(d) > 200 {
			d = d[:200]
		}
		detail += fmt.Sprintf(" %q", d)
	}
	switch {
	case status < 400 || status >= 500 || status == http.StatusTooManyRequests || status == http.StatusRequestTimeout:
		return unavailable("%s", detail)
	case status == http.StatusUnauthorized || configCodes[re.ErrorCode]:
		return &Error{Kind: ErrUnavailable, Code: re.ErrorCode, Config: true, Detail: detail}
	}
	return refused(re.ErrorCode, "%s", detail)
}

// authorization verifies the Keycloak token — compact JWS only, the realm's
// keys, RS256, exp; iss the realm, azp this client, typ Bearer (an access
// token), aud the configured audience, the subject claim the caller — and
// lays out its roles. Everything is read from the verified payload.
func (k *Keycloak) authorization(ctx context.Context, raw string, id *authn.Identity) (*Authorization, error) {
	vt, err := authn.VerifyCompact(ctx, raw, k.keys, k.now(), k.cfg.Skew)
	if err != nil {
		var ae *authn.Error
		if errors.As(err, &ae) && ae.Status == http.StatusServiceUnavailable {
			return nil, unavailable("keycloak realm keys: %v", err)
		}
		return nil, refused("", "keycloak token rejected: %v", err)
	}
	claims := vt.Claims
	str := func(name string) string { s, _ := claims[name].(string); return s }
	if iss := str("iss"); iss != k.issuer {
		return nil, refused("", "keycloak token issued by %q, not %q", iss, k.issuer)
	}
	if azp := str("azp"); azp != k.cfg.ClientID {
		return nil, refused("", "keycloak token was issued to %q, not %q", azp, k.cfg.ClientID)
	}
	// Keycloak types its tokens: Bearer (access), ID, Refresh, Logout…; only
	// an access token says what the caller may do.
	if typ := str("typ"); typ != "Bearer" {
		return nil, refused("", "keycloak token is of type %q, not an access token (Bearer)", typ)
	}
	if k.cfg.Audience != "" && !slices.Contains(vt.Token.Audience(), k.cfg.Audience) {
		return nil, refused("", "keycloak token's audience %v lacks %q", vt.Token.Audience(), k.cfg.Audience)
	}
	if c := k.cfg.SubjectClaim; c != "" {
		if got := str(c); got == "" || !strings.EqualFold(got, id.ObjectID) {
			k.logger.Error("keycloak token is not bound to the caller: its subject claim names someone else (or no one)",
				"claim", c, "value", got, "caller", id.UserID())
			return nil, refused("", "keycloak token's %s is %q, not the caller's Entra object id", c, got)
		}
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
	a.Expiry = vt.Token.Expiration()
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
