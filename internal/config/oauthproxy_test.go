package config

import (
	"strings"
	"testing"
	"time"
)

// proxyVars is a production configuration with the OAuth proxy on and every
// secret it needs; kv overrides or adds settings ("" values included).
func proxyVars(kv ...string) map[string]string {
	m := map[string]string{
		"AZURE_CLIENT_ID": "c", "AZURE_TENANT_ID": "t", "AZURE_BASE_URL": "https://mcp.example.com",
		"OAUTH_PROXY": "true", "AZURE_CLIENT_SECRET": "s3cret",
		"JWT_SIGNING_KEY":        "aGVsbG8taGVsbG8taGVsbG8taGVsbG8taGVsbG8taGk=",
		"STORAGE_ENCRYPTION_KEY": "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=",
	}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return m
}

func TestOAuthProxyOffByDefault(t *testing.T) {
	c, err := FromSource(from(map[string]string{"AZURE_CLIENT_ID": "c", "AZURE_TENANT_ID": "t", "AZURE_BASE_URL": "https://mcp.example.com"}))
	if err != nil {
		t.Fatal(err)
	}
	p := c.OAuthProxy
	if p.Enabled || len(p.RedirectHosts) != 0 || p.AccessTokenTTL != 10*time.Minute || p.RefreshTokenTTL != 14*24*time.Hour ||
		p.SessionTTL != 30*24*time.Hour {
		t.Fatalf("defaults: %+v", p)
	}
	// AZURE_CLIENT_SECRET has no default outside the dev IdP.
	if c.Azure.ClientSecret != "" {
		t.Fatalf("secret default %q", c.Azure.ClientSecret)
	}
}

func TestOAuthProxySettings(t *testing.T) {
	c, err := FromSource(from(proxyVars("OAUTH_REDIRECT_HOSTS", "VSCode.dev, claude.ai:443", "OAUTH_ACCESS_TOKEN_TTL", "5m",
		"OAUTH_REFRESH_TOKEN_TTL", "24h", "OAUTH_SESSION_TTL", "48h")))
	if err != nil {
		t.Fatal(err)
	}
	p := c.OAuthProxy
	if !p.Enabled || strings.Join(p.RedirectHosts, ",") != "vscode.dev,claude.ai:443" || p.AccessTokenTTL != 5*time.Minute || p.RefreshTokenTTL != 24*time.Hour ||
		p.SessionTTL != 48*time.Hour {
		t.Fatalf("%+v", p)
	}
}

// Outside development the proxy needs its three secrets, each reported on
// its own variable, all at once.
func TestOAuthProxyNeedsSecretsOutsideDevelopment(t *testing.T) {
	for _, env := range []string{"production", "staging"} {
		_, err := FromSource(from(proxyVars("ENVIRONMENT", env, "AZURE_CLIENT_SECRET", "", "JWT_SIGNING_KEY", "", "STORAGE_ENCRYPTION_KEY", "")))
		for _, name := range []string{"AZURE_CLIENT_SECRET", "JWT_SIGNING_KEY", "STORAGE_ENCRYPTION_KEY"} {
			if p := problem(t, err, name); !strings.Contains(p, "OAUTH_PROXY=true") {
				t.Errorf("ENVIRONMENT=%s: no %s problem naming OAUTH_PROXY; got:\n%v", env, name, err)
			}
		}
	}
	// In development the keys may be left out (the server makes up keys for
	// the process), the client secret may not: Entra asks for it.
	_, err := FromSource(from(proxyVars("ENVIRONMENT", "development", "AZURE_CLIENT_SECRET", "", "JWT_SIGNING_KEY", "", "STORAGE_ENCRYPTION_KEY", "")))
	if problem(t, err, "AZURE_CLIENT_SECRET") == "" || problem(t, err, "JWT_SIGNING_KEY") != "" || problem(t, err, "STORAGE_ENCRYPTION_KEY") != "" {
		t.Errorf("development: %v", err)
	}
	// The same settings without the proxy are fine: nothing would use them.
	if _, err := FromSource(from(proxyVars("OAUTH_PROXY", "false", "AZURE_CLIENT_SECRET", "", "JWT_SIGNING_KEY", "", "STORAGE_ENCRYPTION_KEY", ""))); err != nil {
		t.Fatal(err)
	}
}

