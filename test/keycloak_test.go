package e2e

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mcpguard/mcpguard/internal/devidp"
)

// TestKeycloakExchangeSmoke speaks to the real Keycloak's token endpoint with
// plain net/http, as any client of the two grants would, independently of
// mcpguard's exchange client: it proves the realm, the identity provider, its
// mappers and the exchange permission (set up by the harness through the
// Admin REST API) are what both grants need, and pins down what Keycloak
// 26.7 does with an Entra-shaped token.
func TestKeycloakExchangeSmoke(t *testing.T) {
	began := time.Now()
	kc := startKeycloak(t) // the shared instance: started here when this test runs first
	t.Logf("startKeycloak: %s", time.Since(began).Round(time.Millisecond))
	began = time.Now()
	// A user Keycloak has never seen: the first exchange imports it.
	user := fmt.Sprintf("kc-smoke-%d", time.Now().UnixNano())
	entra := smokeMint(t, kc, devidp.Token{User: user, Roles: []string{"data_reader", "api.writer"}, Scopes: []string{"read"}})

	exchangesBefore := smokeEvents(t, kc, "TOKEN_EXCHANGE")
	grantsBefore := smokeEvents(t, kc, "JWT_AUTHORIZATION_GRANT")

	// RFC 8693 external → internal exchange.
	status, res := smokeToken(t, kc, smokeExchangeForm(entra))
	if status != http.StatusOK {
		t.Fatalf("token exchange: %d %v", status, res)
	}
	if res["issued_token_type"] != "urn:ietf:params:oauth:token-type:access_token" {
		t.Errorf("issued_token_type = %v", res["issued_token_type"])
	}
	c := smokeClaims(t, res["access_token"])
	smokeWantRoles(t, "exchange", c, []string{"data_reader"}, []string{"writer"}, []string{"finance", "executive", "admin", "supervisor"})
	if c["preferred_username"] != user+"@dev.mcpguard.test" || c["azp"] != kcClientID || c["iss"] != kc.url+"/realms/"+kcRealm {
		t.Errorf("exchanged token: preferred_username=%v azp=%v iss=%v", c["preferred_username"], c["azp"], c["iss"])
	}
	// What mcpguard checks of it: an access token (typ Bearer), and the
	// subject binding the harness set up (bindSubject): the Entra oid.
	if c["typ"] != "Bearer" || c["entra_oid"] != devidp.ObjectIDFor(user) {
		t.Errorf("exchanged token: typ=%v entra_oid=%v, want Bearer and %s", c["typ"], c["entra_oid"], devidp.ObjectIDFor(user))
	}
	t.Logf("exchanged token: sub=%v (the Keycloak user's id, not the Entra sub %v)", c["sub"], smokeClaims(t, entra)["sub"])
	smokeWaitEvents(t, kc, "TOKEN_EXCHANGE", exchangesBefore+1)

	// RFC 7523 JWT authorization grant with the same Entra token: the user is
	// linked now (the grant never imports one). Entra tokens have no jti, so
	// the identity provider allows reuse.
	for i := range 2 {
		status, res = smokeToken(t, kc, smokeBearerForm(entra))
		if status != http.StatusOK {
			t.Fatalf("jwt-bearer #%d: %d %v", i+1, status, res)
		}
		smokeWantRoles(t, "jwt-bearer", smokeClaims(t, res["access_token"]), []string{"data_reader"}, []string{"writer"}, nil)
		if _, ok := res["refresh_token"]; ok {
			t.Errorf("jwt-bearer answered a refresh token")
		}
	}
	smokeWaitEvents(t, kc, "JWT_AUTHORIZATION_GRANT", grantsBefore+2)

	// An Entra token issued 20 minutes ago (still valid): accepted, because the
	// identity provider's maximum assertion age is raised from 300 s.
	old := smokeMint(t, kc, devidp.Token{User: user, Roles: []string{"data_reader"}, IssuedAt: time.Now().Add(-20 * time.Minute)})
	if status, res = smokeToken(t, kc, smokeBearerForm(old)); status != http.StatusOK {
		t.Fatalf("jwt-bearer with a 20-minute-old token: %d %v", status, res)
	}

	// The grant refuses a caller Keycloak has not linked…
	stranger := smokeMint(t, kc, devidp.Token{User: user + "-stranger", Roles: []string{"data_reader"}})
	status, res = smokeToken(t, kc, smokeBearerForm(stranger))
	if status != http.StatusBadRequest || res["error"] != "invalid_grant" || res["error_description"] != "User not found" {
		t.Fatalf("jwt-bearer, unlinked user: %d %v", status, res)
	}
	// …and a token for another audience. (Entra's sub is pairwise per API and
	// Keycloak looks the user up first, so the subject is kept to reach the
	// audience check.)
	other := smokeMint(t, kc, devidp.Token{User: user, Audience: "00000000-0000-4000-8000-00000000beef",
		Extra: map[string]any{"sub": smokeClaims(t, entra)["sub"]}})
	status, res = smokeToken(t, kc, smokeBearerForm(other))
	if status != http.StatusBadRequest || res["error_description"] != "Invalid token audience" {
		t.Fatalf("jwt-bearer, foreign audience: %d %v", status, res)
	}
	// Token exchange does not check the Entra token's audience at all:
	// mcpguard must (and does) verify it before exchanging.
	// docs/KEYCLOAK_SETUP.md §2 says so: if Keycloak starts checking, this
	// fails and the document is to be corrected.
	status, res = smokeToken(t, kc, smokeExchangeForm(other))
	if status != http.StatusOK || res["access_token"] == nil {
		t.Fatalf("token exchange of a token for another audience: %d %v; docs/KEYCLOAK_SETUP.md says Keycloak exchanges it (no aud check)", status, res)
	}

	// The operator's way to serve a user through the grant without a prior
	// exchange: create the user, link it to the Entra subject, give it roles.
	// The grant runs no mapper: roles are Keycloak's, not the token's.
	linked := user + "-linked"
	lt := smokeMint(t, kc, devidp.Token{User: linked, Roles: []string{"data_reader"}})
	sub, _ := smokeClaims(t, lt)["sub"].(string)
	uid := smokeCreateUser(t, kc, linked)
	r := "/realms/" + kcRealm
	if _, err := kc.admin("POST", r+"/users/"+uid+"/federated-identity/"+kcIDPAlias,
		map[string]any{"identityProvider": kcIDPAlias, "userId": sub, "userName": linked}, nil); err != nil {
		t.Fatal(err)
	}
	var finance map[string]any
	if _, err := kc.admin("GET", r+"/roles/finance", nil, &finance); err != nil {
		t.Fatal(err)
	}
	if _, err := kc.admin("POST", r+"/users/"+uid+"/role-mappings/realm", []any{finance}, nil); err != nil {
		t.Fatal(err)
	}
	status, res = smokeToken(t, kc, smokeBearerForm(lt))
	if status != http.StatusOK {
		t.Fatalf("jwt-bearer, user linked by the operator: %d %v", status, res)
	}
	smokeWantRoles(t, "jwt-bearer (linked)", smokeClaims(t, res["access_token"]), []string{"finance"}, nil, []string{"data_reader"})

	t.Logf("smoke: %d TOKEN_EXCHANGE and %d JWT_AUTHORIZATION_GRANT events in Keycloak; %s",
		smokeEvents(t, kc, "TOKEN_EXCHANGE"), smokeEvents(t, kc, "JWT_AUTHORIZATION_GRANT"), time.Since(began).Round(time.Millisecond))
}

