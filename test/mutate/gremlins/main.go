// Command mutate runs gremlins, a mutation tester, over mcpguard's
// security-critical Go code (`make mutate-go`; docs/TESTING.md). Each target
// is one package, or some files of one, run with one worker. A mutant that
// lives (the package's tests pass with the operator changed) fails the run
// unless test/mutate/go-allow.txt lists it, with the reason it cannot change behaviour.
//
// It does not decide which code matters: the targets below do, and a
// reviewer decides what goes into go-allow.txt.
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// target is one gremlins run.
type target struct {
	name string
	// dir is the package's directory, relative to the repository.
	dir string
	// files are mutated; the package's other files, and its subpackages,
	// are not (their tests still run).
	files []string
	// redis: the package's tests start Debian's redis-server, and
	// MCPGUARD_REDIS=1 makes its absence a failure instead of a skip.
	redis bool
}

// targets, most critical first. Each runs in under ten minutes on one core
// of the project's machine (docs/TESTING.md has the measured times).
var targets = []target{
	{name: "store-sealing", dir: "internal/store", files: []string{"encrypted.go"}, redis: true},
	{name: "authn-jws", dir: "internal/authn", files: []string{"jws.go"}},
	{name: "authn-verifier", dir: "internal/authn", files: []string{"verifier.go", "cache.go", "identity.go"}},
	{name: "authn-keys", dir: "internal/authn", files: []string{"keys.go", "http.go"}},
	{name: "exchange-keycloak", dir: "internal/exchange", files: []string{"keycloak.go"}, redis: true},
	{name: "exchange", dir: "internal/exchange", files: []string{"exchange.go", "static.go"}, redis: true},
	{name: "server-authz", dir: "internal/server", files: []string{"middleware.go", "principal.go", "http.go"}},
	{name: "policy-engine", dir: "internal/policy", files: []string{"engine.go", "input.go"}},
	{name: "policy-json", dir: "internal/policy", files: []string{"json.go"}},
	{name: "policy-reuse", dir: "internal/policy", files: []string{"reuse.go"}},
}

// mutators: gremlins's defaults, and the ones it leaves off, which change
// exactly what security checks are made of (&&/||, break/continue, +=).
var mutators = []string{
	"--arithmetic-base", "--conditionals-boundary", "--conditionals-negation",
	"--increment-decrement", "--invert-negatives", "--invert-logical", "--invert-loopctrl",
	"--invert-assignments", "--remove-self-assignments", "--invert-bitwise", "--invert-bwassign",
}

func main() {
	// Started as "go" through the symlink on the PATH gremlins gets.
	if filepath.Base(os.Args[0]) == "go" {
		os.Exit(shim())
	}
	var (
		repo   = flag.String("repo", "../..", "the mcpguard repository")
		only   = flag.String("only", "", "comma-separated target names (default: all)")
		allow  = flag.String("allow", "../go-allow.txt", "the reviewed list of equivalent mutants")
		goBin  = flag.String("go", "go", "the go command")
		coef   = flag.Int("timeout-coefficient", 6, "a mutant's test run may take this many times the unmutated coverage run")
		dry    = flag.Bool("dry-run", false, "count the mutants and their coverage, run nothing")
		budget = flag.Duration("budget", 0, "stop each target after this long and judge the mutants run so far (0: no limit)")
		list   = flag.Bool("list", false, "list the targets and exit")
	)
	flag.Parse()
	if flag.NArg() > 0 {
		fatalf("unexpected arguments: %q", flag.Args())
	}
	if *list {
		for _, t := range targets {
			fmt.Printf("%-18s %s: %s\n", t.name, t.dir, strings.Join(t.files, " "))
		}
		return
	}
	chosen, err := choose(*only)
	if err != nil {
		fatalf("%v", err)
	}
	entries, err := readAllowList(*allow)
	if err != nil {
		fatalf("%v", err)
	}
	root, err := filepath.Abs(*repo)
	if err != nil {
		fatalf("%v", err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	code, err := run(ctx, root, *goBin, opts{coef: *coef, dry: *dry, budget: *budget}, chosen, entries)
	if err != nil {
		fatalf("%v", err)
	}
	os.Exit(code)
}

func fatalf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "mutate: "+format+"\n", args...)
	os.Exit(2)
}

