package server

import (
	"context"
	"crypto/sha256"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/mcpguard/mcpguard/internal/authn"
	"github.com/mcpguard/mcpguard/internal/config"
	"github.com/mcpguard/mcpguard/internal/exchange"
)

// TestKeycloakSettingsReachTheExchange: KEYCLOAK_GRANT (and the other
// settings that shape the request: identity provider alias, audience, scope,
// client authentication) go from the configuration through the server's role
// source into the request Keycloak gets. A fake token endpoint records it.
func TestKeycloakSettingsReachTheExchange(t *testing.T) {
	var (
		mu   sync.Mutex
		form url.Values
		auth string
	)
	kc := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/realms/r/protocol/openid-connect/token" {
			http.NotFound(w, r)
			return
		}
		_ = r.ParseForm()
		mu.Lock()
		form = r.PostForm
		auth = "none"
		if u, _, ok := r.BasicAuth(); ok {
			auth = "basic " + u
		}
		mu.Unlock()
		// A refusal: the request is what is under test, not a token.
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusBadRequest)
		_, _ = w.Write([]byte(`{"error":"invalid_grant","error_description":"User not found"}`))
	}))
	t.Cleanup(kc.Close)

	const entraToken = "entra.access.token"
	for _, c := range []struct {
		name string
		vars map[string]string
		want map[string]string // form values; "" means absent
		auth string
	}{
		{"jwt-bearer grant, client secret in the body", map[string]string{"KEYCLOAK_GRANT": "jwt-bearer", "KEYCLOAK_CLIENT_AUTH": "post"},
			map[string]string{"grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer", "assertion": entraToken,
				"subject_token": "", "client_id": "mcpguard"}, "none"},
		{"token-exchange grant by default", map[string]string{"KEYCLOAK_IDP_ALIAS": "entra-prod", "KEYCLOAK_AUDIENCE": "mcpguard-api", "KEYCLOAK_SCOPE": "roles"},
			map[string]string{"grant_type": "urn:ietf:params:oauth:grant-type:token-exchange", "subject_token": entraToken,
				"subject_issuer": "entra-prod", "audience": "mcpguard-api", "scope": "roles", "assertion": "", "client_id": ""}, "basic mcpguard"},
		{"token-exchange grant named", map[string]string{"KEYCLOAK_GRANT": "token-exchange"},
			map[string]string{"grant_type": "urn:ietf:params:oauth:grant-type:token-exchange", "subject_token": entraToken,
				"subject_issuer": "entra", "assertion": ""}, "basic mcpguard"},
	} {
		t.Run(c.name, func(t *testing.T) {
			vars := map[string]string{
				"ENVIRONMENT": "development", "ENABLE_AUTH": "false", "ROLE_SOURCE": "keycloak",
				"KEYCLOAK_SERVER_URL": kc.URL, "KEYCLOAK_REALM": "r",
				"KEYCLOAK_CLIENT_ID": "mcpguard", "KEYCLOAK_CLIENT_SECRET": "s3cret",
			}
			for k, v := range c.vars {
				vars[k] = v
			}
			cfg, err := config.FromSource(func(name string) (string, bool) { v, ok := vars[name]; return v, ok })
			if err != nil {
				t.Fatal(err)
			}
			src, err := roleSource(cfg, nil, nil)
			if err != nil {
				t.Fatal(err)
			}
			mu.Lock()
			form, auth = nil, ""
			mu.Unlock()
			id := &authn.Identity{Kind: authn.KindUser, TenantID: "t", ObjectID: "o", Expiry: time.Now().Add(time.Hour),
				Key: sha256.Sum256([]byte(c.name))}
			if _, err := src.Resolve(context.Background(), id, entraToken); !errors.Is(err, exchange.ErrRefused) {
				t.Fatalf("want Keycloak's refusal, got %v", err)
			}
			mu.Lock()
			defer mu.Unlock()
			if form == nil {
				t.Fatal("Keycloak was not asked")
			}
			for k, v := range c.want {
				if got := form.Get(k); got != v {
					t.Errorf("%s = %q, want %q", k, got, v)
				}
			}
			if auth != c.auth {
				t.Errorf("client authentication %q, want %q", auth, c.auth)
			}
		})
	}
}
