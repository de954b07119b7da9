package exchange

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/oauth2"

	"github.com/mcpguard/mcpguard/internal/store"
)

// NewKeycloak needs a server, a realm and a client, each of them, and a
// grant it knows.
func TestNewKeycloakRequires(t *testing.T) {
	full := KeycloakConfig{ServerURL: "http://127.0.0.1:1", Realm: "r", ClientID: "c"}
	for name, mod := range map[string]func(*KeycloakConfig){
		"server": func(c *KeycloakConfig) { c.ServerURL = "" },
		"realm":  func(c *KeycloakConfig) { c.Realm = "" },
		"client": func(c *KeycloakConfig) { c.ClientID = "" },
		"grant":  func(c *KeycloakConfig) { c.Grant = "password" },
	} {
		cfg := full
		mod(&cfg)
		if _, err := NewKeycloak(cfg, store.NewMemory(0), nil); err == nil {
			t.Errorf("no %s: accepted", name)
		}
	}
	if _, err := NewKeycloak(full, store.NewMemory(0), nil); err != nil {
		t.Fatal(err)
	}
}

// Unset settings get their defaults; set ones are kept; the realm's keys
// are fetched with the same HTTP client, at most every 10 s on an unknown kid.
func TestNewKeycloakDefaults(t *testing.T) {
	k, err := NewKeycloak(KeycloakConfig{ServerURL: "http://127.0.0.1:1/", Realm: "r", ClientID: "c"}, store.NewMemory(0), nil)
	if err != nil {
		t.Fatal(err)
	}
	c := k.cfg
	if c.Grant != GrantTokenExchange || c.Timeout != 5*time.Second || c.Retries != 2 || c.Skew != 30*time.Second ||
		c.RefusalTTL != 30*time.Second || c.HTTPClient == nil {
		t.Errorf("defaults: %+v", c)
	}
	if k.keys.RefreshMinInterval != 10*time.Second || k.keys.HTTPClient != c.HTTPClient ||
		k.keys.JWKSURI != "http://127.0.0.1:1/realms/r/protocol/openid-connect/certs" || k.tokenURL != "http://127.0.0.1:1/realms/r/protocol/openid-connect/token" {
		t.Errorf("keys %+v, token URL %s", k.keys, k.tokenURL)
	}

	client := &http.Client{}
	for _, c := range []struct {
		retries, want int
	}{{-1, 0}, {1, 1}, {5, 5}} {
		k, err := NewKeycloak(KeycloakConfig{ServerURL: "http://127.0.0.1:1", Realm: "r", ClientID: "c", Grant: GrantJWTBearer,
			Timeout: time.Second, Retries: c.retries, Skew: time.Minute, RefusalTTL: time.Hour, HTTPClient: client}, store.NewMemory(0), nil)
		if err != nil {
			t.Fatal(err)
		}
		if k.cfg.Grant != GrantJWTBearer || k.cfg.Timeout != time.Second || k.cfg.Retries != c.want || k.cfg.Skew != time.Minute ||
			k.cfg.RefusalTTL != time.Hour || k.cfg.HTTPClient != client || k.keys.HTTPClient != client {
			t.Errorf("Retries %d: settings not kept: %+v", c.retries, k.cfg)
		}
	}
}

// KEYCLOAK_SCOPE reaches the token request as the scope parameter; without
// it there is none.
func TestKeycloakScopeReachesTheRequest(t *testing.T) {
	for _, scope := range []string{"", "roles  openid"} {
		te := newTokenEndpoint(t)
		k, _ := newSource(t, te, func(c *KeycloakConfig) { c.Scope = scope })
		const entra = "entra.token.scope"
		if _, err := k.Resolve(context.Background(), caller(entra, time.Hour), entra); err != nil {
			t.Fatal(err)
		}
		te.mu.Lock()
		got, ok := te.form["scope"]
		te.mu.Unlock()
		if want := strings.Join(strings.Fields(scope), " "); got != want || ok != (scope != "") {
			t.Errorf("KEYCLOAK_SCOPE=%q: scope %q (present %v)", scope, got, ok)
		}
	}
}

// An unavailable Keycloak is asked 1 + Retries times, 200 ms, then 400 ms
// apart, each failure logged with its attempt number.
func TestKeycloakRetriesBackOff(t *testing.T) {
	te := newTokenEndpoint(t)
	te.fail = http.StatusServiceUnavailable
	k, _ := newSource(t, te, func(c *KeycloakConfig) { c.Retries = 2 })
	var (
		mu     sync.Mutex
		sleeps []time.Duration
		logs   bytes.Buffer
	)
	k.sleep = func(d time.Duration) { mu.Lock(); sleeps = append(sleeps, d); mu.Unlock() }
	k.logger = slog.New(slog.NewTextHandler(&logs, nil))
	const entra = "entra.token.retry"
	if _, err := k.Resolve(context.Background(), caller(entra, time.Hour), entra); err == nil {
		t.Fatal("an unavailable Keycloak gave roles")
	}
	mu.Lock()
	defer mu.Unlock()
	if n := te.calls.Load(); n != 3 || !slices.Equal(sleeps, []time.Duration{200 * time.Millisecond, 400 * time.Millisecond}) {
		t.Fatalf("%d attempts, waits %v", n, sleeps)
	}
	for i := 1; i <= 3; i++ {
		if !strings.Contains(logs.String(), fmt.Sprintf("attempt=%d ", i)) {
			t.Errorf("attempt %d not logged: %s", i, logs.String())
		}
	}
}

