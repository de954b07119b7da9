// Command load is mcpguard's out-of-process load harness (make loadtest). It
// builds mcpguard (./cmd/mcpguard) and a bare Go SDK server serving the same
// tool (./test/load/bare), starts each as its own process on loopback, and
// from this process drives both with concurrent clients doing
// `tools/call read_critical_data`, in interleaved rounds (bare, guarded,
// bare, guarded …), stateful and stateless. It prints each server's
// throughput, p50 and p99 latency and allocations per call, and the ratios
// guarded ÷ bare.
//
// With -method tools/list it measures lists instead: both servers serve N
// echo tools (-tools, 1,000 by default), mcpguard through test/load/guardlist
// (`mcpguard serve` with those tools registered) with the shipped policy
// scaled to them (internal/policy/policytest), and two callers are measured
// on it: "guarded", whose roles allow a few of the tools (50 of 1,000 by
// default), and "guarded-all", who holds every role and is shown all N. Every
// answer's count of tools is checked.
//
// mcpguard runs as a user would run it: Entra authentication on, against the
// embedded development identity provider (DEV_IDP=true), the shipped
// policies, a token minted once by `mcpguard token --dev` for a caller whose
// roles allow the tool, and reused for every call (so the verifier's cache
// answers, as it does for a real client).
//
// It measures nothing by itself: run it on a quiet machine (docs/PERFORMANCE.md).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"
)

func main() {
	// Ctrl-C ends the run; the servers are killed on the way out.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "load:", err)
		os.Exit(1)
	}
}

// Bounds on the flags: every run ends in a time known from its flags.
const (
	maxClients  = 32 // mcpguard's MAX_SESSIONS_PER_USER default: one caller, one session per client
	maxRounds   = 50
	maxDuration = 30 * time.Second
	maxWarmup   = 30 * time.Second
	// maxTools keeps a list on one page: mcpguard's LIST_PAGE_SIZE and the
	// SDK's page size are both 1,000 by default.
	maxTools = 1000
)

const (
	methodCall = "tools/call"
	methodList = "tools/list"
	// scaledRoles is the roles the scaled catalog cycles through, as in
	// the in-process BenchmarkToolsList.
	scaledRoles = 50
)

// defaultListRoles are BenchmarkToolsList's realistic caller: allowed 50 of
// 1,000 scaled tools.
const defaultListRoles = "role_00,role_13,role_27,api.role_03"

// options are the harness's flags.
type options struct {
	clients  int
	rounds   int
	duration time.Duration
	warmup   time.Duration
	modes    []string
	client   string // raw or sdk
	method   string // tools/call or tools/list
	tools    int    // tools served in tools/list mode
	env      []string
	guardEnv []string
	mcpguard string // a prebuilt binary; built from the repository when empty
	repo     string
	goCmd    string
	user     string
	roles    string
	// maxErrors is how many calls may fail on one server before the run
	// does: a guarded server that refuses calls under load must be seen.
	maxErrors int
	// cpuprofile is a directory for each server's CPU profile of its last
	// round per mode; "" takes none.
	cpuprofile string
	progress   io.Writer // what the harness is doing, while it builds and starts
}

// listFlag is a repeatable KEY=VALUE flag.
type listFlag []string

func (l *listFlag) String() string { return strings.Join(*l, " ") }
func (l *listFlag) Set(v string) error {
	if k, _, ok := strings.Cut(v, "="); !ok || k == "" {
		return fmt.Errorf("%q is not KEY=VALUE", v)
	}
	*l = append(*l, v)
	return nil
}

