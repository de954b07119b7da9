package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/mcpguard/mcpguard/internal/policy/policytest"
)

// target is one server under load, as one caller, and the clients driving it.
type target struct {
	name    string
	url     string // the MCP endpoint
	metrics string // its /metrics, "" when it has none
	token   string // "" for the bare servers
	guarded bool   // mcpguard: its figures are divided by the others'
	rt      runtimeVars
	proc    *proc
	clients []caller
	hists   []*hist // one per client, summed at the end

	wantTools  int     // tools each tools/list answer must hold
	scrapeCost float64 // allocations one /metrics scrape itself makes
	allocsOK   bool
	allocs     float64 // over the measured rounds, scrapes subtracted
	ops        int64
	elapsed    time.Duration
	rates      []float64 // calls/s of each measured round
	failed     int64     // calls that failed, warm-up included
	firstErr   error
}

// modeResult is what one mode measured.
type modeResult struct {
	mode    string
	targets []*target
}

func (r *modeResult) target(name string) *target {
	for _, t := range r.targets {
		if t.name == name {
			return t
		}
	}
	return nil
}

func harness(ctx context.Context, o *options, stdout io.Writer) ([]*modeResult, error) {
	ctx, cancel := context.WithTimeout(ctx, o.budget())
	defer cancel()
	if o.progress == nil {
		o.progress = io.Discard
	}
	if o.repo == "" {
		root, err := moduleRoot(ctx, o.goCmd)
		if err != nil {
			return nil, err
		}
		o.repo = root
	}
	if o.cpuprofile != "" {
		if err := os.MkdirAll(o.cpuprofile, 0o755); err != nil {
			return nil, err
		}
	}
	repo, err := filepath.Abs(o.repo)
	if err != nil {
		return nil, err
	}
	o.repo = repo
	work, err := os.MkdirTemp("", "mcpguard-load-*")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(work)
	fmt.Fprintln(o.progress, "load: building mcpguard and the bare server")
	bins, err := build(ctx, o, work)
	if err != nil {
		return nil, err
	}
	if o.method == methodList {
		if err := writeScaled(o, work); err != nil {
			return nil, err
		}
	}
	printHeader(stdout, o)
	var results []*modeResult
	for _, mode := range o.modes {
		fmt.Fprintf(o.progress, "load: %s: starting the servers, then %s of load per server\n", mode, o.warmup+time.Duration(o.rounds)*o.duration)
		res, err := runMode(ctx, o, bins, work, mode)
		if err != nil {
			return results, fmt.Errorf("%s: %w", mode, err)
		}
		printMode(stdout, res)
		results = append(results, res)
	}
	for _, res := range results {
		for _, t := range res.targets {
			if t.failed > int64(o.maxErrors) {
				return results, fmt.Errorf("%s: %s: %d calls failed (more than -max-errors %d), the first: %w", res.mode, t.name, t.failed, o.maxErrors, t.firstErr)
			}
		}
	}
	return results, nil
}

// runMode starts the servers of one mode, drives them and kills them, also
// when anything fails on the way.
func runMode(ctx context.Context, o *options, bins binaries, work, mode string) (*modeResult, error) {
	stateless := mode == "stateless"
	procs := &group{}
	defer procs.killAll()

	bare, err := startBare(ctx, o, procs, bins.bare, work, "bare", stateless, nil)
	if err != nil {
		return nil, err
	}
	guards, err := startGuarded(ctx, o, procs, bins, work, stateless)
	if err != nil {
		return nil, err
	}
	targets := append([]*target{bare}, guards...)
	// If mcpguard tunes the Go runtime for itself, the comparison is also
	// made against the bare SDK with the same tuning.
	if guarded := guards[0]; guarded.rt.known && bare.rt.known && guarded.rt != bare.rt {
		tuned, err := startBare(ctx, o, procs, bins.bare, work, "bare-tuned", stateless, guarded.rt.env())
		if err != nil {
			return nil, err
		}
		targets = append(targets, tuned)
	}
	for _, t := range targets {
		defer t.closeClients()
		for range o.clients {
			c, err := openClient(ctx, t, o.client, o.method)
			if err != nil {
				return nil, err
			}
			t.clients = append(t.clients, c)
			t.hists = append(t.hists, new(hist))
		}
	}
	if o.warmup > 0 {
		for _, t := range targets {
			if _, _, err := t.round(ctx, o.warmup); err != nil {
				return nil, fmt.Errorf("%s: warm-up: %w", t.name, err)
			}
			for _, h := range t.hists {
				*h = hist{}
			}
		}
	}
	for _, t := range targets {
		t.calibrateScrape(ctx)
	}
	// Interleaved: bare, guarded[, bare-tuned], bare, guarded … so that a
	// change in the machine's speed during the run falls on all alike.
	for r := range o.rounds {
		for _, t := range targets {
			before, okBefore := t.mallocs(ctx)
			var profiled chan error
			if o.cpuprofile != "" && r == o.rounds-1 {
				profiled = make(chan error, 1)
				go func() { profiled <- t.profile(ctx, o, mode) }()
			}
			ops, elapsed, err := t.round(ctx, o.duration)
			if err != nil {
				return nil, fmt.Errorf("%s: round %d: %w", t.name, r+1, err)
			}
			if profiled != nil {
				if err := <-profiled; err != nil {
					return nil, fmt.Errorf("%s: CPU profile: %w", t.name, err)
				}
			}
			after, okAfter := t.mallocs(ctx)
			t.ops += ops
			t.elapsed += elapsed
			t.rates = append(t.rates, float64(ops)/elapsed.Seconds())
			if okBefore && okAfter {
				t.allocs += after - before - t.scrapeCost
			} else {
				t.allocsOK = false
			}
		}
	}
	return &modeResult{mode: mode, targets: targets}, nil
}

