package e2e

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/mcpguard/mcpguard/internal/devidp"
)

// A token the issuer really signed (expired, for another tenant and another
// API) re-wrapped in the JWS JSON serialization, with the identity the
// attacker wants beside the signed parts. It must not reach admin_operation.
func TestForgedTokenRewrappedAsJSON(t *testing.T) {
	e := start(t, startIssuer(t), nil)
	const call = `{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"admin_operation","arguments":{"operation":"purge"}}}`

	// The real admin gets in: the tool and the rule exist.
	admin := e.token(t, devidp.Token{User: "root", Roles: []string{"admin"}})
	sid := session(t, e, admin)
	if res := post(t, e.URL, admin, call, map[string]string{"Mcp-Session-Id": sid}); !strings.Contains(body(t, res), `"result"`) {
		t.Fatalf("admin refused: the test proves nothing")
	}

	donor := e.token(t, devidp.Token{User: "mallory", TenantID: "99999999-0000-4000-8000-000000000000",
		Audience: "api://another-api", IssuedAt: time.Now().Add(-48 * time.Hour)})
	p := strings.Split(donor, ".")
	forged, _ := json.Marshal(map[string]any{
		"protected": p[0], "payload": p[1], "signature": p[2],
		"aud": clientID, "tid": tenantID, "iss": e.Issuer.IssuerURL(tenantID), "ver": "2.0",
		"oid": devidp.ObjectIDFor("root"), "azp": "x", "scp": "read", "roles": []string{"admin"},
		"exp": time.Now().Add(24 * time.Hour).Unix(),
	})
	res := post(t, e.URL, string(forged), initBody, nil)
	if res.StatusCode != 401 {
		t.Fatalf("forged token: %d %s, want 401", res.StatusCode, body(t, res))
	}
	res = post(t, e.URL, string(forged), call, map[string]string{"Mcp-Session-Id": sid})
	if b := body(t, res); res.StatusCode != 401 || strings.Contains(b, `"result"`) {
		t.Fatalf("forged token on the admin's session: %d %s, want 401", res.StatusCode, b)
	}
}
