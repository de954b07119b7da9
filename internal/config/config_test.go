package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func from(m map[string]string) Source {
	return func(name string) (string, bool) { v, ok := m[name]; return v, ok }
}

func TestDefaultsNeedEntraSettings(t *testing.T) {
	_, err := FromSource(from(nil))
	if err == nil {
		t.Fatal("auth on without Entra settings accepted")
	}
	for _, name := range []string{"AZURE_CLIENT_ID", "AZURE_TENANT_ID"} {
		if !strings.Contains(err.Error(), name) {
			t.Fatalf("%s not reported: %v", name, err)
		}
	}
}

func TestEveryProblemReportedAtOnce(t *testing.T) {
	_, err := FromSource(from(map[string]string{
		"PORT": "99999", "TRANSPORT": "carrier-pigeon", "ENABLE_AUTH": "maybe", "POLICY_TIMEOUT": "soon",
		"ROLE_SOURCE": "keycloak", "REDIS_HOST": "r",
	}))
	if err == nil {
		t.Fatal("accepted")
	}
	for _, name := range []string{"PORT", "TRANSPORT", "ENABLE_AUTH", "POLICY_TIMEOUT", "KEYCLOAK_SERVER_URL", "KEYCLOAK_REALM", "STORAGE_ENCRYPTION_KEY"} {
		if !strings.Contains(err.Error(), name+":") {
			t.Fatalf("%s not reported:\n%v", name, err)
		}
	}
}

func TestDevMode(t *testing.T) {
	c, err := FromSource(from(map[string]string{"DEV_IDP": "true"}))
	if err != nil {
		t.Fatal(err)
	}
	if c.Azure.TenantID != DevTenantID || c.Azure.ClientID != DevClientID || c.Azure.AuthorityHost != "http://127.0.0.1:8001" ||
		c.RoleSource != RoleSourceStatic || c.Azure.AppIDURI != "api://"+DevClientID {
		t.Fatalf("dev defaults: %+v", c)
	}
	if _, err := FromSource(from(map[string]string{"DEV_IDP": "true", "ENVIRONMENT": "production"})); err == nil {
		t.Fatal("dev IdP in production accepted")
	}
	if _, err := FromSource(from(map[string]string{"DEV_IDP": "true", "DEV_IDP_ADDR": "0.0.0.0:8001"})); err == nil {
		t.Fatal("dev IdP off loopback accepted")
	}
}

func TestAuthorityMustBeHTTPSOffLoopback(t *testing.T) {
	base := map[string]string{"AZURE_CLIENT_ID": "c", "AZURE_TENANT_ID": "t"}
	for host, ok := range map[string]bool{
		"https://login.microsoftonline.us": true, "http://127.0.0.1:9000": true, "http://[::1]:9000": true,
		"http://localhost:9": true, "http://login.example.com": false, "ftp://x": false,
	} {
		base["AZURE_AUTHORITY_HOST"] = host
		_, err := FromSource(from(base))
		if (err == nil) != ok {
			t.Errorf("%s: err=%v", host, err)
		}
	}
}

func TestMultiTenantNeedsAllowList(t *testing.T) {
	_, err := FromSource(from(map[string]string{"AZURE_CLIENT_ID": "c", "AZURE_TENANT_ID": "organizations"}))
	if err == nil || !strings.Contains(err.Error(), "AZURE_ALLOWED_TENANTS") {
		t.Fatalf("%v", err)
	}
}

func TestFullScopeNamesNormalised(t *testing.T) {
	c, err := FromSource(from(map[string]string{"AZURE_CLIENT_ID": "c", "AZURE_TENANT_ID": "t", "AZURE_REQUIRED_SCOPES": "api://c/read, write"}))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(c.Azure.RequiredScopes, ",") != "read,write" {
		t.Fatalf("scopes %v", c.Azure.RequiredScopes)
	}
}

func TestPrecedenceFlagsEnvDotenv(t *testing.T) {
	dir := t.TempDir()
	env := filepath.Join(dir, ".env")
	_ = os.WriteFile(env, []byte("# comment\nPORT=7000\nSERVER_NAME=\"from dotenv\"\nLOG_LEVEL=debug # trailing\nexport HOST=127.0.0.2\n"), 0o600)
	t.Setenv("ENV_FILE", env)
	t.Setenv("ENABLE_AUTH", "false")
	t.Setenv("HOST", "127.0.0.3")
	c, rest, err := Load([]string{"serve-arg", "--port", "7001", "--stateless"})
	if err != nil {
		t.Fatal(err)
	}
	if c.Port != 7001 || c.ServerName != "from dotenv" || c.LogLevel != "debug" || c.Host != "127.0.0.3" || !c.Stateless {
		t.Fatalf("precedence: %+v", c)
	}
	if len(rest) != 1 || rest[0] != "serve-arg" {
		t.Fatalf("rest %v", rest)
	}
}

func TestBadDotenv(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, ".env")
	_ = os.WriteFile(p, []byte("NOEQUALS\n"), 0o600)
	if _, err := ReadDotEnv(p); err == nil || !strings.Contains(err.Error(), ":1:") {
		t.Fatalf("%v", err)
	}
}

func TestListCacheTTL(t *testing.T) {
	base := map[string]string{"ENABLE_AUTH": "false"}
	c, err := FromSource(from(base))
	if err != nil || c.ListCacheTTL != 10*time.Second {
		t.Fatalf("default: %v %v", c, err)
	}
	base["LIST_CACHE_TTL"] = "0"
	if c, _ := FromSource(from(base)); c.ListCacheTTL != 0 {
		t.Fatalf("0 must turn the cache off: %v", c.ListCacheTTL)
	}
}