func parseOptions(args []string, stderr io.Writer) (*options, error) {
	o := &options{}
	var modes string
	var env, guardEnv listFlag
	fs := flag.NewFlagSet("load", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.IntVar(&o.clients, "clients", 4, fmt.Sprintf("concurrent clients per server, each with its own connection and session (1–%d)", maxClients))
	fs.IntVar(&o.rounds, "rounds", 6, fmt.Sprintf("measured rounds per server and mode (1–%d)", maxRounds))
	fs.DurationVar(&o.duration, "duration", 5*time.Second, fmt.Sprintf("length of one round on one server (100ms–%s)", maxDuration))
	fs.DurationVar(&o.warmup, "warmup", 2*time.Second, fmt.Sprintf("unmeasured load on each server before the rounds (0–%s)", maxWarmup))
	fs.StringVar(&modes, "modes", "stateful,stateless", "comma-separated: stateful (sessions, SSE answers), stateless (STATELESS=true, JSON answers)")
	fs.StringVar(&o.client, "client", "raw", "raw: replay the Go SDK client's own request over plain HTTP; sdk: call through the Go SDK client")
	fs.StringVar(&o.method, "method", methodCall, "tools/call: call read_critical_data; tools/list: list -tools echo tools, filtered by the scaled shipped policy")
	fs.IntVar(&o.tools, "tools", maxTools, fmt.Sprintf("with -method tools/list: the tools both servers serve (1–%d)", maxTools))
	fs.Var(&env, "env", "KEY=VALUE for both servers' environment, e.g. GOGC=200 (repeatable)")
	fs.Var(&guardEnv, "guard-env", "KEY=VALUE for mcpguard's environment only, e.g. DECISION_REUSE=false (repeatable)")
	fs.StringVar(&o.mcpguard, "mcpguard", "", "a prebuilt mcpguard binary (default: go build ./cmd/mcpguard); with tools/list it only mints the tokens, and test/load/guardlist is built to serve")
	fs.StringVar(&o.repo, "repo", "", "the repository root (default: the main module of the working directory)")
	fs.StringVar(&o.goCmd, "go", "go", "the go command that builds the servers")
	fs.StringVar(&o.user, "user", "loadtest", "the dev identity provider user the token is minted for")
	fs.StringVar(&o.roles, "roles", "", "the token's app roles (comma-separated); with tools/call they must allow read_critical_data (default data_reader); with tools/list, roles of the scaled catalog (default "+defaultListRoles+": 50 of 1,000 tools)")
	fs.IntVar(&o.maxErrors, "max-errors", 0, "calls that may fail on one server (warm-up included) before the run fails; failed calls are counted, not measured")
	fs.StringVar(&o.cpuprofile, "cpuprofile", "", "a directory: each server's CPU profile over its last round, per mode (<server>-<mode>.pprof; mcpguard runs with PPROF=true)")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	o.env, o.guardEnv = env, guardEnv
	toolsSet := false
	fs.Visit(func(f *flag.Flag) { toolsSet = toolsSet || f.Name == "tools" })
	switch {
	case o.method != methodCall && o.method != methodList:
		return nil, fmt.Errorf("-method %q: want %s or %s", o.method, methodCall, methodList)
	case toolsSet && o.method != methodList:
		return nil, fmt.Errorf("-tools is for -method %s", methodList)
	case o.tools < 1 || o.tools > maxTools:
		return nil, fmt.Errorf("-tools %d: want 1 to %d", o.tools, maxTools)
	case o.clients < 1 || o.clients > maxClients:
		return nil, fmt.Errorf("-clients %d: want 1 to %d", o.clients, maxClients)
	case o.rounds < 1 || o.rounds > maxRounds:
		return nil, fmt.Errorf("-rounds %d: want 1 to %d", o.rounds, maxRounds)
	case o.duration < 100*time.Millisecond || o.duration > maxDuration:
		return nil, fmt.Errorf("-duration %s: want 100ms to %s", o.duration, maxDuration)
	case o.warmup < 0 || o.warmup > maxWarmup:
		return nil, fmt.Errorf("-warmup %s: want 0 to %s", o.warmup, maxWarmup)
	case o.maxErrors < 0:
		return nil, fmt.Errorf("-max-errors %d: want 0 or more", o.maxErrors)
	case o.client != "raw" && o.client != "sdk":
		return nil, fmt.Errorf("-client %q: want raw or sdk", o.client)
	}
	for _, m := range strings.Split(modes, ",") {
		switch m = strings.TrimSpace(m); m {
		case "stateful", "stateless":
			o.modes = append(o.modes, m)
		case "":
		default:
			return nil, fmt.Errorf("-modes: %q is neither stateful nor stateless", m)
		}
	}
	if len(o.modes) == 0 {
		return nil, errors.New("-modes: name stateful, stateless or both")
	}
	if o.roles == "" {
		o.roles = "data_reader"
		if o.method == methodList {
			o.roles = defaultListRoles
		}
	}
	return o, nil
}

// budget bounds a whole run: the builds, then per mode the start of up to
// three servers and the rounds of their targets (four with tools/list), with
// room for a slow machine.
func (o *options) budget() time.Duration {
	targets := time.Duration(3)
	if o.method == methodList {
		targets = 4
	}
	perMode := 3*time.Minute + targets*(o.warmup+time.Duration(o.rounds)*o.duration)*3/2
	return buildTimeout + time.Duration(len(o.modes))*perMode
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	o, err := parseOptions(args, stderr)
	if err != nil {
		return err
	}
	o.progress = stderr
	_, err = harness(ctx, o, stdout)
	return err
}
