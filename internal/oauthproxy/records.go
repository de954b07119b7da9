package oauthproxy

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/mcpguard/mcpguard/internal/store"
)

// Store keys. A secret (code, refresh token, state, consent id) is never a
// key: the key is a hash of it, and the value is sealed by the store.
const (
	kindClient       = "client"       // registered client, by client_id
	kindCIMD         = "cimd"         // fetched metadata document, by URL hash
	kindPending      = "pending"      // authorization awaiting consent
	kindPendingUsed  = "pending-used" // its one-time claim
	kindUpState      = "upstate"      // upstream leg awaiting the callback
	kindUpStateUsed  = "upstate-used"
	kindCode         = "code" // the proxy's authorization code
	kindCodeUsed     = "code-used"
	kindFamily       = "family"   // one sign-in: client, scopes, lifetime
	kindUpstream     = "upstream" // its upstream token set
	kindUpstreamLock = "upstream-lock"
	kindRefresh      = "refresh" // a refresh token of a family
	kindRefreshUsed  = "refresh-used"
	kindRevokedJTI   = "revoked-jti" // a revoked access token, by jti
)

func key(kind, id string) string { return "oauth:" + kind + ":" + id }

// secretKey is the key of a record named by a secret: a hash of the secret.
func secretKey(kind, secret string) string {
	sum := sha256.Sum256([]byte(kind + "\x00" + secret))
	return key(kind, hex.EncodeToString(sum[:]))
}

// digest is what a record keeps of a secret it must recognise later.
func digest(secret string) string {
	sum := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(sum[:])
}

func sameDigest(secret, want string) bool {
	return want != "" && subtle.ConstantTimeCompare([]byte(digest(secret)), []byte(want)) == 1
}

// newSecret is 256 random bits, base64url: codes, tokens, state, ids.
func newSecret() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b) // never fails (crypto/rand, Go 1.24+)
	return base64.RawURLEncoding.EncodeToString(b)
}

func (p *Proxy) put(ctx context.Context, k string, v any, ttl time.Duration) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	if err := p.st.Set(ctx, k, b, ttl); err != nil {
		return fmt.Errorf("%w: store: %v", ErrUnavailable, err)
	}
	return nil
}

// get reads a record; store.ErrNotFound when it is absent or expired, and
// an unreadable value (another key, tampered) is treated as absent.
func (p *Proxy) get(ctx context.Context, k string, v any) error {
	b, err := p.st.Get(ctx, k)
	switch {
	case errors.Is(err, store.ErrNotFound), errors.Is(err, store.ErrUnreadable):
		return store.ErrNotFound
	case err != nil:
		return fmt.Errorf("%w: store: %v", ErrUnavailable, err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		return store.ErrNotFound
	}
	return nil
}

// claim marks a one-time value used; it reports false when another request
// (on any replica) used it first.
func (p *Proxy) claim(ctx context.Context, k string, v any, ttl time.Duration) (bool, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return false, err
	}
	won, err := p.st.SetNX(ctx, k, b, ttl)
	if err != nil {
		return false, fmt.Errorf("%w: store: %v", ErrUnavailable, err)
	}
	return won, nil
}

func (p *Proxy) del(ctx context.Context, k string) { _ = p.st.Delete(ctx, k) }

// pending is an authorization request that passed the checks and awaits the
// user's consent.
type pending struct {
	ClientID      string   `json:"client_id"`
	RedirectURI   string   `json:"redirect_uri"`
	State         string   `json:"state"`
	CodeChallenge string   `json:"code_challenge"`
	Scopes        []string `json:"scopes"`
	// CSRF and Browser are digests of the form token and of the cookie that
	// bind the consent (and the callback) to the browser that asked.
	CSRF    string    `json:"csrf"`
	Browser string    `json:"browser"`
	Cookie  string    `json:"cookie"`
	Expires time.Time `json:"exp"`
}

// upState is the upstream leg: the pending authorization, consented, with
// the proxy's own PKCE verifier for Entra.
type upState struct {
	pending
	Verifier string `json:"verifier"`
}

// codeRecord is the proxy's authorization code, issued to the client.
type codeRecord struct {
	ClientID      string    `json:"client_id"`
	RedirectURI   string    `json:"redirect_uri"`
	CodeChallenge string    `json:"code_challenge"`
	Scopes        []string  `json:"scopes"`
	Family        string    `json:"family"`
	Expires       time.Time `json:"exp"`
}

// family is one sign-in: every refresh token rotated from one code, and the
// upstream tokens behind them. Revoking it ends them all.
type family struct {
	ClientID string    `json:"client_id"`
	Scopes   []string  `json:"scopes"`
	Expires  time.Time `json:"exp"`
	Revoked  bool      `json:"revoked,omitempty"`
}

// upstreamTokens are Entra's tokens for a family.
type upstreamTokens struct {
	AccessToken  string    `json:"access_token"`
	RefreshToken string    `json:"refresh_token,omitempty"`
	Expires      time.Time `json:"exp"`
}

// refreshRecord is one refresh token of a family.
type refreshRecord struct {
	Family   string    `json:"family"`
	ClientID string    `json:"client_id"`
	Expires  time.Time `json:"exp"`
}

// used marks a one-time value spent, naming the family it fed (if any), so
// that a second use can revoke it.
type used struct {
	Family string `json:"family,omitempty"`
}
