package policy

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/open-policy-agent/opa/v1/storage/inmem"
)

// partsInput is BenchmarkDecision's input (the three-role caller, the small
// arguments), built inside the package.
func partsInput() *Input {
	roles := []string{"role_00", "role_13", "role_27"}
	in := &Input{
		Identity: MustFragment(map[string]any{"authenticated": true, "kind": "user", "tenant_id": "t", "object_id": "o",
			"scopes": []string{"read", "write"}, "app_roles": []string{}, "groups": []string{},
			"claims": map[string]any{"aud": "x", "iss": "y", "tid": "t", "oid": "o", "scp": "read write", "ver": "2.0"}}),
		Authorization: MustFragment(map[string]any{"source": "static", "roles": roles, "realm_roles": roles,
			"client_roles": map[string]any{"api": []string{"role_03"}}, "claims": map[string]any{}}),
		Request: Request{TimeNS: time.Now().UnixNano(), Transport: "http"},
	}
	in.MCP.Method, in.MCP.SessionID, in.MCP.ProtocolVersion, in.MCP.ClientName = "tools/call", "SESSION", "2025-11-25", "bench"
	in.MCP.Tool = &Tool{Name: "tool_000", Arguments: json.RawMessage(`{"query":"q3 revenue","limit":10}`),
		Annotations: MustFragment(map[string]any{"readOnlyHint": true})}
	return in
}

// BenchmarkDecisionParts splits an evaluated decision's floor: building
// the input document (AST values), and OPA evaluating a query that is a
// constant over that input, with the engine's evaluation options. What an
// evaluated decision costs beyond their sum is the policy's rules.
func BenchmarkDecisionParts(b *testing.B) {
	in := partsInput()
	b.Run("input", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := in.value(); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("eval-constant", func(b *testing.B) {
		ctx := context.Background()
		store := inmem.New()
		pq, err := rego.New(rego.Query("data.x.allow"), rego.Module("x.rego", "package x\nallow := true\n"),
			rego.Store(store), rego.StrictBuiltinErrors(true)).PrepareForEval(ctx, rego.WithPartialEval())
		if err != nil {
			b.Fatal(err)
		}
		c := &compiled{}
		if c.txn, err = store.NewTransaction(ctx); err != nil {
			b.Fatal(err)
		}
		v, err := in.value()
		if err != nil {
			b.Fatal(err)
		}
		b.ReportAllocs()
		for b.Loop() {
			if ok, err := evalBool(ctx, c, &pq, v, time.Second); err != nil || !ok {
				b.Fatal(ok, err)
			}
		}
	})
}