func choose(only string) ([]target, error) {
	if strings.TrimSpace(only) == "" {
		return targets, nil
	}
	var out []target
	for _, name := range strings.Split(only, ",") {
		name = strings.TrimSpace(name)
		i := slices.IndexFunc(targets, func(t target) bool { return t.name == name })
		if i < 0 {
			return nil, fmt.Errorf("no target %q (-list names them)", name)
		}
		out = append(out, targets[i])
	}
	return out, nil
}

// opts are the settings every target runs with.
type opts struct {
	coef   int
	dry    bool
	budget time.Duration
}

// result is one target's outcome.
type result struct {
	t          target
	counts     map[string]int // by gremlins status
	equivalent int            // lived, and listed in go-allow.txt
	survivors  []mutant       // lived, not listed
	timedOut   []mutant
	notCovered []mutant
	elapsed    time.Duration
	// cut: the budget ended the run before every mutant was tried.
	cut bool
}

func run(ctx context.Context, root, goBin string, o opts, chosen []target, entries []*entry) (int, error) {
	realGo, err := exec.LookPath(goBin)
	if err != nil {
		return 0, err
	}
	if realGo, err = filepath.Abs(realGo); err != nil {
		return 0, err
	}
	tmp, err := os.MkdirTemp("", "mutate-")
	if err != nil {
		return 0, err
	}
	defer os.RemoveAll(tmp)
	gremlins, err := buildGremlins(ctx, realGo, tmp)
	if err != nil {
		return 0, err
	}
	shimDir, err := makeShim(tmp)
	if err != nil {
		return 0, err
	}
	// An empty configuration file: the flags below are the whole
	// configuration, whatever ~/.gremlins.yaml or /etc/gremlins may say.
	cfg := filepath.Join(tmp, "gremlins.yaml")
	if err := os.WriteFile(cfg, []byte("{}\n"), 0o600); err != nil {
		return 0, err
	}

	var results []result
	for _, t := range chosen {
		if ctx.Err() != nil {
			break
		}
		fmt.Printf("\n=== %s: %s (%s)\n", t.name, t.dir, strings.Join(t.files, ", "))
		r, err := runTarget(ctx, root, realGo, gremlins, shimDir, cfg, tmp, o, t, entries)
		if err != nil {
			return 0, fmt.Errorf("%s: %w", t.name, err)
		}
		results = append(results, r)
		fmt.Printf("--- %s: %s\n", t.name, r.line())
	}
	return report(os.Stdout, results, entries, o.dry), nil
}

// buildGremlins builds the gremlins this module pins (go.mod's tool line).
func buildGremlins(ctx context.Context, realGo, tmp string) (string, error) {
	bin := filepath.Join(tmp, "gremlins")
	cmd := exec.CommandContext(ctx, realGo, "build", "-o", bin, "github.com/go-gremlins/gremlins/cmd/gremlins")
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("building gremlins: %w", err)
	}
	return bin, nil
}

// makeShim puts this program on gremlins's PATH as "go" (see shim).
func makeShim(tmp string) (string, error) {
	self, err := os.Executable()
	if err != nil {
		return "", err
	}
	dir := filepath.Join(tmp, "bin")
	if err := os.Mkdir(dir, 0o700); err != nil {
		return "", err
	}
	return dir, os.Symlink(self, filepath.Join(dir, "go"))
}

