package policy_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/mcpguard/mcpguard/internal/policy"
)

// The engine prepares allow by partial evaluation at load, which computes
// whatever its arguments it knows: a certificate chain held in the policy,
// verified by a builtin OPA does not mark as reading the clock, was
// verified once, when the policy loaded, and a call it allowed stayed
// allowed after the certificate expired, with decision reuse off. Such a
// policy is evaluated whole on every request.
func TestClockReadingBuiltinDecidedAtRequestTime(t *testing.T) {
	beforeExpiry(t, 4*time.Second, clockAtRequestTime)
}

// beforeExpiry runs f with a certificate window (from now): f answers
// false when the chain expired before its allowed requests were made,
// which shows nothing. A loaded machine may take that long: then f runs
// once more, with a window of 30 s.
func beforeExpiry(t *testing.T, window time.Duration, f func(*testing.T, time.Duration) bool) {
	t.Helper()
	for _, w := range []time.Duration{window, 30 * time.Second} {
		if f(t, w) {
			return
		}
		t.Logf("the chain expired before the allowed requests were made in %s", w)
	}
	t.Fatal("the chain expired before the allowed requests were made, twice: the machine is too slow for this test")
}

func clockAtRequestTime(t *testing.T, window time.Duration) bool {
	t.Helper()
	notAfter := time.Now().Add(window).Truncate(time.Second)
	chain, err := json.Marshal(chainUntil(t, notAfter))
	if err != nil {
		t.Fatal(err)
	}
	dir := shippedWith(t, map[string]string{"team_rules.rego": `package mcp.authz

vendor_chain := ` + string(chain) + `

tool_allowed("lookup") if {
	[valid, _] := crypto.x509.parse_and_verify_certificates(vendor_chain)
	valid
}
`})
	// Without reuse: only the load's own evaluation could hold the answer.
	e, err := policy.New(context.Background(), dir, policy.WithoutDecisionReuse(), policy.WithTimeout(30*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	in := newToken("data_reader").call("lookup", `{}`)
	if !allows(t, e, in) {
		if time.Now().After(notAfter.Add(-time.Second)) {
			return false
		}
		t.Fatal("refused while the chain is valid")
	}
	time.Sleep(time.Until(notAfter) + time.Second)
	if allows(t, e, in) {
		t.Fatal("allowed after the chain expired: it was verified when the policy loaded")
	}
	return true
}
