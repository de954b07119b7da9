package policy

import (
	"context"
	"testing"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/open-policy-agent/opa/v1/storage/inmem"
	"github.com/open-policy-agent/opa/v1/topdown"
)

// BenchmarkDecisionParts splits an evaluated decision's floor: building
// the input document (AST values), and OPA evaluating a query that is a
// constant over that input, with the engine's evaluation options. What an
// evaluated decision costs beyond their sum is the policy's rules.
// topdown-constant evaluates the same constant through OPA's evaluator
// directly (topdown.Query, no rego wrapper): the evaluator's own floor.
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
	b.Run("topdown-constant", func(b *testing.B) {
		ctx := context.Background()
		store := inmem.NewFromObjectWithOpts(map[string]any{}, inmem.OptReturnASTValuesOnRead(true))
		compiler := ast.MustCompileModules(map[string]string{"x.rego": "package x\nallow := true\n"})
		txn, err := store.NewTransaction(ctx)
		if err != nil {
			b.Fatal(err)
		}
		v, err := in.value()
		if err != nil {
			b.Fatal(err)
		}
		input, body, x := ast.NewTerm(v), ast.MustParseBody("data.x.allow = x"), ast.Var("x")
		b.ReportAllocs()
		for b.Loop() {
			var got ast.Value
			err := topdown.NewQuery(body).WithCompiler(compiler).WithStore(store).WithTransaction(txn).
				WithInput(input).WithStrictBuiltinErrors(true).
				Iter(ctx, func(qr topdown.QueryResult) error { got = qr[x].Value; return nil })
			if err != nil || !ast.Boolean(true).Equal(got) {
				b.Fatal(got, err)
			}
		}
	})
}
