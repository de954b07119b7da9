package exchange

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mcpguard/mcpguard/internal/authn"
	"github.com/mcpguard/mcpguard/internal/devidp"
	"github.com/mcpguard/mcpguard/internal/store"
	"github.com/mcpguard/mcpguard/internal/store/storetest"
)

// strangerKey is a key the fake realm does not publish.
var strangerKey = sync.OnceValue(func() *rsa.PrivateKey { k, _ := devidp.NewKey(); return k })

// signWith signs exactly header and payload with key.
func signWith(t testing.TB, key *rsa.PrivateKey, header string, payload []byte) string {
	h := base64.RawURLEncoding.EncodeToString([]byte(header))
	p := base64.RawURLEncoding.EncodeToString(payload)
	sum := sha256.Sum256([]byte(h + "." + p))
	sig, err := rsa.SignPKCS1v15(rand.Reader, key, crypto.SHA256, sum[:])
	if err != nil {
		t.Fatal(err)
	}
	return h + "." + p + "." + base64.RawURLEncoding.EncodeToString(sig)
}

// TestKeycloakTokenSignatureChecked: a Keycloak token that names the realm's
// published kid is accepted only with that key's signature over exactly its
// header and payload. (TestRefusals' "signature" case uses a kid the realm
// does not publish, refused before any signature is checked.)
func TestKeycloakTokenSignatureChecked(t *testing.T) {
	// The stranger's key is generated now, not in the token endpoint's first
	// answer: on a loaded machine an RSA key takes longer than the client's
	// one-second timeout, and the retry would count as a second call.
	strangerKey()
	payload := func(c map[string]any) []byte { b, _ := json.Marshal(c); return b }
	elevate := func(c map[string]any) map[string]any {
		f := make(map[string]any, len(c))
		for k, v := range c {
			f[k] = v
		}
		f["realm_access"] = map[string]any{"roles": []string{"admin", "supervisor"}}
		return f
	}
	cases := map[string]func(te *tokenEndpoint, c map[string]any) string{
		"realm's kid, signed by another key": func(te *tokenEndpoint, c map[string]any) string {
			return signWith(te.t, strangerKey(), te.header(""), payload(elevate(c)))
		},
		"payload changed after signing": func(te *tokenEndpoint, c map[string]any) string {
			p := strings.Split(te.signRaw(te.header(""), payload(c)), ".")
			return p[0] + "." + base64.RawURLEncoding.EncodeToString(payload(elevate(c))) + "." + p[2]
		},
		"signature of another token": func(te *tokenEndpoint, c map[string]any) string {
			genuine := strings.Split(te.signRaw(te.header(""), payload(c)), ".")
			h := base64.RawURLEncoding.EncodeToString([]byte(te.header("")))
			return h + "." + base64.RawURLEncoding.EncodeToString(payload(elevate(c))) + "." + genuine[2]
		},
	}
	for name, mk := range cases {
		t.Run(name, func(t *testing.T) {
			te := newTokenEndpoint(t)
			te.token = mk
			k, _ := newSource(t, te, nil)
			a, err := k.Resolve(context.Background(), caller(name, time.Hour), name)
			if a != nil {
				t.Fatalf("accepted: roles %v", a.Roles)
			}
			if !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), "signature") || te.calls.Load() != 1 {
				t.Fatalf("%v after %d calls, want a refusal for the signature after one", err, te.calls.Load())
			}
		})
	}
	// The same header and payload signed by the realm's key are accepted:
	// the refusals above are for the signature alone.
	te := newTokenEndpoint(t)
	te.token = func(te *tokenEndpoint, c map[string]any) string {
		return te.signRaw(te.header(""), payload(elevate(c)))
	}
	k, _ := newSource(t, te, nil)
	a, err := k.Resolve(context.Background(), caller("genuine", time.Hour), "genuine")
	if err != nil || !slices.Equal(a.Roles, []string{"admin", "supervisor"}) {
		t.Fatalf("genuinely signed token: %v %+v", err, a)
	}
}

