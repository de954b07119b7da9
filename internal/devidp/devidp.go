// Package devidp is an Entra-shaped OpenID issuer for development and tests:
// OIDC discovery and a JWKS on loopback, and RS256 access tokens laid out as
// Entra ID v2 (and v1) tokens are. The server verifies its tokens through the
// same path as real Entra tokens; nothing is bypassed. It also plays Entra's
// authorization-code flow (authorize, token: PKCE, refresh tokens) for
// registered clients and configured test users, who sign in without a
// password: it is never an identity provider for anything real.
package devidp

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jwk"
	"github.com/lestrrat-go/jwx/v2/jws"
)

// Issuer signs Entra-shaped tokens and serves the documents a verifier discovers.
type Issuer struct {
	// Authority is the scheme and host tokens name, e.g. http://127.0.0.1:8001.
	Authority string
	// TenantID is the tenant the issuer speaks for.
	TenantID string

	mu      sync.RWMutex
	signing jwk.Key
	public  jwk.Set

	// JWKSRequests counts JWKS fetches, so tests can see refresh behaviour.
	jwksRequests int

	// oauth is the sign-in side: registered clients, test users, codes and
	// refresh tokens (oauth.go).
	oauth oauthState
}

// New returns an issuer signing with key.
func New(authority, tenantID string, key *rsa.PrivateKey) (*Issuer, error) {
	iss := &Issuer{Authority: strings.TrimRight(authority, "/"), TenantID: tenantID, public: jwk.NewSet()}
	if err := iss.Rotate(key, false); err != nil {
		return nil, err
	}
	return iss, nil
}

// Rotate makes key the signing key. With keepOld the previous public keys
// stay published, as Entra keeps old keys during a rollover.
func (i *Issuer) Rotate(key *rsa.PrivateKey, keepOld bool) error {
	priv, err := jwk.FromRaw(key)
	if err != nil {
		return err
	}
	thumb, err := priv.Thumbprint(crypto.SHA256)
	if err != nil {
		return err
	}
	kid := hex.EncodeToString(thumb[:12])
	_ = priv.Set(jwk.KeyIDKey, kid)
	_ = priv.Set(jwk.AlgorithmKey, jwa.RS256)
	pub, err := priv.PublicKey()
	if err != nil {
		return err
	}
	_ = pub.Set(jwk.KeyUsageKey, "sig")
	i.mu.Lock()
	defer i.mu.Unlock()
	if !keepOld {
		i.public = jwk.NewSet()
	}
	if err := i.public.AddKey(pub); err != nil {
		return err
	}
	i.signing = priv
	return nil
}

// KeyID is the kid of the current signing key.
func (i *Issuer) KeyID() string {
	i.mu.RLock()
	defer i.mu.RUnlock()
	return i.signing.KeyID()
}

// JWKSRequests is how many times the key set was fetched.
func (i *Issuer) JWKSRequests() int {
	i.mu.RLock()
	defer i.mu.RUnlock()
	return i.jwksRequests
}

// IssuerURL is the v2 issuer for a tenant: {authority}/{tid}/v2.0.
func (i *Issuer) IssuerURL(tenantID string) string {
	return i.Authority + "/" + tenantID + "/v2.0"
}

// Handler serves, for any tenant path segment (a tenant id, organizations, common):
//
//	/{tenant}/v2.0/.well-known/openid-configuration
//	/{tenant}/discovery/v2.0/keys
//	/{tenant}/oauth2/v2.0/authorize   (GET, and POST from its sign-in form)
//	/{tenant}/oauth2/v2.0/token       (POST)
func (i *Issuer) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{tenant}/oauth2/v2.0/authorize", i.serveAuthorize)
	mux.HandleFunc("POST /{tenant}/oauth2/v2.0/authorize", i.serveAuthorize)
	mux.HandleFunc("POST /{tenant}/oauth2/v2.0/token", i.serveToken)
	mux.HandleFunc("GET /{tenant}/v2.0/.well-known/openid-configuration", func(w http.ResponseWriter, r *http.Request) {
		t := r.PathValue("tenant")
		issuer := i.IssuerURL(t)
		if t == "common" || t == "organizations" {
			issuer = i.Authority + "/{tenantid}/v2.0" // as Entra publishes it for multi-tenant endpoints
		}
		writeJSON(w, map[string]any{
			"issuer":                                issuer,
			"jwks_uri":                              i.Authority + "/" + t + "/discovery/v2.0/keys",
			"authorization_endpoint":                i.Authority + "/" + t + "/oauth2/v2.0/authorize",
			"token_endpoint":                        i.Authority + "/" + t + "/oauth2/v2.0/token",
			"id_token_signing_alg_values_supported": []string{"RS256"},
			"response_types_supported":              []string{"code", "id_token", "code id_token", "id_token token"},
			"subject_types_supported":               []string{"pairwise"},
			"scopes_supported":                      []string{"openid", "profile", "email", "offline_access"},
			"tenant_region_scope":                   "EU",
		})
	})
	mux.HandleFunc("GET /{tenant}/discovery/v2.0/keys", func(w http.ResponseWriter, r *http.Request) {
		i.mu.Lock()
		i.jwksRequests++
		set := i.public
		i.mu.Unlock()
		writeJSON(w, set)
	})
	return mux
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}

