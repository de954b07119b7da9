package authn_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jws"

	"github.com/mcpguard/mcpguard/internal/authn"
	"github.com/mcpguard/mcpguard/internal/devidp"
)

// VerifyCompact (which also verifies Keycloak's tokens) refuses tokens over
// MaxTokenBytes before anything parses them, and only those.
func TestVerifyCompactSizeLimit(t *testing.T) {
	// Never fetched: both tokens are refused before a key is looked up.
	keys := &authn.KeySet{JWKSURI: "http://127.0.0.1:1/certs"}
	for _, c := range []struct {
		n    int
		want string
	}{
		{authn.MaxTokenBytes, "malformed token"},
		{authn.MaxTokenBytes + 1, "larger than"},
	} {
		_, err := authn.VerifyCompact(context.Background(), strings.Repeat("a", c.n), keys, time.Now(), time.Minute)
		wantErr(t, err, 401, c.want)
	}
}

// nested is a JSON value with depth levels of objects (or arrays) around a number.
func nested(depth int, array bool) any {
	var v any = 1
	for range depth {
		if array {
			v = []any{v}
		} else {
			v = map[string]any{"a": v}
		}
	}
	return v
}

// Claims nest at most 32 levels (the claims object is level 0): deeper
// tokens are refused, however they nest, and a token at the limit is not.
func TestClaimsNestingLimit(t *testing.T) {
	f := newFixture(t, nil)
	for _, array := range []bool{false, true} {
		for _, c := range []struct {
			depth int
			ok    bool
		}{{31, true}, {32, false}, {60, false}} {
			claims := f.iss.Claims(devidp.Token{User: "ada", Audience: client, Scopes: []string{"read"}})
			claims["deep"] = nested(c.depth, array)
			payload, err := json.Marshal(claims)
			if err != nil {
				t.Fatal(err)
			}
			_, err = f.v.Verify(context.Background(), signRaw(t, f, nil, payload))
			if c.ok && err != nil {
				t.Errorf("array=%v, a claim nested %d levels: %v", array, c.depth, err)
			}
			if !c.ok {
				if err == nil {
					t.Errorf("array=%v, a claim nested %d levels accepted", array, c.depth)
				} else {
					wantErr(t, err, 401, "nested too deeply")
				}
			}
		}
	}
}

// A payload segment in a non-canonical base64url form (non-zero trailing
// bits) is refused even when the issuer's key signed exactly that segment,
// so the claims read are the bytes every decoder reads alike. (jwx verifies
// over the payload re-encoded, which already refuses it; VerifyCompact's own
// strict decoding is the second lock, see test/mutate/go-allow.txt.)
func TestNonCanonicalPayloadRefused(t *testing.T) {
	f := newFixture(t, nil)
	claims := f.iss.Claims(devidp.Token{User: "ada", Audience: client, Scopes: []string{"read"}})
	var pseg string
	for pad := 0; ; pad++ {
		claims["pad"] = strings.Repeat("x", pad)
		payload, _ := json.Marshal(claims)
		if len(payload)%3 == 1 { // the last character carries 4 unused bits
			pseg = base64.RawURLEncoding.EncodeToString(payload)
			break
		}
	}
	// The canonical token verifies; the same bytes with the unused bits set do not.
	hseg := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"RS256","kid":"` + f.iss.KeyID() + `","typ":"JWT"}`))
	sign := func(pseg string) string {
		signer, err := jws.NewSigner(jwa.RS256)
		if err != nil {
			t.Fatal(err)
		}
		sig, err := signer.Sign([]byte(hseg+"."+pseg), f.key)
		if err != nil {
			t.Fatal(err)
		}
		return hseg + "." + pseg + "." + base64.RawURLEncoding.EncodeToString(sig)
	}
	if _, err := f.v.Verify(context.Background(), sign(pseg)); err != nil {
		t.Fatalf("canonical token: %v", err)
	}
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
	last := strings.IndexByte(alphabet, pseg[len(pseg)-1])
	loose := pseg[:len(pseg)-1] + string(alphabet[last|0x0f])
	if loose == pseg {
		t.Fatal("no unused bit to set")
	}
	_, err := f.v.Verify(context.Background(), sign(loose))
	if err == nil {
		t.Fatal("a payload segment with non-zero unused bits accepted")
	}
	wantErr(t, err, 401, "")
}

// The verifier refuses tokens over MaxTokenBytes before hashing or
// verifying them, and only those.
func TestVerifierSizeLimit(t *testing.T) {
	f := newFixture(t, nil)
	_, err := f.v.Verify(context.Background(), strings.Repeat("a", authn.MaxTokenBytes))
	wantErr(t, err, 401, "malformed token")
	_, err = f.v.Verify(context.Background(), strings.Repeat("a", authn.MaxTokenBytes+1))
	wantErr(t, err, 401, "larger than")
}
