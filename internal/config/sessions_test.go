package config

import (
	"strings"
	"testing"
	"time"
)

// Sessions expire and are capped per user unless configured otherwise; a
// setting that would let them live forever or without a cap is refused.
func TestSessionLimits(t *testing.T) {
	base := map[string]string{"AZURE_CLIENT_ID": "c", "AZURE_TENANT_ID": "t", "AZURE_BASE_URL": "https://mcp.example.com"}
	c, err := FromSource(from(base))
	if err != nil {
		t.Fatal(err)
	}
	if c.Sessions != (Sessions{IdleTimeout: 30 * time.Minute, MaxPerUser: 32, MaxStreamsPerUser: 32}) {
		t.Fatalf("defaults: %+v", c.Sessions)
	}
	with := func(k, v string) map[string]string {
		m := map[string]string{k: v}
		for a, b := range base {
			m[a] = b
		}
		return m
	}
	c, err = FromSource(from(with("SESSION_IDLE_TIMEOUT", "90s")))
	if err != nil || c.Sessions.IdleTimeout != 90*time.Second {
		t.Fatalf("SESSION_IDLE_TIMEOUT=90s: %v %+v", err, c)
	}
	for _, bad := range [][2]string{
		{"SESSION_IDLE_TIMEOUT", "0"}, {"SESSION_IDLE_TIMEOUT", "-1m"}, {"SESSION_IDLE_TIMEOUT", "forever"},
		{"MAX_SESSIONS_PER_USER", "0"}, {"MAX_SESSIONS_PER_USER", "many"},
		{"MAX_STREAMS_PER_USER", "0"}, {"MAX_STREAMS_PER_USER", "-3"},
	} {
		if _, err := FromSource(from(with(bad[0], bad[1]))); err == nil || !strings.Contains(err.Error(), bad[0]+":") {
			t.Errorf("%s=%s: %v", bad[0], bad[1], err)
		}
	}
}