func runTarget(ctx context.Context, root, realGo, gremlins, shimDir, cfg, tmp string, o opts, t target, entries []*entry) (result, error) {
	r := result{t: t, counts: map[string]int{}}
	pkgDir := filepath.Join(root, t.dir)
	// The lines as they are now, to name each mutant by its code rather
	// than by a line number that the next edit moves.
	src := map[string]*source{}
	for _, f := range t.files {
		b, err := os.ReadFile(filepath.Join(pkgDir, f))
		if err != nil {
			return r, err
		}
		if bytes.Contains(b, []byte("// Code generated ")) {
			return r, fmt.Errorf("%s is generated: mutate its generator instead", f)
		}
		if src[f], err = readSource(f, b); err != nil {
			return r, err
		}
	}
	exclude, err := excludes(pkgDir, t.files)
	if err != nil {
		return r, err
	}
	out := filepath.Join(tmp, t.name+".json")
	pgids := filepath.Join(tmp, t.name+".pgids")
	args := []string{"unleash", "--config", cfg, "--workers", "1", "--timeout-coefficient", strconv.Itoa(o.coef), "--output", out}
	if o.dry {
		args = append(args, "--dry-run")
	}
	for _, e := range exclude {
		args = append(args, "--exclude-files", e)
	}
	args = append(args, mutators...)
	args = append(args, pkgDir)

	cmd := exec.Command(gremlins, args...)
	cmd.Dir = root
	cmd.Stderr = os.Stderr
	cmd.Env = append(os.Environ(),
		"PATH="+shimDir+string(os.PathListSeparator)+os.Getenv("PATH"),
		"MUTATE_REAL_GO="+realGo,
		"MUTATE_PGIDS="+pgids,
		"NO_COLOR=1",
		// Every run is a real run (a cached coverage run would make the
		// timeout a fraction of a second); vet is not a test, so a mutant
		// it flags is not counted as killed; links without DWARF are faster.
		"GOFLAGS="+strings.TrimSpace(os.Getenv("GOFLAGS")+" -count=1 -vet=off -ldflags=-w"),
	)
	if t.redis {
		cmd.Env = append(cmd.Env, "MCPGUARD_REDIS=1")
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return r, err
	}
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return r, err
	}
	// gremlins stops at an interrupt without writing its report: the
	// mutants are read from its output as they come, so a run the budget
	// or the user cuts short still judges what it tried.
	finished := make(chan struct{})
	cutc := make(chan bool, 1)
	go func() {
		cut := false
		defer func() { cutc <- cut }()
		var timer <-chan time.Time
		if o.budget > 0 {
			timer = time.After(o.budget)
		}
		select {
		case <-timer:
			cut = true
			fmt.Printf("--- %s: budget of %s reached, stopping\n", t.name, o.budget)
		case <-ctx.Done():
		case <-finished:
			return
		}
		_ = cmd.Process.Signal(os.Interrupt)
	}()
	var seen []parsed
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		line := sc.Text()
		fmt.Println(line)
		if m, ok := parseLine(line); ok {
			seen = append(seen, m)
		}
	}
	err = cmd.Wait()
	close(finished)
	r.cut = <-cutc || ctx.Err() != nil
	r.elapsed = time.Since(start)
	killGroups(pgids)
	if err != nil {
		return r, fmt.Errorf("gremlins: %w", err)
	}
	if rep, err := readReport(out); err != nil {
		return r, err
	} else if n := rep.count(); !r.cut && ctx.Err() == nil && n != len(seen) {
		return r, fmt.Errorf("gremlins reported %d mutants, its output named %d: has its output format changed?", n, len(seen))
	}
	for _, m := range seen {
		file, ok := src[m.file]
		if !ok {
			return r, fmt.Errorf("gremlins mutated %s, which is not a target file", m.file)
		}
		r.counts[m.status]++
		mu := mutant{file: filepath.ToSlash(filepath.Join(t.dir, m.file)), fn: file.funcAt(m.line), kind: m.kind, line: m.line, code: marked(file.lines, m.line, m.col)}
		switch m.status {
		case "LIVED":
			if e := match(entries, mu); e != nil {
				e.used = true
				r.equivalent++
			} else {
				r.survivors = append(r.survivors, mu)
			}
		case "TIMED OUT":
			r.timedOut = append(r.timedOut, mu)
		case "NOT COVERED":
			r.notCovered = append(r.notCovered, mu)
		}
	}
	return r, nil
}

// parsed is one line of gremlins's output: "LIVED CONDITIONALS_BOUNDARY at jws.go:41:12".
type parsed struct {
	status, kind, file string
	line, col          int
}

var mutantLine = regexp.MustCompile(`^\s*(KILLED|LIVED|NOT COVERED|TIMED OUT|NOT VIABLE|SKIPPED|RUNNABLE) ([A-Z_]+) at (.+):(\d+):(\d+)$`)

func parseLine(s string) (parsed, bool) {
	m := mutantLine.FindStringSubmatch(s)
	if m == nil {
		return parsed{}, false
	}
	line, _ := strconv.Atoi(m[4])
	col, _ := strconv.Atoi(m[5])
	return parsed{status: m[1], kind: m[2], file: m[3], line: line, col: col}, true
}

