package authn

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/lestrrat-go/jwx/v2/jwt"
)

// MaxTokenBytes bounds the size of a bearer token; Entra tokens are a few KiB.
const MaxTokenBytes = 16 << 10

// PublicCloudAuthority is Entra ID's global authority; its v1 tokens are
// issued by sts.windows.net.
const PublicCloudAuthority = "https://login.microsoftonline.com"

// Config says which tokens this resource server accepts.
type Config struct {
	// AuthorityHost is https://login.microsoftonline.com or a sovereign cloud
	// (or a loopback test issuer).
	AuthorityHost string
	// TenantID is the home tenant id, or organizations/common for multi-tenant.
	TenantID string
	// AllowedTenants are the tenant ids accepted besides TenantID.
	AllowedTenants []string
	// Audiences are the accepted aud values: the client id and the App ID URI.
	Audiences []string
	// RequiredScopes must all be in a delegated token's scp.
	RequiredScopes []string
	// AcceptV1 accepts v1 tokens (iss https://sts.windows.net/{tid}/).
	AcceptV1 bool
	// ClockSkew tolerated on exp and nbf.
	ClockSkew time.Duration
	// RefreshMinInterval rate-limits key set refreshes on an unknown kid.
	RefreshMinInterval time.Duration
	// KeysMaxAge is how long a key set is used before it is fetched again
	// (default DefaultKeysMaxAge).
	KeysMaxAge time.Duration
	// CacheSize bounds the verified-token cache (entries).
	CacheSize int
	// HTTPClient fetches discovery and keys.
	HTTPClient *http.Client
}

// Verifier verifies Entra access tokens. It is safe for concurrent use.
type Verifier struct {
	cfg     Config
	tenants map[string]bool
	// now is the clock of every expiry decision (token, cache, key set):
	// time.Now, or a clock the tests move (export_test.go).
	now func() time.Time

	keys *KeySet

	cache *tokenCache
	// hits and misses count the cache's answers, for metrics.
	hits, misses atomic.Int64
}

// NewVerifier returns a Verifier. Keys are fetched on first use.
func NewVerifier(cfg Config) (*Verifier, error) {
	if cfg.AuthorityHost == "" || cfg.TenantID == "" || len(cfg.Audiences) == 0 {
		return nil, errors.New("authn: authority host, tenant id and audiences are required")
	}
	cfg.AuthorityHost = strings.TrimRight(cfg.AuthorityHost, "/")
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = &http.Client{Timeout: 10 * time.Second}
	}
	if cfg.RefreshMinInterval == 0 {
		cfg.RefreshMinInterval = 30 * time.Second
	}
	if cfg.CacheSize == 0 {
		cfg.CacheSize = 10000
	}
	v := &Verifier{cfg: cfg, tenants: map[string]bool{}, now: time.Now, cache: newTokenCache(cfg.CacheSize)}
	disco := cfg.AuthorityHost + "/" + cfg.TenantID + "/v2.0/.well-known/openid-configuration"
	v.keys = &KeySet{Discovery: disco, RefreshMinInterval: cfg.RefreshMinInterval, MaxAge: cfg.KeysMaxAge, HTTPClient: cfg.HTTPClient}
	switch t := strings.ToLower(cfg.TenantID); t {
	case "common", "organizations", "consumers":
	default:
		v.tenants[t] = true
	}
	for _, t := range cfg.AllowedTenants {
		v.tenants[strings.ToLower(t)] = true
	}
	return v, nil
}

// Verify checks a bearer token and returns the caller's identity. A token
// seen before and not yet expired is answered from the cache.
func (v *Verifier) Verify(ctx context.Context, raw string) (*Identity, error) {
	if len(raw) > MaxTokenBytes {
		return nil, invalid("token is larger than %d bytes", MaxTokenBytes)
	}
	key := tokenKey(raw)
	now := v.now()
	v.keys.RefreshIfStale(ctx, now)
	if id := v.cache.get(key, now); id != nil && v.stillPublished(id) {
		v.hits.Add(1)
		return id, nil
	}
	v.misses.Add(1)
	id, err := v.verify(ctx, raw, now)
	if err != nil {
		return nil, err
	}
	id.Key = key
	v.cache.put(key, id, now)
	return id, nil
}

// tokenKey is the cache's key of a token: its SHA-256, so that the cache
// holds no token. The hash reads the string's bytes in place: a copy would
// be a heap allocation of the whole token on every request.
func tokenKey(raw string) [sha256.Size]byte {
	return sha256.Sum256(unsafe.Slice(unsafe.StringData(raw), len(raw)))
}

// Cached returns the identity of a token Verify has verified, while the
// cache holds it (unexpired, its key still published); nil otherwise. It
// never verifies: a caller that gets nil calls Verify.
func (v *Verifier) Cached(ctx context.Context, raw string) *Identity {
	now := v.now()
	v.keys.RefreshIfStale(ctx, now) // as Verify does: a key withdrawn is noticed
	if id := v.cache.get(tokenKey(raw), now); id != nil && v.stillPublished(id) {
		return id
	}
	return nil
}

// stillPublished reports whether the key that signed a cached identity is
// still in the issuer's key set; it asks again only when the set changed.
func (v *Verifier) stillPublished(id *Identity) bool {
	gen := v.keys.Generation()
	if id.keyGen.Load() == gen {
		return true
	}
	if !v.keys.Published(id.keyID) {
		return false
	}
	id.keyGen.Store(gen)
	return true
}

