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
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/mcpguard/mcpguard/internal/config"
	"github.com/mcpguard/mcpguard/internal/devidp"
	"github.com/mcpguard/mcpguard/internal/gctune"
	"github.com/mcpguard/mcpguard/internal/oauthproxy"
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

func newLogger(cfg *config.Config, w io.Writer) *slog.Logger {
	var level slog.Level
	switch cfg.LogLevel {
	case "debug":
		level = slog.LevelDebug
	case "warn", "warning":
		level = slog.LevelWarn
	case "error":
		level = slog.LevelError
	}
	opts := &slog.HandlerOptions{Level: level}
	if cfg.LogFormat == "text" {
		return slog.New(slog.NewTextHandler(w, opts))
	}
	return slog.New(slog.NewJSONHandler(w, opts))
}

// serve runs the server until ctx ends, then shuts it down (see Server.Serve).
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
	logger := newLogger(cfg, stderr)

	if cfg.Dev.Enabled {
		shutdown, err := startDevIDP(cfg, logger)
		if err != nil {
			return err
		}
		defer shutdown()
	}

	srv, err := server.New(ctx, cfg, server.Options{Logger: logger})
	if err != nil {
		return err
	}
	defer closeServer(srv, logger)
	stopPolicyOps, err := startPolicyOps(ctx, srv.Engine(), cfg, logger)
	if err != nil {
		return err
	}
	defer stopPolicyOps()
	// The policy is compiled and the tools registered: the live heap the
	// collector's headroom is set from.
	gctune.Start(ctx, cfg.GCHeadroom)
	if cfg.Transport == config.TransportStdio {
		logger.Info("serving MCP on stdio", "policy_dir", cfg.PolicyDir, "auth", cfg.EnableAuth)
		if err := srv.RunStdio(ctx); err != nil && (ctx.Err() == nil || !errors.Is(err, context.Canceled)) {
			return err
		}
		return nil
	}
	ln, err := net.Listen("tcp", cfg.Addr())
	if err != nil {
		return err
	}
	var mln net.Listener
	metricsAddr := "off"
	if cfg.MetricsAddr != "" {
		if mln, err = net.Listen("tcp", cfg.MetricsAddr); err != nil {
			_ = ln.Close()
			return fmt.Errorf("METRICS_ADDR: %w", err)
		}
		metricsAddr = mln.Addr().String()
	}
	logger.Info("mcpguard listening", "addr", ln.Addr().String(), "endpoint", cfg.ResourceURL(), "transport", cfg.Transport,
		"stateless", cfg.Stateless, "auth", cfg.EnableAuth, "role_source", cfg.RoleSource, "policy_dir", cfg.PolicyDir, "dev_idp", cfg.Dev.Enabled,
		"oauth_proxy", cfg.OAuthProxy.Enabled, "metrics", metricsAddr, "traces", tracesTo(cfg))
	if err := srv.Serve(ctx, ln, mln); err != nil {
		return err
	}
	logger.Info("stopped")
	return nil
}

// tracesTo says where spans go: the OTLP endpoint (it holds no credential:
// config refuses one), or off.
func tracesTo(cfg *config.Config) string {
	if cfg.Tracing.Endpoint == "" {
		return "off"
	}
	return cfg.Tracing.Endpoint
}

// closeServer sends the traces still batched and closes what the server
// opened, within a bound of its own: the shutdown may have spent
// SHUTDOWN_TIMEOUT already.
func closeServer(srv *server.Server, logger *slog.Logger) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Close(ctx); err != nil {
		logger.Warn("closing the server", "error", err)
	}
}

// startDevIDP serves the embedded Entra-shaped issuer on its loopback address.
func startDevIDP(cfg *config.Config, logger *slog.Logger) (func(), error) {
	key, err := devidp.LoadOrCreateKey(cfg.Dev.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("DEV_IDP_KEY_FILE: %w", err)
	}
	iss, err := devidp.New(cfg.Azure.AuthorityHost, cfg.Azure.TenantID, key)
	if err != nil {
		return nil, err
	}
	if cfg.OAuthProxy.Enabled {
		// The OAuth proxy signs users in here as it would at Entra: as the
		// API application, with its secret, back to its callback; the users
		// are the development roles file's.
		iss.RegisterClient(devidp.Client{ID: cfg.Azure.ClientID, Secret: cfg.Azure.ClientSecret,
			RedirectURIs: []string{cfg.Azure.BaseURL + oauthproxy.PathCallback}, AppIDURI: cfg.Azure.AppIDURI})
		for _, name := range []string{"alice", "bob"} {
			iss.AddUser(devidp.User{Name: name})
		}
	}
	ln, err := net.Listen("tcp", cfg.Dev.Addr)
	if err != nil {
		return nil, fmt.Errorf("DEV_IDP_ADDR: %w", err)
	}
	hs := &http.Server{Handler: iss.Handler(), ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = hs.Serve(ln) }()
	logger.Warn("development identity provider running: never use in production",
		"issuer", iss.IssuerURL(cfg.Azure.TenantID), "tenant", cfg.Azure.TenantID, "audience", cfg.Azure.ClientID,
		"get_a_token", "go run ./cmd/mcpguard token --dev --user alice --roles data_reader")
	return func() { _ = hs.Close() }, nil
}