func (t *target) closeClients() {
	var wg sync.WaitGroup
	for _, c := range t.clients {
		wg.Go(c.close)
	}
	wg.Wait()
}

// round drives t with every client for d and returns the calls answered
// and the time until the last one was. A failed call is counted on t and
// is no part of the figures; the client goes on.
func (t *target) round(ctx context.Context, d time.Duration) (int64, time.Duration, error) {
	counts := make([]int64, len(t.clients))
	failed := make([]int64, len(t.clients))
	errs := make([]error, len(t.clients))
	start := time.Now()
	deadline := start.Add(d)
	var wg sync.WaitGroup
	for i, c := range t.clients {
		h := t.hists[i]
		wg.Go(func() {
			for ctx.Err() == nil {
				t0 := time.Now()
				if !t0.Before(deadline) {
					return
				}
				if err := c.call(ctx); err != nil {
					failed[i]++
					if errs[i] == nil {
						errs[i] = err
					}
					continue
				}
				h.add(time.Since(t0))
				counts[i]++
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	if err := ctx.Err(); err != nil {
		return 0, 0, err
	}
	var ops int64
	for i := range counts {
		ops += counts[i]
		t.failed += failed[i]
		if t.firstErr == nil {
			t.firstErr = errs[i]
		}
	}
	return ops, elapsed, nil
}

// profile writes t's CPU profile over most of a round (whole seconds, at
// least one) to o.cpuprofile: the profile runs while the round does.
func (t *target) profile(ctx context.Context, o *options, mode string) error {
	if t.metrics == "" {
		return errors.New("the server has no metrics listener")
	}
	secs := max(1, int(o.duration/time.Second))
	u := strings.TrimSuffix(t.metrics, "/metrics") + "/debug/pprof/profile?seconds=" + strconv.Itoa(secs)
	ctx, cancel := context.WithTimeout(ctx, time.Duration(secs)*time.Second+30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", u, resp.Status)
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(o.cpuprofile, t.name+"-"+mode+".pprof"), b, 0o644)
}

// mallocs is the server's count of heap allocations so far.
func (t *target) mallocs(ctx context.Context) (float64, bool) {
	if t.metrics == "" {
		return 0, false
	}
	m, err := scrape(ctx, t.metrics, seriesMallocs)
	if err != nil {
		return 0, false
	}
	return m[seriesMallocs], true
}

// calibrateScrape measures what serving one scrape allocates (the least of
// a few back-to-back scrapes), to take it out of each round's count.
func (t *target) calibrateScrape(ctx context.Context) {
	prev, ok := t.mallocs(ctx)
	if !ok {
		return
	}
	best := -1.0
	for range 3 {
		cur, ok := t.mallocs(ctx)
		if !ok {
			return
		}
		if d := cur - prev; best < 0 || d < best {
			best = d
		}
		prev = cur
	}
	t.scrapeCost, t.allocsOK = best, true
}

// startBare starts the bare SDK server, retrying with fresh ports if one
// was taken meanwhile.
func startBare(ctx context.Context, o *options, procs *group, bin, work, name string, stateless bool, tuning []string) (*target, error) {
	var err error
	for range 3 {
		var ports []string
		if ports, err = freePorts(2); err != nil {
			return nil, err
		}
		addr, maddr := "127.0.0.1:"+ports[0], "127.0.0.1:"+ports[1]
		env := append(baseEnv(o), tuning...)
		args := []string{"-addr", addr, "-metrics-addr", maddr, "-stateless=" + strconv.FormatBool(stateless), "-read-by", o.user + "@dev.mcpguard.test"}
		if o.method == methodList {
			args = append(args, "-tools", strconv.Itoa(o.tools))
		}
		var p *proc
		if p, err = startProc(name, bin, args, env, work); err != nil {
			return nil, err
		}
		procs.add(p)
		if err = p.waitReady(ctx, "http://"+addr+"/healthz"); err == nil {
			t := &target{name: name, url: "http://" + addr + "/mcp", metrics: "http://" + maddr + "/metrics", proc: p, wantTools: o.tools}
			t.rt = readRuntime(ctx, t.metrics)
			return t, nil
		}
		p.kill()
		if !portTaken(err) {
			break
		}
	}
	return nil, err
}

// startGuarded starts mcpguard as `make run` does, minus the OAuth façade
// (callers bring an Entra token): development environment, the embedded
// identity provider on a port of its own, the shipped policies, the dev
// roles file. POLICY_STRICT=true has the policy lint done before it
// listens, so no start-up work overlaps the rounds. With tools/list it is
// guardlist, serving the scaled tools with the scaled policy and its roles
// file, and the process is two targets: the -roles caller ("guarded") and
// one holding every role ("guarded-all").
func startGuarded(ctx context.Context, o *options, procs *group, bins binaries, work string, stateless bool) ([]*target, error) {
	bin, args := bins.mcpguard, []string{"serve"}
	policyDir, rolesEnv := filepath.Join(o.repo, "policies"), []string(nil)
	if o.method == methodList {
		bin, args = bins.guardlist, []string{"-tools", strconv.Itoa(o.tools)}
		policyDir, rolesEnv = filepath.Join(work, scaledDir), []string{"ROLES_FILE=" + filepath.Join(work, scaledRolesFile)}
	}
	// Every call of a run falls within the token's life.
	lifetime := o.budget() + 10*time.Minute
	var err error
	for range 3 {
		var ports []string
		if ports, err = freePorts(3); err != nil {
			return nil, err
		}
		addr, idp, maddr := "127.0.0.1:"+ports[0], "127.0.0.1:"+ports[1], "127.0.0.1:"+ports[2]
		// The token names its issuer by address, and is signed by the key
		// the server then loads: both read these.
		devEnv := []string{
			"ENV_FILE=" + filepath.Join(work, "none.env"),
			"DEV_IDP_ADDR=" + idp,
			"DEV_IDP_KEY_FILE=" + filepath.Join(work, "dev-idp-key.pem"),
		}
		var token, tokenAll string
		if token, err = mintToken(ctx, o, bins.mcpguard, work, devEnv, o.roles, lifetime); err != nil {
			return nil, err
		}
		if o.method == methodList {
			all := strings.Join(policytest.AllRoles(scaledRoles), ",")
			if tokenAll, err = mintToken(ctx, o, bins.mcpguard, work, devEnv, all, lifetime); err != nil {
				return nil, err
			}
		}
		env := append(baseEnv(o), devEnv...)
		env = append(env,
			"ENVIRONMENT=development", "DEV_IDP=true", "HOST=127.0.0.1", "PORT="+ports[0],
			"METRICS_ADDR="+maddr, "POLICY_DIR="+policyDir, "POLICY_STRICT=true",
			"LOG_LEVEL=error", "LOG_FORMAT=text", "STATELESS="+strconv.FormatBool(stateless))
		env = append(env, rolesEnv...)
		if o.cpuprofile != "" {
			env = append(env, "PPROF=true")
		}
		env = append(env, o.guardEnv...) // last: a duplicate key takes the last value
		var p *proc
		if p, err = startProc("mcpguard", bin, args, env, work); err != nil {
			return nil, err
		}
		procs.add(p)
		if err = p.waitReady(ctx, "http://"+addr+"/healthz"); err == nil {
			t := &target{name: "guarded", url: "http://" + addr + "/mcp", metrics: "http://" + maddr + "/metrics", token: token, proc: p, guarded: true,
				wantTools: o.allowedTools()}
			t.rt = readRuntime(ctx, t.metrics)
			if !t.rt.known {
				t.metrics = "" // METRICS_ADDR=off in -guard-env
			}
			if o.method != methodList {
				return []*target{t}, nil
			}
			all := *t
			all.name, all.token, all.wantTools = "guarded-all", tokenAll, o.tools
			return []*target{t, &all}, nil
		}
		p.kill()
		if !portTaken(err) {
			break
		}
	}
	return nil, err
}

// allowedTools is how many of the scaled tools the -roles caller is
// allowed, the roles read as mcpguard token --dev reads them.
func (o *options) allowedTools() int {
	var roles []string
	for r := range strings.SplitSeq(o.roles, ",") {
		if r = strings.TrimSpace(r); r != "" {
			roles = append(roles, r)
		}
	}
	return policytest.Allowed(o.tools, scaledRoles, roles)
}

// The scaled policy folder and its roles file, in the run's work directory.
const (
	scaledDir       = "policies-scaled"
	scaledRolesFile = "roles-scaled.json"
)

// writeScaled writes the shipped policies with their catalog scaled to
// o.tools tools over scaledRoles roles, and the roles file mapping the
// tokens' app roles to them, as BenchmarkToolsList does. The catalog's
// resource and prompt rows are dropped: guardlist serves tools only, and
// POLICY_STRICT=true refuses rows naming nothing served, or roles the
// roles file lacks.
func writeScaled(o *options, work string) error {
	dir := filepath.Join(work, scaledDir)
	if err := os.Mkdir(dir, 0o700); err != nil {
		return err
	}
	if err := policytest.Scaled(filepath.Join(o.repo, "policies"), dir, o.tools, scaledRoles); err != nil {
		return fmt.Errorf("scaling the policies to %d tools: %w", o.tools, err)
	}
	if err := toolsOnly(filepath.Join(dir, "data.json")); err != nil {
		return fmt.Errorf("scaled catalog: %w", err)
	}
	roles, err := policytest.Roles(scaledRoles)
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(work, scaledRolesFile), roles, 0o600)
}

// toolsOnly empties the catalog's sections other than tools in a data.json.
func toolsOnly(path string) error {
	raw, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	var data struct {
		MCP struct {
			Catalog map[string]json.RawMessage `json:"catalog"`
		} `json:"mcp"`
	}
	if err := json.Unmarshal(raw, &data); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	if data.MCP.Catalog["tools"] == nil {
		return fmt.Errorf("%s: no mcp.catalog.tools", path)
	}
	for k := range data.MCP.Catalog {
		if k != "tools" {
			data.MCP.Catalog[k] = json.RawMessage("{}")
		}
	}
	out, err := json.Marshal(data)
	if err != nil {
		return err
	}
	return os.WriteFile(path, out, 0o600)
}

// sdkVersion is the Go SDK this harness (and both servers) were built with.
func sdkVersion() string {
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, d := range bi.Deps {
			if d.Path == "github.com/modelcontextprotocol/go-sdk" {
				return d.Version
			}
		}
	}
	return "unknown"
}

func gitCommit(repo string) string {
	out, err := exec.Command("git", "-C", repo, "rev-parse", "--short", "HEAD").Output()
	if err != nil {
		return "unknown"
	}
	c := strings.TrimSpace(string(out))
	if st, err := exec.Command("git", "-C", repo, "status", "--porcelain", "--untracked-files=no").Output(); err == nil && len(st) > 0 {
		c += "+changes"
	}
	return c
}

func printHeader(w io.Writer, o *options) {
	fmt.Fprintf(w, "# make loadtest, %s, commit %s, %s, %d cores, go-sdk %s\n",
		time.Now().UTC().Format(time.RFC3339), gitCommit(o.repo), runtime.Version(), runtime.NumCPU(), sdkVersion())
	what := "tools/call " + toolName
	if o.method == methodList {
		what = fmt.Sprintf("tools/list of %d tools (guarded: roles %s, shown %d; guarded-all: every role, shown %d)",
			o.tools, o.roles, o.allowedTools(), o.tools)
	}
	fmt.Fprintf(w, "# %d clients (%s), %s, %d rounds × %s per server after %s warm-up, interleaved\n",
		o.clients, o.client, what, o.rounds, o.duration, o.warmup)
	if len(o.env) > 0 {
		fmt.Fprintf(w, "# both servers: %s\n", strings.Join(o.env, " "))
	}
	if len(o.guardEnv) > 0 {
		fmt.Fprintf(w, "# mcpguard only: %s\n", strings.Join(o.guardEnv, " "))
	}
}
