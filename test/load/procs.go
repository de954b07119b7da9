package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

const (
	buildTimeout = 15 * time.Minute // a cold build of mcpguard (OPA) on a busy 2-core machine
	readyTimeout = time.Minute      // POLICY_STRICT=true lints the shipped policies before listening
)

// binaries are the servers, built by the same toolchain with the same flags:
// mcpguard (which also mints the tokens), the bare SDK server, and with
// tools/list mcpguard serving scaled tools (guardlist).
type binaries struct{ mcpguard, bare, guardlist string }

// moduleRoot is the directory of the main module's go.mod.
func moduleRoot(ctx context.Context, goCmd string) (string, error) {
	out, err := exec.CommandContext(ctx, goCmd, "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return "", errors.New("not inside the mcpguard module: run from the repository or pass -repo")
	}
	return filepath.Dir(gomod), nil
}

func build(ctx context.Context, o *options, dir string) (binaries, error) {
	ctx, cancel := context.WithTimeout(ctx, buildTimeout)
	defer cancel()
	b := binaries{mcpguard: o.mcpguard, bare: filepath.Join(dir, "bare")}
	pkgs := [][2]string{{b.bare, "./test/load/bare"}}
	if b.mcpguard == "" {
		b.mcpguard = filepath.Join(dir, "mcpguard")
		pkgs = append(pkgs, [2]string{b.mcpguard, "./cmd/mcpguard"})
	}
	if o.method == methodList {
		b.guardlist = filepath.Join(dir, "guardlist")
		pkgs = append(pkgs, [2]string{b.guardlist, "./test/load/guardlist"})
	}
	for _, p := range pkgs {
		// make build's flags: what is deployed is what is measured.
		cmd := exec.CommandContext(ctx, o.goCmd, "build", "-trimpath", "-o", p[0], p[1])
		cmd.Dir = o.repo
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			return b, fmt.Errorf("go build %s: %w\n%s", p[1], err, out)
		}
	}
	return b, nil
}

// onStart, when set (by the tests), learns each server process's id.
var onStart func(name string, pid int)

// proc is a server process, in a process group of its own so that killing
// the group leaves nothing behind.
type proc struct {
	name string
	cmd  *exec.Cmd
	out  *tail
	done chan struct{}
}

func startProc(name, bin string, args, env []string, dir string) (*proc, error) {
	cmd := exec.Command(bin, args...)
	cmd.Env, cmd.Dir = env, dir
	out := &tail{max: 16 << 10}
	cmd.Stdout, cmd.Stderr = out, out
	ownGroup(cmd)
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, out: out, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); close(p.done) }()
	if onStart != nil {
		onStart(name, cmd.Process.Pid)
	}
	return p, nil
}

// kill ends the process group and waits (boundedly) for the process.
func (p *proc) kill() {
	killGroup(p.cmd.Process)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
	}
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// waitReady polls url until it answers 200, the process exits or the
// bound passes.
func (p *proc) waitReady(ctx context.Context, url string) error {
	ctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	hc := &http.Client{Timeout: 2 * time.Second}
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if res, err := hc.Do(req); err == nil {
			res.Body.Close()
			if res.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-p.done:
			return fmt.Errorf("%s exited before it was ready (%v):\n%s", p.name, p.cmd.ProcessState, p.out)
		case <-ctx.Done():
			return fmt.Errorf("%s not ready at %s: %w\n%s", p.name, url, ctx.Err(), p.out)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// group is every process a mode started, killed together at its end.
type group struct {
	mu    sync.Mutex
	procs []*proc
}

func (g *group) add(p *proc) {
	g.mu.Lock()
	g.procs = append(g.procs, p)
	g.mu.Unlock()
}

func (g *group) killAll() {
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, p := range g.procs {
		p.kill()
	}
	g.procs = nil
}

// tail keeps the last max bytes a process wrote, for error messages.
type tail struct {
	mu  sync.Mutex
	max int
	buf []byte
}

func (t *tail) Write(b []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, b...)
	if over := len(t.buf) - t.max; over > 0 {
		t.buf = append(t.buf[:0], t.buf[over:]...)
	}
	return len(b), nil
}

func (t *tail) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.buf)
}

// freePorts returns n loopback ports that were free a moment ago. The
// servers are told their ports, so another process could take one first:
// startup then fails and is retried with fresh ports.
func freePorts(n int) ([]string, error) {
	var lns []net.Listener
	defer func() {
		for _, ln := range lns {
			_ = ln.Close()
		}
	}()
	var ports []string
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("picking a loopback port: %w", err)
		}
		lns = append(lns, ln)
		ports = append(ports, strconv.Itoa(ln.Addr().(*net.TCPAddr).Port))
	}
	return ports, nil
}

