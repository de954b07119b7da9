package policy_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/mcpguard/mcpguard/internal/benchtest"
	"github.com/mcpguard/mcpguard/internal/policy"
	"github.com/mcpguard/mcpguard/internal/policy/policytest"
)

func scaledPolicy(b testing.TB, nTools, nRoles int) string {
	b.Helper()
	dir := b.TempDir()
	if err := policytest.Scaled("../../policies", dir, nTools, nRoles); err != nil {
		b.Fatal(err)
	}
	return dir
}

// benchCaller holds 3 of the 50 roles; tool_000 requires role_00.
func benchInput(tool string, args string) *policy.Input {
	roles := []string{"role_00", "role_13", "role_27"}
	id := policy.MustFragment(map[string]any{"authenticated": true, "kind": "user", "tenant_id": "t", "object_id": "o",
		"scopes": []string{"read", "write"}, "app_roles": []string{}, "groups": []string{},
		"claims": map[string]any{"aud": "x", "iss": "y", "tid": "t", "oid": "o", "scp": "read write", "ver": "2.0"}})
	authz := policy.MustFragment(map[string]any{"source": "static", "roles": roles, "realm_roles": roles,
		"client_roles": map[string]any{"api": []string{"role_03"}}, "claims": map[string]any{}})
	in := &policy.Input{Identity: id, Authorization: authz, Request: policy.Request{TimeNS: time.Now().UnixNano(), Transport: "http"}}
	in.MCP.Method = "tools/call"
	in.MCP.SessionID = "SESSION"
	in.MCP.ProtocolVersion = "2025-11-25"
	in.MCP.ClientName = "bench"
	in.MCP.Tool = &policy.Tool{Name: tool, Arguments: json.RawMessage(args), Annotations: policy.MustFragment(map[string]any{"readOnlyHint": true})}
	return in
}

// checkScaled fails the benchmark unless dir's catalog has the size the
// benchmark claims, and reports its distinct rows.
func checkScaled(b *testing.B, dir string, tools, distinct int) {
	b.Helper()
	n, d, err := policytest.Rows(dir)
	if err != nil || n != tools || d != distinct {
		b.Fatalf("catalog: %d tools, %d distinct rows (%v); the benchmark claims %d and %d", n, d, err, tools, distinct)
	}
}

// BenchmarkDecision is a tools/call decision on the shipped policy scaled to
// 200 tools (100 distinct rows) and 50 roles, a caller with 3 roles: allowed
// (the common case) and denied (which also evaluates the reasons), each
// evaluated (decision reuse off: a first request, or a rule that reads the
// request) and reused (the same caller and tool again).
func BenchmarkDecision(b *testing.B) {
	dir := scaledPolicy(b, 200, 50)
	checkScaled(b, dir, 200, 100)
	evaluated, err := policy.New(context.Background(), dir, policy.WithoutDecisionReuse())
	if err != nil {
		b.Fatal(err)
	}
	reused, err := policy.New(context.Background(), dir)
	if err != nil {
		b.Fatal(err)
	}
	for _, c := range []struct {
		name, tool string
		allow      bool
		e          *policy.Engine
	}{
		{"allowed", policytest.ToolName(0), true, evaluated}, {"denied", policytest.ToolName(2), false, evaluated},
		{"allowed-reused", policytest.ToolName(0), true, reused}, {"denied-reused", policytest.ToolName(2), false, reused},
	} {
		e := c.e
		b.Run(c.name, func(b *testing.B) {
			in := benchInput(c.tool, `{"query":"q3 revenue","limit":10}`)
			// The reused engine starts its analysis on the first decision
			// and remembers the second, made after it.
			for range 2 {
				if _, err := e.Decide(context.Background(), in); err != nil {
					b.Fatal(err)
				}
				policy.WaitReuseAnalysis(e)
			}
			if _, ok := policy.Reused(e, in); ok != (e == reused) {
				b.Fatalf("reused: %v; the benchmark claims %v", ok, e == reused)
			}
			ctx := context.Background()
			var lat benchtest.Latencies
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				var d policy.Decision
				var err error
				if lat.Timed() {
					t0 := time.Now()
					d, err = e.Decide(ctx, in)
					lat.Add(time.Since(t0))
				} else {
					d, err = e.Decide(ctx, in)
				}
				if err != nil || d.Allow != c.allow {
					b.Fatalf("%+v %v", d, err)
				}
			}
			b.StopTimer()
			lat.Report(b)
		})
	}
}

// BenchmarkVisible filters a tools/list of 1,000 candidates (100 distinct
// catalog rows) in one evaluation; the caller is shown 50 of them.
func BenchmarkVisible(b *testing.B) {
	dir := scaledPolicy(b, 1000, 50)
	checkScaled(b, dir, 1000, 100)
	e, err := policy.New(context.Background(), dir, policy.WithTimeout(10*time.Second))
	if err != nil {
		b.Fatal(err)
	}
	in := benchInput("", "")
	in.MCP.Method, in.MCP.Tool = "tools/list", nil
	cands := make([]policy.Candidate, 1000)
	for i := range cands {
		cands[i] = policy.Candidate{Name: policytest.ToolName(i)}
	}
	in.MCP.Candidates = &policy.Candidates{Tools: cands}
	b.ReportAllocs()
	for b.Loop() {
		v, err := e.Visible(context.Background(), in)
		if err != nil || len(v) != 50 {
			b.Fatalf("%d of 1,000 visible, want 50: %v", len(v), err)
		}
	}
}

// BenchmarkEngineFloor is the engine's own cost: the same input on a policy
// whose allow is a constant.
func BenchmarkEngineFloor(b *testing.B) {
	dir := b.TempDir()
	if err := policytest.AllowAll(dir); err != nil {
		b.Fatal(err)
	}
	e, err := policy.New(context.Background(), dir)
	if err != nil {
		b.Fatal(err)
	}
	in := benchInput(policytest.ToolName(0), `{"query":"q3 revenue","limit":10}`)
	b.ReportAllocs()
	for b.Loop() {
		if d, err := e.Decide(context.Background(), in); err != nil || !d.Allow {
			b.Fatal(err)
		}
	}
}