func (v *Verifier) verify(ctx context.Context, raw string, now time.Time) (*Identity, error) {
	vt, err := VerifyCompact(ctx, raw, v.keys, now, v.cfg.ClockSkew)
	if err != nil {
		return nil, err
	}
	id, err := v.identity(vt.Token, vt.Claims)
	if err != nil {
		return nil, err
	}
	id.keyID = vt.KeyID
	id.keyGen.Store(v.keys.Generation())
	return id, nil
}

func describeJWTError(err error) string {
	switch {
	case errors.Is(err, jwt.ErrTokenExpired()):
		return "token is expired"
	case errors.Is(err, jwt.ErrTokenNotYetValid()):
		return "token is not valid yet"
	case errors.Is(err, jwt.ErrRequiredClaim()):
		return "token lacks a required claim"
	case errors.Is(err, jwt.ErrInvalidIssuedAt()):
		return "token issued in the future"
	}
	var vErr jwt.ValidationError
	if errors.As(err, &vErr) {
		return "token claims invalid"
	}
	return "token signature is invalid"
}

// identity checks issuer, tenant, audience and scopes, then lays out the claims.
func (v *Verifier) identity(tok jwt.Token, claims map[string]any) (*Identity, error) {
	str := func(name string) string { s, _ := claims[name].(string); return s }
	tid := strings.ToLower(str("tid"))
	if tid == "" || !v.tenants[tid] {
		return nil, invalid("tenant %q is not allowed", tid)
	}
	iss := tok.Issuer()
	ver := str("ver")
	switch {
	case ver == "2.0" && iss == v.cfg.AuthorityHost+"/"+tid+"/v2.0":
	case ver == "1.0" && v.cfg.AcceptV1 && iss == v.v1Issuer(tid):
	case ver == "1.0" && !v.cfg.AcceptV1:
		return nil, invalid("v1 tokens are not accepted (set AZURE_ACCEPT_V1_TOKENS or requestedAccessTokenVersion 2)")
	default:
		return nil, invalid("issuer %q is not accepted", iss)
	}
	audOK := false
	for _, a := range tok.Audience() {
		if slices.Contains(v.cfg.Audiences, a) {
			audOK = true
			break
		}
	}
	if !audOK {
		return nil, invalid("token audience is not this API")
	}

	id := &Identity{
		Issuer:            iss,
		TenantID:          tid,
		ObjectID:          str("oid"),
		Subject:           tok.Subject(),
		AppID:             str("azp"),
		Name:              str("name"),
		Email:             str("email"),
		PreferredUsername: str("preferred_username"),
		AppRoles:          strings1(claims["roles"]),
		Groups:            strings1(claims["groups"]),
		Claims:            claims,
		Expiry:            tok.Expiration(),
	}
	if id.PreferredUsername == "" {
		id.PreferredUsername = str("upn")
	}
	if id.ObjectID == "" {
		return nil, invalid("token has no oid")
	}
	// An ID token has an access token's shape (same keys, iss, aud = the
	// client id) but says who logged in to a client, not what may call this
	// API: require the claims only access tokens carry.
	if _, ok := claims["nonce"]; ok {
		return nil, invalid("ID tokens are not accepted: present an access token")
	}
	if ver == "1.0" {
		id.AppID = str("appid")
	}
	if id.AppID == "" {
		return nil, invalid("token names no calling application (azp or appid): not an access token")
	}
	scp, hasScp := claims["scp"].(string)
	idtyp := str("idtyp")
	switch {
	case hasScp && idtyp != "app":
		id.Kind = KindUser
		id.Scopes = strings.Fields(scp)
		var missing []string
		for _, s := range v.cfg.RequiredScopes {
			if !slices.Contains(id.Scopes, s) {
				missing = append(missing, s)
			}
		}
		if len(missing) > 0 {
			return nil, &Error{Status: http.StatusForbidden, Code: "insufficient_scope",
				Description: "token lacks scope " + strings.Join(missing, " "), Scopes: v.cfg.RequiredScopes}
		}
	case !hasScp && (idtyp == "app" || idtyp == "" && id.Subject != "" && id.Subject == id.ObjectID):
		// Client credentials or a managed identity: permissions are app roles.
		// Entra marks them with idtyp=app (an optional claim), and their sub
		// is the service principal's oid, which a user's sub never is.
		id.Kind = KindApp
	default:
		return nil, invalid("token is neither a delegated access token (scp) nor an app-only one (idtyp=app, or sub equal to oid)")
	}
	return id, nil
}

func (v *Verifier) v1Issuer(tid string) string {
	if v.cfg.AuthorityHost == PublicCloudAuthority {
		return "https://sts.windows.net/" + tid + "/"
	}
	return v.cfg.AuthorityHost + "/" + tid + "/"
}

func strings1(v any) []string {
	switch x := v.(type) {
	case []any:
		out := make([]string, 0, len(x))
		for _, e := range x {
			if s, ok := e.(string); ok {
				out = append(out, s)
			}
		}
		return out
	case []string:
		return x
	case string:
		return []string{x}
	}
	return nil
}

// Error is an authentication failure with the HTTP status and OAuth error
// code (RFC 6750) the resource server answers with.
type Error struct {
	Status      int
	Code        string
	Description string
	// Scopes are the scopes needed, for insufficient_scope.
	Scopes []string
	err    error
}

func (e *Error) Error() string {
	if e.err != nil {
		return e.Description + ": " + e.err.Error()
	}
	return e.Description
}

func (e *Error) Unwrap() error { return e.err }

func invalid(format string, args ...any) error {
	return &Error{Status: http.StatusUnauthorized, Code: "invalid_token", Description: fmt.Sprintf(format, args...)}
}
