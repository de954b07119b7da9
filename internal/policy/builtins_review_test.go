package policy

import (
	"flag"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/open-policy-agent/opa/v1/ast"
)

var updateBuiltins = flag.Bool("update-builtins", false, "rewrite testdata/deterministic_builtins.txt from the OPA in go.mod")

// The reuse analysis and the load's partial evaluation trust OPA's
// Nondeterministic mark: a builtin without it is taken to answer the same
// for the same arguments. Two that read the clock are not marked
// (readsClock). This pins the unmarked builtins of the OPA in go.mod (OPA
// v1.22.4: its evaluator's reads of the clock, the environment, files and
// the network were checked, and only readsClock's and marked builtins make
// them): a new OPA that adds one fails here until it is reviewed and added
// to the file (-update-builtins rewrites it) or to readsClock.
func TestUnmarkedBuiltinsReviewed(t *testing.T) {
	var names []string
	for _, b := range ast.Builtins {
		if !b.IsNondeterministic() {
			names = append(names, b.Name)
		}
	}
	slices.Sort(names)
	names = slices.Compact(names)
	const file = "testdata/deterministic_builtins.txt"
	if *updateBuiltins {
		if err := os.WriteFile(file, []byte(strings.Join(names, "\n")+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	reviewed := strings.Fields(string(b))
	for _, n := range names {
		if !slices.Contains(reviewed, n) {
			t.Errorf("builtin %s is not marked non-deterministic and has not been reviewed: check it reads no clock, environment or network (else add it to readsClock), then add it to %s", n, file)
		}
	}
	for n := range readsClock {
		if !slices.Contains(names, n) {
			t.Errorf("readsClock names %s, which this OPA no longer has unmarked: review readsClock", n)
		}
	}
}