// excludes are gremlins's --exclude-files patterns (regexps on paths
// relative to the package) that leave only files to be mutated.
func excludes(pkgDir string, files []string) ([]string, error) {
	des, err := os.ReadDir(pkgDir)
	if err != nil {
		return nil, err
	}
	var others []string
	for _, de := range des {
		n := de.Name()
		if de.IsDir() || !strings.HasSuffix(n, ".go") || strings.HasSuffix(n, "_test.go") || slices.Contains(files, n) {
			continue
		}
		others = append(others, regexp.QuoteMeta(n))
	}
	for _, f := range files {
		if _, err := os.Stat(filepath.Join(pkgDir, f)); err != nil {
			return nil, err
		}
	}
	// Subpackages (test helpers such as authntest) have a "/" in their path.
	out := []string{"/"}
	if len(others) > 0 {
		out = append(out, "^("+strings.Join(others, "|")+")$")
	}
	return out, nil
}

// gremlinsReport is the part of gremlins's --output file read here.
type gremlinsReport struct {
	Files []struct {
		Name      string `json:"file_name"`
		Mutations []struct {
			Type   string `json:"type"`
			Status string `json:"status"`
			Line   int    `json:"line"`
			Column int    `json:"column"`
		} `json:"mutations"`
	} `json:"files"`
}

func (r *gremlinsReport) count() int {
	n := 0
	for _, f := range r.Files {
		n += len(f.Mutations)
	}
	return n
}

func readReport(path string) (*gremlinsReport, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		// gremlins writes nothing when it found no mutant at all.
		return &gremlinsReport{}, nil
	}
	if err != nil {
		return nil, err
	}
	var rep gremlinsReport
	if err := json.Unmarshal(b, &rep); err != nil {
		return nil, fmt.Errorf("reading %s: %w", path, err)
	}
	return &rep, nil
}

// mutant names a mutation by file, kind and code, the mutated operator
// between ⟦ and ⟧.
type mutant struct {
	file, fn, kind string
	line           int
	code           string
}

// source is a target file as it was when its run began.
type source struct {
	lines []string
	funcs []span
}

// span is a top-level declaration's lines and name ("Encrypted.Get").
type span struct {
	from, to int
	name     string
}

func readSource(name string, b []byte) (*source, error) {
	fset := token.NewFileSet()
	f, err := parser.ParseFile(fset, name, b, parser.SkipObjectResolution)
	if err != nil {
		return nil, err
	}
	s := &source{lines: strings.Split(string(b), "\n")}
	for _, d := range f.Decls {
		fd, ok := d.(*ast.FuncDecl)
		if !ok {
			continue
		}
		name := fd.Name.Name
		if fd.Recv != nil && len(fd.Recv.List) == 1 {
			name = receiverName(fd.Recv.List[0].Type) + "." + name
		}
		s.funcs = append(s.funcs, span{fset.Position(fd.Pos()).Line, fset.Position(fd.End()).Line, name})
	}
	return s, nil
}

func receiverName(e ast.Expr) string {
	switch x := e.(type) {
	case *ast.StarExpr:
		return receiverName(x.X)
	case *ast.IndexExpr: // a generic type's receiver, T[E]
		return receiverName(x.X)
	case *ast.IndexListExpr:
		return receiverName(x.X)
	case *ast.Ident:
		return x.Name
	}
	return "?"
}

// funcAt names the function a line is in; "-" outside any.
func (s *source) funcAt(line int) string {
	for _, f := range s.funcs {
		if f.from <= line && line <= f.to {
			return f.name
		}
	}
	return "-"
}

// operators gremlins mutates, longest first.
var operators = []string{
	"continue", "break", "&^=", "<<=", ">>=",
	"&&", "||", "==", "!=", "<=", ">=", "+=", "-=", "*=", "/=", "%=", "&=", "|=", "^=", "&^", "<<", ">>", "++", "--",
	"+", "-", "*", "/", "%", "&", "|", "^", "<", ">",
}