// The in-process cache of results is bounded: full, it drops what has
// expired and then just enough to be three quarters full with the new
// result; below the bound it drops nothing.
func TestKeycloakLocalCacheBound(t *testing.T) {
	te := newTokenEndpoint(t)
	k, _ := newSource(t, te, nil)
	now := time.Now()
	k.now = func() time.Time { return now }
	key := func(i int) [32]byte { return sha256.Sum256(fmt.Appendf(nil, "%d", i)) }
	live := &result{Until: now.Add(time.Hour)}
	for i := range maxLocal {
		k.toLocal(key(i), live)
	}
	if len(k.local) != maxLocal {
		t.Fatalf("%d of %d results kept below the bound", len(k.local), maxLocal)
	}
	k.toLocal(key(maxLocal), live)
	if n := len(k.local); n != maxLocal*3/4 || k.fromLocal(key(maxLocal), now) == nil {
		t.Fatalf("full cache: %d entries after one more (bound %d), the new one kept: %v", n, maxLocal*3/4, k.fromLocal(key(maxLocal), now) != nil)
	}
}

// A refusal's detail, for the log, names the status, the OAuth error code
// and the first 200 characters of Keycloak's description.
func TestKeycloakErrorDetail(t *testing.T) {
	long := strings.Repeat("d", 250)
	for _, c := range []struct {
		code, desc, want string
	}{
		{"invalid_grant", "", "keycloak answered 400 invalid_grant"},
		{"", "", "keycloak answered 400"},
		{"invalid_grant", "User not found", `keycloak answered 400 invalid_grant "User not found"`},
		{"invalid_grant", long, `keycloak answered 400 invalid_grant "` + long[:200] + `"`},
	} {
		e := classify(&oauth2.RetrieveError{Response: &http.Response{StatusCode: 400}, ErrorCode: c.code, ErrorDescription: c.desc})
		if e.Detail != c.want {
			t.Errorf("code %q, description %q: detail %q, want %q", c.code, c.desc, e.Detail, c.want)
		}
	}
}

// Role lists from Keycloak's token keep strings only, each once.
func TestKeycloakRoleListsStringsOnce(t *testing.T) {
	got := anyStrings([]any{"a", 42, "b", "a", nil, map[string]any{}, "c"})
	if !slices.Equal(got, []string{"a", "b", "c"}) {
		t.Fatalf("%q", got)
	}
	if got := anyStrings("not a list"); got == nil || len(got) != 0 {
		t.Fatalf("not a list: %q", got)
	}
}

// failingStore refuses every write.
type failingStore struct{ *store.Memory }

func (failingStore) Set(context.Context, string, []byte, time.Duration) error {
	return fmt.Errorf("store down")
}

// A result that cannot be written to the shared cache is still returned,
// and the failure is logged; a write that succeeds is not.
func TestKeycloakCacheWriteFailureLogged(t *testing.T) {
	for _, broken := range []bool{false, true} {
		te := newTokenEndpoint(t)
		var st store.Store = store.NewMemory(0)
		if broken {
			st = failingStore{store.NewMemory(0)}
		}
		var logs bytes.Buffer
		k, err := NewKeycloak(KeycloakConfig{ServerURL: te.srv.URL, Realm: "r", ClientID: "mcpguard", ClientSecret: "s3cret", IDPAlias: "entra", Timeout: time.Second},
			st, slog.New(slog.NewTextHandler(&logs, nil)))
		if err != nil {
			t.Fatal(err)
		}
		const entra = "entra.token.store"
		if a, err := k.Resolve(context.Background(), caller(entra, time.Hour), entra); err != nil || a == nil {
			t.Fatalf("store broken=%v: %v", broken, err)
		}
		if logged := strings.Contains(logs.String(), "role cache write failed"); logged != broken {
			t.Errorf("store broken=%v: failure logged %v: %s", broken, logged, logs.String())
		}
	}
}

// Keycloak's answer decides whose fault a failure is: a 5xx, 408, 429 or
// a non-error status is Keycloak unavailable (nobody's refusal), a 401 or a
// client error code refuses mcpguard itself, another 4xx refuses the caller.
func TestKeycloakClassifyStatus(t *testing.T) {
	for status, want := range map[int]string{
		399: "unavailable", 400: "refused", 401: "config", 403: "refused", 408: "unavailable",
		429: "unavailable", 499: "refused", 500: "unavailable", 503: "unavailable",
	} {
		e := classify(&oauth2.RetrieveError{Response: &http.Response{StatusCode: status}, ErrorCode: "invalid_grant"})
		got := "refused"
		switch {
		case e.Config:
			got = "config"
		case errors.Is(e, ErrUnavailable):
			got = "unavailable"
		}
		if got != want || (got == "refused") != errors.Is(e, ErrRefused) {
			t.Errorf("status %d: %s (%v), want %s", status, got, e, want)
		}
	}
}
