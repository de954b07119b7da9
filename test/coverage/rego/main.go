// Command rego is the Rego coverage gate: it reads the report of
// `opa test --coverage --format=json` and checks each policy file on its own
// (the *.rego files of the folder other than *_test.rego) against a minimum.
// `opa test --threshold` checks the average over every loaded file, test files
// included, which hides an untested policy file behind well-covered tests.
//
//	go tool opa test policies/ --coverage --format=json > bin/policy-coverage.json
//	go run ./test/coverage/rego -min 100 -report bin/policy-coverage.json policies/
//
// It prints each policy file's coverage and, for a file under the minimum,
// the lines no test reached; it exits 1 if any file is under the minimum or
// missing from the report. Run by `make test-policy`.
package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/open-policy-agent/opa/v1/cover"
)

func main() {
	code, err := run(os.Args[1:], os.Stdin, os.Stdout)
	if err != nil {
		fmt.Fprintln(os.Stderr, "coverage-rego:", err)
		os.Exit(2)
	}
	os.Exit(code)
}

func run(args []string, stdin io.Reader, stdout io.Writer) (int, error) {
	fs := flag.NewFlagSet("coverage-rego", flag.ContinueOnError)
	minimum := fs.Float64("min", 100, "the minimum coverage of each policy file, in per cent")
	report := fs.String("report", "-", "the JSON report of opa test --coverage --format=json (- for stdin)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0, nil // the usage is printed
		}
		return 2, err
	}
	if fs.NArg() != 1 {
		return 2, fmt.Errorf("want one policy folder, got %q", fs.Args())
	}
	if *minimum < 0 || *minimum > 100 {
		return 2, fmt.Errorf("-min %v: want a percentage from 0 to 100", *minimum)
	}
	files, err := policyFiles(fs.Arg(0))
	if err != nil {
		return 2, err
	}
	in := stdin
	if *report != "-" {
		f, err := os.Open(*report)
		if err != nil {
			return 2, err
		}
		defer f.Close()
		in = f
	}
	var rep cover.Report
	if err := json.NewDecoder(in).Decode(&rep); err != nil {
		return 2, fmt.Errorf("reading the coverage report %s: %w", *report, err)
	}
	return check(files, &rep, *minimum, stdout), nil
}

// policyFiles lists the policy files of dir, tests left out, as opa test
// names them in its report (the folder as given, cleaned, joined with the
// file name).
func policyFiles(dir string) ([]string, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("listing the policy folder: %w", err)
	}
	var files []string
	for _, e := range entries {
		name := e.Name()
		if !e.IsDir() && strings.HasSuffix(name, ".rego") && !strings.HasSuffix(name, "_test.rego") {
			files = append(files, filepath.Join(dir, name))
		}
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("no policy files (*.rego other than *_test.rego) in %s", dir)
	}
	sort.Strings(files)
	return files, nil
}

// check prints each file's coverage and returns 1 if one is under minimum.
func check(files []string, rep *cover.Report, minimum float64, stdout io.Writer) int {
	byPath := map[string]*cover.FileReport{}
	for name, fr := range rep.Files {
		byPath[filepath.Clean(name)] = fr
	}
	code := 0
	for _, file := range files {
		fr, ok := byPath[filepath.Clean(file)]
		if !ok {
			fmt.Fprintf(stdout, "%s: not in the coverage report (no test loads it)\n", file)
			code = 1
			continue
		}
		total := fr.CoveredLines + fr.NotCoveredLines
		pct := 100.0
		if total > 0 {
			pct = 100 * float64(fr.CoveredLines) / float64(total)
		}
		status := "ok"
		if pct < minimum {
			status = fmt.Sprintf("UNDER %.0f %%", minimum)
			code = 1
		}
		fmt.Fprintf(stdout, "%s: %.1f %% of %d lines (%s)\n", file, pct, total, status)
		if pct < minimum {
			for _, r := range fr.NotCovered {
				fmt.Fprintf(stdout, "  not covered: %s\n", lines(file, r))
			}
		}
	}
	return code
}

func lines(file string, r cover.Range) string {
	s := fmt.Sprintf("%s:%d", file, r.Start.Row)
	if r.End.Row != r.Start.Row {
		s += fmt.Sprintf("-%d", r.End.Row)
	}
	if len(r.Kinds) > 0 {
		kinds := make([]string, len(r.Kinds))
		for i, k := range r.Kinds {
			kinds[i] = string(k)
		}
		s += " (" + strings.Join(kinds, ", ") + ")"
	}
	return s
}