// smokeMint mints an Entra-shaped access token for the API the identity
// provider is configured for.
func smokeMint(t *testing.T, kc *keycloak, tok devidp.Token) string {
	t.Helper()
	if tok.Audience == "" {
		tok.Audience = clientID
	}
	s, err := kc.issuer.Mint(tok)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func smokeExchangeForm(subject string) url.Values {
	return url.Values{
		"grant_type":           {"urn:ietf:params:oauth:grant-type:token-exchange"},
		"subject_token":        {subject},
		"subject_token_type":   {"urn:ietf:params:oauth:token-type:jwt"},
		"subject_issuer":       {kcIDPAlias},
		"requested_token_type": {"urn:ietf:params:oauth:token-type:access_token"},
	}
}

func smokeBearerForm(assertion string) url.Values {
	return url.Values{
		"grant_type": {"urn:ietf:params:oauth:grant-type:jwt-bearer"},
		"assertion":  {assertion},
	}
}

// smokeToken posts a grant to the realm's token endpoint as the mcpguard client.
func smokeToken(t *testing.T, kc *keycloak, form url.Values) (int, map[string]any) {
	t.Helper()
	form.Set("client_id", kcClientID)
	form.Set("client_secret", kcClientSecret)
	c := &http.Client{Timeout: 30 * time.Second}
	res, err := c.PostForm(kc.url+"/realms/"+kcRealm+"/protocol/openid-connect/token", form)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	var out map[string]any
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatalf("token endpoint: %d %s", res.StatusCode, b)
	}
	return res.StatusCode, out
}

