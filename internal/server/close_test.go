package server

import (
	"context"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/mcpguard/mcpguard/internal/config"
)

// logGoroutines counts the decision-log goroutines of all engines alive.
func logGoroutines() int {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	return strings.Count(string(buf), "policy.(*decisionLog).run(")
}

// waitLogGoroutines waits, bounded, until n decision-log goroutines are left.
func waitLogGoroutines(t *testing.T, n int) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); logGoroutines() != n; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d decision-log goroutines, want %d: the engine was not closed", logGoroutines(), n)
		}
	}
}

func closeTestConfig(t *testing.T, vars map[string]string) *config.Config {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "authz.rego"), []byte(echoPolicy), 0o600); err != nil {
		t.Fatal(err)
	}
	all := map[string]string{"POLICY_DIR": dir, "DECISION_LOGS": "console", "LOG_LEVEL": "error"}
	for k, v := range vars {
		all[k] = v
	}
	return lintConfig(t, all)
}

// A start that fails after the policy engine is built stops what the
// engine started; Close stops it too.
func TestEngineClosedWithTheServer(t *testing.T) {
	before := logGoroutines()
	cfg := closeTestConfig(t, map[string]string{"ROLE_SOURCE": "static", "ROLES_FILE": filepath.Join(t.TempDir(), "missing.json")})
	if _, err := New(context.Background(), cfg, Options{}); err == nil {
		t.Fatal("a missing roles file started")
	}
	waitLogGoroutines(t, before)

	s, err := New(context.Background(), closeTestConfig(t, nil), Options{Roles: &fakeRoles{}})
	if err != nil {
		t.Fatal(err)
	}
	if logGoroutines() != before+1 {
		t.Fatalf("%d decision-log goroutines with one server, want %d", logGoroutines(), before+1)
	}
	if err := s.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	waitLogGoroutines(t, before)
}
