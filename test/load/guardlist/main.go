// Command guardlist is mcpguard as the load harness's tools/list mode runs it
// (make loadtest LOADTEST_FLAGS='-method tools/list'): `mcpguard serve`,
// through the same path (config.Load from the environment and .env,
// server.Run: the dev identity provider, the policy, the collector's tuning,
// the same listeners), serving N echo tools (policytest.RegisterEchoTools)
// in place of the shipped ones. The production binary keeps no switch for
// this: the catalog a list is filtered from is this test main's.
//
//	guardlist -tools 1000      (settings from the environment, as mcpguard serve reads them)
//
// The harness points POLICY_DIR at the shipped policy Scaled to the same N
// tools (internal/policy/policytest) and ROLES_FILE at its roles.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/mcpguard/mcpguard/internal/config"
	"github.com/mcpguard/mcpguard/internal/policy/policytest"
	"github.com/mcpguard/mcpguard/internal/server"
)

func main() {
	// As mcpguard: SIGTERM and SIGINT end ctx, and the server shuts down.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	context.AfterFunc(ctx, stop)
	err := run(ctx, os.Args[1:])
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "guardlist:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("guardlist", flag.ContinueOnError)
	n := fs.Int("tools", 1000, "echo tools to serve, named as policytest.Scaled names them")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q (settings come from the environment)", fs.Args())
	}
	if *n < 1 {
		return fmt.Errorf("-tools %d: want at least 1", *n)
	}
	cfg, _, err := config.Load(nil)
	if err != nil {
		return err
	}
	return server.Run(ctx, cfg, server.Options{Logger: server.NewLogger(cfg, os.Stderr), Register: policytest.RegisterEchoTools(*n)})
}
