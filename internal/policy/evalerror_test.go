package policy_test

import (
	"context"
	"strings"
	"testing"

	"github.com/mcpguard/mcpguard/internal/policy"
)

// An evaluation error is reported as what it is: a builtin error denies,
// and is not returned (or logged) as a timeout.
func TestEvaluationErrorsNamed(t *testing.T) {
	ctx := context.Background()
	e, err := policy.New(ctx, writePolicy(t, map[string]string{"authz.rego": vetoPolicy}))
	if err != nil {
		t.Fatal(err)
	}
	d, err := e.Decide(ctx, strictInput("2026-01-01T00:00:00Z", 20))
	if d.Allow || err == nil || strings.Contains(err.Error(), "exceeded") {
		t.Fatalf("a builtin error: %+v %v", d, err)
	}
}
