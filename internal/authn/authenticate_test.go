package authn_test

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/mcpguard/mcpguard/internal/authn"
	"github.com/mcpguard/mcpguard/internal/devidp"
)

// Authenticate takes the token from "Authorization: Bearer …" only (the
// scheme in any case, one token, no blanks inside) and verifies it; a
// header of another shape is "bearer token required", before any parsing.
func TestAuthenticateReadsTheBearerToken(t *testing.T) {
	f := newFixture(t, nil)
	tok := f.mint(t, devidp.Token{User: "ada"})
	for _, c := range []struct {
		header string
		ok     bool
	}{
		{"Bearer " + tok, true},
		{"bearer " + tok, true},
		{"BEARER  " + tok + " ", true},
		{"", false},
		{"Bearer", false},
		{"Bearer ", false},
		{"Bearer  ", false},
		{"Basic " + tok, false},
		{"Bearer" + tok, false},
		{"Bearer " + tok + " " + tok, false},
		{"Bearer " + tok[:10] + "\t" + tok[10:], false},
	} {
		r := httptest.NewRequest(http.MethodPost, "/mcp", nil)
		if c.header != "" {
			r.Header.Set("Authorization", c.header)
		}
		id, raw, err := f.v.Authenticate(r)
		if c.ok {
			if err != nil || id == nil || id.ObjectID != devidp.ObjectIDFor("ada") || raw != tok {
				t.Errorf("%q: %v", c.header, err)
			}
			continue
		}
		if err == nil || id != nil || raw != "" {
			t.Errorf("%q: accepted (%v)", c.header, id)
		}
		wantErr(t, err, 401, "bearer token required")
	}
	// A bearer token of the right shape that does not verify.
	r := httptest.NewRequest(http.MethodPost, "/mcp", nil)
	r.Header.Set("Authorization", "Bearer x")
	_, _, err := f.v.Authenticate(r)
	wantErr(t, err, 401, "malformed token")
}

// The middleware lets a verified caller through with its identity in the
// request context, and answers anyone else with the challenge.
func TestMiddleware(t *testing.T) {
	f := newFixture(t, nil)
	var seen *authn.Identity
	calls := 0
	h := f.v.Middleware(authn.Challenge{ResourceMetadataURL: "https://mcp.example/.well-known/oauth-protected-resource"})(
		http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) { calls++; seen = authn.FromContext(r.Context()) }))
	r := httptest.NewRequest(http.MethodPost, "/mcp", nil)
	r.Header.Set("Authorization", "Bearer "+f.mint(t, devidp.Token{User: "ada"}))
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, r)
	if calls != 1 || seen == nil || seen.ObjectID != devidp.ObjectIDFor("ada") {
		t.Fatalf("a verified caller: %d calls, identity %+v", calls, seen)
	}
	rec = httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/mcp", nil))
	if calls != 1 || rec.Code != http.StatusUnauthorized || rec.Header().Get("WWW-Authenticate") == "" {
		t.Fatalf("no token: %d calls, %d", calls, rec.Code)
	}
}