func marked(lines []string, line, col int) string {
	if line < 1 || line > len(lines) {
		return fmt.Sprintf("(line %d)", line)
	}
	s := lines[line-1]
	i := col - 1
	if i < 0 || i > len(s) {
		return normalize(s)
	}
	for _, op := range operators {
		if strings.HasPrefix(s[i:], op) {
			return normalize(s[:i] + "⟦" + op + "⟧" + s[i+len(op):])
		}
	}
	return normalize(s)
}

// normalize trims a line and collapses its runs of spaces and tabs, so that
// gofmt's realignment does not unlist a mutant.
func normalize(s string) string { return strings.Join(strings.Fields(s), " ") }

// entry is one reviewed equivalent mutant of go-allow.txt: file, function,
// mutator and code, then the reason.
//
//	internal/store/encrypted.go Encrypted.Get CONDITIONALS_BOUNDARY if len(sealed) ⟦<⟧ n {
//	    why: the reason, on one or more indented lines
type entry struct {
	file, fn, kind, code, why string
	at                        int // line in go-allow.txt
	used                      bool
}

func (e *entry) String() string { return e.file + " " + e.fn + " " + e.kind + " " + e.code }

func match(entries []*entry, m mutant) *entry {
	for _, e := range entries {
		if e.file == m.file && e.fn == m.fn && e.kind == m.kind && e.code == m.code {
			return e
		}
	}
	return nil
}

