package authn_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jws"

	"github.com/mcpguard/mcpguard/internal/devidp"
)

// TestKnownKeyIDWrongSignature: a token naming the issuer's published kid
// but signed by another key, or carrying the signature of another token, is
// refused for its signature. (A token of an unknown kid is refused before
// any signature check, so it does not show that the signature is checked.)
func TestKnownKeyIDWrongSignature(t *testing.T) {
	f := newFixture(t, nil)
	ctx := context.Background()
	other, err := devidp.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	claims := f.iss.Claims(devidp.Token{Audience: client, Scopes: []string{"read"}})
	hdr := jws.NewHeaders()
	_ = hdr.Set(jws.KeyIDKey, f.iss.KeyID())
	payload, err := json.Marshal(claims)
	if err != nil {
		t.Fatal(err)
	}
	forged, err := jws.Sign(payload, jws.WithKey(jwa.RS256, other, jws.WithProtectedHeaders(hdr)))
	if err != nil {
		t.Fatal(err)
	}
	// The signature of a genuine token of another user, on this payload.
	genuine := strings.Split(f.mint(t, devidp.Token{User: "bob"}), ".")
	mine := strings.Split(string(forged), ".")
	spliced := mine[0] + "." + mine[1] + "." + genuine[2]

	// The forger's header and payload are what the issuer signs: signed with
	// the issuer's own key they are accepted, so the refusals are for the key.
	if _, err := f.v.Verify(ctx, signRaw(t, f, nil, payload)); err != nil {
		t.Fatalf("the same payload signed by the issuer: %v", err)
	}
	for name, tok := range map[string]string{"signed by another key": string(forged), "another token's signature": spliced} {
		t.Run(name, func(t *testing.T) {
			id, err := f.v.Verify(ctx, tok)
			if id != nil {
				t.Fatalf("accepted as %s", id.ObjectID)
			}
			wantErr(t, err, 401, "signature")
		})
	}
}
