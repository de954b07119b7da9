// Command rego is the mutation tester of the Rego policies: it edits the
// shipped (non-test) policy files one place at a time — each conjunct
// deleted, each expression negated, each rule body dropped, each default
// deleted — and runs every policy test against each edit in process. A
// mutant is killed when a test fails, invalid when it does not compile, and
// a survivor otherwise: a protection no test pins down. Survivors that
// change no behaviour are listed, each with its reason, in a reviewed
// allow-list (test/mutate/rego-allow.txt); any other survivor, or an entry of
// the list no survivor used, makes the command exit 1.
//
// Tests run with strict builtin errors, as the engine evaluates (a mutant
// that makes a rule hit a builtin error fails the request in production); the
// unmutated suite must pass both with and without them.
//
//	go run ./test/mutate/rego [-dir policies] [-allow test/mutate/rego-allow.txt] [-timeout 10m] [-run REGEXP] [-v]
//
// It is a development tool, run by `make mutate-rego`; it is not part of the
// mcpguard binary.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/loader"
	"github.com/open-policy-agent/opa/v1/storage"
	"github.com/open-policy-agent/opa/v1/storage/inmem"
	"github.com/open-policy-agent/opa/v1/tester"
)

func main() {
	code, err := run(context.Background(), os.Args[1:], os.Stdout)
	if err != nil {
		fmt.Fprintln(os.Stderr, "mutate-rego:", err)
		os.Exit(2)
	}
	os.Exit(code)
}

type options struct {
	dir, allow string
	only       *regexp.Regexp // mutants whose key matches; nil for all
	negate     bool
	verbose    bool
}

