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
	c, err := FromSource(from(map[string]string{"DEV_IDP": "true", "ENVIRONMENT": "development"}))
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
	if _, err := FromSource(from(map[string]string{"DEV_IDP": "true", "DEV_IDP_ADDR": "0.0.0.0:8001", "ENVIRONMENT": "development"})); err == nil {
		t.Fatal("dev IdP off loopback accepted")
	}
}

func TestAuthorityMustBeHTTPSOffLoopback(t *testing.T) {
	base := map[string]string{"AZURE_CLIENT_ID": "c", "AZURE_TENANT_ID": "t", "AZURE_BASE_URL": "https://mcp.example.com"}
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
	c, err := FromSource(from(map[string]string{"AZURE_CLIENT_ID": "c", "AZURE_TENANT_ID": "t", "AZURE_REQUIRED_SCOPES": "api://c/read, write",
		"AZURE_BASE_URL": "https://mcp.example.com"}))
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
	t.Setenv("ENVIRONMENT", "development")
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

// LIST_CACHE_TTL is deprecated: unset by default, still read (and
// validated) so that a setting left in place starts, and the server warns.
func TestListCacheTTL(t *testing.T) {
	base := map[string]string{"ENABLE_AUTH": "false", "ENVIRONMENT": "development"}
	c, err := FromSource(from(base))
	if err != nil || c.ListCacheTTL != 0 {
		t.Fatalf("default: %v %v", c, err)
	}
	base["LIST_CACHE_TTL"] = "10s"
	if c, err := FromSource(from(base)); err != nil || c.ListCacheTTL != 10*time.Second {
		t.Fatalf("a setting left in place: %v %v", c.ListCacheTTL, err)
	}
	base["LIST_CACHE_TTL"] = "soon"
	if _, err := FromSource(from(base)); err == nil || !strings.Contains(err.Error(), "LIST_CACHE_TTL") {
		t.Fatalf("a bad value: %v", err)
	}
}

// Without ENVIRONMENT the safe choice applies: production refuses the dev
// IdP, authentication off over HTTP and a plain-http public URL.
func TestEnvironmentDefaultsToProduction(t *testing.T) {
	entra := map[string]string{"AZURE_CLIENT_ID": "c", "AZURE_TENANT_ID": "t", "AZURE_BASE_URL": "https://mcp.example.com"}
	c, err := FromSource(from(entra))
	if err != nil {
		t.Fatal(err)
	}
	if c.Environment != "production" {
		t.Fatalf("default environment: %q", c.Environment)
	}
	for name, vars := range map[string]map[string]string{
		"DEV_IDP":        {"DEV_IDP": "true", "AZURE_BASE_URL": "https://mcp.example.com"},
		"ENABLE_AUTH":    {"ENABLE_AUTH": "false", "AZURE_BASE_URL": "https://mcp.example.com"},
		"AZURE_BASE_URL": {"AZURE_CLIENT_ID": "c", "AZURE_TENANT_ID": "t"},
	} {
		if _, err := FromSource(from(vars)); err == nil || !strings.Contains(err.Error(), name+":") {
			t.Errorf("%s not refused by default: %v", name, err)
		}
	}
	// Over stdio nothing is served at AZURE_BASE_URL: its default is fine.
	if _, err := FromSource(from(map[string]string{"AZURE_CLIENT_ID": "c", "AZURE_TENANT_ID": "t", "TRANSPORT": "stdio"})); err != nil {
		t.Fatalf("stdio in production: %v", err)
	}
}

// STDIO_ACCESS_TOKEN comes from the process environment only: a flag is
// visible in ps and a .env entry is a token stored in plain text.
func TestStdioTokenFromEnvironmentOnly(t *testing.T) {
	const tok = "eyJ.secret.token"
	dir := t.TempDir()
	clean := filepath.Join(dir, "clean.env")
	_ = os.WriteFile(clean, []byte("ENVIRONMENT=development\nENABLE_AUTH=false\n"), 0o600)
	leaky := filepath.Join(dir, "leaky.env")
	_ = os.WriteFile(leaky, []byte("ENVIRONMENT=development\nENABLE_AUTH=false\nSTDIO_ACCESS_TOKEN="+tok+"\n"), 0o600)

	t.Setenv("ENV_FILE", leaky)
	_, _, err := Load(nil)
	if err == nil || !strings.Contains(err.Error(), "STDIO_ACCESS_TOKEN:") || !strings.Contains(err.Error(), leaky) {
		t.Fatalf(".env entry: %v", err)
	}
	if strings.Contains(err.Error(), tok) {
		t.Fatalf("the error repeats the token: %v", err)
	}

	t.Setenv("ENV_FILE", clean)
	if _, _, err = Load([]string{"--stdio-access-token", tok}); err == nil || !strings.Contains(err.Error(), "STDIO_ACCESS_TOKEN:") {
		t.Fatalf("flag: %v", err)
	}
	// Reported with the other problems, at once.
	if _, _, err = Load([]string{"--stdio-access-token=" + tok, "--port=99999"}); err == nil || !strings.Contains(err.Error(), "PORT:") ||
		!strings.Contains(err.Error(), "STDIO_ACCESS_TOKEN:") {
		t.Fatalf("flag with another problem: %v", err)
	}

	t.Setenv("STDIO_ACCESS_TOKEN", tok)
	c, _, err := Load(nil)
	if err != nil || c.StdioAccessToken != tok {
		t.Fatalf("environment: %v %v", c, err)
	}
}

func TestHTTPLimitsAndMetricsAddr(t *testing.T) {
	base := func(kv ...string) map[string]string {
		m := map[string]string{"ENABLE_AUTH": "false", "ENVIRONMENT": "development"}
		for i := 0; i+1 < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return m
	}
	c, err := FromSource(from(base()))
	if err != nil {
		t.Fatal(err)
	}
	if c.HTTP.BodyTimeout != 30*time.Second || c.HTTP.IdleTimeout != time.Minute || c.HTTP.ReadHeaderTimeout != 10*time.Second ||
		c.HTTP.MaxConnections != 1024 || c.HTTP.ShutdownTimeout != 10*time.Second || c.MetricsAddr != "127.0.0.1:9464" {
		t.Fatalf("defaults: %+v %q", c.HTTP, c.MetricsAddr)
	}
	for _, off := range []string{"", "off", "OFF"} {
		if c, err := FromSource(from(base("METRICS_ADDR", off))); err != nil || c.MetricsAddr != "" {
			t.Fatalf("METRICS_ADDR=%q must turn metrics off: %v %v", off, c, err)
		}
	}
	for name, value := range map[string]string{
		"HTTP_BODY_TIMEOUT": "0", "HTTP_IDLE_TIMEOUT": "0s", "HTTP_READ_HEADER_TIMEOUT": "0", "HTTP_MAX_CONNECTIONS": "0",
		"METRICS_ADDR": "9464",
	} {
		if _, err := FromSource(from(base(name, value))); err == nil || !strings.Contains(err.Error(), name+":") {
			t.Errorf("%s=%s accepted: %v", name, value, err)
		}
	}
	if _, err := FromSource(from(base("METRICS_ADDR", "127.0.0.1:99999"))); err == nil || !strings.Contains(err.Error(), "METRICS_ADDR:") {
		t.Errorf("METRICS_ADDR with a bad port accepted: %v", err)
	}
	if c.Pprof {
		t.Error("PPROF is on by default")
	}
	if !c.DecisionReuse {
		t.Error("DECISION_REUSE is off by default")
	}
	if c, err := FromSource(from(base("DECISION_REUSE", "false"))); err != nil || c.DecisionReuse {
		t.Errorf("DECISION_REUSE=false: %v %v", c, err)
	}
	if c.GCHeadroom != 32<<20 {
		t.Errorf("GC_HEADROOM_MB default: %d bytes", c.GCHeadroom)
	}
	if c, err := FromSource(from(base("GC_HEADROOM_MB", "0"))); err != nil || c.GCHeadroom != 0 {
		t.Errorf("GC_HEADROOM_MB=0: %v %v", c, err)
	}
	if _, err := FromSource(from(base("GC_HEADROOM_MB", "-1"))); err == nil || !strings.Contains(err.Error(), "GC_HEADROOM_MB:") {
		t.Errorf("GC_HEADROOM_MB=-1 accepted: %v", err)
	}
	if c, err := FromSource(from(base("PPROF", "true"))); err != nil || !c.Pprof {
		t.Errorf("PPROF=true: %v %v", c, err)
	}
	if _, err := FromSource(from(base("PPROF", "true", "METRICS_ADDR", "off"))); err == nil || !strings.Contains(err.Error(), "PPROF:") {
		t.Errorf("PPROF without a metrics listener accepted: %v", err)
	}
}

func TestAppRoleTenantsMustBeAccepted(t *testing.T) {
	base := map[string]string{"AZURE_CLIENT_ID": "c", "AZURE_TENANT_ID": "aaaaaaaa-1111-4111-8111-111111111111",
		"AZURE_ALLOWED_TENANTS": "bbbbbbbb-2222-4222-8222-222222222222", "AZURE_BASE_URL": "https://mcp.example.com",
		"AZURE_APP_ROLE_TENANTS": "BBBBBBBB-2222-4222-8222-222222222222", "KEYCLOAK_SUBJECT_CLAIM": "entra_oid"}
	c, err := FromSource(from(base))
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Azure.AppRoleTenants) != 1 || c.Keycloak.SubjectClaim != "entra_oid" {
		t.Fatalf("app role tenants %v, subject claim %q", c.Azure.AppRoleTenants, c.Keycloak.SubjectClaim)
	}
	base["AZURE_APP_ROLE_TENANTS"] = "cccccccc-3333-4333-8333-333333333333"
	if _, err := FromSource(from(base)); err == nil || !strings.Contains(err.Error(), "AZURE_APP_ROLE_TENANTS") {
		t.Fatalf("a tenant that cannot call accepted: %v", err)
	}
}
