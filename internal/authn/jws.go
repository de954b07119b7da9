package authn

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jws"
	"github.com/lestrrat-go/jwx/v2/jwt"
)

func init() {
	// jwx accepts the JWS JSON serializations by default, and jwt.Parse of a
	// JSON object reads claims from members beside the signed payload: any
	// signed token becomes a donor for any identity. Nothing in this process
	// parses JWTs in another form. VerifyCompact also checks the form itself.
	jwt.Settings(jwt.WithCompactOnly(true))
}

// Verified is a token whose signature and time claims checked out.
type Verified struct {
	// Token is the validated token (registered claims as jwx types).
	Token jwt.Token
	// Claims are the claims exactly as the signed payload carries them:
	// NumericDate as JSON numbers, aud a string or an array as sent.
	Claims map[string]any
	// KeyID names the issuer key that signed it.
	KeyID string
}

// VerifyCompact verifies a JWT in the JWS compact serialization only
// (header.payload.signature, base64url without padding), signed with RS256
// by a key of keys, and validates exp (required), nbf and iat at now with
// skew. Claims are read from the verified payload and nowhere else; a payload
// with a repeated member name, or a time claim that is not a number, is
// refused, so that every reader of the token sees the same claims. Errors are
// *Error: 401 for a bad token, 503 when the keys cannot be had.
func VerifyCompact(ctx context.Context, raw string, keys *KeySet, now time.Time, skew time.Duration) (*Verified, error) {
	if len(raw) > MaxTokenBytes {
		return nil, invalid("token is larger than %d bytes", MaxTokenBytes)
	}
	seg, err := splitCompact(raw)
	if err != nil {
		return nil, invalid("malformed token: %s", err)
	}
	kid, err := checkHeader(seg[0])
	if err != nil {
		return nil, invalid("malformed token header: %s", err)
	}
	key, err := keys.Key(ctx, kid, now)
	if err != nil {
		return nil, err
	}
	payload, err := jws.Verify([]byte(raw), jws.WithKey(jwa.RS256, key), jws.WithCompact())
	if err != nil {
		return nil, invalid("token signature is invalid")
	}
	if signed, err := base64.RawURLEncoding.Strict().DecodeString(seg[1]); err != nil || !bytes.Equal(signed, payload) {
		return nil, invalid("token payload is not the signed payload")
	}
	claims, err := decodeClaims(payload)
	if err != nil {
		return nil, invalid("token claims: %s", err)
	}
	tok := jwt.New()
	if err := json.Unmarshal(payload, tok); err != nil {
		return nil, invalid("token claims unreadable")
	}
	if err := jwt.Validate(tok,
		jwt.WithClock(jwt.ClockFunc(func() time.Time { return now })),
		jwt.WithAcceptableSkew(skew),
		jwt.WithRequiredClaim(jwt.ExpirationKey),
	); err != nil {
		return nil, invalid("%s", describeJWTError(err))
	}
	return &Verified{Token: tok, Claims: claims, KeyID: kid}, nil
}

// splitCompact returns the three segments of a compact JWS, each non-empty
// and of base64url characters only: no JSON serialization, no JWE (five
// segments), no padding, no whitespace.
func splitCompact(raw string) ([3]string, error) {
	var seg [3]string
	n, start := 0, 0
	for i := 0; i <= len(raw); i++ {
		if i < len(raw) && raw[i] != '.' {
			if !isBase64URL(raw[i]) {
				return seg, errors.New("not a compact JWS (a character outside base64url)")
			}
			continue
		}
		if n == 3 {
			return seg, errors.New("not a compact JWS (more than three segments)")
		}
		if i == start {
			return seg, errors.New("not a compact JWS (an empty segment)")
		}
		seg[n] = raw[start:i]
		n++
		start = i + 1
	}
	if n != 3 {
		return seg, errors.New("not a compact JWS (fewer than three segments)")
	}
	return seg, nil
}

func isBase64URL(c byte) bool {
	return c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_'
}

// checkHeader decodes the protected header and returns its kid. Only RS256
// is accepted, and nothing that changes what is signed or where the key comes
// from: no crit (b64=false, unencoded payloads), no cty (nested tokens), no
// embedded or remote keys.
func checkHeader(seg string) (string, error) {
	b, err := base64.RawURLEncoding.Strict().DecodeString(seg)
	if err != nil {
		return "", errors.New("not base64url")
	}
	h, err := decodeClaims(b)
	if err != nil {
		return "", err
	}
	if alg, _ := h["alg"].(string); alg != jwa.RS256.String() {
		return "", fmt.Errorf("signing algorithm %q is not accepted", h["alg"])
	}
	for _, name := range []string{"crit", "b64", "cty", "jwk", "jku", "x5u", "x5c", "zip", "enc"} {
		if _, ok := h[name]; ok {
			return "", fmt.Errorf("header parameter %q is not accepted", name)
		}
	}
	kid, _ := h["kid"].(string)
	if kid == "" {
		return "", errors.New("no key id")
	}
	return kid, nil
}

// timeClaims are NumericDate claims: numbers, as RFC 7519 has them.
var timeClaims = []string{"exp", "nbf", "iat"}

// decodeClaims decodes a JSON object with numbers kept as json.Number and
// refuses repeated member names at any depth (decoders differ on which one
// wins) and time claims that are not numbers.
func decodeClaims(b []byte) (map[string]any, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	v, err := decodeUnique(dec, 0)
	if err != nil {
		return nil, err
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errors.New("data after the JSON object")
	}
	m, ok := v.(map[string]any)
	if !ok {
		return nil, errors.New("not a JSON object")
	}
	for _, name := range timeClaims {
		if x, ok := m[name]; ok {
			if _, isNum := x.(json.Number); !isNum {
				return nil, fmt.Errorf("%s is not a number", name)
			}
		}
	}
	return m, nil
}

// maxClaimDepth bounds nesting in a token; Entra and Keycloak nest two levels.
const maxClaimDepth = 32

func decodeUnique(dec *json.Decoder, depth int) (any, error) {
	if depth > maxClaimDepth {
		return nil, errors.New("nested too deeply")
	}
	t, err := dec.Token()
	if err != nil {
		return nil, errors.New("malformed JSON")
	}
	switch t := t.(type) {
	case json.Delim:
		switch t {
		case '{':
			m := map[string]any{}
			for dec.More() {
				kt, err := dec.Token()
				if err != nil {
					return nil, errors.New("malformed JSON")
				}
				k, _ := kt.(string)
				if _, dup := m[k]; dup {
					return nil, fmt.Errorf("member %q appears twice", k)
				}
				v, err := decodeUnique(dec, depth+1)
				if err != nil {
					return nil, err
				}
				m[k] = v
			}
			_, err = dec.Token() // '}'
			return m, err
		case '[':
			a := []any{}
			for dec.More() {
				v, err := decodeUnique(dec, depth+1)
				if err != nil {
					return nil, err
				}
				a = append(a, v)
			}
			_, err = dec.Token() // ']'
			return a, err
		}
		return nil, errors.New("malformed JSON")
	default:
		return t, nil
	}
}
