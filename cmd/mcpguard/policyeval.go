package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/open-policy-agent/opa/v1/storage/inmem"
	"github.com/open-policy-agent/opa/v1/topdown"
	"github.com/open-policy-agent/opa/v1/topdown/lineage"
	"github.com/open-policy-agent/opa/v1/util"

	"github.com/mcpguard/mcpguard/internal/policy"
)

// exitDenied is policy eval's status for a request the policy denies.
const exitDenied = 3

const evalAbout = `Decides one input document (as policy input prints it, or the samples in
test/policy/inputs/) with the server's engine, and prints the decision as JSON.
With --explain, OPA's trace of the allow query goes to standard error:
fails (the expressions that failed), notes (trace(...) notes) or full.
Exit status: 0 allowed, 3 denied, 1 the policy could not decide (an evaluation
error: the server denies such a request) or a bad file, 2 a bad command line.
`

// policyEval is `mcpguard policy eval`.
func policyEval(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("policy eval", "policy eval --input FILE [--policy-dir D] [--explain fails|notes|full]", evalAbout)
	input := fs.String("input", "", "the input document, a JSON file (- reads standard input)")
	dir := fs.String("policy-dir", "policies", policyDirUsage)
	explain := fs.String("explain", "", "trace the allow query to standard error: fails, notes or full")
	if err := parseFlags(fs, args, stdout); err != nil {
		return err
	}
	if *input == "" {
		return &usageError{msg: "policy eval: --input is required", usage: flagUsage(fs)}
	}
	filter, ok := traceFilters[*explain]
	if !ok {
		return &usageError{msg: fmt.Sprintf("policy eval: --explain %q: want fails, notes or full", *explain), usage: flagUsage(fs)}
	}
	var data []byte
	var err error
	if *input == "-" {
		data, err = io.ReadAll(os.Stdin)
	} else {
		data, err = os.ReadFile(*input)
	}
	if err != nil {
		return fmt.Errorf("policy eval: %w", err)
	}
	doc, err := readDocument(data)
	if err != nil {
		return fmt.Errorf("policy eval: %s: %w", *input, err)
	}
	eng, err := policy.New(ctx, *dir)
	if err != nil {
		return err
	}
	d, derr := eng.DecideDocument(ctx, data)
	if filter != nil {
		if err := traceAllow(ctx, *dir, doc, filter, stderr); err != nil {
			fmt.Fprintln(stderr, "trace:", err)
		}
	}
	enc := json.NewEncoder(stdout)
	enc.SetIndent("", "  ")
	if err := enc.Encode(d); err != nil {
		return err
	}
	switch {
	case derr != nil:
		fmt.Fprintf(stderr, "the policy could not decide (the server denies such a request): %v\n", derr)
		return exitError(1)
	case !d.Allow:
		return exitError(exitDenied)
	}
	return nil
}

// readDocument reads an input document as the engine does (OPA's JSON
// reader); it must be an object.
func readDocument(data []byte) (ast.Value, error) {
	var x any
	if err := util.UnmarshalJSON(data, &x); err != nil {
		return nil, err
	}
	if _, ok := x.(map[string]any); !ok {
		return nil, fmt.Errorf("an input document is a JSON object")
	}
	return ast.InterfaceToValue(x)
}

// traceFilters are the --explain modes, as opa eval --explain names them.
var traceFilters = map[string]func([]*topdown.Event) []*topdown.Event{
	"":      nil,
	"fails": lineage.Fails,
	"notes": lineage.Notes,
	"full":  lineage.Full,
}

// traceAllow evaluates the allow query on the document with a tracer and
// prints the trace. The engine evaluates a partially evaluated copy of the
// same query; the outcome is the same, the trace reads as the source.
func traceAllow(ctx context.Context, dir string, in ast.Value, filter func([]*topdown.Event) []*topdown.Event, w io.Writer) error {
	loaded, err := policy.Load(dir, false)
	if err != nil {
		return err
	}
	compiler, err := loaded.Compile()
	if err != nil {
		return err
	}
	buf := topdown.NewBufferTracer()
	rs, err := rego.New(
		rego.Query(policy.AllowQuery),
		rego.Compiler(compiler),
		rego.Store(inmem.NewFromObject(loaded.Documents)),
		rego.ParsedInput(in),
		rego.StrictBuiltinErrors(true),
		rego.QueryTracer(buf),
	).Eval(ctx)
	fmt.Fprintf(w, "trace of %s:\n", policy.AllowQuery)
	topdown.PrettyTraceWithLocation(w, filter(*buf))
	if err != nil {
		return err
	}
	if len(rs) == 0 {
		fmt.Fprintf(w, "%s is undefined\n", policy.AllowQuery)
	}
	return nil
}