func readAllowList(path string) ([]*entry, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var (
		out []*entry
		cur *entry
		n   int
	)
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		n++
		line := sc.Text()
		trimmed := strings.TrimSpace(line)
		switch {
		case trimmed == "" || strings.HasPrefix(trimmed, "#"):
			continue
		case line[0] == ' ' || line[0] == '\t':
			if cur == nil {
				return nil, fmt.Errorf("%s:%d: a reason without an entry", path, n)
			}
			trimmed = strings.TrimPrefix(trimmed, "why:")
			cur.why = strings.TrimSpace(cur.why + " " + strings.TrimSpace(trimmed))
		default:
			fields := strings.Fields(line)
			if len(fields) < 4 {
				return nil, fmt.Errorf("%s:%d: want FILE FUNCTION KIND CODE", path, n)
			}
			cur = &entry{file: fields[0], fn: fields[1], kind: fields[2], code: strings.Join(fields[3:], " "), at: n}
			if !strings.Contains(cur.code, "⟦") {
				return nil, fmt.Errorf("%s:%d: the code does not mark the mutated operator with ⟦ ⟧", path, n)
			}
			out = append(out, cur)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	for _, e := range out {
		if e.why == "" || strings.Contains(e.why, "TODO") {
			return nil, fmt.Errorf("%s:%d: %s has no reason: an entry says why the mutant is equivalent", path, e.at, e)
		}
	}
	return out, nil
}

func (r result) efficacy() float64 {
	k, l := r.counts["KILLED"], r.counts["LIVED"]
	if k+l == 0 {
		return 0
	}
	return 100 * float64(k) / float64(k+l)
}

func (r result) line() string {
	c := r.counts
	return fmt.Sprintf("killed %d, lived %d (%d listed equivalent), not covered %d, timed out %d, not viable %d; efficacy %.1f%%; %s",
		c["KILLED"], c["LIVED"], r.equivalent, c["NOT COVERED"], c["TIMED OUT"], c["NOT VIABLE"], r.efficacy(), r.elapsed.Round(time.Second))
}

// report prints the table and the survivors; its result is the exit code.
func report(w io.Writer, results []result, entries []*entry, dry bool) int {
	fmt.Fprintf(w, "\n| target | files | killed | lived | equivalent | not covered | timed out | not viable | efficacy | time |\n")
	fmt.Fprintf(w, "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n")
	var survivors, timedOut []mutant
	for _, r := range results {
		c := r.counts
		took := r.elapsed.Round(time.Second).String()
		if r.cut {
			took += " (budget: cut short)"
		}
		fmt.Fprintf(w, "| %s | %s | %d | %d | %d | %d | %d | %d | %.1f %% | %s |\n", r.t.name, strings.Join(r.t.files, ", "),
			c["KILLED"], c["LIVED"], r.equivalent, c["NOT COVERED"], c["TIMED OUT"], c["NOT VIABLE"], r.efficacy(), took)
		survivors = append(survivors, r.survivors...)
		timedOut = append(timedOut, r.timedOut...)
	}
	if dry {
		return 0
	}
	for _, r := range results {
		if len(r.notCovered) > 0 {
			fmt.Fprintf(w, "\n%s: not covered (no test of the package runs this code; not judged):\n", r.t.name)
			for _, m := range r.notCovered {
				fmt.Fprintf(w, "  %s:%d %s %s %s\n", m.file, m.line, m.fn, m.kind, m.code)
			}
		}
	}
	if len(timedOut) > 0 {
		fmt.Fprintf(w, "\nTimed out (counted as detected; a loaded machine can also cause this, see docs/TESTING.md):\n")
		for _, m := range timedOut {
			fmt.Fprintf(w, "  %s:%d %s %s %s\n", m.file, m.line, m.fn, m.kind, m.code)
		}
	}
	// Listed entries for the files run this time that no survivor matched:
	// the code changed, or a test now kills the mutant.
	ran := map[string]bool{}
	for _, r := range results {
		if r.cut {
			continue
		}
		for _, f := range r.t.files {
			ran[filepath.ToSlash(filepath.Join(r.t.dir, f))] = true
		}
	}
	var stale []*entry
	for _, e := range entries {
		if ran[e.file] && !e.used {
			stale = append(stale, e)
		}
	}
	if len(stale) > 0 {
		fmt.Fprintf(w, "\nListed as equivalent but no longer surviving (remove them from test/mutate/go-allow.txt):\n")
		for _, e := range stale {
			fmt.Fprintf(w, "  go-allow.txt:%d %s\n", e.at, e)
		}
	}
	if len(survivors) == 0 {
		fmt.Fprintf(w, "\nNo surviving mutant outside test/mutate/go-allow.txt.\n")
		return 0
	}
	fmt.Fprintf(w, "\n%d surviving mutant(s): the tests pass with these changes. Kill each with a test,\n", len(survivors))
	fmt.Fprintf(w, "or, if it cannot change behaviour, add it to test/mutate/go-allow.txt with the reason:\n\n")
	for _, m := range survivors {
		fmt.Fprintf(w, "%s %s %s %s\n    why: (line %d) TODO\n", m.file, m.fn, m.kind, m.code, m.line)
	}
	return 1
}

// shim stands in for the go command under gremlins. It runs the real one
// and changes two things: a mutant that does not compile exits 2, which
// gremlins counts as not viable rather than killed (go test exits 1 for
// both), and every process the run started (a test binary, the
// redis-server a test started) ends with it.
func shim() int {
	realGo := os.Getenv("MUTATE_REAL_GO")
	if realGo == "" {
		fmt.Fprintln(os.Stderr, "mutate: MUTATE_REAL_GO is not set")
		return 2
	}
	cmd := exec.Command(realGo, os.Args[1:]...)
	var out bytes.Buffer
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, &out, &out
	cmd.SysProcAttr = groupAttr()
	if err := cmd.Start(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	// gremlins kills this process when a mutant's run times out: the group
	// is recorded, and the driver ends what is left of it.
	if p := os.Getenv("MUTATE_PGIDS"); p != "" {
		if f, err := os.OpenFile(p, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o600); err == nil {
			fmt.Fprintln(f, cmd.Process.Pid)
			f.Close()
		}
	}
	err := cmd.Wait()
	killGroup(cmd.Process.Pid)
	os.Stdout.Write(out.Bytes())
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		if bytes.Contains(out.Bytes(), []byte("[build failed]")) || bytes.Contains(out.Bytes(), []byte("[setup failed]")) {
			return 2
		}
		return exit.ExitCode()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	if profile := coverProfileArg(os.Args[1:]); profile != "" {
		if err := coverCaseLists(profile); err != nil {
			fmt.Fprintf(os.Stderr, "mutate: %s: %v\n", profile, err)
			return 2
		}
	}
	return 0
}

// killGroups ends the process groups the shims recorded.
func killGroups(path string) {
	b, err := os.ReadFile(path)
	if err != nil {
		return
	}
	for _, f := range strings.Fields(string(b)) {
		if pid, err := strconv.Atoi(f); err == nil && pid > 1 {
			killGroup(pid)
		}
	}
	_ = os.Remove(path)
}
