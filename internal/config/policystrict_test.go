package config

import (
	"strings"
	"testing"
)

// POLICY_STRICT is on by default in production only; it can be set either
// way, and a value that is no boolean is an error naming it.
func TestPolicyStrict(t *testing.T) {
	prod := map[string]string{"ENVIRONMENT": "production", "AZURE_CLIENT_ID": "c", "AZURE_TENANT_ID": "t",
		"AZURE_BASE_URL": "https://mcp.example.com"}
	with := func(m map[string]string, k, v string) map[string]string {
		out := map[string]string{}
		for a, b := range m {
			out[a] = b
		}
		out[k] = v
		return out
	}
	for _, tc := range []struct {
		name string
		vars map[string]string
		want bool
	}{
		{"production default", prod, true},
		{"production, off", with(prod, "POLICY_STRICT", "false"), false},
		{"development default", map[string]string{"ENVIRONMENT": "development", "ENABLE_AUTH": "false"}, false},
		{"development, on", map[string]string{"ENVIRONMENT": "development", "ENABLE_AUTH": "false", "POLICY_STRICT": "true"}, true},
		{"staging default", with(prod, "ENVIRONMENT", "staging"), false},
	} {
		cfg, err := FromSource(from(tc.vars))
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if cfg.PolicyStrict != tc.want {
			t.Errorf("%s: PolicyStrict = %v, want %v", tc.name, cfg.PolicyStrict, tc.want)
		}
	}
	if _, err := FromSource(from(with(prod, "POLICY_STRICT", "yes please"))); err == nil || !strings.Contains(err.Error(), "POLICY_STRICT:") {
		t.Fatalf("a POLICY_STRICT that is no boolean: %v", err)
	}
}
