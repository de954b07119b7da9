package config

import (
	"errors"
	"strings"
	"testing"
)

// problem returns the configuration problem reported for variable name, or
// "" when there is none.
func problem(t *testing.T, err error, name string) string {
	t.Helper()
	if err == nil {
		return ""
	}
	var ce *Error
	if !errors.As(err, &ce) {
		t.Fatalf("want a *config.Error, got %T %v", err, err)
	}
	for _, p := range ce.Problems {
		if s := p.Error(); strings.HasPrefix(s, name+": ") {
			return s
		}
	}
	return ""
}

// TestDevIDPNotInProduction: the development identity provider mints any
// token anyone asks for, so DEV_IDP=true with ENVIRONMENT=production (also
// the default environment) is refused by its own guard, reported on DEV_IDP,
// even when nothing else is wrong with the configuration.
func TestDevIDPNotInProduction(t *testing.T) {
	for name, vars := range map[string]map[string]string{
		"ENVIRONMENT=production":         {"DEV_IDP": "true", "ENVIRONMENT": "production", "AZURE_BASE_URL": "https://mcp.example.com"},
		"ENVIRONMENT unset (production)": {"DEV_IDP": "true", "AZURE_BASE_URL": "https://mcp.example.com"},
		"ENVIRONMENT=Production":         {"DEV_IDP": "true", "ENVIRONMENT": "Production", "AZURE_BASE_URL": "https://mcp.example.com"},
	} {
		t.Run(name, func(t *testing.T) {
			c, err := FromSource(from(vars))
			if err == nil {
				t.Fatalf("accepted: dev IdP on %s in %s", c.Dev.Addr, c.Environment)
			}
			if p := problem(t, err, "DEV_IDP"); !strings.Contains(p, "ENVIRONMENT=production") {
				t.Fatalf("no DEV_IDP problem naming production; got:\n%v", err)
			}
		})
	}
	// Outside production the same settings load.
	for _, env := range []string{"development", "staging"} {
		if _, err := FromSource(from(map[string]string{"DEV_IDP": "true", "ENVIRONMENT": env, "AZURE_BASE_URL": "https://mcp.example.com"})); err != nil {
			t.Errorf("ENVIRONMENT=%s: %v", env, err)
		}
	}
}

// TestDevIDPLoopbackOnly: the development identity provider listens on a
// loopback address only; any other DEV_IDP_ADDR is refused by its own guard,
// reported on DEV_IDP_ADDR (not merely as a consequence on the authority).
func TestDevIDPLoopbackOnly(t *testing.T) {
	for _, addr := range []string{"0.0.0.0:8001", ":8001", "[::]:8001", "192.0.2.10:8001", "mcp.example.com:8001", "127.0.0.1", "localhost"} {
		t.Run(addr, func(t *testing.T) {
			c, err := FromSource(from(map[string]string{"DEV_IDP": "true", "ENVIRONMENT": "development", "DEV_IDP_ADDR": addr}))
			if err == nil {
				t.Fatalf("accepted: dev IdP on %s", c.Dev.Addr)
			}
			if p := problem(t, err, "DEV_IDP_ADDR"); !strings.Contains(p, "loopback") {
				t.Fatalf("no DEV_IDP_ADDR problem naming loopback; got:\n%v", err)
			}
		})
	}
	for _, addr := range []string{"127.0.0.1:8001", "127.0.0.2:9000", "[::1]:8001", "localhost:8001"} {
		c, err := FromSource(from(map[string]string{"DEV_IDP": "true", "ENVIRONMENT": "development", "DEV_IDP_ADDR": addr}))
		if err != nil || c.Dev.Addr != addr || c.Azure.AuthorityHost != "http://"+addr {
			t.Errorf("DEV_IDP_ADDR=%s: %v", addr, err)
		}
	}
}
