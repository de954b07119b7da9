package policy

import (
	"context"
	"testing"
	"time"

	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/open-policy-agent/opa/v1/storage/inmem"
)

// BenchmarkDecisionParts splits an evaluated decision's floor: building
// the input document (AST values), and OPA evaluating a query that is a
// constant over that input, with the engine's evaluation options. What an
// evaluated decision costs beyond their sum is the policy's rules.
func BenchmarkDecisionParts(b *testing.B) {
	in := benchCall()
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
