// Command mcpguard is an MCP server whose every request is authenticated by
// Microsoft Entra ID and decided by Rego policies on an embedded OPA engine.
//
//	mcpguard [serve] [--port 8000 ...]   run the server (flags mirror the env names)
//	mcpguard token --dev --user alice     print a token from the embedded dev identity provider
//	mcpguard keys generate                print fresh JWT_SIGNING_KEY and STORAGE_ENCRYPTION_KEY
//	mcpguard policy test|eval|input|catalog|lint   the policy authoring loop
//	mcpguard help [command]               usage; --help works on every command
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"

	"github.com/mcpguard/mcpguard/internal/config"
	"github.com/mcpguard/mcpguard/internal/server"
)

func main() {
	// SIGTERM and SIGINT end ctx: serve then shuts down gracefully and exits 0.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	// A second signal during the shutdown ends the process at once.
	context.AfterFunc(ctx, stop)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		var ee exitError
		var ue *usageError
		switch {
		case errors.As(err, &ee):
			// The command has said what went wrong; only the status is left.
		case errors.As(err, &ue):
			fmt.Fprintf(os.Stderr, "mcpguard: %s\n\n%s", ue.msg, ue.usage)
		default:
			fmt.Fprintln(os.Stderr, "mcpguard:", err)
		}
		os.Exit(exitCode(err))
	}
}

// exitError ends the process with a status, after the command reported why.
type exitError int

func (e exitError) Error() string { return fmt.Sprintf("exit status %d", int(e)) }

// run dispatches a command line. A command asked for help prints it and
// does nothing else: `mcpguard --help` never starts the server.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	err := dispatch(ctx, args, stdout, stderr)
	if errors.Is(err, errHelp) {
		return nil
	}
	return err
}

func dispatch(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cmd := "serve"
	// Flags alone (mcpguard --port 8000) are the server's.
	if len(args) > 0 && (!strings.HasPrefix(args[0], "-") || isHelp(args[0])) {
		cmd, args = args[0], args[1:]
	}
	switch cmd {
	case "serve":
		if wantsHelp(args) {
			fmt.Fprint(stdout, serveUsage)
			return nil
		}
		return serve(ctx, args, stderr)
	case "token":
		return token(args, stdout)
	case "keys":
		return keys(args, stdout)
	case "policy":
		return policyCmd(ctx, args, stdout, stderr)
	case "version":
		if wantsHelp(args) {
			fmt.Fprintln(stdout, "usage: mcpguard version")
			return nil
		}
		if len(args) > 0 {
			return &usageError{msg: fmt.Sprintf("version: unexpected argument %q", args[0]), usage: "usage: mcpguard version\n"}
		}
		fmt.Fprintln(stdout, "mcpguard", server.Version)
		return nil
	case "help", "-h", "-help", "--help":
		if len(args) == 0 || wantsHelp(args) {
			fmt.Fprint(stdout, usage)
			return nil
		}
		// help policy test is policy test --help.
		return dispatch(ctx, append(slices.Clone(args), "--help"), stdout, stderr)
	}
	return &usageError{msg: fmt.Sprintf("unknown command %q", cmd), usage: usage}
}

// serve reads the configuration (environment, .env, flags) and runs the
// server until ctx ends, then shuts it down (see server.Run).
func serve(ctx context.Context, args []string, stderr io.Writer) error {
	cfg, rest, err := config.Load(args)
	if len(rest) > 0 {
		return &usageError{msg: fmt.Sprintf("serve: unexpected arguments %q (settings are --name value flags)", rest), usage: serveUsage}
	}
	if errors.Is(err, config.ErrUnknownFlag) {
		return &usageError{msg: "serve: " + err.Error(), usage: serveUsage}
	}
	if err != nil {
		return err
	}
	return server.Run(ctx, cfg, server.Options{Logger: server.NewLogger(cfg, stderr)})
}