func run(ctx context.Context, args []string, stdout io.Writer) (int, error) {
	fs := flag.NewFlagSet("mutate-rego", flag.ContinueOnError)
	var o options
	fs.StringVar(&o.dir, "dir", "policies", "the policy folder: its *.rego files other than *_test.rego are mutated, all are compiled")
	fs.StringVar(&o.allow, "allow", "test/mutate/rego-allow.txt", "the reviewed list of equivalent survivors (\"\" for none)")
	only := fs.String("run", "", "only the mutants whose key (file | rule#n | kind | expression) matches this regexp; the allow-list is not checked for stale entries")
	fs.BoolVar(&o.negate, "negate", true, "also negate each expression")
	fs.BoolVar(&o.verbose, "v", false, "print every mutant's outcome, and the test that killed it")
	timeout := fs.Duration("timeout", 10*time.Minute, "give up (exit 2) after this long: a time bound for CI")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0, nil // the usage is printed
		}
		return 2, err
	}
	if fs.NArg() > 0 {
		return 2, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if *only != "" {
		re, err := regexp.Compile(*only)
		if err != nil {
			return 2, fmt.Errorf("-run: %w", err)
		}
		o.only = re
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	return mutate(ctx, o, stdout)
}

// suite is the loaded policy folder: its modules and its data.
type suite struct {
	modules map[string]*ast.Module
	store   storage.Store
}

func load(dir string) (*suite, error) {
	res, err := loader.NewFileLoader().WithRegoVersion(ast.RegoV1).WithProcessAnnotation(true).All([]string{dir})
	if err != nil {
		return nil, fmt.Errorf("loading %s: %w", dir, err)
	}
	s := &suite{modules: map[string]*ast.Module{}, store: inmem.NewFromObject(res.Documents)}
	for name, f := range res.Modules {
		s.modules[name] = f.Parsed
	}
	if len(s.modules) == 0 {
		return nil, fmt.Errorf("no Rego modules in %s", dir)
	}
	return s, nil
}

type outcome int

const (
	survived outcome = iota
	killed
	invalid
)

// test compiles modules and runs every test. It stops at the first failing
// test: one is enough to kill a mutant. total counts the tests that ran.
func (s *suite) test(ctx context.Context, modules map[string]*ast.Module, strict bool) (out outcome, by string, total int, err error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// One worker: the machine is shared, and a killed mutant usually fails
	// early, so parallel tests would mostly run for nothing.
	ch, err := tester.NewRunner().SetStore(s.store).SetModules(modules).
		RaiseBuiltinErrors(strict).SetParallel(1).SetTimeout(10*time.Second).
		RunTests(ctx, nil)
	if err != nil {
		var compile ast.Errors
		if errors.As(err, &compile) {
			return invalid, compile.Error(), 0, nil
		}
		return 0, "", 0, err
	}
	for r := range ch {
		total++
		if out == killed || r.Skip {
			continue // draining after the cancel
		}
		if r.Fail || r.Error != nil {
			out, by = killed, r.Name
			if r.Error != nil {
				by += " (error: " + firstLine(r.Error.Error()) + ")"
			}
			cancel()
		}
	}
	return out, by, total, nil
}

// firstLine shortens a message for one line of output.
func firstLine(s string) string {
	s, _, _ = strings.Cut(s, "\n")
	if len(s) > 160 {
		s = s[:157] + "..."
	}
	return s
}

// fileStats counts the mutants of one policy file.
type fileStats struct {
	total, killed, survived, allowed, invalid int
}

func mutate(ctx context.Context, o options, stdout io.Writer) (int, error) {
	start := time.Now()
	s, err := load(o.dir)
	if err != nil {
		return 2, err
	}
	allow := &allowList{reasons: map[string]string{}}
	if o.allow != "" {
		f, err := os.Open(o.allow)
		if err != nil {
			return 2, err
		}
		allow, err = parseAllowList(f, o.allow)
		f.Close()
		if err != nil {
			return 2, err
		}
	}

	// The unmutated suite must pass as `opa test` runs it and as the engine
	// evaluates (strict builtin errors); otherwise no mutant means anything.
	var tests int
	for _, strict := range []bool{false, true} {
		out, by, n, err := s.test(ctx, s.modules, strict)
		if err == nil {
			err = ctx.Err()
		}
		if err != nil {
			return 2, err
		}
		if out != survived || n == 0 {
			return 2, fmt.Errorf("the unmutated policy tests do not pass (strict builtin errors %v): %s", strict, by)
		}
		tests = n
	}
	fmt.Fprintf(stdout, "%d policy tests pass, with and without strict builtin errors\n", tests)

	var files []string
	for name := range s.modules {
		if !strings.HasSuffix(name, "_test.rego") {
			files = append(files, name)
		}
	}
	sort.Strings(files)

	stats := map[string]*fileStats{}
	used := map[string]bool{}
	var unlisted []string
	for _, file := range files {
		st := &fileStats{}
		stats[file] = st
		orig := s.modules[file]
		for _, m := range enumerate(file, orig, o.negate) {
			if o.only != nil && !o.only.MatchString(m.key()) {
				continue
			}
			if err := ctx.Err(); err != nil {
				return 2, err
			}
			mods := make(map[string]*ast.Module, len(s.modules))
			for k, v := range s.modules {
				mods[k] = v
			}
			mods[file] = m.apply(orig)
			out, by, _, err := s.test(ctx, mods, true)
			if err == nil {
				// A run cut short by the time bound fails its tests: that
				// is no kill.
				err = ctx.Err()
			}
			if err != nil {
				return 2, fmt.Errorf("%s: %w", m, err)
			}
			st.total++
			switch out {
			case killed:
				st.killed++
				if o.verbose {
					fmt.Fprintf(stdout, "killed   %s\n         by %s\n", m, by)
				}
			case invalid:
				st.invalid++
				if o.verbose {
					fmt.Fprintf(stdout, "invalid  %s\n         %s\n", m, firstLine(by))
				}
			case survived:
				st.survived++
				if reason, ok := allow.reasons[m.key()]; ok {
					st.allowed++
					used[m.key()] = true
					if o.verbose {
						fmt.Fprintf(stdout, "allowed  %s\n         %s\n", m, reason)
					}
					continue
				}
				unlisted = append(unlisted, m.key())
				fmt.Fprintf(stdout, "SURVIVED %s\n         allow-list key: %s\n", m, m.key())
			}
		}
	}

	fmt.Fprintln(stdout)
	for _, file := range files {
		st := stats[file]
		valid := st.total - st.invalid
		fmt.Fprintf(stdout, "%s: %d mutants, %d invalid; of %d valid: %d killed (%s), %d survived (%d equivalent, allowed)\n",
			file, st.total, st.invalid, valid, st.killed, percent(st.killed, valid), st.survived, st.allowed)
	}
	code := 0
	if len(unlisted) > 0 {
		list := o.allow
		if list == "" {
			list = "an allow-list"
		}
		fmt.Fprintf(stdout, "%d survivors are neither killed by a test nor on %s\n", len(unlisted), list)
		code = 1
	}
	if o.only == nil {
		if st := allow.stale(used); len(st) > 0 {
			slices.Sort(st)
			fmt.Fprintf(stdout, "%s lists mutants that no longer survive (remove them):\n  %s\n", o.allow, strings.Join(st, "\n  "))
			code = 1
		}
	}
	fmt.Fprintf(stdout, "%s in %s\n", filepath.Clean(o.dir), time.Since(start).Round(time.Second))
	return code, nil
}

func percent(n, of int) string {
	if of == 0 {
		return "-"
	}
	return fmt.Sprintf("%.1f %%", 100*float64(n)/float64(of))
}