// JWT_SIGNING_KEY is read as the proxy reads it, once the proxy is on (it
// was read and unused before: a value that meant nothing then is no error
// without the proxy).
func TestOAuthSigningKey(t *testing.T) {
	for _, bad := range []string{"not base64!", "c2hvcnQ=", " , ", "aGVsbG8taGVsbG8taGVsbG8taGVsbG8taGVsbG8taGk=,c2hvcnQ="} {
		_, err := FromSource(from(proxyVars("JWT_SIGNING_KEY", bad)))
		if problem(t, err, "JWT_SIGNING_KEY") == "" {
			t.Errorf("%q accepted: %v", bad, err)
		}
		if _, err := FromSource(from(proxyVars("JWT_SIGNING_KEY", bad, "OAUTH_PROXY", "false"))); err != nil {
			t.Errorf("%q without the proxy: %v", bad, err)
		}
	}
	for _, good := range []string{
		"aGVsbG8taGVsbG8taGVsbG8taGVsbG8taGVsbG8taGk=",
		"aGVsbG8taGVsbG8taGVsbG8taGVsbG8taGVsbG8taGk, MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=",
	} {
		if _, err := FromSource(from(proxyVars("JWT_SIGNING_KEY", good))); err != nil {
			t.Errorf("%q refused: %v", good, err)
		}
	}
}

func TestOAuthProxyIssuerIsHTTPS(t *testing.T) {
	_, err := FromSource(from(proxyVars("ENVIRONMENT", "staging", "AZURE_BASE_URL", "http://mcp.example.com")))
	if p := problem(t, err, "AZURE_BASE_URL"); !strings.Contains(p, "OAUTH_PROXY") {
		t.Fatalf("plain http issuer: %v", err)
	}
	for _, base := range []string{"http://127.0.0.1:8000", "http://localhost:8000", "http://[::1]:8000"} {
		if _, err := FromSource(from(proxyVars("ENVIRONMENT", "development", "AZURE_BASE_URL", base))); err != nil {
			t.Errorf("%s: %v", base, err)
		}
	}
	if _, err := FromSource(from(proxyVars("ENVIRONMENT", "staging", "AZURE_BASE_URL", "http://mcp.example.com", "OAUTH_PROXY", "false"))); err != nil {
		t.Fatalf("without the proxy: %v", err)
	}
}

func TestOAuthProxyNeedsAScope(t *testing.T) {
	_, err := FromSource(from(proxyVars("AZURE_REQUIRED_SCOPES", "")))
	if p := problem(t, err, "AZURE_REQUIRED_SCOPES"); !strings.Contains(p, "OAUTH_PROXY") {
		t.Fatalf("no scope: %v", err)
	}
}

// make run: the dev IdP plays Entra, with a secret it knows, and the server
// makes up keys for the process; nothing else is needed.
func TestOAuthProxyInDevelopment(t *testing.T) {
	c, err := FromSource(from(map[string]string{"ENVIRONMENT": "development", "DEV_IDP": "true", "OAUTH_PROXY": "true"}))
	if err != nil {
		t.Fatal(err)
	}
	if !c.OAuthProxy.Enabled || c.Azure.ClientSecret != DevClientSecret || c.JWTSigningKey != "" || c.StorageEncryptionKey != "" {
		t.Fatalf("%+v %q", c.OAuthProxy, c.Azure.ClientSecret)
	}
	// An explicit secret wins over the dev default.
	c, err = FromSource(from(map[string]string{"ENVIRONMENT": "development", "DEV_IDP": "true", "AZURE_CLIENT_SECRET": "mine"}))
	if err != nil || c.Azure.ClientSecret != "mine" {
		t.Fatalf("%v %v", c, err)
	}
}