// TestKeycloakSharedCacheInRedis: replicas sharing one Redis (a real
// redis-server on loopback; the store built as the server builds it: sealed,
// with memory standing in while Redis is down) reuse each other's results: a
// second Keycloak source makes no exchange for a token the first resolved,
// nor for a token Keycloak refused.
func TestKeycloakSharedCacheInRedis(t *testing.T) {
	addr, _ := storetest.RedisServer(t)
	te := newTokenEndpoint(t)
	sealing := make([]byte, 32)
	if _, err := rand.Read(sealing); err != nil {
		t.Fatal(err)
	}
	replica := func() (*Keycloak, *store.Fallback) {
		r, err := store.NewRedis(store.RedisOptions{Addrs: []string{addr}, Password: storetest.Password, Prefix: "mcpguard:"})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = r.Close() })
		fb := store.NewFallback(r, store.NewMemory(0), nil)
		sealed, err := store.NewEncrypted(fb, [][]byte{sealing})
		if err != nil {
			t.Fatal(err)
		}
		k, err := NewKeycloak(KeycloakConfig{ServerURL: te.srv.URL, Realm: "r", ClientID: "mcpguard", ClientSecret: "s3cret",
			IDPAlias: "entra", Timeout: time.Second}, sealed, nil)
		if err != nil {
			t.Fatal(err)
		}
		return k, fb
	}
	ctx := context.Background()
	k1, fb1 := replica()
	k2, fb2 := replica()

	const tok = "entra.token.shared"
	a1, err := k1.Resolve(ctx, caller(tok, time.Hour), tok)
	if err != nil || te.calls.Load() != 1 {
		t.Fatalf("first replica: %v after %d exchanges", err, te.calls.Load())
	}
	// The second replica verified the same token itself: its own Identity.
	a2, err := k2.Resolve(ctx, caller(tok, time.Hour), tok)
	if err != nil || te.calls.Load() != 1 || k2.Exchanges() != 0 {
		t.Fatalf("second replica: %v; %d exchanges in all, %d by the second replica: the result in Redis was not read",
			err, te.calls.Load(), k2.Exchanges())
	}
	if !slices.Equal(a1.Roles, a2.Roles) || !slices.Equal(a2.ClientRoles["api"], []string{"writer"}) {
		t.Fatalf("roles differ: first %+v, second %+v", a1, a2)
	}

	// A refusal is shared the same way.
	te.fail, te.errBody = http.StatusBadRequest, `{"error":"invalid_grant","error_description":"User not found"}`
	const refused = "entra.token.refused"
	if _, err := k1.Resolve(ctx, caller(refused, time.Hour), refused); !errors.Is(err, ErrRefused) || te.calls.Load() != 2 {
		t.Fatalf("first replica, refused token: %v after %d exchanges", err, te.calls.Load())
	}
	if _, err := k2.Resolve(ctx, caller(refused, time.Hour), refused); !errors.Is(err, ErrRefused) || te.calls.Load() != 2 {
		t.Fatalf("second replica, refused token: %v after %d exchanges", err, te.calls.Load())
	}
	// All of it went through Redis, not the in-memory stand-in.
	if fb1.Down() || fb2.Down() {
		t.Fatal("Redis was down during the test: the replicas did not share it")
	}
}

// TestStaticRolesByUser: a roles-file users entry, keyed by the object id or
// by tenant/object id, gives its roles to that user alone, whatever the case
// of either side (ids are GUIDs); no app role or group is involved.
func TestStaticRolesByUser(t *testing.T) {
	const (
		oidUpper = "A679F546-B040-5236-818B-9C5E0804D267"
		oidLower = "a679f546-b040-5236-818b-9c5e0804d267"
		other    = "0c1d2e3f-0000-4000-8000-000000000002"
	)
	s, err := ParseStaticRoles([]byte(`{"users": {
		"`+oidUpper+`": {"realm_roles": ["by_oid"]},
		"`+strings.ToUpper(homeTenant)+`/`+other+`": {"realm_roles": ["by_tenant_oid"], "client_roles": {"api": ["writer"]}}
	}}`), home)
	if err != nil {
		t.Fatal(err)
	}
	user := func(tenant, oid string) *authn.Identity {
		return &authn.Identity{Kind: authn.KindUser, TenantID: tenant, ObjectID: oid, Scopes: []string{"read"}}
	}
	for _, c := range []struct {
		name   string
		id     *authn.Identity
		roles  []string
		writer bool
	}{
		{"object id as the token has it (lower case)", user(homeTenant, oidLower), []string{"by_oid"}, false},
		{"object id in upper case", user(homeTenant, oidUpper), []string{"by_oid"}, false},
		{"tenant/object id", user(homeTenant, other), []string{"by_tenant_oid"}, true},
		{"tenant/object id, other case", user(strings.ToUpper(homeTenant), strings.ToUpper(other)), []string{"by_tenant_oid"}, true},
		{"that object id in another tenant", user(partnerTenant, other), []string{}, false},
		{"another user", user(homeTenant, "0c1d2e3f-0000-4000-8000-000000000003"), []string{}, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			a, err := s.Resolve(context.Background(), c.id, "")
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(a.Roles, c.roles) || slices.Equal(a.ClientRoles["api"], []string{"writer"}) != c.writer {
				t.Fatalf("roles %v, client roles %v; want %v (api writer: %t)", a.Roles, a.ClientRoles, c.roles, c.writer)
			}
		})
	}
}