// smokeClaims decodes a JWT's payload (Keycloak signed it; the test only reads it).
func smokeClaims(t *testing.T, tok any) map[string]any {
	t.Helper()
	s, _ := tok.(string)
	parts := strings.Split(s, ".")
	if len(parts) != 3 {
		t.Fatalf("not a JWT: %.40q", s)
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	var c map[string]any
	if err := json.Unmarshal(b, &c); err != nil {
		t.Fatal(err)
	}
	return c
}

func smokeStrings(v any) []string {
	var out []string
	list, _ := v.([]any)
	for _, x := range list {
		if s, ok := x.(string); ok {
			out = append(out, s)
		}
	}
	return out
}

// smokeWantRoles checks realm_access.roles and resource_access.api.roles.
func smokeWantRoles(t *testing.T, what string, c map[string]any, realm, api, absent []string) {
	t.Helper()
	ra, _ := c["realm_access"].(map[string]any)
	realmRoles := smokeStrings(ra["roles"])
	res, _ := c["resource_access"].(map[string]any)
	apiAccess, _ := res["api"].(map[string]any)
	apiRoles := smokeStrings(apiAccess["roles"])
	for _, r := range realm {
		if !slices.Contains(realmRoles, r) {
			t.Errorf("%s: realm_access.roles %v lacks %s", what, realmRoles, r)
		}
	}
	for _, r := range api {
		if !slices.Contains(apiRoles, r) {
			t.Errorf("%s: resource_access.api.roles %v lacks %s", what, apiRoles, r)
		}
	}
	for _, r := range absent {
		if slices.Contains(realmRoles, r) {
			t.Errorf("%s: realm_access.roles %v has %s", what, realmRoles, r)
		}
	}
}

// smokeEvents counts the realm's stored events of a type for the mcpguard client.
func smokeEvents(t *testing.T, kc *keycloak, typ string) int {
	t.Helper()
	var events []any
	if _, err := kc.admin("GET", "/realms/"+kcRealm+"/events?type="+typ+"&client="+kcClientID+"&max=100000", nil, &events); err != nil {
		t.Fatal(err)
	}
	return len(events)
}

// smokeWaitEvents waits briefly for Keycloak to store the events it reported.
func smokeWaitEvents(t *testing.T, kc *keycloak, typ string, want int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		n := smokeEvents(t, kc, typ)
		if n == want {
			return
		}
		if n > want || time.Now().After(deadline) {
			t.Fatalf("%s events: %d, want %d", typ, n, want)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// smokeCreateUser creates a Keycloak user and returns its id.
func smokeCreateUser(t *testing.T, kc *keycloak, username string) string {
	t.Helper()
	r := "/realms/" + kcRealm
	if _, err := kc.admin("POST", r+"/users", map[string]any{"username": username, "enabled": true,
		"email": username + "@example.test", "emailVerified": true, "firstName": "Linked", "lastName": "User"}, nil); err != nil {
		t.Fatal(err)
	}
	var users []struct {
		ID string `json:"id"`
	}
	if _, err := kc.admin("GET", r+"/users?exact=true&username="+url.QueryEscape(username), nil, &users); err != nil {
		t.Fatal(err)
	}
	if len(users) != 1 {
		t.Fatalf("user %s: %d found", username, len(users))
	}
	return users[0].ID
}

// TestKeycloakJWTBearerAssertionRules pins down why the identity provider
// relaxes two of Keycloak's defaults for Entra tokens: with the defaults
// (assertion reuse not allowed, maximum assertion age 300 s) an Entra access
// token — no jti, lifetime 60–90 minutes, sent again until it expires — is
// refused. The identity provider's configuration is restored afterwards.
func TestKeycloakJWTBearerAssertionRules(t *testing.T) {
	kc := startKeycloak(t)
	user := fmt.Sprintf("kc-rules-%d", time.Now().UnixNano())
	entra := smokeMint(t, kc, devidp.Token{User: user, Roles: []string{"data_reader"}})
	if status, res := smokeToken(t, kc, smokeExchangeForm(entra)); status != http.StatusOK { // links the user
		t.Fatalf("token exchange: %d %v", status, res)
	}

	path := "/realms/" + kcRealm + "/identity-provider/instances/" + kcIDPAlias
	var saved map[string]any
	if _, err := kc.admin("GET", path, nil, &saved); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if _, err := kc.admin("PUT", path, saved, nil); err != nil {
			t.Errorf("restoring the identity provider: %v", err)
		}
	})
	defaults := map[string]any{}
	if err := json.Unmarshal([]byte(toJSON(saved)), &defaults); err != nil {
		t.Fatal(err)
	}
	cfg := defaults["config"].(map[string]any)
	delete(cfg, "jwtAuthorizationGrantAssertionReuseAllowed")
	delete(cfg, "jwtAuthorizationGrantMaxAllowedAssertionExpiration")
	if _, err := kc.admin("PUT", path, defaults, nil); err != nil {
		t.Fatal(err)
	}

	refused := func(what, assertion, want string) {
		t.Helper()
		status, res := smokeToken(t, kc, smokeBearerForm(assertion))
		if status != http.StatusBadRequest || res["error"] != "invalid_grant" || res["error_description"] != want {
			t.Errorf("%s: %d %v, want invalid_grant %q", what, status, res, want)
		}
	}
	// No jti (as Entra issues them): refused.
	refused("no jti", entra, "Token jti claim is required")
	// With a jti: once, not twice.
	withJTI := smokeMint(t, kc, devidp.Token{User: user, Lifetime: 4 * time.Minute, Extra: map[string]any{"jti": fmt.Sprint(time.Now().UnixNano())}})
	if status, res := smokeToken(t, kc, smokeBearerForm(withJTI)); status != http.StatusOK {
		t.Errorf("with a jti, first use: %d %v", status, res)
	}
	refused("the same jti again", withJTI, "Token reuse detected")
	// Issued more than 300 s ago: refused, however long it still lives.
	old := smokeMint(t, kc, devidp.Token{User: user, IssuedAt: time.Now().Add(-6 * time.Minute), Extra: map[string]any{"jti": fmt.Sprint(time.Now().UnixNano())}})
	refused("issued 6 minutes ago", old, "Token was issued too far in the past to be used now")
}
