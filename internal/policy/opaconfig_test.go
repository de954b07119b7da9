package policy_test

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mcpguard/mcpguard/internal/policy"
)

func writeFile(t *testing.T, name, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func publicPEM(t *testing.T, pub any) string {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))
}

// The POLICY_BUNDLE_URL shortcut is an OPA configuration with one service,
// one bundle that must be signed by the key (its algorithm read from the
// key), persisted; nothing configured is no configuration at all.
func TestOPASettingsShortcut(t *testing.T) {
	if raw, err := (policy.OPASettings{}).Config(); raw != nil || err != nil {
		t.Fatalf("nothing configured: %s %v", raw, err)
	}
	rsaKey := writeFile(t, "rsa.pem", newSigner(t).public)
	raw, err := policy.OPASettings{BundleURL: "https://bundles.example.com:8443/mcp/bundle.tar.gz?v=1", BundlePublicKey: rsaKey,
		PersistDir: "/var/lib/mcpguard", ConsoleDecisionLogs: true}.Config()
	if err != nil {
		t.Fatal(err)
	}
	var cfg map[string]any
	if err := json.Unmarshal(raw, &cfg); err != nil {
		t.Fatal(err)
	}
	b := cfg["bundles"].(map[string]any)["mcpguard"].(map[string]any)
	if cfg["services"].(map[string]any)["mcpguard"].(map[string]any)["url"] != "https://bundles.example.com:8443" ||
		b["resource"] != "mcp/bundle.tar.gz?v=1" || b["persist"] != true || b["signing"].(map[string]any)["keyid"] != "mcpguard" ||
		cfg["keys"].(map[string]any)["mcpguard"].(map[string]any)["algorithm"] != "RS256" ||
		cfg["persistence_directory"] != "/var/lib/mcpguard" || cfg["decision_logs"].(map[string]any)["console"] != true {
		t.Fatalf("shortcut: %s", raw)
	}

	ec, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	raw, err = policy.OPASettings{BundleURL: "http://127.0.0.1:9/b", BundlePublicKey: writeFile(t, "ec.pem", publicPEM(t, &ec.PublicKey))}.Config()
	if err != nil || !strings.Contains(string(raw), `"algorithm":"ES384"`) {
		t.Fatalf("ECDSA P-384: %s %v", raw, err)
	}
	ed, _, _ := ed25519.GenerateKey(rand.Reader)
	for name, s := range map[string]policy.OPASettings{
		"no key":            {BundleURL: "https://b/x"},
		"ed25519":           {BundleURL: "https://b/x", BundlePublicKey: writeFile(t, "ed.pem", publicPEM(t, ed))},
		"not a PEM":         {BundleURL: "https://b/x", BundlePublicKey: writeFile(t, "x.pem", "hello")},
		"not a URL":         {BundleURL: "ftp://b/x", BundlePublicKey: rsaKey},
		"config unreadable": {ConfigFile: filepath.Join(t.TempDir(), "absent.yaml")},
	} {
		if raw, err := s.Config(); err == nil {
			t.Errorf("%s: %s", name, raw)
		}
	}
}

// OPA_CONFIG is read as OPA reads it (YAML or JSON); DECISION_LOGS=console
// adds the console to its decision_logs.
func TestOPASettingsConfigFile(t *testing.T) {
	file := writeFile(t, "opa.yaml", "services:\n  logs:\n    url: https://logs.example.com\ndecision_logs:\n  service: logs\n")
	raw, err := policy.OPASettings{ConfigFile: file, ConsoleDecisionLogs: true}.Config()
	if err != nil {
		t.Fatal(err)
	}
	var cfg map[string]any
	if err := json.Unmarshal(raw, &cfg); err != nil {
		t.Fatal(err)
	}
	dl := cfg["decision_logs"].(map[string]any)
	if dl["service"] != "logs" || dl["console"] != true || cfg["services"].(map[string]any)["logs"] == nil {
		t.Fatalf("%s", raw)
	}
}
