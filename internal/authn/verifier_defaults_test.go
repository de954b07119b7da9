package authn

import (
	"net/http"
	"strings"
	"testing"
	"time"
)

// NewVerifier needs an authority, a tenant and an audience, each of them.
func TestNewVerifierRequires(t *testing.T) {
	full := Config{AuthorityHost: "https://login.example", TenantID: "t1", Audiences: []string{"api"}}
	for name, mod := range map[string]func(*Config){
		"authority": func(c *Config) { c.AuthorityHost = "" },
		"tenant":    func(c *Config) { c.TenantID = "" },
		"audiences": func(c *Config) { c.Audiences = nil },
	} {
		cfg := full
		mod(&cfg)
		if _, err := NewVerifier(cfg); err == nil || !strings.Contains(err.Error(), "required") {
			t.Errorf("no %s: %v", name, err)
		}
	}
	if _, err := NewVerifier(full); err != nil {
		t.Fatal(err)
	}
}

// Unset settings get their defaults (an HTTP client that gives up on an
// issuer that never answers, a refresh rate limit, a bounded cache); set
// ones are kept, the HTTP client down to the key set that fetches with it.
func TestNewVerifierDefaults(t *testing.T) {
	v, err := NewVerifier(Config{AuthorityHost: "https://login.example/", TenantID: "t1", Audiences: []string{"api"}})
	if err != nil {
		t.Fatal(err)
	}
	if v.cfg.HTTPClient == nil || v.cfg.HTTPClient.Timeout != 10*time.Second || v.keys.HTTPClient != v.cfg.HTTPClient {
		t.Errorf("default HTTP client: %+v", v.cfg.HTTPClient)
	}
	if v.cfg.RefreshMinInterval != 30*time.Second || v.keys.RefreshMinInterval != 30*time.Second || v.cache.max != 10000 {
		t.Errorf("defaults: refresh %s, cache %d", v.cfg.RefreshMinInterval, v.cache.max)
	}
	if v.keys.Discovery != "https://login.example/t1/v2.0/.well-known/openid-configuration" {
		t.Errorf("discovery at %s", v.keys.Discovery)
	}

	client := &http.Client{}
	v, err = NewVerifier(Config{AuthorityHost: "https://login.example", TenantID: "t1", Audiences: []string{"api"},
		HTTPClient: client, RefreshMinInterval: 5 * time.Second, CacheSize: 7})
	if err != nil {
		t.Fatal(err)
	}
	if v.cfg.HTTPClient != client || v.keys.HTTPClient != client || v.keys.RefreshMinInterval != 5*time.Second || v.cache.max != 7 {
		t.Errorf("settings not kept: %+v, cache %d", v.cfg, v.cache.max)
	}
}

func TestIdentityUserID(t *testing.T) {
	var none *Identity
	user := &Identity{Kind: KindUser, TenantID: "t1", ObjectID: "o1"}
	app := &Identity{Kind: KindApp, TenantID: "t1", ObjectID: "o2"}
	for _, c := range []struct {
		id   *Identity
		auth bool
		uid  string
	}{{none, false, ""}, {Anonymous, false, ""}, {user, true, "t1/o1"}, {app, true, "t1/o2"}} {
		if c.id.Authenticated() != c.auth || c.id.UserID() != c.uid {
			t.Errorf("%+v: authenticated %v, user id %q", c.id, c.id.Authenticated(), c.id.UserID())
		}
	}
}
