package policy

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/storage/inmem"
	"github.com/open-policy-agent/opa/v1/tester"
)

// testTimeout bounds one test of a policy being swapped in, as opa test's
// default does.
const testTimeout = 5 * time.Second

// maxReported bounds the failing tests an error names.
const maxReported = 5

// runTests runs the test_ rules of a policy assembled with its tests,
// compiled strictly and evaluated with strict builtin errors (as the server
// evaluates): a failing or erroring test is an error naming it with its file
// and line. A policy without tests passes.
func runTests(ctx context.Context, l *Loaded) error {
	if _, err := l.Compile(); err != nil {
		return err
	}
	store := inmem.NewFromObject(l.Documents)
	txn, err := store.NewTransaction(ctx)
	if err != nil {
		return err
	}
	defer store.Abort(ctx, txn)
	runner := tester.NewRunner().
		SetCompiler(ast.NewCompiler().WithCapabilities(ast.CapabilitiesForThisVersion())).
		SetStore(store).
		SetModules(l.Modules).
		RaiseBuiltinErrors(true).
		SetTimeout(testTimeout)
	ch, err := runner.RunTests(ctx, txn)
	if err != nil {
		return fmt.Errorf("policy %s: tests: %w", l.Dir, err)
	}
	var failed []string
	n := 0
	for r := range ch {
		if r.Pass() || r.Skip {
			continue
		}
		n++
		if len(failed) == maxReported {
			continue
		}
		what := "FAIL"
		if r.Error != nil {
			what = "ERROR: " + r.Error.Error()
		}
		where := ""
		if r.Location != nil {
			where = fmt.Sprintf("%s:%d: ", r.Location.File, r.Location.Row)
		}
		failed = append(failed, fmt.Sprintf("%s%s.%s: %s", where, strings.TrimPrefix(r.Package, "data."), r.Name, what))
	}
	if n == 0 {
		return nil
	}
	if n > len(failed) {
		failed = append(failed, fmt.Sprintf("and %d more", n-len(failed)))
	}
	return fmt.Errorf("policy %s: %d test(s) failed: %w", l.Dir, n, errors.New(strings.Join(failed, "; ")))
}
