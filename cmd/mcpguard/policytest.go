package main

import (
	"context"
	"fmt"
	"io"
	"runtime"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/storage/inmem"
	"github.com/open-policy-agent/opa/v1/tester"
	"github.com/open-policy-agent/opa/v1/topdown"
	"github.com/open-policy-agent/opa/v1/topdown/lineage"

	"github.com/mcpguard/mcpguard/internal/policy"
)

const testAbout = `Runs the Rego tests (test_* rules) of the policy folder as the server would
evaluate them, and reports them as opa test does (OPA's own reporter):
  1. the folder must load as the server loads it (policy.New: the strict
     compile, the built-in decision module, the queries prepared); a folder the
     server would refuse fails here, with the server's error;
  2. the folder with its *_test.rego files must compile strictly too;
  3. each test runs with strict builtin errors: a builtin error (to_number("x"),
     a division by zero, count(5)) is a test ERROR, as it is an evaluation error
     (a deny) in the server, where plain opa test silently makes it undefined.
Exit status: 0 all passed, 1 a failure, an error, a skipped (todo_) test or no
test at all, 2 a bad command line.
`

// policyTest is `mcpguard policy test`.
func policyTest(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("policy test", "policy test [--policy-dir D] [-v] [--run REGEX]", testAbout)
	dir := fs.String("policy-dir", "policies", policyDirUsage)
	verbose := fs.Bool("v", false, "every test by name; for a failure, the failing expression, the values of its variables and a trace of notes and fails (opa test -v --var-values)")
	runRegex := fs.String("run", "", "run only the tests whose package.name matches this regular expression")
	timeout := fs.Duration("timeout", 5*time.Second, "the limit of one test (as opa test's)")
	if err := parseFlags(fs, args, stdout); err != nil {
		return err
	}
	// 1. The server's own load: what refuses to start fails here.
	if _, err := policy.New(ctx, *dir); err != nil {
		fmt.Fprintf(stdout, "the server would refuse %s: %v\n", *dir, err)
		return exitError(1)
	}
	// 2. The tests, compiled as strictly.
	loaded, err := policy.Load(*dir, true)
	if err != nil {
		fmt.Fprintln(stdout, err)
		return exitError(1)
	}
	if _, err := loaded.Compile(); err != nil {
		fmt.Fprintln(stdout, err)
		return exitError(1)
	}
	// 3. Run them. The strict checks were made above; this compiler adds
	// what the tester needs (print output, the values of -v).
	compiler := ast.NewCompiler().
		WithCapabilities(ast.CapabilitiesForThisVersion()).
		WithEnablePrintStatements(true).
		WithRewriteTestRules(*verbose)
	store := inmem.NewFromObject(loaded.Documents)
	txn, err := store.NewTransaction(ctx)
	if err != nil {
		return err
	}
	defer store.Abort(ctx, txn)
	runner := tester.NewRunner().
		SetCompiler(compiler).
		SetStore(store).
		SetModules(loaded.Modules).
		CapturePrintOutput(true).
		EnableTracing(*verbose).
		StackTraces(true).
		RaiseBuiltinErrors(true).
		SetTimeout(*timeout).
		Filter(*runRegex).
		SetParallel(runtime.NumCPU())
	ch, err := runner.RunTests(ctx, txn)
	if err != nil {
		fmt.Fprintln(stdout, err)
		return exitError(1)
	}
	n, failed := 0, 0
	dup := make(chan *tester.Result)
	go func() {
		defer close(dup)
		for r := range ch {
			n++
			if !r.Pass() {
				failed++
			}
			if *verbose {
				r.Trace = notesAndFails(r.Trace)
			}
			dup <- r
		}
	}()
	reporter := tester.PrettyReporter{Output: stdout, Verbose: *verbose, FailureLine: *verbose, LocalVars: *verbose}
	if err := reporter.Report(dup); err != nil {
		fmt.Fprintln(stderr, err)
		return exitError(1)
	}
	if n == 0 {
		fmt.Fprintf(stdout, "no tests ran in %s", *dir)
		if *runRegex != "" {
			fmt.Fprintf(stdout, " matching --run %q", *runRegex)
		}
		fmt.Fprintln(stdout)
		return exitError(1)
	}
	if failed > 0 {
		return exitError(1)
	}
	return nil
}

// notesAndFails is the trace opa test -v shows: notes and failed expressions.
func notesAndFails(trace []*topdown.Event) []*topdown.Event {
	return lineage.Filter(trace, func(e *topdown.Event) bool {
		return e.Op == topdown.NoteOp || e.Op == topdown.FailOp
	})
}