func TestOAuthProxyNeedsAuthAndHTTP(t *testing.T) {
	_, err := FromSource(from(map[string]string{"ENVIRONMENT": "development", "ENABLE_AUTH": "false", "OAUTH_PROXY": "true"}))
	if p := problem(t, err, "OAUTH_PROXY"); !strings.Contains(p, "ENABLE_AUTH") {
		t.Fatalf("ENABLE_AUTH=false: %v", err)
	}
	_, err = FromSource(from(proxyVars("TRANSPORT", "stdio")))
	if p := problem(t, err, "OAUTH_PROXY"); !strings.Contains(p, "stdio") {
		t.Fatalf("stdio: %v", err)
	}
	if _, err := FromSource(from(proxyVars("TRANSPORT", "sse"))); err != nil {
		t.Fatalf("sse: %v", err)
	}
}

func TestOAuthRedirectHosts(t *testing.T) {
	for _, bad := range []string{"https://vscode.dev", "vscode.dev/cb", "user@vscode.dev", "*.example.com", "vscode.dev:0",
		"vscode.dev:99999", "vscode.dev?x", "vscode.dev#x", "%2e.example.com", ":443"} {
		_, err := FromSource(from(proxyVars("OAUTH_REDIRECT_HOSTS", bad)))
		if problem(t, err, "OAUTH_REDIRECT_HOSTS") == "" {
			t.Errorf("%q accepted: %v", bad, err)
		}
	}
	for _, good := range []string{"vscode.dev", "claude.ai", "app.example.com:8443", "[2001:db8::1]:443", "192.0.2.7"} {
		if _, err := FromSource(from(proxyVars("OAUTH_REDIRECT_HOSTS", good))); err != nil {
			t.Errorf("%q refused: %v", good, err)
		}
	}
}

func TestOAuthTokenLifetimes(t *testing.T) {
	for name, vars := range map[string][]string{
		"OAUTH_ACCESS_TOKEN_TTL":   {"OAUTH_ACCESS_TOKEN_TTL", "1s"},
		"OAUTH_ACCESS_TOKEN_TTL ":  {"OAUTH_ACCESS_TOKEN_TTL", "25h", "OAUTH_REFRESH_TOKEN_TTL", "48h"},
		"OAUTH_REFRESH_TOKEN_TTL":  {"OAUTH_REFRESH_TOKEN_TTL", "8761h"},
		" OAUTH_REFRESH_TOKEN_TTL": {"OAUTH_ACCESS_TOKEN_TTL", "2h", "OAUTH_REFRESH_TOKEN_TTL", "1h"},
		"OAUTH_SESSION_TTL":        {"OAUTH_SESSION_TTL", "8761h"},
		" OAUTH_SESSION_TTL":       {"OAUTH_ACCESS_TOKEN_TTL", "2h", "OAUTH_SESSION_TTL", "2h"},
	} {
		_, err := FromSource(from(proxyVars(vars...)))
		if problem(t, err, strings.TrimSpace(name)) == "" {
			t.Errorf("%v accepted: %v", vars, err)
		}
	}
}

func TestOAuthRateLimit(t *testing.T) {
	c, err := FromSource(from(proxyVars()))
	if err != nil || c.OAuthProxy.RateLimit != 60 {
		t.Fatalf("default: %v %v", c.OAuthProxy.RateLimit, err)
	}
	c, err = FromSource(from(proxyVars("OAUTH_RATE_LIMIT", "0")))
	if err != nil || c.OAuthProxy.RateLimit != 0 {
		t.Fatalf("0 (off): %v %v", c.OAuthProxy.RateLimit, err)
	}
	for _, bad := range []string{"-1", "many", "100001"} {
		_, err := FromSource(from(proxyVars("OAUTH_RATE_LIMIT", bad)))
		if problem(t, err, "OAUTH_RATE_LIMIT") == "" {
			t.Errorf("%q accepted", bad)
		}
	}
}
