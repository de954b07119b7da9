package authn_test

import (
	"encoding/json"
	"errors"
	"net/http/httptest"
	"testing"

	"github.com/mcpguard/mcpguard/internal/authn"
)

// The challenge carries exactly the parameters that apply (RFC 6750 §3,
// RFC 9728 §5.1): resource_metadata and scope when configured, error only
// for a token that was refused, none of them but Retry-After when the keys
// are unavailable; the JSON body always names an error code.
func TestChallengeParameters(t *testing.T) {
	full := authn.Challenge{ResourceMetadataURL: "https://mcp.example/.well-known/oauth-protected-resource/mcp", Scopes: []string{"api://x/read", "api://x/write"}}
	for _, c := range []struct {
		name      string
		ch        authn.Challenge
		err       error
		status    int
		header    string
		retry     string
		bodyError string
	}{
		{"no token", full, &authn.Error{Status: 401, Description: "bearer token required"}, 401,
			`Bearer resource_metadata="https://mcp.example/.well-known/oauth-protected-resource/mcp", scope="api://x/read api://x/write"`, "", "unauthorized"},
		{"bad token", full, &authn.Error{Status: 401, Code: "invalid_token", Description: "token expired"}, 401,
			`Bearer resource_metadata="https://mcp.example/.well-known/oauth-protected-resource/mcp", error="invalid_token", error_description="token expired", scope="api://x/read api://x/write"`, "", "invalid_token"},
		{"bare challenge", authn.Challenge{}, &authn.Error{Status: 401, Code: "invalid_token", Description: "d"}, 401,
			`Bearer error="invalid_token", error_description="d"`, "", "invalid_token"},
		{"nothing to say", authn.Challenge{}, &authn.Error{Status: 401}, 401, `Bearer`, "", "unauthorized"},
		{"keys unavailable", full, &authn.Error{Status: 503, Code: "temporarily_unavailable", Description: "keys"}, 503, "", "5", "temporarily_unavailable"},
		{"bad request", authn.Challenge{}, &authn.Error{Status: 400, Description: "two tokens"}, 400, `Bearer`, "", "invalid_request"},
		{"not an authn error", authn.Challenge{}, errors.New("boom"), 401, `Bearer error="invalid_token", error_description="token rejected"`, "", "invalid_token"},
	} {
		rec := httptest.NewRecorder()
		c.ch.Write(rec, c.err)
		var body struct {
			Error string `json:"error"`
		}
		if rec.Code != c.status || rec.Header().Get("WWW-Authenticate") != c.header || rec.Header().Get("Retry-After") != c.retry ||
			json.Unmarshal(rec.Body.Bytes(), &body) != nil || body.Error != c.bodyError || rec.Header().Get("Cache-Control") != "no-store" {
			t.Errorf("%s: %d %q retry %q body %s", c.name, rec.Code, rec.Header().Get("WWW-Authenticate"), rec.Header().Get("Retry-After"), rec.Body)
		}
	}
}