// Token describes an access token to mint. Zero values take Entra-like defaults.
type Token struct {
	// TenantID defaults to the issuer's tenant.
	TenantID string
	// Audience is the API's client id (v2 tokens) or App ID URI.
	Audience string
	// User is a display name; ObjectID defaults to a stable id derived from it.
	User     string
	ObjectID string
	// App marks an app-only token (client credentials): no scp, idtyp=app.
	App bool
	// ClientAppID is the calling application (azp / appid).
	ClientAppID string
	Scopes      []string
	Roles       []string
	Groups      []string
	Email       string
	// Lifetime defaults to one hour.
	Lifetime time.Duration
	// IssuedAt defaults to now.
	IssuedAt time.Time
	// V1 mints a v1 token (iss https://sts.windows.net/{tid}/ style, appid).
	V1 bool
	// Extra claims override anything above.
	Extra map[string]any
}

// ObjectIDFor derives a stable object id from a user or app name, so the same
// name always maps to the same oid (and so to the same roles-file entry).
func ObjectIDFor(name string) string {
	h := sha256.Sum256([]byte("mcpguard-dev-oid:" + name))
	h[6] = (h[6] & 0x0f) | 0x50 // version 5 layout
	h[8] = (h[8] & 0x3f) | 0x80
	x := hex.EncodeToString(h[:16])
	return x[0:8] + "-" + x[8:12] + "-" + x[12:16] + "-" + x[16:20] + "-" + x[20:32]
}

// Claims returns the claim set Mint would sign.
func (i *Issuer) Claims(t Token) map[string]any {
	now := t.IssuedAt
	if now.IsZero() {
		now = time.Now()
	}
	life := t.Lifetime
	if life == 0 {
		life = time.Hour
	}
	tid := t.TenantID
	if tid == "" {
		tid = i.TenantID
	}
	name := t.User
	if name == "" {
		name = "dev-user"
	}
	oid := t.ObjectID
	if oid == "" {
		oid = ObjectIDFor(name)
	}
	client := t.ClientAppID
	if client == "" {
		client = ObjectIDFor("client:" + name)
	}
	uti := make([]byte, 16)
	_, _ = rand.Read(uti)
	c := map[string]any{
		"aud": t.Audience,
		"iat": now.Unix(),
		"nbf": now.Unix(),
		"exp": now.Add(life).Unix(),
		"tid": tid,
		"oid": oid,
		"sub": ObjectIDFor("sub:" + oid + ":" + t.Audience),
		"uti": hex.EncodeToString(uti),
		"rh":  "0.dev",
	}
	if t.V1 {
		c["iss"] = i.Authority + "/" + tid + "/"
		c["ver"] = "1.0"
		c["appid"] = client
		c["appidacr"] = "1"
	} else {
		c["iss"] = i.IssuerURL(tid)
		c["ver"] = "2.0"
		c["azp"] = client
		c["azpacr"] = "1"
	}
	if t.App {
		c["idtyp"] = "app"
		c["sub"] = oid
	} else {
		c["idtyp"] = "user"
		c["name"] = name
		c["preferred_username"] = name + "@dev.mcpguard.test"
		if len(t.Scopes) > 0 {
			c["scp"] = strings.Join(t.Scopes, " ")
		}
	}
	if t.Email != "" {
		c["email"] = t.Email
	}
	if len(t.Roles) > 0 {
		c["roles"] = t.Roles
	}
	if len(t.Groups) > 0 {
		c["groups"] = t.Groups
	}
	for k, v := range t.Extra {
		if v == nil {
			delete(c, k)
		} else {
			c[k] = v
		}
	}
	return c
}

// Mint signs an access token.
func (i *Issuer) Mint(t Token) (string, error) {
	return i.Sign(i.Claims(t))
}

// Sign signs arbitrary claims with the current key (RS256, kid, typ JWT) in
// the compact serialization. The payload is the claims as given (aud a
// string when given one, as Entra sends it).
func (i *Issuer) Sign(claims map[string]any) (string, error) {
	payload, err := json.Marshal(claims)
	if err != nil {
		return "", fmt.Errorf("claims: %w", err)
	}
	i.mu.RLock()
	key := i.signing
	i.mu.RUnlock()
	hdr := jws.NewHeaders()
	_ = hdr.Set(jws.TypeKey, "JWT")
	b, err := jws.Sign(payload, jws.WithKey(jwa.RS256, key, jws.WithProtectedHeaders(hdr)))
	if err != nil {
		return "", err
	}
	return string(b), nil
}

// NewKey generates a 2048-bit RSA key, the size Entra uses.
func NewKey() (*rsa.PrivateKey, error) { return rsa.GenerateKey(rand.Reader, 2048) }

// LoadOrCreateKey reads a PEM RSA key, creating it (mode 0600) when absent,
// so that `mcpguard token --dev` and a running server share one key.
func LoadOrCreateKey(path string) (*rsa.PrivateKey, error) {
	data, err := os.ReadFile(path)
	if err == nil {
		block, _ := pem.Decode(data)
		if block == nil {
			return nil, fmt.Errorf("%s: no PEM block", path)
		}
		k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		rk, ok := k.(*rsa.PrivateKey)
		if !ok {
			return nil, fmt.Errorf("%s: not an RSA key", path)
		}
		return rk, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	key, err := NewKey()
	if err != nil {
		return nil, err
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		if errors.Is(err, os.ErrExist) { // another process made it first
			return LoadOrCreateKey(path)
		}
		return nil, err
	}
	defer f.Close()
	if err := pem.Encode(f, &pem.Block{Type: "PRIVATE KEY", Bytes: der}); err != nil {
		return nil, err
	}
	return key, f.Close()
}
