package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// shippedPolicies is the repository's policy folder, from this package's folder.
var shippedPolicies = filepath.Join("..", "..", "policies")

// runCLI runs a command line as main does and returns what it printed and
// the exit status main would end with.
func runCLI(t *testing.T, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var out, errb bytes.Buffer
	err := run(ctx, args, &out, &errb)
	if err != nil {
		var ue *usageError
		if errors.As(err, &ue) && ue.usage == "" {
			t.Errorf("%q: a usage error without the usage", args)
		}
		errb.WriteString(err.Error())
	}
	return out.String(), errb.String(), exitCode(err)
}

// serverSettings are the settings a developer's shell or .env may hold that
// change what the commands under test build; each test starts without them.
var serverSettings = []string{
	"ENV_FILE", "ENVIRONMENT", "DEV_IDP", "DEV_IDP_ADDR", "DEV_IDP_KEY_FILE", "ENABLE_AUTH", "ROLE_SOURCE",
	"ROLES_FILE", "TRANSPORT", "POLICY_DIR", "HOST", "PORT", "AZURE_CLIENT_ID", "AZURE_TENANT_ID",
	"AZURE_AUTHORITY_HOST", "AZURE_BASE_URL", "AZURE_REQUIRED_SCOPES", "ENABLE_KEYCLOAK", "STATELESS",
	"METRICS_ADDR", "LIST_CACHE_TTL", "DECISION_REUSE", "DENIAL_DETAIL",
}

// isolate clears the server settings and points the development identity
// provider at a key of the test's own and a free loopback port.
func isolate(t *testing.T) (dir string) {
	t.Helper()
	dir = t.TempDir()
	for _, k := range serverSettings {
		t.Setenv(k, "")
		os.Unsetenv(k)
	}
	t.Setenv("ENV_FILE", filepath.Join(dir, "absent.env"))
	t.Setenv("DEV_IDP_KEY_FILE", filepath.Join(dir, "dev-idp-key.pem"))
	t.Setenv("DEV_IDP_ADDR", "127.0.0.1:0")
	return dir
}

// writePolicy writes files into a new policy folder.
func writePolicy(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}
