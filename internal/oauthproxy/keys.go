package oauthproxy

import (
	"bytes"
	"crypto"
	"crypto/ed25519"
	"crypto/hkdf"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jwk"
	"github.com/lestrrat-go/jwx/v2/jws"
)

// keyring holds the access-token keys: Ed25519, derived from the
// JWT_SIGNING_KEY secrets, so every replica with the same secret signs with
// the same key while only the public half is ever published.
type keyring struct {
	keys []signingKey // the first signs
	jwks []byte       // the public keys as a JWK Set
}

type signingKey struct {
	kid  string
	priv ed25519.PrivateKey
	pub  ed25519.PublicKey
}

// keyInfo separates this use of the secret from any other the project makes of it.
const keyInfo = "mcpguard oauthproxy access-token signing key v1"

// ValidateSigningKey checks a JWT_SIGNING_KEY value as New reads it, for the
// configuration to report at load time.
func ValidateSigningKey(s string) error {
	_, err := parseSigningKeys(s)
	return err
}

func parseSigningKeys(s string) (*keyring, error) {
	kr := &keyring{}
	set := jwk.NewSet()
	for i, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		secret, err := base64.StdEncoding.DecodeString(part)
		if err != nil {
			if secret, err = base64.RawURLEncoding.DecodeString(part); err != nil {
				return nil, fmt.Errorf("key %d is not base64", i+1)
			}
		}
		if len(secret) < 32 {
			return nil, fmt.Errorf("key %d has %d bytes; at least 32 are needed (`mcpguard keys generate`)", i+1, len(secret))
		}
		seed, err := hkdf.Key(sha256.New, secret, nil, keyInfo, ed25519.SeedSize)
		if err != nil {
			return nil, fmt.Errorf("key %d: %w", i+1, err)
		}
		priv := ed25519.NewKeyFromSeed(seed)
		pub := priv.Public().(ed25519.PublicKey)
		jk, err := jwk.FromRaw(pub)
		if err != nil {
			return nil, err
		}
		thumb, err := jk.Thumbprint(crypto.SHA256)
		if err != nil {
			return nil, err
		}
		kid := base64.RawURLEncoding.EncodeToString(thumb)
		_ = jk.Set(jwk.KeyIDKey, kid)
		_ = jk.Set(jwk.AlgorithmKey, jwa.EdDSA)
		_ = jk.Set(jwk.KeyUsageKey, "sig")
		if err := set.AddKey(jk); err != nil {
			return nil, err
		}
		kr.keys = append(kr.keys, signingKey{kid: kid, priv: priv, pub: pub})
	}
	if len(kr.keys) == 0 {
		return nil, errors.New("no key (`mcpguard keys generate` prints one)")
	}
	b, err := json.Marshal(set)
	if err != nil {
		return nil, err
	}
	kr.jwks = b
	return kr, nil
}

// accessClaims are the claims of the proxy's access tokens.
type accessClaims struct {
	Issuer   string `json:"iss"`
	Audience string `json:"aud"`
	Expiry   int64  `json:"exp"`
	IssuedAt int64  `json:"iat"`
	ID       string `json:"jti"`
	ClientID string `json:"client_id"`
	// Session names the sign-in (refresh family) the token belongs to: its
	// upstream tokens, and what revoking it revokes.
	Session string `json:"sid"`
	Scope   string `json:"scope"`
}

// accessTokenType is the JWT typ of RFC 9068 access tokens.
const accessTokenType = "at+jwt"

func (k *keyring) sign(c accessClaims) (string, error) {
	payload, err := json.Marshal(c)
	if err != nil {
		return "", err
	}
	key := k.keys[0]
	hdr := jws.NewHeaders()
	_ = hdr.Set(jws.TypeKey, accessTokenType)
	_ = hdr.Set(jws.KeyIDKey, key.kid)
	b, err := jws.Sign(payload, jws.WithKey(jwa.EdDSA, key.priv, jws.WithProtectedHeaders(hdr)))
	if err != nil {
		return "", fmt.Errorf("sign access token: %w", err)
	}
	return string(b), nil
}

// maxTokenBytes bounds what is parsed at all; the proxy's tokens are ~500 bytes.
const maxTokenBytes = 8 << 10

// verify checks a token the proxy issued: compact form only, an issuer of
// ours (else ErrNotProxyToken), a key of ours, EdDSA, and iss, aud, exp and
// iat at now. Claims come from the verified payload alone.
func (k *keyring) verify(raw, issuer, audience string, now time.Time) (*accessClaims, error) {
	if len(raw) > maxTokenBytes {
		return nil, ErrNotProxyToken
	}
	seg := strings.Split(raw, ".")
	if len(seg) != 3 {
		return nil, ErrNotProxyToken
	}
	payload, err := base64.RawURLEncoding.Strict().DecodeString(seg[1])
	if err != nil {
		return nil, ErrNotProxyToken
	}
	var claimed struct {
		Issuer string `json:"iss"`
	}
	if json.Unmarshal(payload, &claimed) != nil || claimed.Issuer != issuer {
		return nil, ErrNotProxyToken
	}
	// From here on the token claims to be ours: every failure is a refusal.
	hb, err := base64.RawURLEncoding.Strict().DecodeString(seg[0])
	if err != nil {
		return nil, fmt.Errorf("%w: malformed header", ErrInvalidToken)
	}
	var hdr struct {
		Alg string `json:"alg"`
		Kid string `json:"kid"`
		Typ string `json:"typ"`
	}
	if err := json.Unmarshal(hb, &hdr); err != nil || hdr.Alg != jwa.EdDSA.String() || hdr.Typ != accessTokenType {
		return nil, fmt.Errorf("%w: header is not the proxy's", ErrInvalidToken)
	}
	var key *signingKey
	for i := range k.keys {
		if k.keys[i].kid == hdr.Kid {
			key = &k.keys[i]
		}
	}
	if key == nil {
		return nil, fmt.Errorf("%w: unknown key", ErrInvalidToken)
	}
	verified, err := jws.Verify([]byte(raw), jws.WithKey(jwa.EdDSA, key.pub), jws.WithCompact())
	if err != nil || !bytes.Equal(verified, payload) {
		return nil, fmt.Errorf("%w: signature", ErrInvalidToken)
	}
	var c accessClaims
	if err := json.Unmarshal(verified, &c); err != nil {
		return nil, fmt.Errorf("%w: claims", ErrInvalidToken)
	}
	switch {
	case c.Audience != audience:
		return nil, fmt.Errorf("%w: audience %q is another resource", errAudience, c.Audience)
	case c.Expiry == 0 || !now.Before(time.Unix(c.Expiry, 0)):
		return nil, fmt.Errorf("%w: expired", errExpired)
	case c.IssuedAt > now.Add(time.Minute).Unix():
		return nil, fmt.Errorf("%w: issued in the future", ErrInvalidToken)
	case c.Session == "" || c.ID == "" || c.ClientID == "":
		return nil, fmt.Errorf("%w: claims missing", ErrInvalidToken)
	}
	return &c, nil
}

// Refusal kinds of verify, each an ErrInvalidToken, counted apart.
var (
	errAudience = fmt.Errorf("%w (audience)", ErrInvalidToken)
	errExpired  = fmt.Errorf("%w (expired)", ErrInvalidToken)
)
