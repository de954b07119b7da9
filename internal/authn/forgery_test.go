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
	"github.com/mcpguard/mcpguard/internal/authn/authntest"
	"github.com/mcpguard/mcpguard/internal/devidp"
)

// signRaw signs payload bytes exactly as given, under a protected header
// made of hdr (alg RS256 and the issuer's kid unless hdr says otherwise),
// with the issuer's real key: tokens the issuer could have produced.
func signRaw(t testing.TB, f *fixture, hdr map[string]any, payload []byte) string {
	t.Helper()
	h := jws.NewHeaders()
	_ = h.Set(jws.KeyIDKey, f.iss.KeyID())
	for k, v := range hdr {
		if err := h.Set(k, v); err != nil {
			t.Fatal(err)
		}
	}
	b, err := jws.Sign(payload, jws.WithKey(jwa.RS256, f.key, jws.WithProtectedHeaders(h)))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// signRawHeader signs payload under a header given as raw JSON bytes.
func signRawHeader(t testing.TB, f *fixture, header string, payload []byte) string {
	t.Helper()
	// Sign over a header jwx would build, then splice in the raw header: the
	// signature must cover exactly the header segment sent, so sign that.
	hseg := base64.RawURLEncoding.EncodeToString([]byte(header))
	pseg := base64.RawURLEncoding.EncodeToString(payload)
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

// wrapJSON re-wraps a genuinely signed compact token into the JWS JSON
// serializations, with forged claims as members beside the signed parts:
// the attack that made any Entra-signed token a donor for any identity.
func wrapJSON(t testing.TB, donor string, forged map[string]any, general bool) string {
	t.Helper()
	return authntest.WrapJSON(donor, forged, general)
}

// TestForgedSerializations: only the compact serialization of a token whose
// signed payload is itself acceptable gets in; every other serialization or
// wrapping of a genuinely signed donor is refused.
func TestForgedSerializations(t *testing.T) {
	f := newFixture(t, nil)
	ctx := context.Background()
	// Donors Entra would sign: expired, another tenant's, another audience.
	expired := f.mint(t, devidp.Token{User: "mallory", IssuedAt: time.Now().Add(-48 * time.Hour)})
	otherTenant := f.mint(t, devidp.Token{User: "mallory", TenantID: "99999999-0000-4000-8000-000000000000"})
	otherAudience := f.mint(t, devidp.Token{User: "mallory", Audience: "api://another-api"})
	forged := map[string]any{
		"aud": client, "tid": tenant, "iss": f.srv.URL + "/" + tenant + "/v2.0", "ver": "2.0",
		"oid": devidp.ObjectIDFor("admin"), "azp": "x", "scp": "read", "roles": []string{"admin"},
		"exp": time.Now().Add(24 * time.Hour).Unix(),
	}
	good := f.mint(t, devidp.Token{User: "alice"})
	p := strings.Split(good, ".")

	cases := map[string]string{}
	for name, donor := range map[string]string{"expired": expired, "other tenant": otherTenant, "other audience": otherAudience, "valid": good} {
		cases["flattened JSON, "+name+" donor"] = wrapJSON(t, donor, forged, false)
		cases["general JSON, "+name+" donor"] = wrapJSON(t, donor, forged, true)
	}
	cases["flattened JSON without extra members"] = wrapJSON(t, good, nil, false)
	cases["general JSON without extra members"] = wrapJSON(t, good, nil, true)
	cases["JSON with whitespace before it"] = " \n" + wrapJSON(t, good, forged, false)
	cases["four segments"] = good + ".e30"
	cases["five segments (JWE shape)"] = good + ".e30.e30"
	cases["two segments"] = p[0] + "." + p[1]
	cases["padding"] = p[0] + "." + p[1] + "==." + p[2]
	cases["standard base64 alphabet"] = p[0] + "." + strings.NewReplacer("-", "+", "_", "/").Replace(p[1]) + "+/." + p[2]
	cases["newline inside"] = p[0] + ".\n" + p[1] + "." + p[2]
	cases["empty signature"] = p[0] + "." + p[1] + "."
	cases["unencoded payload (b64 false)"] = signRaw(t, f, map[string]any{"b64": false, "crit": []string{"b64"}}, []byte(`{}`))
	payload := func(mod func(map[string]any)) []byte {
		c := f.iss.Claims(devidp.Token{User: "alice", Audience: client, Scopes: []string{"read"}})
		if mod != nil {
			mod(c)
		}
		b, _ := json.Marshal(c)
		return b
	}
	cases["nested token (cty JWT)"] = signRaw(t, f, map[string]any{"cty": "JWT"}, []byte(good))
	cases["embedded key (jwk)"] = signRawHeader(t, f, `{"alg":"RS256","kid":"`+f.iss.KeyID()+`","jwk":{"kty":"oct","k":"AA"}}`, payload(nil))
	cases["key URL (jku)"] = signRawHeader(t, f, `{"alg":"RS256","kid":"`+f.iss.KeyID()+`","jku":"http://127.0.0.1:1/keys"}`, payload(nil))
	cases["alg twice in the header"] = signRawHeader(t, f, `{"alg":"none","alg":"RS256","kid":"`+f.iss.KeyID()+`"}`, payload(nil))
	dup := strings.Replace(string(payload(nil)), `"tid":"`+tenant+`"`, `"tid":"99999999-0000-4000-8000-000000000000","tid":"`+tenant+`"`, 1)
	if !strings.Contains(dup, `"tid":"99999999`) {
		t.Fatal("duplicate-claim payload not built")
	}
	cases["claim twice in the payload"] = signRawHeader(t, f, `{"alg":"RS256","kid":"`+f.iss.KeyID()+`","typ":"JWT"}`, []byte(dup))
	cases["nested claim twice"] = signRawHeader(t, f, `{"alg":"RS256","kid":"`+f.iss.KeyID()+`"}`,
		[]byte(strings.Replace(string(payload(nil)), `"oid"`, `"x":{"a":1,"a":2},"oid"`, 1)))
	cases["exp as a string"] = signRawHeader(t, f, `{"alg":"RS256","kid":"`+f.iss.KeyID()+`"}`,
		payload(func(c map[string]any) { c["exp"] = "4102444800" }))
	cases["payload an array"] = signRawHeader(t, f, `{"alg":"RS256","kid":"`+f.iss.KeyID()+`"}`, []byte(`[1]`))
	cases["payload with trailing data"] = signRawHeader(t, f, `{"alg":"RS256","kid":"`+f.iss.KeyID()+`"}`, append(payload(nil), []byte(` {}`)...))

	for name, tok := range cases {
		t.Run(name, func(t *testing.T) {
			id, err := f.v.Verify(ctx, tok)
			if err == nil {
				t.Fatalf("accepted as %s (%s)", id.UserID(), id.Kind)
			}
			wantErr(t, err, 401, "")
		})
	}
	// The raw-header signer makes tokens the verifier does accept when
	// nothing is wrong with them: the refusals above are for the flaw named.
	ok := signRawHeader(t, f, `{"alg":"RS256","kid":"`+f.iss.KeyID()+`","typ":"JWT"}`, payload(nil))
	if _, err := f.v.Verify(ctx, ok); err != nil {
		t.Fatalf("well-formed token refused: %v", err)
	}
}

// TestIDTokensRefused: an ID token is signed by the same keys for the same
// audience; only access tokens get in.
func TestIDTokensRefused(t *testing.T) {
	f := newFixture(t, nil)
	ctx := context.Background()
	// An Entra v2 ID token: aud is the client id, no scp, no azp, no idtyp, a nonce.
	idToken := f.mint(t, devidp.Token{User: "alice", Scopes: []string{}, Extra: map[string]any{"azp": nil, "idtyp": nil, "nonce": "n-0S6_WzA2Mj", "azpacr": nil}})
	cases := map[string]string{
		"ID token":                         idToken,
		"nonce beside access-token claims": f.mint(t, devidp.Token{User: "alice", Extra: map[string]any{"nonce": "n"}}),
		"v2 token without azp":             f.mint(t, devidp.Token{User: "alice", Extra: map[string]any{"azp": nil}}),
		"v1 token without appid": f.mint(t, devidp.Token{User: "alice", V1: true, Audience: "api://" + client,
			Extra: map[string]any{"appid": nil}}),
		"no scp, no idtyp, sub not the oid": f.mint(t, devidp.Token{User: "alice", Scopes: []string{}, Extra: map[string]any{"idtyp": nil}}),
	}
	g := newFixture(t, func(c *authn.Config) { c.AcceptV1 = true })
	for name, tok := range cases {
		t.Run(name, func(t *testing.T) {
			v := f.v
			if strings.HasPrefix(name, "v1") {
				v = g.v
				tok = g.mint(t, devidp.Token{User: "alice", V1: true, Audience: "api://" + client, Extra: map[string]any{"appid": nil}})
			}
			if id, err := v.Verify(ctx, tok); err == nil {
				t.Fatalf("accepted as %s (%s)", id.UserID(), id.Kind)
			}
		})
	}
}

// TestClaimsAsSent: the policy gets the claims as the token carries them:
// NumericDate as numbers, aud as sent.
func TestClaimsAsSent(t *testing.T) {
	f := newFixture(t, nil)
	id, err := f.v.Verify(context.Background(), f.mint(t, devidp.Token{User: "alice"}))
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"exp", "iat", "nbf"} {
		n, ok := id.Claims[name].(json.Number)
		if !ok {
			t.Fatalf("%s is %T, want a number", name, id.Claims[name])
		}
		if _, err := n.Int64(); err != nil {
			t.Fatalf("%s = %s", name, n)
		}
	}
	if id.Claims["aud"] != client {
		t.Fatalf("aud = %#v, want the string sent", id.Claims["aud"])
	}
	// An array aud stays an array.
	tok := signRawHeader(t, f, `{"alg":"RS256","kid":"`+f.iss.KeyID()+`"}`, func() []byte {
		c := f.iss.Claims(devidp.Token{User: "alice", Scopes: []string{"read"}})
		c["aud"] = []string{client, "other"}
		b, _ := json.Marshal(c)
		return b
	}())
	id, err = f.v.Verify(context.Background(), tok)
	if err != nil {
		t.Fatal(err)
	}
	if a, ok := id.Claims["aud"].([]any); !ok || len(a) != 2 {
		t.Fatalf("aud = %#v, want the array sent", id.Claims["aud"])
	}
}

// FuzzVerify mutates a genuine token and its JSON wrappings: whatever the
// verifier accepts carries exactly the claims the issuer signed.
func FuzzVerify(f *testing.F) {
	fx := newFixture(f, nil)
	good := fx.mint(f, devidp.Token{User: "alice"})
	want, err := fx.v.Verify(context.Background(), good)
	if err != nil {
		f.Fatal(err)
	}
	wantClaims, _ := json.Marshal(want.Claims)
	forged := map[string]any{"oid": "forged", "roles": []string{"admin"}}
	f.Add(good)
	f.Add(wrapJSON(f, good, forged, false))
	f.Add(wrapJSON(f, good, forged, true))
	f.Add(good + ".e30")
	f.Fuzz(func(t *testing.T, raw string) {
		id, err := fx.v.Verify(context.Background(), raw)
		if err != nil {
			return
		}
		got, _ := json.Marshal(id.Claims)
		if string(got) != string(wantClaims) {
			t.Fatalf("accepted %q with claims %s", raw, got)
		}
	})
}
