package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The policy's management settings: defaults, one source of bundles, a
// bundle only with the key that verifies it, files that can be read; each
// error names its variable.
func TestPolicyOpsSettings(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "opa.yaml")
	key := filepath.Join(dir, "bundle.pub.pem")
	for _, f := range []string{file, key} {
		if err := os.WriteFile(f, []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	base := map[string]string{"ENVIRONMENT": "development", "ENABLE_AUTH": "false"}
	with := func(kv ...string) map[string]string {
		out := map[string]string{}
		for k, v := range base {
			out[k] = v
		}
		for i := 0; i < len(kv); i += 2 {
			out[kv[i]] = kv[i+1]
		}
		return out
	}
	cfg, err := FromSource(from(base))
	if err != nil {
		t.Fatal(err)
	}
	if p := cfg.PolicyOps; !p.Watch || p.DecisionLogs != "off" || p.OPAConfig != "" || p.BundleURL != "" {
		t.Fatalf("defaults: %+v", p)
	}
	cfg, err = FromSource(from(with("POLICY_BUNDLE_URL", "https://bundles.example.com/b.tar.gz", "POLICY_BUNDLE_PUBLIC_KEY", key,
		"POLICY_PERSIST_DIR", dir, "DECISION_LOGS", "console", "POLICY_WATCH", "false")))
	if err != nil {
		t.Fatal(err)
	}
	if p := cfg.PolicyOps; p.Watch || p.DecisionLogs != "console" || p.BundlePublicKey != key || p.PersistDir != dir {
		t.Fatalf("set: %+v", p)
	}
	if _, err := FromSource(from(with("OPA_CONFIG", file))); err != nil {
		t.Fatalf("OPA_CONFIG alone: %v", err)
	}
	for _, c := range []struct {
		name string
		vars map[string]string
		want string
	}{
		{"both sources", with("OPA_CONFIG", file, "POLICY_BUNDLE_URL", "https://b/x", "POLICY_BUNDLE_PUBLIC_KEY", key), "POLICY_BUNDLE_URL: cannot be used with OPA_CONFIG"},
		{"no key", with("POLICY_BUNDLE_URL", "https://b/x"), "POLICY_BUNDLE_PUBLIC_KEY: required with POLICY_BUNDLE_URL"},
		{"not http", with("POLICY_BUNDLE_URL", "file:///etc/b.tar.gz", "POLICY_BUNDLE_PUBLIC_KEY", key), "POLICY_BUNDLE_URL: \"file:///etc/b.tar.gz\" is not an http(s) URL"},
		{"key unreadable", with("POLICY_BUNDLE_URL", "https://b/x", "POLICY_BUNDLE_PUBLIC_KEY", filepath.Join(dir, "absent")), "POLICY_BUNDLE_PUBLIC_KEY: open"},
		{"key without a bundle", with("POLICY_BUNDLE_PUBLIC_KEY", key), "POLICY_BUNDLE_PUBLIC_KEY: is the key of POLICY_BUNDLE_URL"},
		{"config unreadable", with("OPA_CONFIG", filepath.Join(dir, "absent.yaml")), "OPA_CONFIG: open"},
		{"persist without a bundle", with("POLICY_PERSIST_DIR", dir), "POLICY_PERSIST_DIR: is where POLICY_BUNDLE_URL's bundle is kept"},
		{"persist with OPA_CONFIG", with("OPA_CONFIG", file, "POLICY_PERSIST_DIR", dir), "POLICY_PERSIST_DIR: cannot be used with OPA_CONFIG"},
		{"decision logs", with("DECISION_LOGS", "kafka"), "DECISION_LOGS: \"kafka\" is not one of off, console"},
	} {
		if _, err := FromSource(from(c.vars)); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want an error saying %q", c.name, err, c.want)
		}
	}
}