// portTaken reports whether a failed start lost a race for its port.
func portTaken(err error) bool {
	return err != nil && strings.Contains(err.Error(), "address already in use")
}

// runtimeVars are the Go runtime's tuning, as a server's /metrics reports it.
type runtimeVars struct {
	gogc, memlimit, maxprocs float64
	known                    bool
}

func (r runtimeVars) String() string {
	if !r.known {
		return "unknown (no /metrics)"
	}
	return fmt.Sprintf("GOGC=%s GOMEMLIMIT=%s GOMAXPROCS=%.0f", r.gogcEnv(), r.memlimitEnv(), r.maxprocs)
}

func (r runtimeVars) gogcEnv() string {
	// GOGC=off reads as -1, or as 2^64 where the percent is unsigned.
	if r.gogc < 0 || r.gogc >= math.MaxInt64 {
		return "off"
	}
	return strconv.FormatFloat(r.gogc, 'f', 0, 64)
}

func (r runtimeVars) memlimitEnv() string {
	if r.memlimit >= math.MaxInt64 {
		return "off"
	}
	return strconv.FormatFloat(r.memlimit, 'f', 0, 64)
}

// env is the environment that gives another process the same tuning.
func (r runtimeVars) env() []string {
	return []string{"GOGC=" + r.gogcEnv(), "GOMEMLIMIT=" + r.memlimitEnv(), "GOMAXPROCS=" + strconv.FormatFloat(r.maxprocs, 'f', 0, 64)}
}

// metricsClient scrapes the servers' /metrics between rounds.
var metricsClient = &http.Client{Timeout: 5 * time.Second}

// scrape reads the unlabelled series named in want from a Prometheus text
// exposition.
func scrape(ctx context.Context, url string, want ...string) (map[string]float64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "text/plain")
	res, err := metricsClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("scraping %s: %w", url, err)
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("scraping %s: HTTP %d", url, res.StatusCode)
	}
	return parseMetrics(bufio.NewScanner(res.Body), want)
}

func parseMetrics(sc *bufio.Scanner, want []string) (map[string]float64, error) {
	got := map[string]float64{}
	for sc.Scan() {
		name, value, ok := strings.Cut(sc.Text(), " ")
		if !ok || !slices.Contains(want, name) {
			continue
		}
		v, err := strconv.ParseFloat(strings.TrimSpace(value), 64)
		if err != nil {
			return nil, fmt.Errorf("series %s: %q is not a number", name, value)
		}
		got[name] = v
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	for _, name := range want {
		if _, ok := got[name]; !ok {
			return nil, fmt.Errorf("no series %s", name)
		}
	}
	return got, nil
}

const (
	seriesMallocs  = "go_memstats_mallocs_total"
	seriesGOGC     = "go_gc_gogc_percent"
	seriesMemLimit = "go_gc_gomemlimit_bytes"
	seriesMaxProcs = "go_sched_gomaxprocs_threads"
)

func readRuntime(ctx context.Context, url string) runtimeVars {
	if url == "" {
		return runtimeVars{}
	}
	m, err := scrape(ctx, url, seriesGOGC, seriesMemLimit, seriesMaxProcs)
	if err != nil {
		return runtimeVars{}
	}
	return runtimeVars{gogc: m[seriesGOGC], memlimit: m[seriesMemLimit], maxprocs: m[seriesMaxProcs], known: true}
}

// baseEnv is what every server process starts from: no configuration
// inherited by accident (a stray PORT, AZURE_* or .env), but the Go runtime's
// tuning of this process, which both servers then share, and -env.
func baseEnv(o *options) []string {
	var env []string
	for _, k := range []string{"PATH", "HOME", "TMPDIR", "GOGC", "GOMEMLIMIT", "GOMAXPROCS", "GODEBUG"} {
		if v, ok := os.LookupEnv(k); ok {
			env = append(env, k+"="+v)
		}
	}
	return append(env, o.env...)
}

// mintToken asks mcpguard for a dev token, as a user would (mcpguard token
// --dev), signed by the key the server will trust, for its issuer address.
// The token is never printed.
func mintToken(ctx context.Context, o *options, bin, dir string, devEnv []string, roles string, lifetime time.Duration) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "token", "--dev", "--user", o.user, "--roles", roles, "--lifetime", lifetime.String())
	cmd.Dir = dir
	cmd.Env = append(baseEnv(o), devEnv...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("mcpguard token --dev: %w: %s", err, stderr.String())
	}
	tok := strings.TrimSpace(string(out))
	if strings.Count(tok, ".") != 2 {
		return "", errors.New("mcpguard token --dev printed no token")
	}
	return tok, nil
}
