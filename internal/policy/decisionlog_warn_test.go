package policy_test

import (
	"context"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/mcpguard/mcpguard/internal/policy"
)

// With decision logs on, a policy without the mask rule is warned of when
// it is put in force (inputs are then logged unmasked); with the mask rule,
// or with decision logs off, there is no warning.
func TestUnmaskedDecisionLogsWarned(t *testing.T) {
	noMask := map[string]string{"system_log.rego": "package other.logging\n\nkept := true\n"}
	for _, c := range []struct {
		name  string
		files map[string]string
		logs  bool
		warn  bool
	}{
		{"logs on, no mask rule", noMask, true, true},
		{"logs on, the shipped mask rule", nil, true, false},
		{"logs off, no mask rule", noMask, false, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			var log syncBuffer
			opts := []policy.Option{policy.WithTimeout(5 * time.Second), policy.WithLogger(slog.New(slog.NewTextHandler(&log, nil)))}
			if c.logs {
				opts = append(opts, policy.WithManagement(policy.Management{Config: []byte(`{"decision_logs": {"console": true}}`), Console: io.Discard, ID: "replica-1"}))
			}
			e, err := policy.New(context.Background(), shippedWith(t, c.files), opts...)
			if err != nil {
				t.Fatal(err)
			}
			e.Close(context.Background())
			if got := strings.Contains(log.String(), "inputs are logged unmasked"); got != c.warn {
				t.Fatalf("warned: %v, want %v; the log:\n%s", got, c.warn, log.String())
			}
		})
	}
}
